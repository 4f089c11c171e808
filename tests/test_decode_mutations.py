"""Mutated real encodes: bit flips, truncations, inserted and deleted bytes, swapped
and rewritten markers. Whatever the bytes, a decode raises DecodeError or returns
pixels (never another exception, never a crash), and its result is the one the same
bytes give on a thread that has decoded nothing before.

Deterministic (a fixed seed), a few thousand cases, seconds. `cargo fuzz` (fuzz/)
explores further; what it finds lands in fuzz/regressions/ and is decoded here too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lancefeed
from images import encode, jpegtran, lossless_jpeg, photo, png
from test_decode_history import CROP, alone, alone_cropped, outcome

MAX_PIXELS = 1 << 22  # a flipped size bit must not make a case slow
REGRESSIONS = Path(__file__).resolve().parent.parent / "fuzz" / "regressions"


def bases() -> list[bytes]:
    arr = photo(40, 24, seed=21)
    jpg = encode(arr, "JPEG", quality=80)
    return [
        jpg,
        encode(arr, "JPEG", quality=90, subsampling=0, optimize=True),
        encode(arr, "JPEG", quality=75, progressive=True),
        encode(Image.fromarray(arr).convert("L"), "JPEG", quality=85),
        encode(Image.fromarray(arr).convert("CMYK"), "JPEG", quality=85),
        jpegtran(jpg, "-restart", "1"),
        # Restart-indexed (a marker after every MCU, the index in APP15): mutants of the
        # index and of the MCUs reach the crop path's cut-down JPEGs.
        lancefeed.add_restart_index(jpg),
        lancefeed.add_restart_index(encode(photo(96, 64, seed=22), "JPEG", quality=85)),
        jpegtran(jpg, "-arithmetic"),
        lossless_jpeg(arr[..., 0]),
        encode(arr, "PNG"),
        png(arr, interlace=True),
        encode(arr, "WEBP", lossless=True),
        encode(arr, "WEBP", quality=70),
    ]


def markers(data: bytes) -> list[int]:
    return [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] not in (0x00, 0xFF)]


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    kind = int(rng.integers(6))
    if kind == 0:  # flip one to three bits
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(len(b)))
            b[i] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # truncate
        del b[int(rng.integers(1, len(b))) :]
    elif kind == 2:  # insert bytes (sometimes a marker's worth)
        i = int(rng.integers(len(b)))
        ins = bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
        b[i:i] = b"\xff" + ins[1:] if rng.random() < 0.5 else ins
    elif kind == 3:  # delete bytes
        i = int(rng.integers(len(b)))
        del b[i : i + int(rng.integers(1, 17))]
    elif kind == 4:  # rewrite a marker as another
        found = markers(bytes(b))
        if found:
            i = found[int(rng.integers(len(found)))]
            b[i + 1] = int(rng.choice([0xC0, 0xC2, 0xC3, 0xC4, 0xC9, 0xD0, 0xD8, 0xD9, 0xDA, 0xDB, 0xDD, 0xE0, 0xE2, 0xFE]))
    else:  # swap two marker-delimited pieces
        found = markers(bytes(b))
        if len(found) >= 3:
            i, j, k = sorted(int(x) for x in rng.choice(found, 3, replace=False))
            b = b[:i] + b[j:k] + b[i:j] + b[k:]
    return bytes(b)


def cases(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    originals = bases()
    out = []
    for _ in range(n):
        data = originals[int(rng.integers(len(originals)))]
        for _ in range(int(rng.integers(1, 3))):
            data = mutate(data, rng)
        out.append(data)
    return out


def regressions() -> list[bytes]:
    return [p.read_bytes() for p in sorted(REGRESSIONS.glob("*")) if p.is_file()] if REGRESSIONS.is_dir() else []


@pytest.mark.parametrize("seed", range(3))
def test_mutants_decode_or_raise_and_depend_on_their_bytes_alone(seed):
    blobs = cases(1000, seed) + regressions()
    decoded = 0
    for data in blobs:
        got = outcome(lambda: lancefeed.decode_image(data, max_pixels=MAX_PIXELS))
        assert got == alone(data, max_pixels=MAX_PIXELS), data[:64].hex()
        decoded += got[0] != "error"
    # The mutations keep the test honest only if both outcomes are common.
    assert 0.05 * len(blobs) < decoded < 0.95 * len(blobs)


@pytest.mark.parametrize("threads", [1, 2])
def test_mutants_through_the_crop_path_in_shuffled_batches(threads):
    blobs = cases(600, 10 + threads)
    reference = [alone_cropped(b, k, max_pixels=MAX_PIXELS) for k, b in enumerate(blobs)]
    rng = np.random.default_rng(threads)
    order = rng.permutation(len(blobs))
    for part in np.array_split(order, 7):
        out, info = lancefeed.decode_batch(
            [blobs[k] for k in part],
            transform=CROP,
            positions=part,
            num_threads=threads,
            on_error="skip",
            return_info=True,
            max_pixels=MAX_PIXELS,
        )
        errors = dict(info.errors)
        rows = iter(out)
        for i, k in enumerate(part):
            if i in errors:
                assert ("error", errors[i]) == reference[k]
            else:
                row = next(rows)
                assert (row.shape, row.tobytes()) == reference[k]


def test_mutants_padded_depend_on_their_bytes_alone():
    for data in cases(400, 99):
        got = outcome(lambda: lancefeed.decode_image(data, max_pixels=MAX_PIXELS, truncated="pad"))
        assert got == alone(data, max_pixels=MAX_PIXELS, truncated="pad"), data[:64].hex()


def test_headers_of_mutants_agree_with_their_decodes():
    for data in cases(500, 5):
        try:
            w, h, _ = lancefeed.image_info(data)
        except lancefeed.DecodeError:
            continue
        try:
            out = lancefeed.decode_image(data, max_pixels=MAX_PIXELS)
        except lancefeed.DecodeError:
            continue
        assert out.shape[:2] == (h, w)
