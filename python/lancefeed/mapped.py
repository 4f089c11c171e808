"""A local Lance dataset's binary column read in place: its data files mapped into memory.

Lance (file format 2.1 and later) writes a column of large binary values, such as
encoded images, as "full zip" pages: each value's length (4 bytes) and then its bytes,
back to back, and an index of where each value starts. On a local disk those bytes are
already in the page cache, and a Lance scan copies them twice more: the kernel's read
into Lance's buffer, then Lance's copy into the Arrow array, on freshly zeroed pages.
For CIFAR-10's 44 MB that is ~0.1 s of CPU before the loader's first batch, against
~0.5 s to decode the whole epoch. :func:`mapped_column` maps the files instead and
describes each value where it lies, as an Arrow binary view array (16 bytes a row:
length, first bytes, buffer, offset): the decoder reads the images from the page cache.

It only reads what it can check: a local dataset whose fragments have no deleted rows
and whose column is, on every page, a full-zip page without compression, nulls or
nesting, whose index and length prefixes agree for every row. Anything else, a newer
layout included, gives None, and the caller reads through Lance as before. Lance never
rewrites a data file in place (a new version writes new files), so a mapped file stays
what it was for as long as the array lives, even once a cleanup removes it.

Example:
    >>> import lance
    >>> from lancefeed.mapped import mapped_column
    >>> ds = lance.dataset("cifar.lance")  # doctest: +SKIP
    >>> images, row_ids = mapped_column(ds, "image")  # doctest: +SKIP
    >>> images.type, len(images) == ds.count_rows()  # doctest: +SKIP
    (DataType(binary_view), True)
"""

from __future__ import annotations

import mmap
import os
import re
from typing import Any, List, Optional, Tuple

import lance
import numpy as np
import pyarrow as pa

from lancefeed import _core
from lancefeed.source import dataset_uri

__all__ = ["mapped_column", "value_bytes"]

# A binary view's offset is an int32: views address a mapped page through buffers that
# start every _WINDOW bytes (each runs to the page's end), so any page size works.
_WINDOW = 1 << 30
_NUM_ITEMS = re.compile(r"num_items: (\d+),")
_NUM_VISIBLE = re.compile(r"num_visible_items: (\d+),")
# Each mapped file keeps a descriptor open (CPython's mmap holds a duplicate): a
# dataset of more fragments than this is read through Lance.
_MAX_FILES = 256
_INDEX_TYPES = {1: np.dtype("<u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}


def mapped_column(ds: lance.LanceDataset, column: str) -> Optional[Tuple[pa.ChunkedArray, np.ndarray]]:
    """Every row of ``column`` in dataset order, as binary views over the mapped data
    files (one chunk per page), and each row's row id; None when the dataset or the
    column is not one this reader can check (read it through Lance then).

    Example:
        >>> got = mapped_column(lance.dataset("cifar.lance"), "image")  # doctest: +SKIP
        >>> got is None or got[0].num_chunks >= 1  # doctest: +SKIP
        True
    """
    uri = dataset_uri(ds)
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" in uri or not os.path.isdir(uri):
        return None
    try:
        field = ds.lance_schema.field(column)
        if field is None:
            return None
        kind = ds.schema.field(column).type
        if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
            return None
        field_id = field.id()
        chunks: List[pa.Array] = []
        ids: List[np.ndarray] = []
        fragments = ds.get_fragments()
        if len(fragments) > _MAX_FILES:
            return None
        for fragment in fragments:
            meta = fragment.metadata
            if meta.deletion_file is not None:
                return None
            pages = _fragment_pages(os.path.join(uri, "data"), meta, field_id)
            if pages is None or sum(len(p) for p in pages) != meta.physical_rows:
                return None
            chunks.extend(pages)
            ids.append((np.uint64(meta.id) << np.uint64(32)) + np.arange(meta.physical_rows, dtype=np.uint64))
    except (OSError, ValueError, AttributeError, TypeError, IndexError):
        return None  # whatever this reader does not know: Lance reads it
    if not chunks:
        return None
    return pa.chunked_array(chunks, pa.binary_view()), np.concatenate(ids)


def value_bytes(views: pa.ChunkedArray) -> int:
    """The bytes the values of binary view chunks take (not their buffers': those are
    whole mapped pages, other columns' bytes among them).

    Example:
        >>> value_bytes(pa.chunked_array([pa.array([b"ab", b"cde"], pa.binary_view())]))
        5
    """
    total = 0
    for chunk in views.chunks:
        lengths = np.frombuffer(chunk.buffers()[1], dtype="<i4")[::4][chunk.offset : chunk.offset + len(chunk)]
        total += int(lengths.sum())
    return total


def _fragment_pages(data_dir: str, meta: Any, field_id: int) -> Optional[List[pa.Array]]:
    """The column's pages in one fragment's data file, each as a binary view array."""
    from lance.file import LanceFileReader

    for data_file in meta.files:
        if field_id not in data_file.fields:
            continue
        if (data_file.file_major_version, data_file.file_minor_version) < (2, 1):
            return None  # the 2.0 layout stores values apart from their offsets
        path = os.path.join(data_dir, data_file.path)
        index = data_file.column_indices[data_file.fields.index(field_id)]
        if not os.path.isfile(path):
            return None
        columns = LanceFileReader(path).metadata().columns
        if index < 0 or index >= len(columns):
            return None
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        arrays = [_page(mapped, page) for page in columns[index].pages]
        return None if any(a is None for a in arrays) else arrays  # type: ignore[misc]
    return None


def _page(mapped: mmap.mmap, page: Any) -> Optional[pa.Array]:
    """One full-zip page as binary views over ``mapped``, or None when its layout is
    not exactly the one checked here."""
    enc = str(page.encoding)
    if "FullZipLayout" not in enc or "bits_rep: 0," not in enc or "bits_def: 0," not in enc:
        return None
    if "Variable" not in enc or "values: None" not in enc or len(page.buffers) != 2:
        return None
    items, visible = _NUM_ITEMS.search(enc), _NUM_VISIBLE.search(enc)
    if items is None or visible is None or items.group(1) != visible.group(1):
        return None
    n = int(items.group(1))
    values, rep = page.buffers
    if values.position + values.size > len(mapped) or rep.position + rep.size > len(mapped):
        return None
    data = np.frombuffer(mapped, dtype=np.uint8, count=values.size, offset=values.position)
    # The index's entries are as wide as the page's size needs (2 bytes for a page under
    # 64 KiB, 4 under 4 GiB).
    width = rep.size // (n + 1)
    if width not in _INDEX_TYPES or rep.size != (n + 1) * width:
        return None
    starts = np.frombuffer(mapped, dtype=_INDEX_TYPES[width], count=n + 1, offset=rep.position).astype(np.int64)
    if n == 0:
        return pa.array([], pa.binary_view())
    if starts[0] != 0 or starts[-1] != values.size:
        return None
    if hasattr(mapped, "madvise"):
        # A file not in the page cache yet (a cold disk) is read ahead in the background,
        # in large sequential reads, not page by page as the decode touches random rows.
        start = values.position - values.position % mmap.PAGESIZE
        try:
            mapped.madvise(mmap.MADV_WILLNEED, start, values.position + values.size - start)
        except OSError:  # advice only
            pass
    # Each value is its length (little-endian, 4 bytes) then its bytes: every row's is
    # checked against the index as its view is made, in the core (in numpy, CIFAR-10's
    # 50,000 rows took ~6 ms, on the way to the loader's first batch).
    views = _core.full_zip_views(data, starts, _WINDOW)
    if views is None:
        return None
    return _views(mapped, values.position, values.size, views)


def _views(mapped: mmap.mmap, position: int, size: int, views: np.ndarray) -> pa.Array:
    """A binary view array of ``views`` ((n, 4) int32, see ``_core.full_zip_views``) over
    the page's values, ``mapped[position:position + size]``."""
    n = len(views)
    addressed = views[:, 0] > 12  # the others hold their bytes inline, no buffer index
    windows = int(views[addressed, 2].max()) + 1 if addressed.any() else 1
    whole = memoryview(mapped)[position : position + size]
    buffers = [pa.py_buffer(whole[w * _WINDOW :]) for w in range(windows)]
    return pa.Array.from_buffers(pa.binary_view(), n, [None, pa.py_buffer(views)] + buffers)
