"""Which samples a rank reads in an epoch, in which order, and from which batch on.

Pure functions of (number of samples, seed, epoch, rank, world size, batch size), so
every rule the loader follows can be checked exhaustively without a dataset:

- The epoch order is a permutation of the sample positions ``0..n-1`` (positions in
  the loader's ``Permutation``), drawn from ``numpy.random.default_rng([seed, epoch])``
  when shuffling, the identity otherwise. With ``clump_size=k`` the shuffle moves
  clumps: the positions are cut into runs of ``k`` consecutive positions (the last
  one may be shorter), the epoch order is those runs in a random order drawn from
  ``(seed, epoch)``, each run kept in ascending order. ``clump_size=1`` is the plain
  shuffle, draw for draw. Sharding, batching and resuming act on that order exactly as
  on any other, so their guarantees hold unchanged.
- Ranks get contiguous, disjoint, equal shards of that order. The remainder
  ``n % world_size`` (the *last* samples of the epoch order) is dropped, never padded
  with duplicates as torch's ``DistributedSampler`` does: every sample is read at most
  once an epoch, and every rank runs the same number of steps. When shuffling, the
  dropped samples change from epoch to epoch; without shuffling they are always the
  last ``n % world_size`` positions. With one rank nothing is dropped.
- A shard is cut into batches of ``batch_size``; ``drop_last`` drops a short last
  batch. Resuming at batch ``k`` skips exactly the first ``k`` batches of the shard, so
  the batches after a resume are the ones an uninterrupted run would have produced.
- Resuming on another world size (or batch size): the samples every rank of the run
  before had read are taken out of the epoch order, and what is left, in epoch order,
  is sharded over the new ranks by the same rule (``history``: one
  :class:`Segment` per run so far this epoch). Every sample is then read at most once
  in the epoch, across all runs; only the remainder of each re-shard is left out.

Example:
    >>> plan = plan_epoch(10, batch_size=4, shuffle=True, seed=0, epoch=0)
    >>> len(plan), sorted(plan.positions.tolist()) == list(range(10))
    (3, True)
    >>> plan_epoch(10, batch_size=4, shuffle=False, seed=0, epoch=0).batch(2).tolist()
    [8, 9]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def epoch_order(
    num_samples: int, *, shuffle: bool, seed: int, epoch: int, clump_size: "int | None" = None
) -> np.ndarray:
    """Return the order of the sample positions ``0..num_samples-1`` in ``epoch``.

    ``clump_size`` (with ``shuffle``): shuffle runs of that many consecutive positions
    instead of single positions; each run stays together, in ascending order, so a
    batch reads neighbouring rows (fewer, larger reads on an object store).

    Example:
        >>> epoch_order(5, shuffle=False, seed=0, epoch=3).tolist()
        [0, 1, 2, 3, 4]
        >>> a = epoch_order(5, shuffle=True, seed=1, epoch=0)
        >>> bool((a == epoch_order(5, shuffle=True, seed=1, epoch=0)).all())
        True
        >>> epoch_order(7, shuffle=True, seed=0, epoch=0, clump_size=3).tolist()
        [6, 0, 1, 2, 3, 4, 5]
    """
    _check_non_negative("num_samples", num_samples)
    _check_non_negative("seed", seed)
    _check_non_negative("epoch", epoch)
    if clump_size is not None:
        _check_positive("clump_size", clump_size)
    if not shuffle:
        return np.arange(num_samples, dtype=np.int64)
    # SeedSequence mixes (seed, epoch) into independent streams: epoch e of seed s is
    # unrelated to epoch e+1 or to seed s+1.
    rng = np.random.default_rng([int(seed), int(epoch)])
    k = 1 if clump_size is None else int(clump_size)
    if k == 1:
        return rng.permutation(num_samples).astype(np.int64, copy=False)
    clumps = rng.permutation(-(-num_samples // k)).astype(np.int64, copy=False)
    # Clump c holds positions c*k .. min((c+1)*k, n) - 1; only the last may be short.
    sizes = np.minimum(k, num_samples - clumps * k)
    starts = np.repeat(clumps * k, sizes)
    within = np.arange(num_samples, dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return starts + within


def shard_length(num_samples: int, world_size: int) -> int:
    """Samples each rank reads an epoch: ``num_samples // world_size`` (remainder dropped).

    Example:
        >>> shard_length(10, 3)
        3
    """
    _check_rank(0, world_size)
    return num_samples // world_size


def rank_shard(order: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """The contiguous block of ``order`` that ``rank`` reads (a view, no copy).

    Contiguous blocks rather than a stride: without shuffling each rank then reads
    neighbouring rows, which is what Lance reads fastest.

    Example:
        >>> rank_shard(np.arange(10), 1, 3).tolist()
        [3, 4, 5]
    """
    _check_rank(rank, world_size)
    m = len(order) // world_size
    return order[rank * m : (rank + 1) * m]


def num_batches(num_samples: int, batch_size: int, drop_last: bool) -> int:
    """Batches in a shard of ``num_samples``: floor with ``drop_last``, ceiling without.

    Example:
        >>> num_batches(10, 4, False), num_batches(10, 4, True)
        (3, 2)
    """
    _check_positive("batch_size", batch_size)
    if drop_last:
        return num_samples // batch_size
    return -(-num_samples // batch_size)


@dataclass(frozen=True)
class Segment:
    """One run's part of an epoch: ``world_size`` ranks each read ``batches`` batches of
    ``batch_size`` before it stopped."""

    world_size: int
    batch_size: int
    batches: int


def remaining(order: np.ndarray, history: "list[Segment] | tuple[Segment, ...]") -> np.ndarray:
    """``order`` without the samples the runs in ``history`` read, in order.

    Example:
        >>> # 2 ranks of [0..9] read 1 batch of 2 each: [0, 1] and [5, 6].
        >>> remaining(np.arange(10), [Segment(2, 2, 1)]).tolist()
        [2, 3, 4, 7, 8, 9]
    """
    left = np.asarray(order)
    for seg in history:
        _check_rank(0, seg.world_size)
        _check_positive("batch_size", seg.batch_size)
        m = len(left) // seg.world_size
        read = np.zeros(len(left), dtype=bool)
        for r in range(seg.world_size):
            read[r * m : r * m + min(m, seg.batches * seg.batch_size)] = True
        left = left[~read]
    return left


@dataclass(frozen=True)
class EpochPlan:
    """The batches one rank reads in one epoch, from ``start_batch`` on.

    ``positions`` is the rank's whole shard in epoch order; ``batch(k)`` is the k-th
    batch of the epoch (``start_batch <= k < num_batches``); iterating yields
    ``(k, positions)`` from ``start_batch``.
    """

    positions: np.ndarray
    batch_size: int
    num_batches: int
    start_batch: int
    epoch: int

    def __len__(self) -> int:
        return self.num_batches

    def batch(self, k: int) -> np.ndarray:
        if not 0 <= k < self.num_batches:
            raise IndexError(f"batch {k} out of range: this epoch has {self.num_batches} batches")
        return self.positions[k * self.batch_size : (k + 1) * self.batch_size]

    def __iter__(self):  # type: ignore[no-untyped-def]
        for k in range(self.start_batch, self.num_batches):
            yield k, self.batch(k)


def plan_epoch(
    num_samples: int,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    start_batch: int = 0,
    history: "list[Segment] | tuple[Segment, ...]" = (),
    clump_size: "int | None" = None,
    order: "np.ndarray | None" = None,
) -> EpochPlan:
    """Everything one rank reads in ``epoch``: shuffled, sharded, batched, resumed
    (``history``: what earlier runs of this epoch read, see :func:`remaining`;
    ``clump_size``: see :func:`epoch_order`). ``order``: the epoch's order where the
    source draws its own (a mix: ``num_samples`` positions, repeats allowed), sharded,
    batched and resumed by the same rules.

    Example:
        >>> plan = plan_epoch(7, batch_size=2, shuffle=False, seed=0, epoch=0,
        ...                   rank=1, world_size=2, start_batch=1)
        >>> [b.tolist() for _, b in plan]
        [[5]]
    """
    _check_positive("batch_size", batch_size)
    _check_rank(rank, world_size)
    if order is None:
        order = epoch_order(num_samples, shuffle=shuffle, seed=seed, epoch=epoch, clump_size=clump_size)
    elif len(order) != num_samples:
        raise ValueError(f"the epoch's order has {len(order)} samples, expected {num_samples}")
    order = remaining(np.asarray(order, dtype=np.int64), history)
    shard = rank_shard(order, rank, world_size)
    n_batches = num_batches(len(shard), batch_size, drop_last)
    if not 0 <= start_batch <= n_batches:
        raise ValueError(
            f"cannot resume at batch {start_batch}: the epoch has {n_batches} batches on this rank"
        )
    return EpochPlan(shard, batch_size, n_batches, start_batch, epoch)


def _check_non_negative(name: str, value: int) -> None:
    if int(value) != value or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _check_positive(name: str, value: int) -> None:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_rank(rank: int, world_size: int) -> None:
    _check_positive("world_size", world_size)
    if int(rank) != rank or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1} for world_size={world_size}, got {rank!r}")
