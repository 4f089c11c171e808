"""The reference images in ../shared/data, read straight from their archives."""

from __future__ import annotations

import os
import tarfile
import shutil
from pathlib import Path

import lance
import pyarrow as pa

from lancefeed.ingest import IMAGE_FIELD

DATA = Path(os.environ.get("LANCEFEED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def _read(archive: Path, keep, limit: int | None) -> list[tuple[str, bytes]]:
    """(member name, bytes) of the archive's files that `keep` accepts, in archive order."""
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


def cifar(split: str = "train", limit: int | None = None, data: Path = DATA) -> list[tuple[str, bytes]]:
    """(path, jpeg bytes) of CIFAR-10 `split`, `train/<label>/NNNN.jpg`."""
    return _read(data / "cifar10-jpeg.tar.gz", lambda n: f"{split}/" in n and n.endswith(".jpg"), limit)


def imagenet(limit: int | None = None, data: Path = DATA) -> list[tuple[str, bytes]]:
    """(path, jpeg bytes) of the 1,000-image ImageNet sample, `<wnid>_<name>.JPEG`."""
    return _read(data / "imagenet-sample-1000.tar", lambda n: n.endswith(".JPEG"), limit)


def lance_dataset(name: str, cache: Path, data: Path = DATA, *, blob: bool = False, defaults: bool = False) -> Path:
    """`cifar10-train` or `imagenet-sample` as a Lance dataset in the seeds' layout
    (image, filename, label, split), rows sorted by file name; built once into `cache`.
    The image column as `lancefeed ingest` writes it (uncompressed); `blob=True` with
    Lance's blob encoding instead; `defaults=True` as pylance writes a plain
    `pa.binary()` column by default (values over 32 KiB each in a zstd frame)."""
    uri = cache / f"{name}{'-blob' if blob else ''}{'-defaults' if defaults else ''}.lance"
    if uri.exists():
        return uri
    if name == "cifar10-train":
        files = [(n[n.index("train/"):], b) for n, b in cifar("train", data=data)]
        rows = [(b, n, n.split("/")[1]) for n, b in files]
    elif name == "imagenet-sample":
        files = [(Path(n).name, b) for n, b in imagenet(data=data)]
        rows = [(b, n, n.split("_")[0]) for n, b in files]
    else:
        raise ValueError(f"unknown reference dataset {name!r}; expected 'cifar10-train' or 'imagenet-sample'")
    rows.sort(key=lambda r: r[1])
    image = pa.field("image", pa.large_binary(), metadata={"lance-encoding:blob": "true"}) if blob else IMAGE_FIELD
    if defaults:
        image = pa.field("image", pa.binary())
    schema = pa.schema([image, ("filename", pa.string()), ("label", pa.string()), ("split", pa.string())])
    table = pa.table(
        [
            pa.array([r[0] for r in rows], image.type),
            pa.array([r[1] for r in rows]),
            pa.array([r[2] for r in rows]),
            pa.array(["train"] * len(rows)),
        ],
        schema=schema,
    )
    print(f"writing {uri}", flush=True)
    tmp = uri.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted run
    lance.write_dataset(table, str(tmp))
    tmp.replace(uri)
    return uri
