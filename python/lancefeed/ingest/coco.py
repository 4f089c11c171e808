"""COCO detection datasets (an annotation JSON and its image folder) to Lance, with
boxes, categories and, optionally, label masks painted from the segmentations.

Example:
    >>> summary = ingest_coco("annotations/instances_val2017.json", "val2017/", "coco-val.lance")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from lancefeed.ingest.common import COCO_SCHEMA, IngestSummary, Item, Listing, PathLike, RowError, with_mask
from lancefeed.ingest.engines import run_engine
from lancefeed.ingest.files import AnyPath, as_path
from lancefeed.ingest.masks import encode_png, label_mask
from lancefeed.ingest.options import IngestOptions
from lancefeed.ingest.resume import check_out, file_sha256

__all__ = ["coco_items", "ingest_coco", "ingest_coco_with"]

_DEFAULTS = IngestOptions()


def _read_coco(ann_path: AnyPath) -> dict[str, Any]:
    try:
        coco = json.loads(ann_path.read_bytes().decode("utf-8"))
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
    ann_path: AnyPath, image_id: int, anns: list[tuple[int, dict[str, Any]]], names: dict[Any, str]
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
    ann_path: AnyPath, anns: list[tuple[int, dict[str, Any]]], names: dict[Any, str]
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
        raise RowError(f"cannot make the mask: {exc}") from None


def coco_items(annotations: PathLike, images_dir: AnyPath, masks: bool = False) -> list[Item]:
    """One item per COCO image, with its per-box columns (and, with ``masks``, its mask)."""
    ann_path = as_path(annotations)
    coco = _read_coco(ann_path)
    names = {c["id"]: str(c["name"]) for c in coco.get("categories", [])}
    per_image: dict[Any, list[tuple[int, dict[str, Any]]]] = {}
    for index, ann in enumerate(coco.get("annotations", [])):
        per_image.setdefault(ann["image_id"], []).append((index, ann))

    items: list[Item] = []
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
        item = Item(images_dir / file_name, extra)
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
    strict: bool = _DEFAULTS.strict,
    batch_size: int = _DEFAULTS.batch_size,
    num_threads: int | None = _DEFAULTS.num_threads,
    mode: str = _DEFAULTS.mode,
    progress: bool = _DEFAULTS.progress,
    verify: bool = _DEFAULTS.verify,
    blob: bool = _DEFAULTS.blob,
    enable_stable_row_ids: bool = _DEFAULTS.enable_stable_row_ids,
    resume: bool = _DEFAULTS.resume,
    commit_every: int = _DEFAULTS.commit_every,
    restart_index: bool = _DEFAULTS.restart_index,
    storage_options: dict[str, str] | None = _DEFAULTS.storage_options,
    engine: str = _DEFAULTS.engine,
    ray_address: str | None = _DEFAULTS.ray_address,
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
    adds the ``mask`` column (painted in the reading tasks with ``engine="ray"``);
    both may be object store URIs. ``resume`` also needs the annotation file unchanged
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
        >>> ingest_coco("annotations/instances_val2017.json", "val2017/",
        ...             "coco-val.lance", engine="ray")  # doctest: +SKIP
    """
    opts = IngestOptions(strict=strict, batch_size=batch_size, num_threads=num_threads, mode=mode, progress=progress,
                         verify=verify, blob=blob, enable_stable_row_ids=enable_stable_row_ids, resume=resume,
                         commit_every=commit_every, restart_index=restart_index, storage_options=storage_options,
                         engine=engine, ray_address=ray_address)
    return ingest_coco_with(annotations, images_dir, out, opts, masks=masks)


def ingest_coco_with(annotations: PathLike, images_dir: PathLike, out: PathLike, opts: IngestOptions, *,
                     masks: bool = False) -> IngestSummary:
    """:func:`ingest_coco` with its options as one :class:`IngestOptions` (the CLI's way).

    Example:
        >>> ingest_coco_with("instances.json", "images/", "coco.lance", IngestOptions(), masks=True)  # doctest: +SKIP
    """
    opts = opts.checked()
    images_path = as_path(images_dir, opts.storage_options)
    if not images_path.is_dir():
        raise FileNotFoundError(f"{images_path} is not a folder; expected the COCO images folder")
    uri = os.fspath(out)
    check_out(uri, opts.mode, opts.resume, opts.storage_options)
    ann_path = as_path(annotations, opts.storage_options)
    items = coco_items(ann_path, images_path, masks)
    record = {
        "source": {
            "kind": "coco",
            "annotations": str(ann_path.resolve()),
            # Committed rows hold boxes and masks made from the file: a resume must read
            # the same one, not only the same image list.
            "annotations_sha256": file_sha256(ann_path) if isinstance(ann_path, Path)
            else hashlib.sha256(ann_path.read_bytes()).hexdigest(),
            "images_dir": str(images_path.resolve()),
        },
        "options": {"masks": masks, **opts.recorded()},
    }
    schema = with_mask(COCO_SCHEMA) if masks else COCO_SCHEMA
    return run_engine(Listing.of(items), uri, schema, record, opts, root=images_path, desc="ingest coco")
