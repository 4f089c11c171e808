"""Permutations of a Lance dataset: which rows, in which order, in which split.

The vocabulary is lancedb 0.40's (``lancedb.permutation``): a :class:`PermutationBuilder`
filters, splits and shuffles a dataset and ``execute()`` returns a *permutation
table*, a ``pyarrow.Table`` of ``row_id`` (uint64) and ``split_id`` (uint64) sorted by
split, whose schema metadata records the dataset URI, the version it was built on
(also as lancedb's ``base_version``), the seeds, the filter and the split names.
:class:`Permutation` reads one split of it (or every row, with
:meth:`Permutation.identity`) in batches. Sources and permutation tables may be
lancedb ``Table`` objects, and lancedb reads lancefeed's tables, pinned.

Row ids are Lance ``_rowid`` values of the pinned version. Without stable row ids a
``_rowid`` is a row *address* (fragment, offset), only meaningful in the version it
was read from, so a permutation always reads that version and refuses another one;
with stable row ids it may be applied to a later version.

The subpackage: :mod:`.builder` (the builder), :mod:`.view` (``Permutation``),
:mod:`.permutations` (``Permutations``), :mod:`.formats` (``with_format``), :mod:`.interop` (reading
lancefeed's and lancedb's tables, pinning, tags), :mod:`.mix` (``mix``: sources mixed by weight).

Example:
    >>> import lancefeed
    >>> table = (
    ...     lancefeed.permutation_builder("cifar.lance")
    ...     .filter("label != 'frog'")
    ...     .split_random(ratios=[0.9, 0.1], seed=42, split_names=["train", "val"])
    ...     .shuffle(seed=0)
    ...     .execute()
    ... )  # doctest: +SKIP
    >>> train = lancefeed.Permutation.from_tables("cifar.lance", table, split="train")  # doctest: +SKIP
    >>> batch = train.select_columns(["image", "label"]).take_positions([0, 1, 2])  # doctest: +SKIP
"""

from lancefeed.permutation._common import ROW_ID_COLUMN, SPLIT_ID_COLUMN
from lancefeed.permutation.builder import PermutationBuilder, permutation_builder
from lancefeed.permutation.interop import PermutationTableLike, PinnedVersionError
from lancefeed.permutation.mix import Mix, mix
from lancefeed.permutation.permutations import Permutations
from lancefeed.permutation.view import Permutation
from lancefeed.source import open_source

__all__ = [
    "ROW_ID_COLUMN",
    "SPLIT_ID_COLUMN",
    "Mix",
    "Permutation",
    "PermutationBuilder",
    "Permutations",
    "PermutationTableLike",
    "PinnedVersionError",
    "mix",
    "open_source",
    "permutation_builder",
]
