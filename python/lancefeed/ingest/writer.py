"""An ingest's rows written to Lance: a stream of record batches, committed every
``commit_every`` files with the resume record (:mod:`lancefeed.ingest.resume`), after
finding where a ``resume=True`` ingest starts.

Example:
    >>> summary = run(items, "out.lance", FOLDER_SCHEMA, record, IngestOptions(), root=Path("."), desc="ingest")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pyarrow as pa

from lancefeed.ingest.common import IngestError, IngestSummary, Item, Loaded, display, loaded_stream
from lancefeed.ingest.options import IngestOptions
from lancefeed.ingest.resume import RECORD_FORMAT, RECORD_KEY, digest, item_key, resume_point

__all__ = ["MAX_BATCH_BYTES", "Rows", "blob_schema", "run", "write"]

# A batch is flushed at this many encoded bytes even if it has fewer rows than
# batch_size: it keeps one Arrow binary array far below its 2 GiB offset limit
# and keeps memory bounded when files are large.
MAX_BATCH_BYTES = 64 * 1024 * 1024


def run(items: Sequence[Item], uri: str, schema: pa.Schema, record: Dict[str, Any], opts: IngestOptions, *,
        root: Path, desc: str) -> IngestSummary:
    """Find where to start (``opts.resume``), then write; a finished ingest is left as is."""
    start, mode = 0, opts.mode
    if opts.resume:
        began = time.perf_counter()
        start, mode, done = resume_point(uri, opts.mode, record, items, opts.storage_options)
        if done:
            print(f"lancefeed: {uri} is complete already ({start} files); nothing to resume", file=sys.stderr)
            return IngestSummary(uri=uri, rows=0, seconds=time.perf_counter() - began, resumed_from=start)
    return write(items, uri, schema, record, opts, root=root, desc=desc, start=start, mode=mode)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass


class Rows:
    """The stream of loaded files as record batches, a commit's worth at a time; skipped
    files listed, a failure kept (``strict``) for the commit to raise. One code for
    both engines: a Ray task makes its fragment's batches with it too.

    Example:
        >>> from lancefeed.ingest.common import FOLDER_SCHEMA
        >>> rows = Rows(iter([]), FOLDER_SCHEMA, IngestOptions(), Path("."))
        >>> list(rows.batches(10)), rows.rows
        ([], 0)
    """

    def __init__(self, stream: Iterator[Loaded], schema: pa.Schema, opts: IngestOptions, root: Any,
                 bar: Any = None) -> None:
        self.stream, self.schema, self.opts, self.root = stream, schema, opts, root
        self.bar = _NoBar() if bar is None else bar
        self.extra_names = [f.name for f in schema if f.name not in ("image", "width", "height")]
        self.skipped: List[Tuple[str, str]] = []
        self.failure: List[IngestError] = []
        self.rows = 0

    def batches(self, count: int) -> Iterator[pa.RecordBatch]:
        """The rows of the stream's next ``count`` files (one commit's worth)."""
        cols: Dict[str, List[Any]] = {name: [] for name in self.schema.names}
        nbytes = 0
        for loaded in islice(self.stream, count):
            self.bar.update(1)
            if loaded.error is not None:
                shown = display(loaded.item.path, self.root)
                if self.opts.strict:
                    self.failure.append(IngestError(f"{shown}: {loaded.error}"))
                    raise self.failure[0]
                self.skipped.append((shown, loaded.error))
                self.bar.set_postfix(skipped=len(self.skipped), refresh=False)
                continue
            assert loaded.data is not None
            cols["image"].append(loaded.data)
            cols["width"].append(loaded.width)
            cols["height"].append(loaded.height)
            values = {**loaded.item.extra, **loaded.derived}
            for name in self.extra_names:
                cols[name].append(values[name])
            nbytes += len(loaded.data) + sum(len(v) for v in loaded.derived.values() if isinstance(v, bytes))
            self.rows += 1
            if len(cols["image"]) >= self.opts.batch_size or nbytes >= MAX_BATCH_BYTES:
                yield self._flush(cols)
                nbytes = 0
        if cols["image"]:
            yield self._flush(cols)

    def _flush(self, cols: Dict[str, List[Any]]) -> pa.RecordBatch:
        import lance

        data = {**cols, "image": lance.blob_array(cols["image"])} if self.opts.blob else cols
        batch = pa.RecordBatch.from_pydict(data, schema=self.schema)
        for values in cols.values():
            values.clear()
        return batch


def blob_schema(schema: pa.Schema, opts: IngestOptions) -> pa.Schema:
    """``schema`` as written: with ``opts.blob``, ``image`` is Lance's blob v2 column
    (large images kept out of the row data, so scans of the other columns skip them).

    Example:
        >>> from lancefeed.ingest.common import FOLDER_SCHEMA
        >>> blob_schema(FOLDER_SCHEMA, IngestOptions()) is FOLDER_SCHEMA
        True
    """
    if not opts.blob:
        return schema
    import lance

    return schema.set(schema.get_field_index("image"), lance.blob_field("image"))


def write(items: Sequence[Item], uri: str, schema: pa.Schema, record: Optional[Dict[str, Any]], opts: IngestOptions, *,
          root: Path, desc: str, start: int = 0, mode: Optional[str] = None) -> IngestSummary:
    """Write ``items[start:]`` to ``uri``, one commit per ``opts.commit_every`` files.

    ``mode`` (default ``opts.mode``) is the first commit's; later ones append. Each
    commit carries ``record`` (source and options) with the number of files committed
    so far, so a killed ingest can be resumed after its last commit.
    """
    from tqdm import tqdm

    schema = blob_schema(schema, opts)
    began = time.perf_counter()
    first_mode = opts.mode if mode is None else mode
    bar = tqdm(total=len(items), initial=start, desc=desc, unit="img", file=sys.stderr, disable=not opts.progress)
    stream = loaded_stream(items[start:], num_threads=opts.num_threads, verify=opts.verify, restart=opts.restart_index)
    rows = Rows(stream, schema, opts, root, bar)
    try:
        _commit_chunks(items, uri, schema, record, opts, rows, start, first_mode)
    finally:
        stream.close()
        bar.close()
    if rows.rows == 0 and first_mode != "append" and start == 0:
        # Lance writes an empty dataset happily; an empty ingest is almost always a
        # wrong path, so say so rather than leave an empty table behind silently.
        print(f"lancefeed: warning: no images were written to {uri}", file=sys.stderr)
    return IngestSummary(uri=uri, rows=rows.rows, skipped=rows.skipped, seconds=time.perf_counter() - began, resumed_from=start)


def _commit_chunks(items: Sequence[Item], uri: str, schema: pa.Schema, record: Optional[Dict[str, Any]],
                   opts: IngestOptions, rows: Rows, start: int, mode: str) -> None:
    """One Lance commit per chunk of files, each with the resume record."""
    import lance

    h = digest(items, start)
    done = start
    # At least one commit, even with nothing to write: it creates the (empty) dataset
    # as before, and records the ingest as done.
    while True:
        end = min(done + opts.commit_every, len(items))
        for item in items[done:end]:
            h.update(item_key(item))
        # The record is fixed before the chunk is read (Lance takes transaction
        # properties when the write starts), which is why chunks count files, not rows
        # or bytes. It is committed atomically with the chunk's rows.
        state = {"format": RECORD_FORMAT, **(record or {}), "items_total": len(items), "items_committed": end,
                 "digest": h.hexdigest(), "done": end == len(items)}
        reader = pa.RecordBatchReader.from_batches(schema, rows.batches(end - done))
        # Only asked for, and only when the dataset is made: on append the dataset's own
        # setting stands.
        extra = {"enable_stable_row_ids": True} if opts.enable_stable_row_ids and mode != "append" else {}
        try:
            lance.write_dataset(reader, uri, schema=schema, mode=mode, storage_options=opts.storage_options,
                                transaction_properties={RECORD_KEY: json.dumps(state)}, **extra)
        except Exception:
            # Lance re-raises an error of the batch stream as its own OSError with the
            # traceback pasted in; raise ours instead so the user sees the file and reason.
            if rows.failure:
                raise rows.failure[0] from None
            raise
        done, mode = end, "append"
        if done >= len(items):
            return
