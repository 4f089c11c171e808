"""PyTorch Lightning's ``trainer.fit`` takes a lancefeed.DataLoader as it is (CPU, one process)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, List

import lance
import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

import lancefeed

pl = pytest.importorskip("pytorch_lightning")

N = 24


def make_dataset(path: Path) -> str:
    images = []
    for i in range(N):
        a = np.full((8, 8, 3), (i % 2) * 200, np.uint8)
        a[0, 0, 0] = i
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG")
        images.append(buf.getvalue())
    table = pa.table({"image": pa.array(images, pa.binary()), "label": ["dark", "light"] * (N // 2)})
    uri = str(path / "ds.lance")
    lance.write_dataset(table, uri)
    return uri


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
        self.seen: List[List[int]] = []
        self.val_batches = 0
        self.losses: List[float] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.permute(0, 3, 1, 2).float() / 255)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        assert images.dtype == torch.uint8 and images.shape[1:] == (8, 8, 3)
        assert labels.dtype == torch.int64
        self.seen.append(images[:, 0, 0, 0].tolist())
        loss = torch.nn.functional.cross_entropy(self(images), labels)
        self.losses.append(loss.item())
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch
        self.val_batches += 1
        self.log("val_loss", torch.nn.functional.cross_entropy(self(images), labels))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.5)


def test_fit_with_lancefeed_loaders(tmp_path: Path) -> None:
    uri = make_dataset(tmp_path)
    train = lancefeed.DataLoader(uri, batch_size=4, shuffle=True, seed=7)
    val = lancefeed.DataLoader(uri, batch_size=8)
    model = Tiny()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(model, train_dataloaders=train, val_dataloaders=val)

    assert trainer.state.finished and trainer.global_step == 2 * len(train) == 12
    assert trainer.train_dataloader is train  # not rebuilt, no sampler injected
    # Lightning set the epoch through loader.sampler.set_epoch: epoch e is our epoch e.
    epochs = [sum(model.seen[i * 6 : (i + 1) * 6], []) for i in range(2)]
    assert [sorted(e) for e in epochs] == [list(range(N))] * 2
    for e, ids in enumerate(epochs):
        train.set_epoch(e)
        assert ids == [int(x[0, 0, 0, 0]) for x, _ in train for x in x.split(1)]
    assert epochs[0] != epochs[1]
    assert model.val_batches == 2 * len(val) + 2  # the sanity check runs 2 batches first
    assert all(np.isfinite(model.losses))

    # Lightning keeps the loader's state in its checkpoints (the loader is "stateful").
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    saved = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert [(s["epoch"], s["batches_consumed"], s["seed"]) for s in saved] == [(1, 6, 7)]
