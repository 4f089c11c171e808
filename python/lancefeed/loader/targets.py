"""Detection and segmentation targets for the loader: which column is which, the class
selection, and each batch's boxes, per-box values and masks after the transforms.

A dataset written by ``lancefeed ingest coco`` has ``boxes`` (COCO ``[x, y, w, h]``),
``categories`` (names), ``category_ids``, ``iscrowd``, ``area`` and ``annotation_ids``
per box, and ``mask`` when ingested with masks. ``targets={"boxes": "xywh",
"categories": "labels"}`` says: the ``boxes`` column holds xywh boxes, the
``categories`` column is a per-box column handed out as ``labels``. A mask column gets
the role ``"mask"``.

Example:
    >>> spec = TargetSpec.resolve({"boxes": "xywh", "categories": "labels"}, ["image", "boxes", "categories"])
    >>> spec.box_column, spec.box_format, spec.per_box
    ('boxes', 'xywh', {'categories': 'labels'})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from lancefeed.boxes import BOX_FORMATS

__all__ = ["ClassSelection", "TargetConfig", "TargetSpec", "assemble", "drop_empty", "select_boxes", "target_config"]

_DEFAULT_ROLES = (("categories", "labels"), ("category_ids", "labels"))


@dataclass
class TargetSpec:
    """Which column holds what: the box column and its format, the per-box columns and
    the names they are handed out under, the mask column."""

    box_column: Optional[str] = None
    box_format: str = "xywh"
    per_box: Dict[str, str] = field(default_factory=dict)
    mask_column: Optional[str] = None

    @property
    def columns(self) -> List[str]:
        """The columns a batch reads besides the image, in order."""
        out = [self.box_column] if self.box_column else []
        return out + list(self.per_box) + ([self.mask_column] if self.mask_column else [])

    @property
    def roles(self) -> List[str]:
        """What a batch hands out, in order: ``boxes``, the per-box names, ``mask``."""
        out = ["boxes"] if self.box_column else []
        return out + list(self.per_box.values()) + (["mask"] if self.mask_column else [])

    @property
    def labels_column(self) -> Optional[str]:
        return next((c for c, role in self.per_box.items() if role == "labels"), None)

    def with_per_box(self, names: Sequence[str], available: Sequence[str]) -> "TargetSpec":
        """This spec with the columns among ``names`` (albumentations' ``label_fields``)
        handed out under their own names, where they are columns not yet read; other
        names stay albumentations' own (each box's values follow it by its index).

        Example:
            >>> TargetSpec("boxes", "xyxy", {"categories": "labels"}).with_per_box(["categories", "ids", "x"], ["boxes", "categories", "ids"]).roles
            ['boxes', 'labels', 'ids']
        """
        taken = {self.box_column, self.mask_column, *self.per_box}
        extra = {n: n for n in names if n in available and n not in taken}
        if not extra or self.box_column is None:
            return self
        return TargetSpec(self.box_column, self.box_format, {**self.per_box, **extra}, self.mask_column)

    @classmethod
    def resolve(cls, targets: Optional[Mapping[str, str]], available: Sequence[str]) -> "TargetSpec":
        """``targets`` checked against the dataset's columns, or (None) the defaults of a
        ``lancefeed ingest coco`` dataset: ``boxes`` (xywh), ``categories`` (or else
        ``category_ids``) as ``labels``, and ``mask`` when there is one.

        Example:
            >>> TargetSpec.resolve(None, ["image", "boxes", "categories", "mask"]).roles
            ['boxes', 'labels', 'mask']
        """
        if targets is None:
            spec = cls(box_column="boxes" if "boxes" in available else None)
            for column, role in _DEFAULT_ROLES:
                if column in available and spec.box_column and "labels" not in spec.per_box.values():
                    spec.per_box[column] = role
            spec.mask_column = "mask" if "mask" in available else None
            if spec.box_column is None and spec.mask_column is None:
                raise ValueError(
                    f"no box or mask column to hand out as targets (columns {list(available)}): "
                    "say which with targets={'<box column>': 'xywh' or 'xyxy', '<label column>': 'labels'}"
                )
            return spec
        if not isinstance(targets, Mapping):
            raise TypeError(f"targets must be a dict of column -> role, got {targets!r}")
        spec = cls()
        for column, role in targets.items():
            if column not in available:
                raise ValueError(f"targets names column {column!r}, which is not in the dataset; available: {list(available)}")
            if role in BOX_FORMATS:
                if spec.box_column is not None:
                    raise ValueError(f"targets has two box columns, {spec.box_column!r} and {column!r}")
                spec.box_column, spec.box_format = column, role
            elif role == "mask":
                if spec.mask_column is not None:
                    raise ValueError(f"targets has two mask columns, {spec.mask_column!r} and {column!r}")
                spec.mask_column = column
            elif isinstance(role, str) and role and role not in ("boxes",):
                spec.per_box[column] = role
            else:
                raise ValueError(
                    f"targets[{column!r}] is {role!r}: a box format ({', '.join(BOX_FORMATS)}), 'mask', "
                    "or the name a per-box column is handed out under (such as 'labels')"
                )
        if spec.per_box and spec.box_column is None:
            raise ValueError(f"per-box columns {list(spec.per_box)} need a box column in targets (e.g. 'boxes': 'xywh')")
        return spec


class ClassSelection:
    """``classes`` on a per-box label column: labels (names or ids) in ``classes`` map to
    their index there, the others' boxes are dropped; without ``classes`` string labels
    map to the sorted distinct labels (``auto``) and numbers pass through.

    Example:
        >>> sel = ClassSelection(["car", "bus"])
        >>> sel.indices(pa.array(["bus", "dog", "car"])).tolist()
        [1, -1, 0]
    """

    def __init__(self, classes: Optional[Sequence[Any]], names: Optional[Sequence[str]] = None) -> None:
        self.classes: Optional[List[Any]] = list(classes) if classes is not None else (list(names) if names is not None else None)
        self.selects = classes is not None
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes has repeated entries: {self.classes}")

    def indices(self, values: pa.Array) -> np.ndarray:
        """Each label's class index, -1 for labels outside the classes (dropped)."""
        if self.classes is None:
            return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.int64)
        idx = pc.index_in(values, value_set=pa.array(self.classes, type=values.type))
        return np.asarray(pc.fill_null(idx, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _flat(column: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """A list column's values and its offsets from 0 (a null list is empty)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    lengths = np.asarray(pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return column.flatten(), offsets


@dataclass
class Selected:
    """A take's boxes after the class selection: values (n, 4) and offsets per row,
    where each box came from (its flat index in the take), its class index."""

    values: np.ndarray
    offsets: np.ndarray
    source: np.ndarray
    labels: Optional[np.ndarray]


def select_boxes(rows: pa.RecordBatch, spec: TargetSpec, selection: Optional[ClassSelection], row_ids: np.ndarray) -> Selected:
    """The boxes of each row of ``rows`` whose label is selected (all without a label
    column), checking that every per-box column has one value per box.

    Example:
        >>> rb = pa.record_batch({"b": [[[0.0, 0, 1, 1], [1.0, 1, 2, 2]]], "c": [["car", "dog"]]})
        >>> s = select_boxes(rb, TargetSpec("b", "xyxy", {"c": "labels"}), ClassSelection(["car"]), np.array([7]))
        >>> s.offsets.tolist(), s.source.tolist(), s.labels.tolist()
        ([0, 1], [0], [0])
    """
    boxes, offsets = _flat(rows.column(spec.box_column))
    values = np.asarray(boxes.flatten().to_numpy(zero_copy_only=False), dtype=np.float64).reshape(-1, 4) if len(boxes) else np.zeros((0, 4))
    for column in spec.per_box:
        _, other = _flat(rows.column(column))
        bad = np.flatnonzero(np.diff(other) != np.diff(offsets))
        if bad.size:
            r = int(bad[0])
            raise ValueError(
                f"row {int(row_ids[r])}: column {column!r} has {int(other[r + 1] - other[r])} values for "
                f"{int(offsets[r + 1] - offsets[r])} boxes in {spec.box_column!r}; per-box columns need one value per box"
            )
    labels = None
    keep = np.ones(len(values), dtype=bool)
    label_column = spec.labels_column
    if label_column is not None and selection is not None:
        labels = selection.indices(_flat(rows.column(label_column))[0])
        keep = labels >= 0
    source = np.flatnonzero(keep)
    counts = np.add.reduceat(keep.astype(np.int64), offsets[:-1]) if len(keep) else np.zeros(len(offsets) - 1, np.int64)
    counts[np.diff(offsets) == 0] = 0  # reduceat repeats the next value for an empty row
    new_offsets = np.zeros_like(offsets)
    np.cumsum(counts, out=new_offsets[1:])
    return Selected(values[source], new_offsets, source, None if labels is None else labels[source])


def assemble(rows: pa.RecordBatch, spec: TargetSpec, sel: Optional[Selected], order: np.ndarray,
             targets: List[Dict[str, np.ndarray]], kept: np.ndarray) -> Dict[str, List[Any]]:
    """Per kept row, each role's value: ``boxes`` float32 (n, 4) xyxy, per-box values
    (labels as int64 class indices; numbers as tensors; strings as lists), ``mask``.

    Example:
        >>> rb = pa.record_batch({"b": [[[0.0, 0, 1, 1]]], "c": [["car"]]})
        >>> spec = TargetSpec("b", "xyxy", {"c": "labels"})
        >>> sel = select_boxes(rb, spec, ClassSelection(["car"]), np.array([0]))
        >>> t = [{"boxes": np.array([[0, 0, 2, 2]], np.float32), "box_index": np.array([0])}]
        >>> out = assemble(rb, spec, sel, np.array([0]), t, np.array([0]))
        >>> out["labels"][0].tolist(), out["boxes"][0].shape
        ([0], torch.Size([1, 4]))
    """
    out: Dict[str, List[Any]] = {role: [] for role in spec.roles}
    flat: Dict[str, Union[np.ndarray, List[Any]]] = {}
    for column, role in spec.per_box.items():
        if role == "labels" and sel is not None and sel.labels is not None:
            flat[column] = sel.labels
            continue
        values, _ = _flat(rows.column(column))
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            flat[column] = values.to_pylist()
        else:
            flat[column] = np.asarray(values.to_numpy(zero_copy_only=False))
    for k, t in enumerate(targets):
        if spec.box_column is not None and sel is not None:
            r = int(order[int(kept[k])])
            where = sel.source[sel.offsets[r] + t["box_index"]] if len(t["box_index"]) else np.zeros(0, np.int64)
            out["boxes"].append(torch.from_numpy(np.ascontiguousarray(t["boxes"])))
            for column, role in spec.per_box.items():
                values = flat[column]
                if role == "labels" and sel.labels is not None:
                    picked = sel.labels[sel.offsets[r] + t["box_index"]] if len(t["box_index"]) else np.zeros(0, np.int64)
                    out[role].append(torch.from_numpy(np.ascontiguousarray(picked, dtype=np.int64)))
                elif isinstance(values, list):
                    out[role].append([values[int(i)] for i in where])
                else:
                    out[role].append(torch.from_numpy(np.ascontiguousarray(values[where])))
        if spec.mask_column is not None:
            out["mask"].append(torch.from_numpy(t["mask"]))
    return out


@dataclass
class TargetConfig:
    """What the loader does with targets (see ``DataLoader(targets=)``)."""

    spec: TargetSpec
    selection: Optional[ClassSelection]
    detection: bool
    mask_fill: int = 0
    min_area: Optional[float] = None
    min_visibility: float = 0.0


def target_config(perm: Any, spec: TargetSpec, classes: Any, detection: bool, mask_fill: int,
                  min_area: Optional[float], min_visibility: float) -> TargetConfig:
    """The loader's targets: the class selection on the per-box labels column
    (``classes``: keep those labels' boxes, as indices in that order; else names map to
    the sorted distinct labels of the dataset and numbers pass through).

    Example:
        >>> target_config(perm, spec, ["car"], True, 0, None, 0.0).selection.classes  # doctest: +SKIP
        ['car']
    """
    from lancefeed.loader.labels import distinct_labels, is_string_list_type

    selection = None
    labels = spec.labels_column
    if labels is not None:
        ltype = perm.schema.field(labels).type
        if isinstance(classes, str) and classes != "auto":
            raise ValueError(f"classes must be a list of labels or 'auto', got {classes!r}")
        chosen = None if classes is None or isinstance(classes, str) else list(classes)
        if is_string_list_type(ltype):
            names = None if chosen is not None else distinct_labels(perm.dataset, labels)
            selection = ClassSelection(chosen, names)
        else:
            selection = ClassSelection(chosen)
    elif classes is not None:
        raise ValueError(f"classes= selects boxes by a per-box labels column; targets {spec.per_box} name none as 'labels'")
    if not 0.0 <= min_visibility <= 1.0:
        raise ValueError(f"min_visibility must be in [0, 1], got {min_visibility}")
    if not 0 <= int(mask_fill) <= 255:
        raise ValueError(f"mask_fill must be in [0, 255], got {mask_fill}")
    return TargetConfig(spec, selection, detection, int(mask_fill), min_area, float(min_visibility))


def drop_empty(perm: Any, spec: TargetSpec, selection: Optional[ClassSelection]) -> Any:
    """``perm`` without the rows left with no box (after the class selection), read once
    now so that every epoch, rank and resume counts only the rows it will hand out.

    Example:
        >>> len(drop_empty(perm, spec, None)) <= len(perm)  # doctest: +SKIP
        True
    """
    from lancefeed.loader.labels import column_by_position

    column = spec.labels_column if selection is not None and selection.selects else spec.box_column
    if column is None:
        raise ValueError("drop_empty=True needs a box column in targets")
    values = column_by_position(perm.dataset, perm.row_ids, column)
    if values is None:
        values = perm.take_positions(np.arange(len(perm))).column(column) if len(perm) else None
    if values is None or len(values) == 0:
        return perm
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    lengths = np.asarray(pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False))
    if column == spec.box_column:
        keep = lengths > 0
    else:
        assert selection is not None
        flat = selection.indices(values.flatten()) >= 0
        owner = np.repeat(np.arange(len(lengths)), lengths)
        keep = np.bincount(owner[flat], minlength=len(lengths)) > 0
    return perm.with_row_ids(perm.row_ids[keep])
