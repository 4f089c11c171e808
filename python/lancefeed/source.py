"""Opening Lance datasets: URIs, versions and tags, and the facts the readers need.

A *source* is a URI (a local path, a ``file://`` URI or an object store URI such as
``s3://bucket/ds.lance`` with ``storage_options``), an open ``lance.LanceDataset``, or
a local lancedb ``Table`` (read through its ``to_lance()`` dataset).
Everything that reads rows opens it here, so that a missing dataset, a bad version
or an unknown column fails the same way everywhere.

Example:
    >>> from lancefeed.source import open_source
    >>> ds = open_source("cifar.lance", version=3)  # doctest: +SKIP
    >>> ds.version  # doctest: +SKIP
    3
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import lance
import numpy as np
import pyarrow as pa

# Any (a lancedb Table) stands for objects with ``to_lance()``; lancedb is optional.
SourceLike = Union[str, "os.PathLike[str]", lance.LanceDataset, Any]
VersionLike = Union[int, str]

# Field metadata Lance puts on a column written with its blob encoding; such a column
# reads back as position/size descriptions unless fetched through the blob readers.
_BLOB_META_KEY = b"lance-encoding:blob"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_URING = "file+uring://"
# (process, file system) -> whether a read through io_uring worked there: the probe, a
# one-row take (~1 ms, on the way to a loader's first batch), runs once for each.
_URING_WORKS: Dict[Tuple[int, int], bool] = {}


def open_source(
    source: SourceLike,
    version: Optional[VersionLike] = None,
    storage_options: Optional[Dict[str, str]] = None,
) -> lance.LanceDataset:
    """Open a Lance dataset from a URI or return a ``LanceDataset`` at ``version``.

    ``version`` is a version number or a tag name; ``None`` keeps the dataset's own
    version (the latest, when ``source`` is a URI). A local path is opened through
    Lance's io_uring reader where Linux offers it (``LANCEFEED_IO_URING=0`` turns that
    off); a ``LanceDataset`` is used as given.

    A local lancedb ``Table`` is read through ``table.to_lance()`` (the table's own
    version unless ``version`` names another).

    Raises ``FileNotFoundError`` when there is no dataset at the URI, ``ValueError``
    when the version or tag does not exist, ``TypeError`` for anything that is not a
    URI, a ``LanceDataset`` or a local lancedb table.

    Example:
        >>> ds = open_source("s3://bucket/cifar.lance", version="v1",
        ...                  storage_options={"region": "us-east-1"})  # doctest: +SKIP
    """
    if not isinstance(source, (str, os.PathLike, lance.LanceDataset)):
        source = lancedb_dataset(source)
    if isinstance(source, lance.LanceDataset):
        if version is None or _same_version(source, version):
            return source
        try:
            return source.checkout_version(version)
        except (OSError, ValueError) as exc:
            raise _version_error(source, version, exc) from None
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise TypeError(
            "expected a Lance dataset: a URI (local path, file:// or object store URI), "
            f"a lance.LanceDataset or a local lancedb Table, got {type(source).__name__}"
        )
    try:
        ds = lance.dataset(source, version=version, storage_options=storage_options)
    except (OSError, ValueError) as exc:
        message = str(exc)
        if version is not None and ("_versions/" in message or "Ref not found" in message):
            try:
                latest = lance.dataset(source, storage_options=storage_options)
            except (OSError, ValueError):
                latest = None
            if latest is not None:
                raise _version_error(latest, version, exc) from None
        if "NoSuchBucket" in message:
            raise FileNotFoundError(
                f"no Lance dataset at {source!r}: the bucket does not exist on that store "
                "(check the URI and storage_options' endpoint)"
            ) from None
        if any(k in message for k in _REFUSED):
            raise PermissionError(
                f"cannot open {source!r}: the object store refused the credentials (HTTP 403); "
                f"check the keys and region in storage_options ({_store_reply(message)})"
            ) from None
        if "not found" in message.lower():
            raise FileNotFoundError(
                f"no Lance dataset at {source!r}: expected a dataset directory written by "
                "lance.write_dataset (a local path, file:// URI or object store URI)"
            ) from None
        if _SCHEME.match(source) and source not in message:
            # Lance names the HTTP request, not the dataset.
            raise type(exc)(f"cannot open {source!r}: {message}") from exc
        raise
    return _with_io_uring(ds, storage_options)


# An object store's replies to bad credentials (S3 and compatible stores).
_REFUSED = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "403 Forbidden", "AccessDenied")


def _store_reply(message: str) -> str:
    """The store's error code from a Lance error message (no request details)."""
    m = re.search(r"<Code>([^<]+)</Code>", message)
    return m.group(1) if m else "403 Forbidden"


def lancedb_dataset(table: Any) -> lance.LanceDataset:
    """The ``LanceDataset`` under a local lancedb ``Table`` (anything with ``to_lance()``).

    Raises ``TypeError`` for anything else, a remote lancedb table included (it has no
    dataset on this machine).

    Example:
        >>> import lancedb  # doctest: +SKIP
        >>> lancedb_dataset(lancedb.connect("db").open_table("images")).uri  # doctest: +SKIP
        '/home/me/db/images.lance'
    """
    to_lance = getattr(table, "to_lance", None)
    if not callable(to_lance):
        raise TypeError(
            "expected a Lance dataset: a URI (local path, file:// or object store URI), "
            f"a lance.LanceDataset or a local lancedb Table, got {type(table).__name__}"
        )
    try:
        ds = to_lance()
    except NotImplementedError:
        raise TypeError(
            f"a {type(table).__name__} has no local Lance dataset (a remote lancedb table?); "
            "expected a local lancedb Table, a lance.LanceDataset or a URI"
        ) from None
    if not isinstance(ds, lance.LanceDataset):
        raise TypeError(f"{type(table).__name__}.to_lance() gave a {type(ds).__name__}, expected a lance.LanceDataset")
    return ds


def dataset_options(ds: lance.LanceDataset) -> Optional[Dict[str, str]]:
    """The object store options ``ds`` was opened with (``None`` for none).

    A dataset handed over already open still has to be reopened in each DataLoader
    worker, with the same options; this reads them back from the dataset.

    Example:
        >>> dataset_options(lance.dataset("s3://b/ds.lance", storage_options={"region": "eu"}))  # doctest: +SKIP
        {'region': 'eu'}
    """
    if hasattr(type(ds), "initial_storage_options"):  # public in recent pylance (a property)
        options = ds.initial_storage_options
        if callable(options):  # a method in some releases
            options = options()
        # pylance adds its own user agent to what it was given; it adds it again on reopening.
        if options and str(options.get("user_agent", "")).startswith("pylance/"):
            options = {k: v for k, v in options.items() if k != "user_agent"}
    else:  # older pylance: only the attribute it keeps them in
        options = getattr(ds, "_storage_options", None)
    return dict(options) if options else None


def _with_io_uring(ds: lance.LanceDataset, storage_options: Optional[Dict[str, str]]) -> lance.LanceDataset:
    """Reopen a local dataset through Lance's io_uring reader when the system has one.

    Random takes of small rows are bound by Lance's cost per read request; on Linux its
    ``file+uring://`` reader cut that by about a quarter for 1 KB JPEGs (see
    benches/bench_rows.py). ``LANCEFEED_IO_URING=0`` turns this off. Any failure (no
    io_uring in this kernel or container) keeps the ordinary reader.
    """
    uri = str(ds.uri)
    if not sys.platform.startswith("linux") or os.environ.get("LANCEFEED_IO_URING", "1") == "0":
        return ds
    if uri.startswith("file://"):
        path = uri[len("file://") :]
    elif _SCHEME.match(uri):
        return ds  # object stores, memory://, or already file+uring://
    else:
        path = os.path.abspath(uri)
    try:
        key = (os.getpid(), os.stat(path).st_dev)
    except OSError:
        return ds
    works = _URING_WORKS.get(key)
    if works is False:
        return ds
    try:
        fast = lance.dataset(f"{_URING}{path}", version=ds.version, storage_options=storage_options)
        if works is None and fast.count_rows() > 0:
            first = fast.schema.names[0]
            fast.take([0], columns=[first])  # a real data-file read through io_uring
            _URING_WORKS[key] = True
    except Exception:  # noqa: BLE001 - any failure means: stay on the portable reader
        _URING_WORKS[key] = False
        return ds
    return fast


def dataset_uri(ds: lance.LanceDataset) -> str:
    """The dataset's URI, made absolute when it is a local path.

    A relative path would tie a saved permutation to the working directory it was
    built in; object store and ``file://`` URIs are kept as they are.

    Example:
        >>> dataset_uri(open_source("cifar.lance"))  # doctest: +SKIP
        '/home/me/cifar.lance'
    """
    uri = str(ds.uri)
    if uri.startswith(_URING):
        return uri[len(_URING) :]
    if _SCHEME.match(uri):
        return uri
    return os.path.abspath(uri)


def has_stable_row_ids(ds: lance.LanceDataset) -> bool:
    """Whether the dataset's ``_rowid`` survives updates and compaction across versions.

    Example:
        >>> has_stable_row_ids(open_source("cifar.lance"))  # doctest: +SKIP
        False
    """
    return bool(getattr(ds, "has_stable_row_ids", False))


def live_row_ids(ds: lance.LanceDataset) -> np.ndarray:
    """Every live row's ``_rowid`` (``uint64``), in dataset order.

    Where the ids follow from the manifest alone (address-style ids, fragment << 32 |
    offset, and no deleted row) no data file is read: on object storage that saves a
    request per fragment, and a process that later forks has run no Lance scan (its
    forked children hang less often; see the README on torch workers). Otherwise Lance
    scans the row ids.

    Example:
        >>> live_row_ids(open_source("cifar.lance"))[:3]  # doctest: +SKIP
        array([0, 1, 2], dtype=uint64)
    """
    if not has_stable_row_ids(ds):
        fragments = [f.metadata for f in ds.get_fragments()]
        if all(m.deletion_file is None and m.physical_rows is not None for m in fragments):
            parts = [
                (np.uint64(m.id) << np.uint64(32)) + np.arange(m.physical_rows, dtype=np.uint64)
                for m in fragments
            ]
            return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)
    table = ds.to_table(columns=[], with_row_id=True, scan_in_order=True)
    return table["_rowid"].to_numpy().astype(np.uint64, copy=False)


def column_names(ds: lance.LanceDataset) -> List[str]:
    """The dataset's top-level column names, in schema order.

    Example:
        >>> column_names(open_source("cifar.lance"))  # doctest: +SKIP
        ['image', 'filename', 'label', 'split']
    """
    return list(ds.schema.names)


def blob_columns(ds: lance.LanceDataset) -> List[str]:
    """Top-level columns stored with Lance's blob encoding.

    Example:
        >>> blob_columns(open_source("big-images.lance"))  # doctest: +SKIP
        ['image']
    """
    out = []
    for field in ds.schema:
        meta = field.metadata or {}
        if meta.get(_BLOB_META_KEY, b"").lower() == b"true" or "blob" in str(field.type):
            out.append(field.name)
    return out


def check_columns(ds: lance.LanceDataset, columns: Iterable[str], what: str = "column") -> None:
    """Raise ``ValueError`` naming every column of ``columns`` that ``ds`` lacks.

    Lance itself aborts with a Rust panic on some unknown columns (``take``), so every
    reader checks names here first.

    Example:
        >>> check_columns(open_source("cifar.lance"), ["image", "lable"])  # doctest: +SKIP
        ValueError: unknown column 'lable' in dataset ...; expected one of ['image', ...]
    """
    available = column_names(ds)
    missing = [c for c in columns if c not in available]
    if missing:
        names = ", ".join(repr(c) for c in missing)
        plural = "s" if len(missing) > 1 else ""
        raise ValueError(
            f"unknown {what}{plural} {names} in dataset {dataset_uri(ds)!r} "
            f"(version {ds.version}); expected one of {available}"
        )


def output_schema(ds: lance.LanceDataset, columns: Sequence[str]) -> pa.Schema:
    """The schema of rows read with ``columns``: blob columns read as ``large_binary``.

    Example:
        >>> output_schema(open_source("cifar.lance"), ["image", "label"])  # doctest: +SKIP
        image: binary
        label: string
    """
    blobs = set(blob_columns(ds))
    fields = []
    for name in columns:
        field = ds.schema.field(name)
        if name in blobs:
            field = pa.field(name, pa.large_binary(), nullable=True)
        fields.append(field)
    return pa.schema(fields)


def _same_version(ds: lance.LanceDataset, version: VersionLike) -> bool:
    if isinstance(version, int):
        return ds.version == version
    try:
        tag = ds.tags.list().get(version)
    except Exception:  # noqa: BLE001 - tags are best effort; checkout decides below
        return False
    return tag is not None and tag.get("version") == ds.version


def _version_error(ds: lance.LanceDataset, version: Any, exc: BaseException) -> ValueError:
    try:
        versions = [v["version"] for v in ds.versions()]
        tags = sorted(ds.tags.list())
    except Exception:  # noqa: BLE001 - only used to word the message
        versions, tags = [], []
    span = f"versions {versions[0]}..{versions[-1]}" if versions else "no versions"
    kind = "tag" if isinstance(version, str) else "version"
    return ValueError(
        f"dataset {dataset_uri(ds)!r} has no {kind} {version!r}: expected one of {span}"
        f"{f' or tags {tags}' if tags else ''} ({exc})"
    )


def parse_storage_options(items: Iterable[str]) -> Dict[str, str]:
    """``["KEY=VALUE", ...]`` (``--storage-option``, repeatable) as a dict; a later
    KEY wins. Raises ``ValueError`` for an item without ``=`` or with an empty key,
    without repeating the item (it may be a secret pasted in the wrong place).

    Example:
        >>> parse_storage_options(["allow_http=true", "aws_endpoint=http://h:9000"])
        {'allow_http': 'true', 'aws_endpoint': 'http://h:9000'}
    """
    out: Dict[str, str] = {}
    for n, item in enumerate(items, 1):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--storage-option number {n} is not KEY=VALUE")
        out[key] = value
    return out
