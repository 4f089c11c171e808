"""The seeds' PyTorch Lightning flow on grayscale images: RandomRotation(20), ToTensor and
Normalize([0.5], [0.5]) as torchvision objects, lancefeed.DataLoader with mode="L" for
both the train and the validation loader, trainer.fit(...).

    python examples/lightning_gray.py [--train 10000] [--epochs 2] [--out /tmp/lancefeed-examples]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).parent))
from common import CLASSES, dataset  # noqa: E402

import lancefeed  # noqa: E402

tform = transforms.Compose([
    transforms.RandomRotation(20),  # runs in the core, per sample, with torchvision's sampling
    transforms.ToTensor(),
    transforms.Normalize([0.5], [0.5]),
])


class Classifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
        )
        self.loss = nn.CrossEntropyLoss()

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = self.loss(self.model(images), labels)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        accuracy = (self.model(images).argmax(1) == labels).float().mean()
        self.log("val_accuracy", accuracy, prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=10000)
    p.add_argument("--val", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", type=Path, default=Path("/tmp/lancefeed-examples"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(0)
    train = lancefeed.DataLoader(dataset(args.out, "train", args.train), args.batch_size, shuffle=True,
                                 transform=tform, mode="L", classes=CLASSES)
    val = lancefeed.DataLoader(dataset(args.out, "test", args.val), args.batch_size, transform=tform, mode="L", classes=CLASSES)
    trainer = pl.Trainer(max_epochs=args.epochs, default_root_dir=str(args.out / "lightning"),
                         enable_checkpointing=False, logger=False, enable_progress_bar=False)
    trainer.fit(Classifier(), train_dataloaders=train, val_dataloaders=val)
    print({k: round(float(v), 3) for k, v in trainer.callback_metrics.items()})
    return dict(trainer.callback_metrics)


if __name__ == "__main__":
    main()
