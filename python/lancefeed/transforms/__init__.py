"""lancefeed's transforms: torchvision's names, parameters and sampling, run inside the
decode core.

The leading geometric ops of a chain (Resize, CenterCrop, RandomResizedCrop, the flips)
fold into the decode itself: a JPEG is decoded only over the box they need, at the
smallest DCT scale that keeps it at least the output size, and resized in one pass. The
ops after them (rotation, affine maps, padding, colour and the augmentation policies)
run on each decoded image on the core's threads. Anything else a chain holds (a
torchvision op without a counterpart here, a lambda) runs per sample in Python after
the fused part: see :class:`lancefeed.transforms.Compose`.

Random parameters come from a counter-based generator keyed by (seed, epoch, sample
position, op index), so a sample gets the same augmentation whatever the thread count,
the batch split or a resume.

Example:
    >>> import lancefeed
    >>> t = lancefeed.Compose([lancefeed.RandomResizedCrop(224), lancefeed.RandomHorizontalFlip()])
    >>> t.output_size
    (224, 224)
"""

from __future__ import annotations

from lancefeed.transforms.base import Op, Size, Transform, pair
from lancefeed.transforms.compose import Compose, RandomApply, as_compose, as_ops, split
from lancefeed.transforms.detection import (
    ClampBoundingBoxes,
    RandomIoUCrop,
    RandomSizedBBoxSafeCrop,
    ResizeWithPad,
    SanitizeBoundingBoxes,
)
from lancefeed.transforms.geometric import (
    CenterCrop,
    Pad,
    RandomAffine,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRotation,
    RandomVerticalFlip,
    Resize,
)
from lancefeed.transforms.photometric import (
    ColorJitter,
    GaussianBlur,
    Grayscale,
    RandomAdjustSharpness,
    RandomAutocontrast,
    RandomEqualize,
    RandomErasing,
    RandomGrayscale,
    RandomInvert,
    RandomPosterize,
    RandomSolarize,
)
from lancefeed.transforms.policies import AutoAugment, RandAugment, TrivialAugmentWide
from lancefeed.transforms.plan import TransformPlan
from lancefeed.transforms.slow import SlowPathWarning, TransformError
from lancefeed.transforms.torchvision import OutputStep, from_torchvision

# What ``import lancefeed`` offers at the top level too (``lancefeed/__init__.py`` takes
# this list as it is): the transforms, Compose, and the slow path's warning and error.
__all__ = [
    "AutoAugment",
    "CenterCrop",
    "ClampBoundingBoxes",
    "ColorJitter",
    "Compose",
    "GaussianBlur",
    "Grayscale",
    "Pad",
    "RandAugment",
    "RandomAdjustSharpness",
    "RandomAffine",
    "RandomApply",
    "RandomAutocontrast",
    "RandomEqualize",
    "RandomErasing",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomInvert",
    "RandomIoUCrop",
    "RandomPosterize",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomSizedBBoxSafeCrop",
    "RandomSolarize",
    "RandomVerticalFlip",
    "Resize",
    "ResizeWithPad",
    "SanitizeBoundingBoxes",
    "SlowPathWarning",
    "TransformError",
    "TransformPlan",
    "TrivialAugmentWide",
]
