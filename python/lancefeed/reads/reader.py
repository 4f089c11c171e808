"""The loader's row reader: the rows of a permutation's positions, from wherever they
are cheapest to read, always the same rows.

One reader serves one loader. Its plan, made once from Lance's column statistics and
the permutation:

- ``cache``: keep the rows read in memory (``"auto"``: when the permutation's read
  columns take at most :data:`~lancefeed.reads.cache.CACHE_BYTES` and an eighth of the
  machine's memory), so that later epochs gather from memory;
- ``prefill``: with the cache, small rows (at most :data:`SCAN_ROW_BYTES` of image a
  row) are all read before the first batch, in place or by Lance scans, instead of by
  random takes (a take costs CPU per row on the cores the decoder needs);
- the image column read in place from a local dataset's data files
  (:class:`~lancefeed.reads.inplace.InPlaceColumn`: only where its layout is read
  from Lance's metadata and each value checked), the other columns by Lance takes;
  elsewhere (object stores, blob columns, layouts it does not know) Lance's takes, or
  scans of contiguous positions when an epoch reads the dataset in storage order.

Whichever way, :meth:`RowReader.take` gives the rows of the positions asked for, and
:meth:`RowReader.stats` says which way read the images, and why not in place.
``LANCEFEED_IN_PLACE=0`` turns the in-place read off.

Example:
    >>> from lancefeed.reads import RowReader
    >>> reader = RowReader(perm, "image")  # doctest: +SKIP
    >>> rows, order, nbytes = reader.take(np.array([5, 0, 3]))  # doctest: +SKIP
    >>> rows.column("image").take(pa.array(order)).num_rows  # doctest: +SKIP
    3
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple, Union

import lance
import numpy as np
import pyarrow as pa

from lancefeed.reads.cache import RowCache, memory_budget
from lancefeed.reads.inplace import InPlaceColumn, NotInPlace

__all__ = ["RowReader", "RowSource", "in_storage_order", "SCAN_PART_ROWS", "SCAN_ROW_BYTES", "TAKE_BYTES", "TAKE_ROWS"]

# A take covers about this many rows (several batches of small images)...
TAKE_ROWS = 1024
# ...and at most this many bytes of encoded images.
TAKE_BYTES = 8 << 20
# With the cache on, a dataset whose image rows average at most this many bytes is read
# whole before the first batch instead of by random takes. On an object store a take
# asks for every row on its own (CIFAR-10 on S3: 50,000 requests an epoch, 6,400
# img/s), a scan for a few large ranges. On a local disk a take costs ~12 us of CPU a
# small row, on the cores the decoder needs, a scan under 3 (CIFAR-10: 600-700 ms of CPU
# an epoch against ~170 ms).
SCAN_ROW_BYTES = 16 << 10
# Rows per scan at least, when the scans before the first batch run side by side.
SCAN_PART_ROWS = 4096
_UNREAD = object()


class RowSource(Protocol):
    """What a reader reads: a :class:`lancefeed.Permutation` (the row ids of its
    positions, its pinned dataset, its columns)."""

    @property
    def dataset(self) -> lance.LanceDataset: ...
    @property
    def row_ids(self) -> np.ndarray: ...
    @property
    def columns(self) -> List[str]: ...
    @property
    def blob_columns(self) -> List[str]: ...
    @property
    def uri(self) -> str: ...
    def __len__(self) -> int: ...
    def select_columns(self, columns: Sequence[str]) -> "RowSource": ...
    def source_column(self, column: str) -> Optional[str]: ...
    def take_positions_sorted(self, positions: Any) -> Tuple[pa.RecordBatch, np.ndarray]: ...
    def scan_positions(self, start: int, count: int, batch_size: Optional[int] = None) -> Optional[pa.RecordBatch]: ...


class RowReader:
    """The rows of ``perm``'s positions for a loader (see the module).

    ``preloaded``: columns the loader holds for every position already (labels read
    at construction): not read again. ``cache``: ``"auto"``, True or False.
    ``read``: ``"auto"`` (in place where it can, scans for contiguous positions when
    :attr:`use_scan` is set, else takes), ``"take"`` or ``"scan"`` (forced, for tests
    and benchmarks). ``rows_per_take``: how many rows one take reads (default: see
    :meth:`batches_per_take`). ``chunked``: the prefill's scans stay separate chunks
    in the cache (the decoder picks rows across a few chunks). ``repeats``: an epoch
    asks for rows more than once (a mix's passes over a source), so a take's rows not
    yet kept are kept even when it holds kept ones (see :class:`RowCache`).

    Example:
        >>> reader = RowReader(perm, "image", cache=False)  # doctest: +SKIP
        >>> reader.take(np.arange(4))[0].num_rows  # doctest: +SKIP
        4
    """

    def __init__(
        self,
        perm: RowSource,
        image_column: str,
        *,
        preloaded: Sequence[str] = (),
        cache: Union[bool, str] = "auto",
        num_threads: Optional[int] = None,
        read: str = "auto",
        chunked: bool = True,
        repeats: bool = False,
    ) -> None:
        if read not in ("auto", "take", "scan"):
            raise ValueError(f"read must be 'auto', 'take' or 'scan', got {read!r}")
        self.perm = perm
        self.image_column = image_column
        self.preloaded = list(preloaded)
        self.take_perm = perm.select_columns([c for c in perm.columns if c not in self.preloaded])
        self.num_threads = num_threads
        self.read = read
        self.rows_per_take: Optional[int] = None
        # Set per epoch by the loader: the epoch's positions are in storage order.
        self.use_scan = False
        self._stats: Any = _UNREAD
        self._rows = RowCache(len(perm), chunked=chunked, partial=repeats)
        self._lock = threading.Lock()
        self._prefilled = False
        self._prefill_bytes = 0
        self._thread: Optional[threading.Thread] = None
        self._column: Any = _UNREAD  # the InPlaceColumn, or None once refused
        self._column_lock = threading.Lock()
        self._not_in_place: Optional[str] = self._in_place_refusal()
        self._counts = {"rows_through_lance": 0}
        self._counts_lock = threading.Lock()
        self.cache = self._resolve_cache(cache)
        # Small rows kept whole: read before the first batch, in place or by scans.
        self.prefill = self.cache and self.small_rows() and (self._not_in_place is None or in_storage_order(self.take_perm))

    # -- reading ------------------------------------------------------------------

    def take(self, positions: np.ndarray) -> Tuple[pa.RecordBatch, np.ndarray, int]:
        """The rows at ``positions`` in storage order (``order[i]`` is the row of
        ``positions[i]``: the decoder gathers by pointer instead of a copy into sample
        order), and the bytes this call read from the dataset (0 for kept rows).

        Example:
            >>> rows, order, nbytes = reader.take(np.array([7, 2]))  # doctest: +SKIP
        """
        read = 0
        if self.cache:
            if self.prefill:
                read = self._prefill()
            hit = self._rows.get(positions)
            if hit is not None:
                return hit[0], hit[1], read
        rows, order = self._read(positions)
        if self.cache:
            self._rows.add(rows, order, positions)
        return rows, order, read + rows.nbytes

    def _read(self, positions: np.ndarray) -> Tuple[pa.RecordBatch, np.ndarray]:
        column = self.in_place_column() if self.read == "auto" else None
        if column is not None:
            return self._read_in_place(column, positions)
        if (self.use_scan or self.read == "scan") and self.read != "take" and len(positions) and _contiguous(positions):
            rows = self.take_perm.scan_positions(int(positions[0]), len(positions))
            if rows is not None:
                self._count_lance(rows.num_rows)
                return rows, np.arange(len(positions), dtype=np.int64)
        rows, order = self.take_perm.take_positions_sorted(positions)
        self._count_lance(rows.num_rows)
        return rows, order

    def _read_in_place(self, column: InPlaceColumn, positions: np.ndarray) -> Tuple[pa.RecordBatch, np.ndarray]:
        """The image column in place, the others (if any) by one Lance take; both in
        row id order."""
        ids = self.take_perm.row_ids[np.asarray(positions, dtype=np.int64)]
        by_id = np.argsort(ids, kind="stable")
        order = np.empty(len(ids), dtype=np.int64)
        order[by_id] = np.arange(len(ids), dtype=np.int64)
        images = column.read(ids[by_id])
        others = [c for c in self.take_perm.columns if c != self.image_column]
        arrays: Dict[str, pa.Array] = {self.image_column: images}
        if others:
            rest, rest_order = self.take_perm.select_columns(others).take_positions_sorted(positions)
            # Both reads are in ascending row id order: the same row at the same index.
            assert np.array_equal(rest_order, order)
            arrays.update({c: rest.column(c) for c in others})
        names = self.take_perm.columns
        return pa.RecordBatch.from_arrays([arrays[c] for c in names], names=names), order

    def _count_lance(self, rows: int) -> None:
        with self._counts_lock:
            self._counts["rows_through_lance"] += rows

    def in_place_column(self) -> Optional[InPlaceColumn]:
        """The image column read in place (opened on first use), or None where it
        cannot be (:meth:`stats` says why)."""
        if self._column is _UNREAD:
            with self._column_lock:  # other takes wait for it: every read the same way
                if self._column is _UNREAD:
                    column = None
                    if self._not_in_place is None:
                        source = self.take_perm.source_column(self.image_column) or self.image_column
                        try:
                            column = InPlaceColumn.open(self.take_perm.dataset, source)
                        except NotInPlace as why:
                            self._not_in_place = str(why)
                        except (OSError, ValueError) as why:  # a file we could not read: Lance reads it
                            self._not_in_place = f"the data files could not be read ({why})"
                    self._column = column
        return self._column

    def _in_place_refusal(self) -> Optional[str]:
        """Why the image column cannot be read in place, before looking at its files."""
        if os.environ.get("LANCEFEED_IN_PLACE", os.environ.get("LANCEFEED_MMAP", "1")) == "0":
            return "turned off (LANCEFEED_IN_PLACE=0)"
        if self.image_column in self.perm.blob_columns:
            return "a blob column (read by Lance's blob reader)"
        if self.image_column not in self.take_perm.columns:
            return "the image column is not read by takes"
        if "://" in self.perm.uri.replace("file://", "", 1):
            return f"the dataset is on an object store ({self.perm.uri.split('://')[0]}://)"
        return None

    # -- the prefill --------------------------------------------------------------

    def _prefill(self) -> int:
        """Every row of the permutation read into the cache, once: in place, or by
        scans where the permutation is in storage order (otherwise the takes fill the
        cache as they read). Returns the bytes the prefill read to the first take that
        asks after it (whichever thread read them), 0 to the others."""
        # Takes in flight on other threads wait here (and then gather).
        with self._lock:
            if self._prefilled:
                reported, self._prefill_bytes = self._prefill_bytes, 0
                return reported
            n = len(self.take_perm)
            column = self.in_place_column() if self.read == "auto" else None
            if column is not None and n:
                positions = np.arange(n, dtype=np.int64)
                rows, order = self._read_in_place(column, positions)
                self._rows.add(rows, order, positions)
                self._prefill_bytes = int(rows.column(self.image_column).nbytes)
            elif in_storage_order(self.take_perm) and n:
                self._prefill_bytes = self._prefill_scans(n)
            self._prefilled = True
            if threading.current_thread() is self._thread:
                return 0  # the first take reports them
            reported, self._prefill_bytes = self._prefill_bytes, 0
            return reported

    def _prefill_scans(self, n: int) -> int:
        """The rows read by one scan per core over its share, each one batch (Lance
        hands it over as one chunk; a 32-bit offset array holds < 2 GiB), kept side by
        side in the cache. A scan waits on reads and on fresh pages, so two overlap
        where one leaves a core idle."""
        size = self.cache_bytes()
        one = size is not None and size < (1 << 30)
        parts = _scan_parts(n, self.num_threads)
        bounds = [(i * n // parts, (i + 1) * n // parts) for i in range(parts)]

        def part(bound: Tuple[int, int]) -> Optional[pa.RecordBatch]:
            start, stop = bound
            return self.take_perm.scan_positions(start, stop - start, batch_size=(stop - start) if one else None)

        if len(bounds) > 1:
            with ThreadPoolExecutor(len(bounds), thread_name_prefix="lancefeed-prefill") as pool:
                got = list(pool.map(part, bounds))
        else:
            got = [part(b) for b in bounds]
        if all(rows is not None for rows in got):
            for (start, stop), rows in zip(bounds, got):
                where = np.arange(start, stop, dtype=np.int64)
                self._rows.add(rows, where - start, where)
                self._count_lance(rows.num_rows)
        return sum(rows.nbytes for rows in got if rows is not None)

    def start_prefill(self) -> None:
        """Runs the prefill on a thread of its own, now (the loader starts it while it
        reads its labels). A failure is left to the first take, which reads again and
        raises it where the batches are asked for."""
        if not (self.cache and self.prefill) or self._thread is not None:
            return

        def run() -> None:
            try:
                self._prefill()
            except BaseException:  # noqa: BLE001 - raised again by the first take
                pass

        # Not a daemon: the interpreter's shutdown stops a daemon thread where it next
        # takes the GIL, which during a scan is inside Arrow's C++ (an abort, "terminate
        # called without an active exception"). Exit waits for the read instead.
        self._thread = threading.Thread(target=run, name="lancefeed-prefill")
        self._thread.start()

    # -- sizes --------------------------------------------------------------------

    def small_rows(self) -> bool:
        """Whether the image rows average at most SCAN_ROW_BYTES encoded bytes (Lance's
        column statistics; False when unknown) and are not a blob column."""
        if self.image_column in self.perm.blob_columns:
            return False
        per_row = self.image_bytes_per_row()
        return per_row is not None and per_row <= SCAN_ROW_BYTES

    def _disk_bytes(self) -> Optional[Tuple[Dict[str, int], int]]:
        """Each column's bytes on disk in the dataset and its row count (Lance's column
        statistics), or None when they are not known (an object store without
        statistics, say). Read once: the permutation pins its dataset's version."""
        if self._stats is _UNREAD:
            try:
                ds = self.perm.dataset
                ids = {f.name(): f.id() for f in ds.lance_schema.fields()}
                sizes = {f.id: f.bytes_on_disk for f in ds.stats.data_stats().fields}
                self._stats = {name: sizes[i] for name, i in ids.items() if i in sizes}, int(ds.count_rows())
            except Exception:  # statistics are an optimization
                self._stats = None
        return self._stats

    def image_bytes_per_row(self) -> Optional[float]:
        """The image column's mean encoded bytes a row, or None when not known."""
        stats = self._disk_bytes()
        source = self.perm.source_column(self.image_column) or self.image_column
        if stats is None or source not in stats[0]:
            return None
        return stats[0][source] / max(1, stats[1])

    def cache_bytes(self) -> Optional[int]:
        """The encoded bytes a cache of the permutation's read columns would hold, from
        Lance's column statistics (scaled from the dataset to the permutation's rows),
        or None when they are not known."""
        stats = self._disk_bytes()
        if stats is None:
            return None
        sizes, rows = stats
        total = sum(sizes.get(self.take_perm.source_column(c) or c, 0) for c in self.take_perm.columns)
        return int(total * len(self.take_perm) / max(1, rows))

    def batches_per_take(self, batch_size: int) -> int:
        """How many batches one take reads: ``rows_per_take`` rows when set, else
        enough for ~TAKE_ROWS rows, at most TAKE_BYTES of encoded images (from Lance's
        column statistics), at least one."""
        if self.rows_per_take is not None:
            return max(1, self.rows_per_take // batch_size)
        if batch_size >= TAKE_ROWS or self.image_column in self.perm.blob_columns:
            return 1
        per_row = self.image_bytes_per_row()
        if per_row is None:  # without statistics, read batch by batch
            return 1
        by_rows = -(-TAKE_ROWS // batch_size)
        by_bytes = int(TAKE_BYTES // max(1.0, per_row * batch_size))
        return max(1, min(by_rows, by_bytes))

    def _resolve_cache(self, cache: Union[bool, str]) -> bool:
        """``cache="auto"``: keep the rows read when the permutation's are known to be
        small (within :func:`~lancefeed.reads.cache.memory_budget`)."""
        if isinstance(cache, bool):
            return cache
        if cache != "auto":
            raise ValueError(f"cache must be True, False or 'auto', got {cache!r}")
        size = self.cache_bytes()
        return size is not None and 0 < size <= memory_budget()

    # -- what happened ------------------------------------------------------------

    @property
    def kept_rows(self) -> int:
        """Rows the cache holds."""
        return self._rows.rows

    @property
    def kept_chunks(self) -> int:
        """The chunks the cache's image column is in, once gathered from (0 before):
        the prefill's few scans stay apart, takes are joined into one."""
        table = self._rows.table
        return 0 if table is None else table.column(self.image_column).num_chunks

    def stats(self) -> Dict[str, Any]:
        """How the image column was read so far: ``read_path`` (``"in_place"``,
        ``"lance"``, ``"mixed"``, or None before any read), ``read_path_reason`` (why
        not every row in place; None when all were), ``rows_in_place`` and
        ``rows_through_lance`` (rows read from the dataset each way; rows gathered from
        the cache count nothing).

        Example:
            >>> reader.stats()["read_path"]  # doctest: +SKIP
            'in_place'
        """
        column = self._column if isinstance(self._column, InPlaceColumn) else None
        got = column.stats() if column is not None else {}
        with self._counts_lock:
            lance_rows = self._counts["rows_through_lance"] + int(got.get("rows_through_lance", 0))
        in_place = int(got.get("rows_in_place", 0))
        path = None if not (in_place or lance_rows) else "in_place" if not lance_rows else "lance" if not in_place else "mixed"
        reason = self._not_in_place if column is None else got.get("reason")
        if column is None and self.read != "auto":
            reason = f"read={self.read!r}"
        return {"read_path": path, "read_path_reason": reason, "rows_in_place": in_place, "rows_through_lance": lance_rows}

    def close(self) -> None:
        """Let go of the data files read in place."""
        if isinstance(self._column, InPlaceColumn):
            self._column.close()


def _contiguous(positions: np.ndarray) -> bool:
    """Whether ``positions`` are consecutive ascending integers."""
    return int(positions[-1]) - int(positions[0]) == len(positions) - 1 and bool(np.all(np.diff(positions) == 1))


def _scan_parts(rows: int, num_threads: Optional[int]) -> int:
    """How many scans read ``rows`` rows side by side: one per decode thread (the
    cores), none with fewer than SCAN_PART_ROWS rows."""
    if num_threads is None:
        num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(int(num_threads), rows // SCAN_PART_ROWS))


def in_storage_order(perm: RowSource) -> bool:
    """Whether ``perm`` may be read by scans: every row of its dataset (a filtered or
    split permutation has fewer), with ascending row ids, and no blob column (read
    apart). Each scan still checks the row ids it returns.

    Example:
        >>> in_storage_order(Permutation.identity("cifar.lance"))  # doctest: +SKIP
        True
    """
    ids = perm.row_ids
    if perm.blob_columns or not len(ids) or (len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1]))):
        return False
    try:
        return int(perm.dataset.count_rows()) == len(ids)
    except (OSError, ValueError):
        return False

