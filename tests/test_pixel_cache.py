"""The pixel cache: whole decoded images kept between epochs, and the small-image resize.

What a user must see: a batch through the cache equals the same batch decoded from the
JPEG with ``decode_crop=False`` (empty cache, full cache, a budget that holds only some
rows, bad rows), in every epoch; the loader hands out epoch 0 as before and later
epochs as ``decode_crop=False`` does, whether the cache is on, off, or rebuilt after a
resume; small crops and resizes equal Pillow's ``resize(box=...)``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, List

import lance
import numpy as np
import PIL
import pyarrow as pa
import pytest
import torch
from PIL import Image

import lancefeed
from images import encode, photo
from lancefeed.loader.sampler import plan_epoch

N = 40


def images(n: int = N, seed: int = 0) -> List[bytes]:
    """Small photos in every JPEG flavour the cache must hold, and a PNG."""
    out = []
    for i in range(n):
        arr = photo(24 + (i % 5) * 3, 20 + (i % 4) * 5, seed=seed + i)
        kind = i % 5
        if kind == 0:
            out.append(encode(arr, "JPEG", quality=85))
        elif kind == 1:
            out.append(encode(arr, "JPEG", quality=90, subsampling=0))
        elif kind == 2:
            out.append(encode(arr, "JPEG", quality=80, progressive=True))
        elif kind == 3:
            out.append(encode(Image.fromarray(arr).convert("L"), "JPEG", quality=90))
        else:
            out.append(encode(arr, "PNG"))
    return out


TRANSFORMS = {
    "rrc-flip": lambda: lancefeed.Compose([lancefeed.RandomResizedCrop(20), lancefeed.RandomHorizontalFlip()]),
    # Shrinks by 2 or more: a JPEG is decoded at a DCT scale, so these rows bypass the cache.
    "rrc-small": lambda: lancefeed.RandomResizedCrop(8, scale=(0.9, 1.0)),
    "center-crop": lambda: lancefeed.CenterCrop(16),
    "resize-then-rotate": lambda: lancefeed.Compose([lancefeed.Resize((20, 20)), lancefeed.RandomRotation(20)]),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_cached_rows_equal_whole_decodes(name: str, mode: str) -> None:
    blobs = images()
    pos = np.arange(len(blobs))
    cache = lancefeed.PixelCache(len(blobs), 1 << 24, mode=mode)
    for epoch in range(3):  # fills the cache, then reads it
        kw: dict[str, Any] = dict(transform=TRANSFORMS[name](), mode=mode, seed=7, epoch=epoch, positions=pos)
        want = lancefeed.decode_batch(blobs, decode_crop=False, **kw)
        got = lancefeed.decode_batch(blobs, pixel_cache=cache, **kw)
        np.testing.assert_array_equal(got, want)
    # Every row is kept, except JPEGs that a shrinking crop decodes at a DCT scale.
    kept = [b for b in blobs if name != "rrc-small" or not b.startswith(b"\xff\xd8")]
    sizes = [Image.open(io.BytesIO(b)).size for b in kept]
    channels = 1 if mode == "L" else 3
    assert cache.cached == len(kept) == (len(blobs) if name != "rrc-small" else len(blobs) // 5)
    assert cache.nbytes == sum(w * h * channels for w, h in sizes)


def test_a_budget_keeps_some_rows_and_the_pixels_stay_the_same() -> None:
    blobs = images()
    pos = np.arange(len(blobs))
    first = Image.open(io.BytesIO(blobs[0])).size
    budget = first[0] * first[1] * 3 * 5  # room for about five rows
    cache = lancefeed.PixelCache(len(blobs), budget)
    tf = TRANSFORMS["rrc-flip"]()
    for epoch in range(2):
        want = lancefeed.decode_batch(blobs, transform=tf, seed=1, epoch=epoch, positions=pos, decode_crop=False)
        got = lancefeed.decode_batch(blobs, transform=tf, seed=1, epoch=epoch, positions=pos, pixel_cache=cache)
        np.testing.assert_array_equal(got, want)
    assert 0 < cache.cached < len(blobs)
    assert 0 < cache.nbytes <= budget


def test_bad_rows_fail_and_skip_as_without_the_cache() -> None:
    blobs: List[Any] = images(10)
    blobs[3] = b"\xff\xd8\xff\xe0 not really a jpeg"
    blobs[6] = None
    pos = np.arange(len(blobs))
    tf = lancefeed.RandomResizedCrop(16)
    cache = lancefeed.PixelCache(len(blobs), 1 << 24)
    for _ in range(2):
        want, want_info = lancefeed.decode_batch(blobs, transform=tf, positions=pos, decode_crop=False, on_error="skip", return_info=True)
        got, info = lancefeed.decode_batch(blobs, transform=tf, positions=pos, pixel_cache=cache, on_error="skip", return_info=True)
        np.testing.assert_array_equal(got, want)
        assert list(info.kept) == list(want_info.kept) == [0, 1, 2, 4, 5, 7, 8, 9]
        assert [r for r, _ in info.errors] == [3, 6]
    assert cache.cached == 8
    with pytest.raises(lancefeed.DecodeError, match="row 3"):
        lancefeed.decode_batch(blobs, transform=tf, positions=pos, pixel_cache=cache)


def test_the_cache_is_keyed_by_position_not_by_batch_row() -> None:
    blobs = images(12)
    cache = lancefeed.PixelCache(12, 1 << 24)
    tf = lancefeed.RandomResizedCrop(16)
    lancefeed.decode_batch(blobs, transform=tf, positions=np.arange(12), pixel_cache=cache)
    # Rows in another order, each under its own position: the same images come out.
    order = np.array([5, 0, 11, 3])
    got = lancefeed.decode_batch([blobs[i] for i in order], transform=tf, positions=order, pixel_cache=cache)
    want = lancefeed.decode_batch([blobs[i] for i in order], transform=tf, positions=order, decode_crop=False)
    np.testing.assert_array_equal(got, want)
    # A wrong key reads another row's pixels: the cache trusts positions, so they must be the rows'.
    wrong = lancefeed.decode_batch([blobs[0]], transform=lancefeed.Resize((16, 16)), positions=[1], pixel_cache=cache)
    right = lancefeed.decode_batch([blobs[1]], transform=lancefeed.Resize((16, 16)), decode_crop=False)
    np.testing.assert_array_equal(wrong, right)


def test_misuse_is_refused() -> None:
    blobs = images(2)
    cache = lancefeed.PixelCache(2, 1 << 20)
    with pytest.raises(ValueError, match="needs positions"):
        lancefeed.decode_batch(blobs, transform=lancefeed.CenterCrop(8), pixel_cache=cache)
    with pytest.raises(ValueError, match="holds RGB images"):
        lancefeed.decode_batch(blobs, transform=lancefeed.CenterCrop(8), mode="L", positions=[0, 1], pixel_cache=cache)
    with pytest.raises(ValueError, match="mode"):
        lancefeed.PixelCache(2, 1 << 20, mode="CMYK")
    assert repr(cache) == 'PixelCache(rows=2, cached=0, nbytes=0, max_bytes=1048576, mode="RGB")'


# --- the small-image resize is Pillow's -----------------------------------------------


# Non-square outputs include ones where Pillow 13 runs its vertical pass first (the
# height shrinks by more than twice what the width does).
PILLOW_13 = tuple(int(v) for v in PIL.__version__.split(".")[:1]) >= (13,)
ORDER = pytest.mark.skipif(not PILLOW_13, reason="Pillow before 13 always runs its horizontal pass first")


@pytest.mark.parametrize("size", [8, 17, 32, 48, 64, *(pytest.param(s, marks=ORDER) for s in [(20, 40), (40, 12), (8, 30), (30, 8)])])
def test_small_crops_resize_exactly_as_pillow(size: Any) -> None:
    h_out, w_out = (size, size) if isinstance(size, int) else size
    arrs = [photo(20 + 7 * i, 26 + 5 * i, seed=i) for i in range(6)]
    blobs = [encode(a, "PNG") for a in arrs]
    for seed in range(4):
        out, info = lancefeed.decode_batch(blobs, transform=lancefeed.RandomResizedCrop(size), seed=seed, return_info=True)
        for a, got, (top, left, h, w) in zip(arrs, out, info.boxes.tolist()):
            want = Image.fromarray(a).resize((w_out, h_out), Image.BILINEAR, box=(left, top, left + w, top + h))
            np.testing.assert_array_equal(got, np.asarray(want))


@pytest.mark.parametrize("size", [7, 17, 32, (20, 13), (9, 30)])
def test_small_crops_flipped_in_the_resize_equal_pillow_flipped(size: Any) -> None:
    # The flip is folded into the resize's horizontal pass (each pixel written at its
    # mirror's place): Pillow's resize of the box, then its flip, for odd and even widths,
    # RGB and gray, and with only a vertical pass (then the flip runs after the resize).
    h_out, w_out = (size, size) if isinstance(size, int) else size
    arrs = [photo(20 + 7 * i, 26 + 5 * i, seed=i) for i in range(6)]
    for mode in ("RGB", "L"):
        blobs = [encode(np.asarray(Image.fromarray(a).convert(mode)), "PNG") for a in arrs]
        tf = lancefeed.Compose([lancefeed.RandomResizedCrop(size), lancefeed.RandomHorizontalFlip()])
        out, info = lancefeed.decode_batch(blobs, transform=tf, seed=3, mode=mode, return_info=True)
        assert 0 < sum(info.flipped) < len(blobs)
        for a, got, (top, left, h, w), flip in zip(arrs, out, info.boxes.tolist(), info.flipped):
            want = Image.fromarray(a).convert(mode).resize((w_out, h_out), Image.BILINEAR, box=(left, top, left + w, top + h))
            want = np.asarray(want)[:, ::-1] if flip else np.asarray(want)
            np.testing.assert_array_equal(got.reshape(want.shape), want)
    # Width kept (no horizontal pass), height changed: the flip after the vertical pass.
    a = photo(24, 30, seed=9)
    blob = encode(a, "PNG")
    got = lancefeed.decode_batch([blob], transform=lancefeed.Compose([lancefeed.Resize((12, 24)), lancefeed.RandomHorizontalFlip(1.0)]))[0]
    np.testing.assert_array_equal(got, np.asarray(Image.fromarray(a).resize((24, 12), Image.BILINEAR))[:, ::-1])


def test_small_resize_weights_reused_across_boxes_sizes_and_axes() -> None:
    # Each thread keeps the weights of the boxes it resized before (by source size, box
    # edges and output size) and starts over past a thousand. On one thread, in turn:
    # boxes seen before, the same boxes at other output sizes and shapes, one side's
    # box as the other's, and over a thousand distinct ones (so the store starts over):
    # Pillow's pixels every time.
    arrs = [photo(w, h, seed=i) for i, (w, h) in enumerate([(40, 40), (44, 36), (52, 48), (33, 61), (37, 53)])]
    blobs = [encode(a, "PNG") for a in arrs]
    seen = set()
    for rnd in range(300):
        size = [16, 20, (16, 20), (20, 16), 24][rnd % 5]
        h_out, w_out = (size, size) if isinstance(size, int) else size
        # Seeds repeat every 150 rounds: the same boxes come back, at other sizes.
        out, info = lancefeed.decode_batch(
            blobs, transform=lancefeed.RandomResizedCrop(size), seed=rnd % 150, num_threads=1, return_info=True
        )
        for a, got, (top, left, h, w) in zip(arrs, out, info.boxes.tolist()):
            want = Image.fromarray(a).resize((w_out, h_out), Image.BILINEAR, box=(left, top, left + w, top + h))
            np.testing.assert_array_equal(got, np.asarray(want), err_msg=f"round {rnd}")
            seen.update({(a.shape[1], left, left + w, w_out), (a.shape[0], top, top + h, h_out)})
    assert len(seen) > 1024, len(seen)


def test_small_resize_of_one_axis_and_of_gray() -> None:
    a = photo(30, 24, seed=5)
    gray = np.asarray(Image.fromarray(a).convert("L"))
    for arr, mode in ((a, "RGB"), (gray, "L")):
        blob = encode(arr, "PNG")
        for w, h in ((30, 12), (13, 24), (40, 24), (30, 50), *(((26, 6), (12, 8)) if PILLOW_13 else ())):
            got = lancefeed.decode_batch([blob], transform=lancefeed.Resize((h, w)), mode=mode)[0]
            want = np.asarray(Image.fromarray(arr).resize((w, h), Image.BILINEAR))
            np.testing.assert_array_equal(got.reshape(want.shape), want)


# --- the loader -------------------------------------------------------------------------


def make_dataset(path: Path, n: int = N) -> str:
    blobs = [encode(photo(32, 32, seed=i), "JPEG", quality=85) for i in range(n)]
    table = pa.table({"image": pa.array(blobs, pa.binary()), "label": pa.array([i % 3 for i in range(n)], pa.int64())})
    uri = str(path / "small.lance")
    lance.write_dataset(table, uri, max_rows_per_file=16)
    return uri


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_dataset(tmp_path_factory.mktemp("pixels"))


def expected(uri: str, epoch: int, batch_size: int, transform: Any, decode_crop: bool) -> List[np.ndarray]:
    """The epoch's batches from decode_batch on the rows the plan names, written out."""
    ds = lance.dataset(uri)
    blobs = ds.to_table(columns=["image"]).column("image").to_pylist()
    plan = plan_epoch(len(blobs), batch_size=batch_size, shuffle=True, seed=3, epoch=epoch)
    return [
        lancefeed.decode_batch([blobs[p] for p in pos], transform=transform, seed=3, epoch=epoch, positions=pos, decode_crop=decode_crop)
        for _, pos in plan
    ]


def loader_epoch(loader: Any) -> List[np.ndarray]:
    return [x.numpy() for x, _ in loader]


def test_loader_epochs_with_and_without_the_cache(uri: str) -> None:
    tf = lancefeed.Compose([lancefeed.RandomResizedCrop(24, scale=(0.2, 0.6)), lancefeed.RandomHorizontalFlip()])
    cached = lancefeed.DataLoader(uri, 16, shuffle=True, seed=3, transform=tf)  # "auto": small rows
    off = lancefeed.DataLoader(uri, 16, shuffle=True, seed=3, transform=tf, pixel_cache=False)
    forced = lancefeed.DataLoader(uri, 16, shuffle=True, seed=3, transform=tf, cache=False, pixel_cache=True)
    for epoch in range(3):
        want = expected(uri, epoch, 16, tf, decode_crop=epoch == 0)
        for loader in (cached, forced):
            got = loader_epoch(loader)
            assert len(got) == len(want)
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)
        for g, w in zip(loader_epoch(off), expected(uri, epoch, 16, tf, decode_crop=True)):
            np.testing.assert_array_equal(g, w)
    assert cached.stats()["pixel_cache_rows"] == N
    assert cached.stats()["pixel_cache_bytes"] == N * 32 * 32 * 3
    assert off.stats()["pixel_cache_rows"] == 0
    # The decode-time crop and the whole-image crop do differ on these rows, somewhere:
    # otherwise the test above could not tell which one an epoch used.
    a, b = expected(uri, 1, 16, tf, True), expected(uri, 1, 16, tf, False)
    assert any(not np.array_equal(x, y) for x, y in zip(a, b))


def test_a_resumed_loader_hands_out_the_same_pixels(uri: str) -> None:
    tf = lancefeed.RandomResizedCrop(24, scale=(0.2, 0.6))
    whole = lancefeed.DataLoader(uri, 8, shuffle=True, seed=3, transform=tf)
    for _ in whole:
        pass
    it = iter(whole)
    first = [next(it)[0].numpy() for _ in range(2)]
    state = whole.state_dict()
    rest = [x.numpy() for x, _ in it]
    resumed = lancefeed.DataLoader(uri, 8, shuffle=True, seed=3, transform=tf)  # a fresh, empty cache
    resumed.load_state_dict(state)
    again = [x.numpy() for x, _ in resumed]
    assert len(first) + len(again) == len(first) + len(rest)
    for g, w in zip(again, rest):
        np.testing.assert_array_equal(g, w)


def test_pixel_cache_argument(uri: str) -> None:
    with pytest.raises(ValueError, match="pixel_cache must be"):
        lancefeed.DataLoader(uri, 8, pixel_cache="yes")
    big = lancefeed.DataLoader(uri, 8, cache=False)  # auto: no row cache, no pixel cache
    for _ in range(2):
        for _ in big:
            pass
    assert big.stats()["pixel_cache_rows"] == 0
    assert torch.is_tensor(next(iter(big))[0])


def test_the_docstring_example_runs() -> None:
    import doctest

    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(lancefeed.PixelCache, "PixelCache", globs={}):
        runner.run(test)
    assert runner.tries > 0 and runner.failures == 0


def test_cached_crops_equal_pillow_decode_and_resize() -> None:
    # Whole-image crops are Pillow's: its decode, its resize of the box, then the flip.
    blobs = [encode(photo(32, 32, seed=i), "JPEG", quality=80 + i % 3 * 5, subsampling=i % 2 * 2) for i in range(24)]
    pos = np.arange(len(blobs))
    cache = lancefeed.PixelCache(len(blobs), 1 << 24)
    tf = lancefeed.Compose([lancefeed.RandomResizedCrop(20), lancefeed.RandomHorizontalFlip()])
    for epoch in range(2):
        out, info = lancefeed.decode_batch(blobs, transform=tf, seed=5, epoch=epoch, positions=pos, pixel_cache=cache, return_info=True)
        for blob, got, (top, left, h, w), flip in zip(blobs, out, info.boxes.tolist(), info.flipped):
            want = Image.open(io.BytesIO(blob)).convert("RGB").resize((20, 20), Image.BILINEAR, box=(left, top, left + w, top + h))
            want = np.asarray(want)[:, ::-1] if flip else np.asarray(want)
            np.testing.assert_array_equal(got, want)
    assert cache.cached == len(blobs)


def test_the_portable_passes_equal_pillow_too() -> None:
    # Without AVX2 (forced here by the variable) the same crops come out of the plain loops.
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import io, numpy as np, lancefeed
        from PIL import Image
        from images import encode, photo
        arrs = [photo(24 + 5 * i, 30 + 3 * i, seed=i) for i in range(6)]
        blobs = [encode(a, "PNG") for a in arrs]
        for size in SIZES:
            h_out, w_out = (size, size) if isinstance(size, int) else size
            out, info = lancefeed.decode_batch(blobs, transform=lancefeed.RandomResizedCrop(size), seed=2, return_info=True)
            for a, got, (t, l, h, w) in zip(arrs, out, info.boxes.tolist()):
                want = np.asarray(Image.fromarray(a).resize((w_out, h_out), Image.BILINEAR, box=(l, t, l + w, t + h)))
                assert np.array_equal(got, want), size
        print("same")
        """
    )
    code = code.replace("SIZES", repr((16, 32, 48, (20, 40)) if PILLOW_13 else (16, 32, 48)))
    env = {**__import__("os").environ, "LANCEFEED_PORTABLE_RESIZE": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "same", done.stderr[-2000:]
