"""Weighted mixing of several sources (``lancefeed.mix``): which rows of which source,
in which order, each epoch.

A :class:`Mix` is one more source a :class:`lancefeed.DataLoader` takes. It decides
the rows and their order here; the loader shards, batches and resumes that order as it
does any other (:mod:`lancefeed.loader.sampler`), and each source keeps its own reader
(:class:`lancefeed.reads.mixed.MixedReader`).

The semantics are mosaicml-streaming's ``proportion``/``repeat``:

- **Counts.** An epoch holds exactly ``counts[s]`` samples of source ``s``: the
  weights (normalised) times ``epoch_size``, rounded by largest remainder (each gets
  the floor, the rest go one each to the largest fractions, ties to the lower index).
  Weights are taken as the decimals they print as (``0.1`` is 1/10), so rounding does
  not depend on binary floating point.
- **Rows.** A source with rows enough gives ``counts[s]`` distinct rows; a short one
  gives ``counts[s] // rows`` whole passes over its rows, and the rest of its rows
  distinct in a last, partial pass. Shuffled, each pass is a new random permutation
  and the partial pass a new random subset every epoch, from ``(seed, epoch, s)``;
  unshuffled, a source is read in its own order, cyclically, each epoch going on
  where the last stopped (with ``counts == rows``, every row once, in order).
- **Order.** Sources are interleaved by stratified time: the ``j``-th sample of a
  source with ``c`` samples an epoch gets the time ``(j + u) / c`` (``u`` uniform in
  [0, 1) shuffled, 0.5 unshuffled; ties to the lower source) and the epoch is
  sorted by time. So every stretch of the order (a batch, a rank's shard) holds each
  source within about two samples of its share, while the order stays random.

Positions: a mix numbers its rows in one space, the positions the loader works in.
Source ``s`` takes ``copies[s] = ceil(counts[s] / rows[s])`` blocks of ``rows[s]``
positions, one block per pass; position ``starts[s] + k * rows[s] + r`` is row ``r``
of source ``s`` in its pass ``k``. Every sample of an epoch has a position of its own,
repeats included: the loader keys each sample's augmentation by it (two copies of a
row get different crops) and finds its label and source by it.

Example:
    >>> largest_remainder([1, 1, 1], 10)
    [4, 3, 3]
    >>> mixed_order([3, 2], [3, 2], seed=0, epoch=0, shuffle=False).tolist()
    [0, 3, 1, 4, 2]
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import lance
import numpy as np
import pyarrow as pa

from lancefeed.permutation.view import Permutation
from lancefeed.reads.take import describe_row

__all__ = ["Mix", "MixSourceLike", "SOURCE_COLUMN", "largest_remainder", "mix", "mixed_order"]

MixSourceLike = Union[str, "os.PathLike[str]", lance.LanceDataset, Permutation, Any]
# Lance's virtual columns start with an underscore (_rowid, _rowaddr): so does this
# one, so that it does not collide with a dataset's own "source" column.
SOURCE_COLUMN = "_source"
ColumnMap = Union[None, Mapping[str, str], Sequence[Optional[Mapping[str, str]]]]


def largest_remainder(weights: Sequence[Any], total: int) -> List[int]:
    """Non-negative integers summing to ``total``, in proportion to ``weights``
    (normalised): each gets the floor of its share, and the rest go one each to the
    largest remainders (ties: the lower index first). Computed on exact fractions.

    Example:
        >>> largest_remainder([0.5, 0.3, 0.2], 7)
        [4, 2, 1]
        >>> largest_remainder([2, 0, 1], 4)
        [3, 0, 1]
    """
    exact = [_exact(w) for w in weights]
    whole = sum(exact)
    if whole <= 0:
        raise ValueError(f"weights must sum to more than zero, got {list(weights)!r}")
    shares = [w * int(total) / whole for w in exact]
    counts = [math.floor(s) for s in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(shares[i] - counts[i]), i))
    for i in by_remainder[: int(total) - sum(counts)]:
        counts[i] += 1
    return counts


def _exact(weight: Any) -> Fraction:
    if isinstance(weight, Fraction):
        return weight
    if isinstance(weight, (int, np.integer)) and not isinstance(weight, bool):
        return Fraction(int(weight))
    # repr gives the shortest decimal that reads back as the float: what was written.
    return Fraction(repr(float(weight)))


def block_starts(rows: Sequence[int], counts: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """(first position, passes) of each source's block of positions (see the module).

    Example:
        >>> [a.tolist() for a in block_starts([3, 2], [3, 5])]
        [[0, 3], [1, 3]]
    """
    n = np.asarray(rows, dtype=np.int64)
    c = np.asarray(counts, dtype=np.int64)
    copies = np.where(c > 0, -(-c // np.maximum(n, 1)), 0)
    sizes = n * copies
    return np.cumsum(sizes) - sizes, copies


def mixed_order(rows: Sequence[int], counts: Sequence[int], *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The positions of one epoch of a mix, in order (see the module): ``counts[s]``
    samples of source ``s`` (of ``rows[s]`` rows), drawn and interleaved from
    ``(seed, epoch)``.

    Example:
        >>> mixed_order([2, 4], [4, 2], seed=0, epoch=1, shuffle=False).tolist()
        [0, 6, 1, 2, 7, 3]
        >>> order = mixed_order([5, 3], [4, 4], seed=7, epoch=0, shuffle=True)
        >>> len(order), int((order < 5).sum())
        (8, 4)
    """
    starts, _ = block_starts(rows, counts)
    jitter = np.random.default_rng([int(seed), int(epoch), 1])
    positions, times = [], []
    for s, (n, c) in enumerate(zip(rows, counts)):
        n, c = int(n), int(c)
        if c == 0:
            continue
        j = np.arange(c, dtype=np.int64)
        if shuffle:
            picked = _drawn_rows(n, c, np.random.default_rng([int(seed), int(epoch), 0, s]))
            u = jitter.random(c)
        else:
            picked = (int(epoch) * c + j) % n
            u = np.full(c, 0.5)
        positions.append(starts[s] + (j // n) * n + picked)
        times.append((j + u) / c)
    if not positions:
        return np.zeros(0, dtype=np.int64)
    # Sources are concatenated in index order, so a stable sort breaks ties that way.
    by_time = np.argsort(np.concatenate(times), kind="stable")
    return np.concatenate(positions)[by_time]


def _drawn_rows(n: int, c: int, rng: np.random.Generator) -> np.ndarray:
    """``c // n`` random permutations of ``range(n)``, then ``c % n`` distinct random rows."""
    passes, rest = divmod(c, n)
    drawn = [np.argsort(rng.random((passes, n)), axis=1).reshape(-1)] if passes else []
    if rest:
        drawn.append(rng.choice(n, rest, replace=False))
    return np.concatenate(drawn).astype(np.int64, copy=False)


class Mix:
    """Sources mixed by weight: a source :class:`lancefeed.DataLoader` takes (made by
    :func:`mix`; see the module for the semantics).

    ``len(mix)`` is the samples of an epoch; ``epoch_order(epoch)`` their positions;
    ``locate(positions)`` which source and row each is. ``sources`` are the sources as
    :class:`~lancefeed.Permutation`\\ s (columns renamed), ``weights`` normalised,
    ``counts`` the samples of each an epoch.

    Example:
        >>> m = mix(["cifar.lance", "imagenet.lance"], weights=[0.5, 0.5])  # doctest: +SKIP
        >>> m.counts, len(m)  # doctest: +SKIP
        ((25500, 25500), 51000)
    """

    def __init__(self, sources: Sequence[Permutation], weights: Sequence[Fraction], epoch_size: int, seed: int,
                 source_column: str = SOURCE_COLUMN, selected: Optional[Sequence[str]] = None) -> None:
        """Internal; use :func:`mix`."""
        self.sources: Tuple[Permutation, ...] = tuple(sources)
        whole = sum(weights)
        self.weights: Tuple[float, ...] = tuple(float(w / whole) for w in weights)
        self._fractions = tuple(weights)
        self.epoch_size = int(epoch_size)
        self.seed = int(seed)
        self.source_column = source_column
        self.counts: Tuple[int, ...] = tuple(largest_remainder(weights, self.epoch_size))
        self.rows: Tuple[int, ...] = tuple(len(p) for p in self.sources)
        starts, copies = block_starts(self.rows, self.counts)
        self.starts: Tuple[int, ...] = tuple(int(x) for x in starts)
        self.copies: Tuple[int, ...] = tuple(int(x) for x in copies)
        self._ends = starts + np.asarray(self.rows, dtype=np.int64) * copies
        self._selected = list(selected) if selected is not None else None
        self._row_ids: Optional[np.ndarray] = None

    # -- the order ----------------------------------------------------------------

    def __len__(self) -> int:
        return self.epoch_size

    @property
    def num_positions(self) -> int:
        """The size of the mix's position space (each source's rows times its passes)."""
        return int(self._ends[-1]) if len(self._ends) else 0

    def epoch_order(self, epoch: int, shuffle: bool = True) -> np.ndarray:
        """The positions of ``epoch``'s samples, in order (see the module).

        Example:
            >>> order = m.epoch_order(0)  # doctest: +SKIP
            >>> np.bincount(m.locate(order)[0]).tolist() == list(m.counts)  # doctest: +SKIP
            True
        """
        return mixed_order(self.rows, self.counts, seed=self.seed, epoch=epoch, shuffle=shuffle)

    def locate(self, positions: Any) -> Tuple[np.ndarray, np.ndarray]:
        """(source index, row position in that source) of each position.

        Example:
            >>> m.locate([0, m.starts[1]])  # doctest: +SKIP
            (array([0, 1]), array([0, 0]))
        """
        pos = np.asarray(positions, dtype=np.int64)
        if len(pos) and (pos.min() < 0 or pos.max() >= self.num_positions):
            bad = pos[(pos < 0) | (pos >= self.num_positions)][0]
            raise IndexError(f"position {int(bad)} is out of range for a mix of {self.num_positions} positions")
        source = np.searchsorted(self._ends, pos, side="right")
        rows = np.asarray(self.rows, dtype=np.int64)[source]
        return source, (pos - np.asarray(self.starts, dtype=np.int64)[source]) % np.maximum(rows, 1)

    @property
    def row_ids(self) -> np.ndarray:
        """Each position's ``_rowid`` in its own source's dataset (read-only uint64; names
        rows in messages)."""
        if self._row_ids is None:
            parts = [np.tile(p.row_ids, k) for p, k in zip(self.sources, self.copies) if k]
            ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
            ids.flags.writeable = False
            self._row_ids = ids
        return self._row_ids

    def describe_position(self, position: int) -> str:
        """A position's row as a user can find it: its source, then the row in that
        source's dataset.

        Example:
            >>> m.describe_position(m.starts[1] + 3)  # doctest: +SKIP
            "source 1 ('/data/imagenet.lance'): row 3 of the dataset"
        """
        source, row = self.locate([position])
        perm = self.sources[int(source[0])]
        return f"source {int(source[0])} ({perm.uri!r}): {describe_row(perm.dataset, int(perm.row_ids[int(row[0])]))}"

    # -- columns ------------------------------------------------------------------

    @property
    def columns(self) -> List[str]:
        """The selected columns; unselected, every column some source has (the first
        source's order) and the source index column."""
        if self._selected is not None:
            return list(self._selected)
        names: List[str] = []
        for perm in self.sources:
            names += [c for c in perm.columns if c not in names]
        return names + [self.source_column]

    @property
    def schema(self) -> pa.Schema:
        """The columns' types, one per column across the sources (binary, large_binary
        and binary_view become large_binary, strings large_string; the reader joins the
        rows as they come, see :func:`lancefeed.reads.mixed.common_type`); the source
        index is int64. Differing types raise, naming the sources."""
        fields = []
        for name in self.columns:
            if name == self.source_column:
                fields.append(pa.field(name, pa.int64(), nullable=False))
            else:
                fields.append(pa.field(name, self._common_type(name)))
        return pa.schema(fields)

    def select_columns(self, columns: Sequence[str]) -> "Mix":
        """A mix reading only ``columns``: each must be in every source (after the
        renames of :func:`mix`'s ``columns=``), with one type, or the error names the
        source that differs.

        Example:
            >>> m.select_columns(["image", "label", "_source"]).columns  # doctest: +SKIP
            ['image', 'label', '_source']
        """
        columns = [columns] if isinstance(columns, str) else list(columns)
        if not columns:
            raise ValueError("select_columns needs at least one column, got []")
        read = [c for c in columns if c != self.source_column]
        for i, perm in enumerate(self.sources):
            missing = [c for c in read if c not in perm.columns]
            if missing:
                raise ValueError(
                    f"column{'s' if len(missing) > 1 else ''} {missing} not in source {i} ({perm.uri!r}), whose columns "
                    f"are {perm.columns}; map its names with mix(..., columns={{'its_name': 'name'}}) or select "
                    "columns every source has"
                )
        sources = [perm.select_columns(read) if read else perm for perm in self.sources]
        chosen = Mix(sources, self._fractions, self.epoch_size, self.seed, self.source_column, columns)
        _ = chosen.schema  # differing types raise here, when the loader is made
        return chosen

    def _common_type(self, name: str) -> pa.DataType:
        having = [(i, p.schema.field(name).type) for i, p in enumerate(self.sources) if name in p.columns]
        types = {t for _, t in having}
        if len(types) <= 1:
            return having[0][1] if having else pa.null()
        if all(pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t) for t in types):
            return pa.large_binary()
        if all(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t) for t in types):
            return pa.large_string()
        first_i, first = having[0]
        other_i, other = next((i, t) for i, t in having if t != first)
        raise ValueError(
            f"column {name!r} is {first} in source {first_i} ({self.sources[first_i].uri!r}) but {other} in source "
            f"{other_i} ({self.sources[other_i].uri!r}); a mix needs one type per column (cast one of them when writing, "
            "or leave the column out)"
        )

    # -- what the loader shows ----------------------------------------------------

    @property
    def uri(self) -> str:
        """The sources' URIs, as one name for messages and logs."""
        return "mix(" + ", ".join(p.uri for p in self.sources) + ")"

    @property
    def version(self) -> List[int]:
        """Each source's pinned dataset version."""
        return [p.version for p in self.sources]

    @property
    def dataset(self) -> lance.LanceDataset:
        """A mix reads several datasets: each source's is ``mix.sources[i].dataset``."""
        raise TypeError(f"{self.uri} reads several datasets: use mix.sources[i].dataset")

    def __repr__(self) -> str:
        weights = ", ".join(f"{w:.4g}" for w in self.weights)
        return f"Mix({self.uri}, weights=[{weights}], counts={list(self.counts)}, epoch_size={self.epoch_size}, seed={self.seed})"


def mix(
    sources: Sequence[MixSourceLike],
    weights: Optional[Sequence[float]] = None,
    epoch_size: Optional[int] = None,
    seed: int = 0,
    columns: ColumnMap = None,
    *,
    source_column: str = SOURCE_COLUMN,
) -> Mix:
    """Sources mixed by weight, as one source for :class:`lancefeed.DataLoader`.

    ``sources``: URIs, ``lance.LanceDataset``\\ s, local lancedb tables or
    :class:`~lancefeed.Permutation`\\ s (one split, say). ``weights``: one per source,
    finite and non-negative, not all zero, normalised; ``None``: in proportion to the
    sources' rows. ``epoch_size``: samples an epoch (default: the sources' rows
    together). Each epoch holds ``round(weight * epoch_size)`` samples of each source
    (largest remainder), without repeats while a source has rows enough, with whole
    passes over it and then a partial one otherwise; a new draw each epoch, from
    ``seed`` (see the module). ``columns``: renames that give the sources one schema,
    ``{"its_name": "name"}`` for every source that has ``its_name``, or a list with one
    such dict (or None) per source. Each row's source index is the column
    ``source_column`` (``"_source"``). The loader's ``shuffle`` shuffles the mix, its
    ``seed`` keys the augmentations.

    Example:
        >>> train = lancefeed.mix(["imagenet.lance", "cifar10.lance"], weights=[0.5, 0.5],
        ...                       epoch_size=100_000, seed=1)  # doctest: +SKIP
        >>> loader = lancefeed.DataLoader(train, 256, shuffle=True, columns=["image", "label", "_source"],
        ...                               transform=v2.RandomResizedCrop(64))  # doctest: +SKIP
        >>> images, labels, source = next(iter(loader))  # doctest: +SKIP
    """
    if isinstance(sources, (str, os.PathLike, lance.LanceDataset, Permutation)) or not isinstance(sources, Sequence):
        raise TypeError(f"sources must be a list of sources (URIs, datasets, lancedb tables, permutations), got {type(sources).__name__}")
    if not sources:
        raise ValueError("a mix needs at least one source, got []")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(source_column, str) or not source_column:
        raise ValueError(f"source_column must be a non-empty string, got {source_column!r}")
    perms = _renamed([_as_permutation(s, i) for i, s in enumerate(sources)], columns)
    for i, perm in enumerate(perms):
        if source_column in perm.columns:
            raise ValueError(
                f"source {i} ({perm.uri!r}) has a column {source_column!r}, the mix's source index: rename it with "
                f"columns=, or pass source_column= another name"
            )
    sizes = [len(p) for p in perms]
    fractions = check_weights(weights, sizes, [p.uri for p in perms])
    size = _epoch_size(epoch_size, sizes)
    counts = largest_remainder(fractions, size)
    for i, (n, c) in enumerate(zip(sizes, counts)):
        if c and not n:
            raise ValueError(f"source {i} ({perms[i].uri!r}) has no rows but weight {float(fractions[i] / sum(fractions)):.4g}")
    return Mix(perms, fractions, size, int(seed), source_column)


def check_weights(weights: Optional[Sequence[Any]], sizes: Sequence[int], names: Sequence[str]) -> List[Fraction]:
    """The weights as exact fractions (not yet normalised), or a ``ValueError`` naming the
    source whose weight is wrong; ``None``: the sources' sizes.

    Example:
        >>> check_weights([1, 3], [10, 10], ["a", "b"])
        [Fraction(1, 1), Fraction(3, 1)]
        >>> check_weights([1, -1], [10, 10], ["a", "b"])
        Traceback (most recent call last):
        ...
        ValueError: weight of source 1 ('b') is -1: weights must be finite and non-negative
    """
    if weights is None:
        if not sum(sizes):
            raise ValueError(f"the sources have no rows: {list(names)}")
        return [Fraction(n) for n in sizes]
    if isinstance(weights, (str, bytes)) or not isinstance(weights, (Sequence, np.ndarray)):
        raise ValueError(f"weights must be a list of numbers, one per source, got {weights!r}")
    if len(weights) != len(sizes):
        raise ValueError(f"{len(weights)} weights for {len(sizes)} sources: give one weight per source")
    out = []
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating, Fraction)):
            raise ValueError(f"weight of source {i} ({names[i]!r}) is {w!r}: weights must be numbers")
        if not math.isfinite(float(w)) or w < 0:
            raise ValueError(f"weight of source {i} ({names[i]!r}) is {w!r}: weights must be finite and non-negative")
        out.append(_exact(w))
    if not sum(out):
        raise ValueError(f"the weights are all zero ({list(weights)!r}): at least one source needs a positive weight")
    return out


def _epoch_size(epoch_size: Optional[int], sizes: Sequence[int]) -> int:
    if epoch_size is None:
        return int(sum(sizes))
    if isinstance(epoch_size, bool) or not isinstance(epoch_size, (int, np.integer)) or epoch_size < 1:
        raise ValueError(f"epoch_size must be a positive integer (or None: the sources' rows together), got {epoch_size!r}")
    return int(epoch_size)


def _as_permutation(source: Any, index: int) -> Permutation:
    if isinstance(source, Permutation):
        return source
    if isinstance(source, Mix):
        raise TypeError(f"source {index} is a mix: mix its sources in one mix instead")
    try:
        return Permutation.identity(source)
    except TypeError as exc:
        raise TypeError(f"source {index}: {exc}") from None


def _renamed(perms: List[Permutation], columns: ColumnMap) -> List[Permutation]:
    """``perms`` with ``columns``'s renames: one dict for all (each source renames the
    names it has; a name no source has is an error), or one dict (or None) per source."""
    if columns is None:
        return perms
    if isinstance(columns, Mapping):
        unknown = [old for old in columns if not any(old in p.columns for p in perms)]
        if unknown:
            raise ValueError(f"columns= renames {unknown}, which no source has; the sources' columns: "
                             f"{[p.columns for p in perms]}")
        maps: List[Dict[str, str]] = [{o: n for o, n in columns.items() if o in p.columns} for p in perms]
    elif isinstance(columns, Sequence) and not isinstance(columns, (str, bytes)):
        if len(columns) != len(perms):
            raise ValueError(f"columns= has {len(columns)} renames for {len(perms)} sources: give one dict (or None) per source")
        maps = [dict(m or {}) for m in columns]
    else:
        raise ValueError(f"columns= must be a dict of renames, or a list of them (one per source), got {columns!r}")
    out = []
    for i, (perm, renames) in enumerate(zip(perms, maps)):
        try:
            out.append(perm.rename_columns(renames) if renames else perm)
        except ValueError as exc:
            raise ValueError(f"source {i} ({perm.uri!r}): {exc}") from None
    return out
