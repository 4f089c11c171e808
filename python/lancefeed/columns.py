"""Image column types: which Arrow columns hold encoded images, and their bytes.

The decoder reads one thing: an Arrow binary-like array (``binary``, ``large_binary``,
``binary_view``) of encoded image files, in place through the C Data Interface.
Datasets store images in other shapes too; this module maps each to such an array,
without copying the bytes wherever they are already in memory:

- ``lance.arrow.encoded_image`` (pylance's ``EncodedImageType``, an extension type
  over binary): its storage array.
- Hugging Face ``datasets``' ``Image`` feature, a struct ``{bytes: binary, path:
  string}``: the ``bytes`` child; a row whose bytes are null is read from the file at
  its ``path`` (a local path, relative to the working directory, or a URI pyarrow's
  file systems open).
- Lance blob columns: v1 (``large_binary`` with field metadata
  ``lance-encoding:blob = true``) and v2 (``lance.blob.v2``). A dataset returns them as
  descriptions (positions in its files); the loader reads their bytes with Lance's
  blob reader. An in-memory v2 array (``lance.blob_array``) has ``data`` or a
  ``uri`` (with an optional ``position``/``size`` range) per row: used as above.
- Any other Arrow extension type whose storage is binary-like: its storage.

Example:
    >>> import pyarrow as pa
    >>> hf = pa.array([{"bytes": b"\\xff\\xd8...", "path": None}],
    ...               pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    >>> image_array(hf).type
    DataType(binary)
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

import pyarrow as pa

__all__ = ["SUPPORTED_IMAGE_TYPES", "ImageColumnTypeError", "image_array", "image_chunks", "image_column_kind", "read_file"]

ENCODED_IMAGE = "lance.arrow.encoded_image"
BLOB_V2 = "lance.blob.v2"
_EXTENSION_NAME = b"ARROW:extension:name"
_BLOB_META = b"lance-encoding:blob"

SUPPORTED_IMAGE_TYPES = (
    "binary, large_binary, binary_view, lance.arrow.encoded_image, a Hugging Face Image struct "
    "{bytes: binary, path: string}, a Lance blob column (v1: large_binary with lance-encoding:blob "
    "metadata; v2: lance.blob.v2)"
)

# Kinds image_column_kind tells apart: how to get a row's bytes.
_BINARY, _HF, _BLOB = "binary", "hf_image", "blob"

Values = Union[pa.Array, pa.ChunkedArray]


def _binary_like(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)


def _string_like(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _struct_fields(t: pa.DataType) -> Dict[str, pa.DataType]:
    return {t.field(i).name: t.field(i).type for i in range(t.num_fields)}


class ImageColumnTypeError(TypeError, ValueError):
    """An image column of a type lancefeed cannot read images from.

    A ``TypeError`` (a wrong type) that is also a ``ValueError``, as the loader's
    construction errors about its arguments are.

    Example:
        >>> issubclass(ImageColumnTypeError, (TypeError, ValueError))
        True
    """


def _unsupported(t: pa.DataType, column: Optional[str], why: str = "") -> ImageColumnTypeError:
    if column is None:
        return ImageColumnTypeError(
            f"images are Arrow {t}{why}; expected an Arrow binary or large_binary array of encoded images, "
            f"or an image column type lancefeed reads: {SUPPORTED_IMAGE_TYPES}"
        )
    return ImageColumnTypeError(
        f"image column {column!r} is {t}{why}; expected binary (the encoded image files) or another image "
        f"column type lancefeed reads: {SUPPORTED_IMAGE_TYPES}. Pass image_column= to name the column that holds them"
    )


def image_column_kind(type_or_field: Union[pa.DataType, pa.Field], column: Optional[str] = None) -> str:
    """How an image column holds its images: ``"binary"`` (the bytes, possibly under
    an extension type), ``"hf_image"`` (Hugging Face's ``{bytes, path}`` struct) or
    ``"blob"`` (a Lance blob column, or an in-memory ``lance.blob_array``). Raises
    ``TypeError`` naming the type and the supported ones for anything else.

    A field says more than its type: Lance's blob v1 marks a ``large_binary`` field
    with metadata, and an extension type pyarrow has not registered (pylance's
    ``lance.arrow`` not imported) arrives as its storage type plus field metadata.

    Example:
        >>> image_column_kind(pa.field("image", pa.binary()))
        'binary'
        >>> image_column_kind(pa.int64(), "label")
        Traceback (most recent call last):
        ...
        lancefeed.columns.ImageColumnTypeError: image column 'label' is int64; expected binary ...
    """
    t = type_or_field
    if isinstance(type_or_field, pa.Field):
        column = type_or_field.name if column is None else column
        meta = type_or_field.metadata or {}
        t = type_or_field.type
        if meta.get(_BLOB_META, b"").lower() == b"true" or meta.get(_EXTENSION_NAME) == BLOB_V2.encode():
            return _BLOB
    assert isinstance(t, pa.DataType)
    if isinstance(t, pa.ExtensionType):
        if t.extension_name == BLOB_V2:
            return _BLOB
        if _binary_like(t.storage_type):
            return _BINARY
        raise _unsupported(t, column, f" (extension {t.extension_name!r} over {t.storage_type})")
    if _binary_like(t):
        return _BINARY
    if pa.types.is_struct(t):
        fields = _struct_fields(t)
        if "bytes" in fields and "path" in fields:
            if not (_binary_like(fields["bytes"]) and _string_like(fields["path"])):
                raise _unsupported(t, column, " (an image struct needs bytes: binary and path: string)")
            return _HF
        if "data" in fields and "uri" in fields:
            return _BLOB
        if "position" in fields and "size" in fields:
            raise _unsupported(
                t,
                column,
                " (Lance blob descriptions: positions in the dataset's files, not the images; read the "
                "bytes with lancefeed.DataLoader, dataset.read_blobs(column, ids=...) or "
                "dataset.to_table(..., blob_handling='all_binary'))",
            )
    raise _unsupported(t, column)


def image_array(values: Values, *, column: str = "image") -> Values:
    """The images of an image column as an Arrow binary-like array (chunked if
    ``values`` is), what :func:`lancefeed.decode_batch` reads in place.

    Bytes already in ``values`` are not copied (an extension array's storage, a
    struct's child). Rows that only name a file (a Hugging Face image with null
    ``bytes``, a blob v2 ``uri``) are read from it; a file that cannot be read raises
    :class:`lancefeed.DecodeError` naming the row and the path. An unsupported type
    raises ``TypeError`` naming it and the supported ones.

    Example:
        >>> import pyarrow as pa
        >>> hf = pa.array([{"bytes": None, "path": "cat.jpg"}],
        ...               pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        >>> image_array(hf).to_pylist()[0][:2]  # doctest: +SKIP
        b'\\xff\\xd8'
    """
    chunks, missing = image_chunks(values, column=column)
    if missing:
        from lancefeed._core import DecodeError

        row = min(missing)
        raise DecodeError(f"row {row} of column {column!r}: {missing[row]}")
    if isinstance(values, pa.ChunkedArray):
        types = {c.type for c in chunks}
        if len(types) > 1:
            # Rows read from files may have made some chunks large_binary.
            chunks = [c.cast(pa.large_binary()) for c in chunks]
        return pa.chunked_array(chunks, type=chunks[0].type if chunks else pa.binary())
    return chunks[0]


def image_chunks(values: Values, *, column: Optional[str] = None) -> Tuple[List[pa.Array], Dict[int, str]]:
    """``values`` (an Array or ChunkedArray) as binary-like chunks, and the rows whose
    file could not be read: ``{row: reason}`` (rows counted across the chunks; those
    rows are null in the chunks).

    Example:
        >>> chunks, missing = image_chunks(pa.chunked_array([[b"a"], [b"b"]], pa.binary()))
        >>> len(chunks), missing
        (2, {})
    """
    arrays = list(values.chunks) if isinstance(values, pa.ChunkedArray) else [values]
    kind = image_column_kind(values.type, column)
    missing: Dict[int, str] = {}
    out = []
    base = 0
    for arr in arrays:
        out.append(_resolve(arr, kind, base, missing))
        base += len(arr)
    return out, missing


def _resolve(arr: pa.Array, kind: str, base: int, missing: Dict[int, str]) -> pa.Array:
    if isinstance(arr, pa.ExtensionArray):
        arr = arr.storage
    if kind == _BINARY:
        return arr
    # flatten() folds the struct's own nulls into its children (the data buffers are
    # shared, not copied), so a null image row reads as a null value.
    children = dict(zip((arr.type.field(i).name for i in range(arr.type.num_fields)), arr.flatten()))
    if kind == _HF:
        return _fill_from_files(children["bytes"], children["path"], None, None, base, missing)
    return _fill_from_files(children["data"], children["uri"], children.get("position"), children.get("size"), base, missing)


def _fill_from_files(
    data: pa.Array,
    refs: pa.Array,
    positions: Optional[pa.Array],
    sizes: Optional[pa.Array],
    base: int,
    missing: Dict[int, str],
) -> pa.Array:
    """``data`` with its null rows that have a file reference filled from the file."""
    import pyarrow.compute as pc

    need = pc.and_(data.is_null(), refs.is_valid()) if data.null_count else None
    if need is None or not pc.any(need).as_py():
        return data  # every image is in memory: no copy
    values: List[Any] = data.to_pylist()
    ref_list = refs.to_pylist()
    pos = positions.to_pylist() if positions is not None else None
    size = sizes.to_pylist() if sizes is not None else None
    for i in pc.indices_nonzero(need).to_pylist():
        try:
            values[i] = read_file(ref_list[i], pos[i] if pos else None, size[i] if size else None)
        except (OSError, pa.ArrowException, ValueError) as e:
            missing[base + i] = _file_error(ref_list[i], e)
    total = sum(len(v) for v in values if v is not None)
    kind = data.type if total < 2**31 - 1 or not pa.types.is_binary(data.type) else pa.large_binary()
    return pa.array(values, type=pa.binary() if pa.types.is_binary_view(kind) else kind)


def _file_error(ref: str, e: BaseException) -> str:
    reason = "not found" if isinstance(e, FileNotFoundError) else f"could not be read ({e})"
    return f"image file {ref!r} {reason} (the row has no image bytes, only this path)"


def read_file(ref: str, position: Optional[int] = None, size: Optional[int] = None) -> bytes:
    """The bytes of the file ``ref`` names (a local path or a URI pyarrow's file
    systems open, ``file://``, ``s3://``...), or of ``size`` bytes at ``position``.

    Example:
        >>> read_file("photos/cat.jpg")[:2]  # doctest: +SKIP
        b'\\xff\\xd8'
    """
    if "://" in ref:
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(ref)
        try:
            f = fs.open_input_file(path)
        except OSError as e:
            # pyarrow words a missing file as a plain OSError; say it as Python does.
            if fs.get_file_info(path).type == pafs.FileType.NotFound:
                raise FileNotFoundError(ref) from e
            raise
        with f:
            if position is not None:
                f.seek(position)
            return f.read(size) if size is not None else f.read()
    with open(ref, "rb") as fh:
        if position is not None:
            fh.seek(position)
        return fh.read(size) if size is not None else fh.read()


def python_images(items: List[Any]) -> Tuple[List[Any], Dict[int, str]]:
    """The images of a Python list given to ``decode_batch``, and the rows whose file
    could not be read (``{row: reason}``, None in the list). Bytes stay as they are; a
    Hugging Face image dict (``{"bytes": ..., "path": ...}``, what ``to_pylist()``
    gives) becomes its bytes, or its file's when the bytes are None.

    Example:
        >>> python_images([b"abc", {"bytes": b"def", "path": None}])
        ([b'abc', b'def'], {})
    """
    out: List[Any] = []
    missing: Dict[int, str] = {}
    for row, item in enumerate(items):
        if isinstance(item, dict) and ("bytes" in item or "path" in item):
            data, ref = item.get("bytes"), item.get("path")
            if data is None and ref is not None:
                try:
                    data = read_file(ref)
                except (OSError, pa.ArrowException, ValueError) as e:
                    missing[row] = _file_error(ref, e)
            item = data
        out.append(bytes(item) if isinstance(item, (bytearray, memoryview)) else item)
    return out, missing
