"""``ffcv``: the rows written to an FFCV ``.beton`` (JPEG-compressed images, as FFCV's
ImageNet example writes them), read by ``ffcv.loader.Loader`` as that example's train
loader does: its fused ``RandomResizedCropRGBImageDecoder``, ``RandomHorizontalFlip``,
``ToTensor`` and ``ToTorchImage`` (uint8 batches, B x C x H x W in channels-last
memory), ``num_workers`` threads (the cores), ``os_cache=True`` (the file is read
through the page cache, so ``OrderOption.RANDOM``, the order FFCV recommends for a
cached file) and every row in the pass (``drop_last=False``, as the other loaders).
Other transforms use its ``CenterCropRGBImageDecoder``. FFCV compiles its pipeline
with numba on the first pass: several seconds, counted in its first batch.

FFCV 1.0.2 builds against system libraries: on Debian/Ubuntu
``apt-get install libopencv-dev libturbojpeg0-dev pkg-config``, then
``pip install ffcv==1.0.2`` (``scripts/install.sh`` does both).

Example:
    >>> available()  # doctest: +SKIP
    (False, 'not installed: apt-get install libopencv-dev libturbojpeg0-dev pkg-config; pip install ffcv==1.0.2')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from lancefeed.bench.peers._common import iter_rows, need, pil_decode

_INSTALL = "apt-get install libopencv-dev libturbojpeg0-dev pkg-config; pip install ffcv==1.0.2"


def available() -> tuple[bool, str]:
    """Needs ffcv (and its system libraries) and torch."""
    return need(("ffcv", _INSTALL), ("torch", "pip install torch"))


class _Rows:
    """The rows as FFCV's writer wants them: an indexable of (PIL image, label)."""

    def __init__(self, spec: dict[str, Any]):
        self.rows = list(iter_rows(spec["uri"], spec.get("limit")))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Any:
        data, label = self.rows[i]
        return pil_decode(data), max(label, 0)


def convert(spec: dict[str, Any], dest: Path) -> None:
    """Write ``dest/data.beton`` (JPEG at quality 90, at most 512 px on a side)."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    dest.mkdir(parents=True, exist_ok=True)
    writer = DatasetWriter(
        str(dest / "data.beton"),
        {"image": RGBImageField(write_mode="jpg", max_resolution=512, jpeg_quality=90), "label": IntField()},
        num_workers=max(1, spec["workers"]),
    )
    writer.from_indexed_dataset(_Rows(spec))


def make_loader(spec: dict[str, Any]) -> Iterable[Any]:
    """``ffcv.loader.Loader`` with ``spec["workers"]`` threads."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import CenterCropRGBImageDecoder, RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip, Squeeze, ToTensor, ToTorchImage

    from lancefeed.bench.transforms import plan_side

    side = plan_side(spec["plan"])
    steps = dict(spec["plan"])
    if "random_resized_crop" in steps:
        # torchvision's scale (0.08, 1) and ratio (3/4, 4/3) are its defaults.
        image: list[Any] = [RandomResizedCropRGBImageDecoder((side, side))]
    else:
        # Resize(r) + CenterCrop(side) is a center crop of side / r of the short side;
        # a plain resize (--transform none) becomes a square center crop.
        resize = steps.get("resize")
        ratio = side / resize if isinstance(resize, (int, float)) and resize >= side else 1.0
        image = [CenterCropRGBImageDecoder((side, side), ratio=ratio)]
    if "hflip" in steps:
        image.append(RandomHorizontalFlip(float(steps["hflip"])))
    image += [ToTensor(), ToTorchImage()]
    return Loader(
        str(Path(spec["converted"]) / "data.beton"),
        batch_size=spec["batch_size"],
        num_workers=max(1, spec["workers"]),
        os_cache=True,
        order=OrderOption.RANDOM if spec["shuffle"] else OrderOption.SEQUENTIAL,
        pipelines={"image": image, "label": [IntDecoder(), ToTensor(), Squeeze(1)]},
        drop_last=False,
        seed=0,
    )
