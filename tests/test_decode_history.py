"""A decode depends on its bytes alone: not on the thread, on what that thread decoded
before, or on a corrupt neighbour in the batch. And where Pillow reads a file, so do we.

The reference for a blob is its decode on a thread that has decoded nothing before (a
new thread has a new decoder: lancefeed keeps one per thread), which is what a fresh
process gives too.
"""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image, ImageFile

import lancefeed
from images import (
    encode,
    history_corpus,
    icc_chunk,
    jpeg,
    jpegtran,
    lossless_jpeg,
    photo,
    pillow_rgb,
    png,
    psnr,
    with_segment,
    without_segments,
)

CORPUS = history_corpus()
NAMES = sorted(CORPUS)
CROP = lancefeed.Compose([lancefeed.RandomResizedCrop(24), lancefeed.RandomHorizontalFlip()])


def on_fresh_thread(fn):
    """``fn()`` on a new thread (so with new per-thread decoder state): its result, or
    the exception it raised."""
    box: list = []

    def run() -> None:
        try:
            box.append(fn())
        except Exception as e:  # noqa: BLE001 - handed back to the caller
            box.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return box[0]


def outcome(fn):
    """Pixels as bytes with their shape, or ("error", message): what must be equal."""
    try:
        a = fn()
    except lancefeed.DecodeError as e:
        return ("error", str(e))
    return (a.shape, a.tobytes())


def alone(data: bytes, **kw):
    return on_fresh_thread(lambda: outcome(lambda: lancefeed.decode_image(data, **kw)))


def alone_cropped(data: bytes, position: int, **kw):
    """The crop path (decode-time crop, DCT scaling) for one blob on a new thread."""

    def run():
        out, info = lancefeed.decode_batch(
            [data], transform=CROP, positions=[position], num_threads=1, on_error="skip", return_info=True, **kw
        )
        return ("error", info.errors[0][1]) if info.errors else (out[0].shape, out[0].tobytes())

    return on_fresh_thread(run)


REFERENCE = {name: alone(CORPUS[name]) for name in NAMES}
REFERENCE_CROP = {name: alone_cropped(CORPUS[name], k) for k, name in enumerate(NAMES)}


# --- What was seen: each as it was reported ---------------------------------------------


def test_this_build_resets_the_thread_decoder_in_place():
    # The wheel resets a thread's TurboJPEG handle between images; a build without
    # the vendored sources makes a new handle per image (exact too, slower). The tests
    # below must run against the first.
    assert lancefeed._core.jpeg_handles_reset()


def test_junk_after_soi_raises_after_a_real_jpeg():
    junk = b"\xff\xd8\xff\xe0 not really a jpeg"
    lancefeed.decode_image(jpeg(500, 375))
    with pytest.raises(lancefeed.DecodeError):
        lancefeed.decode_image(junk)
    batch, info = lancefeed.decode_batch(
        [jpeg(500, 375), junk, jpeg(500, 375, seed=1)], size=(32, 32), on_error="skip", return_info=True
    )
    assert info.kept.tolist() == [0, 2]
    assert [row for row, _ in info.errors] == [1]
    assert len(batch) == 2


def test_tables_only_stream_raises_after_a_real_jpeg():
    lancefeed.decode_image(jpeg(500, 375))
    with pytest.raises(lancefeed.DecodeError, match="no image frame"):
        lancefeed.decode_image(CORPUS["jpeg-tables-only"])
    with pytest.raises(lancefeed.DecodeError, match="no image frame"):
        lancefeed.image_info(CORPUS["jpeg-tables-only"])


@pytest.mark.parametrize("before", ["jpeg-optimized", "jpeg-arithmetic", "jpeg-progressive"])
def test_jpeg_without_dht_uses_the_standard_tables_whatever_came_before(before):
    # An MJPEG (AVI1) frame has no DHT: the decoder must use the standard tables, not
    # the ones the previous image defined.
    data = CORPUS["jpeg-no-dht"]
    lancefeed.decode_image(CORPUS[before])
    np.testing.assert_array_equal(lancefeed.decode_image(data), pillow_rgb(data))
    out = lancefeed.decode_batch([CORPUS[before], data, CORPUS[before], data], size=(33, 45), num_threads=1)
    np.testing.assert_array_equal(out[1], pillow_rgb(data))
    np.testing.assert_array_equal(out[3], pillow_rgb(data))


def test_jpeg_without_dqt_is_an_error_whatever_came_before():
    lancefeed.decode_image(CORPUS["jpeg-420"])
    with pytest.raises(lancefeed.DecodeError, match="Quantization table 0x00 was not defined"):
        lancefeed.decode_image(CORPUS["jpeg-no-dqt"])


@pytest.mark.parametrize("bad", ["jpeg-bogus-dht", "jpeg-bogus-dqt", "jpeg-corrupt-data", "jpeg-truncated-header"])
def test_valid_jpegs_decode_after_a_corrupt_one(bad):
    good = [CORPUS[n] for n in ("jpeg-420", "jpeg-progressive", "jpeg-444", "jpeg-big", "jpeg-restart")]
    for data in good:
        with pytest.raises(lancefeed.DecodeError):
            lancefeed.decode_image(CORPUS[bad])
        np.testing.assert_array_equal(lancefeed.decode_image(data), pillow_rgb(data))
        assert lancefeed.image_info(data)[2] == "jpeg"


def test_a_corrupt_row_changes_nothing_in_the_other_rows():
    good = [CORPUS[n] for n in ("jpeg-420", "jpeg-big", "png-rgb", "jpeg-progressive", "webp-lossless")]
    clean, clean_info = lancefeed.decode_batch(good, transform=CROP, return_info=True, num_threads=2)
    for bad in ("jpeg-bogus-dht", "jpeg-junk-after-soi", "jpeg-truncated-data", "jpeg-no-dqt", "png-bad-crc"):
        for at in range(len(good) + 1):
            rows = good[:at] + [CORPUS[bad]] + good[at:]
            positions = list(range(at)) + [99] + list(range(at, len(good)))
            out, info = lancefeed.decode_batch(
                rows, transform=CROP, positions=positions, on_error="skip", return_info=True, num_threads=2
            )
            np.testing.assert_array_equal(out, clean)
            assert info.kept.tolist() == [r if r < at else r + 1 for r in range(len(good))]
            assert [row for row, _ in info.errors] == [at]
            np.testing.assert_array_equal(info.boxes, clean_info.boxes)
            np.testing.assert_array_equal(info.flipped, clean_info.flipped)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_batch_sized_by_its_images_holds_only_what_its_rows_decoded(threads):
    # Resize(int) sizes the batch by its images, so the core allocates the output (no
    # caller's buffer): its slots are not zeroed up front but by the worker taking each.
    # Rows that fail part-way through their slot, or that come out at another size,
    # must leave nothing behind in the rows kept, wherever they sit in the batch.
    same = [jpeg(40, 30, seed=s, quality=q) for s, q in ((1, 90), (2, 60), (3, 95), (4, 75))]
    resize = lancefeed.Compose([lancefeed.Resize(24), lancefeed.RandomHorizontalFlip()])
    want = [np.asarray(Image.fromarray(pillow_rgb(b)).resize((32, 24), Image.BILINEAR)) for b in same]
    clean, info = lancefeed.decode_batch(same, transform=resize, positions=range(4), return_info=True, num_threads=threads)
    assert clean.shape == (4, 24, 32, 3)
    for k, row in enumerate(clean):
        expect = want[k][:, ::-1] if info.flipped[k] else want[k]
        assert np.abs(row.astype(int) - expect.astype(int)).max() <= 2
    for bad in ("jpeg-truncated-data", "jpeg-corrupt-data", "jpeg-bogus-dht", "png-bad-crc"):
        for at in range(len(same) + 1):
            rows = same[:at] + [CORPUS[bad]] + same[at:]
            positions = list(range(at)) + [99] + list(range(at, len(same)))
            out, got = lancefeed.decode_batch(
                rows, transform=resize, positions=positions, on_error="skip", return_info=True, num_threads=threads
            )
            np.testing.assert_array_equal(out, clean)
            assert [row for row, _ in got.errors] == [at]
    # Every row failing: an empty batch, not a buffer of unwritten rows.
    out = lancefeed.decode_batch([CORPUS["jpeg-corrupt-data"]] * 3, transform=resize, on_error="skip", num_threads=threads)
    assert out.shape[0] == 0
    # A row of another size ends the batch, as it did.
    with pytest.raises(lancefeed.SizeMismatchError):
        lancefeed.decode_batch(same + [jpeg(64, 30, seed=5)], transform=resize, num_threads=threads)


# --- Where Pillow reads a file, so do we, to the same pixels ------------------------------


@pytest.mark.parametrize("name", ["jpeg-icc-bad-sequence", "jpeg-icc-inconsistent"])
def test_broken_icc_chunks_are_ignored_as_pillow_does(name):
    data = CORPUS[name]
    np.testing.assert_array_equal(lancefeed.decode_image(data), pillow_rgb(data))


def test_a_valid_icc_profile_is_not_applied():
    # Pillow's decode does not apply the profile either (ImageCms would).
    data = encode(photo(45, 33), "JPEG", quality=90, icc_profile=b"\x00" * 128 + b"acsp" + b"\x00" * 300)
    np.testing.assert_array_equal(lancefeed.decode_image(data), pillow_rgb(data))


@pytest.mark.parametrize("predictor", range(1, 8))
@pytest.mark.parametrize("channels", [1, 3])
def test_lossless_jpeg_equals_pillow(predictor, channels):
    arr = photo(37, 29, seed=predictor)
    arr = arr[..., 1] if channels == 1 else arr
    data = lossless_jpeg(arr, predictor)
    assert lancefeed.image_info(data) == (37, 29, "jpeg")
    np.testing.assert_array_equal(lancefeed.decode_image(data), pillow_rgb(data))
    ref_l = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    np.testing.assert_array_equal(lancefeed.decode_image(data, mode="L")[..., 0], ref_l)
    # Lossless JPEG has no DCT: the crop path decodes it whole and crops after.
    out = lancefeed.decode_batch([data], transform=lancefeed.CenterCrop(16), num_threads=1)[0]
    np.testing.assert_array_equal(out, pillow_rgb(data)[6:22, 10:26])


def test_lossless_jpeg_pixels_are_the_encoded_ones():
    arr = photo(37, 29, seed=3)
    np.testing.assert_array_equal(lancefeed.decode_image(lossless_jpeg(arr, 1)), arr)


@pytest.mark.parametrize("name", ["jpeg-extra-bytes", "jpeg-ff-fill"])
def test_extra_bytes_before_markers_as_pillow(name):
    data = CORPUS[name]
    np.testing.assert_array_equal(lancefeed.decode_image(data), pillow_rgb(data))
    assert lancefeed.image_info(data) == (45, 33, "jpeg")


def test_exif_orientation_is_not_applied():
    # As Image.open: the stored pixels, unrotated; ImageOps.exif_transpose would rotate.
    data = CORPUS["jpeg-exif-rotated"]
    assert Image.open(io.BytesIO(data)).getexif()[0x0112] == 6
    out = lancefeed.decode_image(data)
    assert out.shape == (33, 45, 3)
    np.testing.assert_array_equal(out, pillow_rgb(data))


# --- Truncated images: refused by default, padded as Pillow pads them on request ------------


def pillow_truncated(data: bytes) -> np.ndarray:
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        return pillow_rgb(data)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


TRUNCATABLE = {
    "jpeg-baseline": encode(photo(160, 120, seed=4), "JPEG", quality=90),
    "jpeg-progressive": encode(photo(160, 120, seed=4), "JPEG", quality=90, progressive=True),
    "jpeg-restart": jpegtran(encode(photo(160, 120, seed=4), "JPEG", quality=90), "-restart", "2"),
    "png": encode(photo(160, 120, seed=4), "PNG"),
    "png-interlaced": png(photo(160, 120, seed=4), interlace=True),
}


@pytest.mark.parametrize("name", sorted(TRUNCATABLE))
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
def test_truncated_images(name, fraction):
    full = TRUNCATABLE[name]
    data = full[: int(len(full) * fraction)]
    with pytest.raises(lancefeed.DecodeError, match="truncated"):
        lancefeed.decode_image(data)
    with pytest.raises(lancefeed.DecodeError, match="truncated"):
        lancefeed.decode_batch([data], size=(60, 80))
    padded = lancefeed.decode_image(data, truncated="pad")
    np.testing.assert_array_equal(padded, pillow_truncated(data))
    assert not np.array_equal(padded, pillow_rgb(full))
    batch, info = lancefeed.decode_batch([full, data], truncated="pad", return_info=True)
    assert info.kept.tolist() == [0, 1]
    np.testing.assert_array_equal(batch[1], padded)


def test_truncated_jpeg_padded_through_the_crop_path():
    full = TRUNCATABLE["jpeg-baseline"]
    data = full[: len(full) // 2]
    ref = pillow_truncated(data)[10:110, 10:150]
    whole = lancefeed.decode_batch([data], transform=lancefeed.CenterCrop((100, 140)), truncated="pad", decode_crop=False)
    np.testing.assert_array_equal(whole[0], ref)
    # A decode-time crop upsamples chroma differently at its right edge (see README).
    cropped = lancefeed.decode_batch([data], transform=lancefeed.CenterCrop((100, 140)), truncated="pad")
    assert psnr(cropped[0], ref) > 40


def test_truncated_webp_is_an_error_either_way_as_in_pillow():
    data = encode(photo(64, 48), "WEBP", quality=80)[:150]
    for mode in ("error", "pad"):
        with pytest.raises(lancefeed.DecodeError, match="WebP"):
            lancefeed.decode_image(data, truncated=mode)


def test_truncated_must_be_error_or_pad():
    with pytest.raises(ValueError, match="truncated must be 'error' or 'pad'"):
        lancefeed.decode_batch([CORPUS["jpeg-420"]], truncated="yes")
    with pytest.raises(ValueError, match="truncated must be 'error' or 'pad'"):
        lancefeed.decode_image(CORPUS["jpeg-420"], truncated="skip")


# --- The history property over the whole corpus --------------------------------------------


def test_the_reference_decodes_agree_with_pillow():
    # The corpus is what it claims: Pillow reads the good blobs to the same pixels and
    # refuses the bad ones. Excepted: lossy WebP (another decoder) and 16-bit gray PNG
    # (where Pillow clips; see test_decode.test_png_16bit_gray_is_high_byte).
    for name in NAMES:
        try:
            ref = pillow_rgb(CORPUS[name])
        except Exception:  # noqa: BLE001 - any refusal by Pillow
            assert REFERENCE[name][0] == "error", name
            continue
        assert REFERENCE[name][0] == ref.shape, name
        if name not in ("webp-lossy", "png-gray16"):
            assert REFERENCE[name][1] == ref.tobytes(), name


@pytest.mark.parametrize("seed", range(4))
def test_decode_image_in_any_order_equals_each_alone(seed):
    rng = np.random.default_rng(seed)
    order = rng.choice(NAMES, size=3 * len(NAMES))
    for name in order:
        assert outcome(lambda: lancefeed.decode_image(CORPUS[name])) == REFERENCE[name], name
        if rng.random() < 0.3:
            # A header read leaves a header on the thread's decoder: it must not count.
            try:
                lancefeed.image_info(CORPUS[rng.choice(NAMES)])
            except lancefeed.DecodeError:
                pass


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_batches_in_any_order_and_split_equal_each_alone(threads):
    rng = np.random.default_rng(threads)
    for _ in range(4):
        picks = rng.choice(len(NAMES), size=2 * len(NAMES))
        cut = int(rng.integers(1, len(picks)))
        for part in (picks[:cut], picks[cut:]):
            blobs = [CORPUS[NAMES[k]] for k in part]
            out, info = lancefeed.decode_batch(
                blobs, transform=CROP, positions=part, num_threads=threads, on_error="skip", return_info=True
            )
            errors = dict(info.errors)
            got = iter(out)
            for i, k in enumerate(part):
                ref = REFERENCE_CROP[NAMES[k]]
                if i in errors:
                    assert ("error", errors[i]) == ref, NAMES[k]
                else:
                    row = next(got)
                    assert (row.shape, row.tobytes()) == ref, NAMES[k]


def test_full_size_batches_equal_each_alone():
    # The direct path (a JPEG decoded straight into its slot): all one size.
    same = [n for n in NAMES if REFERENCE[n][0] == (33, 45, 3)]
    rng = np.random.default_rng(7)
    for threads in (1, 2):
        picks = rng.choice(same, size=40)
        out = lancefeed.decode_batch([CORPUS[n] for n in picks], num_threads=threads)
        for row, name in zip(out, picks):
            assert row.tobytes() == REFERENCE[name][1], name


def test_padded_decodes_depend_on_the_bytes_alone():
    names = ["jpeg-truncated-data", "jpeg-truncated-progressive", "png-truncated", "jpeg-420", "jpeg-no-dht"]
    ref = {n: alone(CORPUS[n], truncated="pad") for n in names}
    rng = np.random.default_rng(3)
    for name in rng.choice(names + ["jpeg-bogus-dht", "jpeg-optimized"], size=60):
        got = outcome(lambda: lancefeed.decode_image(CORPUS[name], truncated="pad"))
        if name in ref:
            assert got == ref[name], name


def test_no_dht_jpegs_stay_exact_under_a_mixed_load():
    # The reported case at scale: MJPEG frames between other JPEGs on two threads.
    frames = [without_segments(encode(photo(45, 33, seed=s), "JPEG", quality=80), 0xC4) for s in range(6)]
    others = [CORPUS[n] for n in ("jpeg-optimized", "jpeg-arithmetic", "jpeg-progressive", "jpeg-444")]
    blobs = [b for pair in zip(frames, others * 2) for b in pair] * 3
    out = lancefeed.decode_batch(blobs, num_threads=2)
    for row, data in zip(out, blobs):
        np.testing.assert_array_equal(row, pillow_rgb(data))


def test_icc_chunk_helper_makes_what_pillow_reads_as_a_profile():
    # Guards the corpus: a consistent chunk is a profile to Pillow, so the broken ones
    # above are broken for a reason.
    data = with_segment(jpeg(), 0xE2, icc_chunk(1, 1, b"\x00" * 10))
    assert Image.open(io.BytesIO(data)).info.get("icc_profile") == b"\x00" * 10
