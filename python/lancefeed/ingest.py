"""Turn image folders and COCO annotation files into Lance datasets.

Files are read on a thread pool and written to Lance as a stream of record
batches, so memory stays bounded (about ``batch_size`` files per batch, a few
batches in flight) whatever the size of the dataset. Each file's header is
parsed with :func:`lancefeed.image_info`, which both validates the file and gives
``width``/``height`` without decoding the pixels.

Example:
    >>> import lancefeed
    >>> summary = lancefeed.ingest_folder("cifar10/", "cifar10.lance")  # doctest: +SKIP
    >>> summary.rows, len(summary.skipped)  # doctest: +SKIP
    (60000, 0)

Interrupted ingests. An ingest commits every ``commit_every`` files (a Lance
``write_dataset`` per chunk, so each chunk is a dataset version of its own): a
killed ingest loses at most the chunk in progress. Each chunk's commit carries, in
its Lance transaction properties (key ``lancefeed.ingest``), a JSON record of the
source, the options that shape the rows, how many files (in ingest order) are
committed and a digest of their names. ``resume=True`` reads the latest record and
continues after it; it refuses when the source or the options differ.

    >>> lancefeed.ingest_folder("imagenet/train/", "in.lance", resume=True)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from itertools import islice
from typing import Any, Callable, Iterator, Sequence, Union

import pyarrow as pa

from lancefeed._core import DecodeError, decode_image, image_info
from lancefeed.restart import add_restart_index
from lancefeed.masks import encode_png, label_mask

__all__ = ["IngestError", "IngestSummary", "ingest_coco", "ingest_folder"]

PathLike = Union[str, "os.PathLike[str]"]

_MODES = ("create", "overwrite", "append")
# A batch is flushed at this many encoded bytes even if it has fewer rows than
# batch_size: it keeps one Arrow binary array far below its 2 GiB offset limit
# and keeps memory bounded when files are large.
_MAX_BATCH_BYTES = 64 * 1024 * 1024

# Files per commit. Each chunk becomes one Lance version and (at least) one fragment:
# 10,000 ImageNet-sized files are about 1 GiB, a minute or less of reading to redo after
# a kill, and ImageNet's 1.28 M files make ~130 fragments, which readers handle well.
COMMIT_EVERY = 10_000
# The transaction property holding an ingest's resume record (a JSON object).
_RECORD_KEY = "lancefeed.ingest"
_RECORD_FORMAT = 1
# What Lance puts in a dataset folder. A folder holding only these but no manifest is the
# leftover of a write killed before its first commit: nothing in it can be read back.
_LANCE_ENTRIES = frozenset({"data", "_versions", "_transactions", "_indices", "_deletions", "_refs"})

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

# Extensions looked for when matching a mask file to an image by its stem.
_MASK_EXTENSIONS = (".png", ".webp", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")


def _with_mask(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the ``mask`` column right after ``image``."""
    return schema.insert(schema.get_field_index("image") + 1, MASK_FIELD)


class IngestError(ValueError):
    """A file could not be ingested and ``strict=True`` was asked for.

    The message names the file and the reason, e.g.
    ``"cats/broken.jpg: not an image (unknown format)"``.
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
            committed, which this call (``resume=True``) did not read again.

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

    def __str__(self) -> str:
        text = f"wrote {self.rows} rows to {self.uri}, skipped {len(self.skipped)} file(s)"
        if self.resumed_from:
            text += f" (resumed after {self.resumed_from} file(s) committed before)"
        return text


class _RowError(Exception):
    """A row's extra columns could not be made; the message is the reason it is skipped."""


# Makes a row's columns that need the image's header (width, height), e.g. its mask;
# runs on a reader thread and raises _RowError to skip the row.
_Derive = Callable[[int, int], "dict[str, Any]"]


@dataclass
class _Item:
    """One file to ingest; ``extra`` holds the row's other columns, ``derive`` makes more."""

    path: Path
    extra: dict[str, Any]
    derive: _Derive | None = None


@dataclass
class _Loaded:
    item: _Item
    data: bytes | None = None
    width: int = 0
    height: int = 0
    error: str | None = None
    derived: dict[str, Any] = field(default_factory=dict)


def _display(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _load(item: _Item, verify: bool, restart: bool = False) -> _Loaded:
    """Read one file and parse its header; never raises (errors are data). With
    ``restart``, a JPEG is rewritten with its restart index (lancefeed.restart)."""
    try:
        data = item.path.read_bytes()
    except OSError as exc:
        return _Loaded(item, error=f"unreadable ({exc.strerror or exc})")
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
        return _Loaded(item, error=f"not a valid image ({exc})")
    derived: dict[str, Any] = {}
    if item.derive is not None:
        try:
            derived = item.derive(int(width), int(height))
        except _RowError as exc:
            return _Loaded(item, error=str(exc))
    return _Loaded(item, data=data, width=int(width), height=int(height), derived=derived)


def _check_mode(out: PathLike, mode: str) -> str:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {', '.join(_MODES)}; got {mode!r}")
    return os.fspath(out)


def _is_local(uri: str) -> bool:
    return "://" not in uri


def _has_version(uri: str, storage_options: dict[str, str] | None = None) -> bool:
    """Whether ``uri`` is a Lance dataset with at least one committed version."""
    if _is_local(uri):
        versions = Path(uri) / "_versions"
        return versions.is_dir() and any(p.suffix == ".manifest" for p in versions.iterdir())
    import lance

    try:
        lance.dataset(uri, storage_options=storage_options)
    except (ValueError, OSError):
        return False
    return True


def _record_of(tx: Any) -> dict[str, Any] | None:
    props = getattr(tx, "transaction_properties", None) or {}
    text = props.get(_RECORD_KEY)
    return None if text is None else json.loads(text)


def _latest_record(
    uri: str, *, search: bool, storage_options: dict[str, str] | None = None
) -> tuple[dict[str, Any], int] | None:
    """The resume record of the newest ingest chunk in ``uri``'s history, and its version.

    Without ``search`` only the latest version is looked at: enough to recognise an
    ingest that was killed (its last chunk is the latest commit) without reading the
    whole history of a large dataset. With it, older versions are searched too, so a
    commit made after the ingest (an index, say) does not hide its record.
    """
    import lance

    ds = lance.dataset(uri, storage_options=storage_options)
    oldest = 1 if search else ds.version
    for version in range(ds.version, oldest - 1, -1):
        try:
            tx = ds.read_transaction(version)
        except (ValueError, OSError):  # the version or its transaction was cleaned up
            continue
        record = _record_of(tx)
        if record is not None:
            return record, version
    return None


def _describe(record: dict[str, Any]) -> str:
    src = record.get("source", {})
    what = src.get("root") if src.get("kind") == "folder" else src.get("annotations")
    return f"{src.get('kind', '?')} {what}"


def _leftover_entries(uri: str) -> list[str]:
    return sorted(os.listdir(uri))


def _check_out(uri: str, mode: str, resume: bool, storage_options: dict[str, str] | None = None) -> None:
    """Refuse, before any work, an ``out`` that this ingest must not write into.

    ``create`` needs ``out`` absent; ``append`` refuses to add a second source on top of
    an ingest that was interrupted (its files would come after a hole). Each refusal
    says what was found and how to go on.
    """
    if resume and mode == "overwrite":
        raise ValueError(
            "resume=True continues an interrupted ingest and mode='overwrite' discards it; "
            "pass one of them (CLI: --resume or --overwrite)"
        )
    if resume or mode == "overwrite":
        return  # resume decides once the files are listed; overwrite takes anything
    exists = os.path.exists(uri) if _is_local(uri) else _has_version(uri, storage_options)
    if not exists:
        return
    if not _has_version(uri, storage_options):
        if mode == "append":
            return  # Lance creates the dataset, as it always has
        entries = _leftover_entries(uri)
        if set(entries) <= _LANCE_ENTRIES:
            raise FileExistsError(
                f"{uri} already exists but holds no committed Lance version (found only "
                f"{', '.join(entries) or 'nothing'}): an ingest was killed before its first "
                "commit, and nothing in it can be kept. Pass resume=True (CLI: --resume) to "
                "write it from the start in place, or mode='overwrite' (CLI: --overwrite)"
            )
        raise FileExistsError(
            f"{uri} already exists and is not a Lance dataset (it holds "
            f"{', '.join(entries[:5])}{', ...' if len(entries) > 5 else ''}); choose another "
            "output or pass mode='overwrite' (CLI: --overwrite) to replace it"
        )
    found = _latest_record(uri, search=False, storage_options=storage_options)
    unfinished = found is not None and not found[0].get("done", False)
    if unfinished:
        record, version = found  # type: ignore[misc]
        what = (
            f"{uri} holds an unfinished ingest of {_describe(record)}: "
            f"{record['items_committed']} of {record['items_total']} files committed "
            f"(version {version}; the rest was interrupted)."
        )
        raise FileExistsError(
            f"{what} Pass resume=True (CLI: --resume) to continue it, or mode='overwrite' "
            "(CLI: --overwrite) to start again" + ("" if mode == "create" else " before appending")
        )
    if mode == "create":
        raise FileExistsError(
            f"{uri} already exists; pass mode='overwrite' (CLI: --overwrite) to replace it "
            "or mode='append' (CLI: --append) to add rows"
        )


def _item_key(item: _Item) -> bytes:
    """What names an item in the digest: its filename (and COCO image id)."""
    return json.dumps([item.extra.get("filename"), item.extra.get("image_id")]).encode() + b"\n"


def _digest(items: Sequence[_Item], end: int) -> "hashlib._Hash":
    h = hashlib.sha256()
    for item in items[:end]:
        h.update(_item_key(item))
    return h


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _resume_point(
    uri: str, mode: str, record: dict[str, Any], items: Sequence[_Item], storage_options: dict[str, str] | None = None
) -> tuple[int, str, bool]:
    """Where a ``resume=True`` ingest starts: ``(files already committed, write mode, done)``.

    ``done``: the ingest recorded in ``uri`` finished already; nothing is to be written.

    Raises ``ValueError`` / ``FileExistsError`` (saying why) when ``uri`` holds
    another ingest, or files that are not a Lance dataset.
    """
    if not _has_version(uri, storage_options):
        if _is_local(uri) and os.path.exists(uri):
            entries = _leftover_entries(uri)
            if not set(entries) <= _LANCE_ENTRIES:
                raise FileExistsError(
                    f"{uri} exists and is not a Lance dataset (it holds {', '.join(entries[:5])}"
                    f"{', ...' if len(entries) > 5 else ''}); resume only takes over the leftover "
                    "of an interrupted ingest. Choose another output"
                )
            # Killed before its first commit: these files are not part of any version, so
            # removing them loses nothing and keeps them from lingering as garbage.
            for name in entries:
                shutil.rmtree(Path(uri) / name)
            print(
                f"lancefeed: {uri} held no committed version (an ingest killed before its "
                "first commit); writing it from the start",
                file=sys.stderr,
            )
        return 0, mode, False
    found = _latest_record(uri, search=True, storage_options=storage_options)
    old = None if found is None else found[0]
    fresh_append = mode == "append" and (
        old is None or (old.get("done") and old.get("source") != record["source"])
    )
    if fresh_append:
        return 0, "append", False  # another source appended earlier: this one starts now
    if old is None:
        raise ValueError(
            f"cannot resume {uri}: it was not written by a resumable lancefeed ingest (no "
            f"'{_RECORD_KEY}' record in its history), so there is nothing to continue. Pass "
            "mode='overwrite' (CLI: --overwrite) to replace it"
        )
    differing = [
        (part, key)
        for part in ("source", "options")
        for key in sorted(set(old.get(part, {})) | set(record[part]))
        if old.get(part, {}).get(key) != record[part].get(key)
    ]
    if differing:
        why = "from another source" if differing[0][0] == "source" else "with other options"
        diffs = [f"{key} was {old[part].get(key)!r}, now {record[part].get(key)!r}" for part, key in differing]
        raise ValueError(
            f"cannot resume {uri}: it was written {why} ({'; '.join(diffs)}). Resume with "
            "the same source and options, or pass mode='overwrite' (CLI: --overwrite) to start again"
        )
    committed = int(old["items_committed"])
    if old.get("done"):
        return committed, "append", True
    if committed > len(items) or _digest(items, committed).hexdigest() != old["digest"]:
        raise ValueError(
            f"cannot resume {uri}: the files of {_describe(old)} changed since it was "
            f"interrupted (the first {committed} files, in ingest order, are not the ones "
            "committed), so skipping them would lose or repeat files. Pass mode='overwrite' "
            "(CLI: --overwrite) to start again"
        )
    return committed, "append", False


def _loaded_stream(items: Sequence[_Item], *, num_threads: int | None, verify: bool, restart: bool = False) -> Iterator[_Loaded]:
    """Load files in parallel, yielding them in input order.

    A few files per thread are in flight: enough to keep the threads busy, few
    enough that memory does not grow with the number or size of the files.
    """
    workers = num_threads or os.cpu_count() or 1
    window = 4 * workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lancefeed-ingest") as pool:
        pending: deque[Future[_Loaded]] = deque()
        it = iter(items)
        for item in it:
            pending.append(pool.submit(_load, item, verify, restart))
            if len(pending) >= window:
                break
        while pending:
            loaded = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(_load, nxt, verify, restart))
            yield loaded


def _write(
    items: Sequence[_Item],
    uri: str,
    schema: pa.Schema,
    *,
    root: Path,
    strict: bool,
    batch_size: int,
    num_threads: int | None,
    mode: str,
    progress: bool,
    verify: bool,
    desc: str,
    blob: bool = False,
    enable_stable_row_ids: bool = False,
    record: dict[str, Any] | None = None,
    start: int = 0,
    commit_every: int = COMMIT_EVERY,
    restart_index: bool = False,
    storage_options: dict[str, str] | None = None,
) -> IngestSummary:
    """Write ``items[start:]`` to ``uri``, one commit per ``commit_every`` items.

    ``mode`` is the first commit's; later ones append. Each commit carries ``record``
    (source and options) with the number of items committed so far, so a killed
    ingest can be resumed after its last commit.
    """
    import lance
    from tqdm import tqdm

    if blob:
        # Lance's blob v2 column: large images are kept out of the row data (packed or
        # in their own files), so scans of the other columns skip them.
        schema = schema.set(schema.get_field_index("image"), lance.blob_field("image"))

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    began = time.perf_counter()
    skipped: list[tuple[str, str]] = []
    rows = 0
    failure: list[IngestError] = []
    extra_names = [f.name for f in schema if f.name not in ("image", "width", "height")]
    bar = tqdm(total=len(items), initial=start, desc=desc, unit="img", file=sys.stderr, disable=not progress)
    stream = _loaded_stream(items[start:], num_threads=num_threads, verify=verify, restart=restart_index)

    def batches(count: int) -> Iterator[pa.RecordBatch]:
        """The rows of the stream's next ``count`` items (one commit's worth)."""
        nonlocal rows
        cols: dict[str, list[Any]] = {name: [] for name in schema.names}
        nbytes = 0

        def flush() -> pa.RecordBatch:
            nonlocal nbytes
            data = {**cols, "image": lance.blob_array(cols["image"])} if blob else cols
            batch = pa.RecordBatch.from_pydict(data, schema=schema)
            for values in cols.values():
                values.clear()
            nbytes = 0
            return batch

        for loaded in islice(stream, count):
            bar.update(1)
            if loaded.error is not None:
                shown = _display(loaded.item.path, root)
                if strict:
                    failure.append(IngestError(f"{shown}: {loaded.error}"))
                    raise failure[0]
                skipped.append((shown, loaded.error))
                bar.set_postfix(skipped=len(skipped), refresh=False)
                continue
            assert loaded.data is not None
            cols["image"].append(loaded.data)
            cols["width"].append(loaded.width)
            cols["height"].append(loaded.height)
            values = {**loaded.item.extra, **loaded.derived}
            for name in extra_names:
                cols[name].append(values[name])
            nbytes += len(loaded.data)
            nbytes += sum(len(v) for v in loaded.derived.values() if isinstance(v, bytes))
            rows += 1
            if len(cols["image"]) >= batch_size or nbytes >= _MAX_BATCH_BYTES:
                yield flush()
        if cols["image"]:
            yield flush()

    digest = _digest(items, start)
    done = start
    write_mode = mode
    try:
        # At least one commit, even with nothing to write: it creates the (empty)
        # dataset as before, and records the ingest as done.
        while True:
            end = min(done + commit_every, len(items))
            for item in items[done:end]:
                digest.update(_item_key(item))
            # The record is fixed before the chunk is read (Lance takes transaction
            # properties when the write starts), which is why chunks count items, not
            # rows or bytes. It is committed atomically with the chunk's rows.
            state = {
                "format": _RECORD_FORMAT,
                **(record or {}),
                "items_total": len(items),
                "items_committed": end,
                "digest": digest.hexdigest(),
                "done": end == len(items),
            }
            reader = pa.RecordBatchReader.from_batches(schema, batches(end - done))
            # Only asked for, and only when the dataset is made: on append the
            # dataset's own setting stands.
            extra = {"enable_stable_row_ids": True} if enable_stable_row_ids and write_mode != "append" else {}
            try:
                lance.write_dataset(
                    reader,
                    uri,
                    schema=schema,
                    mode=write_mode,
                    transaction_properties={_RECORD_KEY: json.dumps(state)},
                    storage_options=storage_options,
                    **extra,
                )
            except Exception:
                # Lance re-raises an error of the batch stream as its own OSError with the
                # traceback pasted in; raise ours instead so the user sees the file and reason.
                if failure:
                    raise failure[0] from None
                raise
            done, write_mode = end, "append"
            if done >= len(items):
                break
    finally:
        stream.close()
        bar.close()
    if rows == 0 and mode != "append" and start == 0:
        # Lance writes an empty dataset happily; an empty ingest is almost always a
        # wrong path, so say so rather than leave an empty table behind silently.
        print(f"lancefeed: warning: no images were written to {uri}", file=sys.stderr)
    return IngestSummary(
        uri=uri, rows=rows, skipped=skipped, seconds=time.perf_counter() - began, resumed_from=start
    )


def _ingest(
    items: Sequence[_Item],
    uri: str,
    schema: pa.Schema,
    record: dict[str, Any],
    *,
    mode: str,
    resume: bool,
    **kwargs: Any,
) -> IngestSummary:
    """Find where to start (``resume``), then write; a finished ingest is left as is."""
    if kwargs["commit_every"] < 1:
        # Checked before resume may clear a leftover folder.
        raise ValueError(f"commit_every must be >= 1; got {kwargs['commit_every']}")
    start, write_mode = 0, mode
    if resume:
        began = time.perf_counter()
        start, write_mode, done = _resume_point(uri, mode, record, items, kwargs.get("storage_options"))
        if done:
            print(f"lancefeed: {uri} is complete already ({start} files); nothing to resume", file=sys.stderr)
            return IngestSummary(uri=uri, rows=0, seconds=time.perf_counter() - began, resumed_from=start)
    return _write(items, uri, schema, mode=write_mode, record=record, start=start, **kwargs)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _files_under(folder: Path) -> list[Path]:
    """All non-hidden files below ``folder`` (recursively), sorted."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if not _is_hidden(f))
    return found


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p.name))


def _has_files(folder: Path) -> bool:
    return any(p.is_file() and not _is_hidden(p.name) for p in folder.iterdir())


def _flat_items(root: Path) -> list[_Item]:
    """The files directly in ``root``: a segmentation dataset without labels."""
    files = sorted(p for p in root.iterdir() if p.is_file() and not _is_hidden(p.name))
    return [_Item(p, {"filename": p.name, "label": None, "split": None}) for p in files]


def _folder_items(root: Path, masks: Path | None = None) -> list[_Item]:
    """List the files of an ImageFolder tree, with their label and split.

    ``root/<label>/...`` gives no split; ``root/<split>/<label>/...`` gives one. With
    ``masks``, a ``root`` without sub-folders is a flat folder of images (no label),
    and a ``masks`` folder inside ``root`` is not taken for a label.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; expected ROOT/<label>/<image files>")
    top = [d for d in _subdirs(root) if masks is None or d.resolve() != masks.resolve()]
    if not top and masks is not None:
        return _flat_items(root)
    if not top:
        raise ValueError(
            f"{root} has no sub-folders; expected ROOT/<label>/<image files> "
            "or ROOT/<split>/<label>/<image files> (a flat folder of images needs masks=)"
        )
    # A split level exists when no top-level folder holds files itself: then every
    # top-level folder is a split and its sub-folders are labels. Otherwise, as in
    # torchvision's ImageFolder, top-level folders are labels and files nested deeper
    # inside them belong to them.
    split_level = not any(_has_files(d) for d in top)
    items: list[_Item] = []
    groups = (
        [(d.name, lab) for d in top for lab in _subdirs(d)]
        if split_level
        else [(None, d) for d in top]
    )
    for split, label_dir in groups:
        for path in _files_under(label_dir):
            extra = {
                "filename": path.relative_to(root).as_posix(),
                "label": label_dir.name,
                "split": split,
            }
            items.append(_Item(path, extra))
    return items


def _mask_index(masks: Path) -> dict[tuple[str, str], Path]:
    """Mask files by (folder relative to ``masks``, stem); ``.png`` wins over other extensions."""
    if not masks.is_dir():
        raise FileNotFoundError(f"{masks} is not a folder; expected the masks folder mirroring ROOT")
    index: dict[tuple[str, str], Path] = {}
    rank = {ext: i for i, ext in enumerate(_MASK_EXTENSIONS)}
    for path in _files_under(masks):
        ext = path.suffix.lower()
        if ext not in rank:
            continue
        key = (path.parent.relative_to(masks).as_posix(), path.stem)
        if key not in index or rank[ext] < rank[index[key].suffix.lower()]:
            index[key] = path
    return index


def _read_mask(mask: Path | None, expected: Path, width: int, height: int) -> dict[str, Any]:
    """The ``mask`` column of one image: the file's bytes, checked against the image size."""
    if mask is None:
        raise _RowError(f"no mask {expected} (nor another image file of that stem)")
    try:
        data = mask.read_bytes()
    except OSError as exc:
        raise _RowError(f"mask {mask} unreadable ({exc.strerror or exc})") from None
    try:
        mask_w, mask_h, _fmt = image_info(data)
    except DecodeError as exc:
        raise _RowError(f"mask {mask} is not a valid image ({exc})") from None
    if (mask_w, mask_h) != (width, height):
        raise _RowError(f"mask {mask} is {mask_w}x{mask_h} but the image is {width}x{height}")
    return {"mask": data}


def _attach_masks(items: list[_Item], root: Path, masks: Path) -> None:
    """Give each image the reader of its mask, ``masks/<same folders>/<same stem>.*``."""
    index = _mask_index(masks)
    for item in items:
        rel = item.path.relative_to(root)
        found = index.get((rel.parent.as_posix(), rel.stem))
        expected = masks / rel.parent / (rel.stem + ".png")
        item.derive = functools.partial(_read_mask, found, expected)


def ingest_folder(
    root: PathLike,
    out: PathLike,
    *,
    masks: PathLike | None = None,
    strict: bool = False,
    batch_size: int = 256,
    num_threads: int | None = None,
    mode: str = "create",
    progress: bool = True,
    verify: bool = False,
    blob: bool = False,
    enable_stable_row_ids: bool = False,
    resume: bool = False,
    commit_every: int = COMMIT_EVERY,
    restart_index: bool = False,
    storage_options: dict[str, str] | None = None,
) -> IngestSummary:
    """Write an ImageFolder tree to a Lance dataset.

    Layout: ``root/<label>/<image files>`` or, with one level of split folders,
    ``root/<split>/<label>/<image files>`` (e.g. ``train/``, ``valid/``, ``test/``).
    The split level is recognised when no top-level folder holds files itself.
    Files deeper inside a label folder belong to that label; hidden files are ignored.

    Columns: ``image`` (binary, the file's bytes as is), ``filename`` (the path
    relative to ``root``), ``label`` (string), ``split`` (string, null without a
    split level), ``width``, ``height`` (int32, from the image header). Rows are
    ordered by split, label and path.

    With ``masks`` (a segmentation dataset), a ``mask`` column (binary, the mask
    file's bytes as is) follows ``image``. ``masks`` mirrors ``root``: the mask of
    ``root/a/b/x.jpg`` is ``masks/a/b/x.png`` (any image extension, same stem; ``.png``
    first). Its size must equal the image's. ``root`` may then also be a flat folder
    of images without label sub-folders (``label`` is null).

    Args:
        root: the folder to read.
        out: the Lance dataset to write (a path or an object store URI).
        masks: the folder of masks mirroring ``root`` (see above).
        strict: raise :class:`IngestError` on the first unreadable or non-image file
            (or a missing or wrong-sized mask) instead of skipping it (skipped files
            are listed in the summary with the reason). The chunks committed before
            it stay: fix the file and rerun with ``resume=True``.
        batch_size: rows per written record batch.
        num_threads: reader threads (default: the number of cores).
        mode: ``"create"`` (fail if ``out`` exists), ``"overwrite"`` or ``"append"``.
        progress: show a progress bar on stderr.
        verify: fully decode every image rather than only parse its header, which
            also catches truncated files (slower).
        blob: write ``image`` as a Lance blob v2 column (``lance.blob_field``): Lance
            keeps large images out of the row data, so reading the other columns
            skips them. The loader reads it like a binary column.
        enable_stable_row_ids: give rows ids that survive compaction and updates
            (Lance's stable row ids), so a permutation or checkpoint keeps pointing at
            the same rows. Only on ``mode="create"``/``"overwrite"``.
        resume: continue an ingest into ``out`` that was interrupted (killed, or
            stopped by ``strict``), after its last commit: files already committed
            are not read again, so every file ends up in ``out`` once. ``out`` must
            have been written from the same source with the same ``masks``,
            ``strict``, ``verify``, ``blob`` and ``enable_stable_row_ids``, else
            ``ValueError`` says what differs. A finished ``out`` is left as is (0 rows
            written); a missing one is written from the start, as is a folder left by
            an ingest killed before its first commit (it holds nothing committed).
            Not with ``mode="overwrite"``.
        commit_every: files per commit (each a dataset version). A kill loses at
            most the chunk in progress; a reader of ``out`` sees whole chunks only.
        restart_index: store each JPEG rewritten losslessly with a restart marker after
            every MCU and an index (:func:`lancefeed.restart.add_restart_index`): the
            same pixels, and random crops that entropy-decode only their own MCUs.
        storage_options: the object store options for ``out`` (an ``s3://``, ``gs://``
            or ``az://`` URI), as Lance takes them: credentials, endpoint, region. They
            are passed to every read and write of ``out`` and never recorded in it.

    Example:
        >>> summary = ingest_folder("cinic10/", "cinic10.lance")  # doctest: +SKIP
        >>> print(summary)  # doctest: +SKIP
        wrote 270000 rows to cinic10.lance, skipped 0 file(s)
        >>> ingest_folder("ade20k/images/", "ade.lance",
        ...               masks="ade20k/annotations/")  # doctest: +SKIP
        >>> ingest_folder("imagenet/train/", "imagenet.lance", blob=True,
        ...               enable_stable_row_ids=True)  # doctest: +SKIP
        >>> # killed half-way? this continues after the last commit:
        >>> ingest_folder("imagenet/train/", "imagenet.lance", blob=True,
        ...               enable_stable_row_ids=True, resume=True)  # doctest: +SKIP
    """
    root_path = Path(root)
    masks_path = None if masks is None else Path(masks)
    uri = _check_mode(out, mode)
    _check_out(uri, mode, resume, storage_options)
    items = _folder_items(root_path, masks_path)
    if masks_path is not None:
        _attach_masks(items, root_path, masks_path)
    record = {
        "source": {
            "kind": "folder",
            "root": str(root_path.resolve()),
            "masks": None if masks_path is None else str(masks_path.resolve()),
        },
        "options": {"strict": strict, "verify": verify, "blob": blob, "enable_stable_row_ids": enable_stable_row_ids,
                    **({"restart_index": True} if restart_index else {})},
    }
    return _ingest(
        items,
        uri,
        FOLDER_SCHEMA if masks_path is None else _with_mask(FOLDER_SCHEMA),
        record,
        resume=resume,
        commit_every=commit_every,
        root=root_path,
        strict=strict,
        batch_size=batch_size,
        num_threads=num_threads,
        mode=mode,
        progress=progress,
        verify=verify,
        desc="ingest",
        blob=blob,
        enable_stable_row_ids=enable_stable_row_ids,
        restart_index=restart_index,
        storage_options=storage_options,
    )


def _read_coco(ann_path: Path) -> dict[str, Any]:
    try:
        with open(ann_path, encoding="utf-8") as f:
            coco = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{ann_path} is not valid JSON: {exc}") from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise ValueError(
            f"{ann_path} is not a COCO annotation file: expected a JSON object with an "
            "'images' list (and 'annotations', 'categories')"
        )
    return coco


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _coco_boxes(
    ann_path: Path, image_id: int, anns: list[tuple[int, dict[str, Any]]], names: dict[Any, str]
) -> dict[str, list[Any]]:
    """The per-box columns of one image, from its ``(index in the file, annotation)`` pairs."""
    cols: dict[str, list[Any]] = {
        k: [] for k in ("boxes", "categories", "category_ids", "iscrowd", "area", "annotation_ids")
    }
    for index, ann in anns:
        # Without an id, the annotation's position in the file still identifies it.
        ann_id = ann.get("id", index)
        where = f"{ann_path}: annotation {ann_id!r} of image {image_id}"
        bbox = ann.get("bbox")
        if bbox is None or len(bbox) != 4:
            raise ValueError(f"{where} has bbox {bbox!r}; expected [x, y, width, height]")
        cat = ann.get("category_id")
        if cat not in names or not _is_int(cat):
            raise ValueError(f"{where} has category_id {cat!r}, which is not in 'categories'")
        if not _is_int(ann_id):
            raise ValueError(f"{where} has id {ann_id!r}; expected an integer")
        area = ann.get("area")
        cols["boxes"].append([float(v) for v in bbox])
        cols["categories"].append(names[cat])
        cols["category_ids"].append(cat)
        cols["iscrowd"].append(bool(ann.get("iscrowd", False)))
        cols["area"].append(float(bbox[2]) * float(bbox[3]) if area is None else float(area))
        cols["annotation_ids"].append(ann_id)
    return cols


def _check_mask_categories(
    ann_path: Path, anns: list[tuple[int, dict[str, Any]]], names: dict[Any, str]
) -> None:
    """A mask pixel holds a category id in one byte: ids above 255 cannot be painted."""
    for _index, ann in anns:
        cat = ann.get("category_id")
        if ann.get("segmentation") is not None and _is_int(cat) and not 0 <= cat <= 255:
            raise ValueError(
                f"{ann_path}: category {names.get(cat, '?')!r} has id {cat}, which does not fit in "
                "an 8-bit mask (0..255); ingest without masks or renumber the categories"
            )


def _coco_mask(
    painted: list[tuple[Any, int, Any]], size: tuple[int, int] | None, width: int, height: int
) -> dict[str, Any]:
    """The ``mask`` column of one COCO image; ``size`` (from the JSON) wins over the header's."""
    w, h = size or (width, height)
    try:
        return {"mask": encode_png(label_mask(painted, h, w))}
    except ValueError as exc:
        raise _RowError(f"cannot make the mask: {exc}") from None


def _coco_items(annotations: PathLike, images_dir: Path, masks: bool = False) -> list[_Item]:
    """One item per COCO image, with its per-box columns (and, with ``masks``, its mask)."""
    ann_path = Path(annotations)
    coco = _read_coco(ann_path)
    names = {c["id"]: str(c["name"]) for c in coco.get("categories", [])}
    per_image: dict[Any, list[tuple[int, dict[str, Any]]]] = {}
    for index, ann in enumerate(coco.get("annotations", [])):
        per_image.setdefault(ann["image_id"], []).append((index, ann))

    items: list[_Item] = []
    for img in coco["images"]:
        try:
            image_id, file_name = img["id"], img["file_name"]
        except KeyError as exc:
            raise ValueError(
                f"{ann_path}: an entry of 'images' lacks {exc.args[0]!r}; "
                "expected 'id' and 'file_name'"
            ) from None
        if not _is_int(image_id):
            raise ValueError(f"{ann_path}: image {file_name!r} has id {image_id!r}; expected an integer")
        anns = per_image.get(image_id, [])
        extra = {"image_id": image_id, "filename": str(file_name)}
        extra.update(_coco_boxes(ann_path, image_id, anns, names))
        item = _Item(images_dir / file_name, extra)
        if masks:
            _check_mask_categories(ann_path, anns, names)
            painted = [(ann.get("id", i), ann["category_id"], ann.get("segmentation")) for i, ann in anns]
            w, h = img.get("width"), img.get("height")
            size = (w, h) if _is_int(w) and _is_int(h) and w > 0 and h > 0 else None
            item.derive = functools.partial(_coco_mask, painted, size)
        items.append(item)
    return items


def ingest_coco(
    annotations: PathLike,
    images_dir: PathLike,
    out: PathLike,
    *,
    masks: bool = False,
    strict: bool = False,
    batch_size: int = 256,
    num_threads: int | None = None,
    mode: str = "create",
    progress: bool = True,
    verify: bool = False,
    blob: bool = False,
    enable_stable_row_ids: bool = False,
    resume: bool = False,
    commit_every: int = COMMIT_EVERY,
    restart_index: bool = False,
    storage_options: dict[str, str] | None = None,
) -> IngestSummary:
    """Write a COCO detection dataset (annotation JSON + image folder) to Lance.

    One row per entry of the file's ``images``, in file order. Columns: ``image``
    (binary), ``image_id`` (int64), ``filename`` (the COCO ``file_name``), ``width``,
    ``height`` (int32, from the image header), ``boxes`` (list of
    ``[x, y, width, height]`` float32 boxes, as in COCO), ``categories`` (list of
    category names), then, aligned with them (one entry per annotation, in file
    order): ``category_ids`` (list of int64, COCO's ``category_id``), ``iscrowd``
    (list of bool, false when absent), ``area`` (list of float32, the annotation's
    ``area``, else its box's width * height), ``annotation_ids`` (list of int64, the
    annotation's ``id``, else its index in the file's ``annotations``). Images without
    annotations get empty lists.

    With ``masks=True``, a ``mask`` column follows ``image``: an 8-bit grayscale PNG
    of the image's size (the ``width``/``height`` of its COCO entry, else its header)
    whose pixels hold the ``category_id`` of the annotation covering them, 0 for
    background. Annotations are painted in file order (a later one wins where they
    overlap), crowd ones included; polygons and RLEs (uncompressed or compressed)
    are read, an annotation without ``segmentation`` paints nothing (see
    :mod:`lancefeed.masks`). Category ids above 255 raise ``ValueError``; an image
    whose segmentation cannot be read (e.g. an RLE of another size) is skipped, or
    raises :class:`IngestError` with ``strict``.

    Args: as :func:`ingest_folder`; ``annotations`` is the JSON file and
    ``images_dir`` the folder its ``file_name`` entries are relative to; ``masks``
    adds the ``mask`` column. ``resume`` also needs the annotation file unchanged
    (its SHA-256 is recorded) and the same ``masks``.

    Example:
        >>> s = ingest_coco("annotations/instances_val2017.json", "val2017/",
        ...                 "coco-val.lance")  # doctest: +SKIP
        >>> print(s)  # doctest: +SKIP
        wrote 5000 rows to coco-val.lance, skipped 0 file(s)
        >>> ingest_coco("annotations/instances_val2017.json", "val2017/",
        ...             "coco-val-masks.lance", masks=True)  # doctest: +SKIP
        >>> ingest_coco("annotations/instances_val2017.json", "val2017/",
        ...             "coco-val-masks.lance", masks=True, resume=True)  # doctest: +SKIP
    """
    images_path = Path(images_dir)
    if not images_path.is_dir():
        raise FileNotFoundError(f"{images_path} is not a folder; expected the COCO images folder")
    uri = _check_mode(out, mode)
    _check_out(uri, mode, resume, storage_options)
    items = _coco_items(annotations, images_path, masks)
    ann_path = Path(annotations)
    record = {
        "source": {
            "kind": "coco",
            "annotations": str(ann_path.resolve()),
            # Committed rows hold boxes and masks made from the file: a resume must read
            # the same one, not only the same image list.
            "annotations_sha256": _file_sha256(ann_path),
            "images_dir": str(images_path.resolve()),
        },
        "options": {
            "masks": masks,
            "strict": strict,
            "verify": verify,
            "blob": blob,
            "enable_stable_row_ids": enable_stable_row_ids,
            **({"restart_index": True} if restart_index else {}),
        },
    }
    return _ingest(
        items,
        uri,
        _with_mask(COCO_SCHEMA) if masks else COCO_SCHEMA,
        record,
        resume=resume,
        commit_every=commit_every,
        root=images_path,
        strict=strict,
        batch_size=batch_size,
        num_threads=num_threads,
        mode=mode,
        progress=progress,
        verify=verify,
        desc="ingest coco",
        blob=blob,
        enable_stable_row_ids=enable_stable_row_ids,
        restart_index=restart_index,
        storage_options=storage_options,
    )
