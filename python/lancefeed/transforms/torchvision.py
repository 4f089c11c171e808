"""torchvision's transform objects (``transforms`` and ``transforms.v2``) as lancefeed's.

torchvision stays optional: objects are recognised by their class name and module, so
nothing here imports it. An object with no counterpart here (or with arguments the core
does not fuse, such as bicubic interpolation) converts to None: the caller runs it as it
is, per sample (the slow path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from lancefeed.transforms import detection as d
from lancefeed.transforms import geometric as g
from lancefeed.transforms import photometric as ph
from lancefeed.transforms import policies as po
from lancefeed.transforms.base import Transform

__all__ = ["OutputStep", "converts", "from_torchvision", "is_torchvision", "register_container"]


@dataclass(frozen=True)
class OutputStep:
    """A step that only changes how the batch is handed out: to a tensor of ``dtype``
    (None: unchanged), scaled to 0..1 if ``scale``; then ``(x - mean) / std``."""

    dtype: Optional[str] = None
    scale: bool = False
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None


# Converters for torchvision's containers of transforms (RandomApply), whose lancefeed
# counterparts convert their items in turn and so live above this module (compose.py):
# they register here, by torchvision's class name, when the package is imported.
_CONTAINERS: dict[str, Callable[[Any], Transform]] = {}


def register_container(name: str, convert: Callable[[Any], Transform]) -> None:
    """Converts torchvision's ``name`` objects with ``convert`` from now on.

    Example:
        >>> converts("RandomApply")  # registered by lancefeed.transforms.compose
        True
    """
    _CONTAINERS[name] = convert


def converts(name: str) -> bool:
    """Whether torchvision's transform class ``name`` may have a fused counterpart
    (its arguments decide: bicubic ``Resize`` still runs as torchvision's).

    Example:
        >>> converts("RandomResizedCrop"), converts("ElasticTransform")
        (True, False)
    """
    return name == "Compose" or name in _CONTAINERS or name in _CONVERTERS


def is_torchvision(obj: Any) -> bool:
    return type(obj).__module__.startswith("torchvision.transforms")


def _mode(value: Any) -> str:
    return str(getattr(value, "value", value)).lower()


def _plain_fill(fill: Any) -> Any:
    # v2 keeps fill as given; a dict (per input type) keeps it only for images.
    if isinstance(fill, dict):
        for key, value in fill.items():
            if getattr(key, "__name__", str(key)) in ("Image", "Tensor", "tv_tensors.Image") or key is None:
                return value
        raise ValueError("a per-type fill dict without an image entry")
    return fill


def _pair_or_none(value: Any) -> Optional[Sequence[float]]:
    return None if value is None else [float(v) for v in value]


def from_torchvision(obj: Any) -> Transform | OutputStep | list[Any] | None:
    """lancefeed's counterpart of a torchvision transform object, an :class:`OutputStep`,
    the items of a torchvision ``Compose`` (a list), or None (no fused counterpart).

    Example:
        >>> from torchvision.transforms import v2  # doctest: +SKIP
        >>> from_torchvision(v2.RandomHorizontalFlip(0.3))  # doctest: +SKIP
        RandomHorizontalFlip(p=0.3)
    """
    if not is_torchvision(obj):
        return None
    name = type(obj).__name__
    try:
        return _convert(name, obj)
    except (ValueError, TypeError, AttributeError):
        return None  # arguments the core does not fuse: run it as it is


def _convert(name: str, t: Any) -> Transform | OutputStep | list[Any] | None:
    if name == "Compose":
        return list(t.transforms)
    if name in _CONTAINERS:
        return _CONTAINERS[name](t)
    convert = _CONVERTERS.get(name)
    return None if convert is None else convert(t)


def _bilinear(t: Any) -> bool:
    # The core resamples bilinearly with antialiasing only; others run as torchvision's.
    return _mode(t.interpolation) == "bilinear" and getattr(t, "antialias", True) is not False


def _resize(t: Any) -> Optional[Transform]:
    if not _bilinear(t):
        return None
    size = t.size
    if isinstance(size, (list, tuple)) and len(size) == 1:
        size = size[0]
    return g.Resize(size, max_size=t.max_size)


def _random_erasing(t: Any) -> Optional[Transform]:
    if t.value is None or isinstance(t.value, str):
        return None  # random noise: torchvision's own op
    value = t.value if isinstance(t.value, (list, tuple)) else [t.value]
    return ph.RandomErasing(t.p, tuple(t.scale), tuple(t.ratio), [float(v) for v in value])


def _to_dtype(t: Any) -> Optional[OutputStep]:
    dtype = t.dtype
    if isinstance(dtype, dict):
        dtype = next((v for k, v in dtype.items() if getattr(k, "__name__", "") in ("Image", "Tensor")), None)
        if dtype is None:
            return None
    return OutputStep(dtype=str(dtype).replace("torch.", ""), scale=bool(t.scale))


_GEOMETRIC: dict[str, Callable[[Any], Any]] = {
    "Resize": _resize,
    "CenterCrop": lambda t: g.CenterCrop(t.size),
    "RandomResizedCrop": lambda t: (
        g.RandomResizedCrop(t.size, scale=tuple(t.scale), ratio=tuple(t.ratio)) if _bilinear(t) else None
    ),
    "RandomHorizontalFlip": lambda t: g.RandomHorizontalFlip(t.p),
    "RandomVerticalFlip": lambda t: g.RandomVerticalFlip(t.p),
    "Pad": lambda t: g.Pad(t.padding, fill=_plain_fill(t.fill), padding_mode=t.padding_mode),
    "RandomRotation": lambda t: g.RandomRotation(
        list(t.degrees), interpolation=t.interpolation, expand=t.expand, center=t.center, fill=_plain_fill(t.fill)
    ),
    "RandomAffine": lambda t: g.RandomAffine(
        list(t.degrees),
        translate=_pair_or_none(t.translate),
        scale=_pair_or_none(t.scale),
        shear=_pair_or_none(t.shear),
        interpolation=t.interpolation,
        fill=_plain_fill(t.fill),
        center=t.center,
    ),
}

_PHOTOMETRIC: dict[str, Callable[[Any], Any]] = {
    "ColorJitter": lambda t: ph.ColorJitter(
        _pair_or_none(t.brightness), _pair_or_none(t.contrast), _pair_or_none(t.saturation), _pair_or_none(t.hue)
    ),
    # One output channel from an RGB image changes the batch's channels: torchvision's op.
    "Grayscale": lambda t: ph.Grayscale(3) if t.num_output_channels == 3 else None,
    "RandomGrayscale": lambda t: ph.RandomGrayscale(t.p),
    "RandomInvert": lambda t: ph.RandomInvert(t.p),
    "RandomPosterize": lambda t: ph.RandomPosterize(t.bits, t.p),
    "RandomSolarize": lambda t: ph.RandomSolarize(t.threshold, t.p),
    "RandomAdjustSharpness": lambda t: ph.RandomAdjustSharpness(t.sharpness_factor, t.p),
    "RandomAutocontrast": lambda t: ph.RandomAutocontrast(t.p),
    "RandomEqualize": lambda t: ph.RandomEqualize(t.p),
    "GaussianBlur": lambda t: ph.GaussianBlur(list(t.kernel_size), sigma=list(t.sigma)),
    "RandomErasing": _random_erasing,
    "TrivialAugmentWide": lambda t: po.TrivialAugmentWide(t.num_magnitude_bins, t.interpolation, _plain_fill(t.fill)),
    "RandAugment": lambda t: po.RandAugment(
        t.num_ops, t.magnitude, t.num_magnitude_bins, t.interpolation, _plain_fill(t.fill)
    ),
    "AutoAugment": lambda t: po.AutoAugment(t.policy, t.interpolation, _plain_fill(t.fill)),
}

_DETECTION: dict[str, Callable[[Any], Any]] = {
    "RandomIoUCrop": lambda t: d.RandomIoUCrop(
        t.min_scale, t.max_scale, t.min_aspect_ratio, t.max_aspect_ratio, list(t.options), t.trials
    ),
    "SanitizeBoundingBoxes": lambda t: d.SanitizeBoundingBoxes(t.min_size, getattr(t, "min_area", 1.0)),
    "ClampBoundingBoxes": lambda t: d.ClampBoundingBoxes(),
}

_OUTPUT: dict[str, Callable[[Any], Any]] = {
    "PILToTensor": lambda t: OutputStep(),
    "ToImage": lambda t: OutputStep(),
    "ToPureTensor": lambda t: OutputStep(),
    "ToTensor": lambda t: OutputStep(dtype="float32", scale=True),
    "ConvertImageDtype": lambda t: OutputStep(dtype=str(t.dtype).replace("torch.", ""), scale=True),
    "ToDtype": _to_dtype,
    "Normalize": lambda t: OutputStep(mean=tuple(float(v) for v in t.mean), std=tuple(float(v) for v in t.std)),
}

# torchvision's class name -> its counterpart (None: no fused one for these arguments).
_CONVERTERS: dict[str, Callable[[Any], Any]] = {**_GEOMETRIC, **_PHOTOMETRIC, **_DETECTION, **_OUTPUT}
