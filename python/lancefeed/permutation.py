"""Permutations of a Lance dataset: which rows, in which order, in which split.

The vocabulary is lancedb's (``lancedb.permutation``): a :class:`PermutationBuilder`
filters, splits and shuffles a dataset and ``execute()`` returns a *permutation
table*, a ``pyarrow.Table`` of ``row_id`` (uint64) and ``split_id`` (uint64) sorted by
split, whose schema metadata records the dataset URI, the version it was built on,
the seeds, the filter and the split names. :class:`Permutation` reads one split of
it (or every row, with :meth:`Permutation.identity`) in batches.

Row ids are Lance ``_rowid`` values of the pinned version. Without stable row ids a
``_rowid`` is a row *address* (fragment, offset), only meaningful in the version it
was read from, so a permutation always reads that version and refuses another one;
with stable row ids it may be applied to a later version.

Example:
    >>> import lancefeed
    >>> table = (
    ...     lancefeed.permutation_builder("cifar.lance")
    ...     .filter("label != 'frog'")
    ...     .split_random(ratios=[0.9, 0.1], seed=42, split_names=["train", "val"])
    ...     .shuffle(seed=0)
    ...     .execute()
    ... )  # doctest: +SKIP
    >>> train = lancefeed.Permutation.from_tables("cifar.lance", table, split="train")  # doctest: +SKIP
    >>> batch = train.select_columns(["image", "label"]).take_positions([0, 1, 2])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import lance
import numpy as np
import pyarrow as pa

from lancefeed import splits as _splits
from lancefeed.rows import take_rows, take_rows_sorted
from lancefeed.source import (
    SourceLike,
    VersionLike,
    blob_columns,
    check_columns,
    column_names,
    dataset_uri,
    has_stable_row_ids,
    open_source,
    output_schema,
)

__all__ = [
    "Permutation",
    "PermutationBuilder",
    "Permutations",
    "open_source",
    "permutation_builder",
]

ROW_ID_COLUMN = "row_id"
SPLIT_ID_COLUMN = "split_id"
SPLIT_NAMES_KEY = "split_names"  # the key lancedb uses, so its tables read here too
DEFAULT_BATCH_SIZE = 100

PermutationTableLike = Union[pa.Table, lance.LanceDataset, str]


class PermutationBuilder:
    """Configure a filter, splits and a shuffle over a dataset, then ``execute()``.

    Each method returns the builder, so calls chain. Without a split every filtered
    row is in split 0; without a shuffle each split lists its rows in dataset order.

    Example:
        >>> table = (
        ...     PermutationBuilder(open_source("cifar.lance"))
        ...     .split_hash(["filename"], [9, 1], split_names=["train", "test"])
        ...     .shuffle(seed=1)
        ...     .execute()
        ... )  # doctest: +SKIP
    """

    def __init__(self, dataset: lance.LanceDataset) -> None:
        self._ds = dataset
        self._filter: Optional[str] = None
        self._split: Dict[str, Any] = {"kind": "none"}
        self._split_names: Optional[List[str]] = None
        self._shuffle: Optional[Dict[str, Any]] = None
        self._persist: Optional[tuple[str, Optional[Dict[str, str]]]] = None

    def filter(self, filter: str) -> "PermutationBuilder":
        """Keep only the rows where the SQL predicate ``filter`` is true.

        Example:
            >>> builder.filter("array_has_any(categories, ['car'])")  # doctest: +SKIP
        """
        if not isinstance(filter, str) or not filter.strip():
            raise ValueError(f"filter must be a non-empty SQL predicate string, got {filter!r}")
        self._filter = filter
        return self

    def split_random(
        self,
        *,
        ratios: Optional[Sequence[float]] = None,
        counts: Optional[Sequence[int]] = None,
        fixed: Optional[int] = None,
        seed: Optional[int] = None,
        split_names: Optional[Sequence[str]] = None,
    ) -> "PermutationBuilder":
        """Assign rows to splits at random.

        ``ratios`` are fractions of the filtered rows (summing to at most 1; rows left
        over are in no split), ``counts`` are row counts, ``fixed=k`` makes ``k`` equal
        splits of ``n // k`` rows. ``seed`` makes the draw repeatable; when it is
        ``None`` a seed is drawn and recorded in the table's metadata.

        Example:
            >>> builder.split_random(ratios=[0.8, 0.2], seed=7, split_names=["train", "val"])  # doctest: +SKIP
        """
        _splits.validate_sizes(ratios, counts, fixed)
        self._split = {
            "kind": "random",
            "ratios": _list(ratios, float),
            "counts": _list(counts, int),
            "fixed": None if fixed is None else int(fixed),
            "seed": _check_seed(seed),
        }
        self._split_names = _check_names(split_names, self._expected_splits())
        return self

    def split_hash(
        self,
        columns: Sequence[str],
        split_weights: Sequence[int],
        *,
        discard_weight: Optional[int] = 0,
        split_names: Optional[Sequence[str]] = None,
    ) -> "PermutationBuilder":
        """Assign rows to splits by a hash of their values in ``columns``.

        The hash space is shared out in proportion to ``split_weights``, and to
        ``discard_weight`` for rows in no split. A row's split depends only on its own
        values, so it stays put when rows are appended or deleted.

        Example:
            >>> builder.split_hash(["filename"], [8, 1, 1], split_names=["train", "val", "test"])  # doctest: +SKIP
        """
        if isinstance(columns, str):
            columns = [columns]
        columns = list(columns)
        discard = 0 if discard_weight is None else int(discard_weight)
        _splits.validate_hash(split_weights, discard, columns)
        check_columns(self._ds, columns, what="split_hash column")
        self._split = {
            "kind": "hash",
            "columns": columns,
            "split_weights": [int(w) for w in split_weights],
            "discard_weight": discard,
        }
        self._split_names = _check_names(split_names, len(self._split["split_weights"]))
        return self

    def split_sequential(
        self,
        *,
        ratios: Optional[Sequence[float]] = None,
        counts: Optional[Sequence[int]] = None,
        fixed: Optional[int] = None,
        split_names: Optional[Sequence[str]] = None,
    ) -> "PermutationBuilder":
        """Assign rows to splits in dataset order: the first rows to split 0, and so on.

        Sizes are given as in :meth:`split_random`.

        Example:
            >>> builder.split_sequential(counts=[45000, 5000], split_names=["train", "val"])  # doctest: +SKIP
        """
        _splits.validate_sizes(ratios, counts, fixed)
        self._split = {
            "kind": "sequential",
            "ratios": _list(ratios, float),
            "counts": _list(counts, int),
            "fixed": None if fixed is None else int(fixed),
        }
        self._split_names = _check_names(split_names, self._expected_splits())
        return self

    def shuffle(self, *, seed: Optional[int] = None, clump_size: Optional[int] = None) -> "PermutationBuilder":
        """Shuffle the rows of each split.

        With ``clump_size`` runs of that many neighbouring rows move together: fewer,
        larger reads (useful on object stores) for a coarser shuffle. A ``None`` seed
        is drawn and recorded in the table's metadata.

        Example:
            >>> builder.shuffle(seed=0, clump_size=16)  # doctest: +SKIP
        """
        if clump_size is not None and int(clump_size) < 1:
            raise ValueError(f"clump_size must be a positive number of rows, got {clump_size}")
        self._shuffle = {"seed": _check_seed(seed), "clump_size": None if clump_size is None else int(clump_size)}
        return self

    def persist(self, uri: str, *, storage_options: Optional[Dict[str, str]] = None) -> "PermutationBuilder":
        """Also write the permutation table to ``uri`` as a Lance dataset on ``execute()``.

        Example:
            >>> builder.persist("cifar-perm.lance").execute()  # doctest: +SKIP
        """
        self._persist = (str(uri), storage_options)
        return self

    def execute(self) -> pa.Table:
        """Build the permutation table: ``row_id`` and ``split_id``, sorted by split.

        Example:
            >>> permutation_builder("cifar.lance").shuffle(seed=3).execute().num_rows  # doctest: +SKIP
            50000
        """
        ds = self._ds
        kind = self._split["kind"]
        hash_cols = self._split["columns"] if kind == "hash" else []
        scanned = _scan(ds, hash_cols, self._filter)
        row_ids = scanned["_rowid"].to_numpy()
        n = len(row_ids)

        split_seed = None
        if kind == "random":
            split_seed = self._split["seed"] if self._split["seed"] is not None else _splits.new_seed()
            sizes = _splits.split_sizes(n, self._split["ratios"], self._split["counts"], self._split["fixed"])
            split_of = _splits.assign_random(n, sizes, split_seed)
            num_splits = len(sizes)
        elif kind == "sequential":
            sizes = _splits.split_sizes(n, self._split["ratios"], self._split["counts"], self._split["fixed"])
            split_of = _splits.assign_sequential(n, sizes)
            num_splits = len(sizes)
        elif kind == "hash":
            split_of = _splits.assign_hash(
                scanned, hash_cols, self._split["split_weights"], self._split["discard_weight"]
            )
            num_splits = len(self._split["split_weights"])
        else:
            split_of = np.zeros(n, dtype=np.int64)
            num_splits = 1

        shuffle_seed = None
        gen = None
        if self._shuffle is not None:
            shuffle_seed = self._shuffle["seed"] if self._shuffle["seed"] is not None else _splits.new_seed()
            gen = _splits.rng(_splits.SHUFFLE_STREAM, shuffle_seed)

        # Group positions by split, each split in dataset order, then shuffle within it.
        kept = np.flatnonzero(split_of >= 0)
        by_split = kept[np.argsort(split_of[kept], kind="stable")]
        bounds = np.searchsorted(split_of[by_split], np.arange(num_splits + 1), side="left")
        parts = []
        for i in range(num_splits):
            members = by_split[bounds[i] : bounds[i + 1]]
            if gen is not None:
                members = _splits.shuffled(members, gen, self._shuffle["clump_size"])
            parts.append(members)
        order = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

        split_config = dict(self._split)
        if kind == "random":
            split_config["seed"] = split_seed
        metadata = {
            "lancefeed.permutation": "1",
            "uri": dataset_uri(ds),
            "version": str(ds.version),
            "seed": "" if shuffle_seed is None else str(shuffle_seed),
            "clump_size": "" if not self._shuffle or not self._shuffle["clump_size"] else str(self._shuffle["clump_size"]),
            "split_seed": "" if split_seed is None else str(split_seed),
            "filter": self._filter or "",
            SPLIT_NAMES_KEY: json.dumps(self._split_names or []),
            "num_splits": str(num_splits),
            "split_strategy": json.dumps(split_config),
            "stable_row_ids": "true" if has_stable_row_ids(ds) else "false",
        }
        schema = pa.schema(
            [pa.field(ROW_ID_COLUMN, pa.uint64(), nullable=False), pa.field(SPLIT_ID_COLUMN, pa.uint64(), nullable=False)],
            metadata=metadata,
        )
        table = pa.Table.from_arrays(
            [pa.array(row_ids[order], type=pa.uint64()), pa.array(split_of[order].astype(np.uint64), type=pa.uint64())],
            schema=schema,
        )
        if self._persist is not None:
            uri, options = self._persist
            lance.write_dataset(table, uri, storage_options=options)
        return table

    def _expected_splits(self) -> Optional[int]:
        split = self._split
        if split.get("ratios") is not None:
            return len(split["ratios"])
        if split.get("counts") is not None:
            return len(split["counts"])
        return split.get("fixed")


def permutation_builder(
    source: SourceLike,
    *,
    version: Optional[VersionLike] = None,
    storage_options: Optional[Dict[str, str]] = None,
) -> PermutationBuilder:
    """Start a permutation of ``source`` (a URI or ``LanceDataset``) at ``version``.

    The version (a number or a tag; the latest by default) is pinned: the table the
    builder makes records it, and every :class:`Permutation` made from that table
    reads it.

    Example:
        >>> table = permutation_builder("cifar.lance", version=1).shuffle(seed=0).execute()  # doctest: +SKIP
        >>> table.schema.metadata[b"version"]  # doctest: +SKIP
        b'1'
    """
    return PermutationBuilder(open_source(source, version, storage_options))


class Permutation:
    """An ordered view of rows of a pinned dataset version, read in batches.

    It is a torch map-style dataset: ``len()``, ``perm[i]`` and ``perm.__getitems__``
    (which torch's ``DataLoader`` calls with a whole batch of indices, so one batch is
    one sorted take). Items come in the format set by :meth:`with_format` (``"python"``,
    a dict of lists, by default, as in lancedb). :meth:`take_positions` and
    :meth:`iter_batches` always give Arrow record batches.

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
        self._ds = dataset
        self._row_ids = ids
        self._columns = list(columns) if columns is not None else column_names(dataset)
        self._blobs = [c for c in blob_columns(dataset) if c in self._columns]
        self._schema = output_schema(dataset, self._columns)
        self._ids_are_live = ids_are_live
        self._split = split
        self._split_name = split_name
        self._batch_size = int(batch_size)
        self._transform = transform_fn if transform_fn is not None else _to_python
        self._storage_options = storage_options
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

        Example:
            >>> len(Permutation.identity("cifar.lance"))  # doctest: +SKIP
            50000
        """
        ds = open_source(source, version, storage_options)
        row_ids = _scan(ds, [], None)["_rowid"].to_numpy()
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

        ``permutation_table`` is what :meth:`PermutationBuilder.execute` returned, or
        that table persisted as a Lance dataset (a ``LanceDataset`` or its URI); with
        ``None`` this is :meth:`identity`. ``split`` is a split name or index (split 0
        by default). A URI ``source`` (or ``None``: the URI recorded in the table) is
        opened at the version the table was built on. A ``LanceDataset`` or a
        ``version=`` naming another version is an error, unless the dataset has stable
        row ids.

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

        table = _load_table(permutation_table, storage_options)
        meta = _metadata(table)
        names = json.loads(meta.get(SPLIT_NAMES_KEY) or "[]")
        index, name = _resolve_split(split, names, table, meta)
        ds = _pinned_dataset(source, meta, version, storage_options)

        split_ids = table.column(SPLIT_ID_COLUMN).to_numpy()
        row_ids = table.column(ROW_ID_COLUMN).to_numpy()[split_ids == index]
        built = meta.get("version")
        live = built is not None and str(ds.version) == built
        if not live and built is not None:
            _check_live(ds, row_ids, int(built))
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
        """The pinned ``lance.LanceDataset`` this permutation reads."""
        return self._ds

    @property
    def uri(self) -> str:
        """The dataset URI (absolute for a local path)."""
        return dataset_uri(self._ds)

    @property
    def version(self) -> int:
        """The dataset version this permutation reads."""
        return int(self._ds.version)

    @property
    def row_ids(self) -> np.ndarray:
        """The ``_rowid`` of each position, in permutation order (read-only uint64)."""
        return self._row_ids

    @property
    def columns(self) -> List[str]:
        """The selected column names, in output order."""
        return list(self._columns)

    @property
    def blob_columns(self) -> List[str]:
        """The selected columns stored with Lance's blob encoding (read as binary)."""
        return list(self._blobs)

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
        return take_rows(self._ds, self._row_ids[self._check_positions(positions)], self._columns, **self._take_options())

    def take_positions_sorted(self, positions: Union[Sequence[int], np.ndarray]) -> Tuple[pa.RecordBatch, np.ndarray]:
        """The rows at ``positions`` in storage (row id) order, and ``order``: row
        ``order[i]`` of the batch is the one at ``positions[i]``. One copy less than
        :meth:`take_positions` for a reader that gathers (``decode_batch(order=...)``).

        Example:
            >>> rows, order = perm.take_positions_sorted([5, 0, 3])  # doctest: +SKIP
            >>> lancefeed.decode_batch(rows.column("image"), order=order, size=(224, 224))  # doctest: +SKIP
        """
        return take_rows_sorted(
            self._ds, self._row_ids[self._check_positions(positions)], self._columns, **self._take_options()
        )

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
        return {"blob_columns": self._blobs, "ids_are_live": self._ids_are_live, "schema": self._schema}

    # -- lancedb's Permutation surface --------------------------------------------

    def select_columns(self, columns: Sequence[str]) -> "Permutation":
        """A permutation reading only ``columns`` (a subset of the current selection).

        Example:
            >>> perm.select_columns(["image", "label"]).columns  # doctest: +SKIP
            ['image', 'label']
        """
        if isinstance(columns, str):
            columns = [columns]
        columns = list(columns)
        if not columns:
            raise ValueError("select_columns needs at least one column, got []")
        unknown = [c for c in columns if c not in self._columns]
        if unknown:
            check_columns(self._ds, unknown)  # names the ones the dataset lacks
            raise ValueError(
                f"columns {unknown} were removed from this permutation's selection; "
                f"expected a subset of {self._columns}"
            )
        return self._replace(columns=columns)

    def remove_columns(self, columns: Sequence[str]) -> "Permutation":
        """A permutation without ``columns`` (names not selected are ignored).

        Example:
            >>> perm.remove_columns(["filename"]).columns  # doctest: +SKIP
            ['image', 'label', 'split']
        """
        drop = {columns} if isinstance(columns, str) else set(columns)
        keep = [c for c in self._columns if c not in drop]
        if not keep:
            raise ValueError("cannot remove every column; expected at least one to remain")
        return self._replace(columns=keep)

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
        return len(self._columns)

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

    def with_format(self, format: str) -> "Permutation":
        """Set what items and iteration yield.

        ``"python"`` (dict of lists, the default), ``"arrow"`` (``RecordBatch``),
        ``"numpy"`` (dict of numpy arrays) or ``"pandas"`` (``DataFrame``).

        Example:
            >>> perm.with_format("arrow")[0]  # doctest: +SKIP
            pyarrow.RecordBatch ...
        """
        try:
            fn = _FORMATS[format]
        except KeyError:
            raise ValueError(f"unknown format {format!r}; expected one of {sorted(_FORMATS)}") from None
        if format == "pandas":
            try:
                import pandas  # noqa: F401
            except ImportError:
                raise ImportError('with_format("pandas") needs pandas: pip install pandas') from None
        return self._replace(transform_fn=fn)

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
        """The rows at ``indices`` as one batch (torch's ``DataLoader`` calls this)."""
        return self._transform(self.take_positions(indices))

    def __iter__(self) -> Iterator[Any]:
        """Every row, in batches of :attr:`batch_size`, in the permutation's format."""
        return self.iter(self._batch_size)

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
            f"{split}, columns={self._columns})"
        )

    # torch DataLoader workers started with "spawn" pickle the dataset: reopen the
    # pinned version there instead of shipping Lance's native handle.
    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_ds"] = (dataset_uri(self._ds), int(self._ds.version))
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        uri, version = state["_ds"]
        state["_ds"] = open_source(uri, version, state.get("_storage_options"))
        self.__dict__.update(state)

    def _replace(self, **changes: Any) -> "Permutation":
        new = object.__new__(Permutation)
        new.__dict__.update(self.__dict__)
        if "columns" in changes:
            new._columns = list(changes.pop("columns"))
            new._blobs = [c for c in blob_columns(self._ds) if c in new._columns]
            new._schema = output_schema(self._ds, new._columns)
        if "batch_size" in changes:
            new._batch_size = changes.pop("batch_size")
        if "row_ids" in changes:
            ids = np.ascontiguousarray(changes.pop("row_ids"), dtype=np.uint64)
            ids.flags.writeable = False
            new._row_ids = ids
        if "transform_fn" in changes:
            new._transform = changes.pop("transform_fn")
        return new


class Permutations:
    """Every split of a permutation table, by name or index.

    Example:
        >>> perms = Permutations("cifar.lance", table)  # doctest: +SKIP
        >>> perms.split_names, len(perms["train"])  # doctest: +SKIP
        (['train', 'val'], 45000)
    """

    def __init__(
        self,
        source: Optional[SourceLike],
        permutation_table: PermutationTableLike,
        *,
        version: Optional[VersionLike] = None,
        storage_options: Optional[Dict[str, str]] = None,
    ) -> None:
        self.source = source
        self.permutation_table = _load_table(permutation_table, storage_options)
        meta = _metadata(self.permutation_table)
        self.split_names: List[str] = json.loads(meta.get(SPLIT_NAMES_KEY) or "[]")
        self.split_dict: Dict[str, int] = {n: i for i, n in enumerate(self.split_names)}
        self._num_splits = _num_splits(self.permutation_table, meta)
        self._version = version
        self._storage_options = storage_options

    def __len__(self) -> int:
        return self._num_splits

    def __getitem__(self, split: Union[str, int]) -> Permutation:
        return Permutation.from_tables(
            self.source,
            self.permutation_table,
            split,
            version=self._version,
            storage_options=self._storage_options,
        )

    def get_by_name(self, name: str) -> Permutation:
        """The split called ``name``."""
        if not isinstance(name, str):
            raise TypeError(f"split name must be a string, got {type(name).__name__}")
        return self[name]

    def get_by_index(self, index: int) -> Permutation:
        """The split with index ``index``."""
        return self[int(index)]


# -- helpers ------------------------------------------------------------------------


def _scan(ds: lance.LanceDataset, columns: Sequence[str], filter: Optional[str]) -> pa.Table:
    try:
        return ds.to_table(columns=list(columns), filter=filter, with_row_id=True, scan_in_order=True)
    except (ValueError, OSError) as exc:
        if filter is None:
            raise
        raise ValueError(
            f"filter {filter!r} could not be applied to dataset {dataset_uri(ds)!r}: {_first_line(exc)}; "
            f"expected an SQL predicate over columns {column_names(ds)}"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).split("\n")[0]
    # Lance appends Rust source locations; they help nobody reading the error.
    return text.split(", /")[0]


def _load_table(table: PermutationTableLike, storage_options: Optional[Dict[str, str]]) -> pa.Table:
    if isinstance(table, pa.Table):
        out = table
    elif isinstance(table, lance.LanceDataset):
        out = table.to_table(scan_in_order=True)
    elif isinstance(table, str) or hasattr(table, "__fspath__"):
        out = open_source(table, storage_options=storage_options).to_table(scan_in_order=True)
    else:
        raise TypeError(
            "expected a permutation table (pyarrow.Table from execute(), or a persisted one as "
            f"lance.LanceDataset or URI), got {type(table).__name__}"
        )
    missing = [c for c in (ROW_ID_COLUMN, SPLIT_ID_COLUMN) if c not in out.column_names]
    if missing:
        raise ValueError(
            f"not a permutation table: missing column(s) {missing}; expected columns "
            f"{ROW_ID_COLUMN!r} and {SPLIT_ID_COLUMN!r}, got {out.column_names}"
        )
    return out


def _metadata(table: pa.Table) -> Dict[str, str]:
    raw = table.schema.metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items()}


def _num_splits(table: pa.Table, meta: Dict[str, str]) -> int:
    if meta.get("num_splits"):
        return int(meta["num_splits"])
    names = json.loads(meta.get(SPLIT_NAMES_KEY) or "[]")
    ids = table.column(SPLIT_ID_COLUMN).to_numpy()
    return max(len(names), int(ids.max()) + 1 if len(ids) else 0)


def _resolve_split(
    split: Optional[Union[str, int]], names: List[str], table: pa.Table, meta: Dict[str, str]
) -> tuple[int, Optional[str]]:
    count = _num_splits(table, meta)
    if split is None:
        split = 0
    if isinstance(split, str):
        if split not in names:
            known = f"the splits are named {names}" if names else "the table's splits have no names"
            raise ValueError(f"unknown split {split!r}: {known} (or use an index 0..{count - 1})")
        index = names.index(split)
    elif isinstance(split, (int, np.integer)) and not isinstance(split, bool):
        index = int(split)
        if not 0 <= index < max(count, 1):
            raise ValueError(f"split index {index} is out of range: the table has {count} split(s)")
    else:
        raise TypeError(f"split must be a name or an index, got {type(split).__name__}")
    name = names[index] if index < len(names) else None
    return index, name


def _pinned_dataset(
    source: Optional[SourceLike],
    meta: Dict[str, str],
    version: Optional[VersionLike],
    storage_options: Optional[Dict[str, str]],
) -> lance.LanceDataset:
    built = meta.get("version")
    if source is None:
        source = meta.get("uri")
        if not source:
            raise ValueError("the permutation table records no dataset URI; expected a source dataset")
    if isinstance(source, lance.LanceDataset) or version is not None:
        ds = open_source(source, version, storage_options)
    else:
        ds = open_source(source, int(built) if built else None, storage_options)
    recorded = meta.get("uri")
    if recorded and _plain_uri(recorded) != _plain_uri(dataset_uri(ds)):
        # A copied or moved dataset is legitimate, so this only warns; row ids of one
        # dataset read from another would silently give the wrong rows.
        warnings.warn(
            f"the permutation table was built on {recorded!r} but is applied to "
            f"{dataset_uri(ds)!r}; expected the same dataset (or a copy of it)",
            stacklevel=3,
        )
    if built is not None and str(ds.version) != built and not has_stable_row_ids(ds):
        raise ValueError(
            f"the permutation was built on version {built} of {meta.get('uri', dataset_uri(ds))!r} "
            f"but is applied to version {ds.version}; without stable row ids a row id is a "
            f"storage address valid only in the version it was read from. Expected version {built}: "
            f"pass the URI (it is opened at version {built}) or open_source(uri, version={built}), "
            "or rebuild the permutation on this version"
        )
    return ds


def _plain_uri(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _check_live(ds: lance.LanceDataset, row_ids: np.ndarray, built: int) -> None:
    live = ds.to_table(columns=[], with_row_id=True)["_rowid"].to_numpy()
    missing = row_ids[~np.isin(row_ids, live)]
    if len(missing):
        shown = ", ".join(str(int(i)) for i in missing[:5])
        raise LookupError(
            f"{len(missing)} row(s) of the permutation built on version {built} are gone from "
            f"version {ds.version} (row ids {shown}{' ...' if len(missing) > 5 else ''}); "
            f"expected every row to still exist, or open version {built}"
        )


def _check_seed(seed: Optional[int]) -> Optional[int]:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


def _check_names(names: Optional[Sequence[str]], expected: Optional[int]) -> Optional[List[str]]:
    if names is None:
        return None
    if isinstance(names, str):
        raise TypeError(f"split_names must be a list of strings, got the string {names!r}")
    names = list(names)
    if any(not isinstance(n, str) or not n for n in names):
        raise ValueError(f"split_names must be non-empty strings, got {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"split_names must be unique, got {names}")
    if expected is not None and len(names) != expected:
        raise ValueError(f"got {len(names)} split_names {names} for {expected} splits; expected one name per split")
    return names


def _list(values: Optional[Sequence[Any]], kind: type) -> Optional[List[Any]]:
    return None if values is None else [kind(v) for v in values]


def _to_python(batch: pa.RecordBatch) -> Dict[str, List[Any]]:
    return batch.to_pydict()


def _to_numpy(batch: pa.RecordBatch) -> Dict[str, np.ndarray]:
    return {name: col.to_numpy(zero_copy_only=False) for name, col in zip(batch.schema.names, batch.columns)}


def _to_arrow(batch: pa.RecordBatch) -> pa.RecordBatch:
    return batch


def _to_pandas(batch: pa.RecordBatch) -> Any:
    return batch.to_pandas()


# Module-level functions, not lambdas, so a Permutation pickles into spawned workers.
_FORMATS: Dict[str, Callable[[pa.RecordBatch], Any]] = {
    "python": _to_python,
    "arrow": _to_arrow,
    "numpy": _to_numpy,
    "pandas": _to_pandas,
}
