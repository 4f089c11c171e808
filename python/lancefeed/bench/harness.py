"""Running one loader in a process of its own and watching it.

Every loader runs in a process of its own (:mod:`lancefeed.bench.worker`), watched
from here. Its start-up (the process's imports and building the loader) has a limit
of its own, ``startup_timeout``, and is reported as ``startup_s``: a slow start-up is
slow, not stalled. Once the loader is built, one that yields no batch for
``stall_timeout`` seconds, or whose pass runs past ``timeout``, is killed with its
whole process group and reported as ``timeout``, as is one whose start-up runs past
``startup_timeout``; one that exits with an error is reported as ``failed``. CPU time is
measured inside the worker over the timed pass (its threads and its DataLoader
worker processes); peak memory is the largest sum of the process tree's
proportional set size (PSS, so pages shared by forked workers count once). Reading
PSS (``/proc/<pid>/smaps_rollup``) walks the process's page tables: ~16 ms for a
process with torch loaded, holding its memory map's lock, and read every 0.1 s it
cost lancefeed's CIFAR-10 pass ~12% of its rate. So the tree's resident size (a
counter, ~0.02 ms) is read every 0.1 s and PSS every second, each resident size
counted at the PSS/RSS ratio of the latest PSS reading (:class:`_Memory`). A peer's
one-time conversion runs the same way in a process of its own (:func:`run_convert`).

Example:
    >>> r = run_loader({"loader": "_fail"}, dataset="d", description="fails",
    ...                timeout=60, stall_timeout=60)  # doctest: +SKIP
    >>> r.status  # doctest: +SKIP
    'failed'
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
from typing import Any, Sequence

from lancefeed.bench.options import scrub, to_env
from lancefeed.bench.results import LoaderResult
from lancefeed.bench.protocol import parse

__all__ = ["run_convert", "run_loader"]


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


def _memory_mib(pids: Sequence[int], pss: bool = True) -> float | None:
    """Sum of PSS (RSS where PSS cannot be read, or with ``pss=False``) of ``pids``, in MiB."""
    total_kb, found = 0, False
    sources = (("smaps_rollup", "Pss:"), ("status", "VmRSS:")) if pss else (("status", "VmRSS:"),)
    for pid in pids:
        for name, key in sources:
            path = f"/proc/{pid}/{name}"
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


class _Memory:
    """Peak PSS of a process tree, read cheaply (see the module's docstring): RSS at
    every sample, PSS every ``pss_every`` seconds and whenever the tree's processes
    change (a forked worker's RSS counts the pages it shares, its PSS does not); between
    PSS readings a sample is its RSS times the latest PSS/RSS ratio.

    Example:
        >>> m = _Memory(pss_every=1.0)
        >>> m.sample([os.getpid()], now=0.0); m.peak > 0
        True
    """

    def __init__(self, pss_every: float = 1.0) -> None:
        self.pss_every = pss_every
        self.next_pss = float("-inf")
        self.ratio = 1.0
        self.pids: list[int] = []
        self.peak: float | None = None

    def sample(self, pids: Sequence[int], now: float) -> None:
        rss = _memory_mib(pids, pss=False)
        if now >= self.next_pss or sorted(pids) != self.pids:
            self.next_pss = now + self.pss_every
            self.pids = sorted(pids)
            pss = _memory_mib(pids)
            if pss is not None and rss:
                self.ratio = pss / rss
            mem = pss
        else:
            mem = None if rss is None else rss * self.ratio
        if mem is not None:
            self.peak = mem if self.peak is None else max(self.peak, mem)


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
        self.ready: dict[str, Any] = {}
        self.done_at: float | None = None
        self.done: dict[str, Any] | None = None
        self.images = 0
        self.seconds = 0.0
        self.memory = _Memory()
        self.killed = ""  # why the watch killed the worker, if it did

    @property
    def startup_s(self) -> float | None:
        return None if self.ready_at is None else self.ready_at - self.launched

    @property
    def peak(self) -> float | None:
        return self.memory.peak

    def sample_memory(self, now: float) -> None:
        self.memory.sample(_tree(self.proc.pid), now)

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
        event = parse(line)
        if event is None:
            return False
        self.last_event = now
        if event["event"] == "ready":
            self.ready_at, self.ready = now, event
        elif event["event"] == "batch":
            self.images = int(event["images"])
            self.seconds = float(event["seconds"])
        elif event["event"] in ("done", "converted"):
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
                self.sample_memory(now)
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


def failure_message(returncode: int | None, stderr: str) -> str:
    """Why a worker failed: the signal that killed it, or its last exception line.

    Example:
        >>> failure_message(-11, "")
        'killed by SIGSEGV'
        >>> failure_message(1, "Traceback ...\\nRuntimeError: worker died\\n")
        'RuntimeError: worker died'
    """
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


def _watched(
    spec: dict[str, Any], timeout: float, stall_timeout: float, startup_timeout: float
) -> tuple[_Watch, int | None, str]:
    """Launch the worker on ``spec``, watch it to its end; (watch, exit status, stderr
    tail with the secrets of ``spec["storage_options"]`` masked)."""
    spec = dict(spec)
    options = spec.pop("storage_options", None)
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(
            # The options go in the environment: a command line is readable by anyone (ps).
            [sys.executable, "-m", "lancefeed.bench.worker", json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=err,
            env=to_env(options),
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
        return watch, proc.returncode, scrub(err.read(), options)[-4000:]


def run_loader(
    spec: dict[str, Any],
    *,
    dataset: str,
    description: str,
    timeout: float,
    stall_timeout: float,
    startup_timeout: float = 300.0,
) -> LoaderResult:
    """Run one loader (``spec`` as :mod:`lancefeed.bench.worker` takes it) in a
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
    watch, returncode, stderr_tail = _watched(spec, timeout, stall_timeout, startup_timeout)
    result.peak_mib = watch.peak
    result.startup_s = watch.startup_s
    result.torch_import_s = _seconds(watch.ready.get("torch_import_s"))
    result.own_startup_s = _seconds(watch.ready.get("own_startup_s"))
    result.images, result.seconds = watch.images, watch.seconds
    if watch.killed:
        result.status, result.message = "timeout", watch.killed
    elif watch.done is not None and returncode == 0 and int(watch.done["images"]) == 0:
        # Not a rate of 0: a loader that hands out nothing is broken (FFCV's Loader
        # dropped a last incomplete batch that was the whole dataset, and said "ok").
        result.message = "the loader yielded no images"
    elif watch.done is not None and returncode == 0:
        result.status = "ok"
        result.images = int(watch.done["images"])
        result.seconds = float(watch.done["seconds"])
        result.cpu_s = float(watch.done["cpu_s"])
        result.loader_stats = watch.done.get("loader_stats")
        _fill_rates(result, watch.done)
    else:
        result.message = failure_message(returncode, stderr_tail)
    if result.images and result.seconds > 0:
        result.images_per_s = result.images / result.seconds
    return result


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)


def _fill_rates(result: LoaderResult, done: dict[str, Any]) -> None:
    """The derived figures of a finished pass: first-batch latency, the steady rate
    after the first batch, the whole-epoch rates counting the start-up (all of it, and
    the loader's own: after ``import torch``), CPU per
    1,000 images (over every pass), and the median rate of the later passes."""
    first = done.get("first_batch_s")
    result.first_batch_s = _seconds(first)
    images, seconds = result.images, result.seconds
    after = images - int(done.get("first_batch_images") or 0)
    if first is not None and after > 0 and seconds > float(first):
        result.steady_images_per_s = after / (seconds - float(first))
    elif images and seconds > 0:  # a single batch: no steady state to separate
        result.steady_images_per_s = images / seconds
    if images and result.startup_s is not None:
        result.epoch_images_per_s = images / (result.startup_s + seconds)
    if images and result.own_startup_s is not None:
        result.own_epoch_images_per_s = images / (result.own_startup_s + seconds)
    cpu_images = int(done.get("cpu_images") or images)
    if cpu_images and result.cpu_s is not None:
        result.cpu_s_per_1k = result.cpu_s / cpu_images * 1000
    rates = sorted(float(n) / float(t) for n, t in done.get("later") or () if float(n) > 0 and float(t) > 0)
    if rates:
        result.later_images_per_s = rates[len(rates) // 2]


def run_convert(spec: dict[str, Any], *, timeout: float) -> tuple[float | None, int | None, str]:
    """Run ``spec``'s one-time conversion (into ``spec["converted"]``) in a process of
    its own, killed after ``timeout`` seconds; returns (seconds, bytes on disk, "")
    or (None, None, why it failed).

    Example:
        >>> run_convert({"loader": "webdataset", "uri": "c.lance", "limit": 64, "workers": 2,
        ...              "converted": "/tmp/wds"}, timeout=300)  # doctest: +SKIP
        (0.31, 1873920, '')
    """
    watch, returncode, stderr_tail = _watched({**spec, "phase": "convert"}, timeout, timeout, timeout)
    if watch.killed:
        return None, None, f"conversion timeout: {watch.killed}"
    if watch.done is None or returncode != 0:
        return None, None, f"conversion failed: {failure_message(returncode, stderr_tail)}"
    return float(watch.done["seconds"]), int(watch.done["bytes"]), ""
