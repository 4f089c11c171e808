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
