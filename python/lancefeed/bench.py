"""``lancefeed bench``: lancefeed against the loaders people use today, in one run.

Every loader runs in a process of its own (:mod:`lancefeed.bench_worker`), watched
from here: a loader that yields no batch for ``stall_timeout`` seconds, or runs
past ``timeout``, is killed with its whole process group and reported as
``timeout``; one that exits with an error is reported as ``failed``. CPU time is
measured inside the worker over the timed pass (its threads and its DataLoader
worker processes); peak memory is the largest sum of the process tree's
proportional set size (PSS, so pages shared by forked workers count once),
sampled every 0.1 s.

Example:
    >>> from lancefeed.bench import run_bench
    >>> report = run_bench(tiny=True, out="bench-out")  # doctest: +SKIP
    >>> print(report.table())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from lancefeed.bench_transforms import TRANSFORMS, describe_plan, make_plan, output_side
from lancefeed.bench_worker import HIDDEN_LOADERS, LOADERS, TAG, pillow_name

__all__ = ["BenchReport", "LoaderResult", "run_bench", "run_loader", "DEFAULT_LOADERS"]

DEFAULT_LOADERS = tuple(LOADERS)


@dataclass
class LoaderResult:
    """One loader on one dataset.

    ``status`` is ``"ok"``, ``"timeout"`` or ``"failed"``; when not ok, the images/s
    are those of the batches that did arrive (``None`` if none did). ``ratio`` is
    images/s divided by lancefeed's on the same dataset, for finished runs. With
    repeats, the run with the median images/s is kept; ``runs`` lists every run's.
    """

    dataset: str
    loader: str
    description: str
    status: str
    images: int = 0
    seconds: float = 0.0
    images_per_s: float | None = None
    cpu_s: float | None = None
    peak_mib: float | None = None
    ratio: float | None = None
    message: str = ""
    runs: list[float | None] = field(default_factory=list)


@dataclass
class BenchReport:
    """All results of a run, with the settings that produced them."""

    results: list[LoaderResult]
    settings: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """The results as a fixed-width text table."""
        from lancefeed.bench_report import format_table

        return format_table(self)

    def to_json(self) -> dict[str, Any]:
        return {"settings": self.settings, "results": [asdict(r) for r in self.results]}


# --- watching one worker --------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc; just ``pid`` elsewhere)."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return seen


def _memory_mib(pids: Sequence[int]) -> float | None:
    """Sum of PSS (RSS where PSS cannot be read) of ``pids``, in MiB."""
    total_kb, found = 0, False
    for pid in pids:
        for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith(key):
                            total_kb += int(line.split()[1])
                            found = True
                            break
                    else:
                        continue
                break
            except (OSError, ValueError):
                continue
    return total_kb / 1024 if found else None


def _read_lines(stream: Any, out: queue.Queue[str | None]) -> None:
    for line in iter(stream.readline, ""):
        out.put(line)
    out.put(None)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


class _Watch:
    """The state of one watched worker: its progress, peak memory and fate."""

    def __init__(self, proc: subprocess.Popen[str], result: LoaderResult) -> None:
        self.proc = proc
        self.result = result
        self.done: dict[str, Any] | None = None
        self.peak: float | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_read_lines, args=(proc.stdout, self.lines), daemon=True).start()

    def sample_memory(self) -> None:
        mem = _memory_mib(_tree(self.proc.pid))
        if mem is not None:
            self.peak = mem if self.peak is None else max(self.peak, mem)

    def handle(self, line: str) -> bool:
        """Take one stdout line; True when it was an event of the protocol."""
        if not line.startswith(TAG):
            return False
        event = json.loads(line[len(TAG) :])
        if event["event"] == "batch":
            self.result.images = int(event["images"])
            self.result.seconds = float(event["seconds"])
        elif event["event"] == "done":
            self.done = event
        return True

    def run(self, timeout: float, stall_timeout: float) -> None:
        """Follow the worker until it exits or a timeout kills it."""
        launched = last_event = next_sample = time.monotonic()
        ready = eof = False
        while True:
            now = time.monotonic()
            if now >= next_sample:
                self.sample_memory()
                next_sample = now + 0.1
            if eof and self.proc.poll() is not None:
                return
            over = now - launched > timeout
            if over or (ready and now - last_event > stall_timeout):
                _kill_group(self.proc)
                self.proc.wait()
                self.result.status = "timeout"
                self.result.message = (
                    f"over {timeout:g} s, killed" if over else f"no batch for {stall_timeout:g} s, killed"
                )
                return
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                eof = True
            elif self.handle(line):
                last_event = time.monotonic()
                ready = True  # "ready" or any later event: the stall clock runs from here


def _failure_message(returncode: int | None, stderr: str) -> str:
    """Why a worker failed: the signal that killed it, or its last exception line."""
    if returncode is not None and returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b", ln)]
    if errors:
        return errors[-1]
    return lines[-1] if lines else f"exit status {returncode}"


def run_loader(
    spec: dict[str, Any],
    *,
    dataset: str,
    description: str,
    timeout: float,
    stall_timeout: float,
) -> LoaderResult:
    """Run one loader (``spec`` as :mod:`lancefeed.bench_worker` takes it) in a
    subprocess and watch it; never waits longer than ``timeout`` seconds.

    Example:
        >>> r = run_loader({"loader": "_sleep"}, dataset="x", description="sleeps",
        ...                timeout=2, stall_timeout=1)  # doctest: +SKIP
        >>> r.status  # doctest: +SKIP
        'timeout'
    """
    result = LoaderResult(dataset=dataset, loader=spec["loader"], description=description, status="failed")
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lancefeed.bench_worker", json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,  # its own process group: a kill takes its workers too
        )
        watch = _Watch(proc, result)
        try:
            watch.run(timeout, stall_timeout)
        finally:
            # Also on Ctrl-C: leave no loader (or DataLoader worker) running.
            _kill_group(proc)
            proc.wait()
        err.seek(0)
        stderr_tail = err.read()[-4000:]
    result.peak_mib = watch.peak
    if watch.done is not None and proc.returncode == 0:
        result.status = "ok"
        result.images = int(watch.done["images"])
        result.seconds = float(watch.done["seconds"])
        result.cpu_s = float(watch.done["cpu_s"])
    elif result.status != "timeout":
        result.message = _failure_message(proc.returncode, stderr_tail)
    if result.images and result.seconds > 0:
        result.images_per_s = result.images / result.seconds
    return result


# --- a whole run ----------------------------------------------------------------


def _median_short_side(uri: str, sample: int = 256) -> int:
    """Median short side of the dataset's images (``width``/``height`` columns, or
    the headers of the first ``sample`` images)."""
    import lance
    import numpy as np

    ds = lance.dataset(uri)
    names = ds.schema.names
    n = min(sample, ds.count_rows())
    if n == 0:
        raise ValueError(f"{uri} has no rows to benchmark")
    if "width" in names and "height" in names:
        t = ds.head(n, columns=["width", "height"])
        sides = np.minimum(t.column("width").to_numpy(), t.column("height").to_numpy())
    else:
        if "image" not in names:
            raise ValueError(f"{uri} has no 'image' column; columns are {', '.join(names)}")
        from lancefeed import image_info

        blobs = ds.head(n, columns=["image"]).column("image").to_pylist()
        sides = np.array([min(image_info(b)[:2]) for b in blobs])
    return int(np.median(sides))


def _dataset_name(uri: str) -> str:
    """``/data/cifar10.lance/`` -> ``cifar10``."""
    name = Path(uri.rstrip("/")).name or uri
    return name[: -len(".lance")] if name.endswith(".lance") and len(name) > 6 else name


def _describe(name: str, workers: int, threads: int) -> str:
    if name in HIDDEN_LOADERS:
        return f"test hook {name}"
    return LOADERS[name].format(workers=workers, threads=threads, pillow=pillow_name())


def run_bench(
    uri: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    *,
    transform: str = "train",
    batch_size: int | None = None,
    limit: int | None = None,
    timeout: float = 120.0,
    stall_timeout: float = 30.0,
    workers: int | None = None,
    threads: int | None = None,
    loaders: Sequence[str] | None = None,
    out: str | os.PathLike[str] = "bench-out",
    tiny: bool = False,
    repeat: int = 1,
    progress: bool = True,
) -> BenchReport:
    """Benchmark every loader on ``uri`` (one dataset or a list of them), or, when
    it is None, on the built-in default datasets.

    Writes ``results.json``, ``results.csv``, ``table.txt`` and ``bench.png`` to
    ``out`` and returns the report. ``batch_size`` defaults to 64 for
    ImageNet-sized output and 256 for CIFAR-sized; ``workers`` (torch DataLoader
    worker processes of the baselines) and ``threads`` (lancefeed's) default to
    the number of cores. ``repeat`` runs each loader that many times and keeps the
    median run.

    Example:
        >>> report = run_bench("cifar10.lance", transform="eval", limit=10_000)  # doctest: +SKIP
        >>> [(r.loader, round(r.images_per_s)) for r in report.results]  # doctest: +SKIP
    """
    from lancefeed.bench_report import write_outputs

    uris = [uri] if isinstance(uri, (str, os.PathLike)) else list(uri or [])
    uris = [os.fspath(u) for u in uris]
    for u in uris:
        if "://" not in u and not os.path.isdir(u):
            raise FileNotFoundError(f"{u}: no Lance dataset there (expected a dataset folder or URI)")
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}; got {transform!r}")
    names = list(loaders) if loaders else list(DEFAULT_LOADERS)
    for name in names:
        if name not in LOADERS and name not in HIDDEN_LOADERS:
            raise ValueError(f"unknown loader {name!r}; expected some of {', '.join(LOADERS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1; got {limit}")
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1; got {repeat}")
    cores = os.cpu_count() or 1
    workers = cores if workers is None else workers
    threads = cores if threads is None else threads
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="lancefeed-bench-") as tmp:
        if not uris:
            from lancefeed.bench_data import build_default_datasets

            if progress:
                print("building the default datasets (generated images) ...", file=sys.stderr)
            datasets = build_default_datasets(tmp, tiny=tiny, progress=progress)
        else:
            datasets = {_dataset_name(u): u for u in uris}
            if len(datasets) < len(uris):
                raise ValueError(f"datasets must have distinct names; got {', '.join(uris)}")
        results: list[LoaderResult] = []
        plans: dict[str, str] = {}
        for dataset, ds_uri in datasets.items():
            from lancefeed.bench_data import files_folder

            side = output_side(_median_short_side(ds_uri))
            plan = make_plan(transform, side)
            plans[dataset] = describe_plan(plan)
            bs = batch_size or (64 if side > 64 else 256)
            folder = files_folder(ds_uri) if not uris else None
            for name in names:
                spec = {
                    "loader": name,
                    "uri": ds_uri,
                    "plan": plan,
                    "batch_size": bs,
                    "shuffle": transform == "train",
                    "limit": limit,
                    "workers": workers,
                    "threads": threads,
                    "folder": str(folder) if folder else None,
                    "export_dir": str(Path(tmp) / f"{dataset}-export-{name}"),
                }
                if progress:
                    print(f"[{dataset}] {name} ...", file=sys.stderr, end="", flush=True)
                r = _repeated(
                    spec,
                    repeat,
                    dataset=dataset,
                    description=_describe(name, workers, threads),
                    timeout=timeout,
                    stall_timeout=min(stall_timeout, timeout),
                )
                if progress:
                    rate = f"{r.images_per_s:,.0f} images/s" if r.images_per_s else "-"
                    print(f" {r.status}, {rate}", file=sys.stderr)
                results.append(r)
        _fill_ratios(results)
    report = BenchReport(
        results=results,
        settings={
            "datasets": uris or "built-in default (generated images)",
            "transform": transform,
            "plans": plans,
            "batch_size": batch_size or "64 (224 px output) / 256 (small images)",
            "limit": limit,
            "repeat": repeat,
            "timeout_s": timeout,
            "stall_timeout_s": stall_timeout,
            "workers": workers,
            "threads": threads,
            "cores": cores,
            "python": sys.version.split()[0],
            "pillow": pillow_name(),
        },
    )
    write_outputs(report, out_dir)
    return report


def _repeated(spec: dict[str, Any], repeat: int, **kwargs: Any) -> LoaderResult:
    """Run a loader ``repeat`` times and keep the run with the median images/s
    (all rates go to ``runs``). A loader that does not finish is not run again."""
    runs: list[LoaderResult] = []
    for _ in range(repeat):
        r = run_loader(spec, **kwargs)
        runs.append(r)
        if r.status != "ok":
            break
        export = spec.get("export_dir")
        if spec.get("folder") is None and export and os.path.isdir(export):
            spec = {**spec, "folder": export}  # exported once; the export is setup, not timed
    ok = sorted((r for r in runs if r.status == "ok"), key=lambda r: r.images_per_s or 0.0)
    chosen = ok[(len(ok) - 1) // 2] if len(ok) == len(runs) else runs[-1]
    chosen.runs = [r.images_per_s for r in runs]
    return chosen


def _fill_ratios(results: list[LoaderResult]) -> None:
    base = {r.dataset: r.images_per_s for r in results if r.loader == "lancefeed" and r.status == "ok"}
    for r in results:
        ref = base.get(r.dataset)
        if ref and r.images_per_s is not None and r.status == "ok":
            r.ratio = r.images_per_s / ref
