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

from lancefeed.transforms.base import Op, Size, Transform, _pair
from lancefeed.transforms.compose import Compose, RandomApply, SlowPathWarning, TransformError, as_ops, split
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
from lancefeed.transforms.torchvision import OutputStep, from_torchvision

__all__ = [
    "AutoAugment",
    "CenterCrop",
    "ClampBoundingBoxes",
    "ColorJitter",
    "Compose",
    "GaussianBlur",
    "Grayscale",
    "Op",
    "OutputStep",
    "Pad",
    "RandAugment",
    "RandomApply",
    "RandomIoUCrop",
    "RandomSizedBBoxSafeCrop",
    "ResizeWithPad",
    "SanitizeBoundingBoxes",
    "RandomAdjustSharpness",
    "RandomAffine",
    "RandomAutocontrast",
    "RandomEqualize",
    "RandomErasing",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomInvert",
    "RandomPosterize",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomSolarize",
    "RandomVerticalFlip",
    "Resize",
    "Size",
    "SlowPathWarning",
    "Transform",
    "TransformError",
    "TrivialAugmentWide",
    "as_ops",
    "from_torchvision",
    "split",
    "_pair",
]
