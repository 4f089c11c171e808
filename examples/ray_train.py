"""The seeds' CNN classifier on CIFAR-10 under Ray Train: lancefeed.DataLoader in each
TorchTrainer worker (rank and world size from Ray), the loader's state and the model's
in Ray's checkpoints, and a run that resumes, on any number of workers, where the last
checkpoint of the run of the same name left it.

    python examples/ray_train.py [--workers 2] [--train 4000] [--epochs 1] [--stop-after N]
                                 [--ray-address auto] [--out DIR]

Without arguments: a local Ray (the machine's cores), two workers, 4,000 CIFAR-10 images
from ../shared/data (generated ones of the same shape without it). Stop a run part-way
with --stop-after 20 (batches per worker), then run it again, with --workers 1 say: it
continues the epoch where the checkpoint left it, each image read once.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict

import torch
from torch import nn
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).parent))
from cifar_classifier import MEAN, STD, Net  # noqa: E402
from common import CLASSES, dataset  # noqa: E402

import lancefeed  # noqa: E402

transform_train = transforms.Compose([
    transforms.RandomHorizontalFlip(),
    transforms.ToTensor(),
    transforms.Normalize(MEAN, STD),
])


def train_loop(config: Dict[str, Any]) -> None:
    """One Ray Train worker: the loader shards by Ray's rank; every step is checkpointed
    every ``checkpoint_every`` batches (loader and model), every rank reporting alike."""
    import ray.train
    from ray.train.torch import prepare_model

    torch.manual_seed(0)
    loader = lancefeed.DataLoader(config["uri"], config["batch_size"], shuffle=True, transform=transform_train,
                                  classes=CLASSES)
    model = Net()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        lancefeed.load_loader_state(loader, checkpoint)
        with checkpoint.as_directory() as d:
            model.load_state_dict(torch.load(os.path.join(d, "model.pt")))
    model = prepare_model(model)  # DistributedDataParallel over the worker group
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    state = loader.state_dict()  # a finished epoch's state continues with the next one
    epoch = state["epoch"] + (state["batches_consumed"] >= len(loader))
    while epoch < config["epochs"]:
        seen, total, start = 0, 0.0, time.perf_counter()
        for step, (images, labels) in enumerate(loader):
            opt.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            opt.step()
            seen, total = seen + len(labels), total + loss.item() * len(labels)
            last = step + 1 == config["stop_after"]
            if (step + 1) % config["checkpoint_every"] == 0 or last:
                _report(loader, model, {"epoch": epoch, "loss": total / seen})
            if last:
                return
        _report(loader, model, {"epoch": epoch, "loss": total / max(seen, 1),
                                "images_per_s": seen / (time.perf_counter() - start)})
        epoch += 1


def _report(loader: Any, model: nn.Module, metrics: Dict[str, float]) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as d:
        lancefeed.save_loader_state(loader, d)
        if ray.train.get_context().get_world_rank() == 0:
            torch.save(getattr(model, "module", model).state_dict(), os.path.join(d, "model.pt"))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def main(argv: list[str] | None = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers (2)")
    p.add_argument("--train", type=int, default=4000, help="training images (4000)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--stop-after", type=int, default=0, help="stop each worker after N batches (a run to resume)")
    p.add_argument("--checkpoint-every", type=int, default=20, help="batches between checkpoints (20)")
    p.add_argument("--ray-address", default=None, help="a Ray cluster to join (default: a local one)")
    p.add_argument("--name", default="lancefeed-ray-train", help="the run's name: a run of the same name resumes")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "lancefeed-examples",
                   help="the dataset and Ray's run folder (the system's temporary folder)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started = not ray.is_initialized()
    if started:
        with warnings.catch_warnings():  # Ray's fork + exec of its processes: no concern of Lance's
            warnings.filterwarnings("ignore", message="lance is not fork-safe")
            ray.init(address=args.ray_address, log_to_driver=False)
    config = {"uri": dataset(args.out, "train", args.train), "batch_size": args.batch_size, "epochs": args.epochs,
              "stop_after": args.stop_after or None, "checkpoint_every": args.checkpoint_every}
    trainer = TorchTrainer(train_loop, train_loop_config=config, scaling_config=ScalingConfig(num_workers=args.workers),
                           run_config=RunConfig(name=args.name, storage_path=str((args.out / "ray-runs").resolve())))
    try:
        result = trainer.fit()
    finally:
        if started:
            ray.shutdown()
    print(f"{args.workers} worker(s): {result.metrics}; checkpoint {result.checkpoint}")
    return dict(result.metrics)


if __name__ == "__main__":
    main()
