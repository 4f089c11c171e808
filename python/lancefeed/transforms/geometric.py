"""Geometric transforms: fused into the decode where they lead a chain."""

from __future__ import annotations

import math
import numbers
from typing import Sequence

from lancefeed.transforms.base import PAD_MODES, Op, Size, Transform, fill_values, interpolation_code, pair, value_range

__all__ = [
    "CenterCrop",
    "Pad",
    "RandomAffine",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomVerticalFlip",
    "Resize",
]

class Resize(Transform):
    """Resize, antialiased bilinear.

    An int resizes the shorter side to it, keeping the aspect ratio (``max_size``
    bounds the longer side); a (height, width) pair stretches to exactly that size.

    Example:
        >>> Resize(256).output_size is None, Resize((224, 224)).output_size
        (True, (224, 224))
    """

    def __init__(self, size: Size, max_size: int | None = None) -> None:
        if isinstance(size, numbers.Integral) and not isinstance(size, bool):
            if size <= 0:
                raise ValueError(f"Resize size must be positive, got {size}")
            self.size: int | tuple[int, int] = int(size)
        elif isinstance(size, Sequence) and len(size) == 1:
            self.size = pair(size[0], "Resize")[0]
        else:
            self.size = pair(size, "Resize")
            if max_size is not None:
                raise ValueError("Resize max_size is only allowed with an int size, as in torchvision")
        if max_size is not None and max_size <= self.size:  # type: ignore[operator]
            raise ValueError(f"Resize max_size ({max_size}) must be larger than size ({self.size})")
        self.max_size = max_size

    def ops(self) -> list[Op]:
        if isinstance(self.size, int):
            return [("resize_shorter", (float(self.size), float(self.max_size or 0)))]
        return [("resize", (float(self.size[0]), float(self.size[1])))]

    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        return self.size if isinstance(self.size, tuple) else None


class CenterCrop(Transform):
    """Crop the center (height, width), zero-padding where the image is smaller.

    Example:
        >>> CenterCrop(224).output_size
        (224, 224)
    """

    def __init__(self, size: Size) -> None:
        self.size = pair(size, "CenterCrop")

    def ops(self) -> list[Op]:
        return [("center_crop", (float(self.size[0]), float(self.size[1])))]

    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        return self.size


class RandomResizedCrop(Transform):
    """Crop a random area and aspect ratio, resized to ``size`` (torchvision's sampling:
    ten tries, then the central fallback).

    Example:
        >>> RandomResizedCrop(224, scale=(0.35, 1.0)).output_size
        (224, 224)
    """

    def __init__(
        self,
        size: Size,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    ) -> None:
        self.size = pair(size, "RandomResizedCrop")
        scale = tuple(float(s) for s in scale)  # type: ignore[assignment]
        ratio = tuple(float(r) for r in ratio)  # type: ignore[assignment]
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"RandomResizedCrop scale must be (min, max) with 0 < min <= max, got {scale}")
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1] or not all(map(math.isfinite, ratio)):
            raise ValueError(f"RandomResizedCrop ratio must be (min, max) with 0 < min <= max, got {ratio}")
        self.scale = scale
        self.ratio = ratio

    def ops(self) -> list[Op]:
        h, w = self.size
        return [("random_resized_crop", (float(h), float(w), *self.scale, *self.ratio))]

    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        return self.size


class RandomHorizontalFlip(Transform):
    """Mirror left-right with probability ``p``.

    Example:
        >>> RandomHorizontalFlip(p=0.5).output_size is None
        True
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip p must be in [0, 1], got {p}")
        self.p = float(p)

    def ops(self) -> list[Op]:
        return [("hflip", (self.p,))]

    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        return size


class RandomVerticalFlip(Transform):
    """Mirror top-bottom with probability ``p``.

    Example:
        >>> RandomVerticalFlip(p=1.0).ops()
        [('vflip', (1.0,))]
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomVerticalFlip p must be in [0, 1], got {p}")
        self.p = float(p)

    def ops(self) -> list[Op]:
        return [("vflip", (self.p,))]

    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        return size


class Pad(Transform):
    """Pad each side (torchvision's ``padding``: one number for all sides, (left/right,
    top/bottom) or (left, top, right, bottom)) with ``fill`` or by ``padding_mode``
    ("constant", "edge", "reflect", "symmetric").

    Example:
        >>> Pad((1, 2)).output_size_for((10, 20))
        (14, 22)
    """

    def __init__(self, padding: int | Sequence[int], fill: object = 0, padding_mode: str = "constant") -> None:
        p = [int(padding)] * 4 if isinstance(padding, numbers.Integral) else [int(v) for v in padding]
        if len(p) == 1:
            p = p * 4
        elif len(p) == 2:
            p = [p[0], p[1], p[0], p[1]]
        if len(p) != 4 or min(p) < 0:
            raise ValueError(f"Pad padding must be 1, 2 or 4 non-negative ints, got {padding!r}")
        if padding_mode not in PAD_MODES:
            raise ValueError(f"Pad padding_mode must be one of {sorted(PAD_MODES)}, got {padding_mode!r}")
        self.padding = tuple(p)
        self.fill = fill
        self.padding_mode = padding_mode

    def ops(self) -> list[Op]:
        return [("pad", (*map(float, self.padding), float(PAD_MODES[self.padding_mode]), *fill_values(self.fill, "Pad")))]

    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        if size is None:
            return None
        left, top, right, bottom = self.padding
        return (size[0] + top + bottom, size[1] + left + right)


class RandomRotation(Transform):
    """Rotate by an angle drawn from ``degrees`` (d: (-d, d)), counter-clockwise, about
    the centre, with ``interpolation`` ("nearest" or "bilinear"), ``expand`` to hold the
    whole rotated image, and ``fill`` outside it.

    Example:
        >>> RandomRotation(20).ops()[0][:2]
        ('random_rotation', (-20.0, 20.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    """

    def __init__(self, degrees: float | Sequence[float], interpolation: object = "nearest", expand: bool = False, center: object = None, fill: object = 0) -> None:
        if center is not None:
            raise ValueError("RandomRotation center= is not fused; leave it None (the image centre), or use torchvision's RandomRotation (slow path)")
        self.degrees = value_range(degrees, "RandomRotation degrees")
        self.interpolation = interpolation_code(interpolation, "RandomRotation")
        self.expand = bool(expand)
        self.fill = fill

    def ops(self) -> list[Op]:
        return [("random_rotation", (*self.degrees, float(self.interpolation), float(self.expand), *fill_values(self.fill, "RandomRotation")))]

    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        return None if self.expand else size


class RandomAffine(Transform):
    """torchvision's RandomAffine: an angle from ``degrees``, a translation up to
    ``translate`` (fractions of the width and height), a ``scale`` from its range and a
    ``shear`` (x range, and y range when four numbers), about the centre.

    Example:
        >>> RandomAffine(10, translate=(0.1, 0.1)).output_size_for((32, 32))
        (32, 32)
    """

    def __init__(
        self,
        degrees: float | Sequence[float],
        translate: Sequence[float] | None = None,
        scale: Sequence[float] | None = None,
        shear: float | Sequence[float] | None = None,
        interpolation: object = "nearest",
        fill: object = 0,
        center: object = None,
    ) -> None:
        if center is not None:
            raise ValueError("RandomAffine center= is not fused; leave it None (the image centre), or use torchvision's RandomAffine (slow path)")
        self.degrees = value_range(degrees, "RandomAffine degrees")
        if translate is not None and (len(translate) != 2 or not all(0.0 <= t <= 1.0 for t in translate)):
            raise ValueError(f"RandomAffine translate must be two fractions in [0, 1], got {translate!r}")
        self.translate = None if translate is None else (float(translate[0]), float(translate[1]))
        if scale is not None and (len(scale) != 2 or min(scale) <= 0):
            raise ValueError(f"RandomAffine scale must be a positive (min, max), got {scale!r}")
        self.scale = None if scale is None else (float(scale[0]), float(scale[1]))
        if shear is None:
            self.shear: tuple[float, ...] | None = None
        elif isinstance(shear, numbers.Number) or len(shear) == 2:  # type: ignore[arg-type]
            self.shear = value_range(shear, "RandomAffine shear")  # type: ignore[arg-type]
        elif len(shear) == 4:  # type: ignore[arg-type]
            self.shear = tuple(float(v) for v in shear)  # type: ignore[union-attr]
        else:
            raise ValueError(f"RandomAffine shear must be a number, 2 or 4 numbers, got {shear!r}")
        self.interpolation = interpolation_code(interpolation, "RandomAffine")
        self.fill = fill

    def ops(self) -> list[Op]:
        nan = float("nan")
        t = self.translate or (nan, nan)
        s = self.scale or (nan, nan)
        sh = self.shear or (nan, nan)
        shear = (*sh, nan, nan) if len(sh) == 2 else sh
        args = (*self.degrees, *t, *s, *shear, float(self.interpolation), *fill_values(self.fill, "RandomAffine"))
        return [("random_affine", args)]

    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        return size
