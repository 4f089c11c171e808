"""Batched reads of rows by row id: one sorted take per batch, put back in order.

This is the hot path of every loader: a batch of row ids in permutation order becomes
one ``RecordBatch`` in that same order. The ids are sorted before the take so Lance
reads each fragment front to back, then one ``Table.take`` restores the order. Blob
encoded columns are materialized with Lance's planned blob reader into a binary
column, so callers never see blob descriptions.

Example:
    >>> import numpy as np
    >>> from lancefeed.rows import take_rows
    >>> batch = take_rows(ds, np.array([7, 2, 5], np.uint64), ["image", "label"])  # doctest: +SKIP
    >>> batch.num_rows  # doctest: +SKIP
    3
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import lance
import numpy as np
import pyarrow as pa

from lancefeed.source import live_row_ids


def take_rows(
    ds: lance.LanceDataset,
    row_ids: np.ndarray,
    columns: Sequence[str],
    *,
    blob_columns: Sequence[str] = (),
    ids_are_live: bool = False,
    schema: Optional[pa.Schema] = None,
) -> pa.RecordBatch:
    """Read ``columns`` of the rows ``row_ids`` (uint64 ``_rowid`` values), in that order.

    ``blob_columns`` are the members of ``columns`` stored with Lance's blob encoding.
    ``ids_are_live`` says every id is known to exist in this version of ``ds`` (true
    when the ids were scanned from this very version), which lets Lance skip reading
    deletion files. A row id that is not in ``ds`` raises ``LookupError``.
    ``schema`` is the expected output schema, used for an empty batch.

    Example:
        >>> take_rows(ds, np.array([3, 1], np.uint64), ["label"]).column(0)  # doctest: +SKIP
        <pyarrow.lib.StringArray ...> ["cat", "dog"]
    """
    batch, order = take_rows_sorted(
        ds, row_ids, columns, blob_columns=blob_columns, ids_are_live=ids_are_live, schema=schema
    )
    if len(order) < 2 or bool(np.all(order[1:] > order[:-1])):
        return batch
    idx = pa.array(order)
    cols = [batch.column(i).take(idx) for i in range(batch.num_columns)]
    return pa.RecordBatch.from_arrays(cols, schema=batch.schema)


def take_rows_sorted(
    ds: lance.LanceDataset,
    row_ids: np.ndarray,
    columns: Sequence[str],
    *,
    blob_columns: Sequence[str] = (),
    ids_are_live: bool = False,
    schema: Optional[pa.Schema] = None,
) -> Tuple[pa.RecordBatch, np.ndarray]:
    """:func:`take_rows` without the reordering: the rows in ascending row-id order,
    and ``order`` (int64) with ``order[i]`` the row of that batch holding
    ``row_ids[i]``. Whoever only gathers from the batch (``decode_batch(order=...)``)
    saves copying it into request order.

    Example:
        >>> batch, order = take_rows_sorted(ds, np.array([3, 1], np.uint64), ["label"])  # doctest: +SKIP
        >>> batch.column(0).take(order).to_pylist()  # doctest: +SKIP
        ['cat', 'dog']
    """
    ids = np.ascontiguousarray(row_ids, dtype=np.uint64)
    n = len(ids)
    if n == 0:
        if schema is None:
            raise ValueError("an empty take needs the output schema")
        empty = pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema], schema=schema)
        return empty, np.zeros(0, dtype=np.int64)

    # Sorted ids let Lance walk each fragment front to back and merge reads of
    # neighbouring rows; sorting a few hundred ids costs microseconds.
    by_id = np.argsort(ids, kind="stable")
    sorted_ids = ids[by_id]

    blob_set = set(blob_columns)
    plain = [c for c in columns if c not in blob_set]
    arrays: dict[str, pa.Array] = {}
    if plain:
        table = _take(ds, pa.array(sorted_ids, type=pa.uint64()), plain, ids_are_live)
        if table.num_rows != n:
            _raise_missing(ds, sorted_ids, plain)
        for name in plain:
            arrays[name] = table.column(name)
    for name in blob_set:
        if name not in columns:
            continue
        values = _read_blobs(ds, name, pa.array(sorted_ids, type=pa.uint64()))
        if len(values) != n:
            _raise_missing(ds, sorted_ids, [name])
        arrays[name] = pa.array(values, type=pa.large_binary())

    # order[i] is where the i-th requested id sits in the sorted read.
    order = np.empty(n, dtype=np.int64)
    order[by_id] = np.arange(n, dtype=np.int64)
    cols = [_single_chunk(arrays[c]) for c in columns]
    if schema is not None:
        return pa.RecordBatch.from_arrays(cols, schema=schema), order
    return pa.RecordBatch.from_arrays(cols, names=list(columns)), order


def _take(ds: lance.LanceDataset, ids: pa.Array, columns: Sequence[str], ids_are_live: bool) -> pa.Table:
    try:
        return ds._take_rows(ids, columns=list(columns), ignore_deletions=ids_are_live)
    except TypeError:  # pylance before ignore_deletions= existed
        return ds._take_rows(ids, columns=list(columns))


def _read_blobs(ds: lance.LanceDataset, column: str, ids: pa.Array) -> list:
    if hasattr(ds, "read_blobs"):
        # Lance plans these reads together; take_blobs would open one file-like per row.
        return [b for _, b in ds.read_blobs(column, ids=ids, preserve_order=True)]
    return [None if f is None else f.readall() for f in ds.take_blobs(column, ids=ids)]


def _single_chunk(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        if arr.num_chunks == 1:
            return arr.chunk(0)
        return arr.combine_chunks()
    return arr


def _raise_missing(ds: lance.LanceDataset, sorted_ids: np.ndarray, columns: Sequence[str]) -> None:
    live = live_row_ids(ds)
    missing = sorted_ids[~np.isin(sorted_ids, live)]
    shown = ", ".join(str(int(i)) for i in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    raise LookupError(
        f"row ids {shown}{more} are not in version {ds.version} of the dataset "
        "(deleted since the permutation was built?); expected ids of live rows"
    )
