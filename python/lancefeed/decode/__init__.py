"""Batch decode: encoded image bytes in, one contiguous uint8 NHWC array out.

:func:`decode_batch` and :func:`decode_targets` plan the transform
(:class:`lancefeed.transforms.plan.TransformPlan`) and check the options once, then go
through :mod:`lancefeed.decode.core`, the one way into the core, which the loader
takes too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np

from lancefeed import _core
from lancefeed.boxes import boxes_to_xyxy, flat_boxes
from lancefeed.decode.core import BatchInfo, DecodeOptions, TargetOptions, decode_images, decode_with_targets
from lancefeed.transforms.base import Size
from lancefeed.transforms.plan import TransformPlan

if TYPE_CHECKING:
    import pyarrow as pa

    Images = Union[pa.Array, pa.ChunkedArray, Sequence[Union[bytes, None]]]

__all__ = ["BatchInfo", "boxes_to_xyxy", "decode_batch", "decode_targets", "flat_boxes"]


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
    opts = DecodeOptions(
        mode=mode, num_threads=num_threads, on_error=on_error, seed=seed, epoch=epoch, positions=positions, order=order,
        max_pixels=max_pixels, dct_scaling=dct_scaling, decode_crop=decode_crop, truncated=truncated, normalize=normalize,
        normalize_dtype=normalize_dtype, out=out, pixel_cache=pixel_cache,
    ).checked()
    plan = TransformPlan.of(transform, size)
    array, info = decode_images(images, plan, opts)
    if not plan.runs_in_core and hasattr(array, "contiguous") and str(array.dtype) != "torch.bfloat16":
        array = array.contiguous().numpy()  # numpy has no bfloat16: that one stays a tensor
    return (array, info) if return_info else array


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
    targets, info)``. Ops that run in Python (the slow path) get the targets too:
    torchvision v2 ops as ``tv_tensors`` (they move them), albumentations pipelines as
    albumentations takes them (``bboxes``, ``mask``, its ``label_fields``); any other op
    gets the image alone and must keep its size (else a ``TransformError`` names it).

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
    opts = DecodeOptions(
        mode=mode, num_threads=num_threads, on_error=on_error, seed=seed, epoch=epoch, positions=positions, order=order,
        max_pixels=max_pixels, truncated=truncated,
    ).checked()
    targets = TargetOptions(boxes=boxes, box_format=box_format, masks=masks, mask_fill=mask_fill, min_area=min_area,
                            min_size=min_size, min_visibility=min_visibility, ragged=ragged).checked()
    out_images, rows, info = decode_with_targets(images, TransformPlan.of(transform), opts, targets)
    return (out_images, rows, info) if return_info else (out_images, rows)
