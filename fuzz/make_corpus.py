#!/usr/bin/env python3
"""Writes the fuzzers' seed corpus (fuzz/seeds/<target>/) and the fixed images of the
history check (fuzz/fixtures/). Both are committed; run this again only to change them.

Needs Pillow (with WebP) and numpy, and jpegtran and cjpeg (Debian: libjpeg-turbo-progs)
for the variants Pillow cannot write: arithmetic coding, restart markers, 4:4:0 and
4:1:1. A few formats are written by hand below: lossless JPEG (SOF3), PNG at bit depths
and interlacing Pillow does not write, and streams cut or stripped on purpose.

Each seed is an image behind the target's option bytes (see fuzz_targets/*.rs):
decode_full takes 1 byte, decode_batch 2.
"""

import io
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
TMP = Path(tempfile.mkdtemp(prefix="lancefeed-corpus-"))


def picture(w, h, seed=0, channels=3):
    """Smooth gradients plus noise and an edge: something for every DCT coefficient."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    planes = [
        (x * 255 // max(w - 1, 1)),
        (y * 255 // max(h - 1, 1)),
        ((x + y) % 32) * 8,
        np.where(x > w // 2, 200, 30),
    ]
    a = np.stack(planes[:channels], axis=-1).astype(np.int16)
    a += rng.integers(-20, 21, size=a.shape, dtype=np.int16)
    a = np.clip(a, 0, 255).astype(np.uint8)
    return a[..., 0] if channels == 1 else a


def save(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def tool(args, data):
    src = TMP / "in"
    src.write_bytes(data)
    return subprocess.run(args + [str(src)], check=True, capture_output=True).stdout


def segments(jpeg):
    """(marker, whole segment bytes) up to and including SOS; then the rest."""
    out, i = [], 2
    while True:
        marker = jpeg[i + 1]
        length = struct.unpack(">H", jpeg[i + 2:i + 4])[0]
        out.append((marker, jpeg[i:i + 2 + length]))
        i += 2 + length
        if marker == 0xDA:
            return out, jpeg[i:]


def without(jpeg, drop):
    segs, rest = segments(jpeg)
    return b"\xff\xd8" + b"".join(s for m, s in segs if m not in drop) + rest


def cut_in_scan(jpeg):
    """The stream cut halfway through its (first) scan's data."""
    segs, rest = segments(jpeg)
    return jpeg[: len(jpeg) - len(rest) // 2]


def tables_only(jpeg):
    """An abbreviated table-specification stream: SOI, DQT, DHT, EOI."""
    segs, _ = segments(jpeg)
    return b"\xff\xd8" + b"".join(s for m, s in segs if m in (0xDB, 0xC4)) + b"\xff\xd9"


def lossless_jpeg(a, predictor=1):
    """SOF3 (lossless, Huffman), 8-bit, one scan with all components interleaved."""
    a = a if a.ndim == 3 else a[..., None]
    h, w, nc = a.shape
    lengths = [5] * 17                       # categories 0..16, all 5-bit codes
    codes = list(range(17))
    bits, nbits = 0, 0
    data = bytearray()

    def put(value, n):
        nonlocal bits, nbits
        bits, nbits = (bits << n) | (value & ((1 << n) - 1)), nbits + n
        while nbits >= 8:
            byte = (bits >> (nbits - 8)) & 0xFF
            data.append(byte)
            if byte == 0xFF:
                data.append(0)
            nbits -= 8

    p = a.astype(np.int32)
    for y in range(h):
        for x in range(w):
            for c in range(nc):
                if y == 0 and x == 0:
                    pred = 128
                elif y == 0:
                    pred = p[y, x - 1, c]
                elif x == 0:
                    pred = p[y - 1, x, c]
                else:
                    ra, rb, rc = p[y, x - 1, c], p[y - 1, x, c], p[y - 1, x - 1, c]
                    pred = {1: ra, 2: rb, 3: rc, 4: ra + rb - rc, 7: (ra + rb) // 2}[predictor]
                diff = int(p[y, x, c] - pred)
                cat = abs(diff).bit_length()
                put(codes[cat], lengths[cat])
                if cat:
                    put(diff if diff > 0 else diff - 1, cat)
    if nbits:
        put(0xFF, 8 - nbits)

    def seg(marker, body):
        return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body

    counts = [0] * 16
    counts[4] = 17
    dht = seg(0xC4, bytes([0x00]) + bytes(counts) + bytes(range(17)))
    sof = seg(0xC3, struct.pack(">BHHB", 8, h, w, nc) + b"".join(bytes([c + 1, 0x11, 0]) for c in range(nc)))
    sos = seg(0xDA, bytes([nc]) + b"".join(bytes([c + 1, 0x00]) for c in range(nc)) + bytes([predictor, 0, 0]))
    return b"\xff\xd8" + sof + dht + sos + bytes(data) + b"\xff\xd9"


def png(a, bit_depth=8, color_type=None, palette=None, trns=None, interlace=False, size=None):
    """A PNG written by hand, for what Pillow cannot write (16-bit RGB(A), 2/4-bit, Adam7).
    `size` (width, height) overrides what IHDR says: a header that lies."""
    if a.ndim == 2:
        a = a[..., None]
    h, w, nc = a.shape
    if color_type is None:
        color_type = {1: 0, 2: 4, 3: 2, 4: 6}[nc]

    def raw_rows(img):
        rows = []
        for row in img:
            if bit_depth == 16:
                line = row.astype(">u2").tobytes()
            elif bit_depth == 8:
                line = row.astype(np.uint8).tobytes()
            else:                               # 1/2/4-bit, one sample per pixel
                vals, line, acc, n = row[:, 0], bytearray(), 0, 0
                for v in vals:
                    acc, n = (acc << bit_depth) | int(v), n + bit_depth
                    if n == 8:
                        line.append(acc)
                        acc, n = 0, 0
                if n:
                    line.append(acc << (8 - n))
                line = bytes(line)
            rows.append(b"\x00" + line)
        return b"".join(rows)

    if interlace:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        raw = b"".join(raw_rows(a[y0::dy, x0::dx]) for x0, y0, dx, dy in passes if a[y0::dy, x0::dx].size)
    else:
        raw = raw_rows(a)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    w, h = size or (w, h)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, int(interlace)))
    if palette is not None:
        out += chunk(b"PLTE", bytes(palette))
    if trns is not None:
        out += chunk(b"tRNS", bytes(trns))
    return out + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def jpegs():
    rgb = Image.fromarray(picture(35, 27, 1))
    big = Image.fromarray(picture(64, 48, 2))
    gray = Image.fromarray(picture(33, 25, 3, channels=1))
    cmyk = Image.fromarray(picture(24, 20, 4, channels=4), "CMYK")
    base = save(rgb, "JPEG", quality=75)
    ppm = save(big, "PPM")
    prog = save(big, "JPEG", quality=70, progressive=True)
    out = {
        "j_420.jpg": base,
        "j_444.jpg": save(rgb, "JPEG", quality=90, subsampling=0),
        "j_422.jpg": save(rgb, "JPEG", quality=80, subsampling=1),
        "j_420_64x48.jpg": save(big, "JPEG", quality=85),
        "j_gray.jpg": save(gray, "JPEG", quality=75),
        "j_cmyk.jpg": save(cmyk, "JPEG", quality=75),
        "j_progressive.jpg": prog,
        "j_progressive_gray.jpg": save(gray, "JPEG", quality=70, progressive=True),
        "j_optimized.jpg": save(rgb, "JPEG", quality=60, optimize=True),
        "j_1x1.jpg": save(Image.new("RGB", (1, 1), (200, 10, 90)), "JPEG"),
        "j_440.jpg": tool(["cjpeg", "-quality", "80", "-sample", "1x2"], ppm),
        "j_411.jpg": tool(["cjpeg", "-quality", "80", "-sample", "4x1"], ppm),
        "j_restart_rows.jpg": tool(["jpegtran", "-restart", "1"], base),
        "j_restart_blocks.jpg": tool(["jpegtran", "-restart", "3B"], save(big, "JPEG", quality=80)),
        "j_arithmetic.jpg": tool(["jpegtran", "-arithmetic"], base),
        "j_arithmetic_progressive.jpg": tool(["jpegtran", "-arithmetic", "-progressive"], save(big, "JPEG", quality=80)),
        "j_progressive_restart.jpg": tool(["jpegtran", "-progressive", "-restart", "2B"], base),
        "j_lossless_gray.jpg": lossless_jpeg(picture(17, 13, 5, channels=1)),
        "j_lossless_rgb.jpg": lossless_jpeg(picture(12, 9, 6), predictor=4),
        "j_exif_icc.jpg": save(rgb, "JPEG", quality=50, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00",
                               icc_profile=b"\x00" * 128),
        # No DHT: an MJPEG frame, which libjpeg-turbo decodes with the standard tables.
        "j_no_dht.jpg": without(base, {0xC4}),
        # No DQT: an error, or (on a reused handle) the previous image's tables.
        "j_no_dqt.jpg": without(base, {0xDB}),
        "j_tables_only.jpg": tables_only(save(rgb, "JPEG", quality=5, optimize=True)),
        "j_truncated.jpg": cut_in_scan(base),
        "j_truncated_progressive.jpg": cut_in_scan(prog),
        "j_junk_after_soi.jpg": b"\xff\xd8\xff" + bytes(range(0x40, 0x80)),
        # Header says 30000x30000: refused by max_pixels before any allocation.
        "j_huge_header.jpg": base.replace(struct.pack(">HH", 27, 35), struct.pack(">HH", 30000, 30000), 1),
    }
    return out


def pngs():
    rgb = picture(29, 21, 7)
    rgba = picture(19, 17, 8, channels=4)
    gray = picture(23, 19, 9, channels=1)
    pal = Image.fromarray(rgb).quantize(16)
    pal_trns = Image.fromarray(rgb).quantize(8)
    pal_trns.info["transparency"] = 2
    idx4 = (gray // 16)[..., None]
    out = {
        "p_rgb8.png": save(Image.fromarray(rgb), "PNG"),
        "p_rgba8.png": save(Image.fromarray(rgba, "RGBA"), "PNG"),
        "p_l8.png": save(Image.fromarray(gray), "PNG"),
        "p_la8.png": save(Image.fromarray(picture(21, 15, 10, channels=2), "LA"), "PNG"),
        "p_palette.png": save(pal, "PNG"),
        "p_palette_trns.png": save(pal_trns, "PNG"),
        "p_bilevel.png": save(Image.fromarray(gray).convert("1"), "PNG"),
        "p_l16.png": save(Image.fromarray(gray.astype(np.uint16) * 257), "PNG"),
        "p_rgb16.png": png(rgb.astype(np.uint16) * 257 + 3, bit_depth=16),
        "p_rgba16.png": png(rgba.astype(np.uint16) * 257, bit_depth=16),
        "p_la16_interlaced.png": png(picture(13, 11, 11, channels=2).astype(np.uint16) * 257, bit_depth=16, interlace=True),
        "p_rgb8_interlaced.png": png(rgb, interlace=True),
        "p_gray2.png": png((gray // 64)[..., None], bit_depth=2, color_type=0),
        "p_gray4_interlaced.png": png(idx4, bit_depth=4, color_type=0, interlace=True),
        "p_palette4.png": png(idx4, bit_depth=4, color_type=3, palette=list(range(48)), trns=[0, 128, 255]),
        "p_rgb_trns.png": png(rgb, trns=[0, 30, 0, 30, 0, 30]),
    }
    out["p_truncated.png"] = out["p_rgb8.png"][: len(out["p_rgb8.png"]) // 2]
    out["p_huge_header.png"] = png(np.zeros((1, 1), np.uint8), size=(60000, 60000))
    return out


def webps():
    rgb = Image.fromarray(picture(27, 19, 12))
    rgba = Image.fromarray(picture(17, 13, 13, channels=4), "RGBA")
    frames = [rgb, Image.fromarray(picture(27, 19, 14))]
    return {
        "w_lossy.webp": save(rgb, "WEBP", quality=70),
        "w_lossy_alpha.webp": save(rgba, "WEBP", quality=70),
        "w_lossless.webp": save(rgb, "WEBP", lossless=True),
        "w_lossless_alpha.webp": save(rgba, "WEBP", lossless=True),
        "w_animated.webp": save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50, quality=50),
        "w_gray.webp": save(rgb.convert("L"), "WEBP", quality=50),
    }


def fixtures():
    """Decoded around each input by the history check: a valid JPEG with the standard
    tables; then a progressive one with optimized tables, one cut mid-scan and a
    tables-only stream (what a reused handle must forget)."""
    a = Image.fromarray(picture(48, 40, 20))
    b = Image.fromarray(picture(57, 23, 21))
    prog = save(b, "JPEG", quality=15, progressive=True, optimize=True, subsampling=0)
    cut = save(Image.fromarray(picture(40, 56, 22)), "JPEG", quality=95)
    return {
        "history_a.jpg": save(a, "JPEG", quality=75),
        "history_b_progressive.jpg": prog,
        "history_b_truncated.jpg": cut_in_scan(cut),
        "history_b_tables.jpg": tables_only(save(a, "JPEG", quality=3, optimize=True, subsampling=0)),
    }


def main():
    images = {**jpegs(), **pngs(), **webps()}
    for name, target, nflags in [("decode_full", "decode_full", 1), ("decode_batch", "decode_batch", 2)]:
        d = HERE / "seeds" / target
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for i, (file, data) in enumerate(sorted(images.items())):
            if nflags == 1:
                # bit 0: gray, bit 1: pad_truncated
                prefix = bytes([i % 4])
            else:
                # bit 0 gray, 1 pad, 2 dct_scaling, 3 decode_crop, 4-6 ops, 7 skip_errors; then the seed
                prefix = bytes([(0x0C | (i % 4) | ((i % 8) << 4)) ^ (0x0C if i % 5 == 4 else 0), i])
            (d / file).write_bytes(prefix + data)
    fx = HERE / "fixtures"
    fx.mkdir(exist_ok=True)
    for file, data in fixtures().items():
        (fx / file).write_bytes(data)
    total = sum(p.stat().st_size for p in (HERE / "seeds").rglob("*") if p.is_file())
    print(f"{len(images)} images, {total} bytes of seeds", file=sys.stderr)
    shutil.rmtree(TMP)


if __name__ == "__main__":
    main()
