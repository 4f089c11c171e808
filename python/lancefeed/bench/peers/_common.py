"""What several peers share: reading the benchmark's rows out of the Lance dataset,
exporting them as image files, decoding, and the check for an installed module.

Example:
    >>> missing_module("lancefeed", "pip install lancefeed")
    ''
"""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path
from typing import Any, Iterator


def missing_module(module: str, install: str) -> str:
    """``""`` when ``module`` can be imported, else ``"not installed: <install>"``
    (found without importing it: torch and friends take seconds).

    Example:
        >>> missing_module("no_such_module_xyz", "pip install xyz")
        'not installed: pip install xyz'
    """
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing
        found = False
    return "" if found else f"not installed: {install}"


def need(*modules: tuple[str, str]) -> tuple[bool, str]:
    """``available()``'s answer for peers that need some modules: the first missing one.

    Example:
        >>> need(("lancefeed", "pip install lancefeed"))
        (True, '')
    """
    for module, install in modules:
        reason = missing_module(module, install)
        if reason:
            return False, reason
    return True, ""


def pillow_name() -> str:
    """``"pillow-simd"`` when that fork is installed, else ``"Pillow"``.

    Example:
        >>> pillow_name() in ("Pillow", "pillow-simd")
        True
    """
    from importlib import metadata

    try:
        metadata.version("pillow-simd")
        return "pillow-simd"
    except metadata.PackageNotFoundError:
        return "Pillow"


def class_index(uri: str) -> dict[str, int]:
    """Label string -> class index (sorted labels), read before timing starts."""
    import lance
    import pyarrow.compute as pc

    ds = lance.dataset(uri)
    if "label" not in ds.schema.names:
        return {}
    labels = pc.unique(ds.to_table(columns=["label"]).column("label")).to_pylist()
    return {lab: i for i, lab in enumerate(sorted(x for x in labels if x is not None))}


def label_columns(uri: str) -> list[str]:
    """``["image", "label"]``, or ``["image"]`` for an unlabelled dataset."""
    import lance

    return ["image", "label"] if "label" in lance.dataset(uri).schema.names else ["image"]


def images(column: Any) -> list[Any]:
    """The encoded images of an image column of any type lancefeed reads (Hugging
    Face's ``{bytes, path}`` struct, ``encoded_image``...) as bytes."""
    from lancefeed.columns import image_array

    return image_array(column, column="image").to_pylist()


def is_blob(ds: Any) -> bool:
    """Whether the dataset's ``image`` column is a Lance blob column, which ``take``
    returns as descriptions rather than bytes."""
    from lancefeed.columns import image_column_kind

    return image_column_kind(ds.schema.field("image")) == "blob"


def iter_rows(uri: str, limit: int | None) -> Iterator[tuple[bytes, int]]:
    """The dataset's first ``limit`` rows as ``(encoded image, class index)`` (-1
    when unlabelled): what every conversion writes, so all peers read the same rows.

    Example:
        >>> next(iter_rows("cifar.lance", 1))  # doctest: +SKIP
        (b'\\xff\\xd8...', 3)
    """
    import lance

    ds = lance.dataset(uri)
    columns = label_columns(uri)
    classes = class_index(uri)
    row = 0
    for batch in ds.to_batches(columns=columns, batch_size=1024, blob_handling="all_binary"):
        data = images(batch.column("image"))
        labels = batch.column("label").to_pylist() if "label" in columns else [None] * len(data)
        for blob, label in zip(data, labels):
            if limit is not None and row >= limit:
                return
            yield blob, classes.get(label, -1)
            row += 1


def export_files(uri: str, folder: Path, limit: int | None) -> Path:
    """Write the dataset's first ``limit`` images as files ``folder/<label>/<row>.img``
    (for the file-based loaders when the dataset has no folder of its own). One
    extension whatever the format: every loader here sniffs the bytes, and DALI is
    given the file list rather than left to choose files by extension.

    Example:
        >>> export_files("cifar.lance", Path("/tmp/cifar-files"), 1000)  # doctest: +SKIP
        PosixPath('/tmp/cifar-files')
    """
    import lance

    ds = lance.dataset(uri)
    columns = label_columns(uri)
    row = 0
    folder.mkdir(parents=True, exist_ok=True)
    for batch in ds.to_batches(columns=columns, batch_size=1024, blob_handling="all_binary"):
        data = images(batch.column("image"))
        labels = batch.column("label").to_pylist() if "label" in columns else [None] * len(data)
        for blob, label in zip(data, labels):
            if limit is not None and row >= limit:
                return folder
            sub = folder / (str(label) if label is not None else "unlabelled")
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"{row:08d}.img").write_bytes(blob)
            row += 1
    return folder


def image_files(root: Path, limit: int | None) -> list[Path]:
    """The image files under ``root`` (sorted; the first ``limit``), as an
    ImageFolder lists them."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return files[:limit] if limit else files


def files_root(spec: dict[str, Any]) -> Path:
    """The image folder a file-based loader reads: the dataset's own (``folder``)
    or the export the harness made (``converted``); alone, a fresh export."""
    folder = spec.get("folder") or spec.get("converted")
    if folder and os.path.isdir(folder):
        return Path(folder)
    import tempfile

    return export_files(spec["uri"], Path(tempfile.mkdtemp(prefix="lancefeed-bench-files-")), spec.get("limit"))


def pil_decode(data: bytes) -> Any:
    """Pillow's decode of ``data`` to RGB."""
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def to_tensor(img: Any) -> Any:
    """A PIL image as an HWC uint8 torch tensor."""
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())


def tv_decode(data: bytes) -> Any:
    """torchvision's decode of ``data`` to an RGB CHW uint8 tensor: ``decode_jpeg``
    for JPEGs (libjpeg-turbo), ``decode_image`` for anything else."""
    import torch
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    if data[:3] == b"\xff\xd8\xff":
        return decode_jpeg(raw, mode=ImageReadMode.RGB)
    return decode_image(raw, mode=ImageReadMode.RGB)
