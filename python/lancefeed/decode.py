"""Batch decode: encoded image bytes in, one contiguous uint8 NHWC array out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np

from lancefeed import _core
from lancefeed._core import DecodeError, SizeMismatchError
from lancefeed.memory import batch_buffer
from lancefeed.transforms import Compose, Size, _pair, as_ops
from lancefeed.transforms.compose import apply_output, as_compose, run_rest

if TYPE_CHECKING:
    import pyarrow as pa

    Images = Union[pa.Array, pa.ChunkedArray, Sequence[Union[bytes, None]]]

__all__ = ["BatchInfo", "boxes_to_xyxy", "decode_batch", "decode_targets", "flat_boxes"]


@dataclass
class BatchInfo:
    """What happened to each row of a batch.

    ``kept``: input indices of the rows in the output, in order (all of them unless
    ``on_error="skip"`` dropped some). ``errors``: (input index, reason) of dropped rows.
    ``boxes``: float32 (n, 4) crop boxes (top, left, height, width) in source pixels, for
    transforming boxes or masks alongside. ``flipped``: bool (n,) horizontal flips.
    """

    kept: np.ndarray
    errors: list[tuple[int, str]] = field(default_factory=list)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    flipped: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    vflipped: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    applied: list[list[tuple[str, list[float]]]] = field(default_factory=list)


def _chunks(images: Any) -> tuple[list[Any], bool, dict[int, str]]:
    """Arrow arrays cross as C Data Interface capsules; bytes lists as they are.

    Image columns of other types (``lance.arrow.encoded_image``, Hugging Face's
    ``{bytes, path}`` struct, Lance blob v2 arrays) become binary arrays first, without
    copying bytes already in memory (see :mod:`lancefeed.columns`). The third value
    holds the rows whose image file could not be read (``{row: reason}``): they are
    null in the chunks, and the caller words their error.
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


def _pooled_outputs(
    images: Any, chunks: list[Any], arrow: bool, gather: np.ndarray | None, size: Size | None, chain: Any,
    mode: str, coefficients: Any, normalize_dtype: str, normalize_out: np.ndarray | None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``out`` (uint8) or ``_normalize_out`` (floats) for a batch whose size is known
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
    static = _static_shape(size, chain, mode)
    if static is None or n == 0:
        return None, normalize_out
    h, w, c = static
    if coefficients is None:
        return batch_buffer((n, h, w, c), np.uint8), normalize_out
    if normalize_out is None:
        # Flat: the core lays the floats out NCHW or NHWC (channels_last) in it.
        return None, batch_buffer((n * h * w * c,), np.float32 if normalize_dtype == "float32" else np.uint16)
    return None, normalize_out


def _static_shape(size: Size | None, chain: Any, mode: str) -> tuple[int, int, int] | None:
    """(H, W, C) of every output image where ``size`` or the transform fixes it up
    front, else None (the images' own sizes decide)."""
    static = _pair(size, "size") if size is not None else getattr(chain, "output_size", None)
    if static is None:
        return None
    return int(static[0]), int(static[1]), 1 if mode == "L" else 3


def _output_rows(missing: dict[int, str], order: np.ndarray | None) -> dict[int, str]:
    """``missing`` (by input row) keyed by output row, where ``order`` gathers."""
    if not missing:
        return {}
    if order is None:
        return dict(missing)
    rows = np.asarray(order, dtype=np.int64)
    hit = np.nonzero(np.isin(rows, np.fromiter(missing, dtype=np.int64, count=len(missing))))[0]
    return {int(k): missing[int(rows[k])] for k in hit}


def _raise_missing(missing: dict[int, str], on_error: str) -> None:
    """With ``on_error="raise"``, the first row whose image file is missing."""
    if missing and on_error == "raise":
        row = min(missing)
        raise DecodeError(f"row {row}: {missing[row]}")


def _reword(errors: list[tuple[int, str]], missing: dict[int, str]) -> list[tuple[int, str]]:
    """The core's errors, with a missing file's reason instead of "null value"."""
    if not missing:
        return errors
    return [(i, missing.get(int(i), m)) for i, m in errors]


def _coefficients(normalize: Any, channels: int) -> tuple[list[float], list[float]]:
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


_FLOAT_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}


def _half(bits: np.ndarray, dtype: str) -> Any:
    """uint16 bits of a half-precision batch as numpy float16, or (numpy has no
    bfloat16) a torch bfloat16 tensor over the same memory."""
    if dtype == "float16":
        return bits.view(np.float16)
    import torch

    return torch.from_numpy(bits).view(torch.bfloat16)


def _finish_slow(array: np.ndarray, chain: Compose, kept: np.ndarray, positions: np.ndarray | None, *, seed: int,
                 epoch: int, num_threads: int | None, first_op: int) -> Any:
    """The per-sample rest of ``chain`` and its output steps on the fused part's batch:
    a numpy array, (N, C, H, W) as torchvision gives it (a tensor for bfloat16)."""
    import torch

    # A kept row's draws are keyed by its own position, skipped rows or not.
    kept = np.asarray(kept, dtype=np.int64)
    pos = kept if positions is None else np.asarray(positions, dtype=np.int64)[kept]
    if chain.rest:
        x = run_rest(array, chain.rest, pos, first_op, seed=seed, epoch=epoch, threads=num_threads, rows=kept)
    else:
        x = torch.from_numpy(array).permute(0, 3, 1, 2)
    x = apply_output(x, chain.output)
    return x if x.dtype == torch.bfloat16 else x.contiguous().numpy()


def decode_batch(
    images: Images,
    *,
    size: Size | None = None,
    transform: Any = None,
    mode: str = "RGB",
    num_threads: int | None = None,
    out: np.ndarray | None = None,
    on_error: str = "raise",
    seed: int = 0,
    epoch: int = 0,
    positions: Sequence[int] | np.ndarray | None = None,
    max_pixels: int | None = None,
    dct_scaling: bool = True,
    decode_crop: bool = True,
    order: Sequence[int] | np.ndarray | None = None,
    return_info: bool = False,
    truncated: str = "error",
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    normalize_dtype: str = "float32",
    pixel_cache: _core.PixelCache | None = None,
    _channels_last: bool = False,
    _normalize_out: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, BatchInfo]:
    """Decode a batch of JPEG/PNG/WebP images into one (N, H, W, C) uint8 array.

    ``images`` is a pyarrow ``BinaryArray``/``LargeBinaryArray``/``BinaryViewArray``
    (or a ``ChunkedArray`` of them), read in place through the Arrow C Data Interface,
    or a list of bytes. Other image column types are read too (see
    :mod:`lancefeed.columns`): ``lance.arrow.encoded_image`` and other extension arrays
    over binary (their storage, in place), a Hugging Face ``Image`` struct ``{bytes,
    path}`` (its bytes in place; where they are null, the file at ``path``; also as
    the dicts ``to_pylist()`` gives), a ``lance.blob_array`` (its data, or its URIs'
    files). A missing file is that row's :class:`lancefeed.DecodeError`.
    Each image is decoded, transformed and resized straight into its slot of one
    buffer, on ``num_threads`` threads (default: the cores) with the GIL released.

    ``size=(H, W)`` stretches every image to that size (antialiased bilinear, as
    Pillow's ``resize(..., BILINEAR)``); ``transform`` applies transforms first
    (``size``, if also given, stretches their output): lancefeed's, torchvision's
    (``transforms`` or ``v2``, ``Compose`` included) or any callable, see
    :class:`lancefeed.Compose`. When some of it runs per sample in Python, or it ends
    in ``ToTensor``/``ToDtype``/``Normalize``, the result is (N, C, H, W) as
    torchvision stacks it. With neither, every image
    must already have the same size (else :class:`lancefeed.SizeMismatchError`, a
    ``ValueError`` naming two rows and their sizes). ``mode`` is ``"RGB"`` (C=3) or ``"L"`` (C=1).

    ``out``: a C-contiguous uint8 array of shape (>= N, H, W, C), a pinned torch
    tensor's ``.numpy()`` say, filled in place; the result is then ``out[:n]``.
    Without it, a batch of 32 MiB or more whose size is known up front goes into a
    buffer reused from an earlier call's result once nothing refers to that result any
    more (no array, view or tensor over it; see :func:`lancefeed.memory.batch_buffer`),
    instead of fresh memory the kernel must fault in and zero.

    ``on_error="raise"`` raises :class:`lancefeed.DecodeError` naming the first bad row;
    ``"skip"`` drops bad rows (see ``return_info``). ``max_pixels`` refuses images over
    that many pixels from their header (default: Pillow's decompression-bomb error
    threshold, 178,956,970). Random transforms draw from (``seed``, ``epoch``,
    ``positions[i]``); ``positions`` defaults to 0..N-1.

    ``order``: output row ``i`` is ``images[order[i]]`` (N = ``len(order)``; rows may
    repeat or be left out). Rows read in storage order are put in sample order this
    way, by pointer, without copying their bytes. ``positions``, ``kept`` and the
    errors' indices count output rows.

    ``dct_scaling`` (default True): where an image is shrunk, a JPEG is decoded at the
    smallest DCT scale (1/8, 1/4 or 1/2) that keeps the crop at least the output size;
    ``False`` decodes at full scale before the resize (closest to Pillow).
    ``decode_crop=False`` decodes whole JPEGs rather than only the crop's rows and
    columns; it is there to measure what the crop buys.

    ``pixel_cache``: a :class:`lancefeed.PixelCache` keyed by ``positions`` (required
    with it). A row already in it is cropped and resized from its decoded pixels, with
    no JPEG decode; a row not in it is decoded whole and kept, while the cache's byte
    budget has room. Either way the row comes out as with ``decode_crop=False``: the
    crop is cut from the whole decoded image (for small outputs, exactly Pillow's decode
    and ``resize(box=...)``), where a decode-time crop sees no pixels beyond the decoded
    region and differs near the crop's edges.

    ``truncated="error"`` (the default) refuses an image whose data ends early, as
    Pillow does; ``"pad"`` decodes what is there, as Pillow does with
    ``ImageFile.LOAD_TRUNCATED_IMAGES = True``: a JPEG's missing part comes out gray
    (libjpeg's fill), a PNG's missing rows black. A truncated WebP is an error either way.

    ``normalize=(mean, std)`` (per channel, on the 0..1 scale) returns float32
    (N, C, H, W) ``(x / 255 - mean) / std``, computed by the decode threads as
    ``x * (1 / (255 std)) - mean / std`` in float32 (torchvision's ``ToDtype(float32,
    scale=True)`` + ``Normalize`` to within one rounding). ``normalize_dtype="float16"``
    or ``"bfloat16"`` stores those values rounded to nearest even, as ``.to(dtype)``
    does (half the memory and bandwidth); numpy has no bfloat16, so that one comes as a
    torch tensor.

    With ``return_info=True`` the result is ``(array, BatchInfo)``.

    Example:
        >>> import io, numpy as np
        >>> from PIL import Image
        >>> buf = io.BytesIO(); Image.new("RGB", (64, 48), "red").save(buf, "PNG")
        >>> batch = decode_batch([buf.getvalue()] * 4, size=(32, 32))
        >>> batch.shape, batch.dtype, batch[0, 0, 0].tolist()
        ((4, 32, 32, 3), dtype('uint8'), [255, 0, 0])
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if truncated not in ("error", "pad"):
        raise ValueError(f"truncated must be 'error' or 'pad', got {truncated!r}")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be at least 1, got {num_threads}")
    if out is not None and not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array (use tensor.numpy() for a torch tensor), got {type(out).__name__}")
    if out is not None and out.dtype != np.uint8:
        raise ValueError(f"out must have dtype uint8, got {out.dtype}")
    chain = as_compose(transform)
    slow = isinstance(chain, Compose) and not chain.fused_only
    if slow and (out is not None or size is not None):
        raise ValueError(
            "out= and size= need a transform the core runs whole; this one runs per sample in Python "
            f"({chain.rest or chain.output}): put a Resize in the transform instead of size="
        )
    ops = chain.ops() if slow else as_ops(chain, size)
    chunks, arrow, missing = _chunks(images)
    pos = None if positions is None else np.ascontiguousarray(positions, dtype=np.uint64)
    gather = None
    if order is not None:
        idx = np.asarray(order)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(f"order must be a one-dimensional sequence of integers, got {idx.dtype} of shape {idx.shape}")
        if idx.size and idx.min() < 0:
            raise IndexError(f"order holds {int(idx.min())}; indices into images must be >= 0")
        gather = np.ascontiguousarray(idx, dtype=np.uint64)
    missing = _output_rows(missing, gather)
    _raise_missing(missing, on_error)
    coefficients = None
    if normalize is not None:
        if slow:
            raise ValueError("normalize= with a transform that ends in its own output steps: give one of them")
        coefficients = _coefficients(normalize, 1 if mode == "L" else 3) + (bool(_channels_last),)
    if normalize_dtype not in _FLOAT_CODES:
        raise ValueError(f"normalize_dtype must be one of {sorted(_FLOAT_CODES)}, got {normalize_dtype!r}")
    if out is None and not slow:
        out, _normalize_out = _pooled_outputs(images, chunks, arrow, gather, size, chain, mode, coefficients, normalize_dtype, _normalize_out)
    pixels, kept, errors, boxes, flipped, vflipped, applied, _ = _core.decode_batch(
        chunks,
        arrow=arrow,
        ops=ops,
        mode=mode,
        num_threads=num_threads,
        out=out,
        skip_errors=on_error == "skip",
        seed=int(seed),
        epoch=int(epoch),
        positions=pos,
        max_pixels=max_pixels,
        dct_scaling=dct_scaling,
        decode_crop=decode_crop,
        order=gather,
        truncated=truncated,
        normalize=coefficients,
        normalize_dtype=_FLOAT_CODES[normalize_dtype],
        normalize_out=_normalize_out,
        pixel_cache=pixel_cache,
    )
    errors = _reword(errors, missing)
    array = out[: len(kept)] if out is not None else pixels
    if out is None and len(kept) == 0:
        # No row to size the batch by: use the size the transform promises.
        h, w, c = _static_shape(size, chain, mode) or (0, 0, 1 if mode == "L" else 3)
        if coefficients is None:
            array = np.zeros((0, h, w, c), np.uint8)
        else:
            array = np.zeros((0, h, w, c) if _channels_last else (0, c, h, w), np.float32 if normalize_dtype == "float32" else np.uint16)
    if coefficients is not None and normalize_dtype != "float32":
        array = _half(array, normalize_dtype)
    if slow:
        array = _finish_slow(array, chain, kept, pos, seed=int(seed), epoch=int(epoch), num_threads=num_threads, first_op=len(ops))
    if return_info:
        return array, BatchInfo(kept=kept, errors=errors, boxes=boxes, flipped=flipped, vflipped=vflipped, applied=applied)
    return array


_BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def boxes_to_xyxy(values: np.ndarray, box_format: str) -> np.ndarray:
    """(n, 4) boxes in ``box_format`` (torchvision's names, lower case) as float64 xyxy.

    Example:
        >>> boxes_to_xyxy(np.array([[10, 20, 5, 5]]), "xywh").tolist()
        [[10.0, 20.0, 15.0, 25.0]]
    """
    b = np.asarray(values, dtype=np.float64).reshape(-1, 4)
    if box_format == "xyxy":
        return b.copy()
    if box_format == "xywh":
        return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    if box_format == "cxcywh":
        return np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1)
    raise ValueError(f"box_format must be one of {_BOX_FORMATS}, got {box_format!r}")


def flat_boxes(boxes: Any, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row boxes as (values (total, 4) float64, offsets (rows + 1,) int64): from an
    Arrow list column (of 4-lists or fixed-size lists; a null row has no box) or a
    sequence of (k, 4) array-likes, or already as (values, offsets).

    Example:
        >>> v, o = flat_boxes([[[0, 0, 1, 1]], [], [[1, 1, 2, 2], [0, 0, 5, 5]]], 3)
        >>> v.shape, o.tolist()
        ((3, 4), [0, 1, 1, 3])
    """
    if isinstance(boxes, tuple) and len(boxes) == 2 and isinstance(boxes[1], np.ndarray) and boxes[1].ndim == 1:
        # Already flat: (values, offsets), as the loader passes them.
        values, offsets = np.asarray(boxes[0], dtype=np.float64).reshape(-1, 4), np.asarray(boxes[1], dtype=np.int64)
        if len(offsets) != rows + 1 or offsets[-1] != len(values):
            raise ValueError(f"boxes offsets must have {rows + 1} entries ending at {len(values)}")
        return values, offsets
    if hasattr(boxes, "combine_chunks") or hasattr(boxes, "flatten"):
        import pyarrow as pa
        import pyarrow.compute as pc

        arr = boxes.combine_chunks() if isinstance(boxes, pa.ChunkedArray) else boxes
        lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        inner = arr.flatten()
        values = inner.flatten().to_numpy(zero_copy_only=False).astype(np.float64) if len(inner) else np.zeros(0)
        if values.size != 4 * int(lengths.sum()):
            raise ValueError("boxes must hold 4 numbers per box")
        per_row = [lengths]
    else:
        items = list(boxes)
        arrays = [np.asarray(b, dtype=np.float64).reshape(-1, 4) if b is not None and len(b) else np.zeros((0, 4)) for b in items]
        per_row = [np.array([len(a) for a in arrays], dtype=np.int64)]
        values = np.concatenate(arrays).reshape(-1) if arrays else np.zeros(0)
    lengths = per_row[0]
    if len(lengths) != rows:
        raise ValueError(f"boxes has {len(lengths)} rows for {rows} images")
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return values.reshape(-1, 4), offsets


def decode_targets(
    images: Images,
    *,
    boxes: Any = None,
    box_format: str = "xyxy",
    masks: Any = None,
    mask_fill: int = 0,
    transform: Any = None,
    mode: str = "RGB",
    num_threads: int | None = None,
    on_error: str = "raise",
    seed: int = 0,
    epoch: int = 0,
    positions: Sequence[int] | np.ndarray | None = None,
    max_pixels: int | None = None,
    order: Sequence[int] | np.ndarray | None = None,
    truncated: str = "error",
    min_area: float | None = None,
    min_size: float | None = None,
    min_visibility: float = 0.0,
    ragged: bool = False,
    return_info: bool = False,
) -> Any:
    """Decode a batch with its boxes and masks following every op of ``transform``.

    Everything :func:`decode_batch` does to a row's pixels (the fused crop, resize and
    flips, then rotation, affine maps, padding, the detection crops) is done to its
    targets with the same parameters:

    - ``boxes``: per row, (k, 4) boxes in source pixels (an Arrow list column such as
      ``lancefeed ingest coco``'s ``boxes``, or a list of arrays), in ``box_format``
      ``"xyxy"``, ``"xywh"`` (COCO) or ``"cxcywh"``. They come out as float32 xyxy in
      output pixels, clamped to the image after every crop, pad and affine map as
      torchvision v2 clamps them; a box is dropped when under ``min_size`` pixels wide
      or high, under ``min_area`` pixels (both default to the chain's
      ``SanitizeBoundingBoxes``, else 1), or with less than ``min_visibility`` of its
      transformed area inside the image (albumentations' ``min_visibility``).
    - ``masks``: per row, an encoded one-channel label mask of the image's size (PNG:
      its stored values, palette indices included), resampled nearest-neighbour at
      pixel centres, never blended; ``mask_fill`` wherever the image is padded or
      filled.

    Returns ``(images, targets)``: images as :func:`decode_batch` gives them, or with
    ``ragged=True`` a list of (H, W, C) arrays at each row's own size (a transform
    whose output size depends on the image); ``targets`` one dict per kept row with
    ``"boxes"`` (float32 (n, 4) xyxy), ``"box_index"`` (int64 (n,): which of the row's
    input boxes each is, for its labels and other per-box values) and ``"mask"``
    (uint8 (H, W)), for the inputs given. With ``return_info=True``, ``(images,
    targets, info)``. Ops that run in Python (the slow path) cannot move boxes and
    masks: such a transform is refused, naming the op.

    Example:
        >>> import io, numpy as np
        >>> from PIL import Image
        >>> buf = io.BytesIO(); Image.new("RGB", (64, 32)).save(buf, "PNG")
        >>> from lancefeed.transforms import Resize, RandomHorizontalFlip
        >>> imgs, t = decode_targets([buf.getvalue()], boxes=[[[0, 0, 16, 8]]],
        ...                          transform=[Resize((16, 32)), RandomHorizontalFlip(1.0)])
        >>> imgs.shape, t[0]["boxes"].tolist(), t[0]["box_index"].tolist()
        ((1, 16, 32, 3), [[24.0, 0.0, 32.0, 4.0]], [0])
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if truncated not in ("error", "pad"):
        raise ValueError(f"truncated must be 'error' or 'pad', got {truncated!r}")
    if not 0 <= int(mask_fill) <= 255:
        raise ValueError(f"mask_fill must be in [0, 255], got {mask_fill!r}")
    chain = as_compose(transform)
    if isinstance(chain, Compose) and chain.rest:
        raise ValueError(
            f"boxes and masks follow the ops lancefeed runs; {_op_names(chain.rest)} would run per sample in Python "
            "and leave them behind: use lancefeed's (or torchvision's fused) ops for the geometry"
        )
    ops = chain.ops() if isinstance(chain, Compose) else as_ops(chain)
    filt_size, filt_area = chain.box_filter if isinstance(chain, Compose) else (1.0, 1.0)
    chunks, arrow, missing = _chunks(images)
    n_rows = sum(len(c) for c in chunks) if arrow else len(chunks)
    box_arg = None
    if boxes is not None:
        values, offsets = flat_boxes(boxes, n_rows)
        box_arg = (np.ascontiguousarray(boxes_to_xyxy(values, box_format).reshape(-1)), offsets)
    mask_chunks = None
    if masks is not None:
        mask_chunks, mask_arrow, mask_missing = _chunks(masks)
        if mask_arrow != arrow:
            raise TypeError("images and masks must both be Arrow arrays or both lists of bytes")
        if mask_missing:
            # A mask is read with its image: its missing file is that row's error.
            missing = {**{k: f"mask {v}" for k, v in mask_missing.items()}, **missing}
    pos = None if positions is None else np.ascontiguousarray(positions, dtype=np.uint64)
    gather = None if order is None else np.ascontiguousarray(order, dtype=np.uint64)
    missing = _output_rows(missing, gather)
    _raise_missing(missing, on_error)
    pixels, kept, errors, crop, flipped, vflipped, applied, extra = _core.decode_batch(
        chunks,
        arrow=arrow,
        ops=ops,
        mode=mode,
        num_threads=num_threads,
        out=None,
        skip_errors=on_error == "skip",
        seed=int(seed),
        epoch=int(epoch),
        positions=pos,
        max_pixels=max_pixels,
        dct_scaling=True,
        decode_crop=True,
        order=gather,
        truncated=truncated,
        boxes=box_arg,
        masks=mask_chunks,
        mask_fill=int(mask_fill),
        box_filter=(
            float(filt_area if min_area is None else min_area),
            float(filt_size if min_size is None else min_size),
            float(min_visibility),
        ),
        # The core's per-row path always (boxes or not); one size is checked below.
        ragged=True,
    )
    errors = _reword(errors, missing)
    shapes, tboxes, counts, index, mask_values = extra
    c = 1 if mode == "L" else 3
    shapes = shapes.reshape(-1, 2)
    sizes = shapes[:, 0].astype(np.int64) * shapes[:, 1]
    ends = np.cumsum(sizes)
    starts = ends - sizes
    if ragged:
        out_images: Any = [pixels[s * c : e * c].reshape(int(h), int(w), c) for s, e, (h, w) in zip(starts, ends, shapes)]
    else:
        differ = np.flatnonzero((shapes != shapes[:1]).any(axis=1)) if len(shapes) else []
        if len(differ):
            k = int(differ[0])
            raise SizeMismatchError(
                f"rows {int(kept[0])} and {int(kept[k])} come out at different sizes "
                f"({shapes[0][0]}x{shapes[0][1]} and {shapes[k][0]}x{shapes[k][1]}); a batch needs one size: "
                "end the transform with a fixed size, or pass ragged=True for a list"
            )
        h, w = (int(shapes[0][0]), int(shapes[0][1])) if len(shapes) else (chain.output_size or (0, 0)) if chain else (0, 0)
        out_images = pixels.reshape(len(kept), h, w, c)
    box_ends = np.cumsum(counts)
    targets: list[dict[str, np.ndarray]] = []
    for k in range(len(kept)):
        t: dict[str, np.ndarray] = {}
        if boxes is not None:
            a, b = int(box_ends[k] - counts[k]), int(box_ends[k])
            t["boxes"] = tboxes[a:b]
            t["box_index"] = index[a:b]
        if mask_values is not None:
            h, w = int(shapes[k][0]), int(shapes[k][1])
            t["mask"] = mask_values[starts[k] : ends[k]].reshape(h, w)
        targets.append(t)
    if isinstance(chain, Compose) and chain.output:
        import torch

        if ragged:
            out_images = [apply_output(torch.from_numpy(x).permute(2, 0, 1)[None], chain.output)[0] for x in out_images]
        else:
            out_images = apply_output(torch.from_numpy(out_images).permute(0, 3, 1, 2), chain.output)
    if return_info:
        info = BatchInfo(kept=kept, errors=errors, boxes=crop, flipped=flipped, vflipped=vflipped, applied=applied)
        return out_images, targets, info
    return out_images, targets


def _op_names(ops: Sequence[Any]) -> str:
    return ", ".join(getattr(o, "__name__", None) or type(o).__name__ for o in ops)
