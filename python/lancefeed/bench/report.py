"""The benchmark's outputs: a text table, JSON, CSV and a bar chart PNG.

It sits above :mod:`lancefeed.bench.results` (which it formats) and below the
harness (which calls :func:`write_outputs`); it imports nothing else of the harness.

Example:
    >>> from lancefeed.bench.results import BenchReport, LoaderResult
    >>> r = BenchReport([LoaderResult("d", "lancefeed", "ours", "ok", 100, 1.0, 100.0, 1.5, 300.0, 1.0)])
    >>> print(format_table(r).splitlines()[0].split())
    ['dataset', 'loader', 'images/s', 'vs', 'lancefeed', 'CPU', 's', 'peak', 'MiB', 'start-up', 's', 'status']
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, fields
from pathlib import Path

from lancefeed.bench.results import BenchReport, LoaderResult, format_table, layout

__all__ = ["format_markdown", "format_table", "plot", "write_outputs"]


def format_markdown(report: BenchReport) -> str:
    """The table as Markdown (for a README), with each loader's description."""
    header, cells_of = layout(report)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in report.results:
        cells = list(cells_of(r, status_width=None))
        cells[1] = f"`{r.loader}`: {r.description}"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rate(report: BenchReport, r: LoaderResult) -> float:
    # A peer comparison charts the steady rate: start-up is a column of its own there.
    if report.settings.get("peers") and r.steady_images_per_s is not None:
        return r.steady_images_per_s
    return r.images_per_s or 0.0


def _status_label(r: LoaderResult) -> str:
    if r.status == "missing":
        return "not installed" if r.message.startswith("not installed") else "not available here"
    return r.status


def plot(report: BenchReport, path: Path) -> None:
    """Bar chart of images/s (steady-state with ``--peers``), one panel per dataset
    (their scales differ tenfold); loaders that did not finish are grey, with their status."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    datasets = list(dict.fromkeys(r.dataset for r in report.results))
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(6.0 * len(datasets), 0.55 * _max_loaders(report) + 1.8), squeeze=False
    )
    for ax, dataset in zip(axes[0], datasets):
        rows = [r for r in report.results if r.dataset == dataset]
        labels = [r.loader for r in rows]
        values = [_rate(report, r) for r in rows]
        colors = [
            "#1f77b4" if r.loader == "lancefeed" else ("#bbbbbb" if r.status != "ok" else "#ff7f0e")
            for r in rows
        ]
        pos = list(range(len(rows)))[::-1]
        ax.barh(pos, values, color=colors)
        ax.set_yticks(pos)
        ax.set_yticklabels(labels)
        top = max(values) if any(values) else 1.0
        ax.set_xlim(0, top * 1.35)
        for y, r, v in zip(pos, rows, values):
            text = f"{v:,.0f}" if r.status == "ok" else _status_label(r)
            if r.status != "ok" and r.images:
                text += f" after {r.images:,} images"
            base = next((_rate(report, b) for b in rows if b.loader == "lancefeed" and b.status == "ok"), None)
            if r.status == "ok" and base and r.loader != "lancefeed":
                text += f" ({v / base:.2f}x)"  # the ratio of the charted rates
            ax.text(v + top * 0.02, y, text, va="center", fontsize=9)
        ax.set_title(f"{dataset}: {report.settings.get('plans', {}).get(dataset, '')}", fontsize=10)
        steady = "steady-state " if report.settings.get("peers") else ""
        ax.set_xlabel(f"{steady}images/s (higher is better)")
        # Six-digit rates as plain ticks ran into each other: thousands as "k", fewer ticks.
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
        ax.xaxis.set_major_formatter(
            matplotlib.ticker.FuncFormatter(lambda v, _, top=top: f"{v / 1000:,.0f}k" if top >= 10_000 else f"{v:,.0f}")
        )
    fig.suptitle(
        f"lancefeed bench, {report.settings.get('cores', '?')} cores, "
        f"transform={report.settings.get('transform', '?')}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _max_loaders(report: BenchReport) -> int:
    counts: dict[str, int] = {}
    for r in report.results:
        counts[r.dataset] = counts.get(r.dataset, 0) + 1
    return max(counts.values(), default=1)


def write_outputs(report: BenchReport, out_dir: Path) -> dict[str, Path]:
    """Write table.txt, results.md, results.json, results.csv and bench.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "table": out_dir / "table.txt",
        "markdown": out_dir / "results.md",
        "json": out_dir / "results.json",
        "csv": out_dir / "results.csv",
        "chart": out_dir / "bench.png",
    }
    paths["table"].write_text(format_table(report) + "\n")
    paths["markdown"].write_text(format_markdown(report) + "\n")
    paths["json"].write_text(json.dumps(report.to_json(), indent=2) + "\n")
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        names = [fl.name for fl in fields(LoaderResult)]
        writer.writerow(names)
        for r in report.results:
            row = asdict(r)
            row["runs"] = ";".join("" if v is None else f"{v:.1f}" for v in r.runs)
            row["loader_stats"] = "" if r.loader_stats is None else json.dumps(r.loader_stats, sort_keys=True)
            writer.writerow([row[n] for n in names])
    plot(report, paths["chart"])
    return paths
