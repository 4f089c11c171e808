"""The base of lancefeed's transforms: what the decode core is told about each op, and
the parsing of torchvision's argument conventions (sizes, ranges, fills, interpolation)."""

from __future__ import annotations

import numbers
from typing import Sequence, Tuple, Union

Size = Union[int, Sequence[int]]
Op = Tuple[str, Tuple[float, ...]]

NONE = float("nan")  # how an argument that is None crosses to the core

__all__ = ["NONE", "PAD_MODES", "Op", "Size", "Transform", "fill_values", "interpolation_code", "pair", "value_range"]


def pair(size: Size, what: str) -> tuple[int, int]:
    """torchvision's size convention: an int n is (n, n); a pair is (height, width)."""
    if isinstance(size, bool) or not isinstance(size, (numbers.Integral, Sequence)):
        raise TypeError(f"{what} size must be an int or a (height, width) pair, got {size!r}")
    if isinstance(size, numbers.Integral):
        hw = (int(size), int(size))
    else:
        if len(size) == 1:
            hw = (int(size[0]), int(size[0]))
        elif len(size) == 2:
            hw = (int(size[0]), int(size[1]))
        else:
            raise ValueError(f"{what} size must be an int or a (height, width) pair, got {size!r}")
    if min(hw) <= 0:
        raise ValueError(f"{what} size must be positive, got {size!r}")
    return hw


_INTERPOLATIONS = {"nearest": 0, "bilinear": 1}
PAD_MODES = {"constant": 0, "edge": 1, "reflect": 2, "symmetric": 3}


def interpolation_code(value: object, what: str) -> int:
    """torchvision's InterpolationMode (or its string): nearest and bilinear are fused."""
    name = str(getattr(value, "value", value)).lower()
    if name not in _INTERPOLATIONS:
        raise ValueError(f"{what} interpolation must be 'nearest' or 'bilinear', got {value!r}")
    return _INTERPOLATIONS[name]


def fill_values(fill: object, what: str) -> tuple[float, float, float]:
    """torchvision's ``fill``: None (0), a number, or one number per channel."""
    if fill is None:
        return (0.0, 0.0, 0.0)
    if isinstance(fill, numbers.Number):
        return (float(fill),) * 3  # type: ignore[arg-type]
    values = [float(v) for v in fill]  # type: ignore[union-attr]
    if len(values) == 1:
        return (values[0],) * 3
    if len(values) != 3:
        raise ValueError(f"{what} fill must be a number or one per channel, got {fill!r}")
    return (values[0], values[1], values[2])


def value_range(value: float | Sequence[float], what: str, center: float = 0.0, lower: float | None = None) -> tuple[float, float]:
    """torchvision's convention for degrees and the like: a number d is (center - d,
    center + d); a pair is itself."""
    if isinstance(value, numbers.Number):
        if value < 0:  # type: ignore[operator]
            raise ValueError(f"{what} must be non-negative when a single number, got {value}")
        lo, hi = center - float(value), center + float(value)  # type: ignore[arg-type]
    else:
        if len(value) != 2:  # type: ignore[arg-type]
            raise ValueError(f"{what} must be a number or a (min, max) pair, got {value!r}")
        lo, hi = float(value[0]), float(value[1])  # type: ignore[index]
    if lower is not None:
        lo = max(lo, lower)
    if lo > hi:
        raise ValueError(f"{what} must have min <= max, got {value!r}")
    return lo, hi



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
