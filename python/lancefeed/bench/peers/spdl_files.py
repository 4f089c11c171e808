"""``spdl``: Meta's SPDL over the image files, as its documentation loads images:
``spdl.dataloader.DataLoader`` (spdl-core's pipeline) with a preprocessor that runs
``spdl.io.demux_image`` + ``spdl.io.decode_packets`` (FFmpeg's decoder, with the crop,
resize and flip as an FFmpeg filter, so decode and transform are one native call
that releases the GIL) on ``num_threads`` threads (the cores), and an aggregator that
merges a batch's frames into one buffer with ``spdl.io.convert_frames``: uint8 HWC
batches, as ``spdl.io.to_torch`` casts them.

SPDL needs FFmpeg's shared libraries (FFmpeg 4 to 9: ``apt-get install ffmpeg``
on Debian/Ubuntu); without them it is reported as not available.

Example:
    >>> available()  # doctest: +SKIP
    (False, 'spdl-io installed but FFmpeg libraries are missing: apt-get install ffmpeg')
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterable

from lancefeed.bench.peers._common import export_files, files_root, image_files, need

FORMAT = "files"
_INSTALL = "pip install spdl-io spdl-core"


def available() -> tuple[bool, str]:
    """Needs spdl-io, spdl-core (its DataLoader) and FFmpeg's libraries (checked by
    loading them)."""
    ok, reason = need(("spdl.io", _INSTALL), ("spdl.dataloader", _INSTALL), ("torch", "pip install torch"))
    if not ok:
        return ok, reason
    try:
        from spdl.io.lib import _import_libspdl

        _import_libspdl()  # loads the FFmpeg libraries; spdl.io itself imports lazily
    except Exception:  # noqa: BLE001 - any load failure means it cannot run here
        return False, "spdl-io installed but FFmpeg libraries are missing: apt-get install ffmpeg"
    return True, ""


def convert(spec: dict[str, Any], dest: Path) -> None:
    """Export the rows as ``dest/<label>/<row>.img``."""
    export_files(spec["uri"], dest, spec.get("limit"))


# Bilinear, as torchvision and the other loaders resize (FFmpeg defaults to bicubic).
_BILINEAR = ":flags=bilinear"


def _filter(plan: list[Any], width: int, height: int, rng: random.Random) -> str:
    # The plan as an FFmpeg filter graph (RandomResizedCrop's box drawn as torchvision does).
    import math

    parts: list[str] = []
    w, h = width, height
    for name, arg in plan:
        if name == "random_resized_crop":
            box = None
            for _ in range(10):
                area = w * h * rng.uniform(0.08, 1.0)
                aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
                cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
                if 0 < cw <= w and 0 < ch <= h:
                    box = (cw, ch, rng.randint(0, w - cw), rng.randint(0, h - ch))
                    break
            cw, ch, x, y = box or (min(w, h), min(w, h), (w - min(w, h)) // 2, (h - min(w, h)) // 2)
            parts += [f"crop={cw}:{ch}:{x}:{y}", f"scale={arg}:{arg}{_BILINEAR}"]
            w = h = int(arg)
        elif name == "hflip":
            if rng.random() < float(arg):
                parts.append("hflip")
        elif name == "resize":
            if isinstance(arg, (list, tuple)):
                parts.append(f"scale={arg[1]}:{arg[0]}{_BILINEAR}")
                h, w = int(arg[0]), int(arg[1])
            else:
                nw, nh = (arg, int(arg * h / w)) if w <= h else (int(arg * w / h), arg)
                parts.append(f"scale={nw}:{nh}{_BILINEAR}")
                w, h = nw, nh
        elif name == "center_crop":
            parts.append(f"crop={arg}:{arg}:{(w - arg) // 2}:{(h - arg) // 2}")
            w = h = int(arg)
    return ",".join(parts + ["format=pix_fmts=rgb24"])


def make_loader(spec: dict[str, Any]) -> Iterable[Any]:
    """``spdl.dataloader.DataLoader`` over the files: decode + filter on
    ``spec["threads"]`` threads, batches merged by ``convert_frames``."""
    import spdl.io
    import torch
    from spdl.dataloader import DataLoader

    files = image_files(files_root(spec), spec.get("limit"))
    classes = {lab: i for i, lab in enumerate(sorted({p.parent.name for p in files}))}
    items = [(str(path), classes[path.parent.name], seed) for seed, path in enumerate(files)]
    if spec["shuffle"]:
        random.Random(0).shuffle(items)
    plan = spec["plan"]

    def decode(item: tuple[str, int, int]) -> tuple[Any, int]:
        path, label, seed = item
        packets = spdl.io.demux_image(path)
        desc = _filter(plan, packets.width, packets.height, random.Random(seed))
        return spdl.io.decode_packets(packets, filter_desc=desc), label

    def batch(decoded: list[tuple[Any, int]]) -> tuple[Any, Any]:
        images = spdl.io.to_torch(spdl.io.convert_frames([frames for frames, _ in decoded]))
        return images, torch.tensor([label for _, label in decoded])

    return DataLoader(
        items,
        preprocessor=decode,
        batch_size=spec["batch_size"],
        drop_last=False,
        aggregator=batch,
        num_threads=max(1, spec["threads"]),
        buffer_size=3,
    )
