"""A Lance data file's own description of a column's pages, read as structured data.

A Lance 2.x file ends in a footer that locates each column's metadata: a protobuf
``ColumnMetadata`` (Lance's ``protos/file2.proto``) listing the column's pages, each with
its buffers (position and size in the file), its row count and its encoding, a
``PageLayout`` (``protos/encodings_v2_1.proto``) wrapped in a ``google.protobuf.Any``.
This module reads those bytes and decodes the few messages the in-place reader needs,
with a protobuf wire-format decoder of its own (pylance exposes the encoding only as
printed text, which is no contract). Anything it does not know is reported as such, so
that the caller reads through Lance.

Example:
    >>> from lancefeed.reads.lance_file import column_pages
    >>> pages = column_pages("ds.lance/data/0a1b.lance", 0)  # doctest: +SKIP
    >>> pages[0].rows, pages[0].layout.kind  # doctest: +SKIP
    (120, 'full_zip')
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

__all__ = ["FileLayoutError", "PageLayout", "Page", "column_pages", "decode_fields", "read_footer"]

_MAGIC = b"LANC"
_FOOTER = struct.Struct("<QQQIIHH4s")
_PAGE_LAYOUT_URL = "/lance.encodings21.PageLayout"
Field = Union[int, bytes]


class FileLayoutError(ValueError):
    """A data file whose metadata this module cannot read (or does not know)."""


def _varint(data: bytes, at: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise FileLayoutError("a protobuf varint runs past its message")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def decode_fields(data: bytes) -> Dict[int, List[Field]]:
    """A protobuf message's fields by number, each a list of its values in order:
    varints and fixed-width numbers as ints, length-delimited fields as bytes (a
    nested message, a string or a packed repeated field: the schema tells).

    Example:
        >>> decode_fields(bytes([0x08, 0x96, 0x01, 0x12, 0x02, 0x68, 0x69]))
        {1: [150], 2: [b'hi']}
    """
    out: Dict[int, List[Field]] = {}
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        value: Field
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 1:
            if at + 8 > len(data):
                raise FileLayoutError("a fixed64 field runs past its message")
            value = struct.unpack_from("<Q", data, at)[0]
            at += 8
        elif wire == 5:
            if at + 4 > len(data):
                raise FileLayoutError("a fixed32 field runs past its message")
            value = struct.unpack_from("<I", data, at)[0]
            at += 4
        elif wire == 2:
            size, at = _varint(data, at)
            if at + size > len(data):
                raise FileLayoutError("a length-delimited field runs past its message")
            value = bytes(data[at : at + size])
            at += size
        else:
            raise FileLayoutError(f"protobuf wire type {wire} (groups are not used by Lance)")
        out.setdefault(number, []).append(value)
    return out


def _packed(fields: Dict[int, List[Field]], number: int) -> List[int]:
    """A repeated varint field, packed (proto3's default) or not."""
    values: List[int] = []
    for v in fields.get(number, []):
        if isinstance(v, bytes):
            at = 0
            while at < len(v):
                n, at = _varint(v, at)
                values.append(n)
        else:
            values.append(v)
    return values


def _one(fields: Dict[int, List[Field]], number: int, default: Field = 0) -> Field:
    values = fields.get(number)
    return values[-1] if values else default  # protobuf: the last one wins


def _message(fields: Dict[int, List[Field]], number: int) -> Optional[Dict[int, List[Field]]]:
    value = _one(fields, number, b"")
    if number not in fields:
        return None
    if not isinstance(value, bytes):
        raise FileLayoutError(f"field {number} is not a message")
    return decode_fields(value)


@dataclass(frozen=True)
class PageLayout:
    """What the in-place reader needs of a page's ``PageLayout``.

    ``kind``: ``"full_zip"``, ``"mini_block"``, ``"all_null"``, ``"blob"``, or the
    Any's type for encodings of other file versions. For full-zip pages: the bits of
    repetition and definition levels per value (0 and 0: no lists, no nulls), the bits
    of the length prefix (``bits_per_offset``; None for fixed-width values), the item
    counts, and ``values``: how each value is stored, ``"raw"`` (a Variable encoding
    with flat offsets and no compression), ``"zstd"``/``"lz4"`` (a General encoding of
    that scheme around such a Variable one), or a name of what else it is.
    """

    kind: str
    bits_rep: int = 0
    bits_def: int = 0
    bits_per_offset: Optional[int] = None
    num_items: int = 0
    num_visible_items: int = 0
    values: str = ""


@dataclass(frozen=True)
class Page:
    """One page of a column: its row count, its buffers ``(position, size)`` in the
    file and its layout."""

    rows: int
    buffers: Tuple[Tuple[int, int], ...]
    layout: PageLayout


_LAYOUTS = {1: "mini_block", 2: "all_null", 3: "full_zip", 4: "blob"}
_COMPRESSIONS = {
    1: "flat", 2: "variable", 3: "constant", 4: "out_of_line_bitpacking", 5: "inline_bitpacking",
    6: "fsst", 7: "dictionary", 8: "rle", 9: "byte_stream_split", 10: "general", 11: "fixed_size_list",
    12: "packed_struct", 13: "variable_packed_struct",
}
_SCHEMES = {1: "lz4", 2: "zstd"}


def _compression(fields: Optional[Dict[int, List[Field]]]) -> Tuple[str, Optional[Dict[int, List[Field]]]]:
    """A ``CompressiveEncoding``'s kind and its message."""
    if fields is None:
        return "none", None
    for number, name in _COMPRESSIONS.items():
        if number in fields:
            return name, _message(fields, number)
    return "unknown", None


def _plain_variable(variable: Optional[Dict[int, List[Field]]], bits: int) -> bool:
    """A ``Variable`` encoding of flat offsets of ``bits`` bits, values uncompressed."""
    if variable is None or 2 in variable:  # values: an optional BufferCompression
        return False
    kind, offsets = _compression(_message(variable, 1))
    if kind != "flat" or offsets is None:
        return False
    return int(_one(offsets, 1)) == bits and 2 not in offsets


def _value_storage(value_compression: Optional[Dict[int, List[Field]]], bits: int) -> str:
    kind, message = _compression(value_compression)
    if kind == "variable":
        return "raw" if _plain_variable(message, bits) else "variable (compressed offsets or values)"
    if kind == "general" and message is not None:
        scheme = _message(message, 1)
        name = _SCHEMES.get(int(_one(scheme, 1)) if scheme else 0, "unknown scheme")
        inner_kind, inner = _compression(_message(message, 3))
        if inner_kind == "variable" and _plain_variable(inner, bits):
            return name
        return f"{name} around {inner_kind}"
    return kind


def page_layout(encoding: bytes) -> PageLayout:
    """A page's ``Encoding`` message decoded (see :class:`PageLayout`).

    Example:
        >>> page_layout(b"").kind
        'none'
    """
    enc = decode_fields(encoding)
    if 1 in enc:
        return PageLayout("deferred")  # stored elsewhere in the file: not read here
    direct = _message(enc, 2)
    if direct is None:
        return PageLayout("none")
    wrapped = decode_fields(bytes(_one(direct, 1, b"")))  # a google.protobuf.Any
    url = bytes(_one(wrapped, 1, b"")).decode("utf-8", "replace")
    if url != _PAGE_LAYOUT_URL:
        return PageLayout(url.rsplit(".", 1)[-1] or "unknown")
    layout = decode_fields(bytes(_one(wrapped, 2, b"")))
    kind = next((name for number, name in _LAYOUTS.items() if number in layout), "unknown")
    if kind != "full_zip":
        return PageLayout(kind)
    fz = _message(layout, 3) or {}
    bits_per_offset = int(_one(fz, 4)) if 4 in fz else None
    values = _value_storage(_message(fz, 7), bits_per_offset) if bits_per_offset else "fixed width"
    return PageLayout(
        "full_zip",
        bits_rep=int(_one(fz, 1)),
        bits_def=int(_one(fz, 2)),
        bits_per_offset=bits_per_offset,
        num_items=int(_one(fz, 5)),
        num_visible_items=int(_one(fz, 6)),
        values=values,
    )


def read_footer(fd: int) -> Tuple[int, int, int, List[Tuple[int, int]]]:
    """(major, minor, file size, each column's metadata (position, size)) of the Lance
    file open at ``fd``.

    Example:
        >>> major, minor, size, columns = read_footer(os.open(path, os.O_RDONLY))  # doctest: +SKIP
    """
    size = os.fstat(fd).st_size
    if size < _FOOTER.size:
        raise FileLayoutError(f"a file of {size} bytes has no Lance footer")
    _, cmo, _, _, columns, major, minor, magic = _FOOTER.unpack(os.pread(fd, _FOOTER.size, size - _FOOTER.size))
    if magic != _MAGIC:
        raise FileLayoutError(f"no Lance footer (magic {magic!r})")
    if cmo + 16 * columns > size:
        raise FileLayoutError("the column metadata table runs past the end of the file")
    table = os.pread(fd, 16 * columns, cmo)
    entries = [struct.unpack_from("<QQ", table, 16 * k) for k in range(columns)]
    if any(pos + n > size for pos, n in entries):
        raise FileLayoutError("a column's metadata runs past the end of the file")
    return major, minor, size, entries


def column_pages(path_or_fd: Union[str, int], column: int) -> List[Page]:
    """Every page of column ``column`` (its index in the file) of a Lance 2.x file.

    Example:
        >>> [p.rows for p in column_pages("ds.lance/data/0a1b.lance", 0)]  # doctest: +SKIP
        [120]
    """
    fd = os.open(path_or_fd, os.O_RDONLY) if isinstance(path_or_fd, str) else path_or_fd
    try:
        _, _, size, entries = read_footer(fd)
        if not 0 <= column < len(entries):
            raise FileLayoutError(f"column {column} of a file of {len(entries)} columns")
        pos, n = entries[column]
        meta = decode_fields(os.pread(fd, n, pos))
    finally:
        if isinstance(path_or_fd, str):
            os.close(fd)
    pages = []
    for raw in meta.get(2, []):
        if not isinstance(raw, bytes):
            raise FileLayoutError("a page that is not a message")
        page = decode_fields(raw)
        offsets, sizes = _packed(page, 1), _packed(page, 2)
        if len(offsets) != len(sizes):
            raise FileLayoutError("a page with more buffer offsets than sizes")
        buffers = tuple(zip(offsets, sizes))
        if any(o + s > size for o, s in buffers):
            raise FileLayoutError("a page buffer runs past the end of the file")
        encoding = _one(page, 4, b"")
        layout = page_layout(encoding if isinstance(encoding, bytes) else b"")
        pages.append(Page(int(_one(page, 3)), buffers, layout))
    return pages
