"""A ledger of finished tasks kept beside a Lance dataset until their work is committed.

A distributed write (an ingest on Ray, ``lancefeed optimize``) writes Lance data files
from many tasks and commits them once, at the end. Until then nothing in the dataset
refers to them, so a killed driver would lose them all. Each task therefore records
what it wrote (the fragment metadata, as JSON) in an entry of its own, named by its
input (a range of files, a fragment id), under ``<dataset>/_lancefeed/<kind>/``. A
resumed run reads the entries back and skips the inputs they cover; the commit clears
them. A task retried by Ray writes its entry again under the same name, so an input is
never counted twice; the files a killed attempt wrote are referenced by no entry and
no version (Lance's ``cleanup_old_versions`` removes such files after 7 days, or at
once with ``delete_unverified=True``).

Entries are whole files written in one piece (a rename locally, one PUT on an object
store through Lance's own object store client), so a reader never sees half of one.

Example:
    >>> import tempfile
    >>> ledger = Ledger(tempfile.mkdtemp() + "/out.lance", "ingest")
    >>> ledger.put("00000000-00000010", {"rows": 10})
    >>> ledger.entries()
    {'00000000-00000010': {'rows': 10}}
    >>> ledger.clear(); ledger.entries()
    {}
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Dict, Optional

__all__ = ["LEDGER_DIR", "Ledger"]

# The folder inside the dataset; Lance ignores what it does not know.
LEDGER_DIR = "_lancefeed"
_SUFFIX = ".json"


class Ledger:
    """The entries of one kind of work (``"ingest"``, ``"optimize"``) beside ``uri``.

    Example:
        >>> Ledger("s3://bucket/out.lance", "ingest", {"aws_region": "us-east-1"}).where
        's3://bucket/out.lance/_lancefeed/ingest'
    """

    def __init__(self, uri: str, kind: str, storage_options: Optional[Dict[str, str]] = None) -> None:
        self.uri, self.kind, self.storage_options = uri, kind, storage_options
        self.where = f"{uri.rstrip('/')}/{LEDGER_DIR}/{kind}"
        self.local = "://" not in uri

    def _session(self) -> Any:
        from lance.file import LanceFileSession

        return LanceFileSession(self.where, storage_options=self.storage_options)

    def put(self, name: str, entry: Dict[str, Any]) -> None:
        """Record ``entry`` (JSON-able) under ``name``, replacing an earlier one."""
        text = json.dumps(entry, sort_keys=True)
        if self.local:
            os.makedirs(self.where, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.where, prefix=".tmp-")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, os.path.join(self.where, name + _SUFFIX))
            return
        fd, tmp = tempfile.mkstemp(suffix=_SUFFIX)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            self._session().upload_file(tmp, name + _SUFFIX)
        finally:
            os.unlink(tmp)

    def entries(self) -> Dict[str, Dict[str, Any]]:
        """Every entry by name (an empty dict when there is none)."""
        if self.local:
            if not os.path.isdir(self.where):
                return {}
            names = [n for n in os.listdir(self.where) if n.endswith(_SUFFIX)]
            out = {}
            for n in sorted(names):
                with open(os.path.join(self.where, n)) as f:
                    out[n[: -len(_SUFFIX)]] = json.load(f)
            return out
        session = self._session()
        out = {}
        with tempfile.TemporaryDirectory() as tmp:
            for n in sorted(session.list()):
                if n.endswith(_SUFFIX) and "/" not in n:
                    session.download_file(n, os.path.join(tmp, "entry"))
                    with open(os.path.join(tmp, "entry")) as f:
                        out[n[: -len(_SUFFIX)]] = json.load(f)
        return out

    def clear(self) -> None:
        """Remove every entry (after the commit that made them part of a version). On an
        object store with a pylance too old to delete files, the entries stay; they name
        the run that wrote them, which no later run takes for its own."""
        if self.local:
            shutil.rmtree(self.where, ignore_errors=True)
            parent = os.path.dirname(self.where)
            if os.path.isdir(parent) and not os.listdir(parent):
                os.rmdir(parent)
            return
        session = self._session()
        if not hasattr(session, "delete_file"):
            return
        for n in session.list():
            session.delete_file(n)
