"""One epoch through ``lancefeed.DataLoader`` beside the seeds' loader and ``decode_batch`` alone.

Datasets: CIFAR-10 train (50,000 32x32 JPEGs) and the ImageNet sample (1,000 JPEGs)
from ``../shared/data`` (relative to the repository root), written once to Lance
datasets in a cache folder (columns ``image``, ``filename``, ``label``, ``split``).

For each dataset, in one process:

- ``seeds``: the seeds' loader: a torch ``Dataset`` doing ``ds.take([idx])`` + Pillow
  decode + the same transform in Pillow, under torch's ``DataLoader``
  (``num_workers=0``); on CIFAR-10 timed on a random subset (``--seeds-subset``).
- ``lancefeed``: ``lancefeed.DataLoader`` over one shuffled epoch (a new loader).
- ``later_epochs``: one loader's epochs after its first, the best of three: the
  steady state of training (small datasets are then read from the loader's cache).
- ``decode only``: ``decode_batch`` on the very batches of that epoch (same rows, same
  transform, seed, epoch and positions), the rows read into memory beforehand.
- ``lancefeed_defaults``: the first epoch over the same rows written by pylance's
  defaults (``lance.write_dataset`` of a plain ``pa.binary()`` column: ImageNet-sized
  values each in a zstd frame), beside ``lancefeed`` over the dataset as ``lancefeed
  ingest`` writes it (uncompressed): the in-place read of Lance's default layout
  against its simplest one (target: at least 0.95).

Transforms: CIFAR-10 ``Resize(32)`` + a flip; ImageNet ``RandomResizedCrop(224)`` +
a flip. On a machine with CUDA it also times a small convnet's training step fed by
``DataLoader(device="cuda")`` beside the same steps on one batch already on the GPU.

Usage (from the repository root):
    python benches/bench_loader.py                      # both datasets
    python benches/bench_loader.py --only imagenet --json out.json
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
from typing import Any, Callable, Dict, List, Optional, Tuple

import lance
import numpy as np
import torch

import lancefeed
from lancefeed.bench.transforms import pil_hflip, pil_random_resized_crop, pil_resize
from lancefeed.loader.sampler import plan_epoch

sys.path.insert(0, str(Path(__file__).parent))
import data  # noqa: E402  (benches/data.py: the reference archives)

REPO = Path(__file__).resolve().parents[1]


# -- loaders --------------------------------------------------------------------------


class SeedsDataset(torch.utils.data.Dataset):
    """The seeds' pattern: one ``take([idx])`` and one Pillow decode per item."""

    def __init__(self, uri: Path, transform: Callable[[Any], Any], indices: List[int]) -> None:
        self.ds = lance.dataset(str(uri))
        self.transform = transform
        self.indices = indices
        labels = self.ds.to_table(columns=["label"]).column("label").to_pylist()
        self.classes = {c: i for i, c in enumerate(sorted(set(labels)))}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        from PIL import Image

        row = self.ds.take([self.indices[i]], columns=["image", "label"]).to_pylist()[0]
        img = Image.open(io.BytesIO(row["image"])).convert("RGB")
        arr = np.asarray(self.transform(img), dtype=np.uint8)
        return torch.from_numpy(arr.copy()), self.classes[row["label"]]


def time_seeds(uri: Path, transform: Callable[[Any], Any], batch_size: int, subset: Optional[int]) -> Dict[str, Any]:
    n = lance.dataset(str(uri)).count_rows()
    idx = list(range(n))
    random.Random(0).shuffle(idx)
    idx = idx[:subset] if subset else idx
    loader = torch.utils.data.DataLoader(SeedsDataset(uri, transform, idx), batch_size=batch_size, num_workers=0)
    t0 = time.perf_counter()
    count = sum(len(y) for _, y in loader)
    dt = time.perf_counter() - t0
    return {"images": count, "seconds": dt, "images_per_s": count / dt}


def time_lancefeed(uri: Path, transform: Any, batch_size: int, **kw: Any) -> Dict[str, Any]:
    t0 = time.perf_counter()  # opening the dataset and reading the labels count too
    loader = lancefeed.DataLoader(str(uri), batch_size, shuffle=True, seed=0, transform=transform, **kw)
    count = 0
    for images, labels in loader:
        count += len(labels)
    dt = time.perf_counter() - t0
    stats = loader.stats()
    return {"images": count, "seconds": dt, "images_per_s": count / dt, "batches": len(loader),
            "read_path": stats.get("read_path"), "rows_in_place": stats.get("rows_in_place"),
            "rows_through_lance": stats.get("rows_through_lance")}


def time_later_epochs(uri: Path, transform: Any, batch_size: int, epochs: int = 3, **kw: Any) -> Dict[str, Any]:
    """The same loader's epochs after its first (untimed): the steady state of training,
    where a small dataset's rows come from the loader's cache (``cache="auto"``)."""
    loader = lancefeed.DataLoader(str(uri), batch_size, shuffle=True, seed=0, transform=transform, **kw)
    for _ in loader:
        pass
    best: Dict[str, Any] = {}
    for _ in range(epochs):
        t0 = time.perf_counter()
        count = sum(len(labels) for _, labels in loader)
        dt = time.perf_counter() - t0
        if not best or count / dt > best["images_per_s"]:
            best = {"images": count, "seconds": dt, "images_per_s": count / dt}
    return best


def time_decode_only(uri: Path, transform: Any, batch_size: int, num_threads: Optional[int]) -> Dict[str, Any]:
    """decode_batch on the loader's epoch-0 batches, rows already in memory."""
    perm = lancefeed.Permutation.identity(str(uri)).select_columns(["image"])
    plan = plan_epoch(len(perm), batch_size=batch_size, shuffle=True, seed=0, epoch=0)
    batches = [(perm.take_positions(pos).column("image"), pos) for _, pos in plan]
    t0 = time.perf_counter()
    count = 0
    for images, pos in batches:
        out = lancefeed.decode_batch(images, transform=transform, seed=0, epoch=0, positions=pos, num_threads=num_threads)
        count += len(out)
    dt = time.perf_counter() - t0
    return {"images": count, "seconds": dt, "images_per_s": count / dt}


def gpu_steps(uri: Path, transform: Any, batch_size: int, steps: int) -> Dict[str, Any]:
    """A small convnet's training steps fed by the loader vs on one batch already on the GPU."""
    dev = torch.device("cuda")
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(64, 1000),
    ).to(dev, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    norm = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    loader = lancefeed.DataLoader(
        str(uri), batch_size, shuffle=True, transform=transform, device="cuda", normalize=norm,
        channels_last=True, drop_last=True,
    )
    x0, y0 = next(iter(loader))
    step(x0, y0)  # warm up kernels
    torch.cuda.synchronize()
    done, t0 = 0, time.perf_counter()
    while done < steps:
        for x, y in loader:
            step(x, y)
            done += 1
            if done == steps:
                break
    torch.cuda.synchronize()
    fed = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x0, y0)
    torch.cuda.synchronize()
    resident = time.perf_counter() - t0
    return {
        "steps": steps,
        "fed_steps_per_s": steps / fed,
        "resident_steps_per_s": steps / resident,
        "fed_over_resident": resident / fed,
    }


# -- main ---------------------------------------------------------------------------------


def bench(name: str, uri: Path, defaults_uri: Path, args: argparse.Namespace) -> Dict[str, Any]:
    if name == "cifar10":
        transform = lancefeed.Compose([lancefeed.Resize(32), lancefeed.RandomHorizontalFlip()])
        pil = [pil_resize(32), pil_hflip(0.5, random.Random(0))]
        batch_size, subset = 256, args.seeds_subset
    else:
        transform = lancefeed.Compose([lancefeed.RandomResizedCrop(224), lancefeed.RandomHorizontalFlip()])
        pil = [pil_random_resized_crop(224, rng=random.Random(0)), pil_hflip(0.5, random.Random(1))]
        batch_size, subset = 64, None

    def pil_transform(img: Any) -> Any:
        for t in pil:
            img = t(img)
        return img

    out: Dict[str, Any] = {"dataset": name, "rows": lance.dataset(str(uri)).count_rows(), "batch_size": batch_size}
    out["seeds"] = time_seeds(uri, pil_transform, batch_size, subset)
    # Alternate the two fast runs and keep the best of each: on a shared machine the
    # load changes from second to second, and the ratio of the two is what counts.
    runs: Dict[str, List[Dict[str, Any]]] = {"lancefeed": [], "lancefeed_defaults": [], "later_epochs": [], "decode_only": []}
    for _ in range(args.repeat):
        runs["lancefeed"].append(time_lancefeed(uri, transform, batch_size, num_threads=args.num_threads))
        runs["lancefeed_defaults"].append(time_lancefeed(defaults_uri, transform, batch_size, num_threads=args.num_threads))
        runs["later_epochs"].append(time_later_epochs(uri, transform, batch_size, num_threads=args.num_threads))
        runs["decode_only"].append(time_decode_only(uri, transform, batch_size, args.num_threads))
    for key, ms in runs.items():
        out[key] = max(ms, key=lambda m: m["images_per_s"])
        out[key]["all_images_per_s"] = [round(m["images_per_s"]) for m in ms]
    out["lancefeed_over_seeds"] = out["lancefeed"]["images_per_s"] / out["seeds"]["images_per_s"]
    out["lancefeed_over_decode_only"] = out["lancefeed"]["images_per_s"] / out["decode_only"]["images_per_s"]
    out["later_epochs_over_decode_only"] = out["later_epochs"]["images_per_s"] / out["decode_only"]["images_per_s"]
    out["defaults_over_ingest"] = out["lancefeed_defaults"]["images_per_s"] / out["lancefeed"]["images_per_s"]
    if torch.cuda.is_available() and not args.no_gpu:
        out["gpu"] = gpu_steps(uri, transform, batch_size, args.gpu_steps)
    return out


def report(r: Dict[str, Any]) -> str:
    lines = [f"{r['dataset']}: {r['rows']} rows, batch {r['batch_size']}"]
    for key in ("seeds", "lancefeed", "lancefeed_defaults", "later_epochs", "decode_only"):
        m = r[key]
        runs = f"; runs {m['all_images_per_s']}" if "all_images_per_s" in m else ""
        path = f", read {m['read_path']}" if m.get("read_path") else ""
        lines.append(
            f"  {key:<18} {m['images_per_s']:>10,.0f} images/s  ({m['images']} images in {m['seconds']:.2f} s{runs}{path})"
        )
    lines.append(f"  lancefeed / seeds       {r['lancefeed_over_seeds']:.1f}x")
    lines.append(f"  pylance defaults / ingest-written {r['defaults_over_ingest']:.3f} (first epoch; target 0.95)")
    lines.append(f"  lancefeed / decode only {r['lancefeed_over_decode_only']:.3f} (first epoch), "
                 f"{r['later_epochs_over_decode_only']:.3f} (later epochs; target 0.9)")
    if "gpu" in r:
        g = r["gpu"]
        lines.append(
            f"  GPU convnet: {g['fed_steps_per_s']:.1f} steps/s fed by the loader, "
            f"{g['resident_steps_per_s']:.1f} steps/s on a resident batch ({g['fed_over_resident']:.2f})"
        )
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=data.DATA, help="folder with the reference tarballs")
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("LANCEFEED_BENCH_CACHE", REPO / "target" / "bench-cache")))
    p.add_argument("--only", choices=["cifar10", "imagenet"], action="append")
    p.add_argument("--seeds-subset", type=int, default=3000, help="CIFAR-10 images timed through the seeds' loader")
    p.add_argument("--num-threads", type=int, default=None)
    p.add_argument("--repeat", type=int, default=3, help="runs of the lancefeed and decode-only epochs (best kept)")
    p.add_argument("--gpu-steps", type=int, default=50)
    p.add_argument("--no-gpu", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.only or ["cifar10", "imagenet"]:
        ref = "cifar10-train" if name == "cifar10" else "imagenet-sample"
        uri = data.lance_dataset(ref, args.cache, args.data)
        defaults_uri = data.lance_dataset(ref, args.cache, args.data, defaults=True)
        r = bench(name, uri, defaults_uri, args)
        print(report(r), flush=True)
        results.append(r)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
