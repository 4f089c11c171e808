"""``spdl``: Meta's SPDL over the image files: ``spdl.io.load_image`` (FFmpeg's
decoder, with the crop, resize and flip as an FFmpeg filter so the decode and the
transform happen in one native call that releases the GIL) on a thread pool of one
thread per core, as SPDL's documentation does for images.

SPDL needs FFmpeg's shared libraries (libavutil 56-61: ``apt-get install ffmpeg``
on Debian/Ubuntu); without them it is reported as not available.

Example:
    >>> available()  # doctest: +SKIP
    (False, 'spdl-io installed but FFmpeg libraries are missing: apt-get install ffmpeg')
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterable, Iterator

from lancefeed.bench.peers._common import export_files, files_root, image_files, need

FORMAT = "files"


def available() -> tuple[bool, str]:
    """Needs spdl-io and FFmpeg's libraries (checked by loading them)."""
    ok, reason = need(("spdl.io", "pip install spdl-io"), ("torch", "pip install torch"))
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
            parts += [f"crop={cw}:{ch}:{x}:{y}", f"scale={arg}:{arg}"]
            w = h = int(arg)
        elif name == "hflip":
            if rng.random() < float(arg):
                parts.append("hflip")
        elif name == "resize":
            if isinstance(arg, (list, tuple)):
                parts.append(f"scale={arg[1]}:{arg[0]}")
                h, w = int(arg[0]), int(arg[1])
            else:
                nw, nh = (arg, int(arg * h / w)) if w <= h else (int(arg * w / h), arg)
                parts.append(f"scale={nw}:{nh}")
                w, h = nw, nh
        elif name == "center_crop":
            parts.append(f"crop={arg}:{arg}:{(w - arg) // 2}:{(h - arg) // 2}")
            w = h = int(arg)
    return ",".join(parts + ["format=pix_fmts=rgb24"])


def make_loader(spec: dict[str, Any]) -> Iterable[Any]:
    """Batches of decoded, transformed images from a ``spec["threads"]``-thread pool."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import spdl.io
    import torch

    from lancefeed import image_info

    files = image_files(files_root(spec), spec.get("limit"))
    classes = {lab: i for i, lab in enumerate(sorted({p.parent.name for p in files}))}
    rng = random.Random(0)
    if spec["shuffle"]:
        rng.shuffle(files)
    pool = ThreadPoolExecutor(max_workers=spec["threads"])

    def one(path: Path, seed: int) -> Any:
        data = path.read_bytes()
        width, height = image_info(data)[:2]
        desc = _filter(spec["plan"], width, height, random.Random(seed))
        return np.asarray(spdl.io.to_numpy(spdl.io.load_image(data, filter_desc=desc)))

    def submit(start: int) -> list[Any]:
        chunk = files[start : start + spec["batch_size"]]
        return [pool.submit(one, path, start + i) for i, path in enumerate(chunk)]

    def batches() -> Iterator[Any]:
        bs = spec["batch_size"]
        try:
            ahead = submit(0)
            for start in range(0, len(files), bs):
                # The next batch decodes while this one is consumed, as SPDL's
                # pipelines keep their stages busy.
                current, ahead = ahead, submit(start + bs)
                arrays = [f.result() for f in current]
                labels = torch.tensor([classes[p.parent.name] for p in files[start : start + bs]])
                yield torch.from_numpy(np.stack(arrays)), labels
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    return batches()
