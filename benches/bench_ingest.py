"""Ingest on Ray against the one-machine ingest: rows/s of ``lancefeed ingest folder``
with ``--engine ray`` (a local Ray of ``--cpus`` CPUs, started once, as a cluster is)
and with this machine's threads, on the ImageNet sample and CIFAR-10 (train and test)
from ../shared/data, each with and without ``--restart-index``.

Each round runs both engines in turn, in this one process, into fresh outputs, and
takes their ratio; ``--rounds`` rounds give each ratio's range. On one machine Ray's
work is the same as the threads' plus its own overhead (task scheduling, the listing's
and the shards' round trips, the worker processes beside the driver), so the ratio
says what that overhead costs. Also measured: rows/s of one task on its own time (what
each CPU of a cluster adds), the driver's listing and commit times, and Lance's commit
of many fragments (what the driver's one commit costs for a large dataset), which the
README's scaling argument uses.

Usage (from the repository root):
    python benches/bench_ingest.py                       # both datasets, 3 rounds
    python benches/bench_ingest.py --datasets imagenet --rounds 2 --json out.json
    python benches/bench_ingest.py --datasets imagenet --scale 10  # 10,000 files, hard links
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import data  # noqa: E402

TARGET = 0.8


def scaled(root: Path, scale: int) -> Path:
    """``root`` with every file ``scale`` times (hard links, ``<k>-<name>``): the same
    folders, ``scale`` times the files, no more disk."""
    if scale == 1:
        return root
    out = root.with_name(f"{root.name}-x{scale}")
    if out.exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for p in sorted(root.rglob("*")):
        if p.is_file():
            for k in range(scale):
                target = tmp / p.parent.relative_to(root) / f"{k}-{p.name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(p, target)
    tmp.rename(out)
    return out


def folder(name: str, cache: Path) -> Path:
    """The dataset as an ImageFolder tree in ``cache`` (made once): ImageNet's sample as
    ``<wnid>/<file>.JPEG``, CIFAR-10 as ``<split>/<label>/<file>.jpg``."""
    root = cache / f"{name}-folder"
    if root.exists():
        return root
    tmp = cache / f"{name}-folder.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    archive = data.DATA / ("imagenet-sample-1000.tar" if name == "imagenet" else "cifar10-jpeg.tar.gz")
    with tarfile.open(archive) as tar:
        for member in tar:
            if not member.isfile():
                continue
            if name == "imagenet" and member.name.endswith(".JPEG"):
                file = Path(member.name).name
                rel = Path(file.split("_")[0]) / file
            elif name == "cifar10" and member.name.endswith(".jpg"):
                rel = Path(*Path(member.name).parts[-3:])
            else:
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(tar.extractfile(member).read())
    tmp.rename(root)
    return root


def one(root: Path, out: Path, engine: str, restart: bool) -> Dict[str, Any]:
    import lancefeed

    shutil.rmtree(out, ignore_errors=True)
    began = time.perf_counter()
    s = lancefeed.ingest_folder(root, out, engine=engine, restart_index=restart, progress=False)
    seconds = time.perf_counter() - began
    shutil.rmtree(out, ignore_errors=True)
    return {"rows": s.rows, "seconds": seconds, "rows_per_s": s.rows / seconds, **s.timings}


def commit_cost(work: Path, fragments: int) -> float:
    """Seconds of Lance's one commit of ``fragments`` fragments written beforehand."""
    import lance
    import pyarrow as pa
    from lance.fragment import write_fragments

    uri = str(work / "commit.lance")
    shutil.rmtree(uri, ignore_errors=True)
    schema = pa.schema([("image", pa.binary()), ("label", pa.string())])
    table = pa.table({"image": [b"x" * 64] * 4, "label": ["a"] * 4}, schema=schema)
    frags = [f for _ in range(fragments) for f in write_fragments(table, uri, schema=schema, mode="create")]
    began = time.perf_counter()
    lance.LanceDataset.commit(uri, lance.LanceOperation.Overwrite(schema, frags))
    seconds = time.perf_counter() - began
    shutil.rmtree(uri, ignore_errors=True)
    return seconds


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="imagenet,cifar10")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cpus", type=int, default=2, help="the local Ray's CPUs (2)")
    p.add_argument("--scale", type=int, default=1, help="each file N times (hard links), for jobs long enough that "
                   "Ray's fixed cost per ingest (~0.1-0.3 s) is amortised (1)")
    p.add_argument("--restart", choices=["both", "no", "yes"], default="both", help="with --restart-index or not")
    p.add_argument("--cache", default=os.environ.get("LANCEFEED_BENCH_CACHE",
                                                     str(Path(tempfile.gettempdir()) / "lancefeed-bench")))
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from lancefeed.cluster import local_object_store_bytes

    began = time.perf_counter()
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=local_object_store_bytes())
    start_seconds = time.perf_counter() - began
    roots = {name: scaled(folder(name, cache), args.scale) for name in args.datasets.split(",")}
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=cache))
    one(roots[next(iter(roots))], work / "warm.lance", "ray", False)  # the workers start once, as on a cluster
    results: Dict[str, Any] = {"ray_start_seconds": start_seconds, "cpus": args.cpus, "cases": {}}
    for name, root in roots.items():
        for restart in {"both": (False, True), "no": (False,), "yes": (True,)}[args.restart]:
            case = f"{name}{f' x{args.scale}' if args.scale > 1 else ''}{' restart-index' if restart else ''}"
            runs = []
            for r in range(args.rounds):
                load = os.getloadavg()[0]
                threads = one(root, work / "threads.lance", "threads", restart)
                on_ray = one(root, work / "ray.lance", "ray", restart)
                runs.append({"threads": threads, "ray": on_ray, "ratio": on_ray["rows_per_s"] / threads["rows_per_s"],
                             "load": load})
                print(f"{case} round {r + 1}: threads {threads['rows_per_s']:,.0f} rows/s, ray "
                      f"{on_ray['rows_per_s']:,.0f} rows/s ({runs[-1]['ratio']:.2f}x); ray task "
                      f"{on_ray['task_rows_per_s']:,.0f} rows/s on its own time, {on_ray['tasks']:.0f} tasks, list "
                      f"{on_ray['list']:.2f} s, commit {on_ray['commit']:.3f} s; load {load:.2f}", flush=True)
            results["cases"][case] = runs
    results["commit_seconds"] = {n: commit_cost(work, n) for n in (8, 128, 1024)}
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)
    print("\ncase                        threads rows/s     ray rows/s        ray / threads   (target >= "
          f"{TARGET})")
    for case, runs in results["cases"].items():
        t = [r["threads"]["rows_per_s"] for r in runs]
        y = [r["ray"]["rows_per_s"] for r in runs]
        q = [r["ratio"] for r in runs]
        print(f"{case:<28}{min(t):>8,.0f}-{max(t):<8,.0f}  {min(y):>8,.0f}-{max(y):<8,.0f}  "
              f"{min(q):.2f}-{max(q):.2f}")
    print("Lance's one commit of N fragments: " + ", ".join(f"{n}: {s * 1000:.0f} ms"
                                                           for n, s in results["commit_seconds"].items()))
    print(f"local Ray start: {start_seconds:.1f} s (once per cluster, not counted above)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
