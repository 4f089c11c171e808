"""Test hooks of the harness: a loader that never yields a batch (``sleep``), one
that fails (``fail``), one whose start-up is slow (``slow_start``), and a peer that
is never installed (``missing``), so tests can check how each is reported.

Example:
    >>> available("missing")
    (False, 'not installed: pip install lancefeed-no-such-peer (a test hook)')
"""

from __future__ import annotations

import time
from typing import Any, Iterable


def available(hook: str = "") -> tuple[bool, str]:
    """Every hook runs, except ``missing``."""
    if hook == "missing":
        return False, "not installed: pip install lancefeed-no-such-peer (a test hook)"
    return True, ""


def _sleeper() -> Iterable[Any]:
    while True:  # a loader that never produces a batch (test hook for the timeout)
        time.sleep(3600)
        yield None


def _slow_starter(spec: dict[str, Any]) -> Iterable[Any]:
    import numpy as np

    # Sleeps while it is built, so before "ready": a start-up, not a stall.
    time.sleep(float(spec.get("startup_sleep", 2.0)))
    batch = (np.zeros((int(spec.get("batch_size", 8)), 1, 1, 3), np.uint8), None)

    def batches() -> Iterable[Any]:
        for _ in range(int(spec.get("batches", 4))):
            yield batch
        while spec.get("hang"):  # hangs for certain after its batches: a stall
            time.sleep(3600)

    return batches()


def make_loader(spec: dict[str, Any]) -> Iterable[Any]:
    """The hook ``spec["hook"]`` names (from the peer's options; else the loader name)."""
    hook = spec.get("hook") or spec["loader"].lstrip("_")
    if hook == "sleep":
        return _sleeper()
    if hook == "fail":
        raise RuntimeError("this loader fails on purpose (test hook)")
    if hook == "slow_start":
        return _slow_starter(spec)
    raise RuntimeError(f"test hook {hook!r} cannot run")
