"""Reading rows: what to read, from where, kept how (SPDL's ``source/``; the loader's
``pipeline`` decides when).

- :mod:`~lancefeed.reads.take`: rows by row id, one sorted take per batch.
- :mod:`~lancefeed.reads.lance_file` and :mod:`~lancefeed.reads.inplace`: a local
  dataset's image column read straight from its data files, where proven the same bytes
  as Lance's reader.
- :mod:`~lancefeed.reads.cache`: rows kept between epochs, memory budgets.
- :mod:`~lancefeed.reads.reader`: :class:`RowReader`, the loader's reader that chooses
  among them.

Example:
    >>> from lancefeed.reads import RowReader
    >>> reader = RowReader(perm, "image")  # doctest: +SKIP
"""

from lancefeed.reads.inplace import InPlaceColumn, InPlaceReadWarning, NotInPlace
from lancefeed.reads.reader import RowReader, RowSource, in_storage_order
from lancefeed.reads.take import take_rows, take_rows_sorted

__all__ = ["InPlaceColumn", "InPlaceReadWarning", "NotInPlace", "RowReader", "RowSource", "in_storage_order", "take_rows", "take_rows_sorted"]
