"""Batched reads of rows by row id: one sorted take per batch, put back in order.

This is the hot path of every loader: a batch of row ids in permutation order becomes
one ``RecordBatch`` in that same order. The ids are sorted before the take so Lance
reads each fragment front to back, then one ``Table.take`` restores the order. Blob
encoded columns are materialized with Lance's planned blob reader into a binary
column, so callers never see blob descriptions.

Lance's take by row id (``LanceDataset._take_rows``) is marked internal by pylance;
where it is missing or changed, rows are taken by their index in the dataset with the
public ``LanceDataset.take`` instead (:func:`row_indices` finds them), to the same rows.

Example:
    >>> import numpy as np
    >>> from lancefeed.reads.take import take_rows
    >>> batch = take_rows(ds, np.array([7, 2, 5], np.uint64), ["image", "label"])  # doctest: +SKIP
    >>> batch.num_rows  # doctest: +SKIP
    3
"""

from __future__ import annotations

import threading
from typing import Dict, Optional, Sequence, Tuple

import lance
import numpy as np
import pyarrow as pa

from lancefeed.source import has_stable_row_ids, live_row_ids


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
        table = _take(ds, _uint64s(sorted_ids), plain, ids_are_live)
        if table.num_rows != n:
            _raise_missing(ds, sorted_ids, plain)
        for name in plain:
            arrays[name] = table.column(name)
    for name in blob_set:
        if name not in columns:
            continue
        values = _read_blobs(ds, name, _uint64s(sorted_ids))
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
    take_rows_by_id = getattr(ds, "_take_rows", None)
    if take_rows_by_id is not None and _BY_ID.get("works", True):
        try:
            try:
                return take_rows_by_id(ids, columns=list(columns), ignore_deletions=ids_are_live)
            except TypeError:  # pylance before ignore_deletions= existed
                return take_rows_by_id(ids, columns=list(columns))
        except TypeError:  # its signature changed: the public take from now on
            _BY_ID["works"] = False
    return take_by_index(ds, ids.to_numpy(), columns)


# Whether pylance's internal take by row id still takes the arguments used here.
_BY_ID: Dict[str, bool] = {}


def take_by_index(ds: lance.LanceDataset, sorted_ids: np.ndarray, columns: Sequence[str]) -> pa.Table:
    """The rows ``sorted_ids`` (ascending row ids) through the public
    ``LanceDataset.take``, by their index in the dataset; ids not in the dataset are
    left out (as Lance's take by row id does).

    Example:
        >>> take_by_index(ds, np.array([0, 4294967296], np.uint64), ["label"]).num_rows  # doctest: +SKIP
        2
    """
    live, order = _live_ids(ds)
    k = np.searchsorted(live, sorted_ids, sorter=order)
    k = np.minimum(k, max(len(live) - 1, 0))
    found = order[k] if len(live) else np.zeros(0, np.int64)
    hit = live[found] == sorted_ids if len(live) else np.zeros(len(sorted_ids), bool)
    indices = np.asarray(found[hit], dtype=np.int64)
    return ds.take(indices.tolist(), columns=list(columns))


def row_indices(ds: lance.LanceDataset, row_ids: np.ndarray) -> np.ndarray:
    """Each row id's index in the dataset (its position in a scan; what
    ``LanceDataset.take`` takes), -1 for an id not in this version.

    Example:
        >>> row_indices(ds, np.array([4294967297], np.uint64))  # doctest: +SKIP
        array([1001])
    """
    live, order = _live_ids(ds)
    ids = np.asarray(row_ids, dtype=np.uint64)
    if not len(live):
        return np.full(len(ids), -1, np.int64)
    k = order[np.minimum(np.searchsorted(live, ids, sorter=order), len(live) - 1)]
    return np.where(live[k] == ids, k, -1).astype(np.int64)


def reworded(exc: BaseException, message: str) -> BaseException:
    """``exc`` with ``message``, of the same type where that type can be made from a
    message (so ``except OSError`` still catches it), else an ``OSError``.

    Example:
        >>> reworded(OSError("HTTP 503"), "reading 'd.lance': HTTP 503")
        OSError("reading 'd.lance': HTTP 503")
    """
    try:
        return type(exc)(message)
    except Exception:  # noqa: BLE001 - an exception type that takes other arguments
        return OSError(message)


def describe_row(ds: lance.LanceDataset, row_id: int, name_column: str = "filename") -> str:
    """A row as a user can find it: its index in the dataset (``ds.take([index])``),
    the row id where it differs (as fragment and offset where the id is an address),
    and its ``name_column`` value where the dataset has such a string column.

    Example:
        >>> describe_row(ds, 4294967347)  # doctest: +SKIP
        "row 1051 of the dataset (row id 4294967347: fragment 1, offset 51; filename 'n01440764_18.JPEG')"
    """
    row_id = int(row_id)
    try:
        index = int(row_indices(ds, np.array([row_id], np.uint64))[0])
    except Exception:  # noqa: BLE001 - only words a message: the id alone then
        index = -1
    details = []
    if index != row_id:
        if has_stable_row_ids(ds):
            details.append(f"row id {row_id}")
        else:
            details.append(f"row id {row_id}: fragment {row_id >> 32}, offset {row_id & 0xFFFFFFFF}")
    field = ds.schema.field(name_column) if name_column in ds.schema.names else None
    if index >= 0 and field is not None and (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
        try:
            name = ds.take([index], columns=[name_column]).column(0)[0].as_py()
            details.append(f"{name_column} {name!r}")
        except Exception:  # noqa: BLE001 - only words a message
            pass
    head = f"row {index} of the dataset" if index >= 0 else f"row id {row_id} (not in version {ds.version} of the dataset)"
    return head + (f" ({'; '.join(details)})" if details and index >= 0 else "")


# (uri, version) -> live row ids in dataset order and their argsort; a few kept.
_LIVE: Dict[Tuple[str, int], Tuple[np.ndarray, np.ndarray]] = {}
_LIVE_LOCK = threading.Lock()


def _live_ids(ds: lance.LanceDataset) -> Tuple[np.ndarray, np.ndarray]:
    key = (str(ds.uri), int(ds.version))
    with _LIVE_LOCK:
        got = _LIVE.get(key)
    if got is None:
        live = live_row_ids(ds)
        got = (live, np.argsort(live, kind="stable"))
        with _LIVE_LOCK:
            if len(_LIVE) >= 8:
                _LIVE.pop(next(iter(_LIVE)))
            _LIVE[key] = got
    return got


def _uint64s(ids: np.ndarray) -> pa.Array:
    """A uint64 numpy array as an Arrow array over the same memory (``pa.array`` of a
    numpy array imports ``numpy.ma`` on its first call: 15 ms of a first batch)."""
    ids = np.ascontiguousarray(ids, dtype=np.uint64)
    return pa.Array.from_buffers(pa.uint64(), len(ids), [None, pa.py_buffer(ids)])


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
