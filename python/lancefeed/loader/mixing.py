"""Where the DataLoader meets a mix (:func:`lancefeed.mix`): the few steps that read a
mix otherwise than one dataset, each a function that passes a plain source through.

- the reader: a :class:`~lancefeed.reads.mixed.MixedReader` (a reader per source);
- the order: the mix draws each epoch's (``Mix.epoch_order``), the sampler shards it;
- the labels: class names over every source, each source's labels read by its own
  scan and laid out by the mix's positions, with the source index as a column;
- error messages: a row named by its source and its row there.

Boxes and masks (``targets=``, ``output="detection"``) and ``shuffle_clump_size`` are
refused for a mix.

Example:
    >>> is_mix("cifar.lance")
    False
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import torch

from lancefeed.loader import labels
from lancefeed.loader.labels import ClassMap, distinct_labels, is_string_list_type, is_string_type, read_column
from lancefeed.permutation.mix import Mix
from lancefeed.reads import RowReader
from lancefeed.reads.mixed import MixedReader
from lancefeed.reads.take import describe_row

__all__ = [
    "check_mix_options",
    "describe_position",
    "is_mix",
    "mix_order",
    "open_reader",
    "position_count",
    "preload_labels",
    "resolve_classes",
]


def is_mix(source: Any) -> bool:
    """Whether ``source`` is a :class:`~lancefeed.permutation.mix.Mix`."""
    return isinstance(source, Mix)


def check_mix_options(source: Any, *, targets: Any, output: str, shuffle_clump_size: Optional[int]) -> None:
    """Refuse, for a mix, what the loader does not read from one yet.

    Example:
        >>> check_mix_options("cifar.lance", targets=None, output="tuple", shuffle_clump_size=None)
    """
    if not is_mix(source):
        return
    if targets is not None or output == "detection":
        raise ValueError("boxes and masks (targets=, output='detection') are not read from a mix yet; "
                         "mix image classification sources, or load each detection dataset on its own")
    if shuffle_clump_size is not None:
        raise ValueError("shuffle_clump_size= shuffles runs of one dataset's rows; a mix draws its own order, "
                         "so leave it out")


def open_reader(perm: Any, image_column: str, *, preloaded: Sequence[str] = (), cache: Union[bool, str] = "auto",
                num_threads: Optional[int] = None, chunked: bool = True) -> Union[RowReader, MixedReader]:
    """The loader's reader of ``perm``: a :class:`RowReader`, or for a mix a
    :class:`MixedReader` (its source index is never read: it is preloaded).

    Example:
        >>> open_reader(perm, "image", cache=False).take(np.arange(4))[0].num_rows  # doctest: +SKIP
        4
    """
    if is_mix(perm):
        return MixedReader.of(perm, image_column, preloaded=preloaded, cache=cache, num_threads=num_threads, chunked=chunked)
    return RowReader(perm, image_column, preloaded=preloaded, cache=cache, num_threads=num_threads, chunked=chunked)


def mix_order(perm: Any, epoch: int, shuffle: bool) -> Optional[np.ndarray]:
    """The epoch's order a mix draws, or None where the sampler draws it.

    Example:
        >>> mix_order("cifar.lance", 0, True) is None
        True
    """
    return perm.epoch_order(epoch, shuffle=shuffle) if is_mix(perm) else None


def position_count(perm: Any) -> int:
    """How many positions the loader's per-position state (its pixel cache) spans: a
    mix's repeats have positions of their own.

    Example:
        >>> position_count(list(range(5)))
        5
    """
    return perm.num_positions if is_mix(perm) else len(perm)


def describe_position(perm: Any, position: int, row_id: int) -> str:
    """The row at ``position`` as a user can find it (a mix names its source too)."""
    if is_mix(perm):
        return perm.describe_position(position)
    return describe_row(perm.dataset, row_id)


# -- labels ---------------------------------------------------------------------------


def _label_tables(mix: Mix, column: str) -> List[pa.Table]:
    """Each source's scan of its label column, under the mix's name for it (``columns=``
    may have renamed it), as :func:`lancefeed.loader.labels.read_column` gives it."""
    tables = []
    for perm in mix.sources:
        table = read_column(perm.dataset, perm.source_column(column) or column)
        tables.append(table.rename_columns([column, *table.column_names[1:]]))
    return tables


def resolve_classes(perm: Any, label_column: Optional[str], classes: Any) -> Tuple[Dict[str, ClassMap], Optional[List[str]], Any]:
    """:func:`lancefeed.loader.labels.resolve_classes`, for a mix over all its sources:
    ``"auto"`` is the sorted labels of every source's whole dataset (so that a train
    and a validation mix agree). The scans made for them come back, for the labels.

    Example:
        >>> resolve_classes(m, "label", "auto")[1]  # doctest: +SKIP
        ['airplane', 'automobile', ..., 'n01440764', ...]
    """
    if not is_mix(perm):
        return labels.resolve_classes(perm, label_column, classes)
    if label_column is None:
        return {}, None, None
    ltype = perm.schema.field(label_column).type
    if not (is_string_type(ltype) or is_string_list_type(ltype)):
        if classes is not None:
            raise ValueError(f"classes= maps string labels to indices, but column {label_column!r} is {ltype}; "
                             "numeric labels pass through as they are: leave classes=None")
        return {}, None, None
    tables = None
    if classes is None or (isinstance(classes, str) and classes == "auto"):
        tables = _label_tables(perm, label_column)
        names = sorted(set().union(*(distinct_labels(p.dataset, label_column, table=t) for p, t in zip(perm.sources, tables))))
    elif isinstance(classes, str):
        raise ValueError(f"classes must be a list of class names or 'auto', got {classes!r}")
    else:
        names = list(classes)
    class_map = ClassMap(names)
    return {label_column: class_map}, class_map.classes, tables


def preload_labels(perm: Any, label_column: Optional[str], class_maps: Dict[str, ClassMap], table: Any = None) -> Dict[str, torch.Tensor]:
    """:func:`lancefeed.loader.labels.preload_labels`, for a mix by its positions: each
    source's labels (one scan each, checked now) repeated for each of its passes; and
    the source index of every position when it is selected. Labels some source cannot
    give whole are read with each take, from every source.

    Example:
        >>> preload_labels(m, "label", class_maps)["_source"][m.starts[1]]  # doctest: +SKIP
        tensor(1)
    """
    if not is_mix(perm):
        return labels.preload_labels(perm, label_column, class_maps, table)
    out: Dict[str, torch.Tensor] = {}
    if perm.source_column in perm.columns:
        blocks = np.asarray(perm.rows, dtype=np.int64) * np.asarray(perm.copies, dtype=np.int64)
        out[perm.source_column] = torch.from_numpy(np.repeat(np.arange(len(blocks), dtype=np.int64), blocks))
    if label_column is None:
        return out
    tables = table if table is not None else _label_tables(perm, label_column)
    parts = []
    for source, part_table, copies in zip(perm.sources, tables, perm.copies):
        got = labels.preload_labels(source, label_column, class_maps, part_table)
        if label_column not in got:
            return out
        if copies:
            parts.append(got[label_column].repeat(copies))
    out[label_column] = torch.cat(parts)
    return out
