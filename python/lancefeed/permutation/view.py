"""The :class:`Permutation` view: rows of a pinned dataset version in order (a torch map-style dataset)."""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import lance
import numpy as np
import pyarrow as pa

from lancefeed.permutation._common import DEFAULT_BATCH_SIZE, ROWID
from lancefeed.permutation.formats import format_fn, to_python
from lancefeed.permutation.interop import PermutationTableLike, split_rows
from lancefeed.reads.take import take_rows, take_rows_sorted
from lancefeed.source import (
    SourceLike,
    VersionLike,
    blob_columns,
    check_columns,
    column_names,
    dataset_options,
    dataset_uri,
    live_row_ids,
    open_source,
    output_schema,
)

# Dataset handles inherited through fork(): Lance is not fork-safe, so a child never
# uses them, and never drops them either (dropping runs Rust code on the parent's state).
_FORK_ORPHANS: List[lance.LanceDataset] = []


class Permutation:
    """An ordered view of rows of a pinned dataset version, read in batches.

    It is a torch map-style dataset: ``len()``, ``perm[i]`` and ``perm.__getitems__``
    (which torch's ``DataLoader`` calls with a whole batch of indices, so one batch is
    one sorted take). Items come in the format set by :meth:`with_format`: lancedb's
    ``"python"``, a list of row dicts, by default, which torch's default collate
    stacks. :meth:`take_positions` and :meth:`iter_batches` always give Arrow record
    batches. In DataLoader workers (fork, spawn or forkserver) each process opens the
    dataset itself: the URI, version and ``storage_options`` travel, handles do not.

    Example:
        >>> perm = Permutation.identity("cifar.lance").select_columns(["image", "label"])  # doctest: +SKIP
        >>> for batch in perm.iter_batches(256):  # doctest: +SKIP
        ...     images = batch.column("image")  # an Arrow binary array, not Python bytes
    """

    def __init__(
        self,
        dataset: lance.LanceDataset,
        row_ids: np.ndarray,
        *,
        columns: Optional[Sequence[str]] = None,
        ids_are_live: bool = True,
        split: Optional[int] = None,
        split_name: Optional[str] = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        transform_fn: Optional[Callable[[pa.RecordBatch], Any]] = None,
        storage_options: Optional[Dict[str, str]] = None,
        metadata: Optional[Dict[str, str]] = None,
    ) -> None:
        """Internal constructor; use :meth:`identity` or :meth:`from_tables`."""
        ids = np.ascontiguousarray(row_ids, dtype=np.uint64)
        ids.flags.writeable = False
        self._ds: Optional[lance.LanceDataset] = dataset
        self._pid = os.getpid()
        # What reopens the dataset in another process: a LanceDataset handed over
        # without options keeps the ones it was opened with.
        self._uri = dataset_uri(dataset)
        self._version = int(dataset.version)
        self._storage_options = storage_options if storage_options is not None else dataset_options(dataset)
        self._all_row_ids = ids
        self._offset: Optional[int] = None
        self._limit: Optional[int] = None
        self._row_ids = ids
        names = list(columns) if columns is not None else column_names(dataset)
        self._dataset_blobs = blob_columns(dataset)
        self._dataset_schema = output_schema(dataset, column_names(dataset))
        self._set_selection({n: n for n in names})
        self._ids_are_live = ids_are_live
        self._split = split
        self._split_name = split_name
        self._batch_size = int(batch_size)
        self._transform = transform_fn if transform_fn is not None else to_python
        self._metadata = dict(metadata or {})

    # -- construction -------------------------------------------------------------

    @classmethod
    def identity(
        cls,
        source: SourceLike,
        *,
        version: Optional[VersionLike] = None,
        storage_options: Optional[Dict[str, str]] = None,
    ) -> "Permutation":
        """Every row of ``source`` at ``version`` (the latest by default), in dataset order.

        ``source`` is a URI, a ``LanceDataset`` or a local lancedb ``Table``.

        Example:
            >>> len(Permutation.identity("cifar.lance"))  # doctest: +SKIP
            50000
        """
        ds = open_source(source, version, storage_options)
        row_ids = live_row_ids(ds)
        return cls(ds, row_ids, storage_options=storage_options)

    @classmethod
    def from_tables(
        cls,
        source: Optional[SourceLike],
        permutation_table: Optional[PermutationTableLike] = None,
        split: Optional[Union[str, int]] = None,
        *,
        version: Optional[VersionLike] = None,
        storage_options: Optional[Dict[str, str]] = None,
    ) -> "Permutation":
        """One split of a permutation table over ``source``.

        ``permutation_table`` is what :meth:`PermutationBuilder.execute` returned, that
        table persisted as a Lance dataset (a ``LanceDataset`` or its URI), or a table
        lancedb's ``permutation_builder(...).execute()`` made; with ``None`` this is
        :meth:`identity`. ``split`` is a split name or index (split 0 by default). A
        URI or lancedb ``Table`` ``source`` (or ``None``: the URI recorded in the
        table) is opened at the version the table pins (lancefeed's ``version`` or
        lancedb's ``base_version``). A ``LanceDataset`` or a ``version=`` naming
        another version is an error, unless the dataset has stable row ids.

        Example:
            >>> table = permutation_builder("cifar.lance").split_random(
            ...     ratios=[0.9, 0.1], split_names=["train", "val"]).execute()  # doctest: +SKIP
            >>> val = Permutation.from_tables("cifar.lance", table, split="val")  # doctest: +SKIP
        """
        if permutation_table is None:
            if split not in (None, 0):
                raise ValueError(
                    f"cannot select split {split!r} without a permutation table; "
                    "expected permutation_table= from permutation_builder(...).execute()"
                )
            if source is None:
                raise ValueError("expected a source dataset or a permutation table, got neither")
            return cls.identity(source, version=version, storage_options=storage_options)

        ds, row_ids, live, (index, name), meta = split_rows(source, permutation_table, split, version, storage_options)
        return cls(
            ds,
            row_ids,
            ids_are_live=live,
            split=index,
            split_name=name,
            storage_options=storage_options,
            metadata=meta,
        )

    # -- what the loader uses -----------------------------------------------------

    @property
    def dataset(self) -> lance.LanceDataset:
        """The pinned ``lance.LanceDataset`` this permutation reads, opened in this process."""
        pid = os.getpid()
        if self._ds is None or self._pid != pid:
            if self._ds is not None:
                _FORK_ORPHANS.append(self._ds)
            self._ds = open_source(self._uri, self._version, self._storage_options)
            self._pid = pid
        return self._ds

    @property
    def uri(self) -> str:
        """The dataset URI (absolute for a local path)."""
        return self._uri

    @property
    def version(self) -> int:
        """The dataset version this permutation reads."""
        return self._version

    @property
    def row_ids(self) -> np.ndarray:
        """The ``_rowid`` of each position, in permutation order (read-only uint64)."""
        return self._row_ids

    @property
    def columns(self) -> List[str]:
        """The selected column names (after renames), in output order."""
        return list(self._selection)

    @property
    def blob_columns(self) -> List[str]:
        """The selected columns stored with Lance's blob encoding (read as binary)."""
        return [out for out, src in self._selection.items() if src in self._dataset_blobs]

    @property
    def storage_options(self) -> Optional[Dict[str, str]]:
        """The object store options the dataset was opened with, if any."""
        return self._storage_options

    @property
    def split(self) -> Optional[int]:
        """The split index read from the permutation table (``None`` for identity)."""
        return self._split

    @property
    def split_name(self) -> Optional[str]:
        """The split's name when the table named its splits."""
        return self._split_name

    @property
    def metadata(self) -> Dict[str, str]:
        """The permutation table's metadata (URI, version, seeds, filter, split names)."""
        return dict(self._metadata)

    def take_positions(self, positions: Union[Sequence[int], np.ndarray]) -> pa.RecordBatch:
        """The rows at ``positions`` of this permutation, in that order, as one batch.

        Only the selected columns are read, in one sorted take (plus one blob read per
        blob column); images stay Arrow binary arrays.

        Example:
            >>> perm.take_positions(np.arange(256)).num_rows  # doctest: +SKIP
            256
        """
        ids = self._row_ids[self._check_positions(positions)]
        batch = take_rows(self.dataset, ids, self._read, **self._take_options())
        return self._output(batch, ids)

    def take_positions_sorted(self, positions: Union[Sequence[int], np.ndarray]) -> Tuple[pa.RecordBatch, np.ndarray]:
        """The rows at ``positions`` in storage (row id) order, and ``order``: row
        ``order[i]`` of the batch is the one at ``positions[i]``. One copy less than
        :meth:`take_positions` for a reader that gathers (``decode_batch(order=...)``).

        Example:
            >>> rows, order = perm.take_positions_sorted([5, 0, 3])  # doctest: +SKIP
            >>> lancefeed.decode_batch(rows.column("image"), order=order, size=(224, 224))  # doctest: +SKIP
        """
        ids = self._row_ids[self._check_positions(positions)]
        batch, order = take_rows_sorted(self.dataset, ids, self._read, **self._take_options())
        return self._output(batch, np.sort(ids, kind="stable")), order

    def scan_positions(self, start: int, count: int, batch_size: Optional[int] = None) -> Optional[pa.RecordBatch]:
        """Positions ``start .. start+count-1`` read by one Lance scan (``offset``/
        ``limit``, Lance's read-ahead within and across fragments), or None when the
        rows the scan returns are not those positions' rows (the permutation is not in
        storage order there) or a blob column is selected (read apart, by take).

        Example:
            >>> Permutation.identity("cifar.lance").scan_positions(0, 256).num_rows  # doctest: +SKIP
            256
        """
        if self._read_blobs:
            return None
        try:
            table = self.dataset.to_table(
                columns=list(self._read), offset=start, limit=count, with_row_id=True, scan_in_order=True,
                **({} if batch_size is None else {"batch_size": batch_size}),
            )
        except pa.ArrowInvalid as e:
            # A scan reports the store's I/O failures as ArrowInvalid, a take as OSError:
            # one type for both, so that `except OSError` catches a store that went away.
            if "LanceError(IO)" in str(e):
                raise OSError(str(e)) from e
            raise
        want = self._row_ids[start : start + count]
        got = table.column("_rowid").to_numpy()
        if len(got) != len(want) or not np.array_equal(got, want):
            return None
        arrays = [table.column(c).combine_chunks() for c in self._read]
        return self._output(pa.RecordBatch.from_arrays(arrays, schema=self._read_schema), want)

    def with_row_ids(self, row_ids: np.ndarray) -> "Permutation":
        """A permutation of the rows ``row_ids`` of the same dataset version, in that
        order, with this one's columns and format (rows dropped by a loader's
        ``drop_empty``, say).

        Example:
            >>> len(perm.with_row_ids(perm.row_ids[:10]))  # doctest: +SKIP
            10
        """
        return self._replace(row_ids=row_ids)

    def source_column(self, column: str) -> Optional[str]:
        """The dataset column that selected column ``column`` reads (its name before a
        rename), or None for ``_rowid`` or a name not selected.

        Example:
            >>> perm.rename_column("image", "x").source_column("x")  # doctest: +SKIP
            'image'
        """
        src = self._selection.get(column)
        return None if src is None or src == ROWID else src

    def take_offsets(self, offsets: Union[Sequence[int], np.ndarray]) -> Any:
        """The rows at ``offsets`` in the permutation's format (lancedb's ``take_offsets``).

        Example:
            >>> perm.with_format("python").take_offsets([0, 1])  # doctest: +SKIP
            [{'id': 7, 'label': 'cat'}, {'id': 2, 'label': 'dog'}]
        """
        return self._transform(self.take_positions(offsets))

    def _check_positions(self, positions: Union[Sequence[int], np.ndarray]) -> np.ndarray:
        pos = np.asarray(positions, dtype=np.int64)
        if pos.ndim != 1:
            raise ValueError(f"positions must be one-dimensional, got shape {pos.shape}")
        n = len(self._row_ids)
        if len(pos) and (pos.min() < -n or pos.max() >= n):
            bad = pos[(pos < -n) | (pos >= n)][0]
            raise IndexError(f"position {int(bad)} is out of range for a permutation of {n} rows")
        return pos

    def _take_options(self) -> Dict[str, Any]:
        return {"blob_columns": self._read_blobs, "ids_are_live": self._ids_are_live, "schema": self._read_schema}

    def _output(self, batch: pa.RecordBatch, ids: np.ndarray) -> pa.RecordBatch:
        """The read columns under their output names, ``_rowid`` filled in from ``ids``."""
        if self._plain:
            return batch
        arrays = []
        for src in self._selection.values():
            arrays.append(pa.array(ids, type=pa.uint64()) if src == ROWID else batch.column(src))
        return pa.RecordBatch.from_arrays(arrays, schema=self._schema)

    def _set_selection(self, selection: Dict[str, str]) -> None:
        # selection: output name -> dataset column (or _rowid), lancedb's model.
        self._selection = dict(selection)
        self._read = [src for src in selection.values() if src != ROWID]
        self._read_blobs = [c for c in self._dataset_blobs if c in self._read]
        self._read_schema = pa.schema([self._dataset_schema.field(c) for c in self._read])
        fields = []
        for out, src in selection.items():
            field = pa.field(ROWID, pa.uint64(), nullable=False) if src == ROWID else self._dataset_schema.field(src)
            fields.append(field.with_name(out))
        self._schema = pa.schema(fields)
        self._plain = all(out == src for out, src in selection.items()) and ROWID not in selection.values()

    # -- lancedb's Permutation surface --------------------------------------------

    def select_columns(self, columns: Sequence[str]) -> "Permutation":
        """A permutation reading only ``columns`` (a subset of the current selection).

        ``"_rowid"`` may be selected too: Lance's row id of each row, as in lancedb.

        Example:
            >>> perm.select_columns(["_rowid", "label"]).columns  # doctest: +SKIP
            ['_rowid', 'label']
        """
        if isinstance(columns, str):
            columns = [columns]
        columns = list(columns)
        if not columns:
            raise ValueError("select_columns needs at least one column, got []")
        unknown = [c for c in columns if c not in self._selection and c != ROWID]
        if unknown:
            known_here = set(self._selection.values())
            check_columns(self.dataset, [c for c in unknown if c not in known_here])  # names the ones the dataset lacks
            raise ValueError(
                f"columns {unknown} were removed from this permutation's selection; "
                f"expected a subset of {self.columns}"
            )
        return self._replace(selection={c: self._selection.get(c, ROWID) for c in columns})

    def remove_columns(self, columns: Sequence[str]) -> "Permutation":
        """A permutation without ``columns`` (names not selected are ignored).

        Example:
            >>> perm.remove_columns(["filename"]).columns  # doctest: +SKIP
            ['image', 'label', 'split']
        """
        drop = {columns} if isinstance(columns, str) else set(columns)
        keep = {out: src for out, src in self._selection.items() if out not in drop}
        if not keep:
            raise ValueError("cannot remove every column; expected at least one to remain")
        return self._replace(selection=keep)

    def rename_column(self, old_name: str, new_name: str) -> "Permutation":
        """A permutation that calls column ``old_name`` ``new_name`` (no data is copied).

        Example:
            >>> perm.rename_column("label", "target").columns  # doctest: +SKIP
            ['image', 'target']
        """
        if old_name not in self._selection:
            raise ValueError(f"cannot rename column {old_name!r}: it is not selected; expected one of {self.columns}")
        if new_name in self._selection:
            raise ValueError(f"cannot rename column {old_name!r} to {new_name!r}: a column {new_name!r} already exists")
        if not isinstance(new_name, str) or not new_name:
            raise ValueError(f"new_name must be a non-empty string, got {new_name!r}")
        # lancedb moves the renamed column to the end of the selection; so does this.
        selection = {k: v for k, v in self._selection.items() if k != old_name}
        selection[new_name] = self._selection[old_name]
        return self._replace(selection=selection)

    def rename_columns(self, column_map: Dict[str, str]) -> "Permutation":
        """:meth:`rename_column` for each ``old: new`` of ``column_map``, in order.

        Example:
            >>> perm.rename_columns({"image": "x", "label": "y"}).columns  # doctest: +SKIP
            ['x', 'y']
        """
        out = self
        for old, new in column_map.items():
            out = out.rename_column(old, new)
        return out

    @property
    def schema(self) -> pa.Schema:
        """The schema of the rows this permutation yields."""
        return self._schema

    @property
    def column_names(self) -> List[str]:
        """Alias of :attr:`columns`."""
        return self.columns

    @property
    def num_columns(self) -> int:
        """The number of selected columns."""
        return len(self._selection)

    @property
    def num_rows(self) -> int:
        """The number of rows in the permutation."""
        return len(self._row_ids)

    @property
    def shape(self) -> tuple[int, int]:
        """``(num_rows, num_columns)``."""
        return self.num_rows, self.num_columns

    @property
    def batch_size(self) -> int:
        """The batch size ``iter(perm)`` uses."""
        return self._batch_size

    def __len__(self) -> int:
        return len(self._row_ids)

    def with_batch_size(self, batch_size: int) -> "Permutation":
        """A permutation whose iteration yields batches of ``batch_size`` rows."""
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        return self._replace(batch_size=int(batch_size))

    def with_skip(self, skip: int) -> "Permutation":
        """A permutation without its first ``skip`` rows (lancedb's ``with_skip``).

        As in lancedb it replaces an earlier skip, and applies before :meth:`with_take`
        whatever the order of the calls.

        Example:
            >>> len(perm.with_skip(10)) == len(perm) - 10  # doctest: +SKIP
            True
        """
        if isinstance(skip, bool) or int(skip) < 0:
            raise ValueError(f"skip must be a non-negative number of rows, got {skip!r}")
        return self._replace(offset=int(skip))

    def with_take(self, limit: int) -> "Permutation":
        """A permutation of at most ``limit`` rows, after any skip (lancedb's ``with_take``).

        Example:
            >>> len(perm.with_skip(10).with_take(5))  # doctest: +SKIP
            5
        """
        if isinstance(limit, bool) or int(limit) < 0:
            raise ValueError(f"limit must be a non-negative number of rows, got {limit!r}")
        return self._replace(limit=int(limit))

    def skip(self, skip: int) -> "Permutation":
        """Deprecated alias of :meth:`with_skip` (as in lancedb)."""
        warnings.warn("Permutation.skip is deprecated; use with_skip", DeprecationWarning, stacklevel=2)
        return self.with_skip(skip)

    def take(self, limit: int) -> "Permutation":
        """Deprecated alias of :meth:`with_take` (as in lancedb)."""
        warnings.warn("Permutation.take is deprecated; use with_take", DeprecationWarning, stacklevel=2)
        return self.with_take(limit)

    def with_format(self, format: str) -> "Permutation":
        """Set what items, ``take_offsets`` and iteration yield: lancedb's formats.

        ``"python"`` (list of row dicts, the default), ``"python_col"`` (dict of
        lists), ``"numpy"`` (2-D array, rows x columns), ``"pandas"``, ``"arrow"``
        (``RecordBatch``), ``"torch"`` (list of row dicts of tensors), ``"torch_row"``
        (list of 1-D tensors), ``"torch_col"`` (2-D tensor, columns first),
        ``"polars"``. See :mod:`lancefeed.permutation.formats`.

        Example:
            >>> perm.with_format("python_col")[0:2]  # doctest: +SKIP
            {'id': [7, 2], 'label': ['cat', 'dog']}
        """
        return self._replace(transform_fn=format_fn(format))

    def with_transform(self, transform: Callable[[pa.RecordBatch], Any]) -> "Permutation":
        """Apply ``transform`` to each ``RecordBatch`` that items and iteration yield."""
        if not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        return self._replace(transform_fn=transform)

    def __getitem__(self, index: int) -> Any:
        """The row at ``index``, as a one-row batch in the permutation's format."""
        if isinstance(index, slice):
            return self.__getitems__(list(range(*index.indices(len(self)))))
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"permutation indices must be integers or slices, got {type(index).__name__}")
        return self.__getitems__([int(index)])

    def __getitems__(self, indices: Sequence[int]) -> Any:
        """The rows at ``indices`` as one batch, one take (torch's ``DataLoader`` calls this)."""
        return self.take_offsets(indices)

    def __iter__(self) -> Iterator[Any]:
        """Batches of :attr:`batch_size` rows in the permutation's format.

        As in lancedb, a short last batch is dropped; ``iter(batch_size)`` and
        :meth:`iter_batches` keep it unless ``skip_last_batch=True``.
        """
        return self.iter(self._batch_size, skip_last_batch=True)

    def iter(self, batch_size: int, skip_last_batch: bool = False) -> Iterator[Any]:
        """Batches of ``batch_size`` rows in the permutation's format.

        Example:
            >>> for rows in perm.iter(64, skip_last_batch=True): ...  # doctest: +SKIP
        """
        for batch in self.iter_batches(batch_size, skip_last_batch=skip_last_batch):
            yield self._transform(batch)

    def iter_batches(self, batch_size: int = DEFAULT_BATCH_SIZE, skip_last_batch: bool = False) -> Iterator[pa.RecordBatch]:
        """Arrow record batches of ``batch_size`` rows, in permutation order.

        Example:
            >>> sum(b.num_rows for b in perm.iter_batches(1000)) == len(perm)  # doctest: +SKIP
            True
        """
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        n = len(self)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            if skip_last_batch and stop - start < batch_size:
                return
            yield self.take_positions(np.arange(start, stop))

    def __repr__(self) -> str:
        split = "" if self._split is None else f", split={self._split_name or self._split!r}"
        return (
            f"Permutation(uri={self.uri!r}, version={self.version}, rows={len(self)}"
            f"{split}, columns={self.columns})"
        )

    # torch DataLoader workers started with "spawn" or "forkserver" pickle the
    # dataset: only the URI, version and options travel; the worker opens its own.
    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_ds"] = None
        state["_pid"] = None
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _replace(self, **changes: Any) -> "Permutation":
        new = object.__new__(Permutation)
        new.__dict__.update(self.__dict__)
        if "columns" in changes:
            new._set_selection({c: c for c in changes.pop("columns")})
        if "selection" in changes:
            new._set_selection(changes.pop("selection"))
        if "batch_size" in changes:
            new._batch_size = changes.pop("batch_size")
        if "row_ids" in changes:
            ids = np.ascontiguousarray(changes.pop("row_ids"), dtype=np.uint64)
            ids.flags.writeable = False
            new._all_row_ids = ids
            new._offset = None
            new._limit = None
            new._row_ids = ids
        if "offset" in changes or "limit" in changes:
            new._offset = changes.pop("offset", new._offset)
            new._limit = changes.pop("limit", new._limit)
            start = new._offset or 0
            stop = None if new._limit is None else start + new._limit
            new._row_ids = new._all_row_ids[start:stop]
        if "transform_fn" in changes:
            new._transform = changes.pop("transform_fn")
        if changes:
            raise TypeError(f"unknown permutation changes {sorted(changes)}")
        return new
