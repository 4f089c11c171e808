"""``ffcv``: the rows written to an FFCV ``.beton`` (JPEG-compressed images, as FFCV's
ImageNet example writes them), read by ``ffcv.loader.Loader`` with its fused
``RandomResizedCropRGBImageDecoder`` and one thread per core (``OrderOption.RANDOM``).

FFCV 1.0.2 builds against system libraries: on Debian/Ubuntu
``apt-get install libopencv-dev libturbojpeg0-dev pkg-config`` before
``pip install ffcv==1.0.2`` (it is not in the ``peers`` extra for that reason).
Only the ``train`` transform has its FFCV decoder; others use its center-crop decoder.

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
        num_workers=spec["workers"],
    )
    writer.from_indexed_dataset(_Rows(spec))


def make_loader(spec: dict[str, Any]) -> Iterable[Any]:
    """``ffcv.loader.Loader`` with ``spec["workers"]`` threads."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import CenterCropRGBImageDecoder, RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip, ToTensor

    from lancefeed.bench.transforms import plan_side

    side = plan_side(spec["plan"])
    names = [name for name, _ in spec["plan"]]
    if "random_resized_crop" in names:
        image: list[Any] = [RandomResizedCropRGBImageDecoder((side, side))]
    else:
        image = [CenterCropRGBImageDecoder((side, side), ratio=224 / 256)]
    if "hflip" in names:
        image.append(RandomHorizontalFlip())
    image.append(ToTensor())
    return Loader(
        str(Path(spec["converted"]) / "data.beton"),
        batch_size=spec["batch_size"],
        num_workers=spec["workers"],
        order=OrderOption.RANDOM if spec["shuffle"] else OrderOption.SEQUENTIAL,
        pipelines={"image": image, "label": [IntDecoder(), ToTensor()]},
        seed=0,
    )
