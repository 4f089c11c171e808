"""Geometric ops (rust/ops/warp.rs) against torchvision.transforms.v2.functional on
uint8 images: pad and flips exactly, affine and rotate to torchvision's rounding."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
import torchvision.transforms.v2.functional as F  # noqa: E402
from torchvision.transforms import InterpolationMode  # noqa: E402
from torchvision.transforms.v2.functional._geometry import _get_inverse_affine_matrix  # noqa: E402

from lancefeed import _core  # noqa: E402
from images import photo, psnr  # noqa: E402

MODES = ["constant", "edge", "reflect", "symmetric"]
INTERP = {0: InterpolationMode.NEAREST, 1: InterpolationMode.BILINEAR}


def gray(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An (H, W, 1) photo-like image."""
    rgb = photo(width, height, seed).astype(np.float32)
    return (rgb @ np.float32([0.299, 0.587, 0.114])).round().astype(np.uint8)[..., None]


IMAGES = {
    "64x48": photo(64, 48, 0),
    "37x29": photo(37, 29, 1),
    "gray37x29": gray(37, 29, 2),
    "gray50x50": gray(50, 50, 3),
    "9x5": photo(9, 5, 4),
    "1x1": photo(1, 1, 5),
}


def chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)


def hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).contiguous().numpy()


def tv_fill(img: np.ndarray, fill) -> list[float]:
    return [float(f) for f in fill[: img.shape[2]]]


def near_ties(matrix, w: int, h: int, ow: int, oh: int, tol: float = 1e-4) -> np.ndarray:
    """Output pixels whose exact source coordinate lies within `tol` of a half-pixel,
    where nearest rounding can go either way."""
    i, j = np.mgrid[0:oh, 0:ow].astype(np.float64)
    x, y = j - (ow - 1) / 2, i - (oh - 1) / 2
    ix = matrix[0] * x + matrix[1] * y + matrix[2] + w / 2 - 0.5
    iy = matrix[3] * x + matrix[4] * y + matrix[5] + h / 2 - 0.5
    return (np.abs(ix - np.floor(ix) - 0.5) < tol) | (np.abs(iy - np.floor(iy) - 0.5) < tol)


def assert_resampled(ours: np.ndarray, theirs: np.ndarray, interp: int, ties: np.ndarray, what: str) -> None:
    assert ours.shape == theirs.shape, what
    if interp == 0:
        # Nearest copies pixels, so it agrees exactly unless a source coordinate sits on
        # a tie between two pixels (frequent for half-pixel shifts and quarter turns of
        # odd by even images): there the last bit of torch's float32 arithmetic decides.
        # warp.rs repeats that arithmetic (no FMA in the grid, FMA in grid_sample, as
        # torch's AVX2/AVX-512 kernels), but another torch build or CPU rounds some ties
        # the other way (torch 2.15 on an AVX-512 host: 3-5% of the pixels of a 45-degree
        # shear, where every pixel is a tie), hence: differences only at ties, and few of
        # those (a half-pixel error would move every tie).
        differ = (ours != theirs).any(axis=2)
        assert not (differ & ~ties).any(), f"{what}: {int((differ & ~ties).sum())} pixels differ away from ties"
        bound = max(0.005 * differ.size, 0.1 * ties.sum())
        assert differ.sum() <= bound, f"{what}: {int(differ.sum())} of {differ.size} pixels differ ({int(ties.sum())} ties)"
    else:
        # Bilinear: the same float32 operations, so equal here; a build that rounds
        # differently moves a value by one at most.
        diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
        assert (diff > 1).mean() < 0.001, f"{what}: {int((diff > 1).sum())} values differ by more than 1"
        assert psnr(ours, theirs) >= 45, f"{what}: PSNR {psnr(ours, theirs):.1f} dB"


# --- flips and pad: exact ----------------------------------------------------------


@pytest.mark.parametrize("key", IMAGES)
def test_flips_exact(key):
    img = IMAGES[key]
    assert np.array_equal(_core.apply_op(img, "hflip", []), hwc(F.horizontal_flip(chw(img))))
    assert np.array_equal(_core.apply_op(img, "vflip", []), hwc(F.vertical_flip(chw(img))))


PADS = [
    (0, 0, 0, 0),
    (1, 1, 1, 1),
    (2, 0, 0, 1),
    (0, 3, 5, 0),
    (4, 2, 3, 1),
    (8, 4, 8, 4),
    (36, 28, 36, 28),
    (-1, 0, 0, 0),
    (-3, -2, 4, 1),
    (0, -5, 0, 6),
    (5, -1, -2, 0),
    (-36, 0, 0, -28),
    (-37, 0, 0, 0),
    (40, 0, 0, 0),
    (0, 0, 0, 29),
    (-20, 0, -20, 0),
]


@pytest.mark.parametrize("mode", range(4))
@pytest.mark.parametrize("key", ["37x29", "gray37x29", "9x5", "1x1"])
def test_pad_exact(key, mode):
    img = IMAGES[key]
    for pad, fill in itertools.product(PADS, [(0, 0, 0), (255, 255, 255), (7, 130, 251), (12.7, 0.4, 254.99)]):
        if MODES[mode] != "constant":
            fill = (fill[0],)  # torchvision takes only a single fill for these modes
        what = f"{key} pad {pad} {MODES[mode]} fill {fill}"
        try:
            want = hwc(F.pad(chw(img), list(pad), fill=tv_fill(img, fill), padding_mode=MODES[mode]))
        except (RuntimeError, IndexError, ValueError):
            with pytest.raises(ValueError):
                _core.apply_op(img, "pad", [*pad, mode, *fill])
            continue
        got = _core.apply_op(img, "pad", [*pad, mode, *fill])
        assert got.shape == want.shape, what
        assert np.array_equal(got, want), what


def test_pad_single_fill_on_rgb():
    img = IMAGES["9x5"]
    got = _core.apply_op(img, "pad", [2, 1, 0, 3, 0, 77.9])
    assert np.array_equal(got, hwc(F.pad(chw(img), [2, 1, 0, 3], fill=77.9)))


# --- affine and rotate: to torchvision's rounding ----------------------------------

ANGLES = [-180, -135, -90, -60.25, -45, -20.5, -1, 0, 0.5, 1e-3, 20.5, 45, 60, 90, 133.7, 179.9, 180]
TRANSLATES = [(0, 0), (3, -2), (0.25, 0.75), (-7.3, 4.6), (1.5, -0.5), (40, 0)]
SCALES = [0.5, 0.8, 1.0, 1.3, 2.0]
SHEARS = [(0, 0), (10, 0), (0, -15), (20.5, 12), (-30, 5), (45, -45)]
FILLS = [(0, 0, 0), (255, 255, 255), (12, 200, 77), (127.6, 3.2, 250.5)]


def affine_cases(n: int, seed: int):
    """Every angle with each other factor neutral, then `n` random combinations."""
    cases = [(a, (0, 0), 1.0, (0, 0), FILLS[i % len(FILLS)]) for i, a in enumerate(ANGLES)]
    cases += [(0, t, 1.0, (0, 0), FILLS[2]) for t in TRANSLATES]
    cases += [(0, (0, 0), s, (0, 0), FILLS[3]) for s in SCALES]
    cases += [(0, (0, 0), 1.0, sh, FILLS[1]) for sh in SHEARS]
    rng = np.random.default_rng(seed)
    for _ in range(n):
        angle = ANGLES[rng.integers(len(ANGLES))] if rng.random() < 0.5 else float(rng.uniform(-180, 180))
        t = TRANSLATES[rng.integers(len(TRANSLATES))]
        scale = SCALES[rng.integers(len(SCALES))] if rng.random() < 0.5 else float(rng.uniform(0.5, 2))
        shear = SHEARS[rng.integers(len(SHEARS))] if rng.random() < 0.5 else tuple(rng.uniform(-40, 40, 2))
        cases.append((angle, t, scale, shear, FILLS[rng.integers(len(FILLS))]))
    return cases


@pytest.mark.parametrize("interp", [0, 1])
@pytest.mark.parametrize("key", ["64x48", "37x29", "gray37x29", "gray50x50", "9x5", "1x1"])
def test_affine(key, interp):
    img = IMAGES[key]
    h, w = img.shape[:2]
    for angle, t, scale, shear, fill in affine_cases(60, seed=len(key) + interp):
        what = f"{key} affine angle={angle} translate={t} scale={scale} shear={shear} fill={fill} interp={interp}"
        want = hwc(
            F.affine(
                chw(img), angle=angle, translate=list(t), scale=scale, shear=list(shear),
                interpolation=INTERP[interp], fill=tv_fill(img, fill),
            )
        )
        got = _core.apply_op(img, "affine", [angle, *t, scale, *shear, interp, *fill])
        matrix = _get_inverse_affine_matrix([0.0, 0.0], angle, [float(v) for v in t], scale, list(shear))
        assert_resampled(got, want, interp, near_ties(matrix, w, h, w, h), what)


@pytest.mark.parametrize("interp", [0, 1])
def test_affine_center(interp):
    img = IMAGES["37x29"]
    h, w = img.shape[:2]
    for center, (angle, shear) in itertools.product([(0, 0), (10.5, 3), (36, 28)], [(30, (0, 0)), (0, (17, 0)), (-12, (5, -9))]):
        want = hwc(
            F.affine(
                chw(img), angle=angle, translate=[1, 2], scale=1.1, shear=list(shear),
                interpolation=INTERP[interp], fill=[1.0, 2.0, 3.0], center=list(center),
            )
        )
        got = _core.apply_op(img, "affine", [angle, 1, 2, 1.1, *shear, interp, 1, 2, 3, *center])
        cf = [c - s * 0.5 for c, s in zip(center, [w, h])]
        matrix = _get_inverse_affine_matrix(cf, angle, [1.0, 2.0], 1.1, list(shear))
        assert_resampled(got, want, interp, near_ties(matrix, w, h, w, h), f"center {center} angle {angle} shear {shear}")


ROTATIONS = [-180, -179.5, -135, -90, -45, -20.5, -0.1, 0, 1e-4, 7, 20.5, 30, 45, 89.9, 90, 90.1, 135, 180, 270, 300.2, 359.99, 360, 450]


@pytest.mark.parametrize("expand", [0, 1])
@pytest.mark.parametrize("interp", [0, 1])
@pytest.mark.parametrize("key", ["64x48", "37x29", "gray37x29", "gray50x50", "9x5", "1x1"])
def test_rotate(key, interp, expand):
    img = IMAGES[key]
    h, w = img.shape[:2]
    for k, angle in enumerate(ROTATIONS):
        fill = FILLS[k % len(FILLS)]
        what = f"{key} rotate {angle} interp={interp} expand={expand} fill={fill}"
        want = hwc(F.rotate(chw(img), angle, interpolation=INTERP[interp], expand=bool(expand), fill=tv_fill(img, fill)))
        got = _core.apply_op(img, "rotate", [angle, interp, expand, *fill])
        assert got.shape == want.shape, what
        matrix = _get_inverse_affine_matrix([0.0, 0.0], -(angle % 360), [0.0, 0.0], 1.0, [0.0, 0.0])
        assert_resampled(got, want, interp, near_ties(matrix, w, h, want.shape[1], want.shape[0]), what)


def test_rotate_quarter_turns_are_exact():
    # torchvision's shortcuts: 180 always, 90 and 270 when expanding or square.
    for key in ["64x48", "gray37x29", "gray50x50"]:
        img = IMAGES[key]
        for angle, expand in [(90, 1), (-90, 1), (270, 1), (180, 0), (-180, 1), (0, 0), (360, 1)]:
            got = _core.apply_op(img, "rotate", [angle, 1, expand, 5])
            assert np.array_equal(got, hwc(F.rotate(chw(img), angle, expand=bool(expand))))
            assert np.array_equal(got, np.rot90(img, k=(angle // 90) % 4))


def test_larger_image():
    img = photo(203, 151, 7)
    for angle, t, scale, shear, interp in [(33.3, (5.5, -3.25), 1.2, (7, -4), 1), (-71, (0, 0), 0.7, (0, 0), 0), (12, (-2.75, 0), 1.6, (0, 22), 0)]:
        want = hwc(F.affine(chw(img), angle=angle, translate=list(t), scale=scale, shear=list(shear), interpolation=INTERP[interp], fill=[9.0, 99.0, 199.0]))
        got = _core.apply_op(img, "affine", [angle, *t, scale, *shear, interp, 9, 99, 199])
        matrix = _get_inverse_affine_matrix([0.0, 0.0], angle, [float(v) for v in t], scale, list(shear))
        assert_resampled(got, want, interp, near_ties(matrix, 203, 151, 203, 151), f"203x151 {angle} {interp}")
    for angle, interp in [(17, 0), (-123.4, 1)]:
        want = hwc(F.rotate(chw(img), angle, interpolation=INTERP[interp], expand=True, fill=[3.0, 4.0, 5.0]))
        got = _core.apply_op(img, "rotate", [angle, interp, 1, 3, 4, 5])
        matrix = _get_inverse_affine_matrix([0.0, 0.0], -(angle % 360), [0.0, 0.0], 1.0, [0.0, 0.0])
        assert_resampled(got, want, interp, near_ties(matrix, 203, 151, want.shape[1], want.shape[0]), f"rotate {angle}")


@pytest.mark.parametrize(
    "name, params",
    [
        ("affine", [10, 0, 0, 0, 0, 0, 0]),  # scale 0
        ("affine", [10, 0, 0, -1, 0, 0, 1]),
        ("affine", [10, 0, 0, 1, 0, 0]),  # no interpolation
        ("affine", [float("nan"), 0, 0, 1, 0, 0, 0]),
        ("affine", [10, 0, 0, 1, 0, 0, 0, 300]),
        ("affine", [10, 0, 0, 1, 0, 0, 0, 1, 2]),
        ("rotate", [10]),
        ("rotate", [10, 0, 0, -2]),
        ("pad", [1, 1, 1]),
        ("pad", [1.5, 0, 0, 0, 0]),
        ("pad", [1, 0, 0, 0, 4]),
        ("pad", [40, 0, 0, 0, 2]),  # reflect wider than the image
        ("hflip", [1]),
    ],
)
def test_bad_parameters(name, params):
    with pytest.raises(ValueError):
        _core.apply_op(IMAGES["37x29"], name, params)
