"""Reading permutation tables from lancefeed and from lancedb, pinned to their version.

A permutation table is ``row_id`` and ``split_id`` plus schema metadata. lancedb 0.40
pins it to the base table with ``base_version`` (and ``base_branch`` off the main
branch); lancefeed writes those keys too, next to its own ``uri`` and ``version``,
so each library opens the other's tables at the version they were built on. Row ids
of an unpinned read are storage addresses of another version: after a compaction
they name other rows, or none, without any error.

Example:
    >>> import pyarrow as pa
    >>> t = pa.table({"row_id": pa.array([3, 1], pa.uint64()), "split_id": pa.array([0, 0], pa.uint64())})
    >>> pinned_version(metadata(t.replace_schema_metadata({"base_version": "4"})))
    4
"""

from __future__ import annotations

import json
import re
import warnings
from typing import Any, Dict, List, Optional, Tuple, Union

import lance
import numpy as np
import pyarrow as pa

from lancefeed.permutation._common import (
    BASE_BRANCH_KEY,
    BASE_VERSION_KEY,
    ROW_ID_COLUMN,
    SPLIT_ID_COLUMN,
    SPLIT_NAMES_KEY,
)
from lancefeed.source import (
    SourceLike,
    VersionLike,
    dataset_options,
    dataset_uri,
    has_stable_row_ids,
    lancedb_dataset,
    live_row_ids,
    open_source,
)

# A pyarrow Table from execute(), a persisted table (LanceDataset or URI), or a
# lancedb Table (lancedb's execute() returns one).
PermutationTableLike = Union[pa.Table, lance.LanceDataset, str, Any]

_TAG_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def load_table(table: PermutationTableLike, storage_options: Optional[Dict[str, str]]) -> pa.Table:
    """The permutation table as a ``pyarrow.Table``, with its schema metadata.

    Example:
        >>> load_table("cifar-perm.lance", None).column_names  # doctest: +SKIP
        ['row_id', 'split_id']
    """
    if isinstance(table, pa.Table):
        out = table
    elif isinstance(table, lance.LanceDataset):
        out = table.to_table(scan_in_order=True)
    elif isinstance(table, str) or hasattr(table, "__fspath__"):
        out = open_source(table, storage_options=storage_options).to_table(scan_in_order=True)
    elif callable(getattr(table, "to_arrow", None)):
        out = table.to_arrow()  # a lancedb Table
        if not isinstance(out, pa.Table):
            raise TypeError(f"{type(table).__name__}.to_arrow() gave a {type(out).__name__}, expected a pyarrow.Table")
    else:
        raise TypeError(
            "expected a permutation table (pyarrow.Table from execute(), a persisted one as "
            f"lance.LanceDataset or URI, or a lancedb Table), got {type(table).__name__}"
        )
    missing = [c for c in (ROW_ID_COLUMN, SPLIT_ID_COLUMN) if c not in out.column_names]
    if missing:
        raise ValueError(
            f"not a permutation table: missing column(s) {missing}; expected columns "
            f"{ROW_ID_COLUMN!r} and {SPLIT_ID_COLUMN!r}, got {out.column_names}"
        )
    return out


def metadata(table: pa.Table) -> Dict[str, str]:
    """The table's schema metadata as ``str`` keys and values."""
    raw = table.schema.metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items()}


def pinned_version(meta: Dict[str, str]) -> Optional[int]:
    """The base dataset version a permutation table was built on (``None``: unpinned)."""
    built = meta.get(BASE_VERSION_KEY) or meta.get("version")
    return int(built) if built else None


def split_names(meta: Dict[str, str]) -> List[str]:
    return json.loads(meta.get(SPLIT_NAMES_KEY) or "[]")


def num_splits(table: pa.Table, meta: Dict[str, str]) -> int:
    if meta.get("num_splits"):
        return int(meta["num_splits"])
    ids = table.column(SPLIT_ID_COLUMN).to_numpy()
    return max(len(split_names(meta)), int(ids.max()) + 1 if len(ids) else 0)


def resolve_split(split: Optional[Union[str, int]], table: pa.Table, meta: Dict[str, str]) -> Tuple[int, Optional[str]]:
    names = split_names(meta)
    count = num_splits(table, meta)
    if split is None:
        split = 0
    if isinstance(split, str):
        if split not in names:
            known = f"the splits are named {names}" if names else "the table's splits have no names"
            raise ValueError(f"unknown split {split!r}: {known} (or use an index 0..{count - 1})")
        index = names.index(split)
    elif isinstance(split, (int, np.integer)) and not isinstance(split, bool):
        index = int(split)
        if not 0 <= index < max(count, 1):
            raise ValueError(f"split index {index} is out of range: the table has {count} split(s)")
    else:
        raise TypeError(f"split must be a name or an index, got {type(split).__name__}")
    name = names[index] if index < len(names) else None
    return index, name


def pinned_dataset(
    source: Optional[SourceLike],
    meta: Dict[str, str],
    version: Optional[VersionLike],
    storage_options: Optional[Dict[str, str]],
) -> lance.LanceDataset:
    """Open the dataset a permutation table reads: at the version it pins.

    A URI, a lancedb ``Table`` or ``None`` (the table's recorded URI) is opened at the
    pinned version. A ``LanceDataset`` or ``version=`` is used as given, and must be
    that version unless the dataset has stable row ids.
    """
    built = pinned_version(meta)
    branch = meta.get(BASE_BRANCH_KEY) or None
    if source is None:
        source = meta.get("uri")
        if not source:
            raise ValueError(
                "the permutation table records no dataset URI (lancedb's tables do not); "
                "expected the base dataset: a URI, a lance.LanceDataset or a lancedb Table"
            )
    if not isinstance(source, (str, lance.LanceDataset)) and not hasattr(source, "__fspath__"):
        source = lancedb_dataset(source)  # a lancedb Table: pinned like a URI, as lancedb does
        if version is None:
            version = built
    if isinstance(source, lance.LanceDataset) or version is not None:
        ds = _open_pinned(source, version, storage_options, built, meta)
    else:
        ds = _open_pinned(source, built, storage_options, built, meta)
    if branch and branch != "main" and built is not None and str(ds.version) == str(built):
        try:
            ds = ds.checkout_version((branch, built))
        except Exception as exc:  # noqa: BLE001 - any failure: say which branch is wanted
            raise ValueError(
                f"the permutation table pins version {built} of branch {branch!r} of "
                f"{dataset_uri(ds)!r}, which could not be opened: {exc}"
            ) from None
    recorded = meta.get("uri")
    if recorded and _plain_uri(recorded) != _plain_uri(dataset_uri(ds)):
        # A copied or moved dataset is legitimate, so this only warns; row ids of one
        # dataset read from another would silently give the wrong rows.
        warnings.warn(
            f"the permutation table was built on {recorded!r} but is applied to "
            f"{dataset_uri(ds)!r}; expected the same dataset (or a copy of it)",
            stacklevel=4,
        )
    if built is not None and ds.version != built and not has_stable_row_ids(ds):
        raise ValueError(
            f"the permutation was built on version {built} of {meta.get('uri', dataset_uri(ds))!r} "
            f"but is applied to version {ds.version}; without stable row ids a row id is a "
            f"storage address valid only in the version it was read from. Expected version {built}: "
            f"pass the URI (it is opened at version {built}) or open_source(uri, version={built}), "
            "or rebuild the permutation on this version"
        )
    return ds


def _open_pinned(
    source: SourceLike,
    version: Optional[VersionLike],
    storage_options: Optional[Dict[str, str]],
    built: Optional[int],
    meta: Dict[str, str],
) -> lance.LanceDataset:
    try:
        return open_source(source, version, storage_options)
    except ValueError:
        if built is None or version != built:
            raise
        if isinstance(source, lance.LanceDataset):
            latest = open_source(dataset_uri(source), None, storage_options or dataset_options(source))
        else:
            latest = open_source(source, None, storage_options)
        if built > latest.version:
            raise
        tag = meta.get("base_tag")
        raise PinnedVersionError(
            f"version {built} of {dataset_uri(latest)!r}, which this permutation table pins, is gone: "
            f"cleanup_old_versions() (or lancedb's optimize()) removed it; the dataset is now at "
            f"version {latest.version}. Its row ids cannot be read from another version. Rebuild the "
            "permutation on the current version; to keep a pinned version through cleanups, persist "
            "permutations with .persist(uri) (it tags the version) or tag it yourself: "
            f"ds.tags.create('my-tag', {built})"
            + (f" (the tag {tag!r} recorded for it was deleted)" if tag else "")
        ) from None


class PinnedVersionError(ValueError):
    """The dataset version a permutation table pins was removed by a cleanup."""


def protect_version(ds: lance.LanceDataset, tag: str) -> str:
    """Tag version ``ds.version`` as ``tag`` so cleanups keep it; returns the tag.

    An existing tag of that name is fine when it names the same version.

    Example:
        >>> protect_version(open_source("cifar.lance"), "perm-v3")  # doctest: +SKIP
        'perm-v3'
    """
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"tag must be a non-empty string, got {tag!r}")
    existing = ds.tags.list().get(tag)
    if existing is not None:
        if int(existing["version"]) != int(ds.version):
            raise ValueError(
                f"tag {tag!r} of {dataset_uri(ds)!r} already names version {existing['version']}, "
                f"not version {ds.version} that this permutation pins; expected a new tag name"
            )
        return tag
    ds.tags.create(tag, int(ds.version))
    return tag


def default_tag(ds: lance.LanceDataset, permutation_uri: str) -> str:
    """``lancefeed-perm-<name>-v<version>``: one tag per persisted permutation table.

    Example:
        >>> default_tag(open_source("cifar.lance"), "/data/cifar-perm.lance")  # doctest: +SKIP
        'lancefeed-perm-cifar-perm-v3'
    """
    name = str(permutation_uri).rstrip("/").rsplit("/", 1)[-1]
    if name.endswith(".lance"):
        name = name[: -len(".lance")]
    name = _TAG_CHARS.sub("-", name).strip(".-") or "table"
    return f"lancefeed-perm-{name}-v{int(ds.version)}"


def _plain_uri(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def check_live(ds: lance.LanceDataset, row_ids: np.ndarray, built: int) -> None:
    live = live_row_ids(ds)
    missing = row_ids[~np.isin(row_ids, live)]
    if len(missing):
        shown = ", ".join(str(int(i)) for i in missing[:5])
        raise LookupError(
            f"{len(missing)} row(s) of the permutation built on version {built} are gone from "
            f"version {ds.version} (row ids {shown}{' ...' if len(missing) > 5 else ''}); "
            f"expected every row to still exist, or open version {built}"
        )


def split_rows(
    source: Optional[SourceLike],
    permutation_table: PermutationTableLike,
    split: Optional[Union[str, int]],
    version: Optional[VersionLike],
    storage_options: Optional[Dict[str, str]],
) -> Tuple[lance.LanceDataset, np.ndarray, bool, Tuple[int, Optional[str]], Dict[str, str]]:
    """One split of a permutation table: the dataset it pins, the split's row ids in
    order, whether those ids are of the version opened (else checked to be live in it),
    the split's (index, name) and the table's metadata.

    Example:
        >>> ds, ids, live, (index, name), meta = split_rows("cifar.lance", table, "val", None, None)  # doctest: +SKIP
    """
    table = load_table(permutation_table, storage_options)
    meta = metadata(table)
    index, name = resolve_split(split, table, meta)
    ds = pinned_dataset(source, meta, version, storage_options)
    split_ids = table.column(SPLIT_ID_COLUMN).to_numpy()
    row_ids = table.column(ROW_ID_COLUMN).to_numpy()[split_ids == index]
    built = pinned_version(meta)
    live = built is not None and ds.version == built
    if not live and built is not None:
        check_live(ds, row_ids, built)
    return ds, row_ids, live, (index, name), meta
