"""The reference images in ../shared/data, read straight from their archives."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

DATA = Path(os.environ.get("LANCEFEED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def _read(archive: Path, keep, limit: int | None) -> list[tuple[str, bytes]]:
    if not archive.exists():
        raise SystemExit(f"{archive} not found: set LANCEFEED_DATA to the folder holding the reference archives")
    out = []
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile() and keep(member.name):
                out.append((member.name, tar.extractfile(member).read()))
                if limit and len(out) >= limit:
                    break
    return out


def cifar(split: str = "train", limit: int | None = None) -> list[tuple[str, bytes]]:
    """(path, jpeg bytes) of CIFAR-10 `split`, `train/<label>/NNNN.jpg`."""
    return _read(DATA / "cifar10-jpeg.tar.gz", lambda n: f"{split}/" in n and n.endswith(".jpg"), limit)


def imagenet(limit: int | None = None) -> list[tuple[str, bytes]]:
    """(path, jpeg bytes) of the 1,000-image ImageNet sample."""
    return _read(DATA / "imagenet-sample-1000.tar", lambda n: n.endswith(".JPEG"), limit)
