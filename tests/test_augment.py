"""Augmentation pipelines: torchvision's objects accepted as they are, the common ops run
in the core with torchvision's sampling and pixels, the rest per sample in Python."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import lancefeed
from images import jpeg, photo, encode
from lancefeed import _core

torch = pytest.importorskip("torch")
tv = pytest.importorskip("torchvision.transforms.v2")
F = pytest.importorskip("torchvision.transforms.v2.functional")
v1 = pytest.importorskip("torchvision.transforms")

BLOBS = [jpeg(96, 72, seed=s) for s in range(6)] + [encode(photo(80, 60, seed=9), "PNG")]


def chw(a: np.ndarray) -> "torch.Tensor":
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)


def hwc(t: "torch.Tensor") -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


def draws(position: int, op: int, n: int, seed: int = 0, epoch: int = 0) -> list[float]:
    return _core.random_uniforms(seed, epoch, position, op, n)


def lerp(lo: float, hi: float, u: float) -> float:
    """torch's ``uniform_(lo, hi)`` for a draw u: ``lo + u * (hi - lo)``."""
    return lo + u * (hi - lo)


# --- torchvision objects are accepted and mean what they mean in torchvision ----------


def test_split_fuses_the_leading_ops_and_keeps_the_rest():
    fused, rest, out = lancefeed.transforms.split(
        [tv.RandomResizedCrop(32), v1.RandomHorizontalFlip(), tv.ColorJitter(0.4, 0.4), tv.Lambda(lambda x: x), tv.RandomInvert(), tv.ToDtype(torch.float32, scale=True), tv.Normalize([0.5] * 3, [0.5] * 3)]
    )
    assert [type(t).__name__ for t in fused] == ["RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter"]
    assert [type(t).__name__ for t in rest] == ["Lambda", "RandomInvert"]
    assert [o.dtype for o in out] == ["float32", None] and out[1].mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("module", [tv, v1], ids=["v2", "v1"])
def test_a_torchvision_compose_equals_the_same_lancefeed_chain(module):
    ours = lancefeed.Compose([lancefeed.Resize(80), lancefeed.RandomResizedCrop(48, scale=(0.3, 1.0)), lancefeed.RandomHorizontalFlip(), lancefeed.RandomVerticalFlip(0.3)])
    theirs = module.Compose([module.Resize(80), module.RandomResizedCrop(48, scale=(0.3, 1.0)), module.RandomHorizontalFlip(), module.RandomVerticalFlip(0.3)])
    a = lancefeed.decode_batch(BLOBS, transform=ours, seed=3)
    b = lancefeed.decode_batch(BLOBS, transform=theirs, seed=3)
    np.testing.assert_array_equal(a, b)
    c = lancefeed.decode_batch(BLOBS, transform=theirs, seed=4)
    assert not np.array_equal(a, c)


def test_output_steps_give_torchvision_layout_and_values():
    t = tv.Compose([tv.CenterCrop(40), tv.ToImage(), tv.ToDtype(torch.float32, scale=True), tv.Normalize([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])])
    out = lancefeed.decode_batch(BLOBS, transform=t)
    base = lancefeed.decode_batch(BLOBS, transform=lancefeed.CenterCrop(40))
    want = F.normalize(torch.from_numpy(base).permute(0, 3, 1, 2).float() / 255, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3])
    assert out.shape == (len(BLOBS), 3, 40, 40) and out.dtype == np.float32
    np.testing.assert_allclose(out, want.numpy(), rtol=0, atol=1e-5)
    v1_out = lancefeed.decode_batch(BLOBS, transform=v1.Compose([v1.CenterCrop(40), v1.ToTensor()]))
    np.testing.assert_allclose(v1_out, torch.from_numpy(base).permute(0, 3, 1, 2).numpy() / 255.0, atol=1e-6)


# --- the slow path ------------------------------------------------------------------------


def test_a_lambda_and_an_unknown_torchvision_op_run_per_sample_with_one_warning():
    lancefeed.transforms.slow.reset_warnings()
    chain = tv.Compose([tv.CenterCrop(40), tv.Lambda(lambda x: 255 - x), tv.RandomChoice([tv.RandomRotation((90, 90))])])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = lancefeed.decode_batch(BLOBS, transform=chain)
        lancefeed.decode_batch(BLOBS, transform=chain)
    slow = [w for w in caught if issubclass(w.category, lancefeed.SlowPathWarning)]
    assert sorted(str(w.message).split()[0] for w in slow) == ["Lambda", "RandomChoice"]
    base = lancefeed.decode_batch(BLOBS, transform=lancefeed.CenterCrop(40))
    want = torch.stack([F.rotate(255 - chw(x), 90) for x in base])
    np.testing.assert_array_equal(out, want.numpy())


def test_lancefeed_ops_after_a_slow_one_keep_their_draws():
    # The same chain with a no-op lambda in the middle: ops after it run in the core on
    # the draws they would get without it, shifted by the lambda's index.
    plain = lancefeed.decode_batch(BLOBS, transform=lancefeed.Compose([lancefeed.CenterCrop(40), lancefeed.RandomRotation(30)]), seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slow = lancefeed.decode_batch(BLOBS, transform=lancefeed.Compose([lancefeed.CenterCrop(40), lambda x: x, lancefeed.RandomRotation(30)]), seed=2)
    assert slow.shape == (len(BLOBS), 3, 40, 40)
    # op index 2 instead of 1: other angles, same kind of image
    assert not np.array_equal(hwc(torch.from_numpy(slow[0])), plain[0])


def test_an_error_in_a_users_op_names_the_op_and_the_row():
    def broken(x):
        if x.float().mean() > 0:
            raise RuntimeError("boom")
        return x

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(lancefeed.TransformError, match=r"row \d+: transform broken raised RuntimeError: boom"):
            lancefeed.decode_batch(BLOBS, transform=lancefeed.Compose([lancefeed.CenterCrop(20), broken]))


def test_a_pil_only_op_gets_a_pil_image():
    from PIL import Image, ImageOps

    def mirror(img):
        if not isinstance(img, Image.Image):
            raise TypeError("img should be PIL Image")
        return ImageOps.mirror(img)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = lancefeed.decode_batch(BLOBS, transform=lancefeed.Compose([lancefeed.CenterCrop(20), mirror]))
    base = lancefeed.decode_batch(BLOBS, transform=lancefeed.CenterCrop(20))
    np.testing.assert_array_equal(out, torch.from_numpy(base[:, :, ::-1].copy()).permute(0, 3, 1, 2).numpy())


# --- parameters: torchvision's sampling on lancefeed's draws --------------------------------


def applied_params(transform, seed=0, blobs=BLOBS):
    _, info = lancefeed.decode_batch(blobs, transform=transform, seed=seed, return_info=True)
    return info.applied


def test_random_rotation_draws_its_angle_as_torchvision():
    got = applied_params(lancefeed.Compose([lancefeed.CenterCrop(40), lancefeed.RandomRotation((-25, 10), expand=False)]))
    for pos, applied in enumerate(got):
        (u,) = draws(pos, 1, 1)
        assert applied == [("rotate", [-25 + u * 35, 0.0, 0.0, 0.0, 0.0, 0.0])]


def test_random_affine_draws_as_torchvision():
    t = lancefeed.Compose([lancefeed.CenterCrop(40), lancefeed.RandomAffine(15, translate=(0.1, 0.2), scale=(0.8, 1.2), shear=(-5, 5, -3, 3))])
    for pos, applied in enumerate(applied_params(t)):
        u = draws(pos, 1, 6)
        angle = -15 + u[0] * 30
        tx = round(-4.0 + u[1] * 8.0)
        ty = round(-8.0 + u[2] * 16.0)
        scale = lerp(0.8, 1.2, u[3])
        sx, sy = -5 + u[4] * 10, -3 + u[5] * 6
        assert applied == [("affine", [angle, tx, ty, scale, sx, sy, 0.0, 0.0, 0.0, 0.0])]


def test_color_jitter_draws_order_and_factors_as_torchvision():
    t = lancefeed.Compose([lancefeed.CenterCrop(40), lancefeed.ColorJitter(0.4, 0.3, 0.2, 0.1)])
    for pos, applied in enumerate(applied_params(t)):
        u = draws(pos, 1, 8)
        order = sorted(range(4), key=lambda k: u[k])  # randperm(4) from four draws
        factors = [lerp(1 - 0.4, 1 + 0.4, u[4]), lerp(1 - 0.3, 1 + 0.3, u[5]), lerp(1 - 0.2, 1 + 0.2, u[6]), lerp(-0.1, 0.1, u[7])]
        names = ["brightness", "contrast", "saturation", "hue"]
        assert applied == [(names[k], [factors[k]]) for k in order]


def test_random_erasing_draws_as_torchvision():
    t = lancefeed.Compose([lancefeed.CenterCrop(40), lancefeed.RandomErasing(p=0.7, value=(10, 20, 30))])
    for pos, applied in enumerate(applied_params(t)):
        u = draws(pos, 1, 40)
        want = []
        if u[0] < 0.7:
            k = 1
            for _ in range(10):
                area = 1600 * lerp(0.02, 0.33, u[k])
                aspect = math.exp(lerp(math.log(0.3), math.log(3.3), u[k + 1]))
                k += 2
                h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
                if h < 40 and w < 40:
                    i = math.floor(u[k] * (40 - h + 1))
                    j = math.floor(u[k + 1] * (40 - w + 1))
                    want = [("erase", [i, j, h, w, 10.0, 20.0, 30.0])]
                    break
        assert applied == want


def test_trivial_augment_draws_from_torchvisions_space():
    space = list(tv.TrivialAugmentWide._AUGMENTATION_SPACE)
    t = lancefeed.Compose([lancefeed.CenterCrop(40), lancefeed.TrivialAugmentWide()])
    seen = set()
    for pos, applied in enumerate(applied_params(t, blobs=BLOBS * 8)):
        u = draws(pos, 1, 3)
        op = space[math.floor(u[0] * len(space))]
        seen.add(op)
        fn, signed = tv.TrivialAugmentWide._AUGMENTATION_SPACE[op]
        mags = fn(31, 40, 40)
        if mags is None:
            mag = 0.0
        else:
            mag = float(mags[math.floor(u[1] * 31)])
            if signed and u[2] <= 0.5:
                mag = -mag
        expected = {
            "Identity": [],
            "Brightness": [("brightness", [1.0 + mag])],
            "Color": [("saturation", [1.0 + mag])],
            "Contrast": [("contrast", [1.0 + mag])],
            "Sharpness": [("sharpness", [1.0 + mag])],
            "Posterize": [("posterize", [float(int(mag))])],
            "Solarize": [("solarize", [255.0 * mag])],
            "AutoContrast": [("autocontrast", [])],
            "Equalize": [("equalize", [])],
            "Rotate": [("rotate", [mag, 0.0, 0.0, 0.0, 0.0, 0.0])],
            "TranslateX": [("affine", [0.0, float(int(mag)), 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])],
            "TranslateY": [("affine", [0.0, 0.0, float(int(mag)), 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])],
            "ShearX": [("affine", [0.0, 0.0, 0.0, 1.0, math.degrees(math.atan(mag)), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])],
            "ShearY": [("affine", [0.0, 0.0, 0.0, 1.0, 0.0, math.degrees(math.atan(mag)), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])],
        }[op]
        assert [name for name, _ in applied] == [name for name, _ in expected], (op, applied)
        for (_, got), (_, want) in zip(applied, expected):
            assert got == pytest.approx(want, abs=1e-9), (op, applied)
    assert len(seen) >= 8


_AA_OPS = {
    "ShearX": "affine", "ShearY": "affine", "TranslateX": "affine", "TranslateY": "affine", "Rotate": "rotate",
    "Brightness": "brightness", "Color": "saturation", "Contrast": "contrast", "Sharpness": "sharpness",
    "Posterize": "posterize", "Solarize": "solarize", "AutoContrast": "autocontrast", "Equalize": "equalize",
    "Invert": "invert",
}


@pytest.mark.parametrize("policy", ["imagenet", "cifar10", "svhn"])
def test_auto_augment_runs_the_drawn_sub_policy_of_torchvisions_table(policy):
    table = tv.AutoAugment(tv.AutoAugmentPolicy(policy))._policies
    t = lancefeed.Compose([lancefeed.CenterCrop(40), lancefeed.AutoAugment(policy)])
    chosen = set()
    for pos, applied in enumerate(applied_params(t, blobs=BLOBS * 8)):
        k = math.floor(draws(pos, 1, 1)[0] * len(table))
        chosen.add(k)
        names = [_AA_OPS[op] for op, _, _ in table[k]]
        # Each sub-op runs with its own probability: what ran is the table's ops in order,
        # less some (a Rotate by 0 or an Invert at p=0 may leave no trace).
        it = iter(names)
        assert all(name in it for name, _ in applied), (policy, k, applied, names)
    assert len(chosen) >= 15


# --- pixels: the core's op against torchvision's functional, on the same parameters ---------


def replay(image: np.ndarray, applied) -> "torch.Tensor":
    """torchvision.transforms.v2.functional run on ``image`` with the parameters the core drew."""
    x = chw(image)
    for name, p in applied:
        if name == "rotate":
            x = F.rotate(x, p[0], interpolation=[tv.InterpolationMode.NEAREST, tv.InterpolationMode.BILINEAR][int(p[1])], expand=bool(p[2]), fill=list(p[3:6]))
        elif name == "affine":
            center = None if len(p) <= 10 else [p[10], p[11]]
            x = F.affine(x, angle=p[0], translate=[p[1], p[2]], scale=p[3], shear=[p[4], p[5]], interpolation=[tv.InterpolationMode.NEAREST, tv.InterpolationMode.BILINEAR][int(p[6])], fill=list(p[7:10]), center=center)
        elif name in ("brightness", "contrast", "saturation", "hue", "sharpness"):
            fn = {"brightness": F.adjust_brightness, "contrast": F.adjust_contrast, "saturation": F.adjust_saturation, "hue": F.adjust_hue, "sharpness": F.adjust_sharpness}[name]
            x = fn(x, p[0])
        elif name == "grayscale":
            x = F.rgb_to_grayscale(x, num_output_channels=x.shape[0])
        elif name in ("invert", "autocontrast", "equalize", "hflip", "vflip"):
            x = {"invert": F.invert, "autocontrast": F.autocontrast, "equalize": F.equalize, "hflip": F.horizontal_flip, "vflip": F.vertical_flip}[name](x)
        elif name == "posterize":
            x = F.posterize(x, int(p[0]))
        elif name == "solarize":
            x = F.solarize(x, p[0])
        elif name == "gaussian_blur":
            x = F.gaussian_blur(x, [int(p[0]), int(p[1])], [p[2], p[3]])
        elif name == "erase":
            x = F.erase(x, int(p[0]), int(p[1]), int(p[2]), int(p[3]), torch.tensor(p[4:], dtype=torch.float32)[:, None, None])
        elif name == "pad":
            mode = ["constant", "edge", "reflect", "symmetric"][int(p[4])]
            x = F.pad(x, [int(v) for v in p[:4]], fill=list(p[5:8]) if mode == "constant" else None, padding_mode=mode)
        else:
            raise AssertionError(name)
    return x


EXACT = {
    "invert": lancefeed.RandomInvert(1.0),
    "posterize": lancefeed.RandomPosterize(3, 1.0),
    "solarize": lancefeed.RandomSolarize(100, 1.0),
    "equalize": lancefeed.RandomEqualize(1.0),
    "autocontrast": lancefeed.RandomAutocontrast(1.0),
    "grayscale": lancefeed.Grayscale(3),
    "vflip": lancefeed.RandomVerticalFlip(1.0),
    "erasing": lancefeed.RandomErasing(1.0, value=(7, 8, 9)),
    "pad": lancefeed.Pad((3, 1, 2, 4), fill=(5, 6, 7)),
    "pad-reflect": lancefeed.Pad(2, padding_mode="reflect"),
}
CLOSE = {
    "color-jitter": lancefeed.ColorJitter(0.4, 0.4, 0.4, 0.1),
    "sharpness": lancefeed.RandomAdjustSharpness(1.8, 1.0),
    "blur": lancefeed.GaussianBlur(5, (0.5, 1.5)),
    "rotation": lancefeed.RandomRotation(25),
    "rotation-bilinear": lancefeed.RandomRotation(25, interpolation="bilinear", fill=(10, 20, 30)),
    "affine": lancefeed.RandomAffine(20, translate=(0.1, 0.1), scale=(0.8, 1.1), shear=8),
    "trivial-augment": lancefeed.TrivialAugmentWide(),
    "rand-augment": lancefeed.RandAugment(),
    "auto-augment": lancefeed.AutoAugment(),
    "auto-augment-cifar10": lancefeed.AutoAugment("cifar10"),
    "auto-augment-svhn": lancefeed.AutoAugment(tv.AutoAugmentPolicy.SVHN),
}


def pixels_and_reference(op, seed=0):
    base = lancefeed.decode_batch(BLOBS * 3, transform=lancefeed.CenterCrop(40), positions=range(21))
    out, info = lancefeed.decode_batch(BLOBS * 3, transform=lancefeed.Compose([lancefeed.CenterCrop(40), op]), seed=seed, return_info=True, positions=range(21))
    # A flip that leads the ops is fused into the decode and reported in info.vflipped.
    starts = [base[i][::-1].copy() if info.vflipped[i] else base[i] for i in range(len(base))]
    refs = [hwc(replay(starts[i], info.applied[i])) for i in range(len(base))]
    return out, refs


@pytest.mark.parametrize("name", sorted(EXACT))
def test_integer_ops_equal_torchvision_exactly(name):
    out, refs = pixels_and_reference(EXACT[name])
    for got, ref in zip(out, refs):
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("name", sorted(CLOSE))
def test_float_ops_are_within_one_level_of_torchvision(name):
    # These compute in float32 and round or truncate back to uint8, and a resampling
    # op's source coordinates land on pixel-centre ties differently by one ulp: a few
    # samples may differ by 1 level (bilinear), or take the neighbouring pixel
    # (nearest). The bounds are what such rounding allows; a wrong parameter or formula
    # gives tens of levels on most pixels (PSNR ~20 dB).
    # Which neighbour a tie goes to depends on torch's own float order, which differs by
    # release and CPU (torch 2.15 with torchvision 0.29.2 moved some ties), and a
    # policy's later op can amplify such a sample: Solarize after a ShearY of exactly 0.2
    # (ties on every fifth row) turns a neighbour's value into 255 minus it. So a policy
    # sample may differ in up to 3% of its values; a single op keeps the tight bounds.
    out, refs = pixels_and_reference(CLOSE[name])
    policy = isinstance(CLOSE[name], (lancefeed.AutoAugment, lancefeed.RandAugment, lancefeed.TrivialAugmentWide))
    for got, ref in zip(out, refs):
        diff = np.abs(got.astype(int) - ref.astype(int))
        mse = np.mean(diff.astype(float) ** 2)
        psnr = float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)
        if policy:
            assert np.mean(diff > 1) < 0.03, (name, np.mean(diff > 1))
        else:
            assert psnr >= 40, (name, psnr)
            assert np.mean(diff > 1) < 0.01, (name, np.mean(diff > 1))
    # A wrong parameter or formula moves most values, in every sample: over the batch the
    # policies stay as close as single ops.
    if policy:
        diff = np.abs(np.stack(out).astype(int) - np.stack(refs).astype(int))
        assert np.mean(diff > 1) < 0.01, (name, np.mean(diff > 1))


# --- determinism -------------------------------------------------------------------------------

CHAIN = lancefeed.Compose([lancefeed.RandomResizedCrop(40), lancefeed.RandomHorizontalFlip(), lancefeed.ColorJitter(0.4, 0.4, 0.4, 0.1), lancefeed.RandomRotation(15), lancefeed.TrivialAugmentWide(), lancefeed.RandomErasing(0.5)])


def test_threads_and_batch_splits_give_identical_bytes():
    one = lancefeed.decode_batch(BLOBS * 4, transform=CHAIN, num_threads=1, seed=5, epoch=2)
    two = lancefeed.decode_batch(BLOBS * 4, transform=CHAIN, num_threads=2, seed=5, epoch=2)
    np.testing.assert_array_equal(one, two)
    n = len(BLOBS) * 2
    a = lancefeed.decode_batch((BLOBS * 4)[:n], transform=CHAIN, seed=5, epoch=2)
    b = lancefeed.decode_batch((BLOBS * 4)[n:], transform=CHAIN, seed=5, epoch=2, positions=range(n, 2 * n))
    np.testing.assert_array_equal(np.concatenate([a, b]), one)
    other = lancefeed.decode_batch(BLOBS * 4, transform=CHAIN, seed=5, epoch=3)
    assert not np.array_equal(one, other)


def test_a_rotation_with_expand_gives_variable_sizes_that_must_agree():
    with pytest.raises(ValueError, match="different sizes"):
        lancefeed.decode_batch(BLOBS, transform=lancefeed.Compose([lancefeed.CenterCrop(40), lancefeed.RandomRotation(30, expand=True)]))
    out = lancefeed.decode_batch(BLOBS, transform=lancefeed.Compose([lancefeed.CenterCrop(40), lancefeed.RandomRotation((90, 90), expand=True), lancefeed.Resize((30, 30))]))
    assert out.shape == (len(BLOBS), 30, 30, 3)


# --- through the DataLoader ----------------------------------------------------------------


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    import lance
    import pyarrow as pa

    blobs = [jpeg(64, 48, seed=s) for s in range(20)]
    table = pa.table({"image": pa.array(blobs, pa.binary()), "label": pa.array([i % 4 for i in range(20)], pa.int64())})
    path = str(tmp_path_factory.mktemp("augment") / "ds.lance")
    lance.write_dataset(table, path)
    return path


def epoch(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_a_torchvision_training_pipeline_runs_unchanged_in_the_loader(uri):
    train = tv.Compose([tv.RandomResizedCrop(32), tv.RandomHorizontalFlip(), tv.ColorJitter(0.4, 0.4, 0.4), tv.ToImage(), tv.ToDtype(torch.float32, scale=True), tv.Normalize([0.5] * 3, [0.5] * 3)])
    loader = lancefeed.DataLoader(uri, batch_size=8, shuffle=True, seed=1, transform=train)
    batches = epoch(loader)
    assert [tuple(x.shape) for x, _ in batches] == [(8, 3, 32, 32), (8, 3, 32, 32), (4, 3, 32, 32)]
    assert all(x.dtype == torch.float32 and -1.0 <= x.min() and x.max() <= 1.0 for x, _ in batches)
    # The same as lancefeed's own chain with normalize=, which is what it was turned into.
    ours = lancefeed.DataLoader(uri, batch_size=8, shuffle=True, seed=1, normalize=([0.5] * 3, [0.5] * 3),
                                transform=lancefeed.Compose([lancefeed.RandomResizedCrop(32), lancefeed.RandomHorizontalFlip(), lancefeed.ColorJitter(0.4, 0.4, 0.4)]))
    for (a, la), (b, lb) in zip(batches, epoch(ours)):
        torch.testing.assert_close(a, b)
        assert torch.equal(la, lb)


def test_resume_with_photometric_ops_gives_the_same_batches(uri):
    chain = lancefeed.Compose([lancefeed.RandomResizedCrop(32), lancefeed.TrivialAugmentWide(), lancefeed.RandomErasing(0.5)])
    full = epoch(lancefeed.DataLoader(uri, batch_size=4, shuffle=True, seed=3, transform=chain, num_threads=2))
    first = lancefeed.DataLoader(uri, batch_size=4, shuffle=True, seed=3, transform=chain, num_threads=1)
    it = iter(first)
    next(it), next(it)
    state = first.state_dict()
    it.close()
    resumed = lancefeed.DataLoader(uri, batch_size=4, shuffle=True, seed=3, transform=chain)
    resumed.load_state_dict(state)
    rest = epoch(resumed)
    for (a, la), (b, lb) in zip(full[2:], rest):
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_the_slow_path_in_the_loader_names_the_row(uri):
    def picky(x):
        if int(x.float().mean()) % 7 == 3:
            raise ValueError("not this one")
        return x

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader = lancefeed.DataLoader(uri, batch_size=20, transform=tv.Compose([tv.CenterCrop(16), picky]))
        with pytest.raises(lancefeed.TransformError, match=r"row \d+: transform picky raised ValueError: not this one"):
            for _ in loader:
                pass


def test_batch_transform_gets_images_and_labels(uri):
    train = tv.Compose([tv.CenterCrop(32), tv.ToDtype(torch.float32, scale=True), tv.Normalize([0.5] * 3, [0.5] * 3)])
    loader = lancefeed.DataLoader(uri, batch_size=8, transform=train, batch_transform=tv.MixUp(num_classes=4))
    images, labels = next(iter(loader))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (8, 4) and torch.allclose(labels.sum(1), torch.ones(8))
    plain = next(iter(lancefeed.DataLoader(uri, batch_size=8, transform=train)))[0]
    assert not torch.equal(images, plain)  # mixed
    seen = []
    no_labels = lancefeed.DataLoader(uri, batch_size=8, label_column=None, batch_transform=lambda x: seen.append(x.shape) or x.flip(2))
    (flipped,) = next(iter(no_labels))
    raw = next(iter(lancefeed.DataLoader(uri, batch_size=8, label_column=None)))[0]
    assert seen == [raw.shape] and torch.equal(flipped, raw.flip(2))
    with pytest.raises(TypeError, match="batch_transform must be callable"):
        lancefeed.DataLoader(uri, batch_size=8, batch_transform="mixup")


def test_normalize_in_the_core_equals_torchs_pass():
    # The decode threads write (x * scale - shift) in float32 as torch's mul + sub_ do.
    from lancefeed.loader.staging import Normalize, normalize_batch

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    raw = lancefeed.decode_batch(BLOBS, transform=lancefeed.CenterCrop(40))
    want = normalize_batch(torch.from_numpy(raw), Normalize.of((mean, std), 3))
    planar = lancefeed.decode_batch(BLOBS, transform=lancefeed.CenterCrop(40), normalize=(mean, std))
    assert planar.shape == (len(BLOBS), 3, 40, 40) and planar.dtype == np.float32
    assert torch.equal(torch.from_numpy(planar), want)
    from lancefeed.decode.core import DecodeOptions, decode_images

    nhwc, _ = decode_images(BLOBS, lancefeed.TransformPlan.of(lancefeed.CenterCrop(40)),
                            DecodeOptions(normalize=(mean, std), channels_last=True).checked())
    assert torch.equal(torch.from_numpy(nhwc).permute(0, 3, 1, 2), want)
    gray = lancefeed.decode_batch(BLOBS, transform=lancefeed.CenterCrop(40), mode="L", normalize=([0.5], [0.5]))
    assert gray.shape == (len(BLOBS), 1, 40, 40)
    with pytest.raises(ValueError, match="1 or 1 values"):
        lancefeed.decode_batch(BLOBS, mode="L", transform=lancefeed.CenterCrop(4), normalize=(mean, std))


def test_slow_path_draws_follow_each_rows_position_when_rows_are_skipped():
    chain = lancefeed.Compose([lancefeed.CenterCrop(20), lambda x: x, lancefeed.RandomRotation(40)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = lancefeed.decode_batch(BLOBS, transform=chain, seed=1)
        skipped = lancefeed.decode_batch([b"junk"] + BLOBS, transform=chain, seed=1, on_error="skip")
    # Without positions a row's position is its index: the junk row shifts them by one.
    shifted = lancefeed.decode_batch(BLOBS, transform=chain, seed=1, positions=range(1, len(BLOBS) + 1))
    np.testing.assert_array_equal(skipped, shifted)
    assert not np.array_equal(whole, shifted)


def test_grayscale_to_one_channel_gives_one_channel_as_torchvision():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = lancefeed.decode_batch(BLOBS, transform=tv.Compose([tv.CenterCrop(20), tv.Grayscale(1)]))
    three = lancefeed.decode_batch(BLOBS, transform=tv.Compose([tv.CenterCrop(20), tv.Grayscale(3)]))
    base = lancefeed.decode_batch(BLOBS, transform=lancefeed.CenterCrop(20))
    assert one.shape == (len(BLOBS), 1, 20, 20) and three.shape == (len(BLOBS), 20, 20, 3)
    np.testing.assert_array_equal(one, F.rgb_to_grayscale(torch.from_numpy(base).permute(0, 3, 1, 2)).numpy())
    np.testing.assert_array_equal(three[..., 0], one[:, 0])
