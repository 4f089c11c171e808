"""Moved to :mod:`lancefeed.bench.transforms`; this name stays only because
benches/bench_loader.py imports it (remove it once that imports the new name).

Example:
    >>> from lancefeed.bench_transforms import make_plan
    >>> make_plan("train", 32)
    [('random_resized_crop', 32), ('hflip', 0.5)]
"""

from lancefeed.bench.transforms import (  # noqa: F401
    TRANSFORMS,
    describe_plan,
    lancefeed_transform,
    make_plan,
    output_side,
    pil_center_crop,
    pil_hflip,
    pil_random_resized_crop,
    pil_resize,
    pillow_transform,
)
