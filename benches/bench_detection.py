"""The detection seed's input pipeline against lancefeed's, on the ImageNet sample with
generated COCO boxes (examples/detection.py; generated JPEGs without ../shared/data):
one shuffled epoch of the images holding one of the seed's 7 classes, 128x128
normalized float images and their boxes/labels, batches of 16.

- seed: the Deep Lake tutorial's approach on Lance: a map-style Dataset that takes one
  row per item (``ds.take([idx])``), decodes it with Pillow, converts the COCO boxes to
  pascal_voc, keeps and remaps the 7 classes (its ``transform_train``), runs its
  albumentations chain (``RandomSizedBBoxSafeCrop``, ``Rotate``,
  ``RandomBrightnessContrast``, ``Normalize``, ``ToTensorV2``), under torch's
  ``DataLoader(num_workers=2, collate_fn=tuple(zip(*b)))``.
- lancefeed: ``lancefeed.DataLoader(output="detection", transform=tform_train)``: the seed's
  Compose object itself, split by lancefeed (all five ops fused in its core).

Each side is timed over the whole epoch as a user sees it: choosing the rows, building
the loader, starting its workers or threads, every batch; no warm-up is left out.

    python benches/bench_detection.py [--images 1000] [--repeat 3]

Target on a 2-core machine: lancefeed >= 4x the seed's images/s.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import albumentations as A
import lance
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import data  # noqa: E402
import detection  # noqa: E402  (examples/detection.py: the dataset, the classes, the chain)

import lancefeed  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLASS_IDS = [detection.COCO_IDS[c] for c in detection.CLASSES]  # the seed filters by COCO id
ID_TO_INDEX = {cid: i for i, cid in enumerate(CLASS_IDS)}       # and remaps them to 0..6

# The seed's albumentations chain, as it is.
tform_train = A.Compose([
    A.RandomSizedBBoxSafeCrop(width=128, height=128, erosion_rate=0.2),
    A.Rotate(limit=20, p=0.5),
    A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
    A.Normalize(mean=MEAN, std=STD),
    ToTensorV2(),
], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["class_labels", "bbox_ids"], min_area=16, min_visibility=0.6))


def coco_2_pascal(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """COCO [x, y, w, h] to pascal_voc [x1, y1, x2, y2], clipped to the image (the seed's)."""
    out = np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]], axis=1)
    return np.clip(out, 0, [width, height, width, height])


def transform_train(row: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The seed's per-sample function: decode, keep the 7 classes' boxes, augment, remap."""
    image = np.asarray(Image.open(io.BytesIO(row["image"])).convert("RGB"))
    boxes = np.asarray(row["boxes"], dtype=np.float32).reshape(-1, 4)
    boxes = coco_2_pascal(boxes, image.shape[1], image.shape[0])
    categories = np.asarray(row["category_ids"], dtype=np.int64)
    keep = [i for i, c in enumerate(categories) if c in ID_TO_INDEX]
    boxes, categories = boxes[keep], categories[keep]
    out = tform_train(image=image, bboxes=boxes, bbox_ids=np.arange(len(boxes)), class_labels=categories)
    labels = torch.tensor([ID_TO_INDEX[int(c)] for c in out["class_labels"]], dtype=torch.int64)
    # torchvision's detection models want a (0, 4) tensor when no box is left.
    boxes = torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32)).reshape(-1, 4)
    return out["image"], {"boxes": boxes, "labels": labels}


class SeedDataset(torch.utils.data.Dataset):
    """One ``ds.take([idx])`` per item, as the seed reads Deep Lake. The dataset is
    opened in each worker on first use, so that the workers can be spawned (see
    ``run_seed``) without pickling it."""

    def __init__(self, uri: str, version: int, indices: list[int]) -> None:
        self.uri, self.version, self.indices = uri, version, indices
        self.ds: lance.LanceDataset | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        if self.ds is None:
            self.ds = lance.dataset(self.uri, version=self.version)
        row = self.ds.take([self.indices[i]], columns=["image", "boxes", "category_ids"]).to_pylist()[0]
        return transform_train(row)


def collate(batch: list[Any]) -> tuple[Any, ...]:
    """The seed's ``lambda b: tuple(zip(*b))``, at top level so workers can pickle it."""
    return tuple(zip(*batch))


def seed_indices(uri: str, version: int) -> list[int]:
    """The seed's row choice: the indices of images with a box of the 7 classes."""
    ids = lance.dataset(uri, version=version).to_table(columns=["category_ids"]).column("category_ids").to_pylist()
    return [i for i, cats in enumerate(ids) if any(c in ID_TO_INDEX for c in cats)]


def epoch(loader: Any, t0: float) -> tuple[int, float, float]:
    """Images in one pass over ``loader``, its images/s and the seconds to its first
    batch, both from ``t0``."""
    n, first = 0, None
    for images, _ in loader:
        first = time.perf_counter() - t0 if first is None else first
        n += len(images)
    return n, n / (time.perf_counter() - t0), first or 0.0


def run_seed(uri: str, version: int, batch_size: int, workers: int) -> tuple[int, float, float]:
    t0 = time.perf_counter()
    # Spawned workers: Lance is not fork-safe (forked workers segfault in their first
    # take once this process has used Lance, opened in the worker or not), so the seed
    # pays for workers that import torch, albumentations and pylance afresh.
    loader = torch.utils.data.DataLoader(SeedDataset(uri, version, seed_indices(uri, version)), batch_size=batch_size,
                                         shuffle=True, num_workers=workers, collate_fn=collate,
                                         multiprocessing_context="spawn" if workers else None)
    return epoch(loader, t0)


def run_lancefeed(uri: str, version: int, batch_size: int) -> tuple[int, float, float]:
    t0 = time.perf_counter()
    perm = detection.selection(uri, version=version)
    # The seed's Compose, the same object the seed's loader runs.
    loader = lancefeed.DataLoader(perm, batch_size, shuffle=True, output="detection", classes=detection.CLASSES,
                                  drop_empty=True, transform=tform_train)
    return epoch(loader, t0)


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=data.DATA)
    p.add_argument("--images", type=int, default=1000, help="ImageNet sample images to give boxes to")
    p.add_argument("--repeat", type=int, default=3, help="rounds; each runs both loaders once")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="torch DataLoader worker processes for the seed")
    args = p.parse_args(argv)

    rates: dict[str, list[float]] = {"seed": [], "lancefeed": []}
    firsts: dict[str, list[float]] = {"seed": [], "lancefeed": []}
    with tempfile.TemporaryDirectory(prefix="bench-detection-") as tmp:
        # Built and ingested once, outside the timing.
        uri = detection.lance_dataset(Path(tmp), args.images, data=args.data)
        version = lance.dataset(uri).version
        for _ in range(args.repeat):  # alternating, so a change in the machine's load hits both
            n_seed, rate, first = run_seed(uri, version, args.batch_size, args.workers)
            rates["seed"].append(rate)
            firsts["seed"].append(first)
            n_ours, rate, first = run_lancefeed(uri, version, args.batch_size)
            rates["lancefeed"].append(rate)
            firsts["lancefeed"].append(first)
            if n_seed != n_ours:
                raise SystemExit(f"the loaders read different rows: seed {n_seed} images, lancefeed {n_ours}")
    print(f"{n_ours} images per epoch (of {args.images}), batches of {args.batch_size}, {args.repeat} round(s); "
          "median, then min-max")
    # The first batch's wait is part of the images/s; shown apart because it is a fixed
    # cost (the seed's worker start-up), so the ratio grows on small --images.
    print(f"{'loader':12s} {'images/s':>9s} {'range':>13s} {'1st batch s':>12s}")
    for who, rs in rates.items():
        print(f"{who:12s} {statistics.median(rs):9.0f} {min(rs):6.0f}-{max(rs):<6.0f} {statistics.median(firsts[who]):12.2f}")
    ratios = [ours / theirs for ours, theirs in zip(rates["lancefeed"], rates["seed"])]
    ratio = statistics.median(ratios)
    print(f"lancefeed / seed: {ratio:.2f}x (per round {min(ratios):.2f}-{max(ratios):.2f}x; target 4x)")
    return ratio


if __name__ == "__main__":
    main()
