"""The benchmark's built-in default dataset: generated images, ImageNet-like and CIFAR-like.

No download is needed: images are drawn from smooth gradients, several octaves of
noise (so that textures, and hence JPEG sizes and decode costs, are close to real
photos: about 100 KB for an ImageNet-sized image at quality 90), and random shapes.
ImageNet-like images have the sizes ImageNet has (most 500x375 or 375x500, some
square, some larger, a few grayscale); CIFAR-like images are 32x32. Both are written
as ImageFolder trees (``train/<label>/``, ``val/<label>/``) and ingested with
:func:`lancefeed.ingest_folder`.

Example:
    >>> from lancefeed.bench.data import build_default_datasets
    >>> sets = build_default_datasets("/tmp/bench-data", tiny=True)  # doctest: +SKIP
    >>> sorted(sets)  # doctest: +SKIP
    ['cifar-like', 'imagenet-like']
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# (width, height, weight): the common ImageNet shapes and roughly how often they occur.
_IMAGENET_SHAPES = [
    (500, 375, 0.45),
    (375, 500, 0.15),
    (500, 333, 0.12),
    (333, 500, 0.05),
    (500, 500, 0.08),
    (640, 480, 0.06),
    (800, 600, 0.04),
    (400, 300, 0.05),
]
_LABELS = ["airplane", "bird", "car", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass(frozen=True)
class DefaultSpec:
    """How many images of each kind the default run generates."""

    imagenet_like: int
    cifar_like: int


FULL = DefaultSpec(imagenet_like=1000, cifar_like=10000)
TINY = DefaultSpec(imagenet_like=16, cifar_like=64)


def _octave_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Noise with energy at several scales, as natural images have (float32, h x w x 3)."""
    from PIL import Image

    out = np.zeros((h, w, 3), np.float32)
    for div, amp in ((32, 40.0), (8, 24.0), (2, 16.0), (1, 12.0)):
        sh, sw = max(1, h // div), max(1, w // div)
        small = rng.normal(0.0, amp, (sh, sw, 3)).astype(np.float32)
        if (sh, sw) != (h, w):
            chans = [
                np.asarray(Image.fromarray(small[..., c]).resize((w, h), Image.Resampling.BICUBIC))
                for c in range(3)
            ]
            small = np.stack(chans, axis=-1)
        out += small
    return out


def synthetic_image(rng: np.random.Generator, width: int, height: int, gray: bool = False) -> Any:
    """One generated image (a PIL image) with photo-like statistics.

    Example:
        >>> img = synthetic_image(np.random.default_rng(0), 64, 48)
        >>> img.size, img.mode
        ((64, 48), 'RGB')
    """
    from PIL import Image, ImageDraw

    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    c0, cx, cy = (rng.uniform(0, 255, 3).astype(np.float32) for _ in range(3))
    base = c0 * 0.5 + (cx - 128) * x + (cy - 128) * y + 64
    img = Image.fromarray(np.clip(base + _octave_noise(rng, height, width), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 12))):
        x0, x1 = sorted(rng.integers(0, width, 2).tolist())
        y0, y1 = sorted(rng.integers(0, height, 2).tolist())
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, max(x0 + 1, x1), max(y0 + 1, y1)), fill=fill)
    # Texture on top of the shapes too, so that flat fills do not make files too small.
    arr = np.asarray(img, np.float32) + rng.normal(0.0, 10.0, (height, width, 3)).astype(np.float32)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img.convert("L") if gray else img


def _write_one(args: tuple[Path, int, int, int, bool, int]) -> None:
    path, seed, width, height, gray, quality = args
    img = synthetic_image(np.random.default_rng(seed), width, height, gray)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=quality)


def write_imagefolder(
    root: str | os.PathLike[str], n: int, *, kind: str, seed: int = 0, num_threads: int | None = None
) -> Path:
    """Write ``n`` generated JPEGs as ``root/{train,val}/<label>/NNNNN.jpg``.

    ``kind`` is ``"imagenet-like"`` (ImageNet's sizes, quality 90, 2% grayscale) or
    ``"cifar-like"`` (32x32, quality 75, as the JPEG CIFAR-10 in ``../shared/data``).
    Every tenth image goes to ``val``.
    """
    if kind not in ("imagenet-like", "cifar-like"):
        raise ValueError(f"kind must be 'imagenet-like' or 'cifar-like'; got {kind!r}")
    rng = np.random.default_rng(seed)
    out = Path(root)
    shapes = np.array([(w, h) for w, h, _ in _IMAGENET_SHAPES])
    weights = np.array([p for _, _, p in _IMAGENET_SHAPES])
    jobs = []
    for i in range(n):
        label = _LABELS[i % len(_LABELS)]
        split = "val" if i % 10 == 9 else "train"
        if kind == "imagenet-like":
            width, height = shapes[rng.choice(len(shapes), p=weights / weights.sum())]
            gray, quality = bool(rng.random() < 0.02), 90
        else:
            width, height, gray, quality = 32, 32, False, 75
        path = out / split / label / f"{i:05d}.jpg"
        jobs.append((path, seed * 1_000_003 + i, int(width), int(height), gray, quality))
    with ThreadPoolExecutor(max_workers=num_threads or os.cpu_count() or 1) as pool:
        list(pool.map(_write_one, jobs))
    return out


def build_default_datasets(
    workdir: str | os.PathLike[str], *, tiny: bool = False, progress: bool = True
) -> dict[str, str]:
    """Generate both default image folders under ``workdir`` and ingest them to Lance.

    Returns ``{"imagenet-like": uri, "cifar-like": uri}``; the image folders stay
    beside the datasets (``<name>-files``) for the file-based baseline.
    """
    from lancefeed.ingest import ingest_folder

    spec = TINY if tiny else FULL
    work = Path(workdir)
    uris: dict[str, str] = {}
    for name, n in (("imagenet-like", spec.imagenet_like), ("cifar-like", spec.cifar_like)):
        folder = write_imagefolder(work / f"{name}-files", n, kind=name)
        uri = str(work / f"{name}.lance")
        mode = "overwrite" if os.path.exists(uri) else "create"
        ingest_folder(folder, uri, mode=mode, progress=progress)
        uris[name] = uri
    return uris


def files_folder(uri: str) -> Path | None:
    """The image folder a default dataset was ingested from, if it is still there."""
    if uri.endswith(".lance"):
        folder = Path(uri[: -len(".lance")] + "-files")
        if folder.is_dir():
            return folder
    return None


def disk_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of a file or of everything under a folder (apparent sizes).

    Example:
        >>> disk_bytes("/nonexistent")
        0
    """
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def repeat_dataset(
    uri: str, times: int, dest: str | os.PathLike[str], storage_options: dict[str, str] | None = None
) -> str:
    """A copy of the Lance dataset ``uri`` with its rows repeated ``times`` times
    (``--scale``), written to ``dest``; returns its URI. ``storage_options`` are
    for reading ``uri`` from an object store (``dest`` is local).

    The copy reads blob columns as bytes, so it stores images inline whatever the
    source's layout: the point is more rows, not the same file layout.

    Example:
        >>> big = repeat_dataset("cifar10.lance", 4, "/tmp/cifar10-x4.lance")  # doctest: +SKIP
    """
    import lance
    import pyarrow as pa

    if times < 1:
        raise ValueError(f"scale must be >= 1; got {times}")
    ds = lance.dataset(uri, storage_options=storage_options)
    table = ds.to_table(blob_handling="all_binary")
    # A plain binary image column: blob descriptions would point into the source.
    fields = [
        pa.field(f.name, pa.large_binary())
        if f.name == "image" and (pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type))
        else f.remove_metadata()
        for f in table.schema
    ]
    table = pa.Table.from_arrays(table.columns, schema=pa.schema(fields))
    reader = pa.RecordBatchReader.from_batches(
        table.schema, (b for _ in range(times) for b in table.to_batches(max_chunksize=1024))
    )
    lance.write_dataset(reader, str(dest), mode="overwrite")
    return str(dest)
