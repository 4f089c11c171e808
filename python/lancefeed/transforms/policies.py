"""The automatic augmentation policies, run by the core per sample with torchvision's
op spaces, magnitudes and sampling: TrivialAugmentWide, RandAugment and AutoAugment
(ImageNet policy)."""

from __future__ import annotations

from lancefeed.transforms.base import Op, Transform, fill_values, interpolation_code

__all__ = ["AutoAugment", "RandAugment", "TrivialAugmentWide"]


class _Policy(Transform):
    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        return size


class TrivialAugmentWide(_Policy):
    """One op drawn from the wide space at a magnitude drawn from ``num_magnitude_bins``.

    Example:
        >>> TrivialAugmentWide().ops()
        [('trivial_augment_wide', (31.0, 0.0, 0.0, 0.0, 0.0))]
    """

    def __init__(self, num_magnitude_bins: int = 31, interpolation: object = "nearest", fill: object = None) -> None:
        if num_magnitude_bins < 2:
            raise ValueError(f"TrivialAugmentWide num_magnitude_bins must be at least 2, got {num_magnitude_bins}")
        self.num_magnitude_bins = int(num_magnitude_bins)
        self.interpolation = interpolation_code(interpolation, "TrivialAugmentWide")
        self.fill = fill

    def ops(self) -> list[Op]:
        return [("trivial_augment_wide", (float(self.num_magnitude_bins), float(self.interpolation), *fill_values(self.fill, "TrivialAugmentWide")))]


class RandAugment(_Policy):
    """``num_ops`` ops drawn from RandAugment's space at the fixed ``magnitude``.

    Example:
        >>> RandAugment().ops()[0][1][:3]
        (2.0, 9.0, 31.0)
    """

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31, interpolation: object = "nearest", fill: object = None) -> None:
        if num_ops < 0 or not 0 <= magnitude < num_magnitude_bins:
            raise ValueError(f"RandAugment needs num_ops >= 0 and 0 <= magnitude < num_magnitude_bins, got {num_ops}, {magnitude}, {num_magnitude_bins}")
        self.num_ops = int(num_ops)
        self.magnitude = int(magnitude)
        self.num_magnitude_bins = int(num_magnitude_bins)
        self.interpolation = interpolation_code(interpolation, "RandAugment")
        self.fill = fill

    def ops(self) -> list[Op]:
        args = (float(self.num_ops), float(self.magnitude), float(self.num_magnitude_bins), float(self.interpolation))
        return [("rand_augment", (*args, *fill_values(self.fill, "RandAugment")))]


_POLICIES = {"imagenet": 0, "cifar10": 1, "svhn": 2}


class AutoAugment(_Policy):
    """One of the 25 sub-policies learned on ``policy``'s dataset (torchvision's
    ``AutoAugmentPolicy``: ``"imagenet"``, ``"cifar10"`` or ``"svhn"``), drawn per sample.

    Example:
        >>> AutoAugment().ops()[0][0]
        'auto_augment'
    """

    def __init__(self, policy: object = "imagenet", interpolation: object = "nearest", fill: object = None) -> None:
        name = str(getattr(policy, "value", policy)).lower()
        if name not in _POLICIES:
            raise ValueError(f"AutoAugment policy must be one of {sorted(_POLICIES)}, got {policy!r}")
        self.policy = name
        self.interpolation = interpolation_code(interpolation, "AutoAugment")
        self.fill = fill

    def ops(self) -> list[Op]:
        return [("auto_augment", (float(_POLICIES[self.policy]), float(self.interpolation), *fill_values(self.fill, "AutoAugment")))]
