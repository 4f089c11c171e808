"""Decode core: pixels against Pillow, bad input, buffers, threads and fork."""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import lancefeed
from images import encode, jpeg, jpegtran, photo, pillow_rgb, png, png_header_only, psnr

ARR = photo(67, 45, seed=3)  # odd sizes: partial MCUs, odd chroma


# --- JPEG: every variant equals Pillow's decode exactly (same libjpeg-turbo) ----------

JPEG_VARIANTS = {
    "baseline-420": lambda: encode(ARR, "JPEG", quality=85),
    "baseline-444": lambda: encode(ARR, "JPEG", quality=95, subsampling=0),
    "baseline-422": lambda: encode(ARR, "JPEG", quality=75, subsampling=1),
    "progressive": lambda: encode(ARR, "JPEG", quality=85, progressive=True),
    "grayscale": lambda: encode(Image.fromarray(ARR).convert("L"), "JPEG", quality=90),
    "cmyk": lambda: encode(Image.fromarray(ARR).convert("CMYK"), "JPEG", quality=90),
    "restart-markers": lambda: jpegtran(encode(ARR, "JPEG", quality=85), "-restart", "1B"),
    "arithmetic": lambda: jpegtran(encode(ARR, "JPEG", quality=85), "-arithmetic"),
    "optimized-huffman": lambda: encode(ARR, "JPEG", quality=85, optimize=True),
}


@pytest.mark.parametrize("variant", sorted(JPEG_VARIANTS))
def test_jpeg_variants_equal_pillow(variant):
    data = JPEG_VARIANTS[variant]()
    assert lancefeed.image_info(data) == (67, 45, "jpeg")
    np.testing.assert_array_equal(lancefeed.decode_image(data), pillow_rgb(data))


@pytest.mark.parametrize("variant", ["baseline-420", "grayscale", "progressive"])
def test_jpeg_mode_L_equals_pillow(variant):
    data = JPEG_VARIANTS[variant]()
    ref = np.asarray(Image.open(__import__("io").BytesIO(data)).convert("L"))
    out = lancefeed.decode_image(data, mode="L")
    assert out.shape == (45, 67, 1)
    np.testing.assert_array_equal(out[..., 0], ref)


# --- PNG -------------------------------------------------------------------------------

RGBA = np.dstack([ARR, (np.arange(67 * 45) % 256).reshape(45, 67).astype(np.uint8)])
GRAY = ARR[..., 0]
PNG_VARIANTS = {
    "rgb8": lambda: encode(ARR, "PNG"),
    "rgba8": lambda: encode(RGBA, "PNG"),
    "gray8": lambda: encode(GRAY, "PNG"),
    "gray-alpha8": lambda: encode(Image.fromarray(RGBA).convert("LA"), "PNG"),
    "palette": lambda: encode(Image.fromarray(ARR).quantize(64), "PNG"),
    "palette-trns": lambda: encode(Image.fromarray(ARR).quantize(16), "PNG", transparency=3),
    "rgb-trns": lambda: encode(ARR, "PNG", transparency=(10, 20, 30)),
    "1bit": lambda: encode(Image.fromarray(GRAY).convert("1"), "PNG"),
    "rgb16": lambda: png(ARR.astype(np.uint16) * 257 + 3),
    "rgba16": lambda: png(RGBA.astype(np.uint16) * 256),
    "interlaced-rgb8": lambda: png(ARR, interlace=True),
    "interlaced-gray8": lambda: png(GRAY, interlace=True),
}


def _trailer_variants() -> dict[str, bytes]:
    """JPEGs whose scan is whole but whose end is not: what cameras, editors and copies
    cut short leave behind. Pillow returns the whole image where nothing but data after
    the last scanline is missing, and refuses a marker that is there but wrong."""
    out = {}
    for name, base in (("baseline", jpeg(64, 48, seed=1)), ("progressive", jpeg(64, 48, seed=2, progressive=True)),
                       ("gray-restart", jpegtran(encode(photo(40, 40)[..., 0], "JPEG", quality=90), "-restart", "1"))):
        assert base[-2:] == b"\xff\xd9"
        out.update({
            f"{name}-no-eoi": base[:-2],
            f"{name}-eoi-ff-flipped": base[:-2] + b"\xfe\xd9",
            f"{name}-eoi-as-dqt": base[:-1] + b"\xdb",
            f"{name}-eoi-as-rst": base[:-1] + b"\xd0",
            f"{name}-eoi-as-soi": base[:-1] + b"\xd8",
            f"{name}-eoi-unknown": base[:-1] + b"\x59",
            f"{name}-bogus-dht-after-scan": base[:-2] + b"\xff\xc4\x00\x03\x00\xff\xd9",
            f"{name}-app1-after-scan": base[:-2] + b"\xff\xe1\x00\x04ab\xff\xd9",
            f"{name}-garbage-after-eoi": base + b"garbage!",
            f"{name}-cut-in-the-scan": base[: len(base) * 2 // 3],
        })
    return out


TRAILERS = _trailer_variants()


@pytest.mark.parametrize("variant", sorted(TRAILERS))
def test_damaged_trailing_markers_read_as_pillow_reads_them(variant: str) -> None:
    import io

    from PIL import ImageFile

    data = TRAILERS[variant]
    for pad in (False, True):
        ImageFile.LOAD_TRUNCATED_IMAGES = pad
        try:
            want = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        except OSError:
            want = None
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        truncated = "pad" if pad else "error"
        if want is None:
            with pytest.raises(lancefeed.DecodeError):
                lancefeed.decode_image(data, truncated=truncated)
            continue
        try:
            got = lancefeed.decode_image(data, truncated=truncated)
        except lancefeed.DecodeError:
            # Pillow hands back an image it never decoded (a progressive file whose
            # scans end in a bad marker: all zeros, with LOAD_TRUNCATED_IMAGES): an error here.
            assert pad and variant.startswith("progressive") and want.max() == 0, f"truncated={truncated!r}: refused what Pillow reads"
            continue
        assert np.array_equal(got, want), f"truncated={truncated!r}"


@pytest.mark.parametrize("variant", sorted(PNG_VARIANTS))
def test_png_variants_equal_pillow(variant):
    data = PNG_VARIANTS[variant]()
    assert lancefeed.image_info(data) == (67, 45, "png")
    np.testing.assert_array_equal(lancefeed.decode_image(data), pillow_rgb(data))


def test_png_16bit_gray_is_high_byte():
    # Pillow opens 16-bit gray as I;16 and its convert("RGB") clips at 255, which
    # whitens the image; the right 8-bit value is the high byte (value >> 8).
    values = (np.arange(67 * 45, dtype=np.uint32).reshape(45, 67) * 21).astype(np.uint16)
    out = lancefeed.decode_image(png(values))
    expected = (values >> 8).astype(np.uint8)
    np.testing.assert_array_equal(out, np.repeat(expected[..., None], 3, axis=2))
    np.testing.assert_array_equal(lancefeed.decode_image(png(values), mode="L")[..., 0], expected)


def test_png_16bit_gray_alpha_interlaced():
    la = np.dstack([GRAY.astype(np.uint16) * 257, np.full_like(GRAY, 7, dtype=np.uint16)])
    out = lancefeed.decode_image(png(la, interlace=True))
    np.testing.assert_array_equal(out, np.repeat(GRAY[..., None], 3, axis=2))


# --- WebP ------------------------------------------------------------------------------


def test_webp_lossless_equals_pillow():
    for arr in (ARR, RGBA):
        data = encode(arr, "WEBP", lossless=True)
        assert lancefeed.image_info(data) == (67, 45, "webp")
        np.testing.assert_array_equal(lancefeed.decode_image(data), pillow_rgb(data))


def test_webp_lossy_close_to_pillow():
    # Lossy WebP: image-webp and libwebp upsample chroma differently, so pixels
    # differ slightly; we require >= 35 dB PSNR against Pillow (libwebp).
    for arr in (ARR, RGBA):
        data = encode(arr, "WEBP", quality=90)
        out = lancefeed.decode_image(data)
        assert psnr(out, pillow_rgb(data)) >= 35


# --- resize ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(32, 32), (20, 50), (90, 130)])
def test_resize_close_to_pillow_bilinear(size):
    # fast_image_resize's bilinear convolution is Pillow's algorithm; rounding of the
    # fixed-point intermediate differs by at most 1 or 2 levels per pixel.
    data = encode(ARR, "PNG")
    h, w = size
    ref = np.asarray(Image.open(__import__("io").BytesIO(data)).convert("RGB").resize((w, h), Image.BILINEAR))
    out = lancefeed.decode_batch([data], size=size)[0]
    assert out.shape == (h, w, 3)
    diff = np.abs(out.astype(int) - ref.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.5


def test_jpeg_resize_with_and_without_dct_scaling():
    # A 4x downscale: with DCT scaling the JPEG is decoded at 1/4 scale first. Without
    # it, full decode + resize matches Pillow's to 2 levels; with it, >= 32 dB.
    data = jpeg(640, 480, seed=5)
    ref = np.asarray(Image.open(__import__("io").BytesIO(data)).convert("RGB").resize((160, 120), Image.BILINEAR))
    exact = lancefeed.decode_batch([data], size=(120, 160), dct_scaling=False)[0]
    assert np.abs(exact.astype(int) - ref.astype(int)).max() <= 2
    fast = lancefeed.decode_batch([data], size=(120, 160))[0]
    assert psnr(fast, ref) >= 32


# --- batches, buffers, threads -----------------------------------------------------------


def blobs(n: int = 12) -> list[bytes]:
    return [jpeg(60 + 7 * i, 40 + 5 * i, seed=i) for i in range(n)]


def test_batch_from_arrow_equals_list_and_single_decodes():
    items = blobs()
    ref = lancefeed.decode_batch(items, size=(32, 48))
    for arr in (pa.array(items, pa.binary()), pa.array(items, pa.large_binary()), pa.chunked_array([items[:5], items[5:]], pa.binary())):
        np.testing.assert_array_equal(lancefeed.decode_batch(arr, size=(32, 48)), ref)
    single = [lancefeed.decode_batch([b], size=(32, 48))[0] for b in items]
    np.testing.assert_array_equal(np.stack(single), ref)


def test_sliced_arrow_array_respects_offset():
    items = blobs(6)
    arr = pa.array(items, pa.binary()).slice(2, 3)
    np.testing.assert_array_equal(lancefeed.decode_batch(arr, size=(16, 16)), lancefeed.decode_batch(items[2:5], size=(16, 16)))


def test_without_size_all_images_must_match():
    same = [jpeg(40, 30, seed=i) for i in range(3)]
    out = lancefeed.decode_batch(same)
    np.testing.assert_array_equal(out, np.stack([pillow_rgb(b) for b in same]))
    with pytest.raises(lancefeed.SizeMismatchError, match=r"rows 0 and 1 come out at different sizes \(30x40 and 31x40\)"):
        lancefeed.decode_batch([jpeg(40, 30), jpeg(40, 31)])
    # decode_targets says it the same way; and it stays a ValueError for code that catches those.
    with pytest.raises(lancefeed.SizeMismatchError, match=r"rows 0 and 1 come out at different sizes \(30x40 and 31x40\)"):
        lancefeed.decode_targets([jpeg(40, 30), jpeg(40, 31)], boxes=[[[0, 0, 4, 4]], []])
    assert issubclass(lancefeed.SizeMismatchError, ValueError)
    # Other batch errors are not size mismatches.
    with pytest.raises(ValueError) as e:
        lancefeed.decode_batch(same, out=np.zeros((3, 8, 8, 3), np.uint8))
    assert not isinstance(e.value, lancefeed.SizeMismatchError)


def _outcome(items, **kw):
    try:
        out, info = lancefeed.decode_batch(items, return_info=True, **kw)
        return out, info.kept.tolist(), info.errors
    except (ValueError, lancefeed.DecodeError) as e:
        return type(e).__name__, str(e)


def test_sizes_read_in_parallel_end_as_read_first():
    # With several threads and a transform whose size depends on the image, the rows
    # are planned where they are decoded, on the first plannable row's size; every
    # outcome (pixels, kept rows, errors, which error wins) equals one thread's, which
    # reads every header first.
    a, b, tall = jpeg(40, 30, seed=1), jpeg(40, 30, seed=2), jpeg(40, 31, seed=3)
    bad = BAD["empty"][0]
    cases = [
        [a, b, a, b],                # one size
        [bad, a, b, bad, a],         # the first row does not plan
        [a, b, tall, b],             # a row of another size
        [a, bad, tall],              # a bad row before another size
        [a, tall, bad],              # another size before a bad row
        [bad, bad],                  # nothing plans
    ]
    for items in cases:
        for kw in ({}, {"on_error": "skip"}, {"transform": lancefeed.Resize(20)}, {"transform": lancefeed.Resize(20), "on_error": "skip"}):
            one = _outcome(items, num_threads=1, **kw)
            two = _outcome(items, num_threads=2, **kw)
            assert type(one) is type(two) and len(one) == len(two), (items, kw)
            if isinstance(one[0], str):
                assert one == two
            else:
                np.testing.assert_array_equal(one[0], two[0])
                assert one[1:] == two[1:]
    # The caller's buffer may have fewer rows than the batch when some are skipped.
    out = np.zeros((2, 30, 40, 3), np.uint8)
    got = lancefeed.decode_batch([bad, a, b], out=out, on_error="skip", num_threads=2)
    np.testing.assert_array_equal(got, np.stack([pillow_rgb(a), pillow_rgb(b)]))


def test_order_on_an_arrow_array_picks_rows_where_they_are():
    items = blobs(6)
    # An offset (a slice) and a null: the picked rows are read where they are.
    arr = pa.array([None] + items, pa.binary()).slice(1, 6)
    arr_null = pa.array(items[:2] + [None] + items[3:], pa.binary())
    order = [5, 0, 3, 3]
    want = lancefeed.decode_batch([items[i] for i in order], size=(16, 16))
    np.testing.assert_array_equal(lancefeed.decode_batch(arr, size=(16, 16), order=order), want)
    out, info = lancefeed.decode_batch(arr_null, size=(16, 16), order=[2, 4], on_error="skip", return_info=True)
    assert info.kept.tolist() == [1] and info.errors[0][0] == 0
    np.testing.assert_array_equal(out[0], lancefeed.decode_batch([items[4]], size=(16, 16))[0])
    with pytest.raises(IndexError, match="order holds 6, out of range for 6 images"):
        lancefeed.decode_batch(arr, size=(16, 16), order=[0, 6])


def test_owned_buffer_is_shared_not_copied():
    torch = pytest.importorskip("torch")
    out = lancefeed.decode_batch(blobs(4), size=(16, 16))
    assert out.flags.c_contiguous and not out.flags.owndata and out.base is not None
    t = torch.from_numpy(out)
    assert t.data_ptr() == out.ctypes.data
    t[0, 0, 0, 0] = 7
    assert out[0, 0, 0, 0] == 7


def test_out_is_filled_in_place():
    items = blobs(5)
    ref = lancefeed.decode_batch(items, size=(24, 24))
    out = np.zeros((8, 24, 24, 3), np.uint8)
    res = lancefeed.decode_batch(items, size=(24, 24), out=out)
    assert res.shape == (5, 24, 24, 3) and np.shares_memory(res, out)
    np.testing.assert_array_equal(out[:5], ref)
    assert not out[5:].any()


@pytest.mark.parametrize("side", [32, 28, 17])
def test_small_images_decode_alike_wherever_their_rows_land(side: int) -> None:
    # Small images whose rows would start 32-byte aligned are decoded elsewhere and copied
    # (libjpeg-turbo writes aligned rows with non-temporal stores): the same pixels, at
    # every offset of the output, for whole images, crops, and a truncated one padded.
    arrs = [photo(side, side, seed=i) for i in range(3)]
    items = [encode(a, "JPEG", quality=90) for a in arrs]
    cut = items[0][:-30]  # within the entropy-coded data
    want = lancefeed.decode_batch(items, size=(side, side), decode_crop=False)
    for blob, got in zip(items, want):
        np.testing.assert_array_equal(got, pillow_rgb(blob))
    want_cut = lancefeed.decode_batch([cut], size=(side, side), truncated="pad")
    crop = lancefeed.CenterCrop(side // 2)
    want_crop = lancefeed.decode_batch(items, transform=crop)
    n = side * side * 3
    raw = np.zeros(4 * n + 128, np.uint8)
    for offset in range(32):
        start = (-raw.ctypes.data) % 64 + offset
        out = raw[start : start + 3 * n].reshape(3, side, side, 3)
        np.testing.assert_array_equal(lancefeed.decode_batch(items, size=(side, side), out=out), want, err_msg=str(offset))
        one = raw[start : start + n].reshape(1, side, side, 3)
        np.testing.assert_array_equal(lancefeed.decode_batch([cut], size=(side, side), truncated="pad", out=one), want_cut)
        half = raw[start : start + 3 * (side // 2) ** 2 * 3].reshape(3, side // 2, side // 2, 3)
        np.testing.assert_array_equal(lancefeed.decode_batch(items, transform=crop, out=half), want_crop)


def test_out_wrong_shape_or_dtype_is_refused():
    with pytest.raises(ValueError, match=r"out has shape \(8, 24, 20, 3\) but this batch needs \(5, 24, 24, 3\)"):
        lancefeed.decode_batch(blobs(5), size=(24, 24), out=np.zeros((8, 24, 20, 3), np.uint8))
    with pytest.raises(ValueError, match="out has shape"):
        lancefeed.decode_batch(blobs(5), size=(24, 24), out=np.zeros((4, 24, 24, 3), np.uint8))
    with pytest.raises(ValueError, match="dtype uint8"):
        lancefeed.decode_batch(blobs(2), size=(24, 24), out=np.zeros((2, 24, 24, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        lancefeed.decode_batch(blobs(2), size=(24, 24), out=np.zeros((2, 24, 24, 6), np.uint8)[..., ::2])


def test_thread_counts_give_identical_bytes():
    items = blobs(16)
    t = lancefeed.Compose([lancefeed.RandomResizedCrop(32), lancefeed.RandomHorizontalFlip()])
    one = lancefeed.decode_batch(items, transform=t, num_threads=1, seed=3)
    two = lancefeed.decode_batch(items, transform=t, num_threads=2, seed=3)
    np.testing.assert_array_equal(one, two)


def _decode_in_child(queue):
    out = lancefeed.decode_batch(blobs(6), size=(20, 20), num_threads=2)
    queue.put(out.tobytes())


def test_decode_in_forked_child():
    parent = lancefeed.decode_batch(blobs(6), size=(20, 20), num_threads=2)  # pool now running
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_decode_in_child, args=(q,))
    p.start()
    got = q.get(timeout=60)
    p.join(timeout=60)
    assert p.exitcode == 0
    assert got == parent.tobytes()


# --- bad input ---------------------------------------------------------------------------

GOOD = jpeg(40, 30)
BAD = {
    "empty": (b"", "empty image bytes"),
    "truncated-jpeg": (GOOD[: len(GOOD) // 2], "truncated JPEG"),
    "corrupt-jpeg": (GOOD[:200] + bytes(range(256)) * 8, "corrupt JPEG"),
    "non-image": (b"hello world, not an image", "unknown image format"),
    "gif": (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "unknown image format (first bytes 47 49 46 38 39 61"),
    "truncated-png": (encode(ARR, "PNG")[:300], "PNG"),
    "corrupt-webp": (b"RIFF\x10\x00\x00\x00WEBPVP8 garbage!", "corrupt WebP"),
    "bomb": (png_header_only(30000, 30000), "900000000 pixels, over the limit of 178956970"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_names_row_and_reason(kind):
    data, reason = BAD[kind]
    with pytest.raises(lancefeed.DecodeError) as e:
        lancefeed.decode_batch([GOOD, GOOD, data, GOOD], size=(16, 16))
    assert str(e.value).startswith("row 2: ")
    assert reason in str(e.value)
    assert isinstance(e.value, ValueError)
    with pytest.raises(lancefeed.DecodeError, match=reason.split("(")[0].strip()):
        lancefeed.decode_image(data)


def test_null_in_arrow_column():
    with pytest.raises(lancefeed.DecodeError, match=r"^row 1: null value"):
        lancefeed.decode_batch(pa.array([GOOD, None], pa.binary()), size=(8, 8))


def test_pixel_limit_is_settable():
    big = jpeg(200, 100)
    with pytest.raises(lancefeed.DecodeError, match="20000 pixels, over the limit of 10000"):
        lancefeed.decode_image(big, max_pixels=10_000)
    assert lancefeed.decode_batch([big], size=(8, 8), max_pixels=20_000).shape == (1, 8, 8, 3)


def test_skip_drops_bad_rows_and_reports_them():
    items = [GOOD, BAD["truncated-jpeg"][0], GOOD, None, BAD["bomb"][0], GOOD]
    arr = pa.array(items, pa.binary())
    out, info = lancefeed.decode_batch(arr, size=(16, 16), on_error="skip", return_info=True)
    assert out.shape == (3, 16, 16, 3)
    assert info.kept.tolist() == [0, 2, 5]
    assert [row for row, _ in info.errors] == [1, 3, 4]
    ref = lancefeed.decode_batch([GOOD], size=(16, 16))[0]
    for img in out:
        np.testing.assert_array_equal(img, ref)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="mode must be 'RGB' or 'L'"):
        lancefeed.decode_batch([GOOD], mode="RGBA")
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
        lancefeed.decode_batch([GOOD], on_error="ignore")
    with pytest.raises(TypeError, match="images must hold bytes, got int"):
        lancefeed.decode_batch([GOOD, 3])
    with pytest.raises(TypeError, match="expected an Arrow binary or large_binary array"):
        lancefeed.decode_batch(pa.array([1, 2]))
    with pytest.raises(ValueError, match="num_threads must be at least 1"):
        lancefeed.decode_batch([GOOD], num_threads=0)


def test_empty_batch():
    out = lancefeed.decode_batch([], size=(8, 8))
    assert out.shape == (0, 8, 8, 3)


# --- gathering rows with order= -------------------------------------------------------


def test_order_gathers_rows_without_reordering_the_input():
    items = blobs(5)
    arr = pa.array(items, pa.binary())
    order = [4, 0, 0, 2]
    t = lancefeed.Compose([lancefeed.RandomResizedCrop(24), lancefeed.RandomHorizontalFlip()])
    got, info = lancefeed.decode_batch(arr, transform=t, order=order, positions=[10, 11, 12, 13], return_info=True)
    want = lancefeed.decode_batch([items[i] for i in order], transform=t, positions=[10, 11, 12, 13])
    np.testing.assert_array_equal(got, want)
    assert info.kept.tolist() == [0, 1, 2, 3]
    # A repeated row at two positions gets two different random crops.
    assert not np.array_equal(got[1], got[2])
    # Across the chunks of a ChunkedArray, order counts rows of the whole column.
    chunked = pa.chunked_array([items[:2], items[2:]], pa.binary())
    np.testing.assert_array_equal(lancefeed.decode_batch(chunked, transform=t, order=order, positions=[10, 11, 12, 13]), want)


def test_order_picks_rows_across_chunks_where_they_are():
    # The loader's cache keeps its side-by-side scans as chunks: rows are picked across
    # them (slices, empty chunks and nulls included) as from one array.
    items = blobs(9)
    chunks = [
        pa.array([None] + items[:3], pa.binary()).slice(1, 3),
        pa.array([], pa.binary()),
        pa.array(items[3:5] + [None], pa.binary()),
        pa.array(items[5:], pa.binary()),
    ]
    chunked = pa.chunked_array(chunks, pa.binary())
    whole = items[:5] + [None] + items[5:]
    order = [9, 0, 4, 3, 3, 2, 6, 7]
    want = lancefeed.decode_batch([whole[i] for i in order], size=(16, 16))
    np.testing.assert_array_equal(lancefeed.decode_batch(chunked, size=(16, 16), order=order), want)
    out, info = lancefeed.decode_batch(chunked, size=(16, 16), order=[5, 8, 5], on_error="skip", return_info=True)
    assert info.kept.tolist() == [1] and [row for row, _ in info.errors] == [0, 2]
    np.testing.assert_array_equal(out[0], lancefeed.decode_batch([items[7]], size=(16, 16))[0])
    with pytest.raises(IndexError, match="order holds 10, out of range for 10 images"):
        lancefeed.decode_batch(chunked, size=(16, 16), order=[0, 10])


def test_order_indices_of_skipped_rows_count_output_rows():
    items = [GOOD, BAD["empty"][0], GOOD]
    out, info = lancefeed.decode_batch(items, size=(8, 8), order=[1, 2, 0, 1], on_error="skip", return_info=True)
    assert out.shape == (2, 8, 8, 3)
    assert info.kept.tolist() == [1, 2]
    assert [row for row, _ in info.errors] == [0, 3]
    with pytest.raises(lancefeed.DecodeError, match=r"^row 1: empty image bytes"):
        lancefeed.decode_batch(items, size=(8, 8), order=[0, 1])


def test_order_out_of_range_or_not_integers_is_refused():
    with pytest.raises(IndexError, match="order holds 3, out of range for 3 images"):
        lancefeed.decode_batch([GOOD] * 3, size=(8, 8), order=[0, 3])
    with pytest.raises(IndexError, match="order holds -1"):
        lancefeed.decode_batch([GOOD] * 3, size=(8, 8), order=[-1])
    with pytest.raises(TypeError, match="order must be a one-dimensional sequence of integers"):
        lancefeed.decode_batch([GOOD] * 3, size=(8, 8), order=[0.5])


# --- the Huffman decoder build ----------------------------------------------------------


HUFFMAN_DECODERS = ("portable", "x86-64-v3", "x86-64-v3+tables")


def _per_decoder(fn) -> dict[str, object]:
    """fn() under each Huffman decoder this CPU and build run (portable always)."""
    core = lancefeed._core
    start = core.huffman_decoder()
    assert start in HUFFMAN_DECODERS
    results = {}
    try:
        for name in HUFFMAN_DECODERS:
            try:
                assert core.huffman_decoder(name) == name
            except ValueError as e:  # a CPU or build without the v3 copies
                assert "Huffman decoder" in str(e)
                continue
            results[name] = fn()
    finally:
        core.huffman_decoder(start)
    return results


def _big_jpegs() -> list[bytes]:
    # The table decoder starts at 96 MCUs (smaller images take libjpeg-turbo's path):
    # these have 300-1,200, at qualities from long zero runs (ZRL) and codes over 10
    # bits (q=98) to mostly end-of-block (q=40), in every sampling.
    items = [encode(photo(400, 300, seed=s), "JPEG", quality=q) for s, q in [(1, 98), (2, 40), (3, 85)]]
    items.append(encode(photo(333, 251, seed=4), "JPEG", quality=90, subsampling=0))
    items.append(encode(photo(333, 251, seed=5), "JPEG", quality=75, subsampling=1))
    items.append(encode(photo(320, 240, seed=6), "JPEG", quality=85, optimize=True))
    items.append(encode(Image.fromarray(photo(300, 200, seed=7)).convert("L"), "JPEG", quality=90))
    items.append(jpegtran(items[2], "-restart", "1B"))
    items.append(encode(photo(320, 240, seed=8), "JPEG", quality=85, progressive=True))
    return items


def test_every_huffman_decoder_equals_pillow():
    items = _big_jpegs()
    items += [encode(photo(97, 61, seed=s), "JPEG", quality=q) for s, q in [(1, 95), (2, 60)]]
    items += [JPEG_VARIANTS["restart-markers"](), JPEG_VARIANTS["optimized-huffman"]()]
    results = _per_decoder(lambda: [lancefeed.decode_image(b) for b in items])
    assert "portable" in results
    for name, decoded in results.items():
        for data, img in zip(items, decoded):
            np.testing.assert_array_equal(img, pillow_rgb(data), err_msg=name)
    with pytest.raises(ValueError, match='unknown Huffman decoder "avx9"|no "avx9" Huffman decoder'):
        lancefeed._core.huffman_decoder("avx9")


def test_every_huffman_decoder_crops_and_scales_identically():
    # Decode-time crops skip rows (coefficients decoded and dropped) and 1/8 scaling
    # needs no AC coefficients: the paths that store nothing.
    items = _big_jpegs()
    crop = lancefeed.Compose([lancefeed.RandomResizedCrop(48), lancefeed.RandomHorizontalFlip()])
    results = _per_decoder(
        lambda: [lancefeed.decode_batch(items, transform=crop, seed=3), lancefeed.decode_batch(items, size=(24, 24))]
    )
    first = results.pop("portable")
    for name, outs in results.items():
        for a, b in zip(first, outs):
            np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("markers", ["none", "every-row", "restart-index", "restart-index-crops"])
def test_every_huffman_decoder_reads_corrupt_streams_alike(markers):
    # Bytes overwritten in the entropy-coded data (false markers, impossible codes,
    # runs past the block's end, broken restart markers) and truncations: the same
    # pixels or the same error. With restart markers the table decoder accepts an MCU
    # that ends at its interval's marker only if none of its bits came after it.
    base = encode(photo(400, 300, seed=9), "JPEG", quality=90)
    if markers == "every-row":
        base = jpegtran(base, "-restart", "1")
    elif markers.startswith("restart-index"):
        base = lancefeed._core.add_restart_index(base)
    start = base.index(b"\xff\xda") + 20
    rng = np.random.default_rng(0)
    streams = []
    for t in range(60):
        b = bytearray(base)
        for i in rng.integers(start, len(b) - 2, size=int(rng.integers(1, 4))):
            b[int(i)] = int(rng.integers(0, 256))
        streams.append(bytes(b[: int(rng.integers(start, len(b)))] if t % 3 == 0 else b))

    # "-crops": random crops, decoded from the cut-down JPEG of the crop's MCUs, which
    # ends in EOI and a zero pad so the table decoder's fast path runs to its last MCU.
    crop = lancefeed.RandomResizedCrop(64, scale=(0.02, 0.3)) if markers.endswith("crops") else None

    def outcome(data: bytes) -> object:
        try:
            if crop is not None:
                return lancefeed.decode_batch([data] * 4, transform=crop, seed=3)
            return lancefeed.decode_image(data)
        except lancefeed.DecodeError as e:
            return str(e)

    results = _per_decoder(lambda: [outcome(b) for b in streams])
    first = results.pop("portable")
    assert sum(isinstance(o, np.ndarray) for o in first) > 10  # most corruptions still decode
    for name, outs in results.items():
        for a, b in zip(first, outs):
            if isinstance(a, str) and markers != "none" and a.startswith("truncated"):
                # Data that ends early: the same error, but with restart markers which of
                # libjpeg's warnings came last before the end (the words in brackets) may
                # differ, as the table decoder leaves a corrupt MCU to libjpeg-turbo's
                # path at another bit than libjpeg-turbo's own decoder notices it.
                assert isinstance(b, str) and b.split(" (")[0] == a.split(" (")[0], name
            elif isinstance(a, str):
                assert a == b, name
            else:
                np.testing.assert_array_equal(a, b, err_msg=name)


def _damage_restart_markers(data: bytes, how: str, rng: np.random.Generator) -> bytes:
    """``data`` with one to three of its RSTn markers damaged in one way."""
    sos = data.index(b"\xff\xda")
    marks = [sos + i for i in range(len(data) - sos - 1) if data[sos + i] == 0xFF and 0xD0 <= data[sos + i + 1] <= 0xD7]
    assert len(marks) > 100
    b = bytearray(data)
    # From the end, so that earlier offsets stay where they were.
    for i in sorted(rng.choice(marks, size=int(rng.integers(1, 4)), replace=False), reverse=True):
        i = int(i)
        if how == "renumbered":
            b[i + 1] = 0xD0 + (b[i + 1] - 0xD0 + int(rng.integers(1, 8))) % 8
        elif how == "dropped":
            del b[i : i + 2]
        elif how == "doubled":
            b[i:i] = b[i : i + 2]
        elif how == "data-before":
            b[i:i] = bytes(rng.integers(1, 255, size=int(rng.integers(1, 5)), dtype=np.uint8))
        elif how == "fill-before":  # allowed: 0xFF fill bytes before a marker
            b[i:i] = b"\xff" * int(rng.integers(1, 4))
        elif how == "other-marker":
            b[i + 1] = int(rng.choice([0xD9, 0xC4, 0xE1, 0xFE]))
        else:
            raise AssertionError(how)
    return bytes(b)


@pytest.mark.parametrize("how", ["renumbered", "dropped", "doubled", "data-before", "fill-before", "other-marker"])
def test_every_huffman_decoder_reads_broken_restart_markers_alike(how):
    # Restart-indexed JPEGs have a marker after every MCU, and the table decoder's fast
    # path accepts the marker that ends an MCU's interval itself (libjpeg-turbo's takes
    # the slow path for every MCU of such a stream). Markers renumbered, missing,
    # doubled, preceded by stray bytes or by fill, or replaced by another marker: the
    # same pixels or error as libjpeg-turbo's own decoder, whole and cropped (the crop
    # decodes a cut-down JPEG of its MCUs, found through the damaged index).
    rng = np.random.default_rng(["renumbered", "dropped", "doubled", "data-before", "fill-before", "other-marker"].index(how))
    base = lancefeed._core.add_restart_index(encode(photo(400, 300, seed=11), "JPEG", quality=90))
    streams = [_damage_restart_markers(base, how, rng) for _ in range(12)]
    crop = lancefeed.RandomResizedCrop(96, scale=(0.1, 0.6))

    def outcome(data: bytes) -> list[object]:
        got: list[object] = []
        for fn in (lambda: lancefeed.decode_image(data), lambda: lancefeed.decode_batch([data] * 6, transform=crop, seed=5)):
            try:
                got.append(fn())
            except lancefeed.DecodeError as e:
                got.append(str(e))
        return got

    results = _per_decoder(lambda: [outcome(b) for b in streams])
    first = results.pop("portable")
    decoded = sum(isinstance(o, np.ndarray) for outs in first for o in outs)
    assert decoded >= 12, decoded  # the damage is local: most still decode
    if how == "fill-before":
        clean = lancefeed.decode_image(base)
        for outs in first:
            np.testing.assert_array_equal(outs[0], clean)
    for name, got in results.items():
        for a_outs, b_outs in zip(first, got):
            for a, b in zip(a_outs, b_outs):
                if isinstance(a, str):
                    assert a == b, name
                else:
                    np.testing.assert_array_equal(a, b, err_msg=f"{name}, {how}")


def test_every_huffman_decoder_reads_small_images_and_their_tables_alike():
    # Images of a few MCUs (CIFAR-10's 32x32): the table decoder takes libjpeg-turbo's
    # fast path where the stream ends with a marker, and copies the derived tables of a
    # Huffman table it built before (by content). One thread decodes them all in turn, so
    # a table built for one image is offered to the next: mutants of the tables (DHT
    # bytes overwritten) and of the data, truncations, data cut short before an EOI or
    # broken by a marker, images with their own optimized tables, trailing bytes after
    # EOI and restart markers, against Pillow and one another. The fast path keeps an
    # MCU that ends before the marker its refills ran into (each image's last MCU)
    # only if none of the zeros fed after the marker were decoded.
    bases = [
        encode(photo(32, 32, seed=1), "JPEG", quality=75),
        encode(photo(32, 32, seed=2), "JPEG", quality=95, optimize=True),
        encode(photo(17, 9, seed=3), "JPEG", quality=60, subsampling=1),
        encode(photo(8, 8, seed=4), "JPEG", quality=90, subsampling=0),
        encode(Image.fromarray(photo(24, 40, seed=5)).convert("L"), "JPEG", quality=80, optimize=True),
        jpegtran(encode(photo(48, 32, seed=6), "JPEG", quality=85), "-restart", "1B"),
        encode(photo(40, 24, seed=7), "JPEG", quality=70) + b"trailing bytes",
    ]
    for data in bases:  # intact: Pillow's pixels under every decoder
        for name, img in _per_decoder(lambda: lancefeed.decode_image(data)).items():
            np.testing.assert_array_equal(img, pillow_rgb(data), err_msg=name)
    rng = np.random.default_rng(1)
    streams = []
    for t in range(240):
        b = bytearray(bases[t % len(bases)])
        dht = b.index(b"\xff\xc4")
        lo = dht + 4 if t % 2 else b.index(b"\xff\xda") + 10  # the tables, or the data
        for i in rng.integers(lo, len(b) - 2, size=int(rng.integers(1, 3))):
            b[int(i)] = int(rng.integers(0, 256))
        streams.append(bytes(b[: int(rng.integers(lo, len(b)))] if t % 5 == 0 else b))
        streams.append(bases[(t + 3) % len(bases)])  # an intact image between mutants
        # Data that meets a marker early, so the fast path's refills read into it: cut
        # short and ended with an EOI (the last MCUs then need bits past the marker:
        # libjpeg fills zeros and decodes nothing after), or a marker in the middle.
        c = bytearray(bases[t % len(bases)])
        sos = c.index(b"\xff\xda") + 14
        cut = int(rng.integers(sos, len(c) - 2))
        marker = bytes([0xFF, int(rng.choice([0xD9, 0xC4, 0xD3, 0xFE]))])
        streams.append(bytes(c[:cut]) + b"\xff\xd9" if t % 2 else bytes(c[:cut]) + marker + bytes(c[cut:]))

    def outcome(data: bytes) -> object:
        try:
            return lancefeed.decode_image(data)
        except lancefeed.DecodeError as e:
            return str(e)

    results = _per_decoder(lambda: [outcome(b) for b in streams])
    first = results.pop("portable")
    assert sum(isinstance(o, str) for o in first) > 10 and sum(isinstance(o, np.ndarray) for o in first) > 400
    for name, outs in results.items():
        for a, b in zip(first, outs):
            if isinstance(a, str):
                assert a == b, name
            else:
                np.testing.assert_array_equal(a, b, err_msg=name)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


@pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64"), reason="the v3 copy is built for Linux x86-64 only"
)
def test_v3_huffman_decoder_is_built_and_chosen_where_the_cpu_has_it():
    v3 = {"avx2", "bmi1", "bmi2", "fma", "f16c", "abm", "movbe", "xsave"} <= _cpu_flags()  # abm: LZCNT
    env = dict(os.environ)
    env.pop("LANCEFEED_HUFFMAN", None)
    run = lambda extra: subprocess.run(  # noqa: E731
        [sys.executable, "-c", "import lancefeed._core as c; print(c.huffman_decoder())"],
        env={**env, **extra}, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert run({}) == ("x86-64-v3+tables" if v3 else "portable")
    assert run({"LANCEFEED_HUFFMAN": "baseline"}) == "portable"
