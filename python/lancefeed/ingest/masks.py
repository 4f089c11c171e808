"""Rasterise COCO segmentations into label masks and write them as PNG.

A COCO ``segmentation`` is either polygons (``[[x1, y1, x2, y2, ...], ...]``), an
uncompressed RLE (``{"counts": [ints], "size": [h, w]}``) or a compressed RLE
(``{"counts": "string", "size": [h, w]}``). :func:`rasterise` turns any of them into
an ``(h, w)`` boolean array; :func:`label_mask` paints a whole image's annotations
into one ``uint8`` array of category ids; :func:`encode_png` writes that as an
8-bit grayscale PNG with nothing but ``zlib`` (no Pillow needed).

Polygons go through pycocotools when it is importable, so masks match COCO's own
tooling; otherwise a numpy scanline fill is used (a pixel is inside when its centre,
at ``(x + 0.5, y + 0.5)``, is; pycocotools differs from it on edge pixels only).
RLEs are always decoded here: decoding is exact, so both give the same pixels, and
pycocotools does not check that the counts fit the mask (too large counts write past
its buffer).

Example:
    >>> import numpy as np
    >>> m = rasterise([[1, 1, 4, 1, 4, 3, 1, 3]], height=4, width=5)
    >>> m.astype(int)
    array([[0, 0, 0, 0, 0],
           [0, 1, 1, 1, 0],
           [0, 1, 1, 1, 0],
           [0, 0, 0, 0, 0]])
    >>> # counts run down the columns (Fortran order): one 0, two 1s, three 0s
    >>> rasterise({"counts": [1, 2, 3], "size": [2, 3]}, height=2, width=3).astype(int)
    array([[0, 1, 0],
           [1, 0, 0]])
    >>> encode_png(np.zeros((2, 3), np.uint8))[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["POLYGONS", "decode_rle_string", "encode_png", "fill_polygon", "label_mask", "rasterise"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

try:  # pycocotools is optional: COCO's reference rasteriser for polygons.
    from pycocotools import mask as _coco_mask
except ImportError:  # pragma: no cover - depends on the environment
    _coco_mask = None

# Which rasteriser fills polygons: "pycocotools" where it is importable, else "numpy"
# (:func:`fill_polygon`); set to "numpy" to use the fallback anyway.
POLYGONS = "pycocotools" if _coco_mask is not None else "numpy"


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def encode_png(gray: np.ndarray, level: int = 6) -> bytes:
    """Encode an ``(h, w)`` ``uint8`` array as an 8-bit grayscale PNG.

    Every row uses filter 0 (none): label masks are long runs of one value, which
    zlib compresses well without a predictor.

    Example:
        >>> png = encode_png(np.full((2, 3), 7, np.uint8))
        >>> png[12:16], struct.unpack(">II", png[16:24])
        (b'IHDR', (3, 2))
    """
    a = np.asarray(gray)
    if a.ndim != 2 or a.dtype != np.uint8 or 0 in a.shape:
        raise ValueError(f"expected a non-empty (h, w) uint8 array; got shape {a.shape}, dtype {a.dtype}")
    h, w = a.shape
    raw = np.zeros((h, w + 1), np.uint8)  # column 0: each row's filter byte (0)
    raw[:, 1:] = a
    # IHDR: width, height, bit depth 8, colour type 0 (gray), compression, filter, interlace.
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw.tobytes(), level))
        + _chunk(b"IEND", b"")
    )


def decode_rle_string(counts: str | bytes) -> list[int]:
    """Decode COCO's compressed RLE string into run lengths (its ``rleFrString``).

    Each count is written in 5-bit groups, least significant first, as characters
    ``48 + group`` with bit 0x20 meaning "more groups follow" and bit 0x10 of the last
    group the sign; from the fourth count on, the value is a difference to the count
    two places before.

    Example:
        >>> decode_rle_string("123")
        [1, 2, 3]
    """
    text = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    out: list[int] = []
    value = shift = 0
    for ch in text:
        c = ch - 48
        if not 0 <= c < 64:
            raise ValueError(f"compressed RLE has the character {chr(ch)!r}; expected '0'..'o'")
        value |= (c & 0x1F) << shift
        shift += 5
        if c & 0x20:
            continue
        if c & 0x10:
            value -= 1 << shift  # sign-extend the last group
        if len(out) > 2:
            value += out[-2]
        out.append(value)
        value = shift = 0
    if shift:
        raise ValueError("compressed RLE ends in the middle of a count")
    return out


def _decode_rle(counts: Sequence[int], height: int, width: int) -> np.ndarray:
    """Runs of 0, 1, 0, ... in column-major (Fortran) order, as COCO stores them."""
    runs = np.asarray(counts, dtype=np.int64)
    if runs.ndim != 1 or (runs < 0).any():
        raise ValueError("RLE counts must be non-negative integers")
    if int(runs.sum()) != height * width:
        raise ValueError(f"RLE counts sum to {int(runs.sum())}; expected {height}*{width} = {height * width}")
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape(width, height).T


def fill_polygon(xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scanline fill (even-odd rule) of one polygon, testing pixel centres.

    Each row's centre line ``y + 0.5`` crosses an edge when it lies in the edge's
    half-open ``[y_low, y_high)`` span, so a vertex is counted once and every row has
    an even number of crossings; consecutive crossings bound the inside spans, and a
    column is inside a span ``[xa, xb)`` when its centre ``x + 0.5`` is.
    """
    x0, y0 = xy[:, 0], xy[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
    first = np.clip(np.ceil(lo - 0.5), 0, height).astype(np.int64)  # first row with centre >= lo
    stop = np.clip(np.ceil(hi - 0.5), 0, height).astype(np.int64)  # rows with centre < hi
    n = np.maximum(stop - first, 0)
    edge = np.repeat(np.arange(len(xy)), n)
    rows = np.repeat(first, n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
    yc = rows + 0.5
    xs = x0[edge] + (yc - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    order = np.lexsort((xs, rows))
    rows, xs = rows[order], xs[order]
    cols = np.clip(np.ceil(xs - 0.5), 0, width).astype(np.int64)
    diff = np.zeros((height, width + 1), np.int32)
    np.add.at(diff, (rows[0::2], cols[0::2]), 1)
    np.add.at(diff, (rows[1::2], cols[1::2]), -1)
    return np.cumsum(diff[:, :width], axis=1) > 0


def _polygons(seg: list[Any]) -> list[np.ndarray]:
    polys = []
    for poly in seg:
        xy = np.asarray(poly, dtype=np.float64)
        if xy.ndim != 1 or len(xy) % 2:
            raise ValueError("a polygon must be a flat list [x1, y1, x2, y2, ...] of an even length")
        if len(xy) >= 6:  # fewer than 3 points enclose nothing
            polys.append(xy.reshape(-1, 2))
    return polys


def _rasterise_polygons(seg: list[Any], height: int, width: int) -> np.ndarray:
    polys = _polygons(seg)
    if not polys:
        return np.zeros((height, width), bool)
    if POLYGONS == "pycocotools" and _coco_mask is not None:
        # Only polygons of 3+ points reach here: frPyObjects takes a 4-number list for a box.
        rle = _coco_mask.merge(_coco_mask.frPyObjects([p.ravel().tolist() for p in polys], height, width))
        # Its RLE is decoded here, exactly as pycocotools' decode would: that one warns
        # (a DeprecationWarning on every call) under numpy 2.
        return _decode_rle(decode_rle_string(rle["counts"]), height, width)
    out = np.zeros((height, width), bool)
    for xy in polys:
        out |= fill_polygon(xy, height, width)
    return out


def rasterise(segmentation: Any, height: int, width: int) -> np.ndarray:
    """The ``(height, width)`` boolean mask of one COCO ``segmentation``.

    Several polygons of one annotation are united. An RLE's ``size`` must equal
    ``[height, width]``; a malformed segmentation raises ``ValueError`` saying why.

    Example:
        >>> rasterise({"counts": "123", "size": [2, 3]}, 2, 3).astype(int)
        array([[0, 1, 0],
               [1, 0, 0]])
    """
    if isinstance(segmentation, list):
        return _rasterise_polygons(segmentation, height, width)
    if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
        raise ValueError(
            "segmentation must be a list of polygons or an RLE {'counts': ..., 'size': [h, w]}; "
            f"got {type(segmentation).__name__}"
        )
    size = [int(v) for v in segmentation["size"]]
    if size != [height, width]:
        raise ValueError(f"RLE size {size} differs from the image's [height, width] = [{height}, {width}]")
    counts = segmentation["counts"]
    if isinstance(counts, (str, bytes)):
        counts = decode_rle_string(counts)
    return _decode_rle(counts, height, width)


def label_mask(annotations: Iterable[tuple[Any, int, Any]], height: int, width: int) -> np.ndarray:
    """Paint ``(name, category_id, segmentation)`` triples, in order, into a ``uint8`` mask.

    0 is background; where annotations overlap the later one wins. A ``None``
    segmentation paints nothing. Category ids must fit in 0..255. ``name`` (e.g. the
    annotation's id) only serves error messages.

    Example:
        >>> label_mask([(1, 3, [[0, 0, 2, 0, 2, 2, 0, 2]]), (2, 9, {"counts": [3, 1, 2], "size": [2, 3]})],
        ...            height=2, width=3)
        array([[3, 3, 0],
               [3, 9, 0]], dtype=uint8)
    """
    out = np.zeros((height, width), np.uint8)
    for name, category_id, seg in annotations:
        if seg is None:
            continue
        if not 0 <= category_id <= 255:
            raise ValueError(
                f"annotation {name}: category_id {category_id} does not fit in an 8-bit mask (0..255)"
            )
        try:
            out[rasterise(seg, height, width)] = category_id
        except (ValueError, TypeError) as exc:
            raise ValueError(f"annotation {name}: bad segmentation ({exc})") from None
    return out
