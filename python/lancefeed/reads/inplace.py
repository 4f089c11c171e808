"""A local dataset's image column read straight from its data files, where provably
the same bytes as Lance's reader gives.

Lance (file format 2.1 and later) writes a binary column of images as "full-zip"
pages: each value's length and then its stored bytes, back to back, with an index of
where each value starts (see ``rust/fullzip.rs``). The stored bytes are the image
itself (``lance-encoding:compression=none``, or values up to 32 KiB), or, by
default for larger values, the image in a zstd frame of its own, which for a JPEG is
nearly always made of "raw" blocks: the image's bytes with a 3-byte header every
128 KiB. A Lance take of such rows costs CPU on the cores the decoder needs (the reads,
the frames' copies into fresh buffers); here each row's entry is read with one
positional read (neighbours together) and its value taken out of it in place.

It reads only what it can check, and checks what it reads:

- each page's layout is decoded from the file's own metadata, as structured data
  (:mod:`lancefeed.reads.lance_file`): full-zip pages without lists or nulls, values
  stored raw or in Lance's per-value zstd, with their index's bounds checked against
  the page. Pages of any other layout (2.0 files, FSST, dictionary, mini-block) are
  read through Lance, row by row as the takes need them;
- every entry, whenever it is read, is checked against its length prefix and its
  frame (a frame holding a compressed block is read through Lance instead);
- at open, a sample of rows read here is compared byte for byte with a Lance take of
  the same rows; one difference, and the column is read through Lance.

What is not read here, and why, is reported (:attr:`InPlaceColumn.reason`,
:meth:`InPlaceColumn.stats`; the loader's ``stats()``). Lance never rewrites a data
file in place (a new version writes new files), so a file stays what it was while a
loader reads it; a file that is truncated or fails under it anyway gives an
``OSError`` naming it (positional reads, not a memory map: never a SIGBUS), and an
entry that no longer matches its layout is read through Lance, with a warning.

Example:
    >>> import lance
    >>> from lancefeed.reads.inplace import InPlaceColumn
    >>> col = InPlaceColumn.open(lance.dataset("imagenet.lance"), "image")  # doctest: +SKIP
    >>> images = col.read(np.array([0, 5, 9], np.uint64))  # doctest: +SKIP
    >>> images.type, len(images)  # doctest: +SKIP
    (DataType(binary_view), 3)
"""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import lance
import numpy as np
import pyarrow as pa

from lancefeed import _core
from lancefeed.reads.lance_file import FileLayoutError, Page, column_pages
from lancefeed.reads.take import take_rows
from lancefeed.source import blob_columns, dataset_uri, has_stable_row_ids, live_row_ids

__all__ = ["InPlaceColumn", "InPlaceReadWarning", "NotInPlace"]

# A binary view's offset is an int32: views address a read buffer through windows
# that start every _WINDOW bytes (each runs to the buffer's end).
_WINDOW = 1 << 30
# Each data file keeps a descriptor open while the column lives; a dataset of more
# files than this opens each file for each read instead.
_MAX_FILES = 256
# Rows of the open-time comparison with Lance's take.
_SAMPLE = 16
# Entry kinds (see rust/fullzip.rs kind_of): bit 0 an 8-byte prefix, bit 1 zstd.
_LANCE = 255
_KINDS = {("raw", 32): 0, ("raw", 64): 1, ("zstd", 32): 2, ("zstd", 64): 3}
_INDEX_TYPES = {1: "<u1", 2: "<u2", 4: "<u4", 8: "<u8"}


class InPlaceReadWarning(RuntimeWarning):
    """The in-place read of a Lance column found bytes that disagree with Lance's own
    reader (or with the layout its metadata states): those rows are read through Lance."""


class NotInPlace(Exception):
    """The column cannot be read in place here; the message says why."""


@dataclass
class _Fragment:
    id: int
    file: int  # index into InPlaceColumn._paths
    rows: int  # physical rows
    base: int  # first entry of this fragment in the flat arrays


class InPlaceColumn:
    """Where each row of a binary column lies in the data files, and reads by row id.

    Made by :meth:`open`; :meth:`read` gives the values of rows (Lance's row ids) as a
    binary view array, rows only Lance can read (compressed frames, other layouts)
    read through a Lance take within the same call.
    """

    def __init__(self, ds: lance.LanceDataset, column: str, paths: List[str], fragments: Dict[int, _Fragment],
                 starts: np.ndarray, ends: np.ndarray, kinds: np.ndarray, reason: Optional[str]) -> None:
        self._ds = ds
        self.column = column
        self._paths = paths
        self._fragments = fragments
        self._frag_ids = np.array(sorted(fragments), dtype=np.int64)
        self._frag_base = np.array([fragments[f].base for f in sorted(fragments)], dtype=np.int64)
        self._frag_rows = np.array([fragments[f].rows for f in sorted(fragments)], dtype=np.int64)
        self._frag_file = np.array([fragments[f].file for f in sorted(fragments)], dtype=np.int64)
        self._starts, self._ends, self._kinds = starts, ends, kinds
        # Why some rows are read through Lance (None: every row is read in place).
        self.reason = reason
        self._addresses: Optional[Tuple[np.ndarray, np.ndarray]] = None
        self._stable = has_stable_row_ids(ds)
        self._fds: List[Optional[int]] = [None] * len(paths)
        if len(paths) <= _MAX_FILES:
            self._fds = [os.open(p, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)) for p in paths]
        self._finalizer = weakref.finalize(self, _close_all, list(self._fds))
        self._lock = threading.Lock()
        self._counts = {"rows_in_place": 0, "rows_through_lance": 0, "compressed_rows": 0, "misread_rows": 0}
        self._warned = False

    # -- opening ------------------------------------------------------------------

    @classmethod
    def open(cls, ds: lance.LanceDataset, column: str, *, sample: int = _SAMPLE) -> "InPlaceColumn":
        """The column located in ``ds``'s data files and checked (see the module);
        raises :class:`NotInPlace` saying why when no row can be read in place.

        Example:
            >>> try:
            ...     col = InPlaceColumn.open(ds, "image")  # doctest: +SKIP
            ... except NotInPlace as why:
            ...     print(why)  # e.g. "an object store (s3://...): read through Lance"
        """
        uri = dataset_uri(ds)
        if uri.startswith("file://"):
            uri = uri[len("file://") :]
        if "://" in uri:
            raise NotInPlace(f"the dataset is on an object store ({uri.split('://')[0]}://): read through Lance")
        field = ds.lance_schema.field(column)
        if field is None:
            raise NotInPlace(f"no column {column!r}")
        if column in blob_columns(ds):
            raise NotInPlace(f"column {column!r} is a blob column (read by Lance's blob reader)")
        kind = ds.schema.field(column).type
        if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
            raise NotInPlace(f"column {column!r} is {kind}, not binary or large_binary")
        field_id = field.id()
        paths: List[str] = []
        fragments: Dict[int, _Fragment] = {}
        starts: List[np.ndarray] = []
        ends: List[np.ndarray] = []
        kinds: List[np.ndarray] = []
        refused: Dict[str, int] = {}
        base = 0
        for fragment in ds.get_fragments():
            meta = fragment.metadata
            rows = int(meta.physical_rows or 0)
            try:
                path, column_index, version = _data_file(uri, meta, field_id)
                pages = column_pages(path, column_index)
                s, e, k = _entries(path, pages, rows, version)
            except (NotInPlace, FileLayoutError, OSError) as why:
                s = e = np.zeros(rows, np.uint64)
                k = np.full(rows, _LANCE, np.uint8)
                refused[str(why)] = refused.get(str(why), 0) + rows
                path = ""
            else:
                for why, count in _page_refusals(pages).items():
                    refused[why] = refused.get(why, 0) + count
            fragments[int(meta.id)] = _Fragment(int(meta.id), len(paths), rows, base)
            paths.append(path)
            starts.append(s)
            ends.append(e)
            kinds.append(k)
            base += rows
        if not fragments:
            raise NotInPlace("the dataset has no rows")
        flat_kinds = np.concatenate(kinds)
        total = len(flat_kinds)
        if not (flat_kinds != _LANCE).any():
            raise NotInPlace(_describe(refused, total))
        reason = _describe(refused, total) if refused else None
        col = cls(ds, column, paths, fragments, np.concatenate(starts), np.concatenate(ends), flat_kinds, reason)
        try:
            col._compare_sample(sample)
        except NotInPlace:
            col.close()
            raise
        return col

    def _compare_sample(self, n: int) -> None:
        """Up to ``n`` live rows read in place against a Lance take of the same rows:
        the first of each page kind, then rows spread over the dataset."""
        ids = live_row_ids(self._ds)
        if not len(ids) or n <= 0:
            return
        entries = self._entries_of(ids)
        kinds = self._kinds[entries]
        in_place = np.nonzero(kinds != _LANCE)[0]
        if not len(in_place):
            return
        firsts = [int(in_place[np.argmax(kinds[in_place] == k)]) for k in _distinct(kinds[in_place])]
        spread = in_place[np.linspace(0, len(in_place) - 1, num=min(n, len(in_place))).astype(np.int64)]
        picked = np.asarray(_distinct(np.concatenate([np.asarray(firsts, np.int64), spread])), dtype=np.int64)
        try:
            mine = self._read_entries(entries[picked], count=False, strict=True).to_pylist()
        except _Misread as why:
            raise NotInPlace(f"{why}: read through Lance") from None
        theirs = take_rows(self._ds, ids[picked], [self.column], ids_are_live=True).column(0).to_pylist()
        for k, (a, b) in enumerate(zip(mine, theirs)):
            if a != b:
                raise NotInPlace(f"row id {int(ids[picked[k]])} read in place differs from Lance's take of it: read through Lance")

    # -- reading ------------------------------------------------------------------

    def read(self, row_ids: np.ndarray) -> pa.Array:
        """The values of the rows ``row_ids`` (Lance's ``_rowid``), in that order, as
        one binary view array. Rows only Lance can read are taken through Lance here.

        Example:
            >>> col.read(np.array([3, 1], np.uint64)).to_pylist()  # doctest: +SKIP
            [b'\\xff\\xd8...', b'\\xff\\xd8...']
        """
        return self._read_entries(self._entries_of(np.asarray(row_ids, dtype=np.uint64)))

    def stats(self) -> Dict[str, Any]:
        """Rows read so far in place and through Lance, and why not all in place:
        ``compressed_rows`` (values Lance's per-value zstd did compress), ``misread_rows``
        (entries that disagreed with their layout), ``reason`` (all of it in words).

        Example:
            >>> col.stats()  # doctest: +SKIP
            {'rows_in_place': 1000, 'rows_through_lance': 0, 'compressed_rows': 0, 'misread_rows': 0, 'reason': None}
        """
        with self._lock:
            out: Dict[str, Any] = dict(self._counts)
        reasons = [self.reason] if self.reason else []
        if out["compressed_rows"]:
            reasons.append(f"{out['compressed_rows']} rows read so far were values Lance stores compressed "
                           "(its per-value zstd shrank them): read through Lance")
        if out["misread_rows"]:
            reasons.append(f"{out['misread_rows']} rows disagreed with their layout: read through Lance")
        out["reason"] = "; ".join(reasons) or None
        return out

    def close(self) -> None:
        """Close the data files (also done when the column is dropped)."""
        self._finalizer()

    def _entries_of(self, row_ids: np.ndarray) -> np.ndarray:
        addresses = self._addresses_of(row_ids)
        frag = (addresses >> np.uint64(32)).astype(np.int64)
        offset = (addresses & np.uint64(0xFFFFFFFF)).astype(np.int64)
        k = np.searchsorted(self._frag_ids, frag)
        bad = (k >= len(self._frag_ids)) | (self._frag_ids[np.minimum(k, len(self._frag_ids) - 1)] != frag)
        if not bad.any():
            bad = offset >= self._frag_rows[k]
        if bad.any():
            i = int(np.argmax(bad))
            raise LookupError(f"row id {int(row_ids[i])} is not in version {self._ds.version} of {dataset_uri(self._ds)!r}")
        return self._frag_base[k] + offset

    def _addresses_of(self, row_ids: np.ndarray) -> np.ndarray:
        """Row ids as row addresses (fragment << 32 | offset): the same where the
        dataset has no stable row ids; else looked up in a scan of both, made once."""
        if not self._stable:
            return row_ids
        if self._addresses is None:
            t = self._ds.to_table(columns=[], with_row_id=True, with_row_address=True)
            ids = t.column("_rowid").to_numpy().astype(np.uint64)
            order = np.argsort(ids, kind="stable")
            self._addresses = (ids[order], t.column("_rowaddr").to_numpy().astype(np.uint64)[order])
        ids, addrs = self._addresses
        k = np.searchsorted(ids, row_ids)
        k = np.minimum(k, len(ids) - 1)
        if len(row_ids) and not np.array_equal(ids[k], row_ids):
            bad = row_ids[ids[k] != row_ids][0]
            raise LookupError(f"row id {int(bad)} is not in version {self._ds.version} of {dataset_uri(self._ds)!r}")
        return addrs[k]

    def _ids_of(self, addresses: np.ndarray) -> np.ndarray:
        """Row addresses as row ids (stable row ids only)."""
        self._addresses_of(np.zeros(0, np.uint64))
        assert self._addresses is not None
        ids, addrs = self._addresses
        by_addr = np.argsort(addrs)
        k = by_addr[np.searchsorted(addrs, addresses, sorter=by_addr)]
        return ids[k]

    def _entry_addresses(self, entries: np.ndarray) -> np.ndarray:
        """The row addresses of flat entry indices."""
        k = np.searchsorted(self._frag_base, entries, side="right") - 1
        return (self._frag_ids[k].astype(np.uint64) << np.uint64(32)) + (entries - self._frag_base[k]).astype(np.uint64)

    def _read_entries(self, entries: np.ndarray, count: bool = True, strict: bool = False) -> pa.Array:
        """The values of flat entries ``entries``, in that order. An entry that
        disagrees with its layout sends its file's entries to Lance (with a warning),
        or with ``strict`` raises :class:`_Misread`."""
        n = len(entries)
        views = np.zeros((n, 4), dtype=np.int32)
        buffers: List[pa.Buffer] = []
        kinds = self._kinds[entries]
        lance_rows: List[np.ndarray] = [np.nonzero(kinds == _LANCE)[0]]
        n_compressed = 0
        frag_k = np.searchsorted(self._frag_base, entries, side="right") - 1
        files = self._frag_file[frag_k]
        for f in _distinct(files[kinds != _LANCE]):
            mine = np.nonzero((files == f) & (kinds != _LANCE))[0]
            mine = mine[np.argsort(self._starts[entries[mine]], kind="stable")]
            try:
                got = self._read_file(int(f), entries[mine])
            except _Misread as why:
                if strict:
                    raise
                self._misread(str(why), len(mine))
                lance_rows.append(mine)
                continue
            data, file_views, compressed = got
            file_views = file_views.copy()
            addressed = file_views[:, 0] > 12
            file_views[addressed, 2] += len(buffers)
            windows = int(file_views[addressed, 2].max()) + 1 - len(buffers) if addressed.any() else 0
            whole = pa.py_buffer(data)
            buffers.extend(whole.slice(w * _WINDOW) for w in range(windows))
            views[mine] = file_views
            if len(compressed):
                lance_rows.append(mine[compressed])
                n_compressed += len(compressed)
        through_lance = np.sort(np.concatenate(lance_rows)).astype(np.int64)
        if len(through_lance):
            taken = self._take(entries[through_lance])
            tviews = np.frombuffer(taken.buffers()[1], dtype=np.int32).reshape(-1, 4)[taken.offset : taken.offset + len(taken)].copy()
            addressed = tviews[:, 0] > 12
            tviews[addressed, 2] += len(buffers)
            buffers.extend(taken.buffers()[2:])
            views[through_lance] = tviews
        if count:
            with self._lock:
                self._counts["rows_in_place"] += n - len(through_lance)
                self._counts["rows_through_lance"] += len(through_lance)
                self._counts["compressed_rows"] += n_compressed
        if not buffers:
            buffers = [pa.py_buffer(b"")]
        return pa.Array.from_buffers(pa.binary_view(), n, [None, pa.py_buffer(views)] + buffers)

    def _read_file(self, f: int, entries: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Entries of file ``f`` (ascending in the file): the bytes, their views, the
        entries only Lance reads. Raises :class:`_Misread` for an entry that disagrees
        with its layout, ``OSError`` where the file cannot be read."""
        fd = self._fds[f]
        own = fd is None
        if own:
            fd = os.open(self._paths[f], os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            got, misread = _core.read_full_zip(fd, self._starts[entries], self._ends[entries], self._kinds[entries], _WINDOW)
        except OSError as exc:
            raise OSError(f"reading {self._paths[f]!r} in place: {exc}") from exc
        finally:
            if own:
                os.close(fd)
        if misread is not None:
            i, why = misread
            address = int(self._entry_addresses(entries[i : i + 1])[0])
            raise _Misread(f"fragment {address >> 32} row {address & 0xFFFFFFFF} in {self._paths[f]!r}: {why}")
        return got

    def _misread(self, what: str, rows: int) -> None:
        with self._lock:
            self._counts["misread_rows"] += rows
            first = not self._warned
            self._warned = True
        if first:
            warnings.warn(
                f"lancefeed read {self.column!r} in place and found an entry that disagrees with its layout ({what}); "
                "these rows are read through Lance instead (the file changed, or a layout lancefeed misreads)",
                InPlaceReadWarning,
                stacklevel=3,
            )

    def _take(self, entries: np.ndarray) -> pa.Array:
        """Entries read through Lance's take, as binary views, in that order."""
        addresses = self._entry_addresses(entries)
        ids = addresses if not self._stable else self._ids_of(addresses)
        batch = take_rows(self._ds, ids, [self.column], ids_are_live=True)
        return batch.column(0).cast(pa.binary_view())


class _Misread(Exception):
    """An entry that disagrees with the layout its page states."""


def _distinct(values: np.ndarray) -> List[int]:
    """The distinct values of a small-valued int array, ascending (``np.unique`` imports
    ``numpy.ma`` on its first call: 15 ms of a fresh process's first batch)."""
    if not len(values):
        return []
    return [int(v) for v in np.flatnonzero(np.bincount(np.asarray(values, dtype=np.int64)))]


def _close_all(fds: List[Optional[int]]) -> None:
    for fd in fds:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def _data_file(uri: str, meta: Any, field_id: int) -> Tuple[str, int, Tuple[int, int]]:
    """(path, column index, file version) of the data file holding ``field_id``."""
    if getattr(meta, "overlays", None):
        raise NotInPlace("a fragment with overlays")
    for data_file in meta.files:
        if field_id not in data_file.fields:
            continue
        if getattr(data_file, "base_id", None) is not None:
            raise NotInPlace("a data file in another base path of a multi-base dataset")
        version = (int(data_file.file_major_version), int(data_file.file_minor_version))
        if version < (2, 1):
            raise NotInPlace(f"Lance file version {version[0]}.{version[1]} (its binary layout is read through Lance)")
        index = data_file.column_indices[list(data_file.fields).index(field_id)]
        path = os.path.join(uri, "data", data_file.path)
        return path, int(index), version
    raise NotInPlace("a fragment without the column's data file")


def _entries(path: str, pages: List[Page], rows: int, version: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's entry (start, end in the file, kind) from the pages' layouts and
    indexes; rows of pages read through Lance get kind _LANCE."""
    if sum(p.rows for p in pages) != rows:
        raise NotInPlace(f"pages of {sum(p.rows for p in pages)} rows in a fragment of {rows}")
    starts = np.zeros(rows, np.uint64)
    ends = np.zeros(rows, np.uint64)
    kinds = np.full(rows, _LANCE, np.uint8)
    at = 0
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        for page in pages:
            kind = _page_kind(page)
            if kind is not None and page.rows:
                (vpos, vsize), (ipos, isize) = page.buffers[0], page.buffers[1]
                width = isize // (page.rows + 1)
                if width not in _INDEX_TYPES or isize != (page.rows + 1) * width:
                    raise FileLayoutError(f"a page index of {isize} bytes for {page.rows} rows")
                index = np.frombuffer(os.pread(fd, isize, ipos), dtype=_INDEX_TYPES[width]).astype(np.uint64)
                prefix = 4 if kind & 1 == 0 else 8
                if len(index) != page.rows + 1 or index[0] != 0 or index[-1] != vsize or (np.diff(index) < prefix).any():
                    raise FileLayoutError("a page index that does not span its values in entries of a prefix and more")
                starts[at : at + page.rows] = vpos + index[:-1]
                ends[at : at + page.rows] = vpos + index[1:]
                kinds[at : at + page.rows] = kind
            at += page.rows
    finally:
        os.close(fd)
    return starts, ends, kinds


def _page_kind(page: Page) -> Optional[int]:
    """The entry kind of a page read in place, or None (read through Lance)."""
    layout = page.layout
    if layout.kind != "full_zip" or layout.bits_rep or layout.bits_def or len(page.buffers) != 2:
        return None
    if layout.num_items != page.rows or layout.num_visible_items != page.rows:
        return None
    return _KINDS.get((layout.values, layout.bits_per_offset or 0))


def _page_refusals(pages: List[Page]) -> Dict[str, int]:
    """Rows of pages read through Lance, by why."""
    out: Dict[str, int] = {}
    for page in pages:
        if _page_kind(page) is not None or not page.rows:
            continue
        layout = page.layout
        if layout.kind != "full_zip":
            why = f"{layout.kind.replace('_', '-')} pages"
        elif layout.bits_rep or layout.bits_def:
            why = "pages with nulls or lists"
        else:
            why = f"full-zip pages of {layout.values} values"
        out[why] = out.get(why, 0) + page.rows
    return out


def _describe(refused: Dict[str, int], total: int) -> str:
    parts = [f"{rows} of {total} rows: {why}" for why, rows in sorted(refused.items(), key=lambda kv: -kv[1])]
    return "read through Lance: " + "; ".join(parts)
