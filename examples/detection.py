"""The seeds' object-detection flow (a Deep Lake tutorial), fed by lancefeed: a COCO-format
dataset to Lance with ``lancefeed.ingest_coco``, the images holding cars, buses, trucks,
bicycles, motorcycles, traffic lights or stop signs chosen with a permutation filter
(pinned to the dataset version it was built on), those 7 classes remapped to 0..6 and
the seed's albumentations pipeline, unchanged, run by ``lancefeed.DataLoader(output="detection")``,
then a few training steps of torchvision's Faster R-CNN on the CPU.

The COCO data is made here: the ImageNet sample's photos (../shared/data, else generated
JPEGs) with 0-4 boxes each, of 12 COCO categories, each box painted with its class's
colour pattern so that a model could in principle learn it.

    python examples/detection.py [--images 300] [--steps 20] [--batch-size 4] [--out /tmp/lancefeed-examples]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tarfile
import time
from pathlib import Path
from typing import Iterator

import albumentations as A
import lance
import numpy as np
import torch
import torchvision
from albumentations.pytorch import ToTensorV2
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import DATA  # noqa: E402

import lancefeed  # noqa: E402

# The seed's classes of interest, in the order that gives their indices 0..6.
CLASSES = ["car", "bus", "truck", "bicycle", "motorcycle", "traffic light", "stop sign"]
# The categories the generated boxes draw from: the 7 above and 5 others, with their COCO ids.
COCO_IDS = {"person": 1, "bicycle": 2, "car": 3, "motorcycle": 4, "bus": 6, "truck": 8, "traffic light": 10,
            "stop sign": 13, "bench": 15, "cat": 17, "dog": 18, "chair": 62}
CATEGORIES = list(COCO_IDS)


def _photos(n: int, seed: int, data: Path) -> Iterator[Image.Image]:
    """``n`` RGB photos, one at a time: the first of the ImageNet sample in ``data`` when
    it is there, else noisy gradients of ImageNet's usual sizes (so decode costs stay
    realistic)."""
    archive = data / "imagenet-sample-1000.tar"
    if archive.exists():
        with tarfile.open(archive) as tar:
            members = [m for m in tar if m.isfile() and m.name.endswith(".JPEG")][:n]
            for member in members:
                yield Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
        return
    rng = np.random.default_rng(seed)
    for _ in range(n):
        h, w = (375, 500) if rng.random() < 0.7 else (500, 375)
        base = np.linspace(rng.uniform(40, 120, 3), rng.uniform(120, 220, 3), w)[None, :, :]
        img = base + rng.normal(0, 25, (h, w, 3))
        yield Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _paint(img: np.ndarray, box: list[float], k: int) -> None:
    """Class ``k``'s pattern over ``box`` (xywh): its own colour, with stripes whose
    period and direction depend on the class, so colour and texture both tell it."""
    x, y, w, h = (int(round(v)) for v in box)
    region = img[y:y + h, x:x + w]
    colour = np.array([(37 * k) % 256, (255 - 53 * k) % 256, (90 + 71 * k) % 256], dtype=np.uint8)
    yy, xx = np.mgrid[0:region.shape[0], 0:region.shape[1]]
    stripes = ((xx if k % 2 else yy) // (3 + k % 4)) % 2 == 0
    region[:] = colour
    region[stripes] = colour // 2


def coco_dataset(out: Path, n: int, *, seed: int = 0, data: Path = DATA) -> tuple[Path, Path]:
    """A COCO detection dataset of ``n`` images at ``out`` (``images/`` and
    ``annotations.json``), built once; returns (annotations JSON, images folder)."""
    images_dir, annotations = out / "images", out / "annotations.json"
    if annotations.exists():
        return annotations, images_dir
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coco: dict = {"images": [], "annotations": [],
                  "categories": [{"id": i, "name": name} for name, i in COCO_IDS.items()]}
    for image_id, photo in enumerate(_photos(n, seed, data), start=1):
        img = np.array(photo)
        height, width = img.shape[:2]
        for _ in range(int(rng.integers(0, 5))):
            w, h = rng.uniform(0.15, 0.45) * width, rng.uniform(0.15, 0.45) * height
            box = [float(int(rng.uniform(0, width - w))), float(int(rng.uniform(0, height - h))), float(int(w)), float(int(h))]
            name = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            _paint(img, box, CATEGORIES.index(name))
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id, "bbox": box,
                                        "category_id": COCO_IDS[name], "area": box[2] * box[3], "iscrowd": 0})
        name = f"{image_id:06d}.jpg"
        Image.fromarray(img).save(images_dir / name, "JPEG", quality=90)
        coco["images"].append({"id": image_id, "file_name": name, "width": width, "height": height})
    # Written last: its presence says the folder is complete.
    annotations.write_text(json.dumps(coco))
    return annotations, images_dir


def lance_dataset(out: Path, n: int, *, seed: int = 0, data: Path = DATA) -> str:
    """The COCO dataset of ``n`` images ingested to Lance at ``out``, built once."""
    uri = out / f"detection-{n}.lance"
    if not uri.exists():
        annotations, images_dir = coco_dataset(out / f"coco-{n}", n, seed=seed, data=data)
        print(lancefeed.ingest_coco(annotations, images_dir, uri, progress=False))
    return str(uri)


def selection(uri: str, version: int | None = None) -> lancefeed.Permutation:
    """The images with at least one box of the seed's classes, shuffled, pinned to
    ``version`` (the latest when None): appends or deletes after this do not change
    which rows a run trains on, so a run can be repeated exactly."""
    names = ", ".join(f"'{c}'" for c in CLASSES)
    table = (lancefeed.permutation_builder(uri, version=version)
             .filter(f"array_has_any(categories, [{names}])")
             .shuffle(seed=0)
             .execute())
    return lancefeed.Permutation.from_tables(uri, table)


WIDTH = 128
HEIGHT = 128


def transform_train() -> A.Compose:
    """The seed's albumentations pipeline exactly as it writes it. lancefeed splits it:
    the crop, rotation, brightness/contrast, Normalize and ToTensorV2 run in its core,
    with albumentations drawing each parameter and moving the boxes (its own filters:
    ``min_area``, ``min_visibility``); ``label_fields`` carry along, and the loader hands
    out each kept box's ``labels`` (the 7 classes as 0..6)."""
    return A.Compose([
        A.RandomSizedBBoxSafeCrop(width=WIDTH, height=HEIGHT, erosion_rate=0.2),
        A.Rotate(limit=20, p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
        A.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        ToTensorV2()
    ], bbox_params=A.BboxParams(format='pascal_voc', label_fields=['class_labels', 'bbox_ids'], min_area=16, min_visibility=0.6))


def loader(perm: lancefeed.Permutation, batch_size: int, **kwargs) -> lancefeed.DataLoader:
    """Batches as the seed's ``collate_fn = lambda b: tuple(zip(*b))`` gives them:
    (list of images, list of {"boxes": xyxy, "labels": 0..6}). ``classes`` keeps only
    the 7 classes' boxes and numbers them in its order (the seed's remap);
    ``drop_empty`` skips images left with none, as the seed's filter does."""
    return lancefeed.DataLoader(perm, batch_size, shuffle=True, output="detection", classes=CLASSES,
                                drop_empty=True, transform=transform_train(), **kwargs)


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=300, help="images in the generated COCO dataset")
    p.add_argument("--steps", type=int, default=20, help="training steps (batches)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("/tmp/lancefeed-examples"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    uri = lance_dataset(args.out, args.images)
    # Pin the version trained on; a later ingest with mode="append" makes a new one and
    # leaves this run's rows as they are.
    perm = selection(uri, version=lance.dataset(uri).version)
    train = loader(perm, args.batch_size)
    if len(train) == 0:
        raise SystemExit(f"none of the {args.images} images holds one of {CLASSES}: try more --images")
    print(f"{len(train.dataset)} of {args.images} images hold one of {len(CLASSES)} classes (dataset version {perm.version})")

    # torchvision's detection models keep label 0 for the background: the classes are 1..7 there.
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=len(CLASSES) + 1)
    model.train()
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.SGD(params, lr=0.005, momentum=0.9, weight_decay=0.0005)  # the seed's optimizer

    step, seen, loss = 0, 0, float("nan")
    start = time.perf_counter()
    while step < args.steps:
        for images, targets in train:  # each pass is a new epoch: a new order, new augmentations
            targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]
            losses = model(images, targets)
            total = sum(losses.values())
            opt.zero_grad()
            total.backward()
            opt.step()
            step, seen, loss = step + 1, seen + len(images), total.item()
            if step % 5 == 0 or step == args.steps:
                print(f"step {step}: loss {loss:.3f}, {seen / (time.perf_counter() - start):.1f} images/s (model included)")
            if step >= args.steps:
                break
    if not math.isfinite(loss):
        raise RuntimeError(f"training diverged: loss {loss}")
    return loss


if __name__ == "__main__":
    main()
