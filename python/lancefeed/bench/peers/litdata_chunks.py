"""``litdata``: the rows written by ``litdata.optimize`` into its binary chunks, read
by ``litdata.StreamingDataset`` (shuffled) and ``StreamingDataLoader`` with one
worker process per core; decoded with torchvision and the v2 transforms.

Example:
    >>> available()  # doctest: +SKIP
    (True, '')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

from lancefeed.bench.peers._common import iter_rows, need, tv_decode


def available() -> tuple[bool, str]:
    """Needs litdata, torch and torchvision."""
    return need(
        ("litdata", "pip install litdata"),
        ("torch", "pip install torch"),
        ("torchvision", "pip install torchvision"),
    )


def _rows(arg: tuple[str, int, int]) -> Iterator[dict[str, Any]]:
    # optimize() hands each worker process some inputs; an input is a range of rows.
    uri, start, stop = arg
    for i, (data, label) in enumerate(iter_rows(uri, stop)):
        if i >= start:
            yield {"image": data, "label": label}


def convert(spec: dict[str, Any], dest: Path) -> None:
    """``litdata.optimize`` the rows into ``dest`` (64 MB chunks)."""
    import lance
    from litdata import optimize

    n = lance.dataset(spec["uri"]).count_rows()
    n = min(n, spec["limit"]) if spec.get("limit") else n
    step = 1024
    inputs = [(spec["uri"], start, min(n, start + step)) for start in range(0, n, step)]
    optimize(
        fn=_rows,
        inputs=inputs,
        output_dir=str(dest),
        chunk_bytes="64MB",
        num_workers=max(1, min(spec["workers"], len(inputs))),
        mode="overwrite",
    )


def make_loader(spec: dict[str, Any]) -> Iterable[Any]:
    """``StreamingDataLoader`` over the chunks, ``spec["workers"]`` workers."""
    from litdata import StreamingDataLoader, StreamingDataset

    from lancefeed.bench.transforms import torchvision_transform

    transform = torchvision_transform(spec["plan"])

    class Images(StreamingDataset):  # type: ignore[misc]
        def __getitem__(self, index: Any) -> Any:
            item = super().__getitem__(index)
            return transform(tv_decode(item["image"])), item["label"]

    ds = Images(str(spec["converted"]), shuffle=spec["shuffle"], seed=0)
    return StreamingDataLoader(ds, batch_size=spec["batch_size"], num_workers=spec["workers"])
