"""Each sample's random generators, from its (seed, epoch, position): the Python ops of
the slow path draw from them, as the fused ops draw in the core from the same three
numbers, so an epoch's samples are the same whatever the thread count, batch size or
resume point.

Two kinds of Python ops:

- albumentations' ops carry their own generators (a ``numpy.random.Generator`` and a
  ``random.Random``): each sample gets fresh ones (:func:`generators`), set on the
  copy of the Compose the sample borrows. No lock: threads run side by side.
- Everything else (torchvision's ops draw from torch's global generator, a lambda may
  call ``random`` or ``numpy.random``) can only be seeded through the global
  generators: :func:`global_generators` seeds Python's, numpy's and torch's (CPU)
  global generators for one sample, holding a lock so that samples on other threads
  do not interleave their draws, and puts the generators' states back afterwards.
  Code on another thread that draws from them at that moment (the training loop)
  draws from the sample's stream; the README says so.

Example:
    >>> a, b = generators(0, 1, 7), generators(0, 1, 7)
    >>> a[0].random() == b[0].random() and a[1].random() == b[1].random()
    True
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
from typing import Iterator, List, Tuple

import numpy as np

__all__ = ["GLOBAL_LOCK", "generators", "global_generators", "sample_seeds"]

# Held while a sample's Python ops draw from the global generators.
GLOBAL_LOCK = threading.RLock()
# Distinguishes these streams from the core's (which key on an op index).
_DOMAIN = 0x6C66_5079  # "lfPy"


def sample_seeds(seed: int, epoch: int, position: int, n: int = 4) -> List[int]:
    """``n`` independent 64-bit seeds for one sample (numpy's SeedSequence of the four
    numbers: well mixed, and the same on every platform).

    Example:
        >>> sample_seeds(0, 0, 0) != sample_seeds(0, 0, 1)
        True
    """
    mask = (1 << 64) - 1
    entropy = [int(seed) & mask, int(epoch) & mask, int(position) & mask, _DOMAIN]
    return [int(v) for v in np.random.SeedSequence(entropy).generate_state(n, np.uint64)]


def generators(seed: int, epoch: int, position: int) -> Tuple[np.random.Generator, random.Random]:
    """A sample's (numpy Generator, random.Random), as albumentations' ops take them.

    Example:
        >>> g, r = generators(3, 0, 5)
        >>> type(g).__name__, type(r).__name__
        ('Generator', 'Random')
    """
    s = sample_seeds(seed, epoch, position)
    return np.random.default_rng(s[0]), random.Random(s[1])


@contextlib.contextmanager
def global_generators(seed: int, epoch: int, position: int) -> Iterator[None]:
    """Python's, numpy's and torch's global generators seeded for one sample, under
    :data:`GLOBAL_LOCK`, their states put back on the way out.

    Example:
        >>> with global_generators(0, 0, 3):
        ...     a = np.random.rand()
        >>> with global_generators(0, 0, 3):
        ...     b = np.random.rand()
        >>> a == b
        True
    """
    s = sample_seeds(seed, epoch, position)
    torch = sys.modules.get("torch")  # seeded only where it is in use
    with GLOBAL_LOCK:
        saved = random.getstate(), np.random.get_state(), torch.default_generator.get_state() if torch else None
        random.seed(s[2])
        np.random.seed(s[3] % (1 << 32))
        if torch is not None:
            torch.default_generator.manual_seed(s[2] ^ s[3])
        try:
            yield
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            if torch is not None:
                torch.default_generator.set_state(saved[2])
