"""What a :class:`~lancefeed.permutation.Permutation` hands out: lancedb's formats.

Each format is a module-level function of one ``pyarrow.RecordBatch`` (functions, not
lambdas, so a permutation pickles into spawned DataLoader workers). The names and the
shapes are lancedb 0.40's ``Permutation.with_format`` ones, read from its source:

=============  ==========================================================================
``python``     list of row dicts (the default; torch's default collate stacks it)
``python_col`` dict of lists, one per column
``numpy``      2-D numpy array, rows x columns (``batch.to_pandas().to_numpy()``)
``pandas``     ``pandas.DataFrame``
``arrow``      ``pyarrow.RecordBatch``
``torch``      list of row dicts of 0-D tensors (torch's default collate stacks it)
``torch_row``  list of 1-D tensors, one per row (the row's columns)
``torch_col``  2-D tensor, first dimension the columns
``polars``     ``polars.DataFrame``
=============  ==========================================================================

Example:
    >>> import pyarrow as pa
    >>> batch = pa.record_batch({"id": [1, 2], "x": [0.5, 1.5]})
    >>> FORMATS["python"](batch)
    [{'id': 1, 'x': 0.5}, {'id': 2, 'x': 1.5}]
    >>> FORMATS["python_col"](batch)
    {'id': [1, 2], 'x': [0.5, 1.5]}
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import numpy as np
import pyarrow as pa

__all__ = ["FORMATS", "format_fn"]


def to_python(batch: pa.RecordBatch) -> List[Dict[str, Any]]:
    """lancedb's ``"python"``: one dict per row.

    Example:
        >>> to_python(pa.record_batch({"a": [1]}))
        [{'a': 1}]
    """
    return batch.to_pylist()


def to_python_col(batch: pa.RecordBatch) -> Dict[str, List[Any]]:
    """lancedb's ``"python_col"``: one list per column.

    Example:
        >>> to_python_col(pa.record_batch({"a": [1, 2]}))
        {'a': [1, 2]}
    """
    return batch.to_pydict()


def to_arrow(batch: pa.RecordBatch) -> pa.RecordBatch:
    """lancedb's ``"arrow"``: the record batch itself.

    Example:
        >>> to_arrow(pa.record_batch({"a": [1]})).num_rows
        1
    """
    return batch


def to_numpy(batch: pa.RecordBatch) -> np.ndarray:
    """lancedb's ``"numpy"``: a rows x columns array, as ``batch.to_pandas().to_numpy()``.

    lancedb's docstring says "a dict of numpy arrays" but its code returns this 2-D
    array; the code is what a ported program sees, so this follows it. With pandas
    installed the conversion is pandas' own; without it, numeric columns share their
    common dtype and anything else makes an object array, as pandas does.

    Example:
        >>> to_numpy(pa.record_batch({"a": [1, 2], "b": [3, 4]})).tolist()
        [[1, 3], [2, 4]]
    """
    try:
        import pandas  # noqa: F401
    except ImportError:
        pass
    else:
        return batch.to_pandas().to_numpy()
    cols = [col.to_numpy(zero_copy_only=False) for col in batch.columns]
    kinds = {c.dtype.kind for c in cols}
    if cols and kinds <= {"i", "u", "f"}:
        dtype = np.result_type(*[c.dtype for c in cols])
    elif cols and kinds == {"b"}:
        dtype = np.dtype(bool)
    else:
        dtype = np.dtype(object)
    out = np.empty((batch.num_rows, len(cols)), dtype=dtype)
    for j, col in enumerate(cols):
        out[:, j] = col
    return out


def to_pandas(batch: pa.RecordBatch) -> Any:
    """lancedb's ``"pandas"``: a ``DataFrame``.

    Example:
        >>> to_pandas(pa.record_batch({"a": [1]})).shape  # doctest: +SKIP
        (1, 1)
    """
    return batch.to_pandas()


def to_polars(batch: pa.RecordBatch) -> Any:
    """lancedb's ``"polars"``: a ``polars.DataFrame`` (zero copy from Arrow).

    Example:
        >>> to_polars(pa.record_batch({"a": [1]})).shape  # doctest: +SKIP
        (1, 1)
    """
    import polars as pl

    return pl.from_arrow(batch)


def _column_tensors(batch: pa.RecordBatch) -> Dict[str, Any]:
    import torch

    out = {}
    for name, col in zip(batch.schema.names, batch.columns):
        t = col.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            # lancedb fails here too (DLPack has no strings); say which column.
            raise TypeError(
                f"column {name!r} of type {t} has no torch tensor form; the torch formats "
                "take numeric and boolean columns: select_columns() the numeric ones, or use "
                'with_format("python") / with_transform()'
            )
        if col.null_count == 0 and not pa.types.is_boolean(t):
            out[name] = torch.from_dlpack(col)  # zero copy, as lancedb does
        else:
            # nulls (ints become float NaN) and bit-packed booleans need a copy anyway
            out[name] = torch.from_numpy(np.array(col.to_numpy(zero_copy_only=False)))
    return out


def to_torch(batch: pa.RecordBatch) -> List[Dict[str, Any]]:
    """lancedb's ``"torch"``: one dict per row, of 0-D tensors.

    torch's default ``collate_fn`` stacks such a list back into a dict of batched
    tensors, so ``DataLoader(perm.with_format("torch"), batch_size=k)`` works.

    Example:
        >>> to_torch(pa.record_batch({"a": [1, 2]}))[1]  # doctest: +SKIP
        {'a': tensor(2)}
    """
    tensors = _column_tensors(batch)
    return [{name: t[i] for name, t in tensors.items()} for i in range(batch.num_rows)]


def to_torch_row(batch: pa.RecordBatch) -> List[Any]:
    """lancedb's ``"torch_row"``: one 1-D tensor per row, holding its columns.

    Example:
        >>> to_torch_row(pa.record_batch({"a": [1, 2], "b": [3, 4]}))[0]  # doctest: +SKIP
        tensor([1, 3])
    """
    import torch

    tensors = list(_column_tensors(batch).values())
    if not tensors:
        return []
    return list(torch.tensor(np.column_stack([t.numpy() for t in tensors])).unbind(dim=0))


def to_torch_col(batch: pa.RecordBatch) -> Any:
    """lancedb's ``"torch_col"``: a 2-D tensor whose first dimension is the columns.

    Example:
        >>> to_torch_col(pa.record_batch({"a": [1, 2], "b": [3, 4]})).shape  # doctest: +SKIP
        torch.Size([2, 2])
    """
    import torch

    return torch.stack(list(_column_tensors(batch).values()))


FORMATS: Dict[str, Callable[[pa.RecordBatch], Any]] = {
    "python": to_python,
    "python_col": to_python_col,
    "numpy": to_numpy,
    "pandas": to_pandas,
    "arrow": to_arrow,
    "torch": to_torch,
    "torch_row": to_torch_row,
    "torch_col": to_torch_col,
    "polars": to_polars,
}

# The optional library each format needs, checked when the format is chosen rather
# than at the first batch inside a DataLoader worker.
_NEEDS = {"pandas": "pandas", "polars": "polars", "torch": "torch", "torch_row": "torch", "torch_col": "torch"}


def format_fn(format: str) -> Callable[[pa.RecordBatch], Any]:
    """The conversion for lancedb format name ``format``; raises for an unknown name.

    Example:
        >>> format_fn("python_col") is to_python_col
        True
    """
    try:
        fn = FORMATS[format]
    except (KeyError, TypeError):
        raise ValueError(f"unknown format {format!r}; expected one of {list(FORMATS)}") from None
    module = _NEEDS.get(format)
    if module is not None:
        try:
            __import__(module)
        except ImportError:
            raise ImportError(f"with_format({format!r}) needs {module}: pip install {module}") from None
    return fn
