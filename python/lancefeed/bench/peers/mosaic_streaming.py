"""``mosaicml-streaming``: the rows written as MDS shards (``MDSWriter``, raw JPEG
bytes), read by ``streaming.StreamingDataset`` (local, shuffled) under torch's
DataLoader with one worker process per core, decoded with torchvision and the v2
transforms.

mosaicml-streaming 0.13 pins ``numpy<2.2`` and imports ``transformers``; installing
it may downgrade numpy.

Example:
    >>> available()  # doctest: +SKIP
    (False, 'not installed: pip install mosaicml-streaming')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from lancefeed.bench.peers._common import iter_rows, need, tv_decode


def available() -> tuple[bool, str]:
    """Needs mosaicml-streaming (module ``streaming``), torch and torchvision."""
    return need(
        ("streaming", "pip install mosaicml-streaming"),
        ("torch", "pip install torch"),
        ("torchvision", "pip install torchvision"),
    )


def convert(spec: dict[str, Any], dest: Path) -> None:
    """Write MDS shards (64 MB) to ``dest``."""
    from streaming import MDSWriter

    with MDSWriter(out=str(dest), columns={"image": "bytes", "label": "int"}, size_limit="64mb") as out:
        for data, label in iter_rows(spec["uri"], spec.get("limit")):
            out.write({"image": data, "label": label})


def make_loader(spec: dict[str, Any]) -> Iterable[Any]:
    """torch's DataLoader over a local ``StreamingDataset``, ``spec["workers"]`` workers."""
    import torch
    from streaming import StreamingDataset

    from lancefeed.bench.transforms import torchvision_transform

    transform = torchvision_transform(spec["plan"])

    class Images(StreamingDataset):  # type: ignore[misc]
        def __getitem__(self, idx: int) -> Any:
            item = super().__getitem__(idx)
            return transform(tv_decode(item["image"])), item["label"]

    ds = Images(local=str(spec["converted"]), shuffle=spec["shuffle"], shuffle_seed=0, batch_size=spec["batch_size"])
    return torch.utils.data.DataLoader(ds, batch_size=spec["batch_size"], num_workers=spec["workers"])
