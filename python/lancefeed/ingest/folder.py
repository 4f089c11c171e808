"""ImageFolder trees (``ROOT/<label>/*`` or ``ROOT/<split>/<label>/*``) and their masks
to Lance.

Example:
    >>> summary = ingest_folder("cifar10/", "cifar10.lance")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Optional

from lancefeed._core import DecodeError, image_info
from lancefeed.ingest.common import FOLDER_SCHEMA, IngestSummary, Item, Listing, PathLike, RowError, with_mask
from lancefeed.ingest.engines import run_engine
from lancefeed.ingest.files import AnyPath, as_path, files_under
from lancefeed.ingest.options import IngestOptions
from lancefeed.ingest.resume import check_out

__all__ = ["Group", "folder_groups", "folder_items", "group_items", "ingest_folder", "ingest_folder_with"]

# Extensions looked for when matching a mask file to an image by its stem.
_MASK_EXTENSIONS = (".png", ".webp", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
_DEFAULTS = IngestOptions()


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _subdirs(folder: AnyPath) -> list[AnyPath]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p.name))


def _has_files(folder: AnyPath) -> bool:
    return any(p.is_file() and not _is_hidden(p.name) for p in folder.iterdir())


@dataclass(frozen=True)
class Group:
    """One label folder of the tree (``split`` its split folder's name, or None), or, with
    ``flat``, the files directly in ROOT: the unit an ingest lists in one go (one Ray
    task lists one or a few)."""

    folder: AnyPath
    split: Optional[str] = None
    flat: bool = False


def folder_groups(root: AnyPath, masks: AnyPath | None = None) -> list[Group]:
    """The groups of an ImageFolder tree, in ingest order (the top two levels only).

    ``root/<label>/...`` gives no split; ``root/<split>/<label>/...`` gives one. With
    ``masks``, a ``root`` without sub-folders is a flat folder of images (no label),
    and a ``masks`` folder inside ``root`` is not taken for a label.

    Example:
        >>> [g.folder.name for g in folder_groups(Path("cifar10"))]  # doctest: +SKIP
        ['airplane', 'automobile', ...]
    """
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; expected ROOT/<label>/<image files>")
    top = [d for d in _subdirs(root) if masks is None or d.resolve() != masks.resolve()]
    if not top and masks is not None:
        return [Group(root, flat=True)]
    if not top:
        raise ValueError(
            f"{root} has no sub-folders; expected ROOT/<label>/<image files> "
            "or ROOT/<split>/<label>/<image files> (a flat folder of images needs masks=)"
        )
    # A split level exists when no top-level folder holds files itself: then every
    # top-level folder is a split and its sub-folders are labels. Otherwise, as in
    # torchvision's ImageFolder, top-level folders are labels and files nested deeper
    # inside them belong to them.
    if not any(_has_files(d) for d in top):
        return [Group(lab, d.name) for d in top for lab in _subdirs(d)]
    return [Group(d) for d in top]


def group_items(root: AnyPath, group: Group, masks: AnyPath | None = None) -> list[Item]:
    """The items of one group, with their label and split (and the reader of each one's
    mask, with ``masks``).

    Example:
        >>> items = group_items(Path("cifar10"), Group(Path("cifar10/cat")))  # doctest: +SKIP
        >>> items[0].extra  # doctest: +SKIP
        {'filename': 'cat/0001.jpg', 'label': 'cat', 'split': None}
    """
    if group.flat:
        files = sorted(p for p in root.iterdir() if p.is_file() and not _is_hidden(p.name))
        items = [Item(p, {"filename": p.name, "label": None, "split": None}) for p in files]
    else:
        items = [
            Item(path, {"filename": path.relative_to(root).as_posix(), "label": group.folder.name, "split": group.split})
            for path in files_under(group.folder)
        ]
    if masks is not None:
        under = None if group.flat else group.folder.relative_to(root)
        _attach_masks(items, root, masks, _mask_index(masks, under))
    return items


def folder_items(root: AnyPath, masks: AnyPath | None = None) -> list[Item]:
    """List the files of an ImageFolder tree, with their label and split (see
    :func:`folder_groups`), every group in turn on this machine.

    Example:
        >>> len(folder_items(Path("cifar10")))  # doctest: +SKIP
        60000
    """
    return [item for group in folder_groups(root, masks) for item in group_items(root, group, masks)]


def _mask_index(masks: AnyPath, under: Any = None) -> dict[tuple[str, str], AnyPath]:
    """Mask files by (folder relative to ``masks``, stem) below ``masks/under``; ``.png``
    wins over other extensions."""
    index: dict[tuple[str, str], AnyPath] = {}
    rank = {ext: i for i, ext in enumerate(_MASK_EXTENSIONS)}
    for path in files_under(masks if under is None else masks / under):
        ext = path.suffix.lower()
        if ext not in rank:
            continue
        key = (path.parent.relative_to(masks).as_posix(), path.stem)
        if key not in index or rank[ext] < rank[index[key].suffix.lower()]:
            index[key] = path
    return index


def _read_mask(mask: AnyPath | None, expected: AnyPath, width: int, height: int) -> dict[str, Any]:
    """The ``mask`` column of one image: the file's bytes, checked against the image size."""
    if mask is None:
        raise RowError(f"no mask {expected} (nor another image file of that stem)")
    try:
        data = mask.read_bytes()
    except OSError as exc:
        raise RowError(f"mask {mask} unreadable ({exc.strerror or exc})") from None
    try:
        mask_w, mask_h, _fmt = image_info(data)
    except DecodeError as exc:
        raise RowError(f"mask {mask} is not a valid image ({exc})") from None
    if (mask_w, mask_h) != (width, height):
        raise RowError(f"mask {mask} is {mask_w}x{mask_h} but the image is {width}x{height}")
    return {"mask": data}


def _attach_masks(items: list[Item], root: AnyPath, masks: AnyPath, index: dict[tuple[str, str], AnyPath]) -> None:
    """Give each image the reader of its mask, ``masks/<same folders>/<same stem>.*``."""
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
            are passed to every read and write of ``out`` and never recorded in it. An
            object store ``root`` (``masks``) is read with them too.
        engine: ``"threads"`` (this machine's threads) or ``"ray"``: listing, reading,
            checking, restart-indexing and masks run as Ray Data tasks, each writing
            Lance fragments, committed once at the end (see
            :mod:`lancefeed.ingest.ray_engine`); the same rows, bytes and schema.
        ray_address: the Ray cluster to run on (``"auto"``, ``"ray://head:10001"``);
            without it, the Ray this process joined already, else a local one sized to
            this machine, stopped after the ingest.

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
        >>> ingest_folder("s3://bucket/imagenet/train/", "s3://bucket/imagenet.lance",
        ...               engine="ray", ray_address="auto")  # doctest: +SKIP
    """
    opts = IngestOptions(strict=strict, batch_size=batch_size, num_threads=num_threads, mode=mode, progress=progress,
                         verify=verify, blob=blob, enable_stable_row_ids=enable_stable_row_ids, resume=resume,
                         commit_every=commit_every, restart_index=restart_index, storage_options=storage_options,
                         engine=engine, ray_address=ray_address)
    return ingest_folder_with(root, out, opts, masks=masks)


def ingest_folder_with(root: PathLike, out: PathLike, opts: IngestOptions, *, masks: PathLike | None = None) -> IngestSummary:
    """:func:`ingest_folder` with its options as one :class:`IngestOptions` (the CLI's way).

    Example:
        >>> ingest_folder_with("cifar10/", "cifar10.lance", IngestOptions(verify=True))  # doctest: +SKIP
    """
    opts = opts.checked()
    root_path = as_path(root, opts.storage_options)
    masks_path = None if masks is None else as_path(masks, opts.storage_options)
    uri = os.fspath(out)
    check_out(uri, opts.mode, opts.resume, opts.storage_options)
    groups = folder_groups(root_path, masks_path)
    if masks_path is not None and not masks_path.is_dir():
        raise FileNotFoundError(f"{masks_path} is not a folder; expected the masks folder mirroring ROOT")
    record = {
        "source": {"kind": "folder", "root": str(root_path.resolve()),
                   "masks": None if masks_path is None else str(masks_path.resolve())},
        "options": opts.recorded(),
    }
    schema = FOLDER_SCHEMA if masks_path is None else with_mask(FOLDER_SCHEMA)
    listing = Listing(groups, functools.partial(group_items, root_path, masks=masks_path))
    return run_engine(listing, uri, schema, record, opts, root=root_path, desc="ingest")
