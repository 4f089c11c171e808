"""One benchmark loader, run in its own process: ``python -m lancefeed.bench.worker SPEC``.

``SPEC`` is a JSON object: ``loader`` (a name from :mod:`lancefeed.bench.peers`),
``uri``, ``plan``, ``batch_size``, ``shuffle``, ``limit``, ``workers``, ``threads``,
and, for peers that read a format of their own, ``converted`` (where that copy is).
With ``"phase": "convert"`` the process only writes that copy (timed, and outside
the loader's run so that the run's memory and CPU are the loader's alone);
otherwise it sets the loader up (imports, building the loader), then times one
pass over at most ``limit`` images, and with ``"epochs": N`` (default 1) N - 1
passes more over the same loader. It reports on stdout with lines that start
with :data:`~lancefeed.bench.protocol.TAG`:

    {"event": "converted", "seconds": 3.1, "bytes": 104857600}   (convert phase)
    {"event": "ready", "torch_import_s": 1.2, "own_startup_s": 0.2}
                                                        start-up done, timing starts
    {"event": "batch", "images": 512, "seconds": 1.9}   after every batch of the first pass
    {"event": "tick"}                                   after every batch of a later pass
    {"event": "done", "images": ..., "seconds": ..., "cpu_s": ..., "first_batch_s": ...,
     "first_batch_images": ..., "loader_stats": {...} or null,
     "later": [[images, seconds], ...], "cpu_images": ...}

``torch_import_s`` is this process's ``import torch``, done first, before the
loader's own imports: every loader here hands out torch tensors and every training
script has paid it before it builds a loader, so ``own_startup_s`` (from then until
the loader is built: the peer's own imports, a JIT's set-up, opening the data) is what
choosing one loader over another costs at start-up.

``images``, ``seconds`` and ``loader_stats`` are the first pass's; ``later`` lists
the later passes; ``cpu_s`` covers every pass, ``cpu_images`` images.

``loader_stats`` is the loader's own ``stats()`` after the pass, for loaders that
have one (:meth:`lancefeed.DataLoader.stats`). Object store options do not go in
``SPEC``: the harness puts them in the environment (:data:`~lancefeed.bench.options.ENV`),
and they become ``spec["storage_options"]`` here and the default of every
``lance.dataset`` this process opens on an object store URI.

Running each loader in a process of its own lets the harness kill one that hangs
(the seeds' Lance Dataset under torch's DataLoader with worker processes deadlocks
after fork) and measure each loader's CPU time and memory on its own.

Example:
    $ python -m lancefeed.bench.worker '{"loader": "lancefeed", "uri": "cifar.lance",
    ...   "plan": [["resize", [32, 32]]], "batch_size": 256, "limit": 1000}'
"""

from __future__ import annotations

import functools
import gc
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from lancefeed.bench.options import from_env
from lancefeed.bench.protocol import TAG, emit as _emit

__all__ = ["TAG", "convert", "main", "run", "with_options"]


def _cpu(kind: int) -> float:
    r = resource.getrusage(kind)
    return r.ru_utime + r.ru_stime


def with_options(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with its peer's fixed options on top (``take-pillow``'s 0 workers...).

    Example:
        >>> with_options({"loader": "take-pillow", "workers": 2})["workers"]
        0
    """
    from lancefeed.bench.peers import PEERS

    return {**spec, **PEERS[spec["loader"]].options} if spec["loader"] in PEERS else spec


def _stop_forkserver() -> None:
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    if server is not None and getattr(server, "_forkserver_pid", None) is not None:
        try:
            server._stop()  # private, but the only way to reap it before exit (3.8+)
        except (AttributeError, OSError):
            pass


def convert(spec: dict[str, Any]) -> dict[str, Any]:
    """Write the peer's copy of the rows to ``spec["converted"]``; returns the
    ``converted`` record (seconds, bytes on disk).

    Example:
        >>> convert({"loader": "webdataset", "uri": "cifar.lance", "limit": 1000,
        ...          "converted": "/tmp/wds", "workers": 2})  # doctest: +SKIP
        {'seconds': 0.4, 'bytes': 1234567}
    """
    from lancefeed.bench.data import disk_bytes
    from lancefeed.bench.peers import load

    module = load(spec["loader"])
    dest = Path(spec["converted"])
    start = time.perf_counter()
    module.convert(spec, dest)
    return {"seconds": time.perf_counter() - start, "bytes": disk_bytes(dest)}


def run(spec: dict[str, Any], torch_import_s: float | None = None, torch_done: float | None = None) -> dict[str, Any]:
    """Time one pass of the loader; returns the ``done`` record. ``torch_import_s``
    and ``torch_done`` (a ``time.perf_counter()`` reading) say how long ``import
    torch`` took and when it finished, for the ``ready`` event.

    Example:
        >>> run({"loader": "_slow_start", "startup_sleep": 0, "batches": 2, "batch_size": 4})["images"]  # doctest: +SKIP
        8
    """
    from lancefeed.bench.peers import load

    limit = spec.get("limit")
    loader = load(spec["loader"]).make_loader(spec)
    built = time.perf_counter()
    _emit("ready", torch_import_s=torch_import_s, own_startup_s=None if torch_done is None else built - torch_done)
    cpu0 = _cpu(resource.RUSAGE_SELF)
    children0 = _cpu(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    images = 0
    first_s: float | None = None
    first_images = 0
    it = iter(loader)
    for batch in it:
        images += int(batch[0].shape[0])
        now = time.perf_counter() - start
        if first_s is None:
            first_s, first_images = now, images
        _emit("batch", images=images, seconds=now)
        if limit is not None and images >= limit:
            break
    seconds = time.perf_counter() - start
    stats = _loader_stats(loader)
    del it
    later = [_pass(loader, limit) for _ in range(int(spec.get("epochs") or 1) - 1)]
    # Join DataLoader worker processes so that their CPU time is counted below.
    del loader
    gc.collect()
    # Workers started by a forkserver (lancedb's loaders) are its children, not ours:
    # stopping it reaps it, and with it the CPU time of the workers it reaped.
    _stop_forkserver()
    cpu = _cpu(resource.RUSAGE_SELF) - cpu0 + _cpu(resource.RUSAGE_CHILDREN) - children0
    return {
        "images": images,
        "seconds": seconds,
        "cpu_s": cpu,
        "first_batch_s": first_s,
        "first_batch_images": first_images,
        "loader_stats": stats,
        "later": later,
        "cpu_images": images + sum(n for n, _ in later),
    }


def _pass(loader: Any, limit: int | None) -> list[float]:
    """One more pass over ``loader``: [images, seconds]."""
    start = time.perf_counter()
    images = 0
    for batch in loader:
        images += int(batch[0].shape[0])
        _emit("tick")
        if limit is not None and images >= limit:
            break
    return [images, time.perf_counter() - start]


def _loader_stats(loader: Any) -> dict[str, Any] | None:
    """The loader's own ``stats()`` (lancefeed's DataLoader has one), as plain JSON
    values; None for loaders without it, or when it fails (stats are extra)."""
    stats = getattr(loader, "stats", None)
    if not callable(stats):
        return None
    try:
        raw = stats()
        raw = raw.as_dict() if hasattr(raw, "as_dict") else dict(raw)
    except Exception:  # noqa: BLE001 - a broken stats() must not fail a finished pass
        return None
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or value is None:
            out[key] = value
        elif isinstance(value, (int, float)) or hasattr(value, "item"):
            out[key] = value.item() if hasattr(value, "item") else value
    return out


def _default_storage_options(options: dict[str, str]) -> None:
    """Make ``options`` the default of ``lance.dataset`` on object store URIs in this
    process: the peers that open the dataset by URI themselves (``take-pillow``,
    ``lance-torch-pillow``, the conversions to files) then read through the store
    the way lancefeed does, without each one knowing about storage options. Forked
    DataLoader workers inherit the patched function."""
    import lance

    opened = lance.dataset

    @functools.wraps(opened)
    def dataset(uri: Any = None, *args: Any, **kwargs: Any) -> Any:
        remote = isinstance(uri, str) and "://" in uri and not uri.startswith("file:")
        # storage_options is lance.dataset's 7th parameter: given positionally, it stays.
        if remote and kwargs.get("storage_options") is None and len(args) < 6:
            kwargs["storage_options"] = options
        return opened(uri, *args, **kwargs)

    lance.dataset = dataset


def _import_torch() -> tuple[float, float]:
    """``import torch``, timed: (seconds it took, ``time.perf_counter()`` when done)."""
    before = time.perf_counter()
    import torch  # noqa: F401

    done = time.perf_counter()
    return done - before, done


def main(argv: list[str] | None = None) -> int:
    """``python -m lancefeed.bench.worker SPEC_JSON``; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m lancefeed.bench.worker SPEC_JSON", file=sys.stderr)
        return 2
    spec = with_options(json.loads(args[0]))
    # Before anything else imports it (lance, the peer): see the module's docstring.
    torch_import_s, torch_done = (None, None) if spec.get("phase") == "convert" else _import_torch()
    options = from_env()
    if options:
        spec["storage_options"] = options
        _default_storage_options(options)
    if spec.get("phase") == "convert":
        _emit("converted", **convert(spec))
    else:
        _emit("done", **run(spec, torch_import_s, torch_done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
