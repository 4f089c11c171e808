"""A two-stage pipeline in threads of this process: reads ahead, processes, hands over in order.

Stage one (``fetch``, the Lance takes) runs on ``io_threads`` threads, up to ``depth``
keys ahead of stage two. With ``io_threads=None`` the number of fetches in flight sizes
itself: it starts at ``prefetch + 1`` and grows by one each time stage two had to wait
for a fetch (the reads do not hide their latency), up to ``max_in_flight`` fetches and
``max_in_flight_bytes`` of fetched data (measured as the epoch runs); it never shrinks
within a pass. Stage two (``process``, the decode and collation) runs on one
driver thread; it turns each fetched key into one or more results (one take may feed
several batches) and puts them into a queue of ``prefetch`` slots; the consumer takes
them in order. So at most ``depth`` fetched keys and ``prefetch + 2`` results (queued,
in progress, held by the consumer) exist at once, and the fetches for the next keys
overlap the processing of this one.

An exception in either stage is handed to the consumer, which raises it (the original
exception, with its traceback) from ``next()``. Stopping early leaves no thread behind:
``close()``, garbage collection of the ``Pipeline`` (``break`` out of a ``for`` loop,
an exception in it, ``del``) and interpreter exit all stop and join the threads. The
threads are ordinary (non-daemon) threads; exit is handled by a hook that runs before
the interpreter joins them.

Example:
    >>> p = Pipeline(range(3), fetch=lambda k: k * 10, process=lambda k, v: [v, v + 1])
    >>> list(p)
    [0, 1, 10, 11, 20, 21]
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Callable, Deque, Dict, Generic, Iterable, Iterator, Optional, Tuple, TypeVar

K = TypeVar("K")
F = TypeVar("F")
T = TypeVar("T")

_POLL_S = 0.05
_OK, _END, _ERR = 0, 1, 2
_counter = itertools.count()
# The self-sizing window's bounds: fetches in flight, and the bytes they may hold (the
# Arrow size of the fetched columns, averaged over the fetches so far).
MAX_IN_FLIGHT = 16
MAX_IN_FLIGHT_BYTES = 256 << 20
# A wait for a fetch counts as "decode waited on I/O" above this share of the mean
# processing time of a key (and above _MIN_WAIT_S): smaller waits are scheduling noise.
_WAIT_SHARE = 0.05
_MIN_WAIT_S = 0.001
_WAIT_SAMPLES = 4096  # consumer waits kept for the percentiles
log = logging.getLogger("lancefeed")


@dataclass
class PipelineStats:
    """What a loader's pipelines did, summed over its passes (``DataLoader.stats()``).

    Times are wall-clock seconds. ``io_wait_s``: time stage two (the decode) sat waiting
    for a fetch; ``decode_s``: time it spent processing; ``take_s``: the fetches'
    own latencies, summed (they overlap); ``wait_p50_s``/``wait_p95_s``: how long
    ``next()`` waited for a batch; ``queue_depth_mean``: ready batches seen by ``next()``;
    ``in_flight_mean``/``in_flight_max``: fetches submitted and not yet processed, seen
    at each fetch; ``in_flight_limit``: the window now (``io_threads`` fixed, or self-sized).

    Example:
        >>> PipelineStats().batches
        0
    """

    batches: int = 0
    takes: int = 0
    bytes_read: int = 0
    take_s: float = 0.0
    io_wait_s: float = 0.0
    decode_s: float = 0.0
    consumer_wait_s: float = 0.0
    wait_p50_s: float = 0.0
    wait_p95_s: float = 0.0
    queue_depth_mean: float = 0.0
    queue_depth_max: int = 0
    in_flight_mean: float = 0.0
    in_flight_max: int = 0
    in_flight_limit: int = 0
    in_flight_bound: int = 0
    elapsed_s: float = 0.0

    @property
    def io_bound(self) -> bool:
        """Whether the decode waited on reads more than it worked."""
        return self.io_wait_s > self.decode_s

    def as_dict(self) -> Dict[str, Any]:
        """The fields (and ``io_bound``) as a plain dict."""
        return {**asdict(self), "io_bound": self.io_bound}

    def summary(self) -> str:
        """One line for a log."""
        mb = self.bytes_read / 1e6
        return (
            f"batches={self.batches} takes={self.takes} read={mb:.1f}MB "
            f"({mb / max(self.elapsed_s, 1e-9):.1f}MB/s) io_wait={self.io_wait_s:.2f}s decode={self.decode_s:.2f}s "
            f"wait_p50={self.wait_p50_s * 1e3:.1f}ms wait_p95={self.wait_p95_s * 1e3:.1f}ms "
            f"queue={self.queue_depth_mean:.1f} in_flight={self.in_flight_mean:.1f}/{self.in_flight_limit} "
            f"{'io-bound' if self.io_bound else 'decode-bound'}"
        )


class Meter:
    """The counters behind :class:`PipelineStats`; updated from the pipeline's threads.

    Each update is a few additions under one lock, per key or per batch (not per
    row), so the cost is nothing next to a take or a decode. ``log_every`` (seconds)
    logs ``summary()`` at INFO on the ``lancefeed`` logger at most that often.

    Example:
        >>> m = Meter()
        >>> m.fetched(0.01, 1000); m.snapshot().bytes_read
        1000
    """

    def __init__(self, log_every: Optional[float] = None, label: str = "") -> None:
        self._lock = threading.Lock()
        self._s = PipelineStats()
        self._waits: Deque[float] = collections.deque(maxlen=_WAIT_SAMPLES)
        self._queue_sum = 0
        self._in_flight_sum = 0
        self._in_flight_n = 0
        self._start = time.monotonic()
        self._log_every = log_every
        self._next_log = self._start + (log_every or 0.0)
        self._label = label

    def fetched(self, seconds: float, nbytes: int) -> None:
        with self._lock:
            self._s.takes += 1
            self._s.take_s += seconds
            self._s.bytes_read += int(nbytes)

    def add_bytes(self, nbytes: int) -> None:
        with self._lock:
            self._s.bytes_read += int(nbytes)

    def driver(self, io_wait: float, decode: float, in_flight: int, limit: int, bound: int) -> None:
        with self._lock:
            s = self._s
            s.io_wait_s += io_wait
            s.decode_s += decode
            self._in_flight_sum += in_flight
            self._in_flight_n += 1
            s.in_flight_max = max(s.in_flight_max, in_flight)
            s.in_flight_limit, s.in_flight_bound = limit, bound
        self.maybe_log()

    def consumed(self, wait: float, depth: int) -> None:
        with self._lock:
            self._s.batches += 1
            self._s.consumer_wait_s += wait
            self._waits.append(wait)
            self._queue_sum += depth
            self._s.queue_depth_max = max(self._s.queue_depth_max, depth)
        self.maybe_log()

    def mean_take_bytes(self) -> float:
        with self._lock:
            return self._s.bytes_read / self._s.takes if self._s.takes else 0.0

    def snapshot(self) -> PipelineStats:
        """The counters now, with the means and percentiles computed."""
        with self._lock:
            s = PipelineStats(**asdict(self._s))
            waits = sorted(self._waits)
            queue_sum, in_sum, in_n = self._queue_sum, self._in_flight_sum, self._in_flight_n
        if waits:
            s.wait_p50_s = waits[min(len(waits) - 1, len(waits) // 2)]
            s.wait_p95_s = waits[min(len(waits) - 1, int(len(waits) * 0.95))]
        s.queue_depth_mean = queue_sum / s.batches if s.batches else 0.0
        s.in_flight_mean = in_sum / in_n if in_n else 0.0
        s.elapsed_s = time.monotonic() - self._start
        return s

    def maybe_log(self) -> None:
        if not self._log_every:
            return
        now = time.monotonic()
        with self._lock:
            if now < self._next_log:
                return
            self._next_log = now + self._log_every
        log.info("%s%s", self._label, self.snapshot().summary())


class _Window:
    """How many fetches may be in flight: fixed, or grown when the processing waits."""

    def __init__(self, prefetch: int, io_threads: Optional[int], depth: Optional[int], meter: Meter,
                 max_in_flight: int, max_in_flight_bytes: int) -> None:
        self.adaptive = io_threads is None
        self.meter = meter
        self.max_bytes = max_in_flight_bytes
        if self.adaptive:
            self.size = prefetch + 1
            self.cap = max(self.size, max_in_flight)
        else:
            self.size = prefetch + 1 if depth is None else depth
            self.cap = self.size
        self._process_s = 0.0
        self._processed = 0

    def bound(self) -> int:
        """The most fetches the window may grow to, given their mean size so far."""
        if not self.adaptive:
            return self.size
        per = self.meter.mean_take_bytes()
        by_bytes = int(self.max_bytes // per) if per > 0 else self.cap
        return max(1, min(self.cap, by_bytes))

    def observe(self, waited: float, processed: float) -> None:
        """After one key: ``waited`` for its fetch, ``processed`` it in that long."""
        first = self._processed == 0
        self._process_s += processed
        self._processed += 1
        if not self.adaptive or first:
            return  # the first fetch is waited for whatever the window: no signal
        mean = self._process_s / self._processed
        if waited > max(_MIN_WAIT_S, _WAIT_SHARE * mean):
            self.size = min(self.size + 1, max(self.size, self.bound()))


class _Shared:
    """What the threads touch; it never refers to the ``Pipeline`` handle, so dropping
    the handle triggers its finalizer even while the threads run."""

    def __init__(self, prefetch: int) -> None:
        self.ready: "queue.Queue[Tuple[int, Any]]" = queue.Queue(maxsize=prefetch)
        self.stop = threading.Event()

    def put(self, item: Tuple[int, Any]) -> bool:
        while not self.stop.is_set():
            try:
                self.ready.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False


def _drive(
    shared: _Shared,
    keys: Iterator[Any],
    fetch: Callable[[Any], Any],
    process: Callable[[Any, Any], Iterable[Any]],
    pool: ThreadPoolExecutor,
    window: _Window,
) -> None:
    pending: Deque[Tuple[Any, "Future[Any]"]] = collections.deque()
    meter = window.meter

    def timed(key: Any) -> Any:
        t = time.perf_counter()
        out = fetch(key)
        meter.fetched(time.perf_counter() - t, 0)
        return out

    try:
        def fill() -> None:
            while len(pending) < window.size and not shared.stop.is_set():
                key = next(keys, _sentinel)
                if key is _sentinel:
                    return
                pending.append((key, pool.submit(timed, key)))

        fill()
        while pending and not shared.stop.is_set():
            key, fut = pending.popleft()
            in_flight = len(pending) + 1
            t0 = time.perf_counter()
            fetched = fut.result()
            t1 = time.perf_counter()
            fill()
            # Processing time excludes waits for room in the ready queue: a slow
            # consumer is not slow decoding.
            busy = 0.0
            t = time.perf_counter()
            for result in process(key, fetched):
                busy += time.perf_counter() - t
                if not shared.put((_OK, result)):
                    return
                t = time.perf_counter()
            busy += time.perf_counter() - t
            window.observe(t1 - t0, busy)
            meter.driver(t1 - t0, busy, in_flight, window.size, window.bound())
            fill()
        shared.put((_END, None))
    except BaseException as exc:  # handed to the consumer, raised there
        shared.put((_ERR, exc))
    finally:
        for _, fut in pending:
            fut.cancel()


_sentinel = object()
_live: "weakref.WeakSet[Pipeline[Any, Any, Any]]" = weakref.WeakSet()


def _shutdown(shared: _Shared, thread: threading.Thread, pool: ThreadPoolExecutor) -> None:
    shared.stop.set()
    # Unblock a driver waiting for room in the queue; what it held is discarded.
    while True:
        try:
            shared.ready.get_nowait()
        except queue.Empty:
            break
    if thread.is_alive() and thread is not threading.current_thread():
        thread.join()
    pool.shutdown(wait=thread is not threading.current_thread(), cancel_futures=True)


def _close_all_at_exit() -> None:
    for p in list(_live):
        p.close()


try:  # runs before the interpreter joins non-daemon threads (what concurrent.futures uses)
    threading._register_atexit(_close_all_at_exit)  # type: ignore[attr-defined]
    _DAEMON = False
except (AttributeError, RuntimeError):  # pragma: no cover - other interpreters
    _DAEMON = True


class Pipeline(Generic[K, F, T]):
    """Iterate the results of ``process(k, fetch(k))`` over ``keys`` in order, computed ahead in threads.

    ``depth`` fetches run ahead of processing (default ``prefetch + 1``), on
    ``io_threads`` threads; ``prefetch`` processed items wait in a bounded queue.
    ``io_threads=None``: the fetches in flight size themselves (see the module), at
    most ``max_in_flight`` of them. ``meter`` collects the counters (see
    :class:`Meter`); the pipeline makes its own when none is given.

    Example:
        >>> with Pipeline([1, 2], fetch=str, process=lambda k, s: [s * k]) as p:
        ...     next(p)
        '1'
    """

    def __init__(
        self,
        keys: Iterable[K],
        fetch: Callable[[K], F],
        process: Callable[[K, F], Iterable[T]],
        *,
        prefetch: int = 2,
        io_threads: Optional[int] = 1,
        depth: Optional[int] = None,
        name: str = "lancefeed",
        meter: Optional[Meter] = None,
        max_in_flight: Optional[int] = None,
        max_in_flight_bytes: Optional[int] = None,
    ) -> None:
        # Read at call time, so the module's bounds can be changed for a process.
        max_in_flight = MAX_IN_FLIGHT if max_in_flight is None else max_in_flight
        max_in_flight_bytes = MAX_IN_FLIGHT_BYTES if max_in_flight_bytes is None else max_in_flight_bytes
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        if io_threads is not None and io_threads < 1:
            raise ValueError(f"io_threads must be at least 1 (or None: self-sized), got {io_threads}")
        if depth is not None and depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        n = next(_counter)
        self.meter = meter if meter is not None else Meter()
        window = _Window(prefetch, io_threads, depth, self.meter, max_in_flight, max_in_flight_bytes)
        self._window = window
        self._shared = _Shared(prefetch)
        # Self-sized: every fetch in the window runs at once (threads start on demand).
        workers = window.cap if io_threads is None else io_threads
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{name}-io-{n}")
        self._thread = threading.Thread(
            target=_drive,
            args=(self._shared, iter(keys), fetch, process, self._pool, window),
            name=f"{name}-driver-{n}",
            daemon=_DAEMON,
        )
        self._done = False
        self._finalizer = weakref.finalize(self, _shutdown, self._shared, self._thread, self._pool)
        _live.add(self)
        self._thread.start()

    def __iter__(self) -> "Pipeline[K, F, T]":
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        depth = self._shared.ready.qsize()
        t = time.perf_counter()
        while True:
            try:
                kind, value = self._shared.ready.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._shared.ready.empty():
                    self.close()
                    raise RuntimeError("the loader's pipeline thread stopped without a result") from None
        if kind == _OK:
            self.meter.consumed(time.perf_counter() - t, depth)
            return value
        self.close()
        if kind == _END:
            raise StopIteration
        if isinstance(value, StopIteration):  # would end the caller's loop silently
            raise RuntimeError("a loader stage raised StopIteration") from value
        raise value

    def close(self) -> None:
        """Stop the threads and wait for them; idempotent."""
        self._done = True
        self._finalizer()

    def __enter__(self) -> "Pipeline[K, F, T]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
