"""Restart-indexed JPEGs: random crops that decode only their own part of the file.

A decode-time crop (``RandomResizedCrop``) already skips the scanlines above the crop
and the IDCT of the columns beside it, but libjpeg must still entropy-decode every
block of them: the coefficients are coded as one chain through the image.
:func:`add_restart_index` rewrites a JPEG losslessly (the same DCT coefficients, hence
the same pixels in any decoder) with a restart marker after every MCU, which ends that
chain, and an index of where each MCU row's bytes start (an APP15 segment other
decoders ignore). lancefeed's decoder then builds a JPEG of just the crop's MCUs (and
a row of context above and below) and decodes that. :func:`index_dataset` does it for
every JPEG of an existing dataset; ``lancefeed ingest --restart-index`` (or its alias
``--restart-interval``) at ingest time.

Example:
    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO(); Image.new("RGB", (64, 64), "red").save(buf, "JPEG")
    >>> indexed = add_restart_index(buf.getvalue())
    >>> restart_index(indexed)[0], len(restart_index(indexed)[1])  # 16-pixel MCU rows
    (16, 4)
    >>> restart_index(buf.getvalue()) is None
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Optional, Union

from lancefeed import _core

__all__ = ["IndexSummary", "add_restart_index", "count", "index_blob", "index_dataset", "restart_index"]

PathLike = Union[str, "os.PathLike[str]"]


def add_restart_index(data: bytes) -> bytes:
    """``data`` (a JPEG) rewritten losslessly with a restart marker after every MCU and
    the index of its MCU rows that lancefeed's crops use: a crop then entropy-decodes
    only the MCUs it covers, not the rows above it or the columns beside it.
    Progressive and arithmetic-coded JPEGs come out baseline Huffman with the same
    coefficients; Huffman tables are optimised for the image, which pays for part of
    the markers (+7.6% bytes on the ImageNet sample). A lossless
    (SOF3) JPEG, or anything not a JPEG, raises :class:`lancefeed.DecodeError` with
    the reason.

    Example:
        >>> add_restart_index(b"not a jpeg")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        lancefeed.DecodeError: corrupt JPEG header: Not a JPEG file
    """
    return _core.add_restart_index(bytes(data))


def restart_index(data: bytes) -> Optional[tuple[int, list[int]]]:
    """(pixel rows per MCU row, byte offset of each MCU row from the first
    entropy-coded byte) of a JPEG :func:`add_restart_index` wrote, or None.

    Example:
        >>> restart_index(b"\\xff\\xd8\\xff\\xd9") is None
        True
    """
    return _core.restart_index(bytes(data))


@dataclass
class IndexSummary:
    """What :func:`index_dataset` did: ``rows`` written, ``indexed`` JPEGs rewritten,
    ``kept`` images left as they were (not JPEG, lossless, already indexed, or refused,
    with ``reasons`` counted by reason), the encoded bytes before and after.

    Example:
        >>> print(IndexSummary("out.lance", rows=3, indexed=2, kept=1, bytes_before=100, bytes_after=101))
        out.lance: 2 of 3 images restart-indexed, 1 kept as they were; 100 -> 101 bytes (+1.0%)
    """

    uri: str
    rows: int = 0
    indexed: int = 0
    kept: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    reasons: Optional[dict[str, int]] = None

    def __str__(self) -> str:
        growth = 100.0 * (self.bytes_after / self.bytes_before - 1) if self.bytes_before else 0.0
        return (f"{self.uri}: {self.indexed} of {self.rows} images restart-indexed, {self.kept} kept as they were; "
                f"{self.bytes_before} -> {self.bytes_after} bytes ({growth:+.1f}%)")


def index_blob(blob: Optional[bytes]) -> tuple[Optional[bytes], str]:
    """One image as :func:`index_dataset` and ``lancefeed optimize`` store it: a JPEG
    without an index rewritten by :func:`add_restart_index`, anything else as it is; and
    what happened (``"indexed"``, ``"kept"``, or the reason a JPEG was refused).

    Example:
        >>> index_blob(b"\\x89PNG...")
        (b'\\x89PNG...', 'kept')
    """
    if blob is None or blob[:2] != b"\xff\xd8" or restart_index(blob) is not None:
        return blob, "kept"
    try:
        return add_restart_index(blob), "indexed"
    except _core.DecodeError as e:
        return blob, str(e).split(":")[0]


def count(summary: IndexSummary, before: Optional[bytes], after: Optional[bytes], outcome: str) -> None:
    """Add one image's outcome of :func:`index_blob` to ``summary``.

    Example:
        >>> s = IndexSummary("x"); count(s, b"ab", b"abc", "indexed"); (s.indexed, s.bytes_after)
        (1, 3)
    """
    if before is None:
        return
    summary.bytes_before += len(before)
    summary.bytes_after += len(after or b"")
    if outcome == "indexed":
        summary.indexed += 1
        return
    summary.kept += 1
    if outcome != "kept":
        summary.reasons = {**(summary.reasons or {}), outcome: (summary.reasons or {}).get(outcome, 0) + 1}


def _index_one(blob: Optional[bytes], summary: IndexSummary) -> Optional[bytes]:
    out, outcome = index_blob(blob)
    count(summary, blob, out, outcome)
    return out


def index_dataset(uri: PathLike, out: PathLike, *, column: str = "image", batch_size: int = 256,
                  progress: bool = True, storage_options: Optional[dict[str, str]] = None) -> IndexSummary:
    """Write a copy of the Lance dataset at ``uri`` to ``out`` with every JPEG of
    ``column`` restart-indexed (see :func:`add_restart_index`); every other column and
    every row as it was, in order. Images that are not JPEG, or that cannot be indexed,
    are kept as they were and counted.

    Example:
        >>> s = index_dataset("imagenet.lance", "imagenet-rst.lance")  # doctest: +SKIP
        >>> print(s)  # doctest: +SKIP
        imagenet-rst.lance: 1000 of 1000 images restart-indexed, 0 kept as they were; ...
    """
    import lance
    import pyarrow as pa
    from tqdm.auto import tqdm

    ds = lance.dataset(str(uri), storage_options=storage_options)
    if column not in ds.schema.names:
        raise ValueError(f"column {column!r} is not in {uri}; columns: {ds.schema.names}")
    field = ds.schema.field(column)
    if not (pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type)):
        raise TypeError(f"column {column!r} is {field.type}; index_dataset rewrites binary image columns")
    summary = IndexSummary(str(out))
    bar = tqdm(total=ds.count_rows(), desc="restart index", unit="img", disable=not progress)

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in ds.to_batches(batch_size=batch_size):
            images = batch.column(column)
            rewritten = pa.array([_index_one(b, summary) for b in images.to_pylist()], type=field.type)
            summary.rows += batch.num_rows
            bar.update(batch.num_rows)
            yield batch.set_column(batch.schema.get_field_index(column), field, rewritten)

    try:
        lance.write_dataset(batches(), str(out), schema=ds.schema, storage_options=storage_options)
    finally:
        bar.close()
    return summary
