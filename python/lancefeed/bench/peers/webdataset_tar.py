"""``webdataset``: the rows as tar shards (``.jpg`` + ``.cls``), read by
``wds.WebDataset`` with shard and sample shuffling, decoded with torchvision and the
v2 transforms, batched in the workers and loaded with ``wds.WebLoader`` (one worker
process per core), as webdataset's documentation recommends.

Example:
    >>> available()  # doctest: +SKIP
    (True, '')
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

from lancefeed.bench.peers._common import iter_rows, need, tv_decode


def available() -> tuple[bool, str]:
    """Needs webdataset, torch and torchvision."""
    return need(
        ("webdataset", "pip install webdataset"),
        ("torch", "pip install torch"),
        ("torchvision", "pip install torchvision"),
    )


def _shard_size(n: int, workers: int) -> int:
    # Workers split the shards between them: at least two shards per worker so
    # none idles; at most webdataset's usual ~1,000 samples per shard.
    return max(1, min(1000, math.ceil(n / (2 * max(1, workers)))))


def convert(spec: dict[str, Any], dest: Path) -> None:
    """Write the rows as ``dest/shard-NNNNNN.tar``."""
    import lance
    import webdataset as wds

    dest.mkdir(parents=True, exist_ok=True)
    n = lance.dataset(spec["uri"]).count_rows()
    n = min(n, spec["limit"]) if spec.get("limit") else n
    with wds.ShardWriter(str(dest / "shard-%06d.tar"), maxcount=_shard_size(n, spec["workers"]), verbose=0) as sink:
        for i, (data, label) in enumerate(iter_rows(spec["uri"], spec.get("limit"))):
            sink.write({"__key__": f"{i:08d}", "jpg": data, "cls": str(label).encode()})


def make_loader(spec: dict[str, Any]) -> Iterable[Any]:
    """``wds.WebLoader`` over the shards, ``spec["workers"]`` workers."""
    import webdataset as wds

    from lancefeed.bench.transforms import torchvision_transform

    transform = torchvision_transform(spec["plan"])
    shards = sorted(str(p) for p in Path(spec["converted"]).glob("shard-*.tar"))
    shuffle = spec["shuffle"]

    def sample(item: dict[str, Any]) -> Any:
        return transform(tv_decode(item["jpg"])), int(item["cls"])

    ds = wds.WebDataset(shards, shardshuffle=len(shards) if shuffle else False, empty_check=False, seed=0)
    if shuffle:
        ds = ds.shuffle(1000)
    ds = ds.map(sample).batched(spec["batch_size"], partial=True)
    workers = min(spec["workers"], len(shards))
    return wds.WebLoader(ds, batch_size=None, num_workers=workers)
