"""Where a loader stands in its epochs: the epoch of the next iteration and the batch it
starts at, what earlier runs read of that epoch (a resume on another world size), and
the progress of the running iteration; saved and loaded as a plain dict.

Example:
    >>> cursor = EpochCursor(num_samples=100, batch_size=10, world_size=1, drop_last=False)
    >>> cursor.set_epoch(3); cursor.start()[:2]
    (3, 0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from lancefeed.loader.sampler import Segment, num_batches, remaining, shard_length

__all__ = ["EpochCursor", "Progress", "STATE_KEYS"]

STATE_KEYS = ("epoch", "batches_consumed", "seed")


@dataclass
class Progress:
    """How far the latest iteration got; shared by the loader and its iterator."""

    epoch: int
    consumed: int
    total: int
    # Earlier runs' parts of this epoch (a resume on another world size).
    history: Tuple[Segment, ...] = ()


class EpochCursor:
    """The next iteration's epoch and start, or the running one's progress (see the
    module). ``num_samples`` is the loader's permutation's length."""

    def __init__(self, *, num_samples: int, batch_size: int, world_size: int, drop_last: bool) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.world_size = world_size
        self.drop_last = drop_last
        self._next: Optional[Tuple[int, int]] = (0, 0)
        # What earlier runs read of the epoch in `_next` (set by load()).
        self._next_history: Tuple[Segment, ...] = ()
        self.progress: Optional[Progress] = None

    @property
    def epoch(self) -> int:
        """The epoch of the next iteration (or of the running one, when none is set)."""
        if self._next is not None:
            return self._next[0]
        assert self.progress is not None
        return self.progress.epoch + 1

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next iteration; the epoch a loaded state resumes in
        keeps its resume point."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        if self._next is not None and self._next[0] == epoch:
            return
        self._next = (int(epoch), 0)
        self._next_history = ()

    def batches(self) -> int:
        """Batches of the next epoch (or the running one) on this rank: fewer in an epoch
        resumed on another world size, whose rest is re-sharded."""
        history = self._next_history if self._next is not None else (self.progress.history if self.progress else ())
        left = self.num_samples - read_before(self.num_samples, history)
        return num_batches(shard_length(left, self.world_size), self.batch_size, self.drop_last)

    def start(self) -> Tuple[int, int, Tuple[Segment, ...]]:
        """(epoch, first batch, earlier runs' parts) of the iteration starting now: the
        one set or loaded, else the epoch after the last one."""
        if self._next is not None:
            (epoch, start), history = self._next, self._next_history
        else:
            assert self.progress is not None
            epoch, start, history = self.progress.epoch + 1, 0, ()
        self._next, self._next_history = None, ()
        return epoch, start, history

    def state(self) -> Dict[str, Any]:
        """Epoch, batches handed out in it, and earlier runs' parts (see ``load``)."""
        if self._next is not None:
            (epoch, consumed), history = self._next, self._next_history
        else:
            assert self.progress is not None
            epoch, consumed, history = self.progress.epoch, self.progress.consumed, self.progress.history
        return {
            "epoch": epoch,
            "batches_consumed": consumed,
            # Earlier runs' parts of this epoch, [world_size, batch_size, batches] each.
            "history": [[h.world_size, h.batch_size, h.batches] for h in history],
        }

    def load(self, state: Dict[str, Any]) -> None:
        """Continue from a loader's ``state_dict()`` at the next iteration: where the
        saved run stopped (same world size and batch size), else the rest of its epoch
        re-sharded (what every rank of it read left out), or the next epoch when it had
        finished."""
        epoch, consumed = int(state["epoch"]), int(state["batches_consumed"])
        if consumed < 0 or epoch < 0:
            raise ValueError(f"bad state: epoch={epoch}, batches_consumed={consumed}")
        try:
            history = tuple(Segment(int(w), int(b), int(k)) for w, b, k in state.get("history", []))
        except (TypeError, ValueError):
            raise ValueError(f"bad state: history must be [world_size, batch_size, batches] lists, got {state.get('history')!r}") from None
        saved = Segment(int(state.get("world_size", self.world_size)), int(state.get("batch_size", self.batch_size)), consumed)
        left = self.num_samples - read_before(self.num_samples, history)
        saved_batches = num_batches(shard_length(left, saved.world_size), saved.batch_size, bool(state.get("drop_last", self.drop_last)))
        if consumed >= saved_batches:
            self._next, self._next_history = (epoch + 1, 0), ()
        elif (saved.world_size, saved.batch_size) == (self.world_size, self.batch_size):
            self._next, self._next_history = (epoch, consumed), history
        else:
            self._next, self._next_history = (epoch, 0), history + (saved,)


def read_before(num_samples: int, history: Sequence[Segment]) -> int:
    """How many samples of an epoch the runs in ``history`` read (see sampler.remaining).

    Example:
        >>> read_before(10, ())
        0
    """
    if not history:
        return 0
    return num_samples - len(remaining(np.arange(num_samples), history))
