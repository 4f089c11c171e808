"""Boxes as the decode core takes them: per-row lists in any of torchvision's formats,
flattened to xyxy values and row offsets.

Example:
    >>> values, offsets = flat_boxes([[[10, 20, 5, 5]], []], 2)
    >>> boxes_to_xyxy(values, "xywh").tolist(), offsets.tolist()
    ([[10.0, 20.0, 15.0, 25.0]], [0, 1, 1])
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ALBUMENTATIONS_FORMATS", "BOX_FORMATS", "albumentations_to_xyxy", "boxes_to_xyxy", "flat_boxes", "xyxy_to_albumentations"]

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


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
    raise ValueError(f"box_format must be one of {BOX_FORMATS}, got {box_format!r}")


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


# albumentations' box formats (``A.BboxParams(format=...)``).
ALBUMENTATIONS_FORMATS = ("pascal_voc", "coco", "yolo", "albumentations")


def xyxy_to_albumentations(xyxy: np.ndarray, fmt: str, width: int, height: int) -> np.ndarray:
    """(n, 4) xyxy pixel boxes in albumentations' format ``fmt`` for a ``width`` x
    ``height`` image: pascal_voc (xyxy pixels), coco (xywh pixels), yolo (centre and
    size, normalised), albumentations (xyxy normalised). float32, as albumentations keeps them.

    Example:
        >>> xyxy_to_albumentations(np.array([[10, 20, 30, 60]]), "yolo", 100, 100).tolist()
        [[0.20000000298023224, 0.4000000059604645, 0.20000000298023224, 0.4000000059604645]]
    """
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    if fmt == "pascal_voc":
        out = b
    elif fmt == "coco":
        out = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
    elif fmt == "yolo":
        size = np.array([width, height], dtype=np.float64)
        out = np.concatenate([(b[:, :2] + b[:, 2:]) / 2 / size, (b[:, 2:] - b[:, :2]) / size], axis=1)
    elif fmt == "albumentations":
        out = b / np.array([width, height, width, height], dtype=np.float64)
    else:
        raise ValueError(f"box format must be one of {ALBUMENTATIONS_FORMATS}, got {fmt!r}")
    return out.astype(np.float32)


def albumentations_to_xyxy(boxes: np.ndarray, fmt: str, width: int, height: int) -> np.ndarray:
    """The inverse of :func:`xyxy_to_albumentations`: float32 (n, 4) xyxy pixels.

    Example:
        >>> albumentations_to_xyxy(np.array([[10, 20, 20, 40]]), "coco", 100, 100).tolist()
        [[10.0, 20.0, 30.0, 60.0]]
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if fmt == "pascal_voc":
        out = b
    elif fmt == "coco":
        out = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    elif fmt == "yolo":
        size = np.array([width, height], dtype=np.float64)
        out = np.concatenate([(b[:, :2] - b[:, 2:] / 2) * size, (b[:, :2] + b[:, 2:] / 2) * size], axis=1)
    elif fmt == "albumentations":
        out = b * np.array([width, height, width, height], dtype=np.float64)
    else:
        raise ValueError(f"box format must be one of {ALBUMENTATIONS_FORMATS}, got {fmt!r}")
    return out.astype(np.float32)
