"""Transforms for detection: crops that keep the boxes in view, a letterbox resize,
and ``SanitizeBoundingBoxes`` (the box filter's settings). ``RandomApply``, which
detection recipes also lean on, is a container and lives beside ``Compose``.

Boxes and masks follow every op of a chain (see :func:`lancefeed.decode_batch`'s
``boxes=``/``masks=`` and the loader's ``targets=``); these ops are the ones that also
look at the boxes, or that detection recipes lean on.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from lancefeed.transforms.base import Op, Size, Transform, pair

__all__ = ["ClampBoundingBoxes", "RandomIoUCrop", "RandomSizedBBoxSafeCrop", "ResizeWithPad", "SanitizeBoundingBoxes"]


class RandomSizedBBoxSafeCrop(Transform):
    """albumentations' ``RandomSizedBBoxSafeCrop``: a random crop that holds the union
    of the sample's boxes (shrunk by ``erosion_rate`` of its size on each axis, so a
    crop may cut boxes when it is above 0), resized to (height, width). Without boxes,
    a crop of at least ``1 - erosion_rate`` of the image's height at its aspect ratio.
    Fused into the decode like ``RandomResizedCrop``: a JPEG is decoded only over it.

    Example:
        >>> RandomSizedBBoxSafeCrop(128, 128, erosion_rate=0.2).output_size
        (128, 128)
    """

    def __init__(self, height: int, width: int, erosion_rate: float = 0.0) -> None:
        self.height, self.width = pair((height, width), "RandomSizedBBoxSafeCrop")
        if not 0.0 <= erosion_rate <= 1.0:
            raise ValueError(f"RandomSizedBBoxSafeCrop erosion_rate must be in [0, 1], got {erosion_rate}")
        self.erosion_rate = float(erosion_rate)

    def ops(self) -> list[Op]:
        return [("bbox_safe_crop", (float(self.height), float(self.width), self.erosion_rate))]

    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        return (self.height, self.width)


class RandomIoUCrop(Transform):
    """torchvision v2's ``RandomIoUCrop`` (the SSD crop), same arguments and sampling:
    draw a minimum IoU from ``sampler_options`` (1.0 or more: leave the image as it
    is), then up to ``trials`` crops of ``min_scale..max_scale`` of each side with an
    aspect ratio in range, until one holds a box centre and overlaps some such box by
    that IoU. Boxes whose centre falls outside the crop are dropped (torchvision marks
    them for a later ``SanitizeBoundingBoxes``; here they are gone). The output size
    depends on the draw: follow it with a fixed-size ``Resize`` to batch, or take
    batches as lists (``ragged``).

    Example:
        >>> RandomIoUCrop().output_size is None
        True
    """

    def __init__(
        self,
        min_scale: float = 0.3,
        max_scale: float = 1.0,
        min_aspect_ratio: float = 0.5,
        max_aspect_ratio: float = 2.0,
        sampler_options: Optional[Sequence[float]] = None,
        trials: int = 40,
    ) -> None:
        if not 0.0 < min_scale <= max_scale <= 1.0:
            raise ValueError(f"RandomIoUCrop needs 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}")
        if not 0.0 < min_aspect_ratio <= max_aspect_ratio:
            raise ValueError(f"RandomIoUCrop needs 0 < min_aspect_ratio <= max_aspect_ratio, got {min_aspect_ratio}, {max_aspect_ratio}")
        options = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0] if sampler_options is None else [float(v) for v in sampler_options]
        if not options:
            raise ValueError("RandomIoUCrop sampler_options must not be empty")
        if int(trials) < 1:
            raise ValueError(f"RandomIoUCrop trials must be at least 1, got {trials}")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.min_aspect_ratio, self.max_aspect_ratio = float(min_aspect_ratio), float(max_aspect_ratio)
        self.options = options
        self.trials = int(trials)

    def ops(self) -> list[Op]:
        args = (self.min_scale, self.max_scale, self.min_aspect_ratio, self.max_aspect_ratio, float(self.trials), *self.options)
        return [("iou_crop", args)]

    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        return None


class ResizeWithPad(Transform):
    """Letterbox: scale the image to fit inside ``size`` keeping its aspect ratio
    (antialiased bilinear), then pad it with zeros to exactly ``size``, centred. The
    fixed-size input a detector wants without stretching its objects; boxes and masks
    follow (masks get their fill where the image is padded).

    Example:
        >>> ResizeWithPad(320).output_size
        (320, 320)
    """

    def __init__(self, size: Size) -> None:
        self.size = pair(size, "ResizeWithPad")

    def ops(self) -> list[Op]:
        return [("letterbox", (float(self.size[0]), float(self.size[1])))]

    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        return self.size


class SanitizeBoundingBoxes(Transform):
    """torchvision v2's ``SanitizeBoundingBoxes``: boxes under ``min_size`` pixels wide
    or high, or under ``min_area`` pixels, are dropped with their labels and other
    per-box values. Boxes are always filtered once, after the whole chain (with
    ``min_size=1, min_area=1`` unless a chain holds this); changes no pixel.

    Example:
        >>> SanitizeBoundingBoxes(min_area=16).ops()
        []
    """

    def __init__(self, min_size: float = 1.0, min_area: float = 1.0, labels_getter: Any = "default") -> None:
        if min_size < 1 or min_area < 1:
            raise ValueError(f"SanitizeBoundingBoxes needs min_size >= 1 and min_area >= 1, got {min_size}, {min_area}")
        self.min_size, self.min_area = float(min_size), float(min_area)

    def ops(self) -> list[Op]:
        return []

    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        return size


class ClampBoundingBoxes(Transform):
    """torchvision v2's ``ClampBoundingBoxes``: boxes are always clamped to the image
    after each op here, so this changes nothing.

    Example:
        >>> ClampBoundingBoxes().ops()
        []
    """

    def ops(self) -> list[Op]:
        return []

    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        return size
