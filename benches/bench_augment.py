"""Augmentation pipelines on the ImageNet sample, in one process: lancefeed's loader with
the geometric training path alone, with ColorJitter + Normalize, and with
TrivialAugmentWide + Normalize, beside torchvision's own pipeline for each (files +
``decode_jpeg`` + ``transforms.v2``, torch ``DataLoader`` with 2 worker processes).

    python benches/bench_augment.py [--repeat 3]   # also on the rows restart-indexed
    python benches/bench_augment.py --ops      # what each op adds per 224x224 image, one thread
    python benches/bench_augment.py --albumentations [--repeat 3]

Targets on a 2-core machine (the albumentations issue): a fused crop followed by ops
without counterparts (``A.CLAHE``, ``A.GaussNoise``), lancefeed against torch's
``DataLoader`` with 2 workers running the whole albumentations chain on the same JPEGs
(``cv2.imdecode``): >= 1.0x. The tail's own cost bounds both.

Targets on a 2-core machine (the augmentation issue):
  lancefeed ColorJitter + Normalize:     >= 0.8x lancefeed geometric-only, >= 3x torchvision's
  lancefeed TrivialAugmentWide + Norm.:  >= 0.7x lancefeed geometric-only, >= 3x torchvision's
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).parent))
import data  # noqa: E402

import lancefeed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def pipelines() -> dict[str, list[Any]]:
    """The three training pipelines, as torchvision v2 objects (lancefeed takes them as they are)."""
    geometric = [v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip()]
    to_float = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
    return {
        "geometric": geometric,
        "color-jitter": geometric + [v2.ColorJitter(0.4, 0.4, 0.4)] + to_float,
        "trivial-augment": geometric + [v2.TrivialAugmentWide()] + to_float,
    }


class Files(torch.utils.data.Dataset):
    """torchvision's usual Dataset: a file per image, read and decoded per item."""

    def __init__(self, paths: list[Path], transform: Callable[[Any], Any]) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        raw = torch.frombuffer(bytearray(self.paths[i].read_bytes()), dtype=torch.uint8)
        return self.transform(decode_jpeg(raw, mode=ImageReadMode.RGB)), 0


def run_torchvision(paths: list[Path], chain: list[Any], batch_size: int, workers: int) -> float:
    loader = torch.utils.data.DataLoader(Files(paths, v2.Compose(chain)), batch_size=batch_size, shuffle=True, num_workers=workers)
    t0 = time.perf_counter()
    n = sum(len(y) for _, y in loader)
    return n / (time.perf_counter() - t0)


def run_lancefeed(uri: Path, chain: list[Any], batch_size: int) -> float:
    t0 = time.perf_counter()
    loader = lancefeed.DataLoader(str(uri), batch_size, shuffle=True, transform=v2.Compose(chain))
    n = sum(len(y) for _, y in loader)
    return n / (time.perf_counter() - t0)


def op_costs(rounds: int = 5) -> None:
    """Microseconds each op adds to a 224x224 image's decode + resize, on one thread."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(buf, "PNG")
    blobs = [buf.getvalue()] * 64
    L = lancefeed

    def per_image(ops: list[Any]) -> float:
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            L.decode_batch(blobs, transform=L.Compose([L.Resize((224, 224)), *ops]), num_threads=1)
            best = min(best, time.perf_counter() - t0)
        return best / len(blobs) * 1e6

    base = per_image([])
    print(f"{'decode + resize':16s} {base:6.0f} us/image")
    for name, op in [("brightness", L.ColorJitter(brightness=0.4)), ("contrast", L.ColorJitter(contrast=0.4)),
                     ("saturation", L.ColorJitter(saturation=0.4)), ("hue", L.ColorJitter(hue=0.1)),
                     ("posterize", L.RandomPosterize(4, 1.0)), ("equalize", L.RandomEqualize(1.0)),
                     ("autocontrast", L.RandomAutocontrast(1.0)), ("sharpness", L.RandomAdjustSharpness(2, 1.0)),
                     ("blur 5x5", L.GaussianBlur(5)), ("rotation", L.RandomRotation(20)), ("erasing", L.RandomErasing(1.0))]:
        print(f"{name:16s} +{per_image([op]) - base:5.0f} us/image")


def albumentations_chain() -> Any:
    """A fused crop and flip, then two ops lancefeed has no counterpart for."""
    import albumentations as A

    return A.Compose([A.RandomResizedCrop((224, 224)), A.HorizontalFlip(), A.CLAHE(p=1), A.GaussNoise(p=1)])


class AlbumentationsFiles(torch.utils.data.Dataset):
    """albumentations' usual Dataset: a file per image, ``cv2.imdecode``, the Compose."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths, self.transform = paths, albumentations_chain()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        import cv2
        import numpy as np

        bgr = cv2.imdecode(np.frombuffer(self.paths[i].read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        return torch.from_numpy(self.transform(image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))["image"]), 0


def run_albumentations(uri: Path, paths: list[Path], batch_size: int, workers: int, repeat: int) -> None:
    """Both loaders ``repeat`` times, alternating; the ratio per round."""
    ratios = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        loader = torch.utils.data.DataLoader(AlbumentationsFiles(paths), batch_size=batch_size, shuffle=True,
                                             num_workers=workers)
        theirs = sum(len(y) for _, y in loader) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        ours_loader = lancefeed.DataLoader(str(uri), batch_size, shuffle=True, transform=albumentations_chain())
        ours = sum(len(y) for _, y in ours_loader) / (time.perf_counter() - t0)
        ratios.append(ours / theirs)
        print(f"torch DataLoader ({workers} workers) {theirs:7.0f} images/s, lancefeed {ours:7.0f} images/s: {ours / theirs:.2f}x")
    print(f"lancefeed / torch DataLoader: {min(ratios):.2f}-{max(ratios):.2f}x over {repeat} round(s) (target 1.0x)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=data.DATA)
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("LANCEFEED_BENCH_CACHE", REPO / "target" / "bench-cache")))
    p.add_argument("--repeat", type=int, default=3, help="rounds; each runs every candidate once, the best is kept")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="torch DataLoader worker processes for torchvision")
    p.add_argument("--ops", action="store_true", help="only the cost of each op per image")
    p.add_argument("--albumentations", action="store_true",
                   help="only a fused crop + CLAHE + GaussNoise against torch's DataLoader running the albumentations chain")
    args = p.parse_args(argv)
    if args.ops:
        op_costs()
        return 0
    args.cache.mkdir(parents=True, exist_ok=True)
    uri = data.lance_dataset("imagenet-sample", args.cache, args.data)
    # The same rows stored restart-indexed (ingest --restart-index): a crop decodes
    # only its own MCUs. The torchvision pipeline reads the original files.
    rst = args.cache / "imagenet-sample-restart.lance"
    if not rst.exists():
        from lancefeed.restart import index_dataset

        index_dataset(uri, rst)
    files = Path(tempfile.mkdtemp(prefix="bench-augment-"))
    paths = []
    for k, (name, blob) in enumerate(data.imagenet(data=args.data)):
        path = files / f"{k:04d}.JPEG"
        path.write_bytes(blob)
        paths.append(path)
    if args.albumentations:
        run_albumentations(uri, paths, args.batch_size, args.workers, args.repeat)
        return 0

    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, chain in pipelines().items():
            for who, fn in (("lancefeed", lambda c=chain: run_lancefeed(uri, c, args.batch_size)),
                            ("lancefeed-rst", lambda c=chain: run_lancefeed(rst, c, args.batch_size)),
                            ("torchvision", lambda c=chain: run_torchvision(paths, c, args.batch_size, args.workers))):
                rate = fn()
                best[f"{who} {name}"] = max(best.get(f"{who} {name}", 0.0), rate)
    print(f"{'pipeline':34s} {'images/s':>9s}")
    for key, rate in best.items():
        print(f"{key:34s} {rate:9.0f}")
    for who, label in (("lancefeed", "original JPEGs"), ("lancefeed-rst", "restart-indexed JPEGs")):
        geo = best[f"{who} geometric"]
        for name, floor in (("color-jitter", 0.8), ("trivial-augment", 0.7)):
            ours, theirs = best[f"{who} {name}"], best[f"torchvision {name}"]
            print(f"{name}, {label}: {ours / geo:.2f}x lancefeed geometric-only (target {floor}x), "
                  f"{ours / theirs:.2f}x torchvision's pipeline (target 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
