"""Training's steady state: later epochs of lancefeed.DataLoader beside FFCV's, in one process.

`lancefeed bench --peers` times one epoch per loader, each in a process of its own. A
training run reads the same small dataset for many epochs, and there lancefeed keeps
each image's whole decode (the pixel cache) while FFCV decodes its JPEGs every epoch.
This benchmark times epochs after the loaders have warmed up (lancefeed's epochs 0 and
1, which fill its caches; FFCV's first, which compiles its pipeline), the loaders taking
turns epoch by epoch so that the machine's load falls on all of them alike:

- ``lancefeed``: ``DataLoader`` with its defaults (the pixel cache on for small images);
- ``lancefeed-no-pixel-cache``: the same with ``pixel_cache=False`` (JPEGs decoded each
  epoch, from the row cache in memory);
- ``ffcv``: FFCV 1.0.2's ``Loader`` over a ``.beton`` of the same rows (JPEG at quality 90,
  as ``lancefeed bench --peers`` converts them), ``RandomResizedCropRGBImageDecoder`` +
  flip, a thread per core, ``os_cache=True``, missing if FFCV is not installed.

Dataset: CIFAR-10 train (50,000 32x32 JPEGs) from ``../shared/data``, ``RandomResizedCrop(32)``
+ flip, batch 256. Prints each loader's epochs (images/s), the median and the ratios.

Usage (from the repository root):
    python benches/bench_epochs.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List

import lancefeed
from lancefeed.bench.transforms import lancefeed_transform, make_plan

sys.path.insert(0, str(Path(__file__).parent))
import data  # noqa: E402  (benches/data.py: the reference archives)

REPO = Path(__file__).resolve().parents[1]


def epoch(loader: Iterable[Any]) -> float:
    """Images/s of one pass."""
    t0 = time.perf_counter()
    n = sum(int(batch[0].shape[0]) for batch in loader)
    return n / (time.perf_counter() - t0)


def ffcv_loader(uri: Path, plan: Any, cache: Path, threads: int) -> Any:
    """FFCV's loader over the rows of ``uri``, converted once into ``cache``; None without FFCV."""
    from lancefeed.bench.peers import ffcv_beton

    ok, why = ffcv_beton.available()
    if not ok:
        print(f"ffcv: missing ({why})", file=sys.stderr)
        return None
    spec = {"uri": str(uri), "plan": plan, "batch_size": 256, "shuffle": True, "limit": None, "workers": threads,
            "converted": str(cache / f"{uri.stem}-ffcv")}
    if not (Path(spec["converted"]) / "data.beton").exists():
        t0 = time.perf_counter()
        ffcv_beton.convert(spec, Path(spec["converted"]))
        print(f"ffcv: converted in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return ffcv_beton.make_loader(spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=data.DATA, help="folder with the reference tarballs")
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("LANCEFEED_BENCH_CACHE", REPO / "target" / "bench-cache")))
    p.add_argument("--rounds", type=int, default=5, help="timed epochs per loader")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    uri = data.lance_dataset("cifar10-train", args.cache, args.data)
    plan = make_plan("train", 32)
    transform = lancefeed_transform(plan)
    loaders: Dict[str, Any] = {
        "lancefeed": lancefeed.DataLoader(str(uri), 256, shuffle=True, seed=0, transform=transform, num_threads=args.threads),
        "lancefeed-no-pixel-cache": lancefeed.DataLoader(str(uri), 256, shuffle=True, seed=0, transform=transform,
                                                         num_threads=args.threads, pixel_cache=False),
    }
    ffcv = ffcv_loader(uri, plan, args.cache, args.threads)
    if ffcv is not None:
        loaders["ffcv"] = ffcv
    for name, loader in loaders.items():  # warm-up: caches filled, pipelines compiled
        for _ in range(2):
            rate = epoch(loader)
        print(f"{name}: warm-up epoch {rate:,.0f} img/s", file=sys.stderr)
    rates: Dict[str, List[float]] = {name: [] for name in loaders}
    for _ in range(args.rounds):
        for name, loader in loaders.items():
            rates[name].append(epoch(loader))
    medians = {name: statistics.median(r) for name, r in rates.items()}
    for name, r in rates.items():
        ratios = "  ".join(f"{medians[name] / medians[other]:.2f}x {other}" for other in loaders if other != name)
        print(f"{name:26s} median {medians[name]:9,.0f} img/s  epochs {', '.join(f'{x:,.0f}' for x in r)}  {ratios}")
    print(f"pixel cache: {loaders['lancefeed'].stats()['pixel_cache_bytes'] / 2**20:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps({"rates": rates, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
