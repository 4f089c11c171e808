"""A two-stage pipeline in threads of this process: reads ahead, processes, hands over in order.

Stage one (``fetch``, the Lance takes) runs on ``io_threads`` threads, up to ``depth``
keys ahead of stage two. Stage two (``process``, the decode and collation) runs on one
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
import queue
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Deque, Generic, Iterable, Iterator, Optional, Tuple, TypeVar

K = TypeVar("K")
F = TypeVar("F")
T = TypeVar("T")

_POLL_S = 0.05
_OK, _END, _ERR = 0, 1, 2
_counter = itertools.count()


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
    depth: int,
) -> None:
    pending: Deque[Tuple[Any, "Future[Any]"]] = collections.deque()
    try:
        def fill() -> None:
            while len(pending) < depth and not shared.stop.is_set():
                key = next(keys, _sentinel)
                if key is _sentinel:
                    return
                pending.append((key, pool.submit(fetch, key)))

        fill()
        while pending and not shared.stop.is_set():
            key, fut = pending.popleft()
            fetched = fut.result()
            fill()
            for result in process(key, fetched):
                if not shared.put((_OK, result)):
                    return
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
        io_threads: int = 1,
        depth: Optional[int] = None,
        name: str = "lancefeed",
    ) -> None:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        if io_threads < 1:
            raise ValueError(f"io_threads must be at least 1, got {io_threads}")
        depth = prefetch + 1 if depth is None else depth
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        n = next(_counter)
        self._shared = _Shared(prefetch)
        self._pool = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix=f"{name}-io-{n}")
        self._thread = threading.Thread(
            target=_drive,
            args=(self._shared, iter(keys), fetch, process, self._pool, depth),
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
        while True:
            try:
                kind, value = self._shared.ready.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._shared.ready.empty():
                    self.close()
                    raise RuntimeError("the loader's pipeline thread stopped without a result") from None
        if kind == _OK:
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
