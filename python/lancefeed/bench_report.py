"""The benchmark's outputs: a text table, JSON, CSV and a bar chart PNG.

Example:
    >>> from lancefeed.bench import BenchReport, LoaderResult
    >>> r = BenchReport([LoaderResult("d", "lancefeed", "ours", "ok", 100, 1.0, 100.0, 1.5, 300.0, 1.0)])
    >>> print(format_table(r).splitlines()[0].split())
    ['dataset', 'loader', 'images/s', 'vs', 'lancefeed', 'CPU', 's', 'peak', 'MiB', 'start-up', 's', 'status']
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lancefeed.bench import BenchReport, LoaderResult

# "start-up s": the loader process's imports and building the loader, outside the timed pass.
_HEADER = ("dataset", "loader", "images/s", "vs lancefeed", "CPU s", "peak MiB", "start-up s", "status")


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _row(r: LoaderResult, status_width: int | None = 70) -> tuple[str, ...]:
    status = r.status if not r.message else f"{r.status}: {r.message}"
    if status_width is not None and len(status) > status_width:
        status = status[: status_width - 3] + "..."
    return (
        r.dataset,
        r.loader,
        _num(r.images_per_s, ",.0f"),
        "-" if r.ratio is None else f"{r.ratio:.2f}x",
        _num(r.cpu_s, ".1f"),
        _num(r.peak_mib, ",.0f"),
        _num(r.startup_s, ".1f"),
        status,
    )


def format_table(report: BenchReport) -> str:
    """A fixed-width table, one line per (dataset, loader)."""
    rows = [_HEADER] + [_row(r) for r in report.results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    right = {2, 3, 4, 5, 6}

    def line(row: tuple[str, ...]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    out = [line(rows[0]), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in rows[1:]]
    return "\n".join(out)


def format_markdown(report: BenchReport) -> str:
    """The table as Markdown (for a README), with each loader's description."""
    head = "| dataset | loader | images/s | vs lancefeed | CPU s | peak MiB | start-up s | status |"
    lines = [head, "|" + "---|" * 8]
    for r in report.results:
        cells = list(_row(r, status_width=None))
        cells[1] = f"`{r.loader}`: {r.description}"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(report: BenchReport, path: Path) -> None:
    """Bar chart of images/s, one panel per dataset (their scales differ tenfold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r.dataset for r in report.results))
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(6.0 * len(datasets), 0.55 * _max_loaders(report) + 1.8), squeeze=False
    )
    for ax, dataset in zip(axes[0], datasets):
        rows = [r for r in report.results if r.dataset == dataset]
        labels = [r.loader for r in rows]
        values = [r.images_per_s or 0.0 for r in rows]
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
            text = f"{v:,.0f}" if r.status == "ok" else r.status
            if r.status != "ok" and r.images:
                text += f" after {r.images:,} images"
            if r.status == "ok" and r.ratio is not None and r.loader != "lancefeed":
                text += f" ({r.ratio:.2f}x)"
            ax.text(v + top * 0.02, y, text, va="center", fontsize=9)
        ax.set_title(f"{dataset}: {report.settings.get('plans', {}).get(dataset, '')}", fontsize=10)
        ax.set_xlabel("images/s (higher is better)")
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
    from lancefeed.bench import LoaderResult

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
            writer.writerow([row[n] for n in names])
    plot(report, paths["chart"])
    return paths
