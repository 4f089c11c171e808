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

__all__ = ["OutputStep", "from_torchvision", "is_torchvision", "register_container"]


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
        >>> from lancefeed.transforms.torchvision import _CONTAINERS
        >>> "RandomApply" in _CONTAINERS  # registered by lancefeed.transforms.compose
        True
    """
    _CONTAINERS[name] = convert


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
    if name == "Resize":
        if _mode(t.interpolation) != "bilinear" or getattr(t, "antialias", True) is False:
            return None
        size = t.size
        if isinstance(size, (list, tuple)) and len(size) == 1:
            size = size[0]
        return g.Resize(size, max_size=t.max_size)
    if name == "CenterCrop":
        return g.CenterCrop(t.size)
    if name == "RandomResizedCrop":
        if _mode(t.interpolation) != "bilinear" or getattr(t, "antialias", True) is False:
            return None
        return g.RandomResizedCrop(t.size, scale=tuple(t.scale), ratio=tuple(t.ratio))
    if name == "RandomHorizontalFlip":
        return g.RandomHorizontalFlip(t.p)
    if name == "RandomVerticalFlip":
        return g.RandomVerticalFlip(t.p)
    if name == "Pad":
        return g.Pad(t.padding, fill=_plain_fill(t.fill), padding_mode=t.padding_mode)
    if name == "RandomRotation":
        return g.RandomRotation(list(t.degrees), interpolation=t.interpolation, expand=t.expand, center=t.center, fill=_plain_fill(t.fill))
    if name == "RandomAffine":
        return g.RandomAffine(
            list(t.degrees),
            translate=_pair_or_none(t.translate),
            scale=_pair_or_none(t.scale),
            shear=_pair_or_none(t.shear),
            interpolation=t.interpolation,
            fill=_plain_fill(t.fill),
            center=t.center,
        )
    if name == "ColorJitter":
        return ph.ColorJitter(
            _pair_or_none(t.brightness), _pair_or_none(t.contrast), _pair_or_none(t.saturation), _pair_or_none(t.hue)
        )
    if name == "Grayscale":
        # One output channel from an RGB image changes the batch's channels: torchvision's op.
        return ph.Grayscale(3) if t.num_output_channels == 3 else None
    if name == "RandomGrayscale":
        return ph.RandomGrayscale(t.p)
    if name == "RandomInvert":
        return ph.RandomInvert(t.p)
    if name == "RandomPosterize":
        return ph.RandomPosterize(t.bits, t.p)
    if name == "RandomSolarize":
        return ph.RandomSolarize(t.threshold, t.p)
    if name == "RandomAdjustSharpness":
        return ph.RandomAdjustSharpness(t.sharpness_factor, t.p)
    if name == "RandomAutocontrast":
        return ph.RandomAutocontrast(t.p)
    if name == "RandomEqualize":
        return ph.RandomEqualize(t.p)
    if name == "GaussianBlur":
        return ph.GaussianBlur(list(t.kernel_size), sigma=list(t.sigma))
    if name == "RandomErasing":
        if t.value is None or isinstance(t.value, str):
            return None  # random noise: torchvision's own op
        value = t.value if isinstance(t.value, (list, tuple)) else [t.value]
        return ph.RandomErasing(t.p, tuple(t.scale), tuple(t.ratio), [float(v) for v in value])
    if name == "TrivialAugmentWide":
        return po.TrivialAugmentWide(t.num_magnitude_bins, t.interpolation, _plain_fill(t.fill))
    if name == "RandAugment":
        return po.RandAugment(t.num_ops, t.magnitude, t.num_magnitude_bins, t.interpolation, _plain_fill(t.fill))
    if name == "AutoAugment":
        return po.AutoAugment(t.policy, t.interpolation, _plain_fill(t.fill))
    if name == "RandomIoUCrop":
        return d.RandomIoUCrop(t.min_scale, t.max_scale, t.min_aspect_ratio, t.max_aspect_ratio, list(t.options), t.trials)
    if name == "SanitizeBoundingBoxes":
        return d.SanitizeBoundingBoxes(t.min_size, getattr(t, "min_area", 1.0))
    if name == "ClampBoundingBoxes":
        return d.ClampBoundingBoxes()
    if name in _CONTAINERS:
        return _CONTAINERS[name](t)
    if name in ("PILToTensor", "ToImage", "ToPureTensor"):
        return OutputStep()
    if name == "ToTensor":
        return OutputStep(dtype="float32", scale=True)
    if name == "ConvertImageDtype":
        return OutputStep(dtype=str(t.dtype).replace("torch.", ""), scale=True)
    if name == "ToDtype":
        dtype = t.dtype
        if isinstance(dtype, dict):
            dtype = next((v for k, v in dtype.items() if getattr(k, "__name__", "") in ("Image", "Tensor")), None)
            if dtype is None:
                return None
        return OutputStep(dtype=str(dtype).replace("torch.", ""), scale=bool(t.scale))
    if name == "Normalize":
        return OutputStep(mean=tuple(float(v) for v in t.mean), std=tuple(float(v) for v in t.std))
    return None
