"""The permutation builder: filter, split and shuffle rows into a permutation table."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence

import lance
import numpy as np
import pyarrow as pa

from lancefeed.permutation import splits as _splits
from lancefeed.permutation._common import (
    BASE_VERSION_KEY,
    ROW_ID_COLUMN,
    SPLIT_ID_COLUMN,
    SPLIT_NAMES_KEY,
    as_list,
    check_names,
    check_seed,
    scan,
)
from lancefeed.permutation.interop import default_tag, protect_version
from lancefeed.source import (
    SourceLike,
    VersionLike,
    check_columns,
    dataset_uri,
    has_stable_row_ids,
    live_row_ids,
    open_source,
)

_CALC_COLUMN = "__lancefeed_split"


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

    def __init__(self, dataset: Any) -> None:
        """``dataset``: a ``LanceDataset``, a URI or a local lancedb ``Table``."""
        self._ds = dataset if isinstance(dataset, lance.LanceDataset) else open_source(dataset)
        self._filter: Optional[str] = None
        self._split: Dict[str, Any] = {"kind": "none"}
        self._split_names: Optional[List[str]] = None
        self._shuffle: Optional[Dict[str, Any]] = None
        self._persist: Optional[tuple] = None

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
        clump_size: Optional[int] = None,
        split_names: Optional[Sequence[str]] = None,
    ) -> "PermutationBuilder":
        """Assign rows to splits at random.

        ``ratios`` are fractions of the filtered rows (summing to at most 1; rows left
        over are in no split), ``counts`` are row counts, ``fixed=k`` makes ``k`` equal
        splits of ``n // k`` rows. ``seed`` makes the draw repeatable; when it is
        ``None`` a seed is drawn and recorded in the table's metadata. With
        ``clump_size`` runs of that many neighbouring rows go to a split together (as
        in lancedb): fewer, larger reads for a coarser draw.

        Example:
            >>> builder.split_random(ratios=[0.8, 0.2], seed=7, split_names=["train", "val"])  # doctest: +SKIP
        """
        _splits.validate_sizes(ratios, counts, fixed)
        if clump_size is not None and int(clump_size) < 1:
            raise ValueError(f"clump_size must be a positive number of rows, got {clump_size}")
        self._split = {
            "kind": "random",
            "ratios": as_list(ratios, float),
            "counts": as_list(counts, int),
            "fixed": None if fixed is None else int(fixed),
            "seed": check_seed(seed),
            "clump_size": None if clump_size is None else int(clump_size),
        }
        self._split_names = check_names(split_names, self._expected_splits())
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
        self._split_names = check_names(split_names, len(self._split["split_weights"]))
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
            "ratios": as_list(ratios, float),
            "counts": as_list(counts, int),
            "fixed": None if fixed is None else int(fixed),
        }
        self._split_names = check_names(split_names, self._expected_splits())
        return self

    def split_calculated(self, calculation: str, split_names: Optional[Sequence[str]] = None) -> "PermutationBuilder":
        """Assign each row to the split an SQL expression computes for it.

        ``calculation`` gives an integer 0..k-1 per row (lancedb's
        ``split_calculated``). With ``split_names`` there are ``len(split_names)``
        splits, otherwise ``max + 1``; a row whose value is null, negative or past the
        last split is in no split.

        Example:
            >>> builder.split_calculated("id % 10 >= 8", split_names=["train", "test"])  # doctest: +SKIP
        """
        if not isinstance(calculation, str) or not calculation.strip():
            raise ValueError(f"calculation must be a non-empty SQL expression string, got {calculation!r}")
        self._split = {"kind": "calculated", "calculation": calculation}
        self._split_names = check_names(split_names, None)
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
        self._shuffle = {"seed": check_seed(seed), "clump_size": None if clump_size is None else int(clump_size)}
        return self

    def persist(
        self, uri: str, *, storage_options: Optional[Dict[str, str]] = None, tag: Optional[str] = None
    ) -> "PermutationBuilder":
        """Also write the permutation table to ``uri`` as a Lance dataset on ``execute()``.

        The dataset version the table pins is tagged, so that ``cleanup_old_versions()``
        and lancedb's ``optimize()`` keep it: ``tag`` names the tag, by default
        ``lancefeed-perm-<name of uri>-v<version>``. The tag is recorded in the table's
        metadata (``base_tag``); delete it (``ds.tags.delete(name)``) when the
        permutation is no longer needed.

        Example:
            >>> builder.persist("cifar-perm.lance", tag="train-2024-06").execute()  # doctest: +SKIP
        """
        if tag is not None and (not isinstance(tag, str) or not tag):
            raise ValueError(f"tag must be a non-empty string or None, got {tag!r}")
        self._persist = (str(uri), storage_options, tag)
        return self

    def execute(self) -> pa.Table:
        """Build the permutation table: ``row_id`` and ``split_id``, sorted by split.

        Example:
            >>> permutation_builder("cifar.lance").shuffle(seed=3).execute().num_rows  # doctest: +SKIP
            50000
        """
        ds = self._ds
        kind = self._split["kind"]
        if kind == "hash":
            scanned = scan(ds, self._split["columns"], self._filter)
        elif kind == "calculated":
            scanned = scan(ds, {_CALC_COLUMN: self._split["calculation"]}, self._filter)
        else:
            scanned = None if self._filter is None else scan(ds, [], self._filter)
        row_ids = live_row_ids(ds) if scanned is None else scanned["_rowid"].to_numpy()
        split_of, num_splits, split_seed = self._assign(scanned, len(row_ids))
        order, shuffle_seed = self._ordered(split_of, num_splits)
        tag = None
        if self._persist is not None:
            uri, options, tag = self._persist
            # Tag before writing: a table that pins an unprotected version is what this prevents.
            tag = protect_version(ds, tag if tag is not None else default_tag(ds, uri))
        schema = pa.schema(
            [pa.field(ROW_ID_COLUMN, pa.uint64(), nullable=False), pa.field(SPLIT_ID_COLUMN, pa.uint64(), nullable=False)],
            metadata=self._metadata(num_splits, split_seed, shuffle_seed, tag),
        )
        table = pa.Table.from_arrays(
            [pa.array(row_ids[order], type=pa.uint64()), pa.array(split_of[order].astype(np.uint64), type=pa.uint64())],
            schema=schema,
        )
        if self._persist is not None:
            uri, options, _ = self._persist
            lance.write_dataset(table, uri, storage_options=options)
        return table

    def _assign(self, scanned: Optional[pa.Table], n: int) -> tuple[np.ndarray, int, Optional[int]]:
        """Each row's split (-1: discarded), how many splits, and the seed a random split drew."""
        kind = self._split["kind"]
        if kind == "random":
            seed = self._split["seed"] if self._split["seed"] is not None else _splits.new_seed()
            sizes = _splits.split_sizes(n, self._split["ratios"], self._split["counts"], self._split["fixed"])
            return _splits.assign_random(n, sizes, seed, self._split["clump_size"]), len(sizes), seed
        if kind == "sequential":
            sizes = _splits.split_sizes(n, self._split["ratios"], self._split["counts"], self._split["fixed"])
            return _splits.assign_sequential(n, sizes), len(sizes), None
        if kind == "hash":
            split_of = _splits.assign_hash(
                scanned, self._split["columns"], self._split["split_weights"], self._split["discard_weight"]
            )
            return split_of, len(self._split["split_weights"]), None
        if kind == "calculated":
            values = scanned.column(_CALC_COLUMN).combine_chunks()
            expected = len(self._split_names) if self._split_names else None
            split_of, num_splits = _splits.assign_calculated(values, expected)
            return split_of, num_splits, None
        return np.zeros(n, dtype=np.int64), 1, None

    def _ordered(self, split_of: np.ndarray, num_splits: int) -> tuple[np.ndarray, Optional[int]]:
        """The rows' positions grouped by split, each split in dataset order then
        shuffled within it; and the shuffle's seed."""
        shuffle_seed = None
        gen = None
        if self._shuffle is not None:
            shuffle_seed = self._shuffle["seed"] if self._shuffle["seed"] is not None else _splits.new_seed()
            gen = _splits.rng(_splits.SHUFFLE_STREAM, shuffle_seed)
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
        return order, shuffle_seed

    def _metadata(
        self, num_splits: int, split_seed: Optional[int], shuffle_seed: Optional[int], tag: Optional[str]
    ) -> dict[str, str]:
        """The table's schema metadata: what it was built from and how, enough to rebuild it."""
        ds = self._ds
        split_config = dict(self._split)
        if self._split["kind"] == "random":
            split_config["seed"] = split_seed
        metadata = {
            "lancefeed.permutation": "1",
            "uri": dataset_uri(ds),
            "version": str(ds.version),
            # lancedb reads this key to pin the base table, so its Permutation reads this
            # table at the version it was built on too.
            BASE_VERSION_KEY: str(ds.version),
            "seed": "" if shuffle_seed is None else str(shuffle_seed),
            "clump_size": "" if not self._shuffle or not self._shuffle["clump_size"] else str(self._shuffle["clump_size"]),
            "split_seed": "" if split_seed is None else str(split_seed),
            "filter": self._filter or "",
            SPLIT_NAMES_KEY: json.dumps(self._split_names or []),
            "num_splits": str(num_splits),
            "split_strategy": json.dumps(split_config),
            "stable_row_ids": "true" if has_stable_row_ids(ds) else "false",
        }
        if tag is not None:
            metadata["base_tag"] = tag
        return metadata

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
    """Start a permutation of ``source`` (a URI, ``LanceDataset`` or lancedb ``Table``) at ``version``.

    The version (a number or a tag; the latest by default) is pinned: the table the
    builder makes records it (``version`` and lancedb's ``base_version``), and every
    :class:`Permutation` made from that table, here or in lancedb, reads it.

    Example:
        >>> table = permutation_builder("cifar.lance", version=1).shuffle(seed=0).execute()  # doctest: +SKIP
        >>> table.schema.metadata[b"base_version"]  # doctest: +SKIP
        b'1'
    """
    return PermutationBuilder(open_source(source, version, storage_options))
