"""A batch through an albumentations pipeline, per sample on the call's threads (each
sample borrows one of the plan's copies of the Compose): the plan of
:mod:`lancefeed.transforms.albumentations` draws with albumentations' own code, the
core decodes and does the fused prefix (``_core.cv_decode``), and the rest runs as
albumentations runs it, with the sample's boxes, labels and mask.

Each sample's generators come from its (seed, epoch, position), so a sample is the
same whatever the thread count, batch size or resume point. Ops of the rest that may
draw from the global generators (``A.Lambda``, a user's own op) run under
:func:`~lancefeed.transforms.seeding.global_generators`.

Example:
    >>> import io, lancefeed
    >>> import albumentations as A  # doctest: +SKIP
    >>> from PIL import Image
    >>> buf = io.BytesIO(); Image.new("RGB", (40, 30)).save(buf, "PNG")
    >>> lancefeed.decode_batch([buf.getvalue()], transform=A.Compose([A.RandomCrop(16, 16)])).shape  # doctest: +SKIP
    (1, 16, 16, 3)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from lancefeed import _core
from lancefeed._core import DecodeError, SizeMismatchError
from lancefeed.boxes import albumentations_to_xyxy, boxes_to_xyxy, flat_boxes, xyxy_to_albumentations
from lancefeed.transforms.albumentations import AlbumentationsPlan, Drawn, OpFailed, Sample
from lancefeed.transforms.seeding import generators, global_generators, sample_seeds
from lancefeed.transforms.slow import TransformError, warn_slow

__all__ = ["AlbumentationsBatch", "run_albumentations"]

class _Undecodable(Exception):
    """The row's image (or mask) did not decode: the row is skipped or raised as a DecodeError."""


class AlbumentationsBatch:
    """One call's rows, targets and options, and how each row goes through the plan.

    Example:
        >>> AlbumentationsBatch.channels("L")
        1
    """

    def __init__(self, plan: AlbumentationsPlan, blobs: List[Optional[bytes]], masks: Optional[List[Optional[bytes]]],
                 boxes: Optional[Tuple[np.ndarray, np.ndarray]], *, mode: str, seed: int, epoch: int,
                 positions: np.ndarray, names: np.ndarray, truncated: str, max_pixels: Optional[int]) -> None:
        self.plan, self.blobs, self.masks, self.boxes = plan, blobs, masks, boxes
        self.mode, self.epoch, self.truncated, self.max_pixels = mode, epoch, truncated, max_pixels
        # The Compose's own seed= is taken in with the loader's.
        self.seed = seed if plan.seed is None else sample_seeds(seed, plan.seed, 0, 1)[0]
        self.positions, self.names = positions, names
        self.locked = bool(plan.python_ops)

    @staticmethod
    def channels(mode: str) -> int:
        """Channels of a decoded image in ``mode``."""
        return 1 if mode == "L" else 3

    def sample_boxes(self, k: int, width: int, height: int) -> Optional[np.ndarray]:
        """Row ``k``'s boxes in the Compose's format, their index as a fifth column:
        clipped to the image, boxes with no area left out (albumentations refuses them)."""
        if self.boxes is None:
            return None
        values, offsets = self.boxes
        b = values[offsets[k] : offsets[k + 1]].astype(np.float64)
        index = np.arange(len(b), dtype=np.float64)
        b = np.clip(b, 0, [width, height, width, height])
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        fmt = self.plan.box_format or "pascal_voc"
        out = xyxy_to_albumentations(b[keep], fmt, width, height)
        if fmt in ("yolo", "albumentations"):
            out = np.clip(out, 0.0, 1.0)  # float rounding past the edge is refused
        return np.concatenate([out, index[keep, None].astype(np.float32)], axis=1)

    def _sample(self, k: int) -> Tuple[bytes, Optional[bytes], Sample]:
        data = self.blobs[k]
        if data is None:
            raise _Undecodable("null value")
        try:
            width, height, _ = _core.image_info(data)
        except DecodeError as e:
            raise _Undecodable(str(e)) from None
        mask = self.masks[k] if self.masks is not None else None
        sample = Sample((int(height), int(width), self.channels(self.mode)), self.sample_boxes(k, width, height),
                        mask=self.masks is not None)
        return data, mask, sample

    def begin(self, k: int) -> Tuple[Drawn, Tuple[Any, ...]]:
        """Row ``k``'s draws and targets through the fused prefix (albumentations'
        Python), and the core's item for its pixels: ``(data, ops, mask, mask_ops)``."""
        data, mask, sample = self._sample(k)
        drawn = self.plan.begin(sample, generators(self.seed, self.epoch, int(self.positions[k])))
        return drawn, (data, drawn.ops, mask, drawn.mask_ops)

    def finish(self, k: int, drawn: Drawn, image: np.ndarray, mask: Optional[np.ndarray]) -> Dict[str, Any]:
        """Row ``k``'s pixels through the post steps and the rest: albumentations' output dict."""
        data = self.put(drawn.data, image, mask, drawn.post)
        if not self.locked:
            return drawn.finish(data)
        position = int(self.positions[k])
        with global_generators(self.seed, self.epoch, position):
            return drawn.finish(data)

    @staticmethod
    def put(d: Dict[str, Any], image: np.ndarray, mask: Optional[np.ndarray], post: List[Any]) -> Dict[str, Any]:
        """The decoded image (and mask) in albumentations' dict, through the post steps (ToTensorV2)."""
        if "mask" in d:
            # A row without a mask gets an empty one (no class), moved as a mask is.
            d["mask"] = mask[..., 0] if mask is not None else np.zeros(d["mask"].shape[:2], np.uint8)
        for t in post:
            image = t.apply(image)
            if "mask" in d:
                d["mask"] = t.apply_to_mask(d["mask"])
        d["image"] = image
        return d

    def targets(self, out: Dict[str, Any]) -> Dict[str, np.ndarray]:
        """Row targets as the loader takes them: xyxy boxes of the output image, each
        box's index among the row's boxes, the mask."""
        image = out["image"]
        h, w = (image.shape[1:3]) if not isinstance(image, np.ndarray) else image.shape[:2]
        t: Dict[str, np.ndarray] = {}
        if self.boxes is not None:
            b = np.asarray(out.get("bboxes", np.zeros((0, 5), np.float32)), dtype=np.float64).reshape(-1, 5)
            t["boxes"] = albumentations_to_xyxy(b[:, :4], self.plan.box_format or "pascal_voc", int(w), int(h))
            t["box_index"] = np.rint(b[:, 4]).astype(np.int64)
        if "mask" in out:
            m = out["mask"]
            t["mask"] = np.ascontiguousarray(m.numpy() if hasattr(m, "numpy") else m)
        return t


def run_albumentations(images: List[Optional[bytes]], plan: AlbumentationsPlan, *, masks: Optional[List[Optional[bytes]]] = None,
                       boxes: Optional[Tuple[np.ndarray, np.ndarray]] = None, box_format: str = "xyxy",
                       min_area: Optional[float] = None, min_visibility: float = 0.0, mode: str = "RGB", seed: int = 0,
                       epoch: int = 0, positions: Optional[Sequence[int]] = None, rows: Optional[Sequence[int]] = None,
                       threads: Optional[int] = None, on_error: str = "raise", truncated: str = "error",
                       max_pixels: Optional[int] = None, ragged: bool = False
                       ) -> Tuple[Any, List[Dict[str, np.ndarray]], List[int], List[Tuple[int, str]]]:
    """``images`` (encoded, one per row) through ``plan``: (images, targets per kept
    row, kept rows, (row, reason) of rows that did not decode). ``boxes`` are
    ``(values, offsets)`` of flat boxes in ``box_format``; rows draw as ``positions``
    (default their index) and errors name ``rows`` (default the index).

    The images are one array (HWC; ``ToTensorV2`` makes them a CHW tensor) or, with
    ``ragged=True``, a list.

    Example:
        >>> import io
        >>> import albumentations as A  # doctest: +SKIP
        >>> from PIL import Image
        >>> buf = io.BytesIO(); Image.new("RGB", (40, 30)).save(buf, "PNG")
        >>> images, _, kept, _ = run_albumentations([buf.getvalue()], AlbumentationsPlan.of(A.HorizontalFlip(p=1)))  # doctest: +SKIP
        >>> images.shape, kept  # doctest: +SKIP
        ((1, 30, 40, 3), [0])
    """
    if boxes is not None:
        values, offsets = flat_boxes(boxes, len(images))
        boxes = (boxes_to_xyxy(values, box_format), offsets)
        plan = plan.with_boxes(min_area or 0.0, min_visibility)
    n = len(images)
    batch = AlbumentationsBatch(
        plan, images, masks, boxes, mode=mode, seed=seed, epoch=epoch,
        positions=np.arange(n) if positions is None else np.asarray(positions, dtype=np.int64),
        names=np.arange(n) if rows is None else np.asarray(rows), truncated=truncated, max_pixels=max_pixels)
    for name in plan.rest_names:
        warn_slow(name)
    threads = min(threads or _core.default_num_threads(), n)
    results = _run(batch, n, threads)
    kept, errors, outs = [], [], []
    for k, (out, err) in enumerate(results):
        if err is not None:
            if on_error == "raise":
                raise DecodeError(f"row {int(batch.names[k])}: {err}")
            errors.append((k, err))
        else:
            kept.append(k)
            outs.append(out)
    pixels = [o["image"] for o in outs]
    return _collate(pixels, batch.channels(mode), ragged, kept), [batch.targets(o) for o in outs], kept, errors


def _run(batch: AlbumentationsBatch, n: int, threads: int) -> List[Tuple[Optional[Dict[str, Any]], Optional[str]]]:
    """The batch in three steps: every sample drawn on this thread (albumentations'
    Python for the fused prefix, which holds the GIL), all decoded by one call on the
    core's threads, then the rest per sample on the call's threads. Samples each run
    whole on a thread of their own were slower: their decodes and Python took turns at
    the GIL (2 threads ran at 0.9x of one)."""
    results: List[Tuple[Optional[Dict[str, Any]], Optional[str]]] = [(None, None)] * n
    drawn: List[Tuple[int, Drawn]] = []
    items = []
    for k in range(n):
        try:
            d, item = batch.begin(k)
        except _Undecodable as e:
            results[k] = (None, str(e))
            continue
        drawn.append((k, d))
        items.append(item)
    decoded = _core.cv_decode_batch(items, mode=batch.mode, max_pixels=batch.max_pixels,
                                    truncated=batch.truncated, num_threads=threads)
    todo = []
    for (k, d), (image, mask, error) in zip(drawn, decoded):
        if error is not None:
            results[k] = (None, error)
        else:
            todo.append((k, d, image, mask))

    def finish(job: Tuple[int, Drawn, np.ndarray, Optional[np.ndarray]]) -> Tuple[int, Dict[str, Any]]:
        k = job[0]
        try:
            return k, batch.finish(*job)
        except OpFailed as e:
            cause = e.__cause__
            raise TransformError(f"row {int(batch.names[k])}: transform {e.op} raised {type(cause).__name__}: {cause}") from cause

    if batch.plan.rest and threads > 1 and len(todo) > 1:
        # Threads for the call only (a few hundred microseconds): the Compose copies
        # they use outlive them on the plan.
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lancefeed-albumentations") as pool:
            done = list(pool.map(finish, todo))
    else:
        done = [finish(job) for job in todo]
    for k, out in done:
        results[k] = (out, None)
    return results


def _collate(pixels: List[Any], channels: int, ragged: bool, kept: List[int]) -> Any:
    """The images as one batch (array or tensor), or a list when ``ragged``."""
    if ragged:
        return pixels
    if not pixels:
        return np.zeros((0, 0, 0, channels), np.uint8)
    shapes = [tuple(p.shape) for p in pixels]
    for k, s in enumerate(shapes):
        if s != shapes[0]:
            raise SizeMismatchError(
                f"rows {kept[0]} and {kept[k]} come out at different sizes ({shapes[0]} and {s}); a batch needs one "
                "size: end the transform with a fixed size (A.Resize, A.RandomCrop), or pass ragged=True for a list"
            )
    if isinstance(pixels[0], np.ndarray):
        return np.stack(pixels)
    import torch

    return torch.stack(pixels)
