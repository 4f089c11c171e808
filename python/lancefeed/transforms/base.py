"""The base of lancefeed's transforms: what the decode core is told about each op."""

from __future__ import annotations

import numbers
from typing import Sequence, Tuple, Union

Size = Union[int, Sequence[int]]
Op = Tuple[str, Tuple[float, ...]]

NONE = float("nan")  # how an argument that is None crosses to the core

__all__ = ["NONE", "Op", "Size", "Transform", "_pair"]


def _pair(size: Size, what: str) -> tuple[int, int]:
    """torchvision's size convention: an int n is (n, n); a pair is (height, width)."""
    if isinstance(size, bool) or not isinstance(size, (numbers.Integral, Sequence)):
        raise TypeError(f"{what} size must be an int or a (height, width) pair, got {size!r}")
    if isinstance(size, numbers.Integral):
        pair = (int(size), int(size))
    else:
        if len(size) == 1:
            pair = (int(size[0]), int(size[0]))
        elif len(size) == 2:
            pair = (int(size[0]), int(size[1]))
        else:
            raise ValueError(f"{what} size must be an int or a (height, width) pair, got {size!r}")
    if min(pair) <= 0:
        raise ValueError(f"{what} size must be positive, got {size!r}")
    return pair


class Transform:
    """A transform the decode core runs: a list of ``(name, numbers)`` ops."""

    def ops(self) -> list[Op]:
        raise NotImplementedError

    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        """Output (height, width) given the input's, or None when it depends on the image."""
        raise NotImplementedError

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of every output, or None when it depends on the image."""
        return self.output_size_for(None)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"
