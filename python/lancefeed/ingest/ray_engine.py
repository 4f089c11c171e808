"""Ingest on Ray: the listing, the reading, the checks (header, or ``verify``), the
restart index and the masks run as Ray Data tasks; each task writes its part of the
files as Lance fragments; the driver commits them all once.

The work is cut into **units**, in ingest order, a few per task:

- **groups** (a folder with at least two groups per CPU: ImageFolder's label folders,
  :class:`~lancefeed.ingest.common.Listing`): a task lists its groups (recursively,
  with their masks) and writes their files. Nothing but counts, names and fragment
  metadata comes back to the driver, which only ever read the top two levels of the
  tree.
- **files** (a COCO source, whose items come from its one file; a folder of too few
  groups to spread, such as a flat folder of masks; or the resume of an ingest that an
  earlier run committed in part): the groups are listed by Ray tasks first, then the
  files ``[start, n)`` are cut into shards of at most ``commit_every`` files, about four
  per CPU, so a slow one does not hold the others up.

Each task reads its files with the one-machine ingest's own per-row function
(:func:`~lancefeed.ingest.common.load`) and batch maker
(:class:`~lancefeed.ingest.writer.Rows`), writes the rows with Lance's
``write_fragments`` (fragments of at most ``commit_every`` rows), and records the
fragment metadata in the :class:`~lancefeed.ledger.Ledger` under its units. Then the
driver sorts the fragments by unit (rows in ingest order, whatever order tasks
finished in) and commits them in one Lance transaction (``Overwrite`` to create or
replace, ``Append`` onto an existing dataset) carrying the one-machine ingest's resume
record, marked done, and clears the ledger.

Failures. Ray retries a task whose worker died (``max_retries=-1``, Ray Data's
default for system failures); the retry writes its fragments and its ledger entry
again, under the same name, so no file is counted twice (the dead attempt's data
files are referenced by nothing). A driver killed before the commit leaves the
ledger: ``resume=True`` keeps every unit recorded under the same plan (source,
options, units) and runs only the others. The commit is made idempotent by the run's
id in the record: a run that finds its own record committed does not commit again
(Lance would add the rows a second time).

Example:
    >>> import lancefeed
    >>> lancefeed.ingest_folder("cifar10/", "cifar10.lance", engine="ray")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pyarrow as pa

from lancefeed.cluster import cluster_cpus, quiet_ray_data, ray_session
from lancefeed.ingest.common import IngestError, IngestSummary, Item, Listing, loaded_stream
from lancefeed.ingest.options import IngestOptions
from lancefeed.ingest.resume import RECORD_FORMAT, RECORD_KEY, digest, has_version, item_key, latest_record, resume_point
from lancefeed.ingest.writer import Rows, blob_schema
from lancefeed.ledger import Ledger

__all__ = ["LEDGER_KIND", "SHARDS_PER_CPU", "Units", "list_on_ray", "plan_shards", "run_on_ray", "unit_name",
           "write_unit"]

LEDGER_KIND = "ingest"
# Tasks per CPU: enough that the last tasks of a pass are short, few enough that the
# per-task cost (a Ray task, a Lance file) stays a small part of each.
SHARDS_PER_CPU = 4
# Reader threads in a task (one CPU each): local files overlap their reads with the
# checks; an object store needs many requests in flight to hide its latency.
_LOCAL_THREADS, _STORE_THREADS = 2, 16

Shard = Tuple[int, int]


def unit_name(kind: str, start: int, end: int) -> str:
    """The ledger entry of units ``[start, end)`` of ``kind``.

    Example:
        >>> unit_name("files", 0, 1250)
        'files-0000000000-0000001250'
    """
    return f"{kind}-{start:010d}-{end:010d}"


def plan_shards(start: int, total: int, done: Sequence[Shard], size: int) -> List[Shard]:
    """The shards of at most ``size`` units that cover ``[start, total)`` outside ``done``.

    Example:
        >>> plan_shards(0, 10, [(2, 5)], 2)
        [(0, 2), (5, 7), (7, 9), (9, 10)]
    """
    shards, at = [], start
    for a, b in sorted(done) + [(total, total)]:
        while at < a:
            shards.append((at, min(at + size, a)))
            at = shards[-1][1]
        at = max(at, b)
    return shards


@dataclass
class Units:
    """What the tasks share out: ``kind`` (``"groups"`` or ``"files"``), units
    ``[start, total)`` to write (``start`` files were committed by an earlier run), at
    most ``size`` a task; ``payload(a, b)`` is what a task gets; ``items`` the listed
    files (``"files"`` only); ``key`` identifies the units for a resume.

    Example:
        >>> Units("files", 0, 3, 2, lambda a, b: [], {}).payload(0, 2)
        []
    """

    kind: str
    start: int
    total: int
    size: int
    payload: Callable[[int, int], List[Any]]
    key: Dict[str, Any]
    items: Optional[List[Item]] = None


def _list_groups(batch: pa.Table, list_group: Any) -> pa.Table:
    """A Ray task: the items of its groups, pickled, in the groups' order."""
    out = [pickle.dumps([it for g in pickle.loads(blob) for it in list_group(g)]) for blob in batch["groups"].to_pylist()]
    return pa.table({"index": batch["index"], "items": pa.array(out, pa.large_binary())})


def list_on_ray(ray: Any, listing: Listing, cpus: int) -> List[Item]:
    """Every item of ``listing``, its groups listed by Ray tasks, in ingest order.

    Example:
        >>> list_on_ray(ray, Listing.of([]), 2)  # doctest: +SKIP
        []
    """
    if listing.known or not listing.groups:
        return listing.items()
    per_task = max(1, math.ceil(len(listing.groups) / (SHARDS_PER_CPU * cpus)))
    chunks = [listing.groups[i:i + per_task] for i in range(0, len(listing.groups), per_task)]
    rows = [{"index": k, "groups": pickle.dumps(chunk)} for k, chunk in enumerate(chunks)]
    out = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        _list_groups, fn_kwargs={"list_group": listing.list_group}, batch_size=1, batch_format="pyarrow", num_cpus=1)
    found = sorted((r["index"], r["items"]) for r in out.iter_rows())
    return [it for _k, blob in found for it in pickle.loads(blob)]


def write_unit(kind: str, payload: List[Any], start: int, end: int, *, list_group: Any, uri: str, schema: pa.Schema,
               opts: IngestOptions, root: Any, job: str, mode: str) -> Dict[str, Any]:
    """Write units ``[start, end)`` (``payload``: their groups, listed here, or their
    items) as Lance fragments of ``uri`` (not committed) and record them in the ledger.
    Returns the entry: fragments, files, rows, skipped files, the files' names, and
    ``failure`` (``strict``: the first bad file; nothing is recorded then).

    Example:
        >>> write_unit("files", items[:100], 0, 100, list_group=None, uri="out.lance", schema=FOLDER_SCHEMA,
        ...            opts=IngestOptions(), root=root, job="j", mode="create")["rows"]  # doctest: +SKIP
        100
    """
    from lance.fragment import write_fragments

    began = time.perf_counter()
    items = payload if kind == "files" else [it for g in payload for it in list_group(g)]
    local = all("://" not in str(it.path) for it in items[:1])
    threads = opts.num_threads or (_LOCAL_THREADS if local else _STORE_THREADS)
    stream = loaded_stream(items, num_threads=threads, verify=opts.verify, restart=opts.restart_index)
    rows = Rows(stream, schema, opts, root)
    entry: Dict[str, Any] = {"job": job, "start": start, "end": end, "files": len(items)}
    try:
        reader = pa.RecordBatchReader.from_batches(schema, rows.batches(len(items)))
        # At most commit_every rows a fragment, as the one-machine ingest's chunks.
        fragments = write_fragments(reader, uri, schema=schema, mode=mode, max_rows_per_file=opts.commit_every,
                                    storage_options=opts.storage_options)
    except Exception:
        if rows.failure:
            return {**entry, "failure": str(rows.failure[0]), "rows": 0, "skipped": rows.skipped}
        raise
    finally:
        stream.close()
    entry.update(rows=rows.rows, skipped=rows.skipped, keys=[item_key(it).decode() for it in items],
                 fragments=[json.dumps(f.to_json()) for f in fragments], seconds=time.perf_counter() - began)
    Ledger(uri, LEDGER_KIND, opts.storage_options).put(unit_name(kind, start, end), entry)
    return entry


def _write_units(batch: pa.Table, **kwargs: Any) -> pa.Table:
    """A Ray task: :func:`write_unit` for each row (one) of the batch; the entry back,
    without the fragments and names (the driver reads those from the ledger)."""
    out = []
    for start, end, blob in zip(batch["start"].to_pylist(), batch["end"].to_pylist(), batch["payload"].to_pylist()):
        entry = write_unit(payload=pickle.loads(blob), start=start, end=end, **kwargs)
        out.append(json.dumps({k: v for k, v in entry.items() if k not in ("fragments", "keys")}))
    return pa.table({"start": batch["start"], "result": pa.array(out, pa.large_string())})


def _file_units(ray: Any, listing: Listing, uri: str, record: Dict[str, Any], opts: IngestOptions,
                cpus: int) -> Tuple[Optional[Units], str, int]:
    """The files as units (listed first), where the one-machine ingest would start:
    (units, mode, files committed); no units when the ingest is complete already."""
    items = list_on_ray(ray, listing, cpus)
    start, mode, done = 0, opts.mode, False
    if opts.resume and has_version(uri, opts.storage_options):
        start, mode, done = resume_point(uri, opts.mode, record, items, opts.storage_options)
    if done:
        return None, mode, start
    size = max(1, min(opts.commit_every, math.ceil((len(items) - start) / (SHARDS_PER_CPU * cpus))))
    key = {"files": len(items), "digest": digest(items, len(items)).hexdigest()}
    return Units("files", start, len(items), size, lambda a, b: list(items[a:b]), key, items), mode, start


def _group_units(listing: Listing, cpus: int) -> Units:
    """The groups as units, a few a task."""
    groups = listing.groups
    names = hashlib.sha256("\n".join(map(repr, groups)).encode()).hexdigest()
    size = max(1, len(groups) // (SHARDS_PER_CPU * cpus))
    return Units("groups", 0, len(groups), size, lambda a, b: list(groups[a:b]), {"groups": len(groups), "names": names})


class _Plan:
    """This run: its id, units, mode, the version it reads, and what an earlier run of
    the same plan recorded in the ledger (kept only on resume)."""

    def __init__(self, uri: str, record: Dict[str, Any], opts: IngestOptions, units: Units, mode: str) -> None:
        self.ledger = Ledger(uri, LEDGER_KIND, opts.storage_options)
        self.version = _current_version(uri, opts.storage_options)
        self.units, self.mode = units, mode
        self.key = {"record": record, "units": units.kind, **units.key, "start": units.start, "mode": mode,
                    "read_version": self.version}
        if not opts.resume:
            self.ledger.clear()  # another run's leftovers: this one starts afresh
        found = self.ledger.entries() if opts.resume else {}
        plan = found.pop("plan", None)
        if plan is not None and {k: plan.get(k) for k in self.key} == self.key:
            self.job = plan["job"]
            self.done = [e for e in found.values() if e.get("job") == self.job]
            return
        if found or plan is not None:
            self.ledger.clear()
        self.job, self.done = uuid.uuid4().hex, []
        self.ledger.put("plan", {**self.key, "job": self.job})

    def fragment_mode(self) -> str:
        """``write_fragments``' mode: onto the dataset's schema when appending to one, a
        schema of its own when replacing one, else a new dataset's."""
        if self.version is None:
            return "create"
        return "append" if self.mode == "append" else "overwrite"

    def entries(self) -> List[Dict[str, Any]]:
        """This run's recorded units, in order, checked to cover every unit."""
        entries = sorted((e for name, e in self.ledger.entries().items() if name != "plan" and e.get("job") == self.job),
                         key=lambda e: e["start"])
        covered = self.units.start
        for e in entries + [{"start": self.units.total, "end": self.units.total}]:
            if e["start"] != covered:
                raise RuntimeError(f"the ledger of {self.ledger.uri} lacks {self.units.kind} {covered}..{e['start']}; "
                                   "rerun with resume=True")
            covered = e["end"]
        return entries


def _current_version(uri: str, storage_options: Optional[Dict[str, str]]) -> Optional[int]:
    if not has_version(uri, storage_options):
        return None
    import lance

    return int(lance.dataset(uri, storage_options=storage_options).version)


def _commit(plan: _Plan, uri: str, schema: pa.Schema, record: Dict[str, Any], opts: IngestOptions) -> int:
    """One Lance commit of every recorded unit's fragments, in order; the rows."""
    import lance
    from lance.fragment import FragmentMetadata

    entries = plan.entries()
    rows = sum(e["rows"] for e in entries)
    found = latest_record(uri, search=False, storage_options=opts.storage_options) if plan.version is not None else None
    if found is not None and found[0].get("job") == plan.job:
        return rows  # committed already, by a driver killed right after
    items = plan.units.items
    h = digest(items, plan.units.start) if items is not None else hashlib.sha256()
    for e in entries:
        h.update("".join(e["keys"]).encode())
    total = plan.units.start + sum(e["files"] for e in entries)
    state = {"format": RECORD_FORMAT, **record, "items_total": total, "items_committed": total,
             "digest": h.hexdigest(), "done": True, "job": plan.job}
    fragments = [FragmentMetadata.from_json(f) for e in entries for f in e["fragments"]]
    if plan.fragment_mode() == "append":
        op = lance.LanceOperation.Append(fragments)
    else:
        op = lance.LanceOperation.Overwrite(schema, fragments)
    extra = {"enable_stable_row_ids": True} if opts.enable_stable_row_ids and plan.fragment_mode() != "append" else {}
    tx = lance.Transaction(read_version=plan.version or 0, operation=op, transaction_properties={RECORD_KEY: json.dumps(state)})
    lance.LanceDataset.commit(uri, tx, storage_options=opts.storage_options, **extra)
    return rows


def _results(ray: Any, plan: _Plan, listing: Listing, uri: str, schema: pa.Schema, opts: IngestOptions,
             root: Any) -> Iterator[Dict[str, Any]]:
    """Run the units not recorded yet; each task's result as it arrives."""
    units = plan.units
    shards = plan_shards(units.start, units.total, [(e["start"], e["end"]) for e in plan.done], units.size)
    if not shards:
        return
    rows = [{"start": a, "end": b, "payload": pickle.dumps(units.payload(a, b))} for a, b in shards]
    kwargs = {"kind": units.kind, "list_group": listing.list_group, "uri": uri, "schema": schema, "opts": opts,
              "root": root, "job": plan.job, "mode": plan.fragment_mode()}
    out = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        _write_units, fn_kwargs=kwargs, batch_size=1, batch_format="pyarrow", num_cpus=1)
    for row in out.iter_rows():
        yield json.loads(row["result"])


def _run_units(ray: Any, plan: _Plan, listing: Listing, uri: str, schema: pa.Schema, opts: IngestOptions, root: Any,
               desc: str) -> List[Dict[str, Any]]:
    """The tasks' results in unit order, a progress bar of units meanwhile."""
    from tqdm import tqdm

    units = plan.units
    bar = tqdm(total=units.total, initial=units.start + sum(e["end"] - e["start"] for e in plan.done),
               desc=f"{desc} (ray)", unit="img" if units.kind == "files" else "folder", file=sys.stderr,
               disable=not opts.progress)
    results = []
    try:
        for result in _results(ray, plan, listing, uri, schema, opts, root):
            bar.update(result["end"] - result["start"])
            results.append(result)
    finally:
        bar.close()
    return sorted(results, key=lambda r: r["start"])  # tasks finish in any order; units have one


def run_on_ray(listing: Listing, uri: str, schema: pa.Schema, record: Dict[str, Any], opts: IngestOptions, *,
               root: Any, desc: str) -> IngestSummary:
    """The ingest of ``listing`` into ``uri`` on Ray (see the module's description).

    Example:
        >>> run_on_ray(listing, "out.lance", FOLDER_SCHEMA, record, IngestOptions(engine="ray"),
        ...            root=root, desc="ingest")  # doctest: +SKIP
    """
    began = time.perf_counter()
    schema = blob_schema(schema, opts)
    with ray_session(opts.ray_address) as ray:
        quiet_ray_data(ray)
        cpus = cluster_cpus(ray)
        by_groups = not listing.known and len(listing.groups) >= 2 * cpus and not (
            opts.resume and has_version(uri, opts.storage_options))
        if by_groups:
            units, mode, start = _group_units(listing, cpus), opts.mode, 0
        else:
            found, mode, start = _file_units(ray, listing, uri, record, opts, cpus)
            if found is None:
                print(f"lancefeed: {uri} is complete already ({start} files); nothing to resume", file=sys.stderr)
                return IngestSummary(uri=uri, rows=0, seconds=time.perf_counter() - began, resumed_from=start)
            units = found
        listed = time.perf_counter()
        plan = _Plan(uri, record, opts, units, mode)
        results = _run_units(ray, plan, listing, uri, schema, opts, root, desc)
        written = time.perf_counter()
        failures = [r["failure"] for r in results if r.get("failure")]
        if failures:
            raise IngestError(failures[0])
        rows = _commit(plan, uri, schema, record, opts)
        plan.ledger.clear()
    timings = {"list": listed - began, "write": written - listed, "commit": time.perf_counter() - written,
               "tasks": float(len(results)),
               "task_rows_per_s": sum(r["rows"] for r in results) / max(1e-9, sum(r.get("seconds", 0) for r in results))}
    if rows == 0 and mode != "append" and start == 0:
        print(f"lancefeed: warning: no images were written to {uri}", file=sys.stderr)
    return IngestSummary(uri=uri, rows=rows, skipped=[(p, why) for r in results for p, why in r["skipped"]],
                         seconds=time.perf_counter() - began, resumed_from=start + sum(e["files"] for e in plan.done),
                         timings=timings)
