"""The benchmark's transforms, once as a plan and three times as code.

A *plan* is a short list of steps (``("random_resized_crop", 224)``, ...) chosen
from the ``--transform`` name and the dataset's image size. It is turned into
lancefeed transforms for lancefeed, into the small Pillow transforms below for the
Pillow baselines, and into torchvision v2 transforms for the peers whose documented
pipelines use them, so every loader does the same work. The Pillow versions follow
torchvision's definitions (so the baselines do not need torchvision).

Example:
    >>> plan = make_plan("eval", 224)
    >>> plan
    [('resize', 256), ('center_crop', 224)]
    >>> describe_plan(plan)
    'Resize(256) + CenterCrop(224)'
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable, Sequence, Union

# A step is ("name", arg): arg is an int, a probability, or (h, w) for a fixed-size resize.
Step = tuple
Plan = list

TRANSFORMS = ("train", "eval", "none")

# Below this short side a dataset is treated as CIFAR-like: its images are used
# at their own size rather than blown up to 224.
SMALL_IMAGE_SIDE = 64


def output_side(median_short_side: int) -> int:
    """The square output side for a dataset: 224 (ImageNet-like), or the images' own
    side for small (CIFAR-like) images.

    Example:
        >>> output_side(375), output_side(32)
        (224, 32)
    """
    return 224 if median_short_side > SMALL_IMAGE_SIDE else max(1, int(median_short_side))


def make_plan(kind: str, side: int) -> Plan:
    """Steps for ``kind`` (train, eval or none) at an output of ``side`` x ``side``.

    train: RandomResizedCrop(side) + RandomHorizontalFlip, as in torchvision's
    ImageNet and CIFAR recipes' random crops (CIFAR's RandomCrop(32, padding=4) has
    no lancefeed equivalent; a resized crop does the same kind of work).
    eval: Resize(side * 256 / 224) + CenterCrop(side) for ImageNet-like data; for
    small images Resize(side) + CenterCrop(side), which keeps them at full size.
    none: Resize((side, side)), the least a batch of mixed-size images needs.

    Example:
        >>> make_plan("train", 32)
        [('random_resized_crop', 32), ('hflip', 0.5)]
    """
    if kind == "train":
        return [("random_resized_crop", side), ("hflip", 0.5)]
    if kind == "eval":
        resize = side if side <= SMALL_IMAGE_SIDE else int(round(side * 256 / 224))
        return [("resize", resize), ("center_crop", side)]
    if kind == "none":
        return [("resize", (side, side))]
    raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}; got {kind!r}")


def describe_plan(plan: Sequence[Step]) -> str:
    """Human-readable form of a plan, in torchvision's names."""
    names = {
        "random_resized_crop": "RandomResizedCrop",
        "hflip": "RandomHorizontalFlip",
        "resize": "Resize",
        "center_crop": "CenterCrop",
    }
    parts = []
    for name, arg in plan:
        if name == "hflip":
            parts.append(f"{names[name]}()")
        elif isinstance(arg, (tuple, list)):
            parts.append(f"{names[name]}(({arg[0]}, {arg[1]}))")
        else:
            parts.append(f"{names[name]}({arg})")
    return " + ".join(parts)


def lancefeed_transform(plan: Sequence[Step]) -> Any:
    """The plan as a lancefeed transform (a ``lancefeed.Compose``)."""
    import lancefeed

    steps: list[Any] = []
    for name, arg in plan:
        if name == "random_resized_crop":
            steps.append(lancefeed.RandomResizedCrop(arg))
        elif name == "hflip":
            steps.append(lancefeed.RandomHorizontalFlip(arg))
        elif name == "resize":
            steps.append(lancefeed.Resize(tuple(arg) if isinstance(arg, (list, tuple)) else arg))
        elif name == "center_crop":
            steps.append(lancefeed.CenterCrop(arg))
        else:  # pragma: no cover - plans come from make_plan
            raise ValueError(f"unknown transform step {name!r}")
    return steps[0] if len(steps) == 1 else lancefeed.Compose(steps)


# --- Pillow versions (what a torchvision user's Dataset does) -------------------

PilImage = Any
PilTransform = Callable[[PilImage], PilImage]


def _bilinear() -> Any:
    from PIL import Image

    return Image.Resampling.BILINEAR


def pil_random_resized_crop(
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    rng: Union[random.Random, None] = None,
) -> PilTransform:
    """torchvision's RandomResizedCrop on a PIL image (crop and resize in one
    ``Image.resize(box=...)`` pass, antialiased bilinear as torchvision's PIL path)."""
    r = rng or random.Random()
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def apply(img: PilImage) -> PilImage:
        width, height = img.size
        area = width * height
        box = None
        for _ in range(10):
            target = area * r.uniform(scale[0], scale[1])
            aspect = math.exp(r.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = r.randint(0, height - h)
                left = r.randint(0, width - w)
                box = (left, top, left + w, top + h)
                break
        if box is None:  # torchvision's fallback: a central crop at a clamped ratio
            in_ratio = width / height
            if in_ratio < ratio[0]:
                w, h = width, int(round(width / ratio[0]))
            elif in_ratio > ratio[1]:
                h, w = height, int(round(height * ratio[1]))
            else:
                w, h = width, height
            top, left = (height - h) // 2, (width - w) // 2
            box = (left, top, left + w, top + h)
        return img.resize((size, size), _bilinear(), box=box)

    return apply


def pil_hflip(p: float = 0.5, rng: Union[random.Random, None] = None) -> PilTransform:
    """torchvision's RandomHorizontalFlip on a PIL image."""
    from PIL import Image

    r = rng or random.Random()

    def apply(img: PilImage) -> PilImage:
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if r.random() < p else img

    return apply


def pil_resize(size: Union[int, Sequence[int]]) -> PilTransform:
    """torchvision's Resize: an int sets the short side (aspect kept), (h, w) is exact."""

    def apply(img: PilImage) -> PilImage:
        width, height = img.size
        if isinstance(size, int):
            short, long = (width, height) if width <= height else (height, width)
            new_long = int(size * long / short)
            new = (size, new_long) if width <= height else (new_long, size)
            if new == (width, height):
                return img
        else:
            new = (int(size[1]), int(size[0]))
        return img.resize(new, _bilinear())

    return apply


def pil_center_crop(size: int) -> PilTransform:
    """torchvision's CenterCrop (without its zero padding of too-small images)."""

    def apply(img: PilImage) -> PilImage:
        width, height = img.size
        top = int(round((height - size) / 2.0))
        left = int(round((width - size) / 2.0))
        return img.crop((left, top, left + size, top + size))

    return apply


def pillow_transform(plan: Sequence[Step], seed: Union[int, None] = None) -> PilTransform:
    """The plan as one Pillow function ``img -> img``.

    Example:
        >>> from PIL import Image
        >>> t = pillow_transform(make_plan("eval", 224))
        >>> t(Image.new("RGB", (500, 375))).size
        (224, 224)
    """
    rng = random.Random(seed)
    steps: list[PilTransform] = []
    for name, arg in plan:
        if name == "random_resized_crop":
            steps.append(pil_random_resized_crop(arg, rng=rng))
        elif name == "hflip":
            steps.append(pil_hflip(arg, rng=rng))
        elif name == "resize":
            steps.append(pil_resize(arg))
        elif name == "center_crop":
            steps.append(pil_center_crop(arg))
        else:  # pragma: no cover - plans come from make_plan
            raise ValueError(f"unknown transform step {name!r}")

    def apply(img: PilImage) -> PilImage:
        for step in steps:
            img = step(img)
        return img

    return apply


def torchvision_transform(plan: Sequence[Step]) -> Any:
    """The plan as torchvision v2 transforms on uint8 CHW tensors (antialiased, as
    torchvision's defaults for tensors since 0.17).

    Example:
        >>> import torch  # doctest: +SKIP
        >>> t = torchvision_transform(make_plan("train", 32))  # doctest: +SKIP
        >>> t(torch.zeros(3, 48, 64, dtype=torch.uint8)).shape  # doctest: +SKIP
        torch.Size([3, 32, 32])
    """
    from torchvision.transforms import v2

    steps: list[Any] = []
    for name, arg in plan:
        if name == "random_resized_crop":
            steps.append(v2.RandomResizedCrop(arg, antialias=True))
        elif name == "hflip":
            steps.append(v2.RandomHorizontalFlip(arg))
        elif name == "resize":
            steps.append(v2.Resize(list(arg) if isinstance(arg, (list, tuple)) else arg, antialias=True))
        elif name == "center_crop":
            steps.append(v2.CenterCrop(arg))
        else:  # pragma: no cover - plans come from make_plan
            raise ValueError(f"unknown transform step {name!r}")
    return v2.Compose(steps)


def plan_side(plan: Sequence[Step]) -> int:
    """The square output side of a plan (its last step's size), for peers that take
    the output size as a number (FFCV's and DALI's fused decoders).

    Example:
        >>> plan_side(make_plan("eval", 224)), plan_side(make_plan("none", 32))
        (224, 32)
    """
    for name, arg in reversed(list(plan)):
        if name in ("random_resized_crop", "center_crop"):
            return int(arg)
        if name == "resize" and isinstance(arg, (list, tuple)):
            return int(arg[0])
    raise ValueError(f"plan {plan!r} has no fixed output size")
