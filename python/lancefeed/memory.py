"""Keep freed batch buffers for reuse instead of handing them back to the kernel.

Every batch allocates buffers of several megabytes (the Lance take's arrays, the
decoded images) and frees them a moment later. glibc's malloc returns memory of that
size to the kernel on free, so the next batch's buffers are page-faulted and zeroed
again, page by page: on the ImageNet sample that was 550,000 page faults per epoch of
takes and half of the takes' CPU time, on the same cores the decoder needs.

:func:`keep_freed_memory` tells glibc to serve allocations up to 32 MiB from its
arenas and to keep up to 128 MiB of freed memory per arena for reuse. The
``DataLoader`` applies it when it is created; set ``LANCEFEED_KEEP_FREED_MEMORY=0`` to
leave malloc as it is. The cost is memory that stays mapped after a large free (at most
128 MiB per malloc arena above what the process is using). Elsewhere than glibc
(macOS, musl) it does nothing.

Example:
    >>> from lancefeed.memory import keep_freed_memory
    >>> keep_freed_memory() in (True, False)
    True
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, List, Optional, Tuple

import numpy as np

from lancefeed import _core

# glibc's own ceiling for its sliding threshold on 64-bit: above a batch of 64
# ImageNet crops (9.6 MB) or a take of 8 MB; a batch of 256 (38.5 MB) is still mmapped.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 128 << 20
ENV = "LANCEFEED_KEEP_FREED_MEMORY"

_applied = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed buffers of up to 32 MiB for reuse (see the module doc).

    Process-wide and idempotent; returns whether the settings are in effect (False on
    a C library other than glibc).

    Example:
        >>> import lancefeed.memory
        >>> lancefeed.memory.keep_freed_memory() == lancefeed.memory.keep_freed_memory()
        True
    """
    global _applied
    if not _applied:
        _applied = _core.keep_freed_memory(MMAP_THRESHOLD, TRIM_THRESHOLD)
    return _applied


def active() -> bool:
    """Whether this process runs with the settings of :func:`keep_freed_memory`.

    Example:
        >>> isinstance(active(), bool)
        True
    """
    return _applied


def keep_freed_memory_unless_disabled() -> bool:
    """What the loader calls: :func:`keep_freed_memory` unless ``LANCEFEED_KEEP_FREED_MEMORY=0``."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return keep_freed_memory()


def reuse_buffer(pool: List[np.ndarray], size: int, dtype: Any, keep: int, max_bytes: Optional[int] = None) -> np.ndarray:
    """A flat buffer of at least ``size`` items of ``dtype`` from ``pool`` that nothing
    else refers to, else a new one (added to the pool while it holds fewer than ``keep``
    buffers and, with ``max_bytes``, would hold no more than that many bytes).

    CPython's reference count says exactly whether a batch handed out earlier, or any
    view, tensor or memoryview over it, is still alive: a buffer is lent again only once
    all of them are gone, so nothing a caller still holds is ever overwritten. The
    caller serialises calls on one pool.

    Example:
        >>> pool = []
        >>> a = reuse_buffer(pool, 10, np.uint8, keep=2)
        >>> reuse_buffer(pool, 10, np.uint8, keep=2) is a  # `a` is still held
        False
        >>> del a
        >>> reuse_buffer(pool, 10, np.uint8, keep=2) is pool[0]  # free again: reused
        True
    """
    for i in range(len(pool)):
        # Referenced only by the pool (and getrefcount's argument): nobody holds it.
        if pool[i].size >= size and pool[i].dtype == dtype and sys.getrefcount(pool[i]) == 2:
            return pool[i]
    buf = np.empty(size, dtype=dtype)
    if len(pool) < keep and (max_bytes is None or sum(b.nbytes for b in pool) + buf.nbytes <= max_bytes):
        pool.append(buf)
    return buf


# decode_batch's own outputs, when the caller gives no out=: only those of at least
# BATCH_POOL_MIN_BYTES, which glibc always maps afresh (its mmap threshold stops at 32
# MiB), so that each call's pages were faulted in and zeroed by the kernel: ~10% of a
# 2-core decode of 256 ImageNet crops (38.5 MB). Smaller ones glibc reuses by itself.
# Two buffers: the batch a loop holds and the one being decoded; at most 256 MiB kept
# (two float batches of 128 crops of 224, or one of 256); release_batch_buffers()
# hands them back.
BATCH_POOL_MIN_BYTES = 32 << 20
BATCH_POOL_KEEP = 2
BATCH_POOL_MAX_BYTES = 256 << 20
_batch_pool: List[np.ndarray] = []
_batch_lock = threading.Lock()


def batch_buffer(shape: Tuple[int, ...], dtype: Any) -> Optional[np.ndarray]:
    """A reused C-contiguous array of ``shape`` for a batch of at least
    ``BATCH_POOL_MIN_BYTES``, or None for smaller batches (allocate as usual).

    Example:
        >>> batch_buffer((2, 4, 4, 3), np.uint8) is None
        True
        >>> batch_buffer((256, 224, 224, 3), np.uint8).shape
        (256, 224, 224, 3)
    """
    size = int(np.prod(shape))
    if size * np.dtype(dtype).itemsize < BATCH_POOL_MIN_BYTES:
        return None
    with _batch_lock:
        buf = reuse_buffer(_batch_pool, size, np.dtype(dtype), BATCH_POOL_KEEP, BATCH_POOL_MAX_BYTES)
        return buf[:size].reshape(shape)


def release_batch_buffers() -> int:
    """Forgets the buffers ``decode_batch`` keeps for reuse (see :func:`batch_buffer`);
    their memory is freed once no batch over them is alive. Returns the bytes released.

    Example:
        >>> batch = batch_buffer((256, 224, 224, 3), np.uint8)
        >>> release_batch_buffers() >= batch.nbytes
        True
        >>> release_batch_buffers()
        0
    """
    with _batch_lock:
        n = sum(b.nbytes for b in _batch_pool)
        _batch_pool.clear()
    return n
