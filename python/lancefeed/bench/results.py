"""What a benchmark run measured: one :class:`LoaderResult` per (dataset, loader),
gathered in a :class:`BenchReport`, and its text table.

This is the bottom layer of :mod:`lancefeed.bench`: the harness fills these in,
:mod:`lancefeed.bench.report` writes them out, and neither is imported from here.

Example:
    >>> r = BenchReport([LoaderResult("d", "lancefeed", "ours", "ok", 100, 1.0, 100.0, 1.5, 300.0, 1.0)])
    >>> print(r.table().splitlines()[0].split()[:4])
    ['dataset', 'loader', 'images/s', 'vs']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

__all__ = ["BenchReport", "LoaderResult", "format_table", "layout", "stats_line"]


@dataclass
class LoaderResult:
    """One loader on one dataset.

    ``status`` is ``"ok"``, ``"timeout"``, ``"failed"`` or ``"missing"`` (a peer
    that is not installed or cannot run here; ``message`` says what to install);
    when not ok, the images/s are those of the batches that did arrive (``None`` if
    none did). ``ratio`` is images/s divided by lancefeed's on the same dataset,
    for finished runs. With repeats, the run with the median images/s is kept;
    ``runs`` lists every run's. ``startup_s`` is the time from launching the
    loader's process until it had imported what it needs and built its loader
    (not part of ``seconds``; ``None`` when it did not get that far).

    The fields after ``startup_s``: ``first_batch_s``, the first batch's latency
    from the built loader; ``steady_images_per_s``, the rate after the first
    batch; ``epoch_images_per_s``, images over start-up plus the whole pass (what
    one epoch from a cold start gets); ``cpu_s_per_1k``, CPU seconds per 1,000
    images; ``convert_s`` and ``disk_mib``, the one-time conversion into the
    loader's format and the size of what it reads (``None`` when it reads the
    dataset as it is, or the source files). ``loader_stats`` is the loader's own
    ``stats()`` after its timed pass (lancefeed's: takes, bytes read, time waiting
    on reads and decoding, the loop's wait p50/p95, whether it was I/O-bound;
    ``None`` for loaders without one), summed up by :func:`stats_line`.
    ``later_images_per_s``: with several epochs per run, the median images/s of the
    passes after the first, the same loader's (training's steady state: caches
    filled, pipelines compiled); ``None`` with one. ``torch_import_s``: the
    process's ``import torch``, part of ``startup_s``, timed first and on its own
    (every loader here needs it, and a training script has paid it before building
    any loader); ``own_startup_s``: the rest of the start-up from then (the
    loader's own imports, compiling, opening the data); ``own_epoch_images_per_s``:
    images over ``own_startup_s`` plus the whole pass, what one epoch costs with
    the loader chosen after torch is loaded.

    Example:
        >>> LoaderResult("cifar", "webdataset", "tar shards", "missing",
        ...              message="not installed: pip install webdataset").status
        'missing'
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
    first_batch_s: float | None = None
    steady_images_per_s: float | None = None
    epoch_images_per_s: float | None = None
    cpu_s_per_1k: float | None = None
    convert_s: float | None = None
    disk_mib: float | None = None
    loader_stats: dict[str, Any] | None = None
    later_images_per_s: float | None = None
    torch_import_s: float | None = None
    own_startup_s: float | None = None
    own_epoch_images_per_s: float | None = None


@dataclass
class BenchReport:
    """All results of a run, with the settings that produced them.

    Example:
        >>> BenchReport([], {"transform": "train"}).to_json()
        {'settings': {'transform': 'train'}, 'results': []}
    """

    results: list[LoaderResult]
    settings: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """The results as a fixed-width text table (see :func:`format_table`)."""
        return format_table(self)

    def to_json(self) -> dict[str, Any]:
        """Settings and results as plain JSON-able data."""
        return {"settings": self.settings, "results": [asdict(r) for r in self.results]}


# "start-up s": the loader process's imports and building the loader, outside the timed
# pass; "own start s": the part of it after ``import torch`` (see LoaderResult).
HEADER = ("dataset", "loader", "images/s", "vs lancefeed", "CPU s", "peak MiB", "start-up s", "own start s", "status")
# The peer comparison's columns (``lancefeed bench --peers``): every metric the
# issue asks for, so the table stays readable without the JSON.
PEER_HEADER = (
    "dataset",
    "loader",
    "steady img/s",
    "epoch img/s",
    "own-start epoch img/s",
    "1st batch s",
    "CPU s/1k img",
    "peak MiB",
    "convert s",
    "disk MiB",
    "status",
)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def status_text(r: LoaderResult, width: int | None = 70) -> str:
    """``status`` with its message, cut to ``width`` characters."""
    status = r.status if not r.message else f"{r.status}: {r.message}"
    if width is not None and len(status) > width:
        status = status[: width - 3] + "..."
    return status


def row(r: LoaderResult, status_width: int | None = 70) -> tuple[str, ...]:
    """The cells of ``r`` under :data:`HEADER`."""
    return (
        r.dataset,
        r.loader,
        _num(r.images_per_s, ",.0f"),
        "-" if r.ratio is None else f"{r.ratio:.2f}x",
        _num(r.cpu_s, ".1f"),
        _num(r.peak_mib, ",.0f"),
        _num(r.startup_s, ".1f"),
        _num(r.own_startup_s, ".2f"),
        status_text(r, status_width),
    )


def peer_row(r: LoaderResult, status_width: int | None = 70) -> tuple[str, ...]:
    """The cells of ``r`` under :data:`PEER_HEADER`."""
    return (
        r.dataset,
        r.loader,
        _num(r.steady_images_per_s, ",.0f"),
        _num(r.epoch_images_per_s, ",.0f"),
        _num(r.own_epoch_images_per_s, ",.0f"),
        _num(r.first_batch_s, ".2f"),
        _num(r.cpu_s_per_1k, ".2f"),
        _num(r.peak_mib, ",.0f"),
        _num(r.convert_s, ".1f"),
        _num(r.disk_mib, ",.1f"),
        status_text(r, status_width),
    )


def layout(report: BenchReport) -> tuple[tuple[str, ...], Callable[..., tuple[str, ...]]]:
    """The table's header and the function giving a result's cells: the peer columns
    when the run compared peers (``settings["peers"]``), and after the first pass's
    rate a ``later img/s`` column when runs had several epochs.

    Example:
        >>> r = LoaderResult("d", "x", "", "ok", later_images_per_s=2000.0)
        >>> header, cells = layout(BenchReport([r]))
        >>> header[3], cells(r)[3]
        ('later img/s', '2,000')
    """
    peers = bool(report.settings.get("peers"))
    header, cells = (PEER_HEADER, peer_row) if peers else (HEADER, row)
    if not any(r.later_images_per_s is not None for r in report.results):
        return header, cells

    def with_later(r: LoaderResult, status_width: int | None = 70) -> tuple[str, ...]:
        c = cells(r, status_width)
        return c[:3] + (_num(r.later_images_per_s, ",.0f"),) + c[3:]

    return header[:3] + ("later img/s",) + header[3:], with_later


def format_table(report: BenchReport) -> str:
    """A fixed-width table, one line per (dataset, loader); the peer columns when
    the run compared peers (``settings["peers"]``).

    Example:
        >>> r = BenchReport([LoaderResult("d", "x", "", "missing", message="not installed: pip install x")])
        >>> format_table(r).splitlines()[-1].endswith("missing: not installed: pip install x")
        True
    """
    header, cells = layout(report)
    rows = [header] + [cells(r) for r in report.results]
    widths = [max(len(x[i]) for x in rows) for i in range(len(header))]
    right = set(range(2, len(header) - 1))

    def line(cols: tuple[str, ...]) -> str:
        out = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cols, widths))]
        return "  ".join(out).rstrip()

    out = [line(rows[0]), "  ".join("-" * w for w in widths)]
    out += [line(x) for x in rows[1:]]
    return "\n".join(out)


def _ms(seconds: Any) -> str:
    return "-" if seconds is None else f"{float(seconds) * 1e3:,.1f} ms"


def _s(seconds: Any) -> str:
    return "-" if seconds is None else f"{float(seconds):,.1f} s"


def stats_line(stats: dict[str, Any] | None) -> str:
    """One line of a loader's ``stats()`` (:attr:`LoaderResult.loader_stats`): where
    its pass spent its time. "" without stats.

    Example:
        >>> stats_line({"io_bound": False, "wait_p50_s": 0.0001, "wait_p95_s": 0.0032,
        ...             "decode_s": 1.2, "io_wait_s": 0.1, "takes": 16, "bytes_read": 120e6})
        'I/O-bound: no; loop waited p50 0.1 ms p95 3.2 ms; decode 1.2 s, waiting on reads 0.1 s; 16 takes, 120.0 MB'
    """
    if not stats:
        return ""
    bound = stats.get("io_bound")
    takes = stats.get("takes")
    read = stats.get("bytes_read")
    return (
        f"I/O-bound: {'-' if bound is None else 'yes' if bound else 'no'}; "
        f"loop waited p50 {_ms(stats.get('wait_p50_s'))} p95 {_ms(stats.get('wait_p95_s'))}; "
        f"decode {_s(stats.get('decode_s'))}, waiting on reads {_s(stats.get('io_wait_s'))}; "
        f"{'-' if takes is None else f'{int(takes):,}'} takes, "
        f"{'-' if read is None else f'{float(read) / 1e6:,.1f}'} MB"
    )
