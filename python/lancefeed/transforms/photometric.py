"""Photometric transforms, run by the core on each decoded image (torchvision's
``transforms.v2`` classes, their parameters and their sampling)."""

from __future__ import annotations

import numbers
from typing import Sequence

from lancefeed.transforms.base import NONE, Op, Transform, value_range

__all__ = [
    "ColorJitter",
    "GaussianBlur",
    "Grayscale",
    "RandomAdjustSharpness",
    "RandomAutocontrast",
    "RandomEqualize",
    "RandomErasing",
    "RandomGrayscale",
    "RandomInvert",
    "RandomPosterize",
    "RandomSolarize",
]


class _SizeKeeping(Transform):
    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        return size


def _probability(p: float, what: str) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{what} p must be in [0, 1], got {p}")
    return float(p)


class ColorJitter(_SizeKeeping):
    """Brightness, contrast, saturation and hue jitter in a random order, each factor
    drawn from its range (a number v: (max(0, 1 - v), 1 + v); hue h: (-h, h), h <= 0.5).

    Example:
        >>> ColorJitter(0.4, 0.4, 0.4).ops()[0][1][:2]
        (0.6, 1.4)
    """

    def __init__(self, brightness: float | Sequence[float] | None = None, contrast: float | Sequence[float] | None = None,
                 saturation: float | Sequence[float] | None = None, hue: float | Sequence[float] | None = None) -> None:
        self.brightness = self._factor(brightness, "brightness")
        self.contrast = self._factor(contrast, "contrast")
        self.saturation = self._factor(saturation, "saturation")
        self.hue = None if hue is None or hue == 0 else value_range(hue, "ColorJitter hue")  # type: ignore[arg-type]
        if self.hue is not None and not -0.5 <= self.hue[0] <= self.hue[1] <= 0.5:
            raise ValueError(f"ColorJitter hue must be within [-0.5, 0.5], got {hue!r}")

    @staticmethod
    def _factor(value: float | Sequence[float] | None, what: str) -> tuple[float, float] | None:
        # torchvision: 0 (or None) leaves the property alone; (1, 1) likewise.
        if value is None or (isinstance(value, numbers.Number) and value == 0):
            return None
        lo, hi = value_range(value, f"ColorJitter {what}", center=1.0, lower=0.0)  # type: ignore[arg-type]
        return None if lo == hi == 1.0 else (lo, hi)

    def ops(self) -> list[Op]:
        args: list[float] = []
        for r in (self.brightness, self.contrast, self.saturation, self.hue):
            args += [NONE, NONE] if r is None else list(r)
        return [("color_jitter", tuple(args))]


class Grayscale(_SizeKeeping):
    """Gray, kept at the image's channel count (``num_output_channels`` must match the
    loader's ``mode``: 3 for "RGB", 1 for "L").

    Example:
        >>> Grayscale(3).ops()
        [('grayscale', ())]
    """

    def __init__(self, num_output_channels: int = 1) -> None:
        if num_output_channels not in (1, 3):
            raise ValueError(f"Grayscale num_output_channels must be 1 or 3, got {num_output_channels}")
        self.num_output_channels = num_output_channels

    def ops(self) -> list[Op]:
        return [("grayscale", ())]


class _WithProbability(_SizeKeeping):
    """An op without arguments, applied with probability ``p``; ``_op`` names it."""

    _op = ""
    _default_p = 0.5

    def __init__(self, p: float | None = None) -> None:
        self.p = _probability(self._default_p if p is None else p, type(self).__name__)

    def ops(self) -> list[Op]:
        return [(self._op, (self.p,))]


class RandomGrayscale(_WithProbability):
    """Gray (all channels alike) with probability ``p`` (default 0.1).

    Example:
        >>> RandomGrayscale(0.2).ops()
        [('random_grayscale', (0.2,))]
    """

    _op = "random_grayscale"
    _default_p = 0.1


class RandomInvert(_WithProbability):
    """255 - x with probability ``p``.

    Example:
        >>> RandomInvert().ops()
        [('random_invert', (0.5,))]
    """

    _op = "random_invert"


class RandomPosterize(_SizeKeeping):
    """Keep the top ``bits`` bits of each sample, with probability ``p``.

    Example:
        >>> RandomPosterize(4).ops()
        [('random_posterize', (4.0, 0.5))]
    """

    def __init__(self, bits: int, p: float = 0.5) -> None:
        if not 0 <= bits <= 8:
            raise ValueError(f"RandomPosterize bits must be in [0, 8], got {bits}")
        self.bits = int(bits)
        self.p = _probability(p, "RandomPosterize")

    def ops(self) -> list[Op]:
        return [("random_posterize", (float(self.bits), self.p))]


class RandomSolarize(_SizeKeeping):
    """Invert the samples at or above ``threshold``, with probability ``p``.

    Example:
        >>> RandomSolarize(128).ops()
        [('random_solarize', (128.0, 0.5))]
    """

    def __init__(self, threshold: float, p: float = 0.5) -> None:
        self.threshold = float(threshold)
        self.p = _probability(p, "RandomSolarize")

    def ops(self) -> list[Op]:
        return [("random_solarize", (self.threshold, self.p))]


class RandomAdjustSharpness(_SizeKeeping):
    """Sharpen (factor > 1) or blur (< 1) by ``sharpness_factor``, with probability ``p``.

    Example:
        >>> RandomAdjustSharpness(2).ops()
        [('random_adjust_sharpness', (2.0, 0.5))]
    """

    def __init__(self, sharpness_factor: float, p: float = 0.5) -> None:
        if sharpness_factor < 0:
            raise ValueError(f"RandomAdjustSharpness sharpness_factor must be non-negative, got {sharpness_factor}")
        self.sharpness_factor = float(sharpness_factor)
        self.p = _probability(p, "RandomAdjustSharpness")

    def ops(self) -> list[Op]:
        return [("random_adjust_sharpness", (self.sharpness_factor, self.p))]


class RandomAutocontrast(_WithProbability):
    """Stretch each channel to 0..255, with probability ``p``.

    Example:
        >>> RandomAutocontrast().ops()
        [('random_autocontrast', (0.5,))]
    """

    _op = "random_autocontrast"


class RandomEqualize(_WithProbability):
    """Equalize each channel's histogram, with probability ``p``.

    Example:
        >>> RandomEqualize().ops()
        [('random_equalize', (0.5,))]
    """

    _op = "random_equalize"


class GaussianBlur(_SizeKeeping):
    """Gaussian blur with an odd ``kernel_size`` and a sigma drawn from ``sigma``.

    Example:
        >>> GaussianBlur(5).ops()
        [('gaussian_blur', (5.0, 5.0, 0.1, 2.0))]
    """

    def __init__(self, kernel_size: int | Sequence[int], sigma: float | Sequence[float] = (0.1, 2.0)) -> None:
        k = [int(kernel_size)] * 2 if isinstance(kernel_size, numbers.Integral) else [int(v) for v in kernel_size]
        if len(k) == 1:
            k = k * 2
        if len(k) != 2 or any(v <= 0 or v % 2 == 0 for v in k):
            raise ValueError(f"GaussianBlur kernel_size must be odd and positive, got {kernel_size!r}")
        if isinstance(sigma, numbers.Number):
            s = (float(sigma), float(sigma))  # type: ignore[arg-type]
        else:
            s = (float(sigma[0]), float(sigma[1]))  # type: ignore[index]
        if not 0 < s[0] <= s[1]:
            raise ValueError(f"GaussianBlur sigma must be positive with min <= max, got {sigma!r}")
        self.kernel_size = (k[0], k[1])
        self.sigma = s

    def ops(self) -> list[Op]:
        return [("gaussian_blur", (float(self.kernel_size[0]), float(self.kernel_size[1]), *self.sigma))]


class RandomErasing(_SizeKeeping):
    """With probability ``p``, erase a box of ``scale`` (of the area) and ``ratio`` with
    ``value`` (a number or one per channel). ``value="random"`` (noise) is not fused.

    Example:
        >>> RandomErasing(p=1.0).ops()[0][1][:3]
        (1.0, 0.02, 0.33)
    """

    def __init__(self, p: float = 0.5, scale: Sequence[float] = (0.02, 0.33), ratio: Sequence[float] = (0.3, 3.3), value: float | Sequence[float] = 0) -> None:
        if isinstance(value, str):
            raise ValueError("RandomErasing value='random' is not fused; use a number, or torchvision's RandomErasing (slow path)")
        self.p = _probability(p, "RandomErasing")
        if not 0 <= scale[0] <= scale[1] or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"RandomErasing scale and ratio must be (min, max) ranges, got {scale!r}, {ratio!r}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.value = (float(value),) if isinstance(value, numbers.Number) else tuple(float(v) for v in value)  # type: ignore[arg-type]

    def ops(self) -> list[Op]:
        return [("random_erasing", (self.p, *self.scale, *self.ratio, *self.value))]
