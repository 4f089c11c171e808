"""One fragment's image column rewritten into a data file of its own, the fragment's
other data files left as they are.

Lance keeps a fragment's columns in one or more data files, each holding some of the
schema's fields. A new data file holding only the image field, with the fragment's
old data files marking that field as dropped (field id -2, Lance's tombstone, as
``drop_columns`` does), is that fragment with one column replaced: the other columns'
files, row ids, deletions and indices on them are untouched. The rows are rewritten
in storage order, a batch at a time (memory stays bounded whatever the fragment's
size), with a deleted row's slot filled by an empty value nobody reads.

Example:
    >>> entry = rewrite_fragment(ds, 0, "image", index_blob)  # doctest: +SKIP
    >>> entry["rows"], entry["indexed"]  # doctest: +SKIP
    (10000, 10000)
"""

from __future__ import annotations

import copy
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pyarrow as pa

from lancefeed.restart import IndexSummary, count, restart_index

__all__ = ["TOMBSTONE", "check_column", "needs_rewrite", "replaced", "rewrite_fragment"]

# Lance's field id of a column dropped from a data file.
TOMBSTONE = -2
# Lance splits a write at 90 GiB a file by default; one fragment's column must stay one file.
_MAX_FILE_BYTES = 1 << 60

Rewrite = Callable[[Optional[bytes]], Tuple[Optional[bytes], str]]


def check_column(ds: Any, column: str) -> pa.Field:
    """The field of ``column``, or an error saying why ``optimize`` cannot rewrite it:
    not there, not a binary column, a blob column, or a legacy (0.1) file format.

    Example:
        >>> check_column(lance.dataset("cifar.lance"), "label")  # doctest: +SKIP
        Traceback (most recent call last):
        TypeError: column 'label' is string; optimize rewrites binary image columns
    """
    if column not in ds.schema.names:
        raise ValueError(f"column {column!r} is not in {ds.uri}; columns: {ds.schema.names}")
    field = ds.schema.field(column)
    metadata = field.metadata or {}
    if b"lance-encoding:blob" in metadata or "blob" in str(field.type):
        raise ValueError(
            f"column {column!r} of {ds.uri} is a Lance blob column, which optimize does not rewrite in place; "
            "lancefeed.index_dataset(uri, out) writes a restart-indexed copy"
        )
    if not (pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type)):
        raise TypeError(f"column {column!r} is {field.type}; optimize rewrites binary image columns")
    version = str(getattr(ds, "data_storage_version", "2"))
    if version in ("0.1", "legacy"):
        raise ValueError(
            f"{ds.uri} is in Lance's legacy file format ({version}), whose data files cannot drop one column; "
            "lancefeed.index_dataset(uri, out) writes a restart-indexed copy in the current format"
        )
    return field


def needs_rewrite(fragment: Any, column: str, batch_size: int) -> bool:
    """Whether any JPEG of the fragment's ``column`` lacks a restart index (a read of the
    column up to the first one; no decode).

    Example:
        >>> needs_rewrite(ds.get_fragment(0), "image", 256)  # doctest: +SKIP
        True
    """
    for batch in fragment.to_batches(columns=[column], batch_size=batch_size):
        for blob in batch.column(0).to_pylist():
            if blob is not None and blob[:2] == b"\xff\xd8" and restart_index(blob) is None:
                return True
    return False


def _rewritten(fragment: Any, field: pa.Field, rewrite: Rewrite, batch_size: int, threads: int,
               summary: IndexSummary, bar: Any) -> Iterator[pa.RecordBatch]:
    """The fragment's column, every physical row in order, each live one rewritten."""
    physical = int(fragment.metadata.physical_rows)
    filler = None if field.nullable else b""
    at = 0
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lancefeed-optimize") as pool:
        for batch in fragment.to_batches(columns=[field.name], with_row_address=True, batch_size=batch_size):
            offsets = [a & 0xFFFFFFFF for a in batch.column("_rowaddr").to_pylist()]
            blobs = batch.column(field.name).to_pylist()
            values: List[Optional[bytes]] = []
            for offset, (blob, (out, outcome)) in zip(offsets, zip(blobs, pool.map(rewrite, blobs))):
                if offset < at:
                    raise RuntimeError(f"fragment {fragment.fragment_id} scanned out of storage order")
                values.extend([filler] * (offset - at))  # deleted rows: never read again
                values.append(out)
                count(summary, blob, out, outcome)
                at = offset + 1
            bar.update(len(blobs))
            yield pa.record_batch([pa.array(values, field.type)], schema=pa.schema([field]))
    if at < physical:
        yield pa.record_batch([pa.array([filler] * (physical - at), field.type)], schema=pa.schema([field]))


def rewrite_fragment(ds: Any, fragment_id: int, column: str, rewrite: Rewrite, *, batch_size: int = 256,
                     threads: int = 1, storage_options: Optional[Dict[str, str]] = None, bar: Any = None) -> Dict[str, Any]:
    """Write fragment ``fragment_id``'s ``column`` of dataset ``ds`` (a pinned version),
    every row through ``rewrite``, as a new data file (not committed). Returns the
    ledger entry: the new data file (as a fragment's JSON), rows and bytes.

    Example:
        >>> rewrite_fragment(ds, 0, "image", index_blob, threads=2)["indexed"]  # doctest: +SKIP
        10000
    """
    from lance.fragment import write_fragments

    field = ds.schema.field(column)
    fragment = ds.get_fragment(fragment_id)
    physical = int(fragment.metadata.physical_rows)
    summary = IndexSummary(ds.uri)
    bar = bar if bar is not None else _NoBar()
    reader = pa.RecordBatchReader.from_batches(
        pa.schema([field]), _rewritten(fragment, field, rewrite, batch_size, max(1, threads), summary, bar))
    written = write_fragments(reader, ds.uri, schema=pa.schema([field]), mode="append", max_rows_per_file=physical + 1,
                              max_bytes_per_file=_MAX_FILE_BYTES, storage_options=storage_options)
    files = [f for w in written for f in w.files]
    if len(written) != 1 or len(files) != 1 or written[0].physical_rows != physical:
        raise RuntimeError(f"fragment {fragment_id}: expected one data file of {physical} rows, Lance wrote {written}")
    return {"fragment": fragment_id, "file": json.dumps(written[0].to_json()), "rows": summary.indexed + summary.kept,
            "indexed": summary.indexed, "kept": summary.kept, "bytes_before": summary.bytes_before,
            "bytes_after": summary.bytes_after, "reasons": summary.reasons or {}}


class _NoBar:
    def update(self, n: int) -> None:
        pass


def replaced(metadata: Any, new_fragment_json: str) -> Any:
    """``metadata`` (a fragment's) with the fields of the new data file dropped from its
    old data files and the new file added.

    Example:
        >>> replaced(ds.get_fragment(0).metadata, entry["file"]).files  # doctest: +SKIP
        [DataFile(path='...', fields=[-2, 1, 2], ...), DataFile(path='...', fields=[0], ...)]
    """
    from lance.fragment import FragmentMetadata

    new_file = FragmentMetadata.from_json(new_fragment_json).files[0]
    fields = set(new_file.fields)
    files = []
    for f in metadata.files:
        f = copy.copy(f)
        f.fields = [TOMBSTONE if x in fields else x for x in f.fields]
        files.append(f)
    out = copy.copy(metadata)
    out.files = files + [new_file]
    return out
