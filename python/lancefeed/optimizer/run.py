"""``lancefeed optimize``: an existing dataset's JPEGs rewritten restart-indexed, as one
new version, fragment by fragment on this machine or as Ray tasks, resumable.

Each fragment is one unit of work: its image column is read a batch at a time, each
JPEG without an index rewritten (:func:`lancefeed.restart.index_blob`, the same
function :func:`lancefeed.index_dataset` and ``ingest --restart-index`` use), and
written as a data file of its own (:mod:`lancefeed.optimizer.fragments`); the finished
fragment is recorded in the :class:`~lancefeed.ledger.Ledger` beside the dataset. When
every fragment is done, one Lance ``Merge`` commit replaces the column in all of them:
a new version whose other columns are the same files as before. A run killed midway
is continued by running it again: fragments recorded for the same version are not
read again. If the dataset got a new version meanwhile, the run starts over on it
(fragments already indexed are then passed over: they need nothing).

Example:
    >>> s = optimize("imagenet.lance")  # doctest: +SKIP
    >>> print(s)  # doctest: +SKIP
    imagenet.lance: version 1 -> 2, 1000 of 1000 images restart-indexed, 0 kept as they were
      size: 109,576,417 -> 117,938,112 bytes (+7.6%)
      decode speed, RandomResizedCrop(224) + flip of 256 rows: 2,236 -> 3,113 img/s (1.39x)
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
import warnings
from typing import Any, Dict, Iterator, List, Optional

from lancefeed.cluster import check_engine, cluster_cpus, node_cpus, quiet_ray_data, ray_session
from lancefeed.ledger import Ledger
from lancefeed.optimizer.fragments import check_column, needs_rewrite, replaced, rewrite_fragment
from lancefeed.optimizer.report import OptimizeSummary, decode_speed
from lancefeed.restart import index_blob

__all__ = ["RECORD_KEY", "optimize", "optimize_fragment"]

# The transaction property of an optimize's commit (a JSON object).
RECORD_KEY = "lancefeed.optimize"
LEDGER_KIND = "optimize"


def optimize_fragment(uri: str, version: int, fragment_id: int, column: str, *, job: str, batch_size: int = 256,
                      threads: int = 1, storage_options: Optional[Dict[str, str]] = None, bar: Any = None) -> Dict[str, Any]:
    """One fragment of ``uri`` at ``version``: its ``column`` restart-indexed into a new
    data file (or nothing, when no JPEG of it needs an index), recorded in the ledger.

    Example:
        >>> optimize_fragment("in.lance", 1, 0, "image", job="j")["indexed"]  # doctest: +SKIP
        10000
    """
    import lance

    ds = lance.dataset(uri, version=version, storage_options=storage_options)
    fragment = ds.get_fragment(fragment_id)
    entry: Dict[str, Any] = {"job": job, "fragment": fragment_id}
    if needs_rewrite(fragment, column, batch_size):
        entry.update(rewrite_fragment(ds, fragment_id, column, index_blob, batch_size=batch_size, threads=threads,
                                      storage_options=storage_options, bar=bar))
    if not entry.get("indexed"):
        # Nothing indexed (a fragment of PNGs, or of JPEGs refused): keep the old file.
        entry = {"job": job, "fragment": fragment_id, "unchanged": True}
    Ledger(uri, LEDGER_KIND, storage_options).put(f"fragment-{fragment_id:010d}", entry)
    return entry


class _Plan:
    """This run's id, and the fragments an earlier run of the same version recorded."""

    def __init__(self, ds: Any, column: str, storage_options: Optional[Dict[str, str]]) -> None:
        self.ledger = Ledger(ds.uri, LEDGER_KIND, storage_options)
        key = {"version": int(ds.version), "column": column, "restart_index": True}
        found = self.ledger.entries()
        plan = found.pop("plan", None)
        if plan is not None and {k: plan.get(k) for k in key} == key:
            self.job = plan["job"]
            self.done = {e["fragment"]: e for e in found.values() if e.get("job") == self.job}
            return
        if plan is not None or found:
            self.ledger.clear()  # another version's or column's: of no use now
        self.job, self.done = uuid.uuid4().hex, {}
        self.ledger.put("plan", {**key, "job": self.job})

    def entries(self) -> Dict[int, Dict[str, Any]]:
        return {e["fragment"]: e for name, e in self.ledger.entries().items()
                if name != "plan" and e.get("job") == self.job}


def _optimize_task(batch: Any, **kwargs: Any) -> Any:
    """A Ray task: :func:`optimize_fragment` for each fragment id of the batch."""
    import pyarrow as pa

    done = [json.dumps(optimize_fragment(fragment_id=f, **kwargs)) for f in batch["fragment"].to_pylist()]
    return pa.table({"fragment": batch["fragment"], "entry": pa.array(done, pa.large_string())})


def _run(todo: List[int], ds: Any, column: str, job: str, engine: str, ray_address: Optional[str], batch_size: int,
         num_threads: Optional[int], storage_options: Optional[Dict[str, str]], bar: Any) -> Iterator[Dict[str, Any]]:
    """The fragments ``todo`` on ``engine``; each one's ledger entry as it is done."""
    if not todo:
        return
    args = {"uri": ds.uri, "version": int(ds.version), "column": column, "job": job, "batch_size": batch_size,
            "storage_options": storage_options}
    rows = {f.fragment_id: int(f.metadata.physical_rows) for f in ds.get_fragments()}
    if engine == "threads":
        for fragment_id in todo:
            before = bar.n
            entry = optimize_fragment(fragment_id=fragment_id, threads=num_threads or os.cpu_count() or 1, bar=bar,
                                      **args)
            bar.update(rows[fragment_id] - (bar.n - before))
            yield entry
        return
    with ray_session(ray_address) as ray:
        quiet_ray_data(ray)
        # A fragment is one task: with fewer fragments than CPUs, each takes several
        # (threads indexing its rows), up to a node's.
        cpus = num_threads or max(1, min(node_cpus(ray), cluster_cpus(ray) // max(1, len(todo))))
        items = [{"fragment": f} for f in todo]
        out = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _optimize_task, fn_kwargs={**args, "threads": cpus}, batch_size=1, batch_format="pyarrow",
            num_cpus=min(cpus, node_cpus(ray)))
        for row in out.iter_rows():
            bar.update(rows[row["fragment"]])
            yield json.loads(row["entry"])


def _commit(ds: Any, entries: Dict[int, Dict[str, Any]], column: str, job: str,
            storage_options: Optional[Dict[str, str]]) -> Any:
    """One ``Merge`` of every fragment, the rewritten ones with their new data file."""
    import lance

    fragments = [replaced(f.metadata, entries[f.fragment_id]["file"])
                 if f.fragment_id in entries and not entries[f.fragment_id].get("unchanged") else f.metadata
                 for f in ds.get_fragments()]
    with warnings.catch_warnings():
        # pylance 14 prefers a LanceSchema (older ones have none) and says so.
        warnings.simplefilter("ignore", DeprecationWarning)
        op = lance.LanceOperation.Merge(fragments, getattr(ds, "lance_schema", None) or ds.schema)
    record = {"job": job, "restart_index": True, "column": column, "from_version": int(ds.version)}
    tx = lance.Transaction(read_version=int(ds.version), operation=op, transaction_properties={RECORD_KEY: json.dumps(record)})
    return lance.LanceDataset.commit(ds.uri, tx, storage_options=storage_options)


def optimize(uri: str, *, restart_index: bool = True, column: str = "image", engine: str = "threads",
             ray_address: Optional[str] = None, batch_size: int = 256, num_threads: Optional[int] = None,
             progress: bool = True, storage_options: Optional[Dict[str, str]] = None,
             measure: bool = True) -> OptimizeSummary:
    """Rewrite the JPEGs of ``uri``'s ``column`` restart-indexed (see
    :func:`lancefeed.add_restart_index`: the same pixels, random crops that decode only
    their own part), as one new version; every other column, row id and deletion stays.

    Works on any dataset in Lance's v2 file formats, whoever wrote it. Images that are
    not JPEG, are indexed already, or cannot be indexed (lossless JPEG) stay as they
    are and are counted. ``engine="ray"`` rewrites the fragments as Ray Data tasks
    (``ray_address`` as for :func:`lancefeed.ingest_folder`). Run it again after an
    interruption to continue. ``measure`` times decoding a sample before and after.

    Example:
        >>> print(optimize("imagenet.lance", engine="ray"))  # doctest: +SKIP
        imagenet.lance: version 1 -> 2, 1000 of 1000 images restart-indexed, 0 kept as they were
        ...
    """
    import lance
    from tqdm import tqdm

    check_engine(engine)
    if not restart_index:
        raise ValueError("nothing to optimize: restart_index=False leaves every image as it is (CLI: --restart-index)")
    began = time.perf_counter()
    ds = lance.dataset(uri, storage_options=storage_options)
    check_column(ds, column)
    plan = _Plan(ds, column, storage_options)
    summary = OptimizeSummary(uri, version_before=int(ds.version), version_after=int(ds.version), rows=ds.count_rows())
    todo = [f.fragment_id for f in ds.get_fragments() if f.fragment_id not in plan.done]
    bar = tqdm(total=sum(int(f.metadata.physical_rows) for f in ds.get_fragments()), desc="optimize", unit="img",
               file=sys.stderr, disable=not progress)
    bar.update(sum(int(f.metadata.physical_rows) for f in ds.get_fragments() if f.fragment_id in plan.done))
    try:
        for _entry in _run(todo, ds, column, plan.job, engine, ray_address, batch_size, num_threads, storage_options, bar):
            pass
    finally:
        bar.close()
    entries = plan.entries()
    rewritten = {k: e for k, e in entries.items() if not e.get("unchanged")}
    for e in rewritten.values():
        summary.add(e)
    summary.fragments, summary.resumed = len(rewritten), len([k for k in plan.done if k in rewritten])
    summary.unchanged = len(entries) - len(rewritten)
    summary.kept = summary.rows - summary.indexed
    if rewritten:
        new = _commit(ds, entries, column, plan.job, storage_options)
        summary.version_after = int(new.version)
        if measure:
            summary.speed_before, summary.speed_after, summary.speed_what = decode_speed(ds, new, column)
    plan.ledger.clear()
    summary.seconds = time.perf_counter() - began
    return summary
