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
