"""Interrupted ingests: the record each commit carries (which source, which options, how
many files, a digest of their names), where a ``resume=True`` ingest starts, and what an
existing output must hold for an ingest to write into it.

Example:
    >>> record_of(type("Tx", (), {"transaction_properties": {RECORD_KEY: '{"done": true}'}})())
    {'done': True}
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

from lancefeed.ingest.common import Item
from lancefeed.source import open_source

__all__ = ["LANCE_ENTRIES", "RECORD_FORMAT", "RECORD_KEY", "check_out", "describe", "digest", "file_sha256",
           "has_version", "is_local", "item_key", "latest_record", "record_of", "resume_point"]

# The transaction property holding an ingest's resume record (a JSON object).
RECORD_KEY = "lancefeed.ingest"
RECORD_FORMAT = 1
# What Lance puts in a dataset folder (and lancefeed's ledger of a Ray ingest's fragments
# not committed yet, lancefeed.ledger). A folder holding only these but no manifest is the
# leftover of a write killed before its first commit: nothing in it can be read back.
LANCE_ENTRIES = frozenset({"data", "_versions", "_transactions", "_indices", "_deletions", "_refs", "_lancefeed"})


def is_local(uri: str) -> bool:
    return "://" not in uri


def has_version(uri: str, storage_options: dict[str, str] | None = None) -> bool:
    """Whether ``uri`` is a Lance dataset with at least one committed version."""
    if is_local(uri):
        versions = Path(uri) / "_versions"
        return versions.is_dir() and any(p.suffix == ".manifest" for p in versions.iterdir())
    try:
        open_source(uri, storage_options=storage_options)
    except (ValueError, OSError):
        return False
    return True


def record_of(tx: Any) -> dict[str, Any] | None:
    props = getattr(tx, "transaction_properties", None) or {}
    text = props.get(RECORD_KEY)
    return None if text is None else json.loads(text)


def latest_record(
    uri: str, *, search: bool, storage_options: dict[str, str] | None = None
) -> tuple[dict[str, Any], int] | None:
    """The resume record of the newest ingest chunk in ``uri``'s history, and its version.

    Without ``search`` only the latest version is looked at: enough to recognise an
    ingest that was killed (its last chunk is the latest commit) without reading the
    whole history of a large dataset. With it, older versions are searched too, so a
    commit made after the ingest (an index, say) does not hide its record.
    """
    ds = open_source(uri, storage_options=storage_options)
    oldest = 1 if search else ds.version
    for version in range(ds.version, oldest - 1, -1):
        try:
            tx = ds.read_transaction(version)
        except (ValueError, OSError):  # the version or its transaction was cleaned up
            continue
        record = record_of(tx)
        if record is not None:
            return record, version
    return None


def describe(record: dict[str, Any]) -> str:
    src = record.get("source", {})
    what = src.get("root") if src.get("kind") == "folder" else src.get("annotations")
    return f"{src.get('kind', '?')} {what}"


def leftover_entries(uri: str) -> list[str]:
    return sorted(os.listdir(uri))


def check_out(uri: str, mode: str, resume: bool, storage_options: dict[str, str] | None = None) -> None:
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
    exists = os.path.exists(uri) if is_local(uri) else has_version(uri, storage_options)
    if not exists:
        return
    if not has_version(uri, storage_options):
        if mode == "append":
            return  # Lance creates the dataset, as it always has
        entries = leftover_entries(uri)
        if set(entries) <= LANCE_ENTRIES:
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
    found = latest_record(uri, search=False, storage_options=storage_options)
    unfinished = found is not None and not found[0].get("done", False)
    if unfinished:
        record, version = found  # type: ignore[misc]
        what = (
            f"{uri} holds an unfinished ingest of {describe(record)}: "
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


def item_key(item: Item) -> bytes:
    """What names an item in the digest: its filename (and COCO image id)."""
    return json.dumps([item.extra.get("filename"), item.extra.get("image_id")]).encode() + b"\n"


def digest(items: Sequence[Item], end: int) -> "hashlib._Hash":
    h = hashlib.sha256()
    for item in items[:end]:
        h.update(item_key(item))
    return h


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resume_point(
    uri: str, mode: str, record: dict[str, Any], items: Sequence[Item], storage_options: dict[str, str] | None = None
) -> tuple[int, str, bool]:
    """Where a ``resume=True`` ingest starts: ``(files already committed, write mode, done)``.

    ``done``: the ingest recorded in ``uri`` finished already; nothing is to be written.

    Raises ``ValueError`` / ``FileExistsError`` (saying why) when ``uri`` holds
    another ingest, or files that are not a Lance dataset.
    """
    if not has_version(uri, storage_options):
        if is_local(uri) and os.path.exists(uri):
            entries = leftover_entries(uri)
            if not set(entries) <= LANCE_ENTRIES:
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
    found = latest_record(uri, search=True, storage_options=storage_options)
    old = None if found is None else found[0]
    fresh_append = mode == "append" and (
        old is None or (old.get("done") and old.get("source") != record["source"])
    )
    if fresh_append:
        return 0, "append", False  # another source appended earlier: this one starts now
    if old is None:
        raise ValueError(
            f"cannot resume {uri}: it was not written by a resumable lancefeed ingest (no "
            f"'{RECORD_KEY}' record in its history), so there is nothing to continue. Pass "
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
    if committed > len(items) or digest(items, committed).hexdigest() != old["digest"]:
        raise ValueError(
            f"cannot resume {uri}: the files of {describe(old)} changed since it was "
            f"interrupted (the first {committed} files, in ingest order, are not the ones "
            "committed), so skipping them would lose or repeat files. Pass mode='overwrite' "
            "(CLI: --overwrite) to start again"
        )
    return committed, "append", False


