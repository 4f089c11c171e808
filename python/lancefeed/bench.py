"""``lancefeed bench``: lancefeed against the loaders people use today, in one run.

Every loader runs in a process of its own (:mod:`lancefeed.bench_worker`), watched
from here. Its start-up (the process's imports and building the loader) has a limit
of its own, ``startup_timeout``, and is reported as ``startup_s``: a slow start-up is
slow, not stalled. Once the loader is built, one that yields no batch for
``stall_timeout`` seconds, or whose pass runs past ``timeout``, is killed with its
whole process group and reported as ``timeout``, as is one whose start-up runs past
``startup_timeout``; one that exits with an error is reported as ``failed``. CPU time is
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
import re
import select
import signal
import subprocess
import sys
import tempfile
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
    ``startup_s`` is the time from launching the loader's process until it had
    imported what it needs and built its loader (not part of ``seconds``; ``None``
    when it did not get that far).
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
    # Last, so that positional construction of the fields above keeps working.
    startup_s: float | None = None


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


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


class _Watch:
    """The state of one watched worker: its progress, peak memory and fate.

    Its life has three phases, each with its own limit: start-up (launch to
    "ready": the imports and building the loader) within ``startup_timeout``; the
    timed pass ("ready" to "done") within ``timeout``, with no more than
    ``stall_timeout`` between events; and the exit after "done", again within
    ``startup_timeout`` (interpreter shutdown is no stall either).
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.fd = proc.stdout.fileno()  # type: ignore[union-attr]
        self.buffer = b""
        self.eof = False
        self.launched = self.last_event = time.monotonic()
        self.ready_at: float | None = None
        self.done_at: float | None = None
        self.done: dict[str, Any] | None = None
        self.images = 0
        self.seconds = 0.0
        self.peak: float | None = None
        self.killed = ""  # why the watch killed the worker, if it did

    @property
    def startup_s(self) -> float | None:
        return None if self.ready_at is None else self.ready_at - self.launched

    def sample_memory(self) -> None:
        mem = _memory_mib(_tree(self.proc.pid))
        if mem is not None:
            self.peak = mem if self.peak is None else max(self.peak, mem)

    def take_output(self, wait: float) -> list[str]:
        """The complete lines the worker has written so far, waiting up to ``wait``
        seconds for the first."""
        while not self.eof:
            readable, _, _ = select.select([self.fd], [], [], wait)
            if not readable:
                break
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                self.eof = True
            self.buffer += chunk
            wait = 0  # then only what is already there
        *lines, self.buffer = self.buffer.split(b"\n")
        if self.eof and self.buffer:
            lines.append(self.buffer)
            self.buffer = b""
        return [ln.decode("utf-8", "replace") for ln in lines]

    def handle(self, line: str, now: float) -> bool:
        """Take one stdout line; True when it was an event of the protocol."""
        if not line.startswith(TAG):
            return False
        event = json.loads(line[len(TAG) :])
        self.last_event = now
        if event["event"] == "ready":
            self.ready_at = now
        elif event["event"] == "batch":
            self.images = int(event["images"])
            self.seconds = float(event["seconds"])
        elif event["event"] == "done":
            self.done, self.done_at = event, now
        return True

    def limit_passed(self, now: float, timeout: float, stall_timeout: float, startup_timeout: float) -> str:
        """Why the worker must be killed at ``now`` ("" while it is within its limits)."""
        if self.ready_at is None:
            if now - self.launched > startup_timeout:
                return f"start-up over {startup_timeout:g} s, killed"
        elif self.done_at is not None:
            if now - self.done_at > startup_timeout:
                return f"did not exit within {startup_timeout:g} s of its pass, killed"
        elif now - self.ready_at > timeout:
            return f"over {timeout:g} s, killed"
        elif now - self.last_event > stall_timeout:
            return f"no batch for {stall_timeout:g} s, killed"
        return ""

    def run(self, timeout: float, stall_timeout: float, startup_timeout: float) -> None:
        """Follow the worker until it exits or passes one of its limits (then kill it)."""
        next_sample = self.launched
        while True:
            lines = self.take_output(wait=0.1)
            # The clocks are read before the last look at the pipe, so an event the
            # worker wrote in time counts even when this process was slow to read it
            # (on a loaded machine): only the worker's silence is a stall.
            now = time.monotonic()
            lines += self.take_output(wait=0)
            for line in lines:
                self.handle(line, now)
            if now >= next_sample:
                self.sample_memory()
                next_sample = now + 0.1
            if self.proc.poll() is not None:
                # Exited; what it wrote is in the pipe (a stray child may keep it open).
                for line in self.take_output(wait=0):
                    self.handle(line, now)
                return
            self.killed = self.limit_passed(now, timeout, stall_timeout, startup_timeout)
            if self.killed:
                _kill_group(self.proc)
                self.proc.wait()
                return


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
    startup_timeout: float = 300.0,
) -> LoaderResult:
    """Run one loader (``spec`` as :mod:`lancefeed.bench_worker` takes it) in a
    subprocess and watch it.

    The process's start-up (imports, building the loader) may take up to
    ``startup_timeout`` seconds and is reported as ``startup_s``; then the pass may
    take up to ``timeout`` seconds, with at most ``stall_timeout`` between batches;
    then the process has ``startup_timeout`` seconds to exit. A loader past any of
    these is killed and reported as ``timeout``.

    Example:
        >>> r = run_loader({"loader": "_sleep"}, dataset="x", description="sleeps",
        ...                timeout=2, stall_timeout=1)  # doctest: +SKIP
        >>> r.status, r.message  # doctest: +SKIP
        ('timeout', 'no batch for 1 s, killed')
    """
    result = LoaderResult(dataset=dataset, loader=spec["loader"], description=description, status="failed")
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lancefeed.bench_worker", json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,  # its own process group: a kill takes its workers too
        )
        watch = _Watch(proc)
        try:
            watch.run(timeout, stall_timeout, startup_timeout)
        finally:
            # Also on Ctrl-C: leave no loader (or DataLoader worker) running.
            _kill_group(proc)
            proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
        err.seek(0)
        stderr_tail = err.read()[-4000:]
    result.peak_mib = watch.peak
    result.startup_s = watch.startup_s
    result.images, result.seconds = watch.images, watch.seconds
    if watch.killed:
        result.status, result.message = "timeout", watch.killed
    elif watch.done is not None and proc.returncode == 0:
        result.status = "ok"
        result.images = int(watch.done["images"])
        result.seconds = float(watch.done["seconds"])
        result.cpu_s = float(watch.done["cpu_s"])
    else:
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

        from lancefeed.columns import image_array

        # Blob columns read as their bytes, not as descriptions; other image column
        # types (Hugging Face's struct, encoded_image) as binary.
        column = ds.head(n, columns=["image"], blob_handling="all_binary").column("image")
        blobs = image_array(column, column="image").to_pylist()
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
    startup_timeout: float = 300.0,
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

    Limits per loader run: ``startup_timeout`` seconds for its process to import
    what it needs and build the loader (and, after the pass, to exit), then
    ``timeout`` seconds for the timed pass, killed sooner when no batch arrives
    for ``stall_timeout`` seconds.

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
                    startup_timeout=startup_timeout,
                )
                if progress:
                    rate = f"{r.images_per_s:,.0f} images/s" if r.images_per_s else "-"
                    start = f" (start-up {r.startup_s:.1f} s)" if r.startup_s is not None else ""
                    print(f" {r.status}, {rate}{start}", file=sys.stderr)
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
            "startup_timeout_s": startup_timeout,
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
