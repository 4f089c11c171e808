"""The seeds' CNN classifier on CIFAR-10, its torchvision transforms unchanged, fed by
lancefeed.DataLoader instead of a per-row take + Pillow Dataset.

    python examples/cifar_classifier.py [--train 10000] [--epochs 2] [--out /tmp/lancefeed-examples]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).parent))
from common import CLASSES, dataset  # noqa: E402

import lancefeed  # noqa: E402

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)

# The seeds' transforms, as they are: the core fuses the resize, the flip and the
# normalisation; nothing runs per sample in Python.
transform_train = transforms.Compose([
    transforms.Resize((32, 32)),
    transforms.RandomHorizontalFlip(),
    transforms.ToTensor(),
    transforms.Normalize(MEAN, STD),
])
transform_test = transforms.Compose([
    transforms.Resize((32, 32)),
    transforms.ToTensor(),
    transforms.Normalize(MEAN, STD),
])


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=10000, help="training images")
    p.add_argument("--test", type=int, default=2000, help="test images")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path("/tmp/lancefeed-examples"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    train = lancefeed.DataLoader(dataset(args.out, "train", args.train), args.batch_size, shuffle=True,
                                 transform=transform_train, classes=CLASSES)
    test = lancefeed.DataLoader(dataset(args.out, "test", args.test), 256, transform=transform_test, classes=CLASSES)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        model.train()
        start, seen, total = time.perf_counter(), 0, 0.0
        for images, labels in train:
            opt.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            opt.step()
            seen += len(labels)
            total += loss.item() * len(labels)
        model.eval()
        correct = n = 0
        with torch.no_grad():
            for images, labels in test:
                correct += (model(images).argmax(1) == labels).sum().item()
                n += len(labels)
        accuracy = correct / max(n, 1)
        print(f"epoch {epoch + 1}: loss {total / max(seen, 1):.3f}, test accuracy {accuracy:.3f}, "
              f"{seen / (time.perf_counter() - start):.0f} train images/s (model included)")
    return accuracy


if __name__ == "__main__":
    main()
