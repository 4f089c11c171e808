"""Does a decode's speed depend on the process it runs in? CIFAR-10 decodes timed in N
fresh processes, each beside simplejpeg's one-thread loop on the same images.

libjpeg-turbo has been seen to run small-image decodes at one of two speeds, fixed
for a process and decided by where its buffers land (see the README, "Decoding"). This
starts ``--processes`` fresh Python processes one after the other, half with their
standard output to a pipe and half to a file (which changes the heap's early layout),
and in each times, best of ``--repeat`` rounds:

- ``lf 1t size``: ``decode_batch(size=(32, 32), num_threads=1)``
- ``lf 2t size``: the same on two threads
- ``lf 1t rrc``: ``RandomResizedCrop(32)`` + flip on one thread
- ``lf 2t rrc``: the same on two threads
- ``simplejpeg``: simplejpeg's one-thread decode loop (the baseline: the machine's own
  speed moves between processes and hours too)

It reports each column's range over the processes and its spread (max / min - 1), and
the spread of lancefeed's rate over simplejpeg's measured in the same process. Target
(issue 16): every lancefeed column within 15% across 10 fresh processes.

Usage (from the repository root):
    python benches/bench_fresh.py                    # 10 processes, 5,120 images
    python benches/bench_fresh.py --processes 4 --images 1024 --json out.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

HERE = Path(__file__).resolve().parent
TARGET_SPREAD = 0.15
COLUMNS = ["lf 1t size", "lf 2t size", "lf 1t rrc", "lf 2t rrc", "simplejpeg"]


def child(images: int, repeat: int) -> Dict[str, float]:
    """One process's rates, images/s, best of ``repeat`` rounds (bench_decode's ``rates``:
    each round runs every candidate once, in turn), after one warm-up round (the first
    calls build the thread pools and tables)."""
    import pyarrow as pa

    sys.path.insert(0, str(HERE))
    import data
    from bench_decode import lancefeed_run, rates

    import lancefeed

    blobs = [b for _, b in data.cifar("train", limit=images)]
    arr = pa.array(blobs, pa.binary())
    rrc = lancefeed.Compose([lancefeed.RandomResizedCrop(32), lancefeed.RandomHorizontalFlip()])
    candidates: List[Tuple[str, Callable[[], None]]] = [
        ("lf 1t size", lancefeed_run(arr, size=(32, 32), num_threads=1)),
        ("lf 2t size", lancefeed_run(arr, size=(32, 32), num_threads=2)),
        ("lf 1t rrc", lancefeed_run(arr, transform=rrc, num_threads=1)),
        ("lf 2t rrc", lancefeed_run(arr, transform=rrc, num_threads=2)),
    ]
    import simplejpeg  # bench_decode needs it too

    def sj() -> None:
        for b in blobs:
            simplejpeg.decode_jpeg(b)

    candidates.append(("simplejpeg", sj))
    rates(candidates, len(blobs), 1)  # warm-up
    return dict(rates(candidates, len(blobs), repeat))


def spread(values: List[float]) -> float:
    return max(values) / min(values) - 1 if values and min(values) > 0 else float("nan")


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=10)
    p.add_argument("--images", type=int, default=5120, help="CIFAR-10 train images each process decodes")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", type=Path)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.images, args.repeat)), flush=True)
        return 0

    from tqdm import tqdm

    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--images", str(args.images), "--repeat", str(args.repeat)]
    runs: List[Dict[str, Any]] = []
    for i in tqdm(range(args.processes), desc="fresh processes", unit="process"):
        to_file = i % 2 == 1
        if to_file:
            with tempfile.TemporaryFile("w+") as out:
                subprocess.run(cmd, stdout=out, check=True)
                out.seek(0)
                line = out.read().strip().splitlines()[-1]
        else:
            line = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout.strip().splitlines()[-1]
        runs.append({"stdout": "file" if to_file else "pipe", **json.loads(line)})

    columns = [c for c in COLUMNS if all(c in r for r in runs)]
    print(f"{'process':>7}  {'stdout':<6}" + "".join(f"{c:>13}" for c in columns))
    for i, r in enumerate(runs):
        print(f"{i:>7}  {r['stdout']:<6}" + "".join(f"{r[c]:>13,.0f}" for c in columns))
    summary: Dict[str, Any] = {}
    print()
    for c in columns:
        values = [r[c] for r in runs]
        line = f"{c:<11} {min(values):>9,.0f}-{max(values):<9,.0f} spread {spread(values):6.1%}"
        summary[c] = {"min": min(values), "max": max(values), "spread": spread(values)}
        if c != "simplejpeg" and "simplejpeg" in columns:
            rel = [r[c] / r["simplejpeg"] for r in runs]
            summary[c]["over_simplejpeg_spread"] = spread(rel)
            line += f"   x simplejpeg {min(rel):.2f}-{max(rel):.2f} (spread {spread(rel):.1%})"
        if c != "simplejpeg":
            line += "   within 15%" if spread(values) <= TARGET_SPREAD else "   NOT within 15%"
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary, "images": args.images, "repeat": args.repeat}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
