"""Fused transforms: torchvision's parameters, Pillow's pixels, determinism."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

import lancefeed
from lancefeed import _core
from images import encode, jpeg, photo, psnr


def torchvision_rrc(height, width, scale, ratio, draws):
    """torchvision.transforms.RandomResizedCrop.get_params, written out, consuming
    uniform draws u in [0, 1) as uniform_(a, b) = a + u (b - a) and
    randint(0, n) = floor(u n)."""
    u = iter(draws)
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * (scale[0] + next(u) * (scale[1] - scale[0]))
        aspect_ratio = math.exp(log_ratio[0] + next(u) * (log_ratio[1] - log_ratio[0]))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = int(next(u) * (height - h + 1))
            j = int(next(u) * (width - w + 1))
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w = width
        h = height
    return (height - h) // 2, (width - w) // 2, h, w


SIZES = [(500, 375), (375, 500), (64, 48), (1000, 60), (33, 700)]  # (w, h); the last two hit the fallback


@pytest.mark.parametrize("scale,ratio", [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.5, 0.9), (0.2, 5.0)), ((0.9, 1.0), (1.0, 1.0))])
def test_random_resized_crop_parameters_match_torchvision(scale, ratio):
    blobs = [jpeg(w, h, seed=i) for i, (w, h) in enumerate(SIZES)] * 8
    positions = np.arange(len(blobs)) * 7 + 3
    t = lancefeed.RandomResizedCrop(24, scale=scale, ratio=ratio)
    _, info = lancefeed.decode_batch(blobs, transform=t, seed=11, epoch=2, positions=positions, return_info=True)
    for k, pos in enumerate(positions):
        w, h = SIZES[k % len(SIZES)]
        draws = _core.random_uniforms(11, 2, int(pos), 0, 40)
        assert tuple(info.boxes[k]) == torchvision_rrc(h, w, scale, ratio, draws)


def test_flip_follows_its_draw_and_is_exact():
    blobs = [jpeg(80, 60, seed=i) for i in range(40)]
    t = lancefeed.Compose([lancefeed.RandomResizedCrop(32), lancefeed.RandomHorizontalFlip(0.5)])
    out, info = lancefeed.decode_batch(blobs, transform=t, seed=5, return_info=True)
    expected = [_core.random_uniforms(5, 0, i, 1, 1)[0] < 0.5 for i in range(40)]
    assert info.flipped.tolist() == expected
    assert 5 < sum(expected) < 35
    # The same boxes unflipped: the flip is an exact mirror of the output.
    plain, plain_info = lancefeed.decode_batch(blobs, transform=lancefeed.RandomResizedCrop(32), seed=5, return_info=True)
    np.testing.assert_array_equal(plain_info.boxes, info.boxes)
    for k in range(40):
        np.testing.assert_array_equal(out[k], plain[k, :, ::-1] if expected[k] else plain[k])


def reference(data: bytes, box, size, flip=False) -> np.ndarray:
    """The slow path: Pillow full decode, then crop+resize of the same box."""
    top, left, h, w = (float(v) for v in box)
    img = Image.open(io.BytesIO(data)).convert("RGB")
    out = img.resize((size[1], size[0]), Image.BILINEAR, box=(left, top, left + w, top + h))
    arr = np.asarray(out)
    return arr[:, ::-1] if flip else arr


def test_random_resized_crop_pixels_close_to_reference():
    # Decoding only the crop at a reduced DCT scale (>= the output size) then one
    # antialiased resize, against a full-size decode + resize of the same box: the
    # scaled IDCT is itself a good low-pass, so the two agree to >= 30 dB (typically
    # 35-45); a wrong box or misaligned crop region would give ~15 dB.
    blobs = [jpeg(500, 375, seed=i, quality=90) for i in range(12)]
    t = lancefeed.Compose([lancefeed.RandomResizedCrop(112), lancefeed.RandomHorizontalFlip()])
    out, info = lancefeed.decode_batch(blobs, transform=t, seed=1, return_info=True)
    scores = [psnr(out[k], reference(blobs[k], info.boxes[k], (112, 112), info.flipped[k])) for k in range(12)]
    assert min(scores) >= 30, scores
    exact = lancefeed.decode_batch(blobs, transform=t, seed=1, dct_scaling=False)
    scores = [psnr(exact[k], reference(blobs[k], info.boxes[k], (112, 112), info.flipped[k])) for k in range(12)]
    assert min(scores) >= 40, scores


def test_eval_path_close_to_sequential_pillow():
    # Resize(256) + CenterCrop(224) fused into one box, against Pillow doing both steps.
    data = jpeg(500, 375, seed=9)
    out = lancefeed.decode_batch([data], transform=lancefeed.Compose([lancefeed.Resize(256), lancefeed.CenterCrop(224)]))[0]
    img = Image.open(io.BytesIO(data)).convert("RGB").resize((341, 256), Image.BILINEAR)
    top, left = int(round((256 - 224) / 2)), int(round((341 - 224) / 2))
    ref = np.asarray(img.crop((left, top, left + 224, top + 224)))
    assert out.shape == (224, 224, 3)
    assert psnr(out, ref) >= 30


@pytest.mark.parametrize("w,h,size,expected", [(500, 375, 256, (256, 341)), (375, 500, 256, (341, 256)), (32, 32, 32, (32, 32)), (100, 30, 20, (20, 66))])
def test_resize_int_keeps_aspect_like_torchvision(w, h, size, expected):
    out = lancefeed.decode_batch([jpeg(w, h)], transform=lancefeed.Resize(size))
    assert out.shape[1:3] == expected


def test_resize_int_needs_one_size_per_batch():
    with pytest.raises(ValueError, match="come out at different sizes.*end the transform with a fixed size"):
        lancefeed.decode_batch([jpeg(40, 30), jpeg(30, 40)], transform=lancefeed.Resize(16))


def test_center_crop_larger_than_image_pads_with_zeros():
    arr = photo(20, 10, seed=2)
    data = encode(arr, "PNG")
    out = lancefeed.decode_batch([data], transform=lancefeed.CenterCrop((16, 24)))[0]
    assert out.shape == (16, 24, 3)
    np.testing.assert_array_equal(out[3:13, 2:22], arr)
    assert not out[:3].any() and not out[13:].any() and not out[:, :2].any() and not out[:, 22:].any()


def test_center_crop_png_is_exact():
    arr = photo(50, 40, seed=4)
    out = lancefeed.decode_batch([encode(arr, "PNG")], transform=lancefeed.CenterCrop(20))[0]
    np.testing.assert_array_equal(out, arr[10:30, 15:35])


def test_independent_of_threads_and_batch_split():
    blobs = [jpeg(120 + i, 90 + 2 * i, seed=i) for i in range(64)]
    t = lancefeed.Compose([lancefeed.RandomResizedCrop(48), lancefeed.RandomHorizontalFlip()])
    whole = lancefeed.decode_batch(blobs, transform=t, seed=7, epoch=1, num_threads=2)
    one = lancefeed.decode_batch(blobs, transform=t, seed=7, epoch=1, num_threads=1)
    halves = np.concatenate([
        lancefeed.decode_batch(blobs[:32], transform=t, seed=7, epoch=1, positions=range(32)),
        lancefeed.decode_batch(blobs[32:], transform=t, seed=7, epoch=1, positions=range(32, 64)),
    ])
    np.testing.assert_array_equal(whole, one)
    np.testing.assert_array_equal(whole, halves)
    other_epoch = lancefeed.decode_batch(blobs, transform=t, seed=7, epoch=2)
    assert not np.array_equal(whole, other_epoch)


def test_output_size():
    assert lancefeed.Compose([lancefeed.Resize(256), lancefeed.CenterCrop(224)]).output_size == (224, 224)
    assert lancefeed.Compose([lancefeed.Resize(32), lancefeed.RandomHorizontalFlip()]).output_size is None
    assert lancefeed.Resize((10, 20)).output_size == (10, 20)
    assert lancefeed.Compose([lancefeed.RandomResizedCrop((30, 40)), lancefeed.RandomHorizontalFlip()]).output_size == (30, 40)


def test_invalid_transforms_are_refused_when_built():
    # Any callable runs (the slow path, tests/test_augment.py); what cannot be called cannot.
    with pytest.raises(TypeError, match="transform item 42 is neither a transform nor callable"):
        lancefeed.Compose([lancefeed.Resize(8), 42])
    with pytest.raises(ValueError, match=r"scale must be \(min, max\) with 0 < min <= max"):
        lancefeed.RandomResizedCrop(8, scale=(0.9, 0.1))
    with pytest.raises(ValueError, match=r"ratio must be \(min, max\)"):
        lancefeed.RandomResizedCrop(8, ratio=(0, 1))
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        lancefeed.RandomHorizontalFlip(1.5)
    with pytest.raises(ValueError, match="Resize size must be positive"):
        lancefeed.Resize(0)
    with pytest.raises(ValueError, match="CenterCrop size must be an int or a"):
        lancefeed.CenterCrop((1, 2, 3))
    with pytest.raises(TypeError, match="neither a transform nor callable"):
        lancefeed.decode_batch([jpeg()], transform="flip")
