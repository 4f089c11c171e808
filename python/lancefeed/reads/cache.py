"""Rows kept in memory between epochs, and how much memory reads may use.

Example:
    >>> import numpy as np, pyarrow as pa
    >>> cache = RowCache(3)
    >>> cache.add(pa.record_batch({"x": [10, 20]}), np.array([1, 0]), np.array([0, 2]))
    >>> table, where = cache.get(np.array([2, 0]))
    >>> table.column("x").take(pa.array(where)).to_pylist()
    [10, 20]
"""

from __future__ import annotations

import os
import threading
from typing import Any, List, Optional, Tuple

import numpy as np
import pyarrow as pa

__all__ = ["CACHE_BYTES", "KEPT_CHUNKS", "RowCache", "memory_budget", "page_cache_budget"]

# cache="auto" keeps a dataset's read columns in memory when they take at most this much
# (and at most an eighth of the machine's memory).
CACHE_BYTES = 2 << 30
# The cache keeps up to this many chunks (the prefill's side-by-side scans) uncombined.
KEPT_CHUNKS = 4


class RowCache:
    """The rows a reader has read, kept as the reads returned them (no copy), and
    where each position's row is among them. Filled as the first epoch reads (so
    reading stays pipelined with decoding); a take whose rows are all here is then a
    gather by pointer. Each row is kept once: a read that holds a row already kept is
    not added, so the cache never holds more than the permutation's rows.

    ``chunked``: a few reads' rows stay as they came (see :meth:`get`). ``partial``: a
    read that holds rows kept already keeps its other rows, copied out of it: where an
    epoch reads rows more than once (a mix's passes over a source), the read that
    crosses from one pass into the next would otherwise leave its new rows out for good.
    """

    def __init__(self, n: int, chunked: bool = False, partial: bool = False) -> None:
        self.chunked = chunked
        self.partial = partial
        self.where = np.full(n, -1, dtype=np.int64)
        self.batches: List[pa.RecordBatch] = []
        self.rows = 0
        self.table: Optional[pa.Table] = None
        self.lock = threading.Lock()
        self.broken = False

    def get(self, positions: np.ndarray) -> Optional[Tuple[Any, np.ndarray]]:
        """(the kept rows, where each of ``positions`` is among them), or None when
        one of them is not kept. The first hit freezes the cache: nothing is added
        after it."""
        with self.lock:
            idx = self.where[np.asarray(positions, dtype=np.int64)]
            if self.broken or len(idx) == 0 or (idx < 0).any():
                return None
            if self.table is None:
                try:
                    # One chunk per column: a decode call then hands the core one array,
                    # not one per take. Copied once; the takes' buffers are let go. The
                    # prefill's few scans stay as they are (the core picks rows across
                    # a few chunks): their copy (CIFAR-10: 44 MB, 15 ms on fresh pages)
                    # held back the first batch with the decode threads idle.
                    self.table = pa.Table.from_batches(self.batches)
                    if not (self.chunked and len(self.batches) <= KEPT_CHUNKS):
                        self.table = self.table.combine_chunks()
                except (pa.ArrowInvalid, ValueError):  # reads of differing schemas: read as before
                    self.broken = True
                    return None
                self.batches = []
            return self.table, idx

    def add(self, rows: pa.RecordBatch, order: np.ndarray, positions: np.ndarray) -> None:
        """Keep ``rows``: row ``order[i]`` of it is the one at ``positions[i]``."""
        with self.lock:
            pos = np.asarray(positions, dtype=np.int64)
            # Frozen once gathered from (a rank whose shards move between epochs reads
            # the rows it has not kept, as without a cache).
            if self.broken or self.table is not None or _repeats(pos):
                return
            new = self.where[pos] < 0
            if not new.all():
                if not (self.partial and new.any()):
                    return
                rows = _take(rows, np.asarray(order, dtype=np.int64)[new])
                order, pos = np.arange(int(new.sum()), dtype=np.int64), pos[new]
            self.where[pos] = self.rows + np.asarray(order, dtype=np.int64)
            self.batches.append(rows)
            self.rows += rows.num_rows


def _take(rows: Any, indices: np.ndarray) -> pa.RecordBatch:
    """``rows.take(indices)``, for binary_view columns too (the in-place reader's):
    Arrow has no take for them, so they go through large_binary and back, keeping the
    schema the cache's other reads have."""
    at = pa.array(indices)
    columns = []
    for column in rows.columns:
        if pa.types.is_binary_view(column.type) or pa.types.is_string_view(column.type):
            wide = pa.large_binary() if pa.types.is_binary_view(column.type) else pa.large_string()
            columns.append(column.cast(wide).take(at).cast(column.type))
        else:
            columns.append(column.take(at))
    return pa.RecordBatch.from_arrays(columns, schema=rows.schema)


def _repeats(positions: np.ndarray) -> bool:
    """Whether ``positions`` (non-negative) holds a value twice: by counting, as a sort
    of a whole epoch's positions (``np.unique``) took milliseconds on the way to the
    first batch."""
    return bool(len(positions)) and int(np.bincount(positions).max()) > 1


def memory_budget() -> int:
    """What a cache may hold: CACHE_BYTES, and at most an eighth of the machine's memory.

    Example:
        >>> 0 < memory_budget() <= CACHE_BYTES
        True
    """
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 8 * CACHE_BYTES
    return min(CACHE_BYTES, memory // 8)


def page_cache_budget() -> int:
    """Half the machine's memory: what the page cache can be expected to keep of a
    dataset from one epoch to the next.

    Example:
        >>> page_cache_budget() > 0
        True
    """
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 0
