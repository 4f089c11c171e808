"""``lancedb-permutation`` and ``lancedb-streaming``: the rows copied into a lancedb
table (lancedb 0.40), read through its two PyTorch entries: a ``Permutation``
(a map-style Dataset whose ``__getitems__`` takes a batch of offsets) under torch's
DataLoader, and ``lancedb.streaming.StreamingDataset`` (an IterableDataset with one
split per worker). Both with one worker process per core, decoding with torchvision
and the v2 transforms.

Example:
    >>> available()  # doctest: +SKIP
    (True, '')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from lancefeed.bench.peers._common import iter_rows, need, tv_decode

_TABLE = "images"


def available() -> tuple[bool, str]:
    """Needs lancedb (0.40 has ``Permutation`` and ``StreamingDataset``), torch and torchvision."""
    ok, reason = need(
        ("lancedb", 'pip install "lancedb==0.40.0"'),
        ("torch", "pip install torch"),
        ("torchvision", "pip install torchvision"),
    )
    if ok and need(("lancedb.streaming", ""))[0] is False:
        return False, 'lancedb without StreamingDataset: pip install "lancedb==0.40.0"'
    return ok, reason


def convert(spec: dict[str, Any], dest: Path) -> None:
    """Copy the rows (``image`` bytes, ``label`` index) into lancedb table ``images``
    under ``dest``; both loader names share it."""
    import lancedb
    import pyarrow as pa

    schema = pa.schema([pa.field("image", pa.large_binary()), pa.field("label", pa.int64())])

    def batches() -> Iterable[pa.RecordBatch]:
        chunk: list[tuple[bytes, int]] = []
        for row in iter_rows(spec["uri"], spec.get("limit")):
            chunk.append(row)
            if len(chunk) == 1024:
                yield pa.record_batch([[c[0] for c in chunk], [c[1] for c in chunk]], schema=schema)
                chunk = []
        if chunk:
            yield pa.record_batch([[c[0] for c in chunk], [c[1] for c in chunk]], schema=schema)

    db = lancedb.connect(str(dest))
    db.create_table(_TABLE, data=pa.RecordBatchReader.from_batches(schema, batches()), mode="overwrite")


class _Decode:
    """The transform both loaders hand to lancedb, picklable for spawned workers:
    a RecordBatch -> one stacked batch (``rows=False``) or a list of rows."""

    def __init__(self, plan: list[Any], rows: bool):
        self.plan, self.rows, self.transform = plan, rows, None

    def __getstate__(self) -> dict[str, Any]:
        return {"plan": self.plan, "rows": self.rows, "transform": None}

    def __call__(self, batch: Any) -> Any:
        import torch

        from lancefeed.bench.transforms import torchvision_transform

        if self.transform is None:
            self.transform = torchvision_transform(self.plan)
        images = [self.transform(tv_decode(b)) for b in batch.column("image").to_pylist()]
        labels = batch.column("label").to_pylist()
        if self.rows:
            return list(zip(images, labels))
        return torch.stack(images), torch.tensor(labels)


def _whole_batch(batch: Any) -> Any:
    # __getitems__ returns a batch already stacked: nothing left to collate.
    return batch


def make_loader(spec: dict[str, Any]) -> Iterable[Any]:
    """torch's DataLoader over a ``Permutation`` (``mode: permutation``) or a lancedb
    ``StreamingDataset`` (``mode: streaming``), ``spec["workers"]`` workers."""
    import lancedb
    import torch

    table = lancedb.connect(spec["converted"]).open_table(_TABLE)
    workers = spec["workers"]
    # lancedb's fork support is experimental (it warns, and forked workers died in
    # this benchmark's runs); its documentation recommends forkserver or spawn.
    context = "forkserver" if workers else None
    if spec.get("mode") == "streaming":
        from lancedb.streaming import StreamingDataset

        ds = StreamingDataset(
            table,
            num_splits=max(1, workers),
            shuffle=spec["shuffle"],
            shuffle_seed=0,
            columns=["image", "label"],
            transform=_Decode(spec["plan"], rows=True),
            # Parallelism comes from the DataLoader's worker processes, one per core.
            transform_parallelism=1,
        )
        return torch.utils.data.DataLoader(
            ds, batch_size=spec["batch_size"], num_workers=workers, multiprocessing_context=context
        )
    from lancedb.permutation import Permutation

    perm = Permutation.identity(table).select_columns(["image", "label"])
    perm = perm.with_transform(_Decode(spec["plan"], rows=False))
    # __getitems__ reads a whole batch of offsets at once and returns it decoded, so
    # the default collate (which would re-stack per-item tuples) is replaced.
    return torch.utils.data.DataLoader(
        perm,  # type: ignore[arg-type]
        batch_size=spec["batch_size"],
        shuffle=spec["shuffle"],
        num_workers=workers,
        collate_fn=_whole_batch,
        multiprocessing_context=context,
    )
