"""Images/s from an S3-compatible store (moto, on loopback) through a latency proxy, beside local disk.

The ImageNet sample (and CIFAR-10 with ``--cifar``) from ``../shared/data`` is written
as benches/data.py writes it, once to a local cache, then copied to a bucket on a
moto server started here (tests/s3server.py). One shuffled epoch is timed through:

- ``lancefeed``: ``lancefeed.DataLoader`` with default settings, from local disk and
  from the store through the proxy at each ``--delays`` (ms added to every request);
- ``lf clump16``/``lf clump64``: the same with ``shuffle_clump_size=16``/``64`` (runs
  of neighbouring rows shuffled as one: fewer, larger reads); ``lf scan``: an
  unshuffled epoch, which the loader reads by Lance scans (``--variants`` picks them);
- ``lance.torch``: ``lance.torch.data.LanceDataset`` reading record batches, Pillow
  decoding and transforming each image (on ``--baseline-rows`` rows);
- ``take+pillow``: a torch ``Dataset`` doing ``ds.take([i])`` + Pillow per row under
  torch's ``DataLoader(num_workers=0)`` (on ``--baseline-rows`` rows).

The proxy runs in a process of its own (``tests/s3server.py``'s ``ProxyProcess``,
one per delay), so that its Python threads do not hold the GIL the measured loader
needs.

Transform: RandomResizedCrop(224) + horizontal flip for ImageNet, a flip for CIFAR-10.
Targets (lancefeed, default settings): >= 0.9x local at 10 ms, >= 0.7x at 50 ms. moto
(Python) serves far fewer bytes/s than a disk or a real store, so the table also
gives each run against the same store at 0 ms ("x s3 0ms"): what the latency costs.

Usage (from the repository root):
    python benches/bench_s3.py                     # ImageNet sample, 0/10/50 ms
    python benches/bench_s3.py --cifar --delays 0,50 --json out.json
    python benches/bench_s3.py --delays 0,10 --limit 128 --variants lancefeed --baseline-rows 0   # a smoke run
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import lance
import numpy as np
import torch
from PIL import Image

import lancefeed

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))
import data  # noqa: E402  (benches/data.py: the reference archives)
from s3server import ProxyProcess, S3Server, S3sFsServer  # noqa: E402

TARGETS = {10: 0.9, 50: 0.7}


class TakePillow(torch.utils.data.Dataset):
    """One ``take([i])`` and one Pillow decode + transform per item."""

    def __init__(self, uri: str, options: Optional[Dict[str, str]], transform: Callable[[Any], Any], rows: List[int]) -> None:
        self.ds = lance.dataset(uri, storage_options=options)
        self.transform = transform
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        row = self.ds.take([self.rows[i]], columns=["image"]).column("image")[0].as_py()
        img = self.transform(Image.open(io.BytesIO(row)).convert("RGB"))
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())


# --variants: loader name -> DataLoader keywords.
VARIANTS: Dict[str, Dict[str, Any]] = {
    "lancefeed": {"shuffle": True},
    "lf clump16": {"shuffle": True, "shuffle_clump_size": 16},
    "lf clump64": {"shuffle": True, "shuffle_clump_size": 64},
    "lf scan": {"shuffle": False},
}


# The processes serving the store (the S3 server, the latency proxy): their CPU time is
# taken from the same two cores as the loader's, which a remote store's would not be.
# [the server's pid (None: in this process), the proxy's].
SERVING: List[Optional[int]] = []


def cpu_seconds(pid: Optional[int]) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 if it is gone or None)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_lancefeed(uri: str, options: Optional[Dict[str, str]], transform: Any, batch_size: int,
                   **kw: Any) -> Dict[str, Any]:
    kw.setdefault("shuffle", True)
    cpu0, served0 = time.process_time(), [cpu_seconds(p) for p in SERVING]
    t0 = time.perf_counter()  # opening the dataset and reading the labels count too
    loader = lancefeed.DataLoader(uri, batch_size, seed=0, transform=transform, storage_options=options, **kw)
    count = sum(len(x) for x, _ in loader)
    dt = time.perf_counter() - t0
    s = loader.stats()
    served = [cpu_seconds(p) - c for p, c in zip(SERVING, served0)] if options else [0.0, 0.0]
    return {"images": count, "seconds": dt, "images_per_s": count / dt, "in_flight": s["in_flight_limit"],
            "io_bound": s["io_bound"], "takes": s["takes"], "loader_cpu_s": time.process_time() - cpu0,
            "server_cpu_s": sum(served), "s3_cpu_s": served[0], "proxy_cpu_s": served[-1]}


def time_take_pillow(uri: str, options: Optional[Dict[str, str]], transform: Any, batch_size: int, rows: List[int]) -> Dict[str, Any]:
    t0 = time.perf_counter()
    loader = torch.utils.data.DataLoader(TakePillow(uri, options, transform, rows), batch_size=batch_size, num_workers=0)
    count = sum(len(x) for x in loader)
    dt = time.perf_counter() - t0
    return {"images": count, "seconds": dt, "images_per_s": count / dt}


def time_lance_torch(uri: str, options: Optional[Dict[str, str]], transform: Any, batch_size: int, limit: int) -> Dict[str, Any]:
    from lance.torch.data import LanceDataset

    t0 = time.perf_counter()
    ds = LanceDataset(uri, batch_size, columns=["image"], dataset_options={"storage_options": options} if options else None,
                      to_tensor_fn=lambda batch, *a, **k: batch)
    count = 0
    for batch in ds:
        out = [np.asarray(transform(Image.open(io.BytesIO(b)).convert("RGB"))) for b in batch.column("image").to_pylist()]
        count += len(out)
        if count >= limit:
            break
    dt = time.perf_counter() - t0
    return {"images": count, "seconds": dt, "images_per_s": count / dt}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=data.DATA)
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("LANCEFEED_BENCH_CACHE", REPO / "target" / "bench-cache")))
    p.add_argument("--cifar", action="store_true", help="also CIFAR-10 train (50,000 images: slow to copy to moto)")
    p.add_argument("--delays", default="0,10,50", help="ms per request added by the proxy, comma-separated")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--baseline-rows", type=int, default=128, help="rows the per-row baselines read (0: skip them)")
    p.add_argument("--rows-per-file", type=int, default=None,
                   help="rows per data file of the copy on the store (default: 8 for moto, which reads a whole "
                   "object to answer a range request; 4096 for s3s-fs)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"lancefeed runs, comma-separated, of: {', '.join(VARIANTS)}")
    p.add_argument("--server", choices=["auto", "moto", "s3s-fs"], default="auto",
                   help="the S3 server: s3s-fs (Rust, fast; `cargo install s3s-fs@0.14.1 --features binary --locked`) or moto "
                   "(Python, ~15 MB/s here); auto: s3s-fs where installed")
    p.add_argument("--limit", type=int, default=None, help="only the first N rows of each dataset (a smoke run)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.server == "auto":
        args.server = "s3s-fs" if S3sFsServer.available() else "moto"
    if args.rows_per_file is None:
        args.rows_per_file = 8 if args.server == "moto" else 4096
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown --variants {unknown}; choose from {list(VARIANTS)}")
    delays = [int(d) for d in args.delays.split(",") if d.strip()]
    args.cache.mkdir(parents=True, exist_ok=True)

    from torchvision import transforms as T

    sets = [("imagenet-sample", lancefeed.Compose([lancefeed.RandomResizedCrop(224), lancefeed.RandomHorizontalFlip()]),
             T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip()]))]
    if args.cifar:
        sets.append(("cifar10-train", lancefeed.RandomHorizontalFlip(), T.RandomHorizontalFlip()))

    results: List[Dict[str, Any]] = []
    print(f"S3 server: {args.server}", flush=True)
    with (S3sFsServer() if args.server == "s3s-fs" else S3Server()) as s3:
        s3.create_bucket("bench")
        for name, lf_transform, pil_transform in sets:
            local = str(data.lance_dataset(name, args.cache, args.data))
            if args.limit:
                head = args.cache / f"{name}-first{args.limit}.lance"
                lance.write_dataset(lance.dataset(local).head(args.limit), str(head), mode="overwrite")
                local = str(head)
            remote = f"s3://bench/{name}.lance"
            print(f"copying {name} to {remote}", flush=True)
            # Small files on the store: moto reads a whole object to answer each range
            # request, which at Lance's default file size would time moto, not latency.
            lance.write_dataset(lance.dataset(local).to_table(), remote, storage_options=s3.storage_options(),
                                max_rows_per_file=args.rows_per_file)
            n = lance.dataset(local).count_rows()
            rows = list(range(n))
            random.Random(0).shuffle(rows)
            rows = rows[: args.baseline_rows]

            def record(store: str, delay: Optional[int], loader: str, r: Dict[str, Any]) -> None:
                results.append({"dataset": name, "store": store, "delay_ms": delay, "loader": loader, **r})
                print(f"  {store:5s} {'' if delay is None else f'{delay:3d} ms':6s} {loader:12s} {r['images_per_s']:8.0f} img/s", flush=True)

            for v in variants:
                record("local", None, v, time_lancefeed(local, None, lf_transform, args.batch_size, **VARIANTS[v]))
            if args.baseline_rows:
                record("local", None, "take+pillow", time_take_pillow(local, None, pil_transform, args.batch_size, rows))
                record("local", None, "lance.torch", time_lance_torch(local, None, pil_transform, args.batch_size, len(rows)))
            for delay in delays:
                with ProxyProcess(s3.port, delay_ms=delay) as proxy:
                    SERVING[:] = [getattr(p, "pid", None) for p in (s3._proc, proxy._proc)]
                    opts = s3.storage_options(port=proxy.port, retry_timeout_s=60)
                    for v in variants:
                        record("s3", delay, v, time_lancefeed(remote, opts, lf_transform, args.batch_size, **VARIANTS[v]))
                    if args.baseline_rows:
                        record("s3", delay, "take+pillow",
                               time_take_pillow(remote, opts, pil_transform, args.batch_size, rows))
                        record("s3", delay, "lance.torch",
                               time_lance_torch(remote, opts, pil_transform, args.batch_size, len(rows)))

    print()
    # "x s3 0ms": against the same store without added latency, which isolates what the
    # latency costs from what the server itself can serve (moto is slow; see README).
    print(f"{'dataset':16s} {'store':6s} {'delay':>6s} {'loader':12s} {'img/s':>8s} {'x local':>8s} {'x s3 0ms':>8s} "
          f"{'target':>10s} {'in-flight':>9s} {'loader CPU s':>12s} {'server CPU s':>12s} {'(S3 + proxy)':>13s}")
    for r in results:
        base = next(x for x in results if x["dataset"] == r["dataset"] and x["store"] == "local" and x["loader"] == r["loader"])
        zero = next((x for x in results if x["dataset"] == r["dataset"] and x["store"] == "s3" and x["delay_ms"] == 0
                     and x["loader"] == r["loader"]), None)
        ratio = r["images_per_s"] / base["images_per_s"]
        vs0 = f"{r['images_per_s'] / zero['images_per_s']:8.2f}" if zero and r["store"] == "s3" else f"{'':8s}"
        target = TARGETS.get(r["delay_ms"]) if r["loader"] == "lancefeed" else None
        mark = "" if target is None else (f">={target} {'ok' if ratio >= target else 'MISS'}")
        delay = "-" if r["delay_ms"] is None else f"{r['delay_ms']}ms"
        cpu = (f"{r['loader_cpu_s']:12.2f} {r['server_cpu_s']:12.2f} {r['s3_cpu_s']:6.2f} + {r['proxy_cpu_s']:4.2f}") if "loader_cpu_s" in r else ""
        print(f"{r['dataset']:16s} {r['store']:6s} {delay:>6s} {r['loader']:12s} {r['images_per_s']:8.0f} {ratio:8.2f} {vs0} "
              f"{mark:>10s} {r.get('in_flight', ''):>9} {cpu}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
