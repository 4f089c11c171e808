"""The rows of a mix's positions (:func:`lancefeed.mix`): each source read by a
:class:`~lancefeed.reads.RowReader` of its own, one take's rows joined.

Which source and row a position is, the mix says (``locate``); each source's reader
reads its rows as it would alone (in place, its own cache and prefill, takes), each row
once a take however often the take repeats it. The sources' rows are joined as the
chunks of one table, without a copy: the decoder gathers across chunks, so
``order[i]`` still points at the row of ``positions[i]``. Where the sources' types
differ (one read in place as binary_view, one through Lance as binary, say), chunks
are cast to one type that keeps their bytes where they are (see :func:`common_type`).

Example:
    >>> reader = MixedReader.of(m, "image")  # doctest: +SKIP
    >>> rows, order, nbytes = reader.take(m.epoch_order(0)[:256])  # doctest: +SKIP
    >>> rows.column("image").take(pa.array(order)).num_rows  # doctest: +SKIP
    256
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa

from lancefeed.reads.cache import memory_budget
from lancefeed.reads.reader import TAKE_BYTES, TAKE_ROWS, RowReader, RowSource
from lancefeed.reads.take import reworded

__all__ = ["MixedReader", "MixedSource", "common_type"]

Rows = Union[pa.RecordBatch, pa.Table]


class MixedSource(Protocol):
    """What a mixed reader reads: a :class:`lancefeed.permutation.mix.Mix`."""

    @property
    def sources(self) -> Sequence[RowSource]: ...
    @property
    def counts(self) -> Sequence[int]: ...
    @property
    def schema(self) -> pa.Schema: ...
    @property
    def source_column(self) -> str: ...
    def locate(self, positions: Any) -> Tuple[np.ndarray, np.ndarray]: ...


class MixedReader:
    """A :class:`~lancefeed.reads.RowReader` for each source of a mix, read as one (see
    the module); made by :meth:`of`. It answers what the loader asks a reader.

    Example:
        >>> reader = MixedReader.of(m, "image", preloaded=["label", "_source"])  # doctest: +SKIP
        >>> reader.stats()["read_path"]  # doctest: +SKIP
        'in_place'
    """

    def __init__(self, readers: Sequence[Optional[RowReader]], locate: Callable[[Any], Tuple[np.ndarray, np.ndarray]],
                 shares: Sequence[float], names: Sequence[str], types: Dict[str, pa.DataType], image_column: str,
                 preloaded: Sequence[str]) -> None:
        self.readers = list(readers)
        self.locate = locate
        self.shares = list(shares)
        self.names = list(names)
        self.types = dict(types)
        self.image_column = image_column
        self.preloaded = list(preloaded)
        self.rows_per_take: Optional[int] = None
        # The loader sets it per epoch; a mix's positions are never one dataset's storage order.
        self.use_scan = False

    @classmethod
    def of(cls, mix: MixedSource, image_column: str, *, preloaded: Sequence[str] = (), cache: Union[bool, str] = "auto",
           num_threads: Optional[int] = None, chunked: bool = True) -> "MixedReader":
        """The reader of ``mix``'s selected columns; ``preloaded`` columns (and the
        source index) are not read. ``cache="auto"``: each source's rows are kept as
        its own reader decides, within one memory budget for all (the sources in
        order, while their rows fit).

        Example:
            >>> MixedReader.of(m, "image", cache=False).cache  # doctest: +SKIP
            False
        """
        keep = [c for c in preloaded if c != mix.source_column] + [mix.source_column]
        total = sum(mix.counts)
        readers: List[Optional[RowReader]] = []
        budget = memory_budget()
        for source, count in zip(mix.sources, mix.counts):
            if not count:
                readers.append(None)  # never asked for a row
                continue
            # Rows come back within an epoch (passes) and across epochs (new draws).
            kw: Dict[str, Any] = {"preloaded": [c for c in keep if c in source.columns], "num_threads": num_threads,
                                  "chunked": chunked, "repeats": True}
            reader = RowReader(source, image_column, cache=cache, **kw)
            if cache == "auto" and reader.cache:
                size = reader.cache_bytes() or 0
                if size > budget:  # the sources before it took the budget
                    reader = RowReader(source, image_column, cache=False, **kw)
                else:
                    budget -= size
            readers.append(reader)
        types = {f.name: f.type for f in mix.schema}
        shares = [c / total if total else 0.0 for c in mix.counts]
        return cls(readers, mix.locate, shares, [s.uri for s in mix.sources], types, image_column, keep)

    def _active(self) -> List[Tuple[int, RowReader]]:
        return [(i, r) for i, r in enumerate(self.readers) if r is not None]

    # -- reading ------------------------------------------------------------------

    def take(self, positions: np.ndarray) -> Tuple[Rows, np.ndarray, int]:
        """The rows of ``positions`` (``order[i]`` is the row of ``positions[i]`` in the
        joined rows) and the bytes this call read from the datasets.

        Example:
            >>> rows, order, nbytes = reader.take(np.array([7, 2]))  # doctest: +SKIP
        """
        source, local = self.locate(np.asarray(positions, dtype=np.int64))
        order = np.empty(len(source), dtype=np.int64)
        parts: List[Rows] = []
        offset = nbytes = 0
        for s in np.unique(source):
            which = np.flatnonzero(source == s)
            # A take may ask for a row twice (a source's passes): read once, pointed at twice.
            rows_wanted, inverse = np.unique(local[which], return_inverse=True)
            reader = self.readers[int(s)]
            assert reader is not None, "a source with no samples in the mix was asked for rows"
            try:
                rows, got, read = reader.take(rows_wanted)
            except (OSError, ValueError) as exc:
                raise source_error(int(s), self.names[int(s)], exc) from exc
            order[which] = offset + got[inverse]
            parts.append(rows)
            offset += rows.num_rows
            nbytes += read
        return self.join(parts), order, nbytes

    def join(self, parts: Sequence[Rows]) -> Rows:
        """The sources' rows as one table, each column the chunks of each part, in order."""
        if len(parts) == 1:
            return parts[0]
        names = list(parts[0].schema.names)
        columns = []
        for name in names:
            chunks: List[pa.Array] = []
            for part in parts:
                col = part.column(name)
                chunks += col.chunks if isinstance(col, pa.ChunkedArray) else [col]
            want = common_type([c.type for c in chunks], self.types.get(name))
            chunks = [c if c.type == want else c.cast(want) for c in chunks]
            columns.append(pa.chunked_array(chunks, type=want))
        return pa.Table.from_arrays(columns, names=names)

    def start_prefill(self) -> None:
        """Each source's prefill (see :meth:`RowReader.start_prefill`), now."""
        for _, reader in self._active():
            reader.start_prefill()

    # -- sizes --------------------------------------------------------------------

    @property
    def cache(self) -> bool:
        """Whether every source keeps its rows."""
        return all(r.cache for _, r in self._active())

    @property
    def prefill(self) -> bool:
        """Whether every source's rows are read whole before the first batch."""
        return all(r.prefill for _, r in self._active())

    def small_rows(self) -> bool:
        """Whether every source's image rows are small (see :meth:`RowReader.small_rows`)."""
        return all(r.small_rows() for _, r in self._active())

    def image_bytes_per_row(self) -> Optional[float]:
        """The image column's mean encoded bytes a sample, over the sources' shares of
        an epoch; None when a source's are not known (or it is a blob column)."""
        mean = 0.0
        for i, reader in self._active():
            per_row = None if self.image_column in reader.perm.blob_columns else reader.image_bytes_per_row()
            if per_row is None:
                return None
            mean += self.shares[i] * per_row
        return mean

    def batches_per_take(self, batch_size: int) -> int:
        """Batches one take reads, as :meth:`RowReader.batches_per_take` decides it for
        one dataset, on the samples' mean size."""
        if self.rows_per_take is not None:
            return max(1, self.rows_per_take // batch_size)
        per_row = self.image_bytes_per_row()
        if batch_size >= TAKE_ROWS or per_row is None:
            return 1
        return max(1, min(-(-TAKE_ROWS // batch_size), int(TAKE_BYTES // max(1.0, per_row * batch_size))))

    @property
    def kept_rows(self) -> int:
        """Rows the sources' caches hold."""
        return sum(r.kept_rows for _, r in self._active())

    # -- what happened ------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """As :meth:`RowReader.stats`, over the sources: rows summed, the reason naming
        each source not read wholly in place.

        Example:
            >>> reader.stats()["rows_in_place"]  # doctest: +SKIP
            51000
        """
        in_place = lance_rows = 0
        reasons = []
        for i, reader in self._active():
            got = reader.stats()
            in_place += got["rows_in_place"]
            lance_rows += got["rows_through_lance"]
            if got["read_path_reason"]:
                reasons.append(f"source {i}: {got['read_path_reason']}")
        path = None if not (in_place or lance_rows) else "in_place" if not lance_rows else "lance" if not in_place else "mixed"
        return {"read_path": path, "read_path_reason": "; ".join(reasons) or None, "rows_in_place": in_place,
                "rows_through_lance": lance_rows}

    def close(self) -> None:
        """Let go of the data files read in place."""
        for _, reader in self._active():
            reader.close()


def common_type(types: Sequence[pa.DataType], declared: Optional[pa.DataType]) -> pa.DataType:
    """The one type the chunks of a joined column take. The sources' own when they
    agree (no cast: the common case, even where the dataset declares another, as the
    in-place reader's binary_view). Else a view type where one of them is a view: a
    cast to it points at the bytes where they are, while a cast from it copies every
    byte, and a part may be a source's whole row cache. Else the wider offsets.

    Example:
        >>> common_type([pa.binary_view(), pa.binary_view()], pa.large_binary())
        DataType(binary_view)
        >>> common_type([pa.binary(), pa.binary_view()], pa.large_binary())
        DataType(binary_view)
        >>> common_type([pa.binary(), pa.large_binary()], None)
        DataType(large_binary)
    """
    kinds = set(types)
    if len(kinds) == 1:
        return types[0]
    for view, plain in ((pa.binary_view(), (pa.binary(), pa.large_binary())), (pa.string_view(), (pa.string(), pa.large_string()))):
        if kinds <= {view, *plain}:
            return view if view in kinds else plain[1]
    return declared if declared is not None else types[0]


def source_error(index: int, uri: str, exc: BaseException) -> BaseException:
    """``exc`` naming the mix's source it came from, of the same type where it can be.

    Example:
        >>> source_error(1, "b.lance", OSError("HTTP 503"))
        OSError("source 1 ('b.lance'): HTTP 503")
    """
    return reworded(exc, f"source {index} ({uri!r}): {exc}")
