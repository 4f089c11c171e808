"""Split and shuffle arithmetic for permutations, on numpy arrays of scan positions.

The rules follow lancedb's permutation builder: ratios round to the nearest row and,
when they sum to one, no row is lost to rounding; counts are exact; ``fixed=k`` makes
``k`` equal splits (``n // k`` rows each); rows left over by ratios or counts that sum
to less than everything belong to no split. Hash splits depend only on the values of
the hashed columns, so a row keeps its split when other rows are added or removed.

Every random draw comes from a numpy ``Generator`` seeded by ``(purpose, seed)``,
so a recorded seed reproduces the same permutation.

Example:
    >>> split_sizes(10, ratios=[0.5, 0.5])
    [5, 5]
    >>> split_sizes(10, fixed=3)
    [3, 3, 3]
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from typing import List, Optional, Sequence

import numpy as np
import pyarrow as pa

# Purposes keep the split draw and the shuffle draw independent when one seed feeds both.
SPLIT_STREAM = 1
SHUFFLE_STREAM = 2

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_NULL_HASH = np.uint64(0x9E3779B97F4A7C15)


def new_seed() -> int:
    """A fresh random seed, recorded in the permutation so its order can be rebuilt.

    Example:
        >>> 0 <= new_seed() < 2**63
        True
    """
    return secrets.randbits(63)


def rng(purpose: int, seed: int) -> np.random.Generator:
    """The generator for one purpose (split or shuffle) and one seed.

    Example:
        >>> rng(SHUFFLE_STREAM, 7).permutation(4).tolist() == rng(SHUFFLE_STREAM, 7).permutation(4).tolist()
        True
    """
    return np.random.default_rng([purpose, int(seed)])


def validate_sizes(
    ratios: Optional[Sequence[float]] = None,
    counts: Optional[Sequence[int]] = None,
    fixed: Optional[int] = None,
) -> None:
    """Check the split sizes that do not depend on the row count.

    Exactly one of ``ratios``, ``counts`` and ``fixed`` must be given; ratios lie in
    [0, 1] and sum to at most 1; counts and ``fixed`` are positive.

    Example:
        >>> validate_sizes(ratios=[0.7, 0.4])
        Traceback (most recent call last):
        ...
        ValueError: split ratios must sum to at most 1, got [0.7, 0.4] (sum 1.1)
    """
    given = [name for name, v in (("ratios", ratios), ("counts", counts), ("fixed", fixed)) if v is not None]
    if len(given) != 1:
        raise ValueError(
            f"expected exactly one of ratios=, counts= or fixed=, got {given or 'none'}"
        )
    if ratios is not None:
        ratios = list(ratios)
        if not ratios:
            raise ValueError("split ratios must not be empty; expected e.g. ratios=[0.9, 0.1]")
        for r in ratios:
            if not 0.0 <= float(r) <= 1.0:
                raise ValueError(f"split ratio {r} is outside [0, 1]; got ratios={ratios}")
        total = float(sum(ratios))
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"split ratios must sum to at most 1, got {ratios} (sum {round(total, 12)})"
            )
    if counts is not None:
        counts = list(counts)
        if not counts or any(int(c) <= 0 for c in counts):
            raise ValueError(f"split counts must be positive integers, got counts={counts}")
    if fixed is not None and int(fixed) <= 0:
        raise ValueError(f"fixed= must be a positive number of splits, got {fixed}")


def split_sizes(
    num_rows: int,
    ratios: Optional[Sequence[float]] = None,
    counts: Optional[Sequence[int]] = None,
    fixed: Optional[int] = None,
) -> List[int]:
    """The number of rows in each split, for ``num_rows`` filtered rows.

    Raises ``ValueError`` when a split would be empty or the counts ask for more rows
    than there are.

    Example:
        >>> split_sizes(70, ratios=[0.3, 0.41])
        [21, 29]
        >>> split_sizes(100, counts=[10, 20])
        [10, 20]
    """
    validate_sizes(ratios, counts, fixed)
    if ratios is not None:
        ratios = [float(r) for r in ratios]
        for r in ratios:
            if r * num_rows < 1.0:
                raise ValueError(
                    f"split ratio {r} of {num_rows} rows rounds to an empty split; "
                    "expected every split to get at least one row"
                )
        sizes = [int(round(r * num_rows)) for r in ratios]
        whole = abs(num_rows - sum(ratios) * num_rows) < 0.5
        excess = sum(sizes) - num_rows
        i = 0
        while excess > 0:  # rounding up overshot: take rows back, split by split
            if sizes[i] > 0:
                sizes[i] -= 1
                excess -= 1
            i = (i + 1) % len(sizes)
        i = 0
        while whole and excess < 0:  # ratios sum to one: rounding must not lose rows
            sizes[i] += 1
            excess += 1
            i = (i + 1) % len(sizes)
        return sizes
    if counts is not None:
        counts = [int(c) for c in counts]
        if sum(counts) > num_rows:
            raise ValueError(
                f"split counts {counts} ask for {sum(counts)} rows but only {num_rows} "
                "rows pass the filter"
            )
        return counts
    k = int(fixed)  # type: ignore[arg-type]
    if k > num_rows:
        raise ValueError(
            f"fixed={k} splits need at least one row each but only {num_rows} rows "
            "pass the filter"
        )
    return [num_rows // k] * k


def assign_random(num_rows: int, sizes: Sequence[int], seed: int, clump_size: Optional[int] = None) -> np.ndarray:
    """Split id (int64, -1 for no split) of each row, drawn at random.

    With ``clump_size`` runs of that many neighbouring rows are drawn together, as
    lancedb's ``split_random(clump_size=)`` does: the clumps are put in a random order
    and split ``i`` takes the next ``sizes[i]`` rows of it, so a split is made of whole
    clumps except where two splits meet. Sizes stay exact row counts.

    Example:
        >>> sorted(np.bincount(assign_random(10, [3, 7], seed=1)).tolist())
        [3, 7]
        >>> a = assign_random(8, [4, 4], seed=0, clump_size=4).tolist()
        >>> a in ([0, 0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0, 0])
        True
    """
    if clump_size is not None and int(clump_size) < 1:
        raise ValueError(f"clump_size must be a positive number of rows, got {clump_size}")
    out = np.full(num_rows, -1, dtype=np.int64)
    gen = rng(SPLIT_STREAM, seed)
    if clump_size is None or int(clump_size) <= 1:
        perm = gen.permutation(num_rows)
    else:
        perm = shuffled(np.arange(num_rows, dtype=np.int64), gen, int(clump_size))
    start = 0
    for i, size in enumerate(sizes):
        out[perm[start : start + size]] = i
        start += size
    return out


def assign_calculated(values: pa.Array, num_splits: Optional[int]) -> tuple:
    """Split id of each row from a computed integer column, and the number of splits.

    ``values`` are what lancedb's ``split_calculated`` SQL expression gave for each
    row. Rows whose value is null, negative or not below ``num_splits`` (when it is
    known from the split names) are in no split (-1): no split index could select
    them. Without ``num_splits`` there are ``max + 1`` splits.

    Example:
        >>> ids, n = assign_calculated(pa.array([0, 2, None, -1]), None)
        >>> ids.tolist(), n
        ([0, 2, -1, -1], 3)
    """
    t = values.type
    if not (pa.types.is_integer(t) or pa.types.is_boolean(t)):
        raise ValueError(
            f"split_calculated must compute an integer split index per row, got values of type {t}; "
            "expected e.g. \"abs(hash) % 3\" or \"CASE WHEN label = 'cat' THEN 0 ELSE 1 END\""
        )
    if pa.types.is_boolean(t):
        values = values.cast(pa.int64())
    out = values.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    if num_splits is None:
        num_splits = int(out.max()) + 1 if len(out) and out.max() >= 0 else 0
    out[(out < 0) | (out >= num_splits)] = -1
    return out, int(num_splits)


def assign_sequential(num_rows: int, sizes: Sequence[int]) -> np.ndarray:
    """Split id of each row: the first ``sizes[0]`` rows are split 0, and so on.

    Example:
        >>> assign_sequential(5, [2, 2]).tolist()
        [0, 0, 1, 1, -1]
    """
    out = np.full(num_rows, -1, dtype=np.int64)
    start = 0
    for i, size in enumerate(sizes):
        out[start : start + size] = i
        start += size
    return out


def assign_hash(
    table: pa.Table, columns: Sequence[str], split_weights: Sequence[int], discard_weight: int
) -> np.ndarray:
    """Split id of each row from a hash of its values in ``columns`` (-1 = discarded).

    The hash space is cut in proportion to ``split_weights`` followed by
    ``discard_weight``; rows whose hash lands in the discard share get -1.

    Example:
        >>> t = pa.table({"k": ["a", "b", "c", "d"]})
        >>> assign_hash(t, ["k"], [1, 1], 0).tolist() == assign_hash(t, ["k"], [1, 1], 0).tolist()
        True
    """
    h = hash_rows(table, columns)
    weights = [int(w) for w in split_weights]
    total = sum(weights) + int(discard_weight)
    thresholds = np.cumsum(np.asarray(weights, dtype=np.uint64))
    bucket = h % np.uint64(total)
    split = np.searchsorted(thresholds, bucket, side="right").astype(np.int64)
    split[split >= len(weights)] = -1
    return split


def validate_hash(split_weights: Sequence[int], discard_weight: int, columns: Sequence[str]) -> None:
    """Check a hash split's columns and weights.

    Example:
        >>> validate_hash([1, 0], 0, ["id"])
        Traceback (most recent call last):
        ...
        ValueError: split_weights must be positive integers, got [1, 0]
    """
    if not columns:
        raise ValueError("split_hash needs at least one column to hash, got []")
    weights = list(split_weights)
    if not weights or any(int(w) <= 0 or int(w) != w for w in weights):
        raise ValueError(f"split_weights must be positive integers, got {weights}")
    if int(discard_weight) < 0:
        raise ValueError(f"discard_weight must be >= 0, got {discard_weight}")


def hash_rows(table: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """A 64-bit hash per row of the values in ``columns``, stable across processes.

    Numbers, booleans and temporal values hash their 64-bit value; strings and binary
    hash their bytes (BLAKE2b); any other type hashes its Python ``repr``. Nulls hash
    to a constant.

    Example:
        >>> t = pa.table({"k": [1, 2]})
        >>> bool(hash_rows(t, ["k"])[0] != hash_rows(t, ["k"])[1])
        True
    """
    h = np.zeros(table.num_rows, dtype=np.uint64)
    for name in columns:
        col = table.column(name).combine_chunks()
        hc = _hash_column(col)
        with np.errstate(over="ignore"):
            h = _mix(h * np.uint64(0x100000001B3) ^ hc)
    return h


def shuffled(members: np.ndarray, gen: np.random.Generator, clump_size: Optional[int]) -> np.ndarray:
    """``members`` in a random order, moving clumps of ``clump_size`` neighbours together.

    Example:
        >>> shuffled(np.arange(6), rng(SHUFFLE_STREAM, 0), 3).reshape(2, 3)[:, 1:].tolist() in ([[1, 2], [4, 5]], [[4, 5], [1, 2]])
        True
    """
    m = len(members)
    if m <= 1:
        return members.copy()
    if not clump_size or clump_size <= 1:
        return members[gen.permutation(m)]
    c = int(clump_size)
    num_clumps = -(-m // c)
    order = gen.permutation(num_clumps)
    starts = order * c
    lengths = np.minimum(c, m - starts)
    before = np.cumsum(lengths) - lengths
    idx = np.repeat(starts - before, lengths) + np.arange(m)
    return members[idx]


def _mix(x: np.ndarray) -> np.ndarray:
    # splitmix64's finalizer: every input bit moves every output bit.
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x


def _hash_column(col: pa.Array) -> np.ndarray:
    t = col.type
    n = len(col)
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = col.type
    valid = None
    if col.null_count:
        valid = col.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t):
        if pa.types.is_temporal(t):
            col = col.cast(pa.int64()) if t.bit_width == 64 else col.cast(pa.int32())
        values = col.fill_null(0).to_numpy(zero_copy_only=False)
        bits = values.astype(np.int64).view(np.uint64)
        out = _mix(bits ^ np.uint64(0x51ED270B))
    elif pa.types.is_floating(t):
        values = col.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
        values = values + 0.0  # -0.0 and 0.0 are the same value
        out = _mix(values.view(np.uint64))
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        out = np.fromiter(
            (_digest(v.encode() if isinstance(v, str) else v) for v in col.to_pylist()),
            dtype=np.uint64,
            count=n,
        )
    else:
        out = np.fromiter((_digest(repr(v).encode()) for v in col.to_pylist()), dtype=np.uint64, count=n)
    if valid is not None:
        out = np.where(valid, out, _NULL_HASH)
    return out


def _digest(data: Optional[bytes]) -> int:
    if data is None:
        return int(_NULL_HASH)
    return struct.unpack("<Q", hashlib.blake2b(data, digest_size=8).digest())[0]
