"""Where an ingest's source files are: a local folder (``pathlib.Path``) or an object
store prefix (:class:`StorePath`, through pyarrow's filesystems), behind the few path
operations the sources use, so that listing and reading are one code for both.

Lance's storage option names (the ones ``out`` takes) reach an S3 source too:
``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``, ``aws_region``,
``aws_endpoint`` (and their names without ``aws_``).

Example:
    >>> as_path("photos/")
    PosixPath('photos')
    >>> p = as_path("s3://bucket/photos", {"aws_region": "us-east-1"})  # doctest: +SKIP
    >>> str(p / "cat" / "a.jpg")  # doctest: +SKIP
    's3://bucket/photos/cat/a.jpg'
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterator, List, Optional, Union

__all__ = ["AnyPath", "StorePath", "as_path", "files_under", "store_filesystem"]

# Lance's S3 option names (and the short forms it also takes) -> pyarrow's S3FileSystem.
_S3_KEYS = {
    "access_key": ("aws_access_key_id", "access_key_id"),
    "secret_key": ("aws_secret_access_key", "secret_access_key"),
    "session_token": ("aws_session_token", "session_token"),
    "region": ("aws_region", "region"),
}
_S3_ENDPOINT = ("aws_endpoint", "endpoint", "aws_endpoint_url", "endpoint_url")


def _first(options: Dict[str, str], names: tuple) -> Optional[str]:
    return next((options[n] for n in names if n in options), None)


def store_filesystem(scheme: str, storage_options: Optional[Dict[str, str]] = None) -> Any:
    """The pyarrow filesystem of ``scheme`` (``s3``, ``gs``, ...) with ``storage_options``.

    Example:
        >>> store_filesystem("s3", {"aws_endpoint": "http://127.0.0.1:9000", "aws_region": "us-east-1"}).region
        'us-east-1'
    """
    import pyarrow.fs as pafs

    options = storage_options or {}
    if scheme in ("s3", "s3a"):
        kwargs: Dict[str, Any] = {k: v for k, names in _S3_KEYS.items() if (v := _first(options, names)) is not None}
        endpoint = _first(options, _S3_ENDPOINT)
        if endpoint:
            scheme_part, sep, rest = endpoint.partition("://")
            kwargs["endpoint_override"] = rest if sep else endpoint
            if sep:
                kwargs["scheme"] = scheme_part
        return pafs.S3FileSystem(**kwargs)
    # Other stores take their credentials from the environment, as pyarrow does.
    return pafs.FileSystem.from_uri(f"{scheme}://bucket")[0]


class StorePath:
    """A path on an object store, with the ``pathlib`` operations the sources use.

    Example:
        >>> p = StorePath(None, "s3", "bucket/photos")
        >>> str(p / "cat" / "a.jpg"), (p / "cat" / "a.jpg").relative_to(p).as_posix()
        ('s3://bucket/photos/cat/a.jpg', 'cat/a.jpg')
    """

    def __init__(self, fs: Any, scheme: str, path: str, kind: Optional[str] = None) -> None:
        self.fs, self.scheme, self.pure, self._kind = fs, scheme, PurePosixPath(path), kind

    def _with(self, pure: PurePosixPath, kind: Optional[str] = None) -> "StorePath":
        return StorePath(self.fs, self.scheme, str(pure), kind)

    def __truediv__(self, other: Union[str, PurePosixPath]) -> "StorePath":
        return self._with(self.pure / str(other))

    def __str__(self) -> str:
        return f"{self.scheme}://{self.pure}"

    def __repr__(self) -> str:
        return f"StorePath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StorePath) and str(self) == str(other)

    def __lt__(self, other: "StorePath") -> bool:
        return self.pure < other.pure

    def __hash__(self) -> int:
        return hash(str(self))

    def __fspath__(self) -> str:
        return str(self)

    name = property(lambda self: self.pure.name)
    stem = property(lambda self: self.pure.stem)
    suffix = property(lambda self: self.pure.suffix)
    parent = property(lambda self: self._with(self.pure.parent, "dir"))

    def relative_to(self, other: "StorePath") -> PurePosixPath:
        return self.pure.relative_to(other.pure)

    def as_posix(self) -> str:
        return str(self)

    def resolve(self) -> "StorePath":
        return self

    def _type(self) -> str:
        if self._kind is None:
            import pyarrow.fs as pafs

            info = self.fs.get_file_info(str(self.pure))
            self._kind = {pafs.FileType.Directory: "dir", pafs.FileType.File: "file"}.get(info.type, "none")
        return self._kind

    def is_dir(self) -> bool:
        return self._type() == "dir"

    def is_file(self) -> bool:
        return self._type() == "file"

    def exists(self) -> bool:
        return self._type() != "none"

    def iterdir(self) -> Iterator["StorePath"]:
        yield from self._listing(recursive=False)

    def _listing(self, recursive: bool) -> List["StorePath"]:
        import pyarrow.fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(str(self.pure), recursive=recursive, allow_not_found=True))
        kinds = {pafs.FileType.Directory: "dir", pafs.FileType.File: "file"}
        return [StorePath(self.fs, self.scheme, i.path, kinds.get(i.type, "none")) for i in infos]

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(str(self.pure)) as f:
            return f.read()


AnyPath = Union[Path, StorePath]


def as_path(location: Union[str, "os.PathLike[str]"], storage_options: Optional[Dict[str, str]] = None) -> AnyPath:
    """A local path, or a :class:`StorePath` for a URI (``s3://bucket/prefix``).

    Example:
        >>> as_path("data/cifar10")
        PosixPath('data/cifar10')
    """
    if isinstance(location, StorePath):
        return location
    text = os.fspath(location)
    scheme, sep, rest = text.partition("://")
    if not sep or scheme == "file":
        return Path(rest if sep else text)
    return StorePath(store_filesystem(scheme, storage_options), scheme, rest.rstrip("/"))


def _hidden(name: str) -> bool:
    return name.startswith(".")


def files_under(folder: AnyPath) -> List[AnyPath]:
    """Every non-hidden file below ``folder`` (hidden folders skipped), in ``os.walk``'s
    top-down order with names sorted: a folder's files, then its sub-folders'.

    Example:
        >>> files_under(Path("no/such/folder"))
        []
    """
    if isinstance(folder, Path):
        found: List[AnyPath] = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
            found.extend(Path(dirpath) / f for f in sorted(filenames) if not _hidden(f))
        return found
    files = []
    for p in folder._listing(recursive=True):
        parts = p.relative_to(folder).parts
        if p.is_file() and not any(_hidden(part) for part in parts):
            # os.walk's order: within a folder its files (0) before its sub-folders (1).
            files.append(([(1, d) for d in parts[:-1]] + [(0, parts[-1])], p))
    return [p for _key, p in sorted(files, key=lambda kp: kp[0])]
