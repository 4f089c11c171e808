"""albumentations pipelines taken as they are: each fused op against albumentations'
own output for the same draws (pixels, boxes, masks), the rest run by albumentations
with the targets, every box format and filter, the containers, and a slow path whose
samples depend on (seed, epoch, position) only.

The reference is albumentations itself, run on Pillow's decode of the same bytes with
its generators set to the sample's (lancefeed's seeding defines the draws; what is
tested is what becomes of them).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import lancefeed
from lancefeed.transforms.seeding import generators
from lancefeed.transforms.slow import SlowPathWarning
from tests.images import photo

A = pytest.importorskip("albumentations")
cv2 = pytest.importorskip("cv2")
from albumentations.pytorch import ToTensorV2  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::lancefeed.transforms.slow.SlowPathWarning")

H, W = 120, 160
N = 6


def _jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def rows():
    """N JPEG photos of two sizes, label masks (PNG) and 3 boxes (xyxy) each."""
    images, masks, boxes = [], [], []
    rng = np.random.default_rng(5)
    for i in range(N):
        h, w = (H, W) if i % 2 == 0 else (W, H)
        images.append(_jpeg(photo(w, h, seed=i)))
        y, x = np.mgrid[0:h, 0:w]
        masks.append(_png(((x // 17 + y // 13 + i) % 5).astype(np.uint8)))
        b = []
        for _ in range(3):
            x0, y0 = rng.uniform(0, w * 0.6), rng.uniform(0, h * 0.6)
            b.append([x0, y0, x0 + rng.uniform(12, w * 0.4), y0 + rng.uniform(12, h * 0.4)])
        boxes.append(np.array(b, np.float32))
    return images, masks, boxes


def _to_format(xyxy: np.ndarray, fmt: str, w: int, h: int) -> np.ndarray:
    b = xyxy.astype(np.float64)
    if fmt == "pascal_voc":
        return b
    if fmt == "coco":
        return np.c_[b[:, :2], b[:, 2:] - b[:, :2]]
    if fmt == "yolo":
        return np.c_[(b[:, :2] + b[:, 2:]) / 2 / [w, h], (b[:, 2:] - b[:, :2]) / [w, h]]
    return b / [w, h, w, h]


def _from_format(b: np.ndarray, fmt: str, w: int, h: int) -> np.ndarray:
    b = np.asarray(b, np.float64).reshape(-1, 4)
    if fmt == "pascal_voc":
        return b
    if fmt == "coco":
        return np.c_[b[:, :2], b[:, :2] + b[:, 2:]]
    if fmt == "yolo":
        return np.c_[(b[:, :2] - b[:, 2:] / 2) * [w, h], (b[:, :2] + b[:, 2:] / 2) * [w, h]]
    return b * [w, h, w, h]


def reference(compose, image_bytes, mask_bytes, boxes, position, *, seed=0, epoch=0):
    """albumentations' own result for the sample at ``position``: (image, xyxy boxes, box index, mask)."""
    image = np.asarray(Image.open(io.BytesIO(image_bytes)).convert("RGB"))
    h, w = image.shape[:2]
    data = {"image": image}
    if mask_bytes is not None:
        data["mask"] = np.asarray(Image.open(io.BytesIO(mask_bytes)))
    bbox = compose.processors.get("bboxes")
    fmt = bbox.params.format if bbox is not None else None
    if fmt is not None:
        data["bboxes"] = _to_format(boxes, fmt, w, h) if boxes is not None else np.zeros((0, 4))
        for name in bbox.params.label_fields:
            data[name] = np.arange(len(data["bboxes"]))
    compose.set_random_state(*generators(seed, epoch, position))
    out = compose(**data)
    img = out["image"]
    oh, ow = (img.shape[1:3]) if hasattr(img, "permute") else img.shape[:2]
    got_boxes = got_index = None
    if fmt is not None:
        got_boxes = _from_format(out["bboxes"], fmt, ow, oh)
        got_index = np.asarray(out[bbox.params.label_fields[0]], dtype=np.int64)
    mask = out.get("mask")
    return np.asarray(img), got_boxes, got_index, None if mask is None else np.asarray(mask)


def _compose(ops, fmt="pascal_voc", **bbox):
    return A.Compose(ops, bbox_params=A.BboxParams(format=fmt, label_fields=["labels"], **bbox))


def run_both(compose, rows, *, seed=0, epoch=0, masks=True, threads=2, box_format="xyxy"):
    images, mask_bytes, boxes = rows
    got, targets = lancefeed.decode_targets(images, boxes=boxes, box_format=box_format,
                                            masks=mask_bytes if masks else None, transform=compose, seed=seed,
                                            epoch=epoch, ragged=True, num_threads=threads)
    want = [reference(compose, images[i], mask_bytes[i] if masks else None, boxes[i], i, seed=seed, epoch=epoch)
            for i in range(len(images))]
    return got, targets, want


def pixel_diff(a, b) -> tuple[float, float]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    d = np.abs(a - b)
    return float(d.max()) if d.size else 0.0, float((d > 1e-4).mean()) if d.size else 0.0


# Each fused op with its measured bound: (max level difference, share of pixels that differ).
# Exact where the core does OpenCV's integer arithmetic; warps and blurs are computed in
# floating point by OpenCV (its SIMD order of operations) and differ by a level on a few
# pixels; a nearest-neighbour warp takes the neighbouring source pixel where a source
# coordinate falls within float rounding of a half (a few pixels in 10,000).
WARPS = ("Rotate", "Rotate crop_border", "Affine", "Affine nearest reflect", "ShiftScaleRotate")
FUSED = [
    ("Resize", lambda: A.Resize(40, 56), (0, 0)),
    ("Resize nearest", lambda: A.Resize(71, 93, interpolation=cv2.INTER_NEAREST), (0, 0)),
    ("LongestMaxSize", lambda: A.LongestMaxSize(64), (0, 0)),
    ("SmallestMaxSize", lambda: A.SmallestMaxSize(150), (0, 0)),
    ("PadIfNeeded constant", lambda: A.PadIfNeeded(150, 170, border_mode=cv2.BORDER_CONSTANT, fill=(10, 20, 30), fill_mask=7), (0, 0)),
    ("PadIfNeeded reflect", lambda: A.PadIfNeeded(200, 190, border_mode=cv2.BORDER_REFLECT_101), (0, 0)),
    ("RandomCrop", lambda: A.RandomCrop(64, 72), (0, 0)),
    ("RandomCrop padded", lambda: A.RandomCrop(170, 170, pad_if_needed=True), (0, 0)),
    ("CenterCrop", lambda: A.CenterCrop(50, 60), (0, 0)),
    ("RandomResizedCrop", lambda: A.RandomResizedCrop((48, 64)), (0, 0)),
    ("RandomSizedBBoxSafeCrop", lambda: A.RandomSizedBBoxSafeCrop(64, 64, erosion_rate=0.2), (0, 0)),
    ("BBoxSafeRandomCrop", lambda: A.BBoxSafeRandomCrop(erosion_rate=0.1), (0, 0)),
    ("HorizontalFlip", lambda: A.HorizontalFlip(p=1), (0, 0)),
    ("VerticalFlip", lambda: A.VerticalFlip(p=1), (0, 0)),
    ("Rotate", lambda: A.Rotate(limit=30, p=1), (1, 5e-4)),
    ("Rotate crop_border", lambda: A.Rotate(limit=40, crop_border=True, p=1), (1, 5e-4)),
    ("Affine", lambda: A.Affine(rotate=(-20, 20), scale=(0.8, 1.2), translate_percent=(-0.1, 0.1), shear=(-8, 8), p=1), (1, 5e-4)),
    ("Affine nearest reflect", lambda: A.Affine(rotate=(-20, 20), interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_REFLECT, p=1), (255, 5e-4)),
    ("ShiftScaleRotate", lambda: A.ShiftScaleRotate(p=1), (1, 5e-4)),
    ("RandomBrightnessContrast", lambda: A.RandomBrightnessContrast(p=1), (0, 0)),
    ("ColorJitter", lambda: A.ColorJitter(p=1), (2, 5e-4)),
    ("HueSaturationValue", lambda: A.HueSaturationValue(p=1), (2, 1e-4)),
    ("ToGray", lambda: A.ToGray(p=1), (0, 0)),
    ("GaussianBlur", lambda: A.GaussianBlur(blur_limit=(3, 7), p=1), (1, 5e-4)),
    ("CoarseDropout", lambda: A.CoarseDropout(num_holes_range=(1, 4), fill=(50, 100, 150), fill_mask=9, p=1), (0, 0)),
    ("Normalize + ToTensorV2", lambda: [A.Normalize(), ToTensorV2()], (1e-5, 1.0)),
]


@pytest.mark.parametrize("name,make,bound", FUSED, ids=[f[0] for f in FUSED])
def test_each_fused_op_matches_albumentations(rows, name, make, bound) -> None:
    ops = make()
    ops = ops if isinstance(ops, list) else [ops]
    compose = _compose(ops)
    plan = lancefeed.transforms.plan.TransformPlan.of(compose)
    if name == "GaussianBlur" and plan.albumentations.fused == 0:
        assert "cv2.GaussianBlur" in plan.albumentations.why  # albumentations < 2.0.5: run by albumentations
    else:
        assert plan.albumentations.fused == len(ops), plan.albumentations.why
    got, targets, want = run_both(compose, rows)
    for i, (image, boxes, index, mask) in enumerate(want):
        worst, share = pixel_diff(got[i], image)
        assert worst <= bound[0] and share <= bound[1], f"row {i}: {worst} levels on {share:.4%} of the pixels"
        np.testing.assert_allclose(targets[i]["boxes"], boxes, atol=2e-3, err_msg=f"row {i}")
        assert targets[i]["box_index"].tolist() == index.tolist()
        _, mask_share = pixel_diff(targets[i]["mask"], mask)
        assert mask_share <= (5e-4 if name in WARPS else 0), f"row {i}: mask differs on {mask_share:.4%}"


def test_seed_004_pipeline_with_the_rest_ops_and_containers(rows) -> None:
    """The seed's pipeline, then ops lancefeed has no counterpart for and containers:
    the boxes, labels and masks albumentations gives, whatever runs where."""
    compose = A.Compose([
        A.RandomSizedBBoxSafeCrop(width=96, height=96, erosion_rate=0.2),
        A.OneOf([A.Rotate(limit=20, p=1), A.HorizontalFlip(p=1)], p=0.9),
        A.SomeOf([A.VerticalFlip(), A.RandomBrightnessContrast(0.1, 0.1), A.ToGray()], n=2),
        A.Sequential([A.CenterCrop(80, 80), A.Resize(72, 72)], p=0.7),
        A.CLAHE(p=1),
        A.GaussNoise(p=1),
        A.ElasticTransform(p=0.5),
        A.Affine(rotate=(-10, 10), p=0.5),
        A.Normalize(),
        ToTensorV2(),
    ], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "bbox_ids"], min_area=16, min_visibility=0.3))
    plan = lancefeed.transforms.plan.TransformPlan.of(compose).albumentations
    assert plan.fused == 4 and plan.rest_names[0] == "CLAHE"
    images, masks, boxes = rows
    for epoch in (0, 1):
        got, targets = lancefeed.decode_targets(images, boxes=boxes, masks=masks, transform=compose, epoch=epoch, ragged=True)
        for i in range(N):
            compose.set_random_state(*generators(0, epoch, i))
            data = {"image": np.asarray(Image.open(io.BytesIO(images[i])).convert("RGB")),
                    "mask": np.asarray(Image.open(io.BytesIO(masks[i]))), "bboxes": boxes[i],
                    "labels": np.arange(3), "bbox_ids": np.arange(3)}
            want = compose(**data)
            assert got[i].shape == (3, 72, 72) or got[i].shape == (3, 96, 96)
            assert got[i].shape == want["image"].shape
            # The prefix is exact here (crops, resizes, flips, grey, brightness tables), so
            # the rest sees albumentations' own pixels; the rotation may differ by a level
            # on a few pixels, which CLAHE and the noise can spread a little.
            worst, share = pixel_diff(got[i], want["image"])
            assert share <= 0.05, (i, worst, share)
            np.testing.assert_allclose(targets[i]["boxes"], np.asarray(want["bboxes"]).reshape(-1, 4), atol=2e-3)
            assert targets[i]["box_index"].tolist() == list(want["bbox_ids"])
            assert np.array_equal(targets[i]["mask"], np.asarray(want["mask"]))


@pytest.mark.parametrize("fmt", ["pascal_voc", "coco", "yolo", "albumentations"])
@pytest.mark.parametrize("filters", [{}, {"min_area": 400}, {"min_visibility": 0.5}, {"min_width": 20, "min_height": 15},
                                     {"clip": True, "min_area": 50}])
def test_every_box_format_and_filter(rows, fmt, filters) -> None:
    compose = _compose([A.Affine(scale=(0.9, 1.6), translate_percent=(-0.2, 0.2), p=1), A.RandomCrop(90, 90),
                        A.HorizontalFlip()], fmt, **filters)
    got, targets, want = run_both(compose, rows, masks=False)
    dropped = 0
    for i, (_, boxes, index, _) in enumerate(want):
        np.testing.assert_allclose(targets[i]["boxes"], boxes, atol=2e-3, err_msg=f"row {i}")
        assert targets[i]["box_index"].tolist() == index.tolist()
        dropped += 3 - len(index)
    if filters:
        assert dropped > 0, "the filter never dropped a box: the test shows nothing"


def test_box_formats_of_the_dataset_are_converted(rows) -> None:
    """Boxes stored as COCO xywh go in through box_format= and come out xyxy."""
    images, masks, boxes = rows
    xywh = [np.c_[b[:, :2], b[:, 2:] - b[:, :2]] for b in boxes]
    compose = _compose([A.RandomCrop(90, 90), A.VerticalFlip(p=1)], "yolo")
    _, a = lancefeed.decode_targets(images, boxes=boxes, transform=compose, ragged=True)
    _, b = lancefeed.decode_targets(images, boxes=xywh, box_format="xywh", transform=compose, ragged=True)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x["boxes"], y["boxes"], atol=1e-3)


def test_compose_without_bbox_params_gets_the_loader_filters(rows) -> None:
    images, masks, boxes = rows
    compose = A.Compose([A.RandomCrop(70, 70), A.HorizontalFlip()])
    _, loose = lancefeed.decode_targets(images, boxes=boxes, transform=compose, ragged=True)
    _, strict = lancefeed.decode_targets(images, boxes=boxes, transform=compose, ragged=True, min_visibility=0.9)
    assert sum(len(t["boxes"]) for t in strict) < sum(len(t["boxes"]) for t in loose)
    ref = A.Compose([A.RandomCrop(70, 70), A.HorizontalFlip()],
                    bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=0.9))
    for i in range(N):
        _, want, index, _ = reference(ref, images[i], None, boxes[i], i)
        np.testing.assert_allclose(strict[i]["boxes"], want, atol=2e-3)


def test_fused_crop_decodes_the_same_pixels_as_the_whole_image() -> None:
    """The crop's part of a JPEG (with its margin) is the whole decode's, cropped."""
    from lancefeed import _core

    rng = np.random.default_rng(1)
    for seed in range(4):
        for subsampling in (0, 1, 2):
            buf = io.BytesIO()
            Image.fromarray(photo(203, 157, seed=seed)).save(buf, "JPEG", quality=85, subsampling=subsampling)
            data = buf.getvalue()
            whole = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            for _ in range(10):
                x0, y0 = int(rng.integers(0, 190)), int(rng.integers(0, 145))
                x1, y1 = int(rng.integers(x0 + 1, 204)), int(rng.integers(y0 + 1, 158))
                got, _ = _core.cv_decode(data, [("crop", [x0, y0, x1, y1])])
                assert np.array_equal(got, whole[y0:y1, x0:x1]), (seed, subsampling, x0, y0, x1, y1)


def test_fused_crop_decodes_the_same_as_the_whole_image_on_every_kind_of_file() -> None:
    """Over the blobs a scraped set holds (progressive, restart-marked, arithmetic, CMYK,
    gray, lossless, truncated, damaged tables, PNG, WebP): a crop-first decode gives the
    whole decode's pixels, or the same error; and the whole decode is Pillow's where
    Pillow reads the file as it is."""
    from lancefeed import _core
    from tests.images import history_corpus

    compared = 0
    for name, data in history_corpus().items():
        try:
            whole, _ = _core.cv_decode(data, [])
        except lancefeed.DecodeError as e:
            with pytest.raises(lancefeed.DecodeError) as again:
                _core.cv_decode(data, [("crop", [1, 1, 5, 5])])
            assert str(again.value) == str(e), name
            continue
        h, w = whole.shape[:2]
        for box in ((0, 0, w // 2, h // 2), (w // 3, h // 4, w - 1, h - 2), (w // 2, h // 2, w, h), (1, 1, 3, 3)):
            got, _ = _core.cv_decode(data, [("crop", list(box))])
            assert np.array_equal(got, whole[box[1]:box[3], box[0]:box[2]]), (name, box)
        compared += 1
        if name.startswith("jpeg-") and "cmyk" not in name and "exif" not in name:
            try:
                ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            except Exception:  # noqa: BLE001 - Pillow refuses some the core reads
                continue
            if ref.shape == whole.shape and "truncated" not in name:
                assert np.abs(ref.astype(int) - whole.astype(int)).max() <= 1, name
    assert compared >= 20, compared


# -- the slow path draws from (seed, epoch, position) --------------------------------------


def _numpy_lambda(image, **kwargs):
    # A user's op drawing from numpy's global generator, as much code does.
    return np.clip(image.astype(np.int16) + np.random.randint(-40, 40, size=image.shape), 0, 255).astype(np.uint8)


def _pipelines():
    return {
        "GaussNoise": A.Compose([A.RandomCrop(48, 48), A.GaussNoise(std_range=(0.1, 0.3), p=1)]),
        "numpy lambda": A.Compose([A.RandomCrop(48, 48), A.Lambda(image=_numpy_lambda, p=1)]),
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, rows):
    import lance
    import pyarrow as pa

    images = [_jpeg(photo(96 + 8 * (i % 3), 80, seed=i)) for i in range(23)]
    uri = str(tmp_path_factory.mktemp("albu") / "ds.lance")
    lance.write_dataset(pa.table({"image": images, "id": list(range(23))}), uri)
    return uri


def _epoch(uri, transform, *, batch_size, threads, epoch=0, resume_after=None):
    loader = lancefeed.DataLoader(uri, batch_size, shuffle=True, seed=3, transform=transform, columns=["image", "id"],
                                  output="dict", num_threads=threads)
    loader.set_epoch(epoch)
    out = {}
    it = iter(loader)
    for k, batch in enumerate(it):
        images, ids = batch["image"], batch["id"]
        for img, i in zip(images, ids.tolist()):
            out[i] = np.asarray(img).copy()
        if resume_after is not None and k + 1 == resume_after:
            state = loader.state_dict()
            del it
            fresh = lancefeed.DataLoader(uri, batch_size, shuffle=True, seed=3, transform=transform,
                                         columns=["image", "id"], output="dict", num_threads=threads)
            fresh.load_state_dict(state)
            for batch in fresh:
                for img, i in zip(batch["image"], batch["id"].tolist()):
                    out[i] = np.asarray(img).copy()
            break
    return out


@pytest.mark.parametrize("name", ["GaussNoise", "numpy lambda"])
def test_slow_path_samples_depend_on_seed_epoch_position_only(dataset, name) -> None:
    base = _epoch(dataset, _pipelines()[name], batch_size=4, threads=1)
    assert sorted(base) == list(range(23))
    for kwargs in ({"batch_size": 7, "threads": 2}, {"batch_size": 5, "threads": 2, "resume_after": 2}):
        other = _epoch(dataset, _pipelines()[name], **kwargs)
        assert sorted(other) == list(range(23))
        for i in base:
            assert np.array_equal(base[i], other[i]), f"row {i} differs with {kwargs}"
    # Another epoch draws anew, and the draws are not the same for every row.
    again = _epoch(dataset, _pipelines()[name], batch_size=4, threads=2, epoch=1)
    assert any(not np.array_equal(base[i], again[i]) for i in base)
    # The global generators are left as they were.
    np.random.seed(11)
    expected = np.random.rand()
    np.random.seed(11)
    _epoch(dataset, _pipelines()[name], batch_size=4, threads=2)
    assert np.random.rand() == expected


def test_compose_seed_changes_the_draws(dataset) -> None:
    a = _epoch(dataset, A.Compose([A.RandomCrop(48, 48)], seed=1), batch_size=8, threads=2)
    b = _epoch(dataset, A.Compose([A.RandomCrop(48, 48)], seed=1), batch_size=8, threads=2)
    c = _epoch(dataset, A.Compose([A.RandomCrop(48, 48)], seed=2), batch_size=8, threads=2)
    assert all(np.array_equal(a[i], b[i]) for i in a)
    assert any(not np.array_equal(a[i], c[i]) for i in a)


def test_slow_path_warns_and_errors_name_the_op_and_row(rows) -> None:
    images = rows[0]

    def broken(image, **kwargs):
        if image.shape[0] == W:  # the odd rows are portrait
            raise ValueError("no")
        return image

    lancefeed.transforms.slow.reset_warnings()
    with pytest.warns(SlowPathWarning, match="CLAHE"):
        lancefeed.decode_batch(images[:2], transform=A.Compose([A.RandomCrop(32, 32), A.CLAHE(p=1)]))
    with pytest.raises(lancefeed.TransformError, match=r"row 1: transform Lambda raised ValueError: no"):
        lancefeed.decode_batch(images[:4], transform=A.Compose([A.Lambda(image=broken)]), num_threads=1)
    with pytest.raises(lancefeed.DecodeError, match="row 1"):
        lancefeed.decode_batch([images[0], b"junk"], transform=A.Compose([A.HorizontalFlip()]))
    batch, info = lancefeed.decode_batch([images[0], b"junk", images[2]], transform=A.Compose([A.CenterCrop(40, 40)]),
                                         on_error="skip", return_info=True)
    assert batch.shape == (2, 40, 40, 3) and info.kept.tolist() == [0, 2] and info.errors[0][0] == 1


def test_unfusable_options_are_named_and_run_as_albumentations(rows) -> None:
    from lancefeed.transforms.albumentations import fusable

    assert "interpolation 2" in fusable(A.Resize(40, 40, interpolation=cv2.INTER_CUBIC))
    compose = A.Compose([A.Resize(40, 40, interpolation=cv2.INTER_CUBIC)])
    got = lancefeed.decode_batch(rows[0][:1], transform=compose)
    want = compose(image=np.asarray(Image.open(io.BytesIO(rows[0][0])).convert("RGB")))["image"]
    assert np.array_equal(got[0], want)


# -- the loader ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """A COCO dataset (boxes xywh, categories, masks) ingested by lancefeed."""
    import json

    root = tmp_path_factory.mktemp("coco")
    (root / "images").mkdir()
    rng = np.random.default_rng(2)
    anns, imgs = [], []
    for i in range(12):
        w, h = (160, 120) if i % 2 else (120, 160)
        Image.fromarray(photo(w, h, seed=40 + i)).save(root / "images" / f"{i}.jpg", quality=90)
        imgs.append({"id": i + 1, "file_name": f"{i}.jpg", "width": w, "height": h})
        for _ in range(int(rng.integers(1, 4))):
            bw, bh = rng.uniform(20, w / 2), rng.uniform(20, h / 2)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            poly = [x, y, x + bw, y, x + bw, y + bh, x, y + bh]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "bbox": [x, y, bw, bh], "category_id": int(rng.integers(1, 3)),
                         "area": bw * bh, "iscrowd": 0, "segmentation": [poly]})
    cats = [{"id": 1, "name": "car"}, {"id": 2, "name": "bus"}]
    (root / "ann.json").write_text(json.dumps({"images": imgs, "annotations": anns, "categories": cats}))
    uri = str(root / "coco.lance")
    lancefeed.ingest_coco(root / "ann.json", root / "images", uri, masks=True, progress=False)
    return uri


def _seed_compose():
    return A.Compose([
        A.RandomSizedBBoxSafeCrop(width=64, height=64, erosion_rate=0.2),
        A.Rotate(limit=20, p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
        A.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        ToTensorV2()
    ], bbox_params=A.BboxParams(format='pascal_voc', label_fields=['class_labels', 'bbox_ids'], min_area=16, min_visibility=0.6))


def test_loader_takes_the_seed_pipeline_for_detection(coco) -> None:
    import lance

    ds = lance.dataset(coco)
    table = ds.to_table(columns=["image", "boxes", "categories"]).to_pylist()
    # Unshuffled: the k-th sample is row k, at position k.
    loader = lancefeed.DataLoader(coco, 5, shuffle=False, output="detection", classes=["car", "bus"], seed=4,
                                  transform=_seed_compose())
    seen = []
    k = 0
    for images, targets in loader:
        for img, t in zip(images, targets):
            assert tuple(img.shape) == (3, 64, 64) and str(img.dtype) == "torch.float32"
            pos = k
            row = table[pos]
            compose = _seed_compose()
            xyxy = np.asarray(row["boxes"], np.float64).reshape(-1, 4)
            xyxy[:, 2:] += xyxy[:, :2]
            image, boxes, index, _ = reference(compose, row["image"], None, xyxy, pos, seed=4)
            assert np.abs(img.numpy() - image).max() < 0.05
            np.testing.assert_allclose(t["boxes"].numpy(), boxes, atol=2e-3)
            want_labels = [["car", "bus"].index(row["categories"][j]) for j in index]
            assert t["labels"].tolist() == want_labels
            seen.append(pos)
            k += 1
    assert sorted(seen) == list(range(len(loader.permutation)))


def test_loader_filters_conflict_and_label_fields(coco) -> None:
    with pytest.raises(ValueError, match="bbox_params"):
        lancefeed.DataLoader(coco, 4, output="detection", transform=_seed_compose(), min_area=10)
    compose = A.Compose([A.RandomCrop(64, 64), A.CLAHE(p=1), A.HorizontalFlip()],
                        bbox_params=A.BboxParams(format="coco", label_fields=["category_ids", "other"]))
    loader = lancefeed.DataLoader(coco, 4, output="detection", transform=compose)
    images, targets = next(iter(loader))
    assert set(targets[0]) == {"boxes", "labels", "category_ids", "mask"}
    for t in targets:
        assert len(t["category_ids"]) == len(t["labels"]) == len(t["boxes"])


def test_loader_segmentation_masks_batch_when_one_size(coco) -> None:
    compose = A.Compose([A.RandomCrop(64, 64), A.GaussNoise(p=1), A.Rotate(limit=10)])
    loader = lancefeed.DataLoader(coco, 4, targets={"mask": "mask"}, transform=compose)
    images, masks = next(iter(loader))
    assert tuple(images.shape) == (4, 64, 64, 3)
    assert tuple(masks.shape) == (4, 64, 64) and masks.dtype == torch.uint8
    # Each mask moved with its image: the reference is albumentations on the same draws.
    import lance

    rows = lance.dataset(coco).to_table(columns=["image", "mask"]).to_pylist()
    for k in range(4):
        image, _, _, mask = reference(compose, rows[k]["image"], rows[k]["mask"], None, k)
        assert np.array_equal(masks[k].numpy(), mask)


# -- torchvision v2 ops without a counterpart, with targets -----------------------------------


def test_torchvision_v2_slow_ops_move_boxes_and_masks(rows) -> None:
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    images, masks, boxes = rows
    perspective = v2.RandomPerspective(distortion_scale=0.3, p=1.0)
    got, targets = lancefeed.decode_targets(images, boxes=boxes, masks=masks, transform=[perspective], ragged=True,
                                            seed=2, positions=np.arange(N) + 10, num_threads=2)
    for i in range(N):
        image = torch.from_numpy(np.asarray(Image.open(io.BytesIO(images[i])).convert("RGB"))).permute(2, 0, 1)
        h, w = image.shape[-2:]
        target = {"boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes[i]), format="XYXY", canvas_size=(h, w)),
                  "labels": torch.arange(3),
                  "mask": tv_tensors.Mask(torch.from_numpy(np.asarray(Image.open(io.BytesIO(masks[i])))))}
        # The sample's draws: torch's global generator seeded from (seed, epoch, position).
        with lancefeed.transforms.seeding.global_generators(2, 0, i + 10):
            want_image, want = perspective(image, target)
        assert torch.equal(torch.as_tensor(got[i]), want_image)
        np.testing.assert_allclose(targets[i]["boxes"], want["boxes"].numpy(), atol=1e-4)
        assert targets[i]["box_index"].tolist() == want["labels"].tolist()
        assert np.array_equal(targets[i]["mask"], want["mask"].numpy())


def test_size_changing_plain_callable_with_boxes_is_named(rows) -> None:
    images, _, boxes = rows

    def shrink(x):
        return x[:, ::2, ::2]

    with pytest.raises(lancefeed.TransformError, match="row 0: transform shrink raised ValueError: it changed the image"):
        lancefeed.decode_targets(images[:2], boxes=boxes[:2], transform=[shrink], num_threads=1)
    # Pixel-only callables keep the boxes where they are.
    _, t = lancefeed.decode_targets(images[:2], boxes=boxes[:2], transform=[lambda x: 255 - x], ragged=True)
    np.testing.assert_allclose(t[0]["boxes"], boxes[0], atol=1e-4)


def test_torchvision_slow_path_is_reproducible_across_threads(rows) -> None:
    from torchvision.transforms import v2

    images = rows[0][:4]
    t = [lancefeed.transforms.CenterCrop(48), v2.RandomPerspective(p=1.0)]
    a = lancefeed.decode_batch(images, transform=t, num_threads=1, positions=[5, 6, 7, 8])
    b = lancefeed.decode_batch(images, transform=t, num_threads=2, positions=[5, 6, 7, 8])
    c = lancefeed.decode_batch(images[1:2], transform=t, num_threads=1, positions=[6])
    assert np.array_equal(a, b) and np.array_equal(a[1], c[0])
    d = lancefeed.decode_batch(images, transform=t, num_threads=2, positions=[5, 6, 7, 8], epoch=1)
    assert not np.array_equal(a, d)
