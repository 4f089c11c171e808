"""Arrow columns of a batch -> what a training loop consumes.

- The label column (strings) -> int64 class indices through a class list; numeric
  labels pass through as int64 (what ``CrossEntropyLoss`` wants).
- Other numeric columns -> one tensor (integers as int64, floats and bools as is);
  a fixed-size list column (an embedding) -> one 2-D tensor.
- List columns (COCO boxes, categories) -> a list with one tensor per row: a list of
  numbers becomes a 1-D tensor, a list of fixed-size lists (or of equal-length lists)
  a 2-D tensor, e.g. ``(n_boxes, 4)``.
- Strings and other binary columns -> Python lists.

Example:
    >>> import pyarrow as pa
    >>> m = ClassMap(["cat", "dog"])
    >>> m.indices(pa.array(["dog", "cat", "dog"])).tolist()
    [1, 0, 1]
"""

from __future__ import annotations

import collections

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

ArrayLike = Union[pa.Array, pa.ChunkedArray]


def is_string_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def is_string_list_type(t: pa.DataType) -> bool:
    """A list of strings per row, as COCO's ``categories``."""
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and is_string_type(t.value_type)


def is_numeric_type(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def read_column(dataset: Any, column: str) -> pa.Table:
    """One scan of ``column`` with its row ids (``_rowid``): what :func:`distinct_labels`
    and :func:`column_by_position` read, so that a loader reads its labels once.

    Example:
        >>> read_column(lance.dataset("cifar.lance"), "label").column_names  # doctest: +SKIP
        ['label', '_rowid']
    """
    return dataset.to_table(columns=[column], with_row_id=True)


def distinct_labels(dataset: Any, column: str, *, table: Optional[pa.Table] = None) -> List[str]:
    """The sorted distinct non-null values of a string column over the whole dataset.

    The whole dataset rather than the loader's rows, so that a train and a validation
    split of one dataset get the same class indices (as torchvision's ``ImageFolder``
    sorts class folder names).

    Example:
        >>> distinct_labels(lance.dataset("cifar.lance"), "label")[:2]  # doctest: +SKIP
        ['airplane', 'automobile']
    """
    values = (dataset.to_table(columns=[column]) if table is None else table).column(column)
    if is_string_list_type(values.type):
        values = pc.list_flatten(values)
    return sorted(pc.unique(values).drop_null().to_pylist())


def column_by_position(
    dataset: Any, row_ids: np.ndarray, column: str, *, table: Optional[pa.Table] = None
) -> Optional[pa.Array]:
    """``column``'s value for each row id, in that order, from one scan (``table``, from
    :func:`read_column`, when already read); ``None`` when a row id is not in the scan
    (then read the column with each batch instead).

    A scan of one small column reads sequentially, where a take per batch reads the
    same bytes row by row: preloading the labels takes them off the hot path.

    Example:
        >>> column_by_position(ds, np.array([3, 1], np.uint64), "label")  # doctest: +SKIP
        <pyarrow.lib.StringArray ...> ["cat", "dog"]
    """
    if table is None:
        table = read_column(dataset, column)
    ids = table.column("_rowid").to_numpy()
    want = np.asarray(row_ids, dtype=np.uint64)
    if len(want) == 0:
        return table.column(column).combine_chunks().slice(0, 0)
    if len(ids) == 0:
        return None
    if len(ids) == len(want) and np.array_equal(ids, want):
        # The whole dataset in storage order (a loader on a URI): no sort to look up.
        return table.column(column).combine_chunks()
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    loc = np.minimum(np.searchsorted(sorted_ids, want), len(ids) - 1)
    if not np.array_equal(sorted_ids[loc], want):
        return None
    return table.column(column).take(pa.array(order[loc])).combine_chunks()


class ClassMap:
    """Maps string labels to their index in ``classes``.

    Example:
        >>> ClassMap(["a", "b"]).class_to_idx
        {'a': 0, 'b': 1}
    """

    def __init__(self, classes: Sequence[str]) -> None:
        classes = list(classes)
        bad = [c for c in classes if not isinstance(c, str)]
        if bad:
            raise TypeError(f"classes must be strings (the label column holds strings), got {bad[:3]!r}")
        dupes = sorted(c for c, n in collections.Counter(classes).items() if n > 1)
        if dupes:
            raise ValueError(f"classes must be distinct; repeated: {dupes[:5]}")
        self.classes = classes
        self.class_to_idx: Dict[str, int] = {c: i for i, c in enumerate(classes)}
        self._value_set = pa.array(classes, type=pa.string())

    def indices(self, labels: ArrayLike, row_ids: Optional[np.ndarray] = None) -> torch.Tensor:
        """int64 class indices of ``labels``; a null or unknown label raises, naming the row."""
        if isinstance(labels, pa.ChunkedArray):
            labels = labels.combine_chunks()
        if not pa.types.is_string(labels.type):
            labels = labels.cast(pa.string())
        idx = pc.index_in(labels, value_set=self._value_set)
        if idx.null_count:
            bad = int(np.flatnonzero(np.asarray(idx.is_null()))[0])
            value = labels[bad].as_py()
            where = f"row {int(row_ids[bad])}" if row_ids is not None else f"item {bad}"
            if value is None:
                raise ValueError(f"{where}: the label is null; every row needs a label")
            shown = ", ".join(self.classes[:10]) + (", ..." if len(self.classes) > 10 else "")
            raise ValueError(
                f"{where}: label {value!r} is not in classes ({len(self.classes)} classes: {shown})"
            )
        return torch.from_numpy(idx.to_numpy(zero_copy_only=False).astype(np.int64))


def collate_column(
    values: ArrayLike, *, class_map: Optional[ClassMap] = None, row_ids: Optional[np.ndarray] = None
) -> Any:
    """Turn one Arrow column of a batch into a tensor or a list (see the module doc).

    Example:
        >>> collate_column(pa.array([[1, 2], [3]])) == [torch.tensor([1, 2]), torch.tensor([3])]  # doctest: +SKIP
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    t = values.type
    if class_map is not None and is_string_list_type(t):
        # One tensor of class indices per row (COCO categories); a bad label names its row.
        offsets = np.asarray(values.offsets)
        flat = values.values.slice(offsets[0], offsets[-1] - offsets[0])
        owner = None if row_ids is None else np.repeat(np.asarray(row_ids), np.diff(offsets))
        idx = class_map.indices(flat, owner) if len(flat) else torch.zeros(0, dtype=torch.int64)
        return list(torch.split(idx, np.diff(offsets).tolist()))
    if class_map is not None:
        return class_map.indices(values, row_ids)
    if is_numeric_type(t):
        return _numeric(values, row_ids)
    if pa.types.is_fixed_size_list(t) and is_numeric_type(t.value_type) and values.null_count == 0:
        return _numeric(values.flatten(), None).reshape(len(values), t.list_size)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _list_of_tensors(values)
    return values.to_pylist()


def _numeric(values: pa.Array, row_ids: Optional[np.ndarray]) -> torch.Tensor:
    t = values.type
    if values.null_count:
        bad = int(np.flatnonzero(np.asarray(values.is_null()))[0])
        where = f"row {int(row_ids[bad])}" if row_ids is not None else f"item {bad}"
        raise ValueError(f"{where}: null in a numeric column; fill or filter nulls before loading")
    arr = values.to_numpy(zero_copy_only=False)
    if pa.types.is_integer(t):
        arr = arr.astype(np.int64, copy=False)
    return torch.from_numpy(_writable(arr))


def _list_of_tensors(values: pa.Array) -> List[Any]:
    inner = values.type.value_type
    offsets = np.asarray(values.offsets)
    start = offsets[0]
    flat = values.values.slice(start, offsets[-1] - start)
    cuts = (offsets - start)[1:-1]
    if is_numeric_type(inner) and flat.null_count == 0:
        parts = np.split(_writable(_to_numpy(flat)), cuts)
        out: List[Any] = [torch.from_numpy(p) for p in parts]
    elif pa.types.is_fixed_size_list(inner) and is_numeric_type(inner.value_type) and flat.null_count == 0:
        mat = _to_numpy(flat.flatten()).reshape(len(flat), inner.list_size)
        out = [torch.from_numpy(p) for p in np.split(_writable(mat), cuts)]
    elif (pa.types.is_list(inner) or pa.types.is_large_list(inner)) and is_numeric_type(inner.value_type):
        out = [_rows_to_tensor(row) for row in values.to_pylist()]
    else:
        return values.to_pylist()
    # Null rows of the outer list read as empty lists above; say None as Arrow does.
    if values.null_count:
        nulls = np.asarray(values.is_null())
        out = [None if nulls[i] else x for i, x in enumerate(out)]
    return out


def _writable(arr: np.ndarray) -> np.ndarray:
    # Arrow hands out read-only views; torch tensors over them would warn (and must not
    # be written). A copy of a label column costs nothing next to the images.
    return np.require(arr, requirements=["C", "W"])


def _to_numpy(a: pa.Array) -> np.ndarray:
    arr = a.to_numpy(zero_copy_only=False)
    return arr.astype(np.int64, copy=False) if pa.types.is_integer(a.type) else arr


def _rows_to_tensor(rows: Optional[List[Any]]) -> Any:
    if rows is None:
        return None
    lengths = {len(r) for r in rows if r is not None}
    if len(lengths) <= 1 and all(r is not None for r in rows):
        width = lengths.pop() if lengths else 0
        return torch.tensor(rows).reshape(len(rows), width)
    return [None if r is None else torch.tensor(r) for r in rows]


def resolve_classes(perm: Any, label_column: Optional[str], classes: Any) -> Tuple[Dict[str, ClassMap], Optional[List[str]], Optional[pa.Table]]:
    """The class maps of a loader's label column (string labels to indices: ``classes``
    as given, or ``"auto"``/None for the dataset's sorted distinct labels), the class
    list, and the label column's one scan when it was read for them (for the labels too).

    Example:
        >>> resolve_classes(perm, "label", "auto")[1]  # doctest: +SKIP
        ['airplane', 'automobile', ...]
    """
    class_maps: Dict[str, ClassMap] = {}
    if label_column is None:
        return class_maps, None, None
    ltype = perm.schema.field(label_column).type
    table = None
    if is_string_type(ltype) or is_string_list_type(ltype):
        if classes is None or (isinstance(classes, str) and classes == "auto"):
            table = read_column(perm.dataset, label_column)
            names = distinct_labels(perm.dataset, label_column, table=table)
        elif isinstance(classes, str):
            raise ValueError(f"classes must be a list of class names or 'auto', got {classes!r}")
        else:
            names = list(classes)
        class_maps[label_column] = ClassMap(names)
        return class_maps, class_maps[label_column].classes, table
    if classes is not None:
        raise ValueError(
            f"classes= maps string labels to indices, but column {label_column!r} is {ltype}; "
            "numeric labels pass through as they are: leave classes=None"
        )
    return class_maps, None, None


def preloadable(perm: Any, label_column: Optional[str]) -> List[str]:
    """The columns :func:`preload_labels` will most likely read whole (a number or
    string label column): a reader made before them leaves them out of its takes."""
    if label_column is None:
        return []
    ltype = perm.schema.field(label_column).type
    return [label_column] if is_numeric_type(ltype) or is_string_type(ltype) else []


def preload_labels(perm: Any, label_column: Optional[str], class_maps: Dict[str, ClassMap],
                   table: Optional[pa.Table] = None) -> Dict[str, torch.Tensor]:
    """The label of every position as one int64 tensor, checked now (a label missing
    from ``classes`` fails at construction, naming its row), or nothing when the labels
    cannot be scanned (then each batch takes them with its images). ``table``: the
    column already scanned (:func:`read_column`)."""
    if label_column is None:
        return {}
    ltype = perm.schema.field(label_column).type
    if not (is_numeric_type(ltype) or (is_string_type(ltype) and label_column in class_maps)):
        return {}  # lists of labels (COCO categories) are read with each batch
    values = column_by_position(perm.dataset, perm.row_ids, label_column, table=table)
    if values is None:
        return {}
    return {label_column: collate_column(values, class_map=class_maps.get(label_column), row_ids=perm.row_ids)}
