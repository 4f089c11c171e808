"""``dali``: NVIDIA DALI over the image files: ``fn.readers.file`` (shuffled),
``fn.decoders.image_random_crop`` on the GPU (``device="mixed"``: nvJPEG with the
crop fused in), ``fn.resize`` and ``fn.flip``, with one CPU thread per core, as DALI's
ImageNet example does. Only where CUDA is present.

Install: ``pip install nvidia-dali-cuda120`` (or ``-cuda130``, matching the CUDA driver).

Example:
    >>> available()  # doctest: +SKIP
    (False, 'not installed: pip install nvidia-dali-cuda120 (needs CUDA)')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

from lancefeed.bench.peers._common import export_files, files_root, image_files, need

FORMAT = "files"


def available() -> tuple[bool, str]:
    """Needs nvidia-dali, torch, and a CUDA device."""
    ok, reason = need(("nvidia.dali", "pip install nvidia-dali-cuda120 (needs CUDA)"), ("torch", "pip install torch"))
    if not ok:
        return ok, reason
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA device: DALI's GPU decode needs one"
    return True, ""


def convert(spec: dict[str, Any], dest: Path) -> None:
    """Export the rows as ``dest/<label>/<row>.img``."""
    export_files(spec["uri"], dest, spec.get("limit"))


def make_loader(spec: dict[str, Any]) -> Iterable[Any]:
    """A DALI pipeline, ``spec["threads"]`` threads, as (images NHWC on the GPU, labels)."""
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

    from lancefeed.bench.transforms import plan_side

    files = image_files(files_root(spec), spec.get("limit"))
    classes = {lab: i for i, lab in enumerate(sorted({p.parent.name for p in files}))}
    side = plan_side(spec["plan"])
    names = [name for name, _ in spec["plan"]]

    @pipeline_def(batch_size=spec["batch_size"], num_threads=spec["threads"], device_id=0, seed=0)
    def pipe() -> Any:
        jpegs, labels = fn.readers.file(
            files=[str(p) for p in files],
            labels=[classes[p.parent.name] for p in files],
            random_shuffle=spec["shuffle"],
            name="reader",
        )
        if "random_resized_crop" in names:
            images = fn.decoders.image_random_crop(jpegs, device="mixed", output_type=types.RGB)
            images = fn.resize(images, resize_x=side, resize_y=side)
        else:
            images = fn.decoders.image(jpegs, device="mixed", output_type=types.RGB)
            images = fn.resize(images, resize_shorter=side)
            images = fn.crop(images, crop=(side, side))
        if "hflip" in names:
            images = fn.flip(images, horizontal=fn.random.coin_flip())
        return images, labels

    p = pipe()
    p.build()
    it = DALIGenericIterator(
        [p], ["images", "labels"], reader_name="reader", last_batch_policy=LastBatchPolicy.PARTIAL
    )

    def batches() -> Iterator[Any]:
        for out in it:
            yield out[0]["images"], out[0]["labels"]

    return batches()
