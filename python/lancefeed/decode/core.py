"""The one way into the decode core: a batch's images, its transform plan and its
options, as one struct (``CoreCall``, read field by field by ``_core.decode``), then the
slow path of the plan.

Example:
    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO(); Image.new("RGB", (8, 8), "blue").save(buf, "PNG")
    >>> images, info = decode_images([buf.getvalue()], TransformPlan.of(None), DecodeOptions())
    >>> images.shape, info.kept.tolist()
    ((1, 8, 8, 3), [0])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from lancefeed import _core
from lancefeed._core import DecodeError, SizeMismatchError
from lancefeed.boxes import boxes_to_xyxy, flat_boxes
from lancefeed.memory import batch_buffer
from lancefeed.transforms.plan import TransformPlan
from lancefeed.transforms.slow import apply_output, run_rest_with_targets

__all__ = ["BatchInfo", "DecodeOptions", "TargetOptions", "decode_images", "decode_with_targets"]

_FLOAT_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}


@dataclass
class BatchInfo:
    """What happened to each row of a batch.

    ``kept``: input indices of the rows in the output, in order (all of them unless
    ``on_error="skip"`` dropped some). ``errors``: (input index, reason) of dropped rows.
    ``boxes``: float32 (n, 4) crop boxes (top, left, height, width) in source pixels, for
    transforming boxes or masks alongside. ``flipped``: bool (n,) horizontal flips.

    Example:
        >>> import io, lancefeed
        >>> from PIL import Image
        >>> buf = io.BytesIO(); Image.new("RGB", (8, 8)).save(buf, "PNG")
        >>> batch, info = lancefeed.decode_batch([buf.getvalue(), b"junk"], on_error="skip", return_info=True)
        >>> info.kept.tolist(), info.errors[0][0]
        ([0], 1)
    """

    kept: np.ndarray
    errors: List[Tuple[int, str]] = field(default_factory=list)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    flipped: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    vflipped: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    applied: List[List[Tuple[str, List[float]]]] = field(default_factory=list)


@dataclass
class DecodeOptions:
    """How a batch is decoded, besides its images and its plan (see
    :func:`lancefeed.decode_batch` for each): checked once, by :meth:`checked`.

    Example:
        >>> DecodeOptions(on_error="sometimes").checked()
        Traceback (most recent call last):
        ...
        ValueError: on_error must be 'raise' or 'skip', got 'sometimes'
    """

    mode: str = "RGB"
    num_threads: Optional[int] = None
    on_error: str = "raise"
    seed: int = 0
    epoch: int = 0
    positions: Optional[np.ndarray] = None
    order: Optional[np.ndarray] = None
    max_pixels: Optional[int] = None
    dct_scaling: bool = True
    decode_crop: bool = True
    truncated: str = "error"
    normalize: Any = None
    normalize_dtype: str = "float32"
    channels_last: bool = False
    out: Optional[np.ndarray] = None
    normalize_out: Optional[np.ndarray] = None
    pixel_cache: Optional[_core.PixelCache] = None

    def checked(self) -> "DecodeOptions":
        """These options, checked, with ``positions`` and ``order`` as uint64 arrays."""
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.truncated not in ("error", "pad"):
            raise ValueError(f"truncated must be 'error' or 'pad', got {self.truncated!r}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be at least 1, got {self.num_threads}")
        if self.out is not None and not isinstance(self.out, np.ndarray):
            raise TypeError(f"out must be a numpy array (use tensor.numpy() for a torch tensor), got {type(self.out).__name__}")
        if self.out is not None and self.out.dtype != np.uint8:
            raise ValueError(f"out must have dtype uint8, got {self.out.dtype}")
        if self.normalize_dtype not in _FLOAT_CODES:
            raise ValueError(f"normalize_dtype must be one of {sorted(_FLOAT_CODES)}, got {self.normalize_dtype!r}")
        if self.positions is not None:
            self.positions = np.ascontiguousarray(self.positions, dtype=np.uint64)
        if self.order is not None:
            idx = np.asarray(self.order)
            if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
                raise TypeError(f"order must be a one-dimensional sequence of integers, got {idx.dtype} of shape {idx.shape}")
            if idx.size and idx.min() < 0:
                raise IndexError(f"order holds {int(idx.min())}; indices into images must be >= 0")
            self.order = np.ascontiguousarray(idx, dtype=np.uint64)
        return self


@dataclass
class TargetOptions:
    """What follows the images through the plan (see :func:`lancefeed.decode_targets`).

    Example:
        >>> TargetOptions(mask_fill=300).checked()
        Traceback (most recent call last):
        ...
        ValueError: mask_fill must be in [0, 255], got 300
    """

    boxes: Any = None
    box_format: str = "xyxy"
    masks: Any = None
    mask_fill: int = 0
    min_area: Optional[float] = None
    min_size: Optional[float] = None
    min_visibility: float = 0.0
    ragged: bool = False

    def checked(self) -> "TargetOptions":
        if not 0 <= int(self.mask_fill) <= 255:
            raise ValueError(f"mask_fill must be in [0, 255], got {self.mask_fill!r}")
        return self


@dataclass
class CoreCall:
    """``_core.decode``'s options, one field each (the same struct in ``rust/lib.rs``)."""

    arrow: bool
    ops: List[Tuple[str, Tuple[float, ...]]]
    fused: int
    mode: str
    num_threads: Optional[int]
    skip_errors: bool
    seed: int
    epoch: int
    positions: Optional[np.ndarray]
    max_pixels: Optional[int]
    dct_scaling: bool
    decode_crop: bool
    order: Optional[np.ndarray]
    truncated: str
    out: Optional[np.ndarray] = None
    normalize: Optional[Tuple[List[float], List[float], bool]] = None
    normalize_dtype: int = 0
    normalize_out: Optional[np.ndarray] = None
    boxes: Optional[Tuple[np.ndarray, np.ndarray]] = None
    masks: Optional[List[Any]] = None
    mask_fill: int = 0
    box_filter: Tuple[float, float, float] = (1.0, 1.0, 0.0)
    ragged: bool = False
    pixel_cache: Optional[_core.PixelCache] = None

    @classmethod
    def of(cls, arrow: bool, plan: TransformPlan, opts: DecodeOptions, **extra: Any) -> "CoreCall":
        return cls(
            arrow=arrow, ops=list(plan.ops), fused=plan.fused, mode=opts.mode, num_threads=opts.num_threads,
            skip_errors=opts.on_error == "skip", seed=int(opts.seed), epoch=int(opts.epoch), positions=opts.positions,
            max_pixels=opts.max_pixels, dct_scaling=opts.dct_scaling, decode_crop=opts.decode_crop, order=opts.order,
            truncated=opts.truncated, **extra,
        )


def decode_images(images: Any, plan: TransformPlan, opts: DecodeOptions,
                  rows: Optional[np.ndarray] = None) -> Tuple[Any, BatchInfo]:
    """``images`` through ``plan``: the core's part, then the slow path (its errors
    naming ``rows[k]`` for output row k, default k). The array (or, for bfloat16, a
    tensor) and what happened to each row (:func:`lancefeed.decode_batch`'s work).

    Example:
        >>> decode_images([], TransformPlan.of(None, size=(4, 4)), DecodeOptions())[0].shape
        (0, 4, 4, 3)
    """
    if plan.albumentations is not None:
        images, _, info = _albumentations(images, plan, opts, None, rows)
        return images, info
    slow = not plan.runs_in_core
    if slow and opts.out is not None:
        raise ValueError(
            "out= and size= need a transform the core runs whole; this one runs per sample in Python "
            f"({list(plan.rest or plan.output)}): put a Resize in the transform instead of size="
        )
    if slow and opts.normalize is not None:
        raise ValueError("normalize= with a transform that ends in its own output steps: give one of them")
    chunks, arrow, missing = input_chunks(images)
    missing = _output_rows(missing, opts.order)
    _raise_missing(missing, opts.on_error)
    channels = 1 if opts.mode == "L" else 3
    coefficients = None if opts.normalize is None else _coefficients(opts.normalize, channels) + (bool(opts.channels_last),)
    out, normalize_out = opts.out, opts.normalize_out
    if out is None and not slow:
        out, normalize_out = _pooled_outputs(images, chunks, arrow, opts.order, plan, opts.mode, coefficients,
                                             opts.normalize_dtype, normalize_out)
    call = CoreCall.of(arrow, plan, opts, out=out, normalize=coefficients, normalize_dtype=_FLOAT_CODES[opts.normalize_dtype],
                       normalize_out=normalize_out, pixel_cache=opts.pixel_cache)
    pixels, kept, errors, boxes, flipped, vflipped, applied, _ = _core.decode(chunks, call)
    array = out[: len(kept)] if out is not None else pixels
    if out is None and len(kept) == 0:
        # No row to size the batch by: the size the plan promises.
        h, w = plan.output_size or (0, 0)
        if coefficients is None:
            array = np.zeros((0, h, w, channels), np.uint8)
        else:
            shape = (0, h, w, channels) if opts.channels_last else (0, channels, h, w)
            array = np.zeros(shape, np.float32 if opts.normalize_dtype == "float32" else np.uint16)
    if coefficients is not None and opts.normalize_dtype != "float32":
        array = _half(array, opts.normalize_dtype)
    if slow:
        kept_rows = np.asarray(kept, dtype=np.int64)
        positions = kept_rows if opts.positions is None else opts.positions.astype(np.int64)[kept_rows]
        names = kept_rows if rows is None else np.asarray(rows)[kept_rows]
        array = plan.finish(array, positions, seed=int(opts.seed), epoch=int(opts.epoch), num_threads=opts.num_threads, rows=names)
    info = BatchInfo(kept=kept, errors=_reword(errors, missing), boxes=boxes, flipped=flipped, vflipped=vflipped, applied=applied)
    return array, info


def decode_with_targets(images: Any, plan: TransformPlan, opts: DecodeOptions,
                        targets: TargetOptions) -> Tuple[Any, List[Dict[str, np.ndarray]], BatchInfo]:
    """``images`` through ``plan`` with their boxes and masks alongside
    (:func:`lancefeed.decode_targets`'s work): (images, one dict per kept row, info).

    Example:
        >>> decode_with_targets([], TransformPlan.of(None), DecodeOptions(), TargetOptions(ragged=True))[0]
        []
    """
    if plan.albumentations is not None:
        return _albumentations(images, plan, opts, targets, None)
    if plan.rest:
        return _rest_with_targets(images, plan, opts, targets)
    chunks, arrow, missing = input_chunks(images)
    n_rows = sum(len(c) for c in chunks) if arrow else len(chunks)
    box_arg = None
    if targets.boxes is not None:
        values, offsets = flat_boxes(targets.boxes, n_rows)
        box_arg = (np.ascontiguousarray(boxes_to_xyxy(values, targets.box_format).reshape(-1)), offsets)
    mask_chunks = None
    if targets.masks is not None:
        mask_chunks, mask_arrow, mask_missing = input_chunks(targets.masks)
        if mask_arrow != arrow:
            raise TypeError("images and masks must both be Arrow arrays or both lists of bytes")
        # A mask is read with its image: its missing file is that row's error.
        missing = {**{k: f"mask {v}" for k, v in mask_missing.items()}, **missing}
    missing = _output_rows(missing, opts.order)
    _raise_missing(missing, opts.on_error)
    min_size, min_area = plan.box_filter
    box_filter = (float(min_area if targets.min_area is None else targets.min_area),
                  float(min_size if targets.min_size is None else targets.min_size), float(targets.min_visibility))
    # The core's per-row path always (boxes or not); one size is checked below.
    call = CoreCall.of(arrow, plan, opts, boxes=box_arg, masks=mask_chunks, mask_fill=int(targets.mask_fill),
                       box_filter=box_filter, ragged=True)
    pixels, kept, errors, crop, flipped, vflipped, applied, extra = _core.decode(chunks, call)
    out_images, per_row = _target_rows(pixels, kept, extra, plan, opts.mode, targets)
    info = BatchInfo(kept=kept, errors=_reword(errors, missing), boxes=crop, flipped=flipped, vflipped=vflipped, applied=applied)
    return out_images, per_row, info


def _rest_with_targets(images: Any, plan: TransformPlan, opts: DecodeOptions,
                       targets: TargetOptions) -> Tuple[Any, List[Dict[str, np.ndarray]], BatchInfo]:
    """The core's part with its targets (a list of images), then the slow path with them
    (torchvision v2 ops move them as tv_tensors), then the output steps."""
    import torch

    core_plan = dataclasses.replace(plan, rest=(), output=(), output_size=None)
    ragged = dataclasses.replace(targets, ragged=True)
    pixels, per_row, info = decode_with_targets(images, core_plan, opts, ragged)
    kept = np.asarray(info.kept, dtype=np.int64)
    positions = kept if opts.positions is None else opts.positions.astype(np.int64)[kept]
    out, per_row = run_rest_with_targets(pixels, per_row, plan.rest, positions, plan.first_rest_op, seed=int(opts.seed),
                                         epoch=int(opts.epoch), threads=opts.num_threads, rows=kept)
    out = [apply_output(x[None], plan.output)[0] for x in out]
    if not targets.ragged:
        shapes = sorted({tuple(x.shape) for x in out})
        if len(shapes) > 1:
            raise SizeMismatchError(f"the transforms give images of different shapes {shapes}; a batch needs one shape: "
                                    "end the transform with a fixed size, or pass ragged=True for a list")
        out = torch.stack(out) if out else torch.zeros((0, 1 if opts.mode == "L" else 3, 0, 0), dtype=torch.uint8)
    return out, per_row, info


def _albumentations(images: Any, plan: TransformPlan, opts: DecodeOptions, targets: Optional[TargetOptions],
                    rows: Optional[np.ndarray]) -> Tuple[Any, List[Dict[str, np.ndarray]], BatchInfo]:
    """An albumentations plan's batch (:mod:`lancefeed.decode.albumentations`): the
    rows gathered by ``opts.order``, each with its boxes and mask, per sample."""
    from lancefeed.decode.albumentations import run_albumentations

    assert plan.albumentations is not None
    if opts.out is not None or opts.normalize is not None:
        raise ValueError("out= and normalize= need a transform the core runs whole; an albumentations pipeline runs "
                         "per sample: end it with A.Normalize and ToTensorV2 instead")
    blobs, missing, n_input = _python_rows(images, opts.order)
    _raise_missing(missing, opts.on_error)
    masks = boxes = None
    extra: Dict[str, Any] = {}
    if targets is not None and targets.masks is not None:
        masks, mask_missing, _ = _python_rows(targets.masks, opts.order)
        missing = {**{k: f"mask {v}" for k, v in mask_missing.items()}, **missing}
        _raise_missing(missing, opts.on_error)
    if targets is not None and targets.boxes is not None:
        values, offsets = flat_boxes(targets.boxes, n_input)
        if opts.order is not None:  # the boxes of the gathered rows, in their order
            o = opts.order.astype(np.int64)
            counts = (offsets[1:] - offsets[:-1])[o]
            values = np.concatenate([values[offsets[r] : offsets[r + 1]] for r in o]) if len(o) else values[:0]
            offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        boxes = (values, offsets)
        extra.update(box_format=targets.box_format, min_area=targets.min_area, min_visibility=targets.min_visibility)
    for k in missing:
        blobs[k] = None
    positions = np.arange(len(blobs)) if opts.positions is None else opts.positions.astype(np.int64)
    out, per_row, kept, errors = run_albumentations(
        blobs, plan.albumentations, masks=masks, boxes=boxes, mode=opts.mode, seed=int(opts.seed), epoch=int(opts.epoch),
        positions=positions, rows=rows, threads=opts.num_threads, on_error=opts.on_error, truncated=opts.truncated,
        max_pixels=opts.max_pixels, ragged=targets is not None and targets.ragged, **extra)
    info = BatchInfo(kept=np.asarray(kept, dtype=np.int64), errors=_reword(errors, missing))
    return out, per_row, info


def _python_rows(values: Any, order: Optional[np.ndarray]) -> Tuple[List[Optional[bytes]], Dict[int, str], int]:
    """Each row's encoded bytes (None where null), gathered by ``order``, the output
    rows whose file could not be read, and how many rows there were before gathering.
    Only the gathered rows are copied out of Arrow (a take may hold more rows)."""
    import pyarrow as pa

    chunks, arrow, missing = input_chunks(values)
    if not arrow:
        blobs = [None if v is None else bytes(v) for v in chunks]
        n = len(blobs)
        return (blobs if order is None else [blobs[int(i)] for i in order]), _output_rows(missing, order), n
    arrays = [c if isinstance(c, pa.Array) else pa.array(c) for c in chunks]
    starts = np.cumsum([0] + [len(a) for a in arrays])
    n = int(starts[-1])
    if order is None:
        return [v for a in arrays for v in a.to_pylist()], _output_rows(missing, order), n
    which = np.searchsorted(starts, order, side="right") - 1
    blobs = [arrays[k][int(i) - int(starts[k])].as_py() for i, k in zip(order, which)]
    return blobs, _output_rows(missing, order), n


def _target_rows(pixels: np.ndarray, kept: np.ndarray, extra: Any, plan: TransformPlan, mode: str,
                 targets: TargetOptions) -> Tuple[Any, List[Dict[str, np.ndarray]]]:
    """The core's flat outputs with targets as images (one batch, or a list when
    ragged, with the plan's output steps) and one dict of targets per kept row."""
    shapes, tboxes, counts, index, mask_values = extra
    c = 1 if mode == "L" else 3
    shapes = shapes.reshape(-1, 2)
    sizes = shapes[:, 0].astype(np.int64) * shapes[:, 1]
    ends = np.cumsum(sizes)
    starts = ends - sizes
    if targets.ragged:
        images: Any = [pixels[s * c : e * c].reshape(int(h), int(w), c) for s, e, (h, w) in zip(starts, ends, shapes)]
    else:
        differ = np.flatnonzero((shapes != shapes[:1]).any(axis=1)) if len(shapes) else []
        if len(differ):
            k = int(differ[0])
            raise SizeMismatchError(
                f"rows {int(kept[0])} and {int(kept[k])} come out at different sizes "
                f"({shapes[0][0]}x{shapes[0][1]} and {shapes[k][0]}x{shapes[k][1]}); a batch needs one size: "
                "end the transform with a fixed size, or pass ragged=True for a list"
            )
        h, w = (int(shapes[0][0]), int(shapes[0][1])) if len(shapes) else (plan.output_size or (0, 0))
        images = pixels.reshape(len(kept), h, w, c)
    box_ends = np.cumsum(counts)
    rows: List[Dict[str, np.ndarray]] = []
    for k in range(len(kept)):
        t: Dict[str, np.ndarray] = {}
        if targets.boxes is not None:
            a, b = int(box_ends[k] - counts[k]), int(box_ends[k])
            t["boxes"] = tboxes[a:b]
            t["box_index"] = index[a:b]
        if mask_values is not None:
            t["mask"] = mask_values[starts[k] : ends[k]].reshape(int(shapes[k][0]), int(shapes[k][1]))
        rows.append(t)
    if plan.output:
        import torch

        if targets.ragged:
            images = [apply_output(torch.from_numpy(x).permute(2, 0, 1)[None], plan.output)[0] for x in images]
        else:
            images = apply_output(torch.from_numpy(images).permute(0, 3, 1, 2), plan.output)
    return images, rows


def input_chunks(images: Any) -> Tuple[List[Any], bool, Dict[int, str]]:
    """Arrow arrays cross as C Data Interface capsules; bytes lists as they are.

    Image columns of other types (``lance.arrow.encoded_image``, Hugging Face's
    ``{bytes, path}`` struct, Lance blob v2 arrays) become binary arrays first, without
    copying bytes already in memory (see :mod:`lancefeed.columns`). The third value
    holds the rows whose image file could not be read (``{row: reason}``): they are
    null in the chunks, and the caller words their error.

    Example:
        >>> input_chunks([b"x", None])
        ([b'x', None], False, {})
    """
    import pyarrow as pa

    from lancefeed.columns import image_chunks, python_images

    if isinstance(images, (pa.Array, pa.ChunkedArray)):
        chunks, missing = image_chunks(images)
        return chunks, True, missing
    if hasattr(images, "chunks") and hasattr(images, "num_chunks"):
        return list(images.chunks), True, {}
    if hasattr(images, "__arrow_c_array__"):
        # Another library's array: the core reads it if it is binary-like.
        return [images], True, {}
    if isinstance(images, (bytes, bytearray, memoryview, str)):
        raise TypeError("images must be a sequence of encoded images (or an Arrow binary array), not one bytes object")
    items, missing = python_images(list(images))
    return items, False, missing


def _pooled_outputs(images: Any, chunks: List[Any], arrow: bool, gather: Optional[np.ndarray], plan: TransformPlan,
                    mode: str, coefficients: Any, normalize_dtype: str,
                    normalize_out: Optional[np.ndarray]) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """``out`` (uint8) or ``normalize_out`` (floats) for a batch whose size is known
    before decoding, from :func:`lancefeed.memory.batch_buffer` (reused once the caller
    has dropped an earlier batch; big batches only); ``(None, normalize_out)`` where
    the core allocates as before."""
    import pyarrow as pa

    if gather is not None:
        n = len(gather)
    elif not arrow:
        n = len(chunks)
    elif isinstance(images, (pa.Array, pa.ChunkedArray)):
        n = len(images)
    else:
        return None, normalize_out
    if plan.output_size is None or n == 0:
        return None, normalize_out
    (h, w), c = plan.output_size, 1 if mode == "L" else 3
    if coefficients is None:
        return batch_buffer((n, h, w, c), np.uint8), normalize_out
    if normalize_out is None:
        # Flat: the core lays the floats out NCHW or NHWC (channels_last) in it.
        return None, batch_buffer((n * h * w * c,), np.float32 if normalize_dtype == "float32" else np.uint16)
    return None, normalize_out


def _output_rows(missing: Dict[int, str], order: Optional[np.ndarray]) -> Dict[int, str]:
    """``missing`` (by input row) keyed by output row, where ``order`` gathers."""
    if not missing:
        return {}
    if order is None:
        return dict(missing)
    rows = np.asarray(order, dtype=np.int64)
    hit = np.nonzero(np.isin(rows, np.fromiter(missing, dtype=np.int64, count=len(missing))))[0]
    return {int(k): missing[int(rows[k])] for k in hit}


def _raise_missing(missing: Dict[int, str], on_error: str) -> None:
    """With ``on_error="raise"``, the first row whose image file is missing."""
    if missing and on_error == "raise":
        row = min(missing)
        raise DecodeError(f"row {row}: {missing[row]}")


def _reword(errors: List[Tuple[int, str]], missing: Dict[int, str]) -> List[Tuple[int, str]]:
    """The core's errors, with a missing file's reason instead of "null value"."""
    if not missing:
        return errors
    return [(i, missing.get(int(i), m)) for i, m in errors]


def _coefficients(normalize: Any, channels: int) -> Tuple[List[float], List[float]]:
    """(scale, shift) per channel for ``x * scale - shift``, float32 values of the
    float64 ``1 / (255 std)`` and ``mean / std`` (as the loader's torch path has them)."""
    try:
        mean, std = normalize
    except (TypeError, ValueError):
        raise ValueError(f"normalize must be a pair (mean, std), got {normalize!r}") from None
    m = np.broadcast_to(np.asarray(mean, np.float64), (channels,)) if np.size(mean) in (1, channels) else None
    s = np.broadcast_to(np.asarray(std, np.float64), (channels,)) if np.size(std) in (1, channels) else None
    if m is None or s is None:
        raise ValueError(f"normalize: mean and std need 1 or {channels} values (one per channel), got {mean!r}, {std!r}")
    if np.any(s == 0):
        raise ValueError(f"normalize: std must not be 0, got {std!r}")
    return (1.0 / (255.0 * s)).astype(np.float32).tolist(), (m / s).astype(np.float32).tolist()


def _half(bits: np.ndarray, dtype: str) -> Any:
    """uint16 bits of a half-precision batch as numpy float16, or (numpy has no
    bfloat16) a torch bfloat16 tensor over the same memory."""
    if dtype == "float16":
        return bits.view(np.float16)
    import torch

    return torch.from_numpy(bits).view(torch.bfloat16)
