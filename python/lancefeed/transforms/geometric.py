"""Geometric training transforms, fused into the decode.

They carry torchvision's names and semantics, but instead of running on decoded
images they describe a crop box and an output size that the Rust core folds into one
decode + resize pass: a JPEG is decoded only over the box it needs, at the smallest
DCT scale that keeps that box at least the output size.

Random parameters come from a counter-based generator keyed by (seed, epoch, sample
position), so the same sample gets the same crop whatever the thread count or batch
split.

Example:
    >>> import lancefeed
    >>> t = lancefeed.Compose([lancefeed.RandomResizedCrop(224), lancefeed.RandomHorizontalFlip()])
    >>> t.output_size
    (224, 224)
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable, Sequence, Tuple, Union

Size = Union[int, Sequence[int]]
Op = Tuple[str, Tuple[float, ...]]

__all__ = [
    "CenterCrop",
    "Compose",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "Transform",
    "as_ops",
]


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
    """A geometric transform the decode core can fuse."""

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
            self.size = _pair(size[0], "Resize")[0]
        else:
            self.size = _pair(size, "Resize")
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
        self.size = _pair(size, "CenterCrop")

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
        self.size = _pair(size, "RandomResizedCrop")
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


class Compose(Transform):
    """A chain of the transforms above, applied in order and fused into one pass.

    Anything else (a torchvision transform, a lambda, a colour transform) is refused
    here, because the core could not apply it inside the decode.

    Example:
        >>> Compose([Resize(256), CenterCrop(224)]).output_size
        (224, 224)
    """

    def __init__(self, transforms: Iterable[Transform]) -> None:
        self.transforms = list(transforms)
        for i, t in enumerate(self.transforms):
            if not isinstance(t, Transform):
                raise TypeError(
                    f"Compose item {i} is {t!r}: lancefeed fuses only its own geometric transforms "
                    "(Resize, CenterCrop, RandomResizedCrop, RandomHorizontalFlip, Compose) into the decode; "
                    "apply other transforms to the decoded batch"
                )

    def ops(self) -> list[Op]:
        return [op for t in self.transforms for op in t.ops()]

    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        for t in self.transforms:
            size = t.output_size_for(size)
        return size


def as_ops(transform: Transform | None, size: Size | None = None) -> list[Op]:
    """The op list the core runs: ``transform``'s, then a stretch to ``size`` if given."""
    if transform is not None and not isinstance(transform, Transform):
        raise TypeError(
            f"transform must be a lancefeed transform (Resize, CenterCrop, RandomResizedCrop, "
            f"RandomHorizontalFlip or Compose of them), got {transform!r}"
        )
    ops = transform.ops() if transform is not None else []
    if size is not None:
        ops += Resize(_pair(size, "size")).ops()
    return ops
