"""A 50/50 mix of the ImageNet sample and CIFAR-10 through lancefeed.DataLoader, beside its parts alone.

``lancefeed.mix`` reads each source with its own reader and decodes a batch's rows of
both in one call. What it may cost is the joining of the sources' rows and the loss of
what one dataset alone gets (several CIFAR batches decoded by one call, CIFAR's pixel
cache); what it should run at is the harmonic combination of its parts' rates: half the
samples at the ImageNet rate ``r1``, half at the CIFAR rate ``r2``, so ``1 / (0.5 / r1
+ 0.5 / r2)`` (the goal: at least 0.9 of it).

In one process, with ``RandomResizedCrop(64)`` + flip (which gives both one size),
batch 256, shuffled:

- ``imagenet``: ``DataLoader`` over the ImageNet sample (1,000 JPEGs, ~500x375);
- ``cifar10``: ``DataLoader`` over CIFAR-10 train (50,000 32x32 JPEGs), its defaults
  (the pixel cache on from epoch 1);
- ``mix``: ``DataLoader(lancefeed.mix([imagenet, cifar10], weights=[0.5, 0.5],
  epoch_size=4000))``: the ImageNet sample twice over, 2,000 CIFAR images.

Each loader first runs its warm-up epochs untimed (what fills its caches: two for
CIFAR-10, one for the others), then the three take turns epoch by epoch for
``--rounds`` rounds, so that the machine's load falls on all of them alike; each round
gives a ratio of the mix to the harmonic combination of that round's parts (and of the
parts' mean CPU time per image to the mix's, which other processes move less). The first
epochs of fresh loaders (construction and the caches' filling included: the mix reads
all of CIFAR-10 into its cache for 2,000 samples) are printed too, two of each, timed
after the rounds (a process's first loader is its slowest).

Usage (from the repository root):
    python benches/bench_mix.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import lancefeed

sys.path.insert(0, str(Path(__file__).parent))
import data  # noqa: E402  (benches/data.py: the reference archives)

REPO = Path(__file__).resolve().parents[1]


def timed_epoch(loader: lancefeed.DataLoader, cpu: Optional[List[float]] = None) -> float:
    """Images/s of one pass; its process CPU time per image (us) appended to ``cpu``."""
    t0, c0 = time.perf_counter(), time.process_time()
    n = sum(int(images.shape[0]) for images, _ in loader)
    if cpu is not None:
        cpu.append((time.process_time() - c0) / n * 1e6)
    return n / (time.perf_counter() - t0)


def harmonic(rates: List[float], weights: List[float]) -> float:
    """The rate of a stream that spends each share of its samples at that part's rate."""
    return 1.0 / sum(w / r for w, r in zip(weights, rates))


def fresh_epoch(make: Callable[[], lancefeed.DataLoader]) -> float:
    """Images/s of a new loader's first epoch, its construction included."""
    t0 = time.perf_counter()
    loader = make()
    n = sum(int(images.shape[0]) for images, _ in loader)
    return n / (time.perf_counter() - t0)


def spread(values: List[float], digits: int = 0) -> str:
    fmt = f"{{:,.{digits}f}}"
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


def run(args: argparse.Namespace) -> Dict[str, Any]:
    imagenet = str(data.lance_dataset("imagenet-sample", args.cache, args.data))
    cifar = str(data.lance_dataset("cifar10-train", args.cache, args.data))
    transform = lancefeed.Compose([lancefeed.RandomResizedCrop(args.size), lancefeed.RandomHorizontalFlip()])
    kw: Dict[str, Any] = {"shuffle": True, "seed": 0, "transform": transform, "num_threads": args.num_threads}
    makers: Dict[str, Callable[[], lancefeed.DataLoader]] = {
        "imagenet": lambda: lancefeed.DataLoader(imagenet, args.batch_size, **kw),
        "cifar10": lambda: lancefeed.DataLoader(cifar, args.batch_size, **kw),
        "mix": lambda: lancefeed.DataLoader(
            lancefeed.mix([imagenet, cifar], weights=[0.5, 0.5], epoch_size=args.epoch_size, seed=0), args.batch_size, **kw),
    }
    loaders = {name: make() for name, make in makers.items()}
    for name, loader in loaders.items():
        for _ in range(2 if name == "cifar10" else 1):
            timed_epoch(loader)
    rates: Dict[str, List[float]] = {name: [] for name in loaders}
    cpu: Dict[str, List[float]] = {name: [] for name in loaders}
    for r in range(args.rounds):
        names = list(loaders)
        for name in names[r % len(names):] + names[: r % len(names)]:
            rates[name].append(timed_epoch(loaders[name], cpu[name]))
    # A process's first loader is its slowest (lazy set-up): fresh loaders are timed
    # once the process is warm, in turns.
    fresh: Dict[str, List[float]] = {name: [] for name in makers}
    for r in range(2):
        names = list(makers) if r % 2 == 0 else list(makers)[::-1]
        for name in names:
            fresh[name].append(fresh_epoch(makers[name]))
    expected = [harmonic([a, b], [0.5, 0.5]) for a, b in zip(rates["imagenet"], rates["cifar10"])]
    fresh_expected = [harmonic([a, b], [0.5, 0.5]) for a, b in zip(fresh["imagenet"], fresh["cifar10"])]
    ratios = [m / e for m, e in zip(rates["mix"], expected)]
    stats = loaders["mix"].stats()
    return {
        "rounds": args.rounds, "epoch_size": args.epoch_size, "size": args.size, "batch_size": args.batch_size,
        "rates": rates, "expected_mix": expected, "ratios": ratios, "fresh": fresh, "cpu_us_per_image": cpu,
        "cpu_ratios": [(0.5 * a + 0.5 * b) / m for a, b, m in zip(cpu["imagenet"], cpu["cifar10"], cpu["mix"])],
        "fresh_expected_mix": fresh_expected,
        "fresh_ratios": [m / e for m, e in zip(fresh["mix"], fresh_expected)],
        "mix_read_path": stats["read_path"], "load_average": os.getloadavg()[0],
    }


def report(r: Dict[str, Any]) -> str:
    rates = r["rates"]
    lines = [
        f"RandomResizedCrop({r['size']}) + flip, batch {r['batch_size']}, mix epoch {r['epoch_size']:,} samples, "
        f"{r['rounds']} rounds (images/s, min-max over rounds)",
        "",
        "| loader | later epochs | first epoch of a fresh loader |",
        "| --- | --- | --- |",
        f"| imagenet alone | {spread(rates['imagenet'])} | {spread(r['fresh']['imagenet'])} |",
        f"| cifar10 alone | {spread(rates['cifar10'])} | {spread(r['fresh']['cifar10'])} |",
        f"| expected mix, 1/(0.5/r1 + 0.5/r2) | {spread(r['expected_mix'])} | {spread(r['fresh_expected_mix'])} |",
        f"| mix 50/50 | {spread(rates['mix'])} | {spread(r['fresh']['mix'])} |",
        f"| mix / expected | {spread(r['ratios'], 2)} (median {statistics.median(r['ratios']):.2f}; goal 0.9) "
        f"| {spread(r['fresh_ratios'], 2)} |",
        "",
        f"CPU time of the process per image (us, later epochs): imagenet {spread(r['cpu_us_per_image']['imagenet'])}, "
        f"cifar10 {spread(r['cpu_us_per_image']['cifar10'], 1)}, mix {spread(r['cpu_us_per_image']['mix'])}; "
        f"expected (their mean) / mix: {spread(r['cpu_ratios'], 2)} (median {statistics.median(r['cpu_ratios']):.2f}), "
        "which the other processes on the machine move less than the rates",
        f"mix read path: {r['mix_read_path']}; load average at the end: {os.getloadavg()[0]:.2f}",
    ]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=data.DATA, help="folder with the reference tarballs")
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("LANCEFEED_BENCH_CACHE", REPO / "target" / "bench-cache")))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--epoch-size", type=int, default=4000, help="samples of a mix epoch (half of each source)")
    p.add_argument("--size", type=int, default=64, help="RandomResizedCrop's output size")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    result = run(args)
    print(report(result), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
