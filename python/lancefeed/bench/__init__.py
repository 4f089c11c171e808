"""``lancefeed bench``: lancefeed against the loaders people use today, in one run.

The layers, lowest first (each imports only those above it in this list):

* :mod:`~lancefeed.bench.results`: what was measured (:class:`LoaderResult`,
  :class:`BenchReport`) and its text table;
* :mod:`~lancefeed.bench.transforms` and :mod:`~lancefeed.bench.data`: the
  transform plans and the generated default datasets;
* :mod:`~lancefeed.bench.report`: JSON, CSV, Markdown and the chart;
* :mod:`~lancefeed.bench.peers`: one module per loader (``available``, ``convert``,
  ``make_loader``);
* :mod:`~lancefeed.bench.worker`: the process that runs one loader;
* :mod:`~lancefeed.bench.harness`: launches and watches that process;
* :mod:`~lancefeed.bench.run`: a whole run (:func:`run_bench`).

Example:
    >>> from lancefeed.bench import run_bench
    >>> report = run_bench(tiny=True, out="bench-out")  # doctest: +SKIP
    >>> print(report.table())  # doctest: +SKIP
"""

from __future__ import annotations

from lancefeed.bench.harness import run_convert, run_loader
from lancefeed.bench.results import BenchReport, LoaderResult
from lancefeed.bench.run import DEFAULT_LOADERS, PEER_LOADERS, run_bench

__all__ = [
    "BenchReport",
    "DEFAULT_LOADERS",
    "LoaderResult",
    "PEER_LOADERS",
    "run_bench",
    "run_convert",
    "run_loader",
]
