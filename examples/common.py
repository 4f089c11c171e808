"""Data for the examples: CIFAR-10 from ../shared/data when it is there, else a small
generated dataset of the same shape (10 classes of coloured shapes), as a Lance dataset
in the seeds' layout (image bytes, label string)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
from PIL import Image

DATA = Path(os.environ.get("LANCEFEED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _generated(n: int, seed: int) -> list[tuple[bytes, str]]:
    """``n`` 32x32 JPEGs: class k is a disc of colour k on a noisy background, so a
    small model can learn it in a few hundred steps."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32]
    rows = []
    for i in range(n):
        k = int(rng.integers(10))
        img = rng.normal(110, 30, (32, 32, 3))
        cx, cy, r = rng.uniform(10, 22, 2).tolist() + [rng.uniform(5, 10)]
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = [25 * k, 255 - 25 * k, 128 + 12 * k]
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        buf = io.BytesIO()
        pil.save(buf, "JPEG", quality=90)
        rows.append((buf.getvalue(), CLASSES[k]))
    return rows


def _cifar(split: str, n: int) -> list[tuple[bytes, str]]:
    rows = []
    with tarfile.open(DATA / "cifar10-jpeg.tar.gz") as tar:
        for member in tar:
            if member.isfile() and f"{split}/" in member.name and member.name.endswith(".jpg"):
                rows.append((tar.extractfile(member).read(), member.name.split("/")[-2]))
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(rows))[:n]
    return [rows[i] for i in sorted(pick)]


def dataset(out: Path, split: str, n: int, *, seed: int = 0) -> str:
    """A Lance dataset of ``n`` 32x32 images and their labels at ``out``; CIFAR-10's
    ``split`` ("train" or "test") when ../shared/data has it, else generated."""
    uri = out / f"{split}-{n}.lance"
    if not uri.exists():
        if (DATA / "cifar10-jpeg.tar.gz").exists():
            rows = _cifar(split, n)
        else:
            rows = _generated(n, seed + (split == "test"))
        table = pa.table({"image": pa.array([r[0] for r in rows], pa.binary()), "label": pa.array([r[1] for r in rows])})
        lance.write_dataset(table, str(uri))
    return str(uri)
