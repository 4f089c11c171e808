"""decode_targets (boxes and label masks through the transforms) and the loader's
detection output: boxes against torchvision v2's box kernels replayed on info.applied,
the fused crop's arithmetic, the detection crops against their reference algorithms
written out on the same draws, masks against the pixels they label."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
import torchvision.transforms.v2 as v2  # noqa: E402
import torchvision.transforms.v2.functional as F  # noqa: E402
from torchvision import tv_tensors  # noqa: E402

import lancefeed  # noqa: E402
from lancefeed import _core  # noqa: E402
from images import encode, photo  # noqa: E402


def png(arr: np.ndarray) -> bytes:
    return encode(arr, "PNG")


def random_boxes(rng: np.random.Generator, w: int, h: int, k: int) -> np.ndarray:
    """k xyxy boxes inside a w x h image, at least 4 px on each side."""
    x0 = rng.uniform(0, w - 5, k)
    y0 = rng.uniform(0, h - 5, k)
    x1 = np.minimum(x0 + rng.uniform(4, w / 2, k), w)
    y1 = np.minimum(y0 + rng.uniform(4, h / 2, k), h)
    return np.stack([x0, y0, x1, y1], axis=1)


# ---------------------------------------------------------------------------------
# torchvision replay


def tv_replay(applied, boxes: np.ndarray, h: int, w: int):
    """The ops of info.applied replayed on torchvision BoundingBoxes."""
    bb = tv_tensors.BoundingBoxes(torch.tensor(np.asarray(boxes, np.float32).reshape(-1, 4)), format="XYXY", canvas_size=(h, w))
    for name, p in applied:
        if name == "pad":
            bb = F.pad(bb, [int(p[0]), int(p[1]), int(p[2]), int(p[3])])
        elif name == "rotate":
            size = tuple(bb.canvas_size)
            bb = F.rotate(bb, float(p[0]), expand=bool(p[2]))
            if p[2]:
                # torchvision's box kernel rounds the expanded canvas on its own and can
                # make it a pixel smaller than the image F.rotate gives; the boxes
                # belong to the image, so they take the image's canvas.
                img = F.rotate(torch.zeros((1, *size), dtype=torch.uint8), float(p[0]), expand=True)
                bb = tv_tensors.wrap(bb.as_subclass(torch.Tensor), like=bb, canvas_size=tuple(img.shape[-2:]))
        elif name == "affine":
            center = [float(p[10]), float(p[11])] if len(p) == 12 else None
            bb = F.affine(bb, angle=float(p[0]), translate=[float(p[1]), float(p[2])], scale=float(p[3]),
                          shear=[float(p[4]), float(p[5])], center=center)
        elif name == "hflip":
            bb = F.horizontal_flip(bb)
        elif name == "vflip":
            bb = F.vertical_flip(bb)
        elif name == "crop":
            bb = F.crop(bb, int(p[0]), int(p[1]), int(p[2]), int(p[3]))
        elif name == "resize":
            bb = F.resize(bb, [int(p[0]), int(p[1])])
        # anything else only changes values
    return bb


def sanitize(boxes: np.ndarray, canvas: tuple[int, int], min_size: float = 1.0, min_area: float = 1.0, tol: float = 0.0):
    """v2.SanitizeBoundingBoxes' rule written out: (keep, borderline) masks; borderline
    boxes sit within `tol` of a threshold, where float32 rounding may decide."""
    h, w = canvas
    ws, hs = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = (ws >= min_size) & (hs >= min_size) & (boxes >= 0).all(axis=1)
    keep &= (boxes[:, 0] <= w) & (boxes[:, 2] <= w) & (boxes[:, 1] <= h) & (boxes[:, 3] <= h)
    keep &= ws * hs >= min_area
    border = (np.abs(ws - min_size) <= tol) | (np.abs(hs - min_size) <= tol) | (np.abs(ws * hs - min_area) <= tol * (ws + hs + 1))
    return keep, border


def test_boxes_follow_every_op_as_torchvision_v2() -> None:
    rng = np.random.default_rng(0)
    sizes = [(80, 60), (64, 64), (97, 41), (50, 90), (120, 70), (33, 47)]
    imgs = [png(photo(w, h, s)) for s, (w, h) in enumerate(sizes)]
    boxes = [random_boxes(rng, w, h, 6) for w, h in sizes]
    chain = [
        lancefeed.Pad(5),
        lancefeed.RandomRotation(30, expand=True),
        lancefeed.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.8, 1.2), shear=5),
        lancefeed.RandomHorizontalFlip(),
        lancefeed.RandomVerticalFlip(),
        lancefeed.RandomResizedCrop((40, 56), scale=(0.3, 1.0)),
    ]
    names_seen = set()
    for seed in range(3):
        out, targets, info = lancefeed.decode_targets(imgs, boxes=boxes, transform=chain, seed=seed, ragged=True, return_info=True)
        assert len(out) == len(targets) == len(sizes)
        for i, ((w, h), b) in enumerate(zip(sizes, boxes)):
            applied = info.applied[i]
            names_seen.update(n for n, _ in applied)
            assert [n for n, _ in applied][:3] == ["pad", "rotate", "affine"], applied
            assert tuple(info.boxes[i]) == (0, 0, h, w), "a non-fused first op leaves the fused part the whole image"
            bb = tv_replay(applied, b, h, w)
            assert out[i].shape[:2] == tuple(bb.canvas_size) == (40, 56), (out[i].shape, bb.canvas_size)
            theirs = bb.as_subclass(torch.Tensor).numpy().astype(np.float64)
            keep, border = sanitize(theirs, bb.canvas_size, tol=1e-3)
            got = targets[i]["boxes"]
            idx = targets[i]["box_index"]
            assert got.dtype == np.float32 and got.shape == (len(idx), 4)
            assert idx.dtype == np.int64 and (np.diff(idx) > 0).all()
            must = set(np.flatnonzero(keep & ~border))
            may = set(np.flatnonzero(keep | border))
            assert must <= set(idx.tolist()) <= may, (seed, i, idx, np.flatnonzero(keep))
            # torchvision computes in float32: 1e-3 px, relative to the coordinate's
            # magnitude above 1 px.
            want = theirs[idx]
            tol = 1e-3 * np.maximum(1.0, np.abs(want))
            assert (np.abs(got - want) <= tol).all(), (seed, i, applied, got, want)
    assert {"pad", "rotate", "affine", "hflip", "vflip", "crop", "resize"} <= names_seen


def test_fused_crop_and_flips_are_the_written_out_arithmetic() -> None:
    rng = np.random.default_rng(1)
    sizes = [(90, 70), (64, 48), (120, 80), (75, 75)]
    imgs = [png(photo(w, h, s)) for s, (w, h) in enumerate(sizes)]
    boxes = [random_boxes(rng, w, h, 8) for w, h in sizes]
    oh, ow = 40, 56
    chain = [lancefeed.RandomResizedCrop((oh, ow), scale=(0.2, 1.0)), lancefeed.RandomHorizontalFlip(), lancefeed.RandomVerticalFlip()]
    flips = set()
    for seed in range(4):
        out, targets, info = lancefeed.decode_targets(imgs, boxes=boxes, transform=chain, seed=seed, return_info=True)
        assert out.shape == (len(sizes), oh, ow, 3)
        for i, b in enumerate(boxes):
            assert info.applied[i] == [], "every op is fused"
            top, left, ch, cw = (float(v) for v in info.boxes[i])
            assert all(float(v).is_integer() for v in info.boxes[i]), info.boxes[i]
            fl, vf = bool(info.flipped[i]), bool(info.vflipped[i])
            flips.add((fl, vf))
            x0 = np.clip((b[:, 0] - left) * ow / cw, 0, ow)
            x1 = np.clip((b[:, 2] - left) * ow / cw, 0, ow)
            y0 = np.clip((b[:, 1] - top) * oh / ch, 0, oh)
            y1 = np.clip((b[:, 3] - top) * oh / ch, 0, oh)
            if fl:
                x0, x1 = ow - x1, ow - x0
            if vf:
                y0, y1 = oh - y1, oh - y0
            want = np.stack([x0, y0, x1, y1], axis=1)
            keep = (x1 - x0 >= 1) & (y1 - y0 >= 1) & ((x1 - x0) * (y1 - y0) >= 1)
            idx = targets[i]["box_index"]
            assert idx.tolist() == np.flatnonzero(keep).tolist()
            np.testing.assert_allclose(targets[i]["boxes"], want[idx], atol=1e-4, rtol=0)
            # and torchvision's resized_crop + flips on the same integer crop box
            bb = tv_tensors.BoundingBoxes(torch.tensor(b, dtype=torch.float32), format="XYXY", canvas_size=sizes[i][::-1])
            bb = F.resized_crop(bb, int(top), int(left), int(ch), int(cw), [oh, ow])
            if fl:
                bb = F.horizontal_flip(bb)
            if vf:
                bb = F.vertical_flip(bb)
            np.testing.assert_allclose(targets[i]["boxes"], bb.as_subclass(torch.Tensor).numpy()[idx], atol=1e-3, rtol=1e-5)
    assert len(flips) >= 3, flips


def centre_offset(size: int, crop: int) -> int:
    """torchvision's center_crop offset (padding when the crop is larger)."""
    if crop > size:
        return -((crop - size) // 2)
    return int(round((size - crop) / 2.0))


@pytest.mark.parametrize("fused", [True, False])
def test_crops_and_flips_exact_and_box_index_aligned(fused: bool) -> None:
    w, h = 100, 80
    img = png(photo(w, h, 3))
    b = np.array([
        [0, 0, 10, 10],       # outside the crop: dropped
        [30, 25, 60, 50],     # inside
        [90, 70, 100, 80],    # outside
        [10, 20, 40, 60],     # straddles the left edge: clamped
        [50, 5, 70, 15],      # ends on the crop's top edge (15): 0 high after clamping, dropped
        [45, 30, 55, 70],     # straddles the bottom: clamped
    ], dtype=np.float64)
    ch, cw = 50, 60
    head = [] if fused else [lancefeed.Pad(0)]
    chain = head + [lancefeed.CenterCrop((ch, cw)), lancefeed.RandomHorizontalFlip(1.0), lancefeed.RandomVerticalFlip(1.0)]
    out, targets, info = lancefeed.decode_targets([img], boxes=[b], transform=chain, return_info=True)
    assert out.shape == (1, ch, cw, 3)
    top, left = centre_offset(h, ch), centre_offset(w, cw)
    if fused:
        assert [float(v) for v in info.boxes[0]] == [top, left, ch, cw]
        assert bool(info.flipped[0]) and bool(info.vflipped[0])
    else:
        assert [n for n, _ in info.applied[0]] == ["pad", "crop", "hflip", "vflip"]
    # each input box transformed by hand
    want, kept = [], []
    for k, (x0, y0, x1, y1) in enumerate(b):
        x0, x1 = np.clip([x0 - left, x1 - left], 0, cw)
        y0, y1 = np.clip([y0 - top, y1 - top], 0, ch)
        x0, x1 = cw - x1, cw - x0
        y0, y1 = ch - y1, ch - y0
        if x1 - x0 >= 1 and y1 - y0 >= 1:
            want.append([x0, y0, x1, y1])
            kept.append(k)
    assert kept == [1, 3, 5]
    assert targets[0]["box_index"].tolist() == kept
    np.testing.assert_array_equal(targets[0]["boxes"], np.float32(want))
    # the pixels moved the same way
    src = photo(w, h, 3)
    np.testing.assert_array_equal(out[0], src[top : top + ch, left : left + cw][::-1, ::-1])


def test_min_visibility_min_area_min_size() -> None:
    img = png(photo(100, 100, 4))
    b = np.array([[5, 40, 45, 60], [30, 30, 33, 33], [40, 40, 42, 60], [40, 40, 70, 70]], dtype=np.float64)
    # CenterCrop(50): x, y in [25, 75); box 0 keeps 20 of its 40 px wide: visibility 0.5
    def run(**kw):
        _, t = lancefeed.decode_targets([img], boxes=[b], transform=[lancefeed.CenterCrop(50)], **kw)
        return t[0]["box_index"].tolist()

    assert run() == [0, 1, 2, 3]
    assert run(min_visibility=0.4) == [0, 1, 2, 3]
    assert run(min_visibility=0.6) == [1, 2, 3]
    assert run(min_area=9) == [0, 1, 2, 3]
    assert run(min_area=10) == [0, 2, 3]
    assert run(min_size=3) == [0, 1, 3]
    assert run(min_size=4) == [0, 3]
    # v2.SanitizeBoundingBoxes in the chain sets the filter
    _, t = lancefeed.decode_targets([img], boxes=[b], transform=[lancefeed.CenterCrop(50), v2.SanitizeBoundingBoxes(min_size=3, min_area=50)])
    assert t[0]["box_index"].tolist() == [0, 3]
    np.testing.assert_array_equal(t[0]["boxes"], np.float32([[0, 15, 20, 35], [15, 15, 45, 45]]))


def bbox_safe_reference(h: int, w: int, boxes: np.ndarray, erosion: float, u) -> tuple[int, int, int, int]:
    """albumentations' RandomSizedBBoxSafeCrop crop on draws u: (top, left, height, width)."""
    n = boxes / np.array([w, h, w, h], dtype=np.float64)
    if len(n) == 1:
        x_min, y_min, x_max, y_max = n[0]
    else:
        x_min, y_min = n[:, 0].min(), n[:, 1].min()
        x_max, y_max = n[:, 2].max(), n[:, 3].max()
        ex, ey = (x_max - x_min) * erosion * 0.5, (y_max - y_min) * erosion * 0.5
        x_min, y_min, x_max, y_max = x_min + ex, y_min + ey, x_max - ex, y_max - ey
    x_min, y_min = np.clip(x_min, 0, 1), np.clip(y_min, 0, 1)
    x_max, y_max = np.clip(x_max, 0, 1), np.clip(y_max, 0, 1)
    left = int(x_min * u[0] * w)
    top = int(y_min * u[1] * h)
    right = int((x_max + (1 - x_max) * u[2]) * w)
    bottom = int((y_max + (1 - y_max) * u[3]) * h)
    return top, left, bottom - top, right - left


@pytest.mark.parametrize("erosion", [0.0, 0.3])
def test_random_sized_bbox_safe_crop(erosion: float) -> None:
    rng = np.random.default_rng(5)
    sizes = [(120, 90), (80, 100), (150, 60), (64, 64), (100, 100)]
    imgs = [png(photo(w, h, s)) for s, (w, h) in enumerate(sizes)]
    boxes = [random_boxes(rng, w, h, k) for (w, h), k in zip(sizes, [1, 2, 3, 4, 5])]
    oh, ow = 48, 64
    for seed in range(3):
        out, targets, info = lancefeed.decode_targets(
            imgs, boxes=boxes, transform=[lancefeed.RandomSizedBBoxSafeCrop(oh, ow, erosion_rate=erosion)], seed=seed, return_info=True
        )
        assert out.shape == (len(sizes), oh, ow, 3)
        for i, ((w, h), b) in enumerate(zip(sizes, boxes)):
            u = _core.random_uniforms(seed, 0, i, 0, 4)
            want = bbox_safe_reference(h, w, b, erosion, u)
            got = tuple(int(v) for v in info.boxes[i])
            assert got == want, (seed, i, got, want)
            if erosion == 0.0:
                top, left, ch, cw = want
                assert targets[i]["box_index"].tolist() == list(range(len(b)))
                sx, sy = ow / cw, oh / ch
                tb = targets[i]["boxes"]
                assert (tb[:, :2] >= 0).all() and (tb[:, 2] <= ow).all() and (tb[:, 3] <= oh).all()
                # never clamped: every box keeps its size times the resize factor
                np.testing.assert_allclose(tb[:, 2] - tb[:, 0], (b[:, 2] - b[:, 0]) * sx, rtol=1e-5, atol=1e-4)
                np.testing.assert_allclose(tb[:, 3] - tb[:, 1], (b[:, 3] - b[:, 1]) * sy, rtol=1e-5, atol=1e-4)
                np.testing.assert_allclose(tb[:, 0], (b[:, 0] - left) * sx, rtol=1e-5, atol=1e-4)


def test_random_sized_bbox_safe_crop_keeps_the_union_as_albumentations() -> None:
    A = pytest.importorskip("albumentations")
    rng = np.random.default_rng(6)
    w, h = 120, 90
    arr = photo(w, h, 6)
    b = random_boxes(rng, w, h, 3)
    t = A.Compose([A.RandomSizedBBoxSafeCrop(48, 64, erosion_rate=0.0)], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]))
    for seed in range(5):
        r = t(image=arr, bboxes=b, labels=[0, 1, 2])
        assert len(r["bboxes"]) == 3, "albumentations keeps every box"
        _, targets = lancefeed.decode_targets([png(arr)], boxes=[b], transform=[lancefeed.RandomSizedBBoxSafeCrop(48, 64)], seed=seed)
        assert targets[0]["box_index"].tolist() == [0, 1, 2]
        # both keep the union of the boxes inside the output
        for kept in (targets[0]["boxes"], np.asarray(r["bboxes"], np.float64)):
            assert kept.shape == (3, 4)
            assert (kept[:, :2] >= -1e-4).all() and (kept[:, 2] <= 64 + 1e-4).all() and (kept[:, 3] <= 48 + 1e-4).all()
            assert (kept[:, 2] > kept[:, 0]).all() and (kept[:, 3] > kept[:, 1]).all()


def iou_crop_reference(h: int, w: int, boxes: np.ndarray, scale, aspect, options, trials: int, u):
    """torchvision v2 RandomIoUCrop.make_params on uniforms u (randint(0, n) is
    floor(u * n)): (top, left, height, width, within) or None for 'leave as is'."""
    it = iter(u)
    for _ in range(1000):
        idx = int(math.floor(next(it) * len(options)))
        min_iou = options[idx]
        if min_iou >= 1.0:
            return None
        for _ in range(trials):
            r0, r1 = next(it), next(it)
            new_w = int(w * (scale[0] + (scale[1] - scale[0]) * r0))
            new_h = int(h * (scale[0] + (scale[1] - scale[0]) * r1))
            if new_h == 0:
                continue
            if not (aspect[0] <= new_w / new_h <= aspect[1]):
                continue
            r0, r1 = next(it), next(it)
            left = int((w - new_w) * r0)
            top = int((h - new_h) * r1)
            right, bottom = left + new_w, top + new_h
            if left == right or top == bottom:
                continue
            cx = 0.5 * (boxes[:, 0] + boxes[:, 2])
            cy = 0.5 * (boxes[:, 1] + boxes[:, 3])
            within = (left < cx) & (cx < right) & (top < cy) & (cy < bottom)
            if not within.any():
                continue
            bx = boxes[within]
            iw = np.clip(np.minimum(bx[:, 2], right) - np.maximum(bx[:, 0], left), 0, None)
            ih = np.clip(np.minimum(bx[:, 3], bottom) - np.maximum(bx[:, 1], top), 0, None)
            inter = iw * ih
            iou = inter / ((bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1]) + new_w * new_h - inter)
            if iou.max() < min_iou:
                continue
            return top, left, new_h, new_w, within
    raise AssertionError("no crop in 1000 options")


@pytest.mark.parametrize("head", [False, True])
def test_random_iou_crop(head: bool) -> None:
    rng = np.random.default_rng(7)
    sizes = [(120, 90), (80, 100), (150, 60), (64, 64), (100, 100), (70, 50)]
    imgs = [png(photo(w, h, s)) for s, (w, h) in enumerate(sizes)]
    boxes = [random_boxes(rng, w, h, 5) for w, h in sizes]
    op = lancefeed.RandomIoUCrop()
    chain = ([lancefeed.Pad(0)] if head else []) + [op]
    opi = 1 if head else 0
    cropped = 0
    for seed in range(4):
        out, targets, info = lancefeed.decode_targets(imgs, boxes=boxes, transform=chain, seed=seed, ragged=True, return_info=True)
        for i, ((w, h), b) in enumerate(zip(sizes, boxes)):
            u = _core.random_uniforms(seed, 0, i, opi, 20000)
            ref = iou_crop_reference(h, w, b, (op.min_scale, op.max_scale), (op.min_aspect_ratio, op.max_aspect_ratio), op.options, op.trials, u)
            crops = [p for n, p in info.applied[i] if n == "crop"]
            if head:
                got = tuple(int(v) for v in crops[0]) if crops else None
            else:
                assert crops == []
                got = tuple(int(v) for v in info.boxes[i])
                if got == (0, 0, h, w):
                    got = None
            if ref is None:
                assert got is None, (seed, i, got)
                assert out[i].shape[:2] == (h, w)
                assert targets[i]["box_index"].tolist() == list(range(len(b)))
                continue
            cropped += 1
            top, left, ch, cw, within = ref
            assert got == (top, left, ch, cw), (seed, i, got, ref)
            assert out[i].shape[:2] == (ch, cw)
            np.testing.assert_array_equal(out[i], photo(w, h, i)[top : top + ch, left : left + cw])
            # dropped boxes are exactly those whose centre is outside the crop
            cl = np.clip(b - [left, top, left, top], 0, [cw, ch, cw, ch])
            ok = within & (cl[:, 2] - cl[:, 0] >= 1) & (cl[:, 3] - cl[:, 1] >= 1) & ((cl[:, 2] - cl[:, 0]) * (cl[:, 3] - cl[:, 1]) >= 1)
            assert targets[i]["box_index"].tolist() == np.flatnonzero(ok).tolist()
            np.testing.assert_allclose(targets[i]["boxes"], cl[ok], atol=1e-4)
    assert cropped >= 10


def test_random_iou_crop_after_a_fused_resize() -> None:
    """The crop is drawn on the resized view: the reference runs on the resized boxes."""
    rng = np.random.default_rng(3)
    sizes = [(120, 90), (80, 100), (150, 60), (64, 64)]
    imgs = [png(photo(w, h, s)) for s, (w, h) in enumerate(sizes)]
    boxes = [random_boxes(rng, w, h, 5) for w, h in sizes]
    op = lancefeed.RandomIoUCrop()
    rh, rw = 60, 80
    cropped = 0
    for seed in range(3):
        out, targets, info = lancefeed.decode_targets(imgs, boxes=boxes, transform=[lancefeed.Resize((rh, rw)), op], seed=seed, ragged=True, return_info=True)
        for i, ((w, h), b) in enumerate(zip(sizes, boxes)):
            sb = b * [rw / w, rh / h, rw / w, rh / h]
            u = _core.random_uniforms(seed, 0, i, 1, 20000)
            ref = iou_crop_reference(rh, rw, sb, (0.3, 1.0), (0.5, 2.0), op.options, op.trials, u)
            if ref is None:
                assert out[i].shape[:2] == (rh, rw)
                assert targets[i]["box_index"].tolist() == list(range(len(b)))
                continue
            cropped += 1
            top, left, ch, cw, within = ref
            assert out[i].shape[:2] == (ch, cw)
            # the fused crop box, in source pixels
            np.testing.assert_allclose(info.boxes[i], [top * h / rh, left * w / rw, ch * h / rh, cw * w / rw], rtol=1e-6)
            cl = np.clip(sb - [left, top, left, top], 0, [cw, ch, cw, ch])
            ok = within & (cl[:, 2] - cl[:, 0] >= 1) & (cl[:, 3] - cl[:, 1] >= 1) & ((cl[:, 2] - cl[:, 0]) * (cl[:, 3] - cl[:, 1]) >= 1)
            assert targets[i]["box_index"].tolist() == np.flatnonzero(ok).tolist()
            np.testing.assert_allclose(targets[i]["boxes"], cl[ok], atol=1e-4)
    assert cropped >= 6


def test_torchvision_iou_crop_is_the_same_op() -> None:
    assert lancefeed.Compose([v2.RandomIoUCrop()]).ops() == lancefeed.RandomIoUCrop().ops()
    assert lancefeed.Compose([v2.RandomIoUCrop(0.5, 0.9, 0.7, 1.5, [0.2, 0.4], 7)]).ops() == lancefeed.RandomIoUCrop(0.5, 0.9, 0.7, 1.5, [0.2, 0.4], 7).ops()


def test_random_iou_crop_option_one_leaves_the_image() -> None:
    rng = np.random.default_rng(8)
    arrs = [photo(90, 70, 0), photo(60, 80, 1)]
    b = [random_boxes(rng, 90, 70, 3), random_boxes(rng, 60, 80, 3)]
    for t in (lancefeed.RandomIoUCrop(sampler_options=[1.0]), v2.RandomIoUCrop(sampler_options=[1.0])):
        out, targets = lancefeed.decode_targets([png(a) for a in arrs], boxes=b, transform=[t], ragged=True)
        for a, o, bb, tg in zip(arrs, out, b, targets):
            np.testing.assert_array_equal(o, a)
            assert tg["box_index"].tolist() == [0, 1, 2]
            np.testing.assert_allclose(tg["boxes"], bb, atol=1e-4)


def test_resize_with_pad_letterboxes() -> None:
    arr = np.full((100, 200, 3), 200, np.uint8)
    mask = np.full((100, 200), 3, np.uint8)
    b = np.array([[0, 0, 200, 100], [50, 25, 100, 75]], np.float64)
    out, targets = lancefeed.decode_targets([png(arr)], boxes=[b], masks=[png(mask)], mask_fill=9, transform=[lancefeed.ResizeWithPad(64)])
    assert out.shape == (1, 64, 64, 3)
    img = out[0]
    assert (img[:16] == 0).all() and (img[48:] == 0).all()
    assert (img[16:48] == 200).all()
    m = targets[0]["mask"]
    assert m.shape == (64, 64) and m.dtype == np.uint8
    assert (m[:16] == 9).all() and (m[48:] == 9).all() and (m[16:48] == 3).all()
    np.testing.assert_allclose(targets[0]["boxes"], [[0, 16, 64, 48], [16, 24, 32, 40]], atol=1e-4)
    # after a non-fused first op too
    out2, t2 = lancefeed.decode_targets([png(arr)], boxes=[b], masks=[png(mask)], mask_fill=9, transform=[lancefeed.Pad(0), lancefeed.ResizeWithPad(64)])
    np.testing.assert_array_equal(out2, out)
    np.testing.assert_array_equal(t2[0]["mask"], m)
    np.testing.assert_allclose(t2[0]["boxes"], targets[0]["boxes"], atol=1e-4)


def test_random_apply_runs_on_its_draw_and_boxes_follow() -> None:
    rng = np.random.default_rng(11)
    sizes = [(70, 50)] * 12
    imgs = [png(photo(w, h, s)) for s, (w, h) in enumerate(sizes)]
    boxes = [random_boxes(rng, w, h, 3) for w, h in sizes]
    p = 0.5
    chain = [lancefeed.Pad(2), lancefeed.RandomApply([lancefeed.RandomRotation(30), lancefeed.RandomHorizontalFlip(1.0)], p=p)]
    ops = lancefeed.Compose(chain).ops()
    assert [n for n, _ in ops] == ["pad", "random_apply", "random_rotation", "hflip"]
    tv_chain = [lancefeed.Pad(2), v2.RandomApply([v2.RandomRotation(30), v2.RandomHorizontalFlip(1.0)], p=p)]
    assert lancefeed.Compose(tv_chain).ops() == ops
    ran = set()
    out, targets, info = lancefeed.decode_targets(imgs, boxes=boxes, transform=chain, seed=2, return_info=True)
    for i, ((w, h), b) in enumerate(zip(sizes, boxes)):
        u = _core.random_uniforms(2, 0, i, 1, 1)[0]
        names = [n for n, _ in info.applied[i]]
        runs = u <= p
        ran.add(runs)
        assert names == (["pad", "rotate", "hflip"] if runs else ["pad"]), (i, u, names)
        bb = tv_replay(info.applied[i], b, h, w).as_subclass(torch.Tensor).numpy()
        np.testing.assert_allclose(targets[i]["boxes"], bb[targets[i]["box_index"]], atol=1e-3)
    assert ran == {True, False}


# ---------------------------------------------------------------------------------
# masks

COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30], [30, 200, 200], [200, 30, 200]], np.uint8)
FILL = (255, 255, 255)
MASK_FILL = 255


def label_scene(w: int, h: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An image of big rectangles of distinct colours and its label mask (labels 1..6)."""
    rng = np.random.default_rng(seed)
    labels = np.ones((h, w), np.uint8)
    for _ in range(8):
        x0, y0 = rng.integers(0, w - 12), rng.integers(0, h - 12)
        x1, y1 = x0 + rng.integers(12, w // 2 + 12), y0 + rng.integers(12, h // 2 + 12)
        labels[y0:y1, x0:x1] = rng.integers(1, 7)
    return COLOURS[labels - 1], labels


def palette_png(labels: np.ndarray) -> bytes:
    im = Image.fromarray(labels, mode="P")
    pal = []
    for i in range(256):
        pal += [(i * 37) % 256, (i * 91 + 13) % 256, 255 - i]
    im.putpalette(pal)
    return encode(im, "PNG")


def test_palette_mask_holds_indices() -> None:
    arr, labels = label_scene(60, 40, 0)
    im = Image.open(io.BytesIO(palette_png(labels)))
    assert im.mode == "P" and not (np.asarray(im.convert("L")) == labels).all()
    _, t = lancefeed.decode_targets([png(arr)], masks=[palette_png(labels)])
    np.testing.assert_array_equal(t[0]["mask"], labels)
    _, t = lancefeed.decode_targets([png(arr)], masks=[encode(Image.fromarray(labels, mode="L"), "PNG")])
    np.testing.assert_array_equal(t[0]["mask"], labels)


@pytest.mark.parametrize("interp", ["nearest", "bilinear"])
def test_masks_label_the_pixels(interp: str) -> None:
    sizes = [(96, 80), (72, 96), (100, 64)]
    scenes = [label_scene(w, h, s) for s, (w, h) in enumerate(sizes)]
    imgs = [png(a) for a, _ in scenes]
    masks = [palette_png(lb) if s % 2 else encode(Image.fromarray(lb, mode="L"), "PNG") for s, (_, lb) in enumerate(scenes)]
    chain = [
        lancefeed.RandomResizedCrop((96, 96), scale=(0.3, 1.0)),
        lancefeed.RandomHorizontalFlip(),
        lancefeed.RandomRotation(25, interpolation=interp, fill=FILL),
        lancefeed.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=5, interpolation=interp, fill=FILL),
        lancefeed.Pad((3, 5, 7, 2), fill=FILL),
    ]
    palette = np.concatenate([COLOURS, np.uint8([FILL])]).astype(np.int32)
    names = np.concatenate([np.arange(1, 7), [MASK_FILL]])
    for seed in range(4):
        out, targets = lancefeed.decode_targets(imgs, masks=masks, mask_fill=MASK_FILL, transform=chain, seed=seed)
        assert out.shape == (3, 103, 106, 3)
        for img, t in zip(out, targets):
            m = t["mask"]
            assert m.shape == img.shape[:2] and m.dtype == np.uint8
            # 3x3 for nearest; bilinear blends each warp's edge with the fill over up to
            # a pixel beyond where the nearest mask ends (torchvision's fill blending), and
            # two such warps run here: 5x5.
            r = 1 if interp == "nearest" else 2
            pad = np.pad(m, r, mode="edge")
            win = np.stack([pad[dy : dy + m.shape[0], dx : dx + m.shape[1]] for dy in range(2 * r + 1) for dx in range(2 * r + 1)])
            uniform = (win == m).all(axis=0)
            d = ((img.astype(np.int32)[:, :, None, :] - palette[None, None]) ** 2).sum(-1)
            nearest = names[d.argmin(-1)]
            assert uniform.mean() > 0.5
            bad = uniform & (nearest != m)
            assert not bad.any(), (seed, int(bad.sum()), np.argwhere(bad)[:5], m[bad][:5], nearest[bad][:5])
            assert (m[:5] == MASK_FILL).all() and (m[:, :3] == MASK_FILL).all()
            assert set(np.unique(m)) <= set(range(1, 7)) | {MASK_FILL}


# ---------------------------------------------------------------------------------
# determinism and errors


def _det_inputs():
    rng = np.random.default_rng(9)
    sizes = [(90, 70), (64, 48), (120, 80), (75, 75), (50, 60), (81, 33)]
    scenes = [label_scene(w, h, s) for s, (w, h) in enumerate(sizes)]
    imgs = [png(a) for a, _ in scenes]
    masks = [png(lb) for _, lb in scenes]
    boxes = [random_boxes(rng, w, h, 4) for w, h in sizes]
    return imgs, masks, boxes


def _same(a, b) -> None:
    (ia, ta), (ib, tb) = a, b
    np.testing.assert_array_equal(np.asarray(ia), np.asarray(ib))
    assert len(ta) == len(tb)
    for x, y in zip(ta, tb):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_deterministic_across_threads_and_batch_splits() -> None:
    imgs, masks, boxes = _det_inputs()
    chain = [
        lancefeed.RandomResizedCrop(64, scale=(0.3, 1.0)),
        lancefeed.RandomHorizontalFlip(),
        lancefeed.ColorJitter(0.4, 0.4, 0.4, 0.1),
        lancefeed.RandomRotation(20),
        lancefeed.RandomApply([lancefeed.RandomAffine(10, translate=(0.1, 0.1))], p=0.5),
        lancefeed.RandomGrayscale(0.3),
    ]
    kw = dict(boxes=boxes, masks=masks, transform=chain, seed=3, epoch=2)
    one = lancefeed.decode_targets(imgs, num_threads=1, **kw)
    two = lancefeed.decode_targets(imgs, num_threads=2, **kw)
    _same(one, two)
    a = lancefeed.decode_targets(imgs[:3], boxes=boxes[:3], masks=masks[:3], transform=chain, seed=3, epoch=2, positions=[0, 1, 2])
    b = lancefeed.decode_targets(imgs[3:], boxes=boxes[3:], masks=masks[3:], transform=chain, seed=3, epoch=2, positions=[3, 4, 5])
    _same(one, (np.concatenate([a[0], b[0]]), a[1] + b[1]))
    other = lancefeed.decode_targets(imgs, num_threads=1, **{**kw, "epoch": 3})
    assert not all(np.array_equal(x["boxes"], y["boxes"]) for x, y in zip(one[1], other[1])), "the epoch changes the draws"


def test_jpeg_decoded_at_a_dct_scale_moves_targets_as_png() -> None:
    """A JPEG shrunk at decode (DCT scaling, decoding only the crop) gets the same crop
    box, boxes and mask as the PNG of the same pixels."""
    _, lb = label_scene(40, 30, 3)
    lb = np.kron(lb, np.ones((10, 10), np.uint8))
    arr = COLOURS[lb - 1]
    b = [np.array([[10, 20, 200, 150], [150, 100, 390, 290], [0, 0, 30, 30]], np.float64)]
    chain = [lancefeed.RandomResizedCrop(40, scale=(0.5, 1.0)), lancefeed.RandomHorizontalFlip()]
    for seed in range(4):
        oj, tj, ij = lancefeed.decode_targets([encode(arr, "JPEG", quality=95)], boxes=b, masks=[png(lb)], transform=chain, seed=seed, return_info=True)
        op, tp, ip = lancefeed.decode_targets([png(arr)], boxes=b, masks=[png(lb)], transform=chain, seed=seed, return_info=True)
        np.testing.assert_array_equal(ij.boxes, ip.boxes)
        assert tj[0]["box_index"].tolist() == tp[0]["box_index"].tolist()
        np.testing.assert_allclose(tj[0]["boxes"], tp[0]["boxes"], atol=1e-4)
        np.testing.assert_array_equal(tj[0]["mask"], tp[0]["mask"])
        assert np.abs(oj.astype(np.int16) - op).mean() < 3


def test_box_formats_and_arrow_inputs_agree() -> None:
    import pyarrow as pa

    imgs, masks, boxes = _det_inputs()
    chain = [lancefeed.RandomResizedCrop(48, scale=(0.3, 1.0)), lancefeed.RandomHorizontalFlip(), lancefeed.RandomRotation(20)]
    ref = lancefeed.decode_targets(imgs, boxes=boxes, masks=masks, transform=chain, seed=5)
    xywh = [np.c_[b[:, :2], b[:, 2:] - b[:, :2]] for b in boxes]
    cxcywh = [np.c_[(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]] for b in boxes]
    for fmt, bs in (("xywh", xywh), ("cxcywh", cxcywh)):
        got = lancefeed.decode_targets(imgs, boxes=bs, box_format=fmt, masks=masks, transform=chain, seed=5)
        np.testing.assert_array_equal(got[0], ref[0])
        for x, y in zip(got[1], ref[1]):
            assert x["box_index"].tolist() == y["box_index"].tolist()
            np.testing.assert_allclose(x["boxes"], y["boxes"], atol=1e-4)
            np.testing.assert_array_equal(x["mask"], y["mask"])
    col = pa.array([b.tolist() for b in boxes], type=pa.list_(pa.list_(pa.float64(), 4)))
    got = lancefeed.decode_targets(pa.array(imgs, pa.binary()), boxes=col, masks=pa.array(masks, pa.binary()), transform=chain, seed=5)
    _same(got, ref)


def test_targets_follow_order_and_skipped_rows() -> None:
    imgs, masks, boxes = _det_inputs()
    chain = [lancefeed.RandomResizedCrop(48, scale=(0.3, 1.0)), lancefeed.RandomHorizontalFlip(), lancefeed.RandomAffine(10)]
    order = [4, 0, 4, 2]
    got = lancefeed.decode_targets(imgs, boxes=boxes, masks=masks, transform=chain, seed=1, order=order)
    want = lancefeed.decode_targets([imgs[k] for k in order], boxes=[boxes[k] for k in order], masks=[masks[k] for k in order], transform=chain, seed=1)
    _same(got, want)
    # a bad row skipped: the targets are those of the kept rows, at their positions
    bad = list(imgs)
    bad[2] = b"\x89PNG\r\n\x1a\n not really"
    out, targets, info = lancefeed.decode_targets(bad, boxes=boxes, masks=masks, transform=chain, seed=1, on_error="skip", return_info=True)
    assert list(info.kept) == [0, 1, 3, 4, 5]
    full = lancefeed.decode_targets(imgs, boxes=boxes, masks=masks, transform=chain, seed=1)
    _same((out, targets), (full[0][[0, 1, 3, 4, 5]], [full[1][k] for k in (0, 1, 3, 4, 5)]))


def test_mask_of_another_size_is_a_decode_error() -> None:
    imgs = [png(photo(40, 30, 0)), png(photo(50, 20, 1))]
    masks = [png(np.zeros((30, 40), np.uint8)), png(np.zeros((21, 50), np.uint8))]
    with pytest.raises(lancefeed.DecodeError) as e:
        lancefeed.decode_targets(imgs, masks=masks)
    msg = str(e.value)
    assert "1" in msg and "50x21" in msg and "50x20" in msg, msg
    assert "row 1" in msg or "row=1" in msg or "index 1" in msg, msg


def test_python_op_with_boxes_runs_and_keeps_them() -> None:
    """A Python op after the fused ones gets the image; the boxes and masks the fused
    ops moved stay as they are when it keeps the size (it is no longer refused)."""
    img = [png(photo(40, 30, 0))]
    b = [np.array([[1, 1, 10, 10]], np.float64)]

    def my_python_op(x):
        return 255 - x

    fused, tf = lancefeed.decode_targets(img, boxes=b, transform=[lancefeed.Resize(20)])
    images, t = lancefeed.decode_targets(img, boxes=b, transform=[lancefeed.Resize(20), my_python_op])
    assert np.array_equal(np.asarray(images)[0], 255 - np.asarray(fused)[0].transpose(2, 0, 1))
    np.testing.assert_allclose(t[0]["boxes"], tf[0]["boxes"])
    m = [png(np.arange(1200, dtype=np.uint8).reshape(30, 40) % 7)]
    _, tm = lancefeed.decode_targets(img, masks=m, transform=[lancefeed.Resize(20), lambda x: x])
    _, tf = lancefeed.decode_targets(img, masks=m, transform=[lancefeed.Resize(20)])
    assert np.array_equal(tm[0]["mask"], tf[0]["mask"])
    with pytest.raises(ValueError):
        lancefeed.decode_targets(img * 2, boxes=b)
    with pytest.raises(ValueError):
        lancefeed.decode_targets(img, boxes=b * 3)


# ---------------------------------------------------------------------------------
# the loader


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    lance = pytest.importorskip("lance")
    del lance
    root = tmp_path_factory.mktemp("coco")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(10)
    cats = [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}, {"id": 3, "name": "bus"}]
    entries, anns = [], []
    aid = 0
    expect = {}
    for i in range(14):
        w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        arr, _ = label_scene(w, h, 100 + i)
        (images / f"{i}.png").write_bytes(png(arr))
        entries.append({"id": 100 + i, "file_name": f"{i}.png", "width": w, "height": h})
        rows = []
        n = 0 if i % 5 == 2 else int(rng.integers(1, 5))
        for k in range(n):
            cat = 2 if i % 5 == 3 else int(rng.choice([1, 2, 3]))
            x, y = float(rng.uniform(0, w - 12)), float(rng.uniform(0, h - 12))
            bw, bh = float(rng.uniform(6, w - x)), float(rng.uniform(6, h - y))
            crowd = int(rng.integers(0, 2))
            anns.append({"id": aid, "image_id": 100 + i, "bbox": [x, y, bw, bh], "category_id": cat, "iscrowd": crowd,
                         "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]})
            rows.append((x, y, bw, bh, cat, crowd))
            aid += 1
        expect[100 + i] = rows
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": entries, "annotations": anns, "categories": cats}))
    uri = root / "c.lance"
    lancefeed.ingest_coco(ann, images, uri, masks=True, progress=False)
    return str(uri), expect


def test_loader_detection_batches(coco) -> None:
    uri, expect = coco
    keep = {k for k, rows in expect.items() if any(r[4] in (1, 3) for r in rows)}
    loader = lancefeed.DataLoader(uri, 4, output="detection", transform=[lancefeed.Resize((32, 48))], classes=["car", "bus"], drop_empty=True)
    assert len(loader.permutation) == len(keep)
    seen = 0
    for images, targets in loader:
        assert isinstance(images, list) and len(images) == len(targets)
        for img, t in zip(images, targets):
            assert tuple(img.shape) == (3, 32, 48)
            assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
            assert t["boxes"].shape == (len(t["labels"]), 4)
            assert len(t["labels"]) >= 1
            assert set(t["labels"].tolist()) <= {0, 1}
            seen += 1
    assert seen == len(keep)


def test_loader_each_kept_row_once_and_boxes_match(coco) -> None:
    uri, expect = coco
    keep = {k for k, rows in expect.items() if any(r[4] in (1, 3) for r in rows)}
    loader = lancefeed.DataLoader(uri, 4, output="detection", classes=["car", "bus"], drop_empty=True, shuffle=True, seed=1,
                                  targets={"boxes": "xywh", "categories": "labels", "iscrowd": "iscrowd"})
    want_rows = {}
    for k in keep:
        want = [r for r in expect[k] if r[4] in (1, 3)]
        want_rows[k] = (np.array([[x, y, x + bw, y + bh] for x, y, bw, bh, _, _ in want], np.float32), want)
    for _ in range(2):
        ids = []
        for images, targets in loader:
            for img, t in zip(images, targets):
                got = t["boxes"].numpy()
                # which row: the one whose car/bus boxes these are (no transform)
                match = [k for k, (wb, _) in want_rows.items() if wb.shape == got.shape and np.allclose(wb, got, atol=1e-3)]
                assert len(match) == 1, (got, match)
                ids.append(match[0])
                _, want = want_rows[match[0]]
                assert len(t["iscrowd"]) == len(want)
                assert t["labels"].tolist() == [0 if r[4] == 1 else 1 for r in want]
                assert [bool(v) for v in t["iscrowd"].tolist()] == [bool(r[5]) for r in want]
        assert sorted(ids) == sorted(keep)


def test_loader_masks_stacked(coco) -> None:
    uri, _ = coco
    loader = lancefeed.DataLoader(uri, 4, output="tuple", targets={"mask": "mask"}, transform=[lancefeed.RandomResizedCrop(32), lancefeed.RandomHorizontalFlip()])
    n = 0
    for images, masks in loader:
        assert masks.dtype == torch.uint8 and tuple(masks.shape) == (images.shape[0], 32, 32)
        assert set(torch.unique(masks).tolist()) <= {0, 1, 2, 3}
        n += images.shape[0]
    assert n == 14


def test_loader_resume_gives_the_same_batches(coco) -> None:
    uri, _ = coco
    kw = dict(output="detection", classes=["car", "bus"], drop_empty=True, shuffle=True, seed=4,
              transform=[lancefeed.RandomResizedCrop(40, scale=(0.5, 1.0)), lancefeed.RandomHorizontalFlip(), lancefeed.RandomRotation(15)])
    full = list(lancefeed.DataLoader(uri, 2, **kw))
    a = lancefeed.DataLoader(uri, 2, **kw)
    it = iter(a)
    next(it)
    next(it)
    state = a.state_dict()
    b = lancefeed.DataLoader(uri, 2, **{**kw, "seed": 99})
    b.load_state_dict(state)
    rest = list(b)
    assert len(rest) == len(full) - 2
    for (ia, ta), (ib, tb) in zip(full[2:], rest):
        for x, y in zip(ia, ib):
            assert torch.equal(x, y)
        for x, y in zip(ta, tb):
            assert torch.equal(x["boxes"], y["boxes"]) and torch.equal(x["labels"], y["labels"])
