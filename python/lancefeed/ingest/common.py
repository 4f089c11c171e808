"""What every ingest shares: the schemas, the summary and errors, the items to read and
their reading on a thread pool (header parsed, optionally decoded or restart-indexed).

Example:
    >>> FOLDER_SCHEMA.names
    ['image', 'filename', 'label', 'split', 'width', 'height']
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence, Union

import pyarrow as pa

from lancefeed._core import DecodeError, decode_image, image_info
from lancefeed.restart import add_restart_index

__all__ = [
    "COCO_SCHEMA", "FOLDER_SCHEMA", "IMAGE_FIELD", "MASK_FIELD", "IngestError", "IngestSummary", "Item", "Listing", "Loaded",
    "PathLike", "RowError", "display", "load", "loaded_stream", "with_mask",
]

PathLike = Union[str, "os.PathLike[str]"]

# Encoded images are already compressed: Lance's default page compression gains no
# space on them and costs CPU on every read (measured: a shuffled take of the ImageNet
# sample spends 80 ms of CPU per 1,000 rows with it, 52 ms without).
IMAGE_FIELD = pa.field("image", pa.binary(), metadata={"lance-encoding:compression": "none"})
# Masks are PNGs (or the files given), compressed already: the same holds.
MASK_FIELD = pa.field("mask", pa.binary(), metadata={"lance-encoding:compression": "none"})

FOLDER_SCHEMA = pa.schema(
    [
        IMAGE_FIELD,
        pa.field("filename", pa.string()),
        pa.field("label", pa.string()),
        pa.field("split", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
    ]
)

COCO_SCHEMA = pa.schema(
    [
        IMAGE_FIELD,
        pa.field("image_id", pa.int64()),
        pa.field("filename", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("boxes", pa.list_(pa.list_(pa.float32(), 4))),
        pa.field("categories", pa.list_(pa.string())),
        pa.field("category_ids", pa.list_(pa.int64())),
        pa.field("iscrowd", pa.list_(pa.bool_())),
        pa.field("area", pa.list_(pa.float32())),
        pa.field("annotation_ids", pa.list_(pa.int64())),
    ]
)

def with_mask(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the ``mask`` column right after ``image``."""
    return schema.insert(schema.get_field_index("image") + 1, MASK_FIELD)


class IngestError(ValueError):
    """A file could not be ingested and ``strict=True`` was asked for.

    The message names the file and the reason, e.g.
    ``"cats/broken.jpg: not an image (unknown format)"``.

    Example:
        >>> from lancefeed import ingest_folder
        >>> try:
        ...     ingest_folder("photos/", "photos.lance", strict=True)  # doctest: +SKIP
        ... except IngestError as e:
        ...     print(e)  # doctest: +SKIP
        cats/broken.jpg: not an image (unknown format)
    """


@dataclass
class IngestSummary:
    """What an ingest wrote.

    Attributes:
        uri: the Lance dataset written.
        rows: rows written.
        skipped: ``(path, reason)`` of every file left out (unreadable, not an image).
            After ``resume=True``, only those of the files read by this call.
        seconds: wall time of the whole ingest.
        resumed_from: files (in ingest order) an earlier, interrupted ingest had
            committed (or, on Ray, written and recorded), which this call
            (``resume=True``) did not read again.
        timings: on Ray, where the time went: ``list``, ``write``, ``commit`` (seconds
            of the driver's wall time), ``tasks`` (write tasks run) and
            ``task_rows_per_s`` (rows a task wrote per second of its own time).

    Example:
        >>> s = IngestSummary(uri="out.lance", rows=10, skipped=[("a/x.txt", "not an image")])
        >>> print(s)
        wrote 10 rows to out.lance, skipped 1 file(s)
    """

    uri: str
    rows: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        text = f"wrote {self.rows} rows to {self.uri}, skipped {len(self.skipped)} file(s)"
        if self.resumed_from:
            text += f" (resumed after {self.resumed_from} file(s) committed before)"
        return text


class RowError(Exception):
    """A row's extra columns could not be made; the message is the reason it is skipped."""


# Makes a row's columns that need the image's header (width, height), e.g. its mask;
# runs on a reader thread and raises RowError to skip the row.
Derive = Callable[[int, int], "dict[str, Any]"]


@dataclass
class Item:
    """One file to ingest (a local path or a :class:`lancefeed.ingest.files.StorePath`);
    ``extra`` holds the row's other columns, ``derive`` makes more."""

    path: Any
    extra: dict[str, Any]
    derive: Derive | None = None


def _items_as_they_are(items: list[Item]) -> list[Item]:
    return items


@dataclass
class Listing:
    """What an ingest reads, in ingest order: ``groups`` that ``list_group`` turns into
    items one at a time, wherever the engine runs it (a picklable function: a Ray task
    lists its groups on a worker). A source that knows its items already (COCO: they
    come from one file) is :meth:`of` them.

    Example:
        >>> Listing.of([]).items()
        []
    """

    groups: list[Any]
    list_group: Callable[[Any], list[Item]]
    known: bool = False

    @classmethod
    def of(cls, items: list[Item]) -> "Listing":
        """The listing of items known already (one group: the items)."""
        return cls([items], _items_as_they_are, known=True)

    def items(self) -> list[Item]:
        """Every group listed in turn, on this machine."""
        return [item for group in self.groups for item in self.list_group(group)]


@dataclass
class Loaded:
    item: Item
    data: bytes | None = None
    width: int = 0
    height: int = 0
    error: str | None = None
    derived: dict[str, Any] = field(default_factory=dict)


def display(path: Any, root: Any) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def load(item: Item, verify: bool, restart: bool = False) -> Loaded:
    """Read one file and parse its header; never raises (errors are data). With
    ``restart``, a JPEG is rewritten with its restart index (lancefeed.restart)."""
    try:
        data = item.path.read_bytes()
    except OSError as exc:
        return Loaded(item, error=f"unreadable ({exc.strerror or exc})")
    if restart and data[:2] == b"\xff\xd8":
        try:
            data = add_restart_index(data)
        except DecodeError:
            pass  # lossless or not decodable: stored as it is, the checks below decide
    try:
        width, height, _fmt = image_info(data)
        if verify:
            # Header parsing does not catch a truncated body; a full decode does.
            decode_image(data)
    except DecodeError as exc:
        return Loaded(item, error=f"not a valid image ({exc})")
    derived: dict[str, Any] = {}
    if item.derive is not None:
        try:
            derived = item.derive(int(width), int(height))
        except RowError as exc:
            return Loaded(item, error=str(exc))
    return Loaded(item, data=data, width=int(width), height=int(height), derived=derived)


def loaded_stream(items: Sequence[Item], *, num_threads: int | None, verify: bool, restart: bool = False) -> Iterator[Loaded]:
    """Load files in parallel, yielding them in input order.

    A few files per thread are in flight: enough to keep the threads busy, few
    enough that memory does not grow with the number or size of the files.
    """
    workers = num_threads or os.cpu_count() or 1
    window = 4 * workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lancefeed-ingest") as pool:
        pending: deque[Future[Loaded]] = deque()
        it = iter(items)
        for item in it:
            pending.append(pool.submit(load, item, verify, restart))
            if len(pending) >= window:
                break
        while pending:
            loaded = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt, verify, restart))
            yield loaded


