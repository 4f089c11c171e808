"""Test images made on the spot: realistic-looking content, every encoding variant."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import zlib

import numpy as np
from PIL import Image


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An (H, W, 3) uint8 image with smooth gradients, edges and noise, like a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 128 + 100 * np.sin(x / (7 + seed % 5)) * np.cos(y / 11)
    g = 255 * x / max(width - 1, 1)
    b = 255 * y / max(height - 1, 1)
    img = np.stack([r, g, b], axis=-1)
    cx, cy = width * 0.6, height * 0.4
    disk = (x - cx) ** 2 + (y - cy) ** 2 < (min(width, height) / 4) ** 2
    img[disk] = [250, 40, 30]
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(arr: np.ndarray | Image.Image, fmt: str, **kwargs) -> bytes:
    img = arr if isinstance(arr, Image.Image) else Image.fromarray(arr)
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def jpeg(width: int = 64, height: int = 48, seed: int = 0, **kwargs) -> bytes:
    kwargs.setdefault("quality", 90)
    return encode(photo(width, height, seed), "JPEG", **kwargs)


def pillow_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def jpegtran(data: bytes, *args: str) -> bytes:
    """Re-encodes losslessly with libjpeg-turbo's jpegtran (arithmetic coding, restarts)."""
    exe = shutil.which("jpegtran")
    if exe is None:
        raise RuntimeError("jpegtran not found: install Debian's libjpeg-turbo-progs")
    return subprocess.run([exe, *args], input=data, capture_output=True, check=True).stdout


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png(arr: np.ndarray, *, interlace: bool = False) -> bytes:
    """A PNG of a uint8 or uint16 array, (H, W) gray or (H, W, C) with C in 1..4, written
    by hand so that 16-bit colour and Adam7 interlacing (which Pillow cannot write) are covered."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, c = arr.shape
    depth = 16 if arr.dtype == np.uint16 else 8
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    big = arr.astype(">u2") if depth == 16 else arr

    def rows(img: np.ndarray) -> bytes:
        return b"".join(b"\x00" + img[y].tobytes() for y in range(img.shape[0]))

    if interlace:
        raw = b"".join(
            rows(big[y0::dy, x0::dx]) for x0, y0, dx, dy in ADAM7 if big[y0::dy, x0::dx].size
        )
    else:
        raw = rows(big)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, int(interlace))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a size, with a tiny body: a decompression bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b"")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# --- JPEG streams that Pillow cannot write, written out by hand -----------------------

# The standard luminance DC table (ITU T.81 K.3): code lengths per category 0..11.
_DC_BITS = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
_DC_VALS = list(range(12))


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def _huffman_codes(bits: list[int], vals: list[int]) -> dict[int, tuple[int, int]]:
    """symbol -> (code, length), canonical as in T.81 Annex C."""
    codes, code, k = {}, 0, 0
    for length in range(1, 17):
        for _ in range(bits[length - 1]):
            codes[vals[k]] = (code, length)
            code, k = code + 1, k + 1
        code <<= 1
    return codes


def lossless_jpeg(arr: np.ndarray, predictor: int = 1) -> bytes:
    """A lossless (SOF3) 8-bit JPEG of an (H, W) or (H, W, 3) uint8 array: one
    interleaved scan, predictor 1-7, no point transform, the standard DC table."""
    img = arr[:, :, None] if arr.ndim == 2 else arr
    h, w, nc = img.shape
    x = img.astype(np.int64)
    pred = np.zeros_like(x)
    a = np.zeros_like(x)
    b = np.zeros_like(x)
    c = np.zeros_like(x)
    a[:, 1:] = x[:, :-1]
    b[1:, :] = x[:-1, :]
    c[1:, 1:] = x[:-1, :-1]
    pred = {1: a, 2: b, 3: c, 4: a + b - c, 5: a + ((b - c) >> 1), 6: b + ((a - c) >> 1), 7: (a + b) >> 1}[predictor]
    pred = pred.copy()
    pred[0, :] = a[0, :]  # first row: the left neighbour
    pred[:, 0] = b[:, 0]  # first column: the one above
    pred[0, 0] = 128  # 2^(P - 1)
    diff = (x - pred).reshape(-1)  # interleaved: pixel by pixel, component by component
    codes = _huffman_codes(_DC_BITS, _DC_VALS)
    out, acc, nbits = bytearray(), 0, 0

    def put(value: int, length: int) -> None:
        nonlocal acc, nbits
        acc, nbits = (acc << length) | (value & ((1 << length) - 1)), nbits + length
        while nbits >= 8:
            byte = (acc >> (nbits - 8)) & 0xFF
            out.append(byte)
            if byte == 0xFF:
                out.append(0)
            nbits -= 8

    for d in diff.tolist():
        size = abs(d).bit_length()
        put(*codes[size])
        if size:
            put(d if d > 0 else d - 1, size)
    if nbits:
        put(0x7F, 8 - nbits)  # pad with 1 bits
    ids = [1] if nc == 1 else [1, 2, 3]
    sof = struct.pack(">BHHB", 8, h, w, nc) + b"".join(bytes([i, 0x11, 0]) for i in ids)
    dht = bytes([0x00]) + bytes(_DC_BITS) + bytes(_DC_VALS)
    sos = bytes([nc]) + b"".join(bytes([i, 0x00]) for i in ids) + bytes([predictor, 0, 0])
    return b"\xff\xd8" + _segment(0xC4, dht) + _segment(0xC3, sof) + _segment(0xDA, sos) + bytes(out) + b"\xff\xd9"


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, whole segment bytes) from SOI up to and including SOS; the entropy-coded
    data and what follows come as one last item with marker 0."""
    out, i = [(0xD8, data[:2])], 2
    while i < len(data):
        if data[i] != 0xFF:
            raise ValueError(f"no marker at {i}")
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        out.append((marker, data[i : i + 2 + length]))
        i += 2 + length
        if marker == 0xDA:
            out.append((0, data[i:]))
            break
    return out


def without_segments(data: bytes, *markers: int) -> bytes:
    """The JPEG with every segment of the given markers (0xC4 DHT, 0xDB DQT...) left out."""
    return b"".join(seg for m, seg in jpeg_segments(data) if m not in markers)


def with_segment(data: bytes, marker: int, body: bytes, before: int = 0xDB) -> bytes:
    """The JPEG with a segment inserted before the first segment of marker ``before``."""
    segs = jpeg_segments(data)
    at = next(k for k, (m, _) in enumerate(segs) if m == before)
    return b"".join(s for _, s in segs[:at]) + _segment(marker, body) + b"".join(s for _, s in segs[at:])


def icc_chunk(seq: int, count: int, payload: bytes) -> bytes:
    """The body of an APP2 ICC_PROFILE chunk claiming to be chunk ``seq`` of ``count``."""
    return b"ICC_PROFILE\x00" + bytes([seq, count]) + payload


def exif_orientation(data: bytes, orientation: int) -> bytes:
    """The JPEG with an EXIF APP1 segment that says ``orientation`` (1-8)."""
    img = Image.open(io.BytesIO(data))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def history_corpus() -> dict[str, bytes]:
    """Every kind of blob a scraped training set holds, good and bad: the JPEG, PNG and
    WebP variants, lossless JPEG, broken ICC chunks, extra bytes before markers, JPEGs
    without DHT or DQT, tables-only streams, junk after SOI, truncated and corrupt files.
    Small, so that a test can decode them many times over."""
    arr = photo(45, 33, seed=11)
    big = photo(160, 120, seed=12)
    base = encode(arr, "JPEG", quality=85)
    other = encode(photo(45, 33, seed=13), "JPEG", quality=60, optimize=True)  # other tables
    c: dict[str, bytes] = {
        "jpeg-420": base,
        "jpeg-444": encode(arr, "JPEG", quality=95, subsampling=0),
        "jpeg-422": encode(arr, "JPEG", quality=75, subsampling=1),
        "jpeg-optimized": other,
        "jpeg-progressive": encode(arr, "JPEG", quality=85, progressive=True),
        "jpeg-gray": encode(Image.fromarray(arr).convert("L"), "JPEG", quality=90),
        "jpeg-cmyk": encode(Image.fromarray(arr).convert("CMYK"), "JPEG", quality=90),
        "jpeg-big": encode(big, "JPEG", quality=90),
        "jpeg-big-progressive": encode(big, "JPEG", quality=80, progressive=True),
        "jpeg-restart": jpegtran(base, "-restart", "1B"),
        "jpeg-arithmetic": jpegtran(base, "-arithmetic"),
        "jpeg-lossless-gray": lossless_jpeg(arr[..., 1]),
        "jpeg-lossless-rgb": lossless_jpeg(arr, predictor=4),
        "jpeg-exif-rotated": exif_orientation(base, 6),
        "jpeg-icc-bad-sequence": with_segment(base, 0xE2, icc_chunk(2, 1, b"not a profile")),
        "jpeg-icc-inconsistent": with_segment(
            with_segment(base, 0xE2, icc_chunk(1, 2, b"abc")), 0xE2, icc_chunk(1, 3, b"def")
        ),
        "jpeg-extra-bytes": base[: base.index(b"\xff\xdb")] + b"\x00junk" + base[base.index(b"\xff\xdb") :],
        "jpeg-ff-fill": base[: base.index(b"\xff\xdb")] + b"\xff\xff\xff" + base[base.index(b"\xff\xdb") :],
        "jpeg-no-dht": without_segments(encode(arr, "JPEG", quality=80), 0xC4),
        "jpeg-no-dht-other": without_segments(encode(photo(45, 33, seed=14), "JPEG", quality=80), 0xC4),
        "jpeg-no-dqt": without_segments(base, 0xDB),
        "jpeg-tables-only": b"".join(s for m, s in jpeg_segments(other) if m in (0xD8, 0xDB, 0xC4)) + b"\xff\xd9",
        "jpeg-junk-after-soi": b"\xff\xd8\xff\xe0 not really a jpeg",
        "jpeg-truncated-header": base[:120],
        "jpeg-truncated-data": base[: len(base) * 2 // 3],
        "jpeg-truncated-progressive": encode(big, "JPEG", quality=80, progressive=True)[:1500],
        "jpeg-bogus-dht": with_segment(base, 0xC4, b"\x00" + b"\xff" * 16 + b"\x00" * 20, before=0xC0),
        "jpeg-bogus-dqt": with_segment(base, 0xDB, b"\x07" + b"\x01" * 64, before=0xC0),
        "jpeg-corrupt-data": base[:400] + bytes(range(200)) + base[600:],
        "jpeg-zero-width": base.replace(b"\xff\xc0\x00\x11\x08\x00\x21\x00\x2d", b"\xff\xc0\x00\x11\x08\x00\x21\x00\x00"),
        "png-rgb": encode(arr, "PNG"),
        "png-palette": encode(Image.fromarray(arr).quantize(32), "PNG"),
        "png-gray16": png(arr[..., 0].astype(np.uint16) * 257),
        "png-interlaced": png(arr, interlace=True),
        "png-truncated": encode(arr, "PNG")[:700],
        "png-bad-crc": encode(arr, "PNG")[:40] + b"\x00" + encode(arr, "PNG")[41:],
        "webp-lossless": encode(arr, "WEBP", lossless=True),
        "webp-lossy": encode(arr, "WEBP", quality=80),
        "webp-truncated": encode(arr, "WEBP", quality=80)[:100],
        "empty": b"",
        "gif": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
    }
    return c
