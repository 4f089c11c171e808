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
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, Union

import pyarrow as pa

from lancefeed._core import DecodeError, decode_image, image_info
from lancefeed.masks import encode_png, label_mask

__all__ = ["IngestError", "IngestSummary", "ingest_coco", "ingest_folder"]

PathLike = Union[str, "os.PathLike[str]"]

_MODES = ("create", "overwrite", "append")
# A batch is flushed at this many encoded bytes even if it has fewer rows than
# batch_size: it keeps one Arrow binary array far below its 2 GiB offset limit
# and keeps memory bounded when files are large.
_MAX_BATCH_BYTES = 64 * 1024 * 1024

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
        seconds: wall time of the whole ingest.

    Example:
        >>> s = IngestSummary(uri="out.lance", rows=10, skipped=[("a/x.txt", "not an image")])
        >>> print(s)
        wrote 10 rows to out.lance, skipped 1 file(s)
    """

    uri: str
    rows: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        return f"wrote {self.rows} rows to {self.uri}, skipped {len(self.skipped)} file(s)"


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


def _load(item: _Item, verify: bool) -> _Loaded:
    """Read one file and parse its header; never raises (errors are data)."""
    try:
        data = item.path.read_bytes()
    except OSError as exc:
        return _Loaded(item, error=f"unreadable ({exc.strerror or exc})")
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
    uri = os.fspath(out)
    if mode == "create" and "://" not in uri and os.path.exists(uri):
        raise FileExistsError(
            f"{uri} already exists; pass mode='overwrite' (CLI: --overwrite) to replace it "
            "or mode='append' (CLI: --append) to add rows"
        )
    return uri


def _loaded_stream(items: Sequence[_Item], *, num_threads: int | None, verify: bool) -> Iterator[_Loaded]:
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
            pending.append(pool.submit(_load, item, verify))
            if len(pending) >= window:
                break
        while pending:
            loaded = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(_load, nxt, verify))
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
) -> IngestSummary:
    import lance
    from tqdm import tqdm

    if blob:
        # Lance's blob v2 column: large images are kept out of the row data (packed or
        # in their own files), so scans of the other columns skip them.
        schema = schema.set(schema.get_field_index("image"), lance.blob_field("image"))

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    start = time.perf_counter()
    skipped: list[tuple[str, str]] = []
    rows = 0
    failure: list[IngestError] = []
    extra_names = [f.name for f in schema if f.name not in ("image", "width", "height")]

    def batches() -> Iterator[pa.RecordBatch]:
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

        bar = tqdm(total=len(items), desc=desc, unit="img", file=sys.stderr, disable=not progress)
        try:
            for loaded in _loaded_stream(items, num_threads=num_threads, verify=verify):
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
        finally:
            bar.close()

    reader = pa.RecordBatchReader.from_batches(schema, batches())
    try:
        # Only asked for: on append the dataset's own setting stands.
        extra = {"enable_stable_row_ids": True} if enable_stable_row_ids else {}
        lance.write_dataset(reader, uri, schema=schema, mode=mode, **extra)
    except Exception:
        # Lance re-raises an error of the batch stream as its own OSError with the
        # traceback pasted in; raise ours instead so the user sees the file and reason.
        if failure:
            raise failure[0] from None
        raise
    if rows == 0 and mode != "append":
        # Lance writes an empty dataset happily; an empty ingest is almost always a
        # wrong path, so say so rather than leave an empty table behind silently.
        print(f"lancefeed: warning: no images were written to {uri}", file=sys.stderr)
    return IngestSummary(uri=uri, rows=rows, skipped=skipped, seconds=time.perf_counter() - start)


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
            are listed in the summary with the reason).
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

    Example:
        >>> summary = ingest_folder("cinic10/", "cinic10.lance")  # doctest: +SKIP
        >>> print(summary)  # doctest: +SKIP
        wrote 270000 rows to cinic10.lance, skipped 0 file(s)
        >>> ingest_folder("ade20k/images/", "ade.lance",
        ...               masks="ade20k/annotations/")  # doctest: +SKIP
        >>> ingest_folder("imagenet/train/", "imagenet.lance", blob=True,
        ...               enable_stable_row_ids=True)  # doctest: +SKIP
    """
    root_path = Path(root)
    masks_path = None if masks is None else Path(masks)
    uri = _check_mode(out, mode)
    items = _folder_items(root_path, masks_path)
    if masks_path is not None:
        _attach_masks(items, root_path, masks_path)
    return _write(
        items,
        uri,
        FOLDER_SCHEMA if masks_path is None else _with_mask(FOLDER_SCHEMA),
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
    adds the ``mask`` column.

    Example:
        >>> s = ingest_coco("annotations/instances_val2017.json", "val2017/",
        ...                 "coco-val.lance")  # doctest: +SKIP
        >>> print(s)  # doctest: +SKIP
        wrote 5000 rows to coco-val.lance, skipped 0 file(s)
        >>> ingest_coco("annotations/instances_val2017.json", "val2017/",
        ...             "coco-val-masks.lance", masks=True)  # doctest: +SKIP
    """
    images_path = Path(images_dir)
    if not images_path.is_dir():
        raise FileNotFoundError(f"{images_path} is not a folder; expected the COCO images folder")
    uri = _check_mode(out, mode)
    items = _coco_items(annotations, images_path, masks)
    return _write(
        items,
        uri,
        _with_mask(COCO_SCHEMA) if masks else COCO_SCHEMA,
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
    )
