"""Restart-indexed JPEGs: the rewrite keeps every pixel, crops through the index equal
crops without it, and a broken index is ignored rather than trusted."""

from __future__ import annotations

import io
import shutil
import subprocess

import lance
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import lancefeed
from lancefeed.restart import add_restart_index, index_dataset, restart_index

from images import photo


def encode(img: np.ndarray | Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(buf, "JPEG", **kw)
    return buf.getvalue()


def jpegtran(data: bytes, *args: str) -> bytes:
    if shutil.which("jpegtran") is None:
        pytest.skip("jpegtran (libjpeg-turbo-progs) is not installed")
    return subprocess.run(["jpegtran", *args], input=data, capture_output=True, check=True).stdout


def variants() -> dict[str, bytes]:
    base = photo(333, 251, seed=1)
    return {
        "420": encode(base, quality=85),
        "444": encode(base, quality=95, subsampling=0),
        "422": encode(base, quality=75, subsampling=1),
        "gray": encode(Image.fromarray(base).convert("L"), quality=90),
        "optimized": encode(base, quality=85, optimize=True),
        "progressive": encode(base, quality=85, progressive=True),
        "cmyk": encode(Image.fromarray(base).convert("CMYK"), quality=90),
        "tiny": encode(photo(9, 7, seed=2), quality=90),
        "arithmetic": jpegtran(encode(base, quality=85), "-arithmetic"),
        "restarts-already": jpegtran(encode(base, quality=85), "-restart", "3B"),
    }


def pillow(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    return np.asarray(img.convert("RGB"))


@pytest.mark.parametrize("name", sorted(variants()))
def test_the_rewrite_keeps_every_pixel_in_every_decoder(name):
    data = variants()[name]
    indexed = add_restart_index(data)
    rows, offsets = restart_index(indexed)
    w, h = Image.open(io.BytesIO(data)).size
    assert len(offsets) == -(-h // rows) and offsets[0] == 0  # an offset per MCU row
    # A restart marker after every MCU (numbered 0-7 in turn), and each row after the
    # first starts right after one: the marker that ends the row above's last MCU.
    start = indexed.index(b"\xff\xda")
    start += 2 + int.from_bytes(indexed[start + 2 : start + 4], "big")
    scan = indexed[start : indexed.index(b"\xff\xd9", start)]
    markers = [i for i in range(len(scan) - 1) if scan[i] == 0xFF and 0xD0 <= scan[i + 1] <= 0xD7]
    assert [scan[i + 1] for i in markers] == [0xD0 + k % 8 for k in range(len(markers))]
    per_row = (len(markers) + 1) // len(offsets)
    assert per_row * len(offsets) == len(markers) + 1 and per_row * 8 >= w // 4
    assert offsets[1:] == [markers[(k + 1) * per_row - 1] + 2 for k in range(len(offsets) - 1)]
    np.testing.assert_array_equal(pillow(indexed), pillow(data))  # another decoder
    np.testing.assert_array_equal(lancefeed.decode_image(indexed), lancefeed.decode_image(data))
    # A marker after every MCU costs ~2.5 bytes an MCU (the marker, the byte padding,
    # absolute DC values): ~5-8% for colour photographs, ~10% for gray ones, whose MCU is
    # a single block. Arithmetic coding is ~10-15% tighter than the Huffman it becomes.
    bound = {"arithmetic": 1.25, "gray": 1.12, "progressive": 1.12}.get(name, 1.08)
    assert len(indexed) < bound * len(data) + 600


def test_lossless_and_non_jpeg_are_refused_with_the_reason():
    with pytest.raises(lancefeed.DecodeError, match="lossless JPEG"):
        add_restart_index(_lossless())
    with pytest.raises(lancefeed.DecodeError):
        add_restart_index(b"\x89PNG\r\n\x1a\n....")


def _lossless() -> bytes:
    from images import lossless_jpeg

    return lossless_jpeg(photo(40, 30, seed=3))


@pytest.mark.parametrize("dct_scaling", [True, False])
def test_crops_through_the_index_equal_crops_without(dct_scaling):
    items = [variants()[n] for n in ("420", "444", "422", "gray", "progressive", "cmyk")]
    items += [encode(photo(640, 480, seed=s), quality=q) for s, q in ((5, 90), (6, 60))]
    # Sizes that end in a partial MCU column and row, for each sampling.
    items += [encode(photo(517, 389, seed=8), quality=80, subsampling=k) for k in (0, 1, 2)]
    items += [encode(Image.fromarray(photo(203, 130, seed=9)).convert("L"), quality=80)]
    indexed = [add_restart_index(b) for b in items]
    for seed in range(10):
        for t in (
            lancefeed.Compose([lancefeed.RandomResizedCrop(96), lancefeed.RandomHorizontalFlip()]),
            lancefeed.Compose([lancefeed.RandomResizedCrop(32, scale=(0.01, 0.05))]),
            lancefeed.Compose([lancefeed.RandomResizedCrop(48, scale=(0.3, 0.6), ratio=(0.2, 5.0))]),
            lancefeed.Compose([lancefeed.Resize(200), lancefeed.CenterCrop(64)]),
        ):
            a = lancefeed.decode_batch(items, transform=t, seed=seed, dct_scaling=dct_scaling)
            b = lancefeed.decode_batch(indexed, transform=t, seed=seed, dct_scaling=dct_scaling)
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("subsampling", [0, 1, 2])
def test_crop_edges_on_and_beside_mcu_row_boundaries(subsampling):
    # A crop leaves out the MCU row above (below) unless its first (last) pixel row is
    # an MCU row's first (last): only those rows' chroma upsampling reads the row
    # beyond. Centre crops of a 480-row image put the top at rows 12-20 and the bottom
    # at 460-468, on, just inside and just outside the 16-row boundaries at 16 and 464.
    data = encode(photo(400, 480, seed=11), quality=90, subsampling=subsampling)
    indexed = add_restart_index(data)
    full = lancefeed.decode_image(data)
    for h in range(440, 457):
        t = lancefeed.CenterCrop((h, 200))
        a = lancefeed.decode_batch([data], transform=t)
        b = lancefeed.decode_batch([indexed], transform=t)
        np.testing.assert_array_equal(a, b, err_msg=f"crop height {h}")
        # Away from its left and right edges (where a cropped decode's horizontal
        # upsampling sees the region's edge as the image's), the crop is the full decode's.
        top = int(round((480 - h) / 2.0))
        np.testing.assert_array_equal(b[0, :, 8:-8], full[top : top + h, 100 + 8 : 300 - 8], err_msg=f"crop height {h}")


def test_a_broken_index_is_ignored_not_trusted():
    data = encode(photo(320, 480, seed=7), quality=90)
    indexed = bytearray(add_restart_index(data))
    # The centre crop's rows include row 5; the random ones may not.
    ts = (lancefeed.RandomResizedCrop(64, scale=(0.05, 0.1)), lancefeed.CenterCrop(300))
    want = [lancefeed.decode_batch([data] * 8, transform=t, seed=1) for t in ts]
    # Version 2: signature, version, MCU height, width, MCUs per row, row count, offsets.
    at = indexed.index(b"LFRSTIDX") + 9 + 1 + 2 + 2 + 2 + 4 + 5 * 4
    start = indexed.index(b"\xff\xda")
    start += 2 + int.from_bytes(indexed[start + 2 : start + 4], "big")
    row5 = int.from_bytes(indexed[at : at + 4], "big")
    # Row 5 pointed 7 bytes on (not after a marker), or at its second MCU (after a
    # marker, but the wrong one): the checks fail and the whole image decodes.
    second = indexed.index(b"\xff", start + row5) - start + 2
    while not 0xD0 <= indexed[start + second - 1] <= 0xD7:
        second = indexed.index(b"\xff", start + second) - start + 2
    for wrong in (row5 + 7, second):
        broken = bytearray(indexed)
        broken[at : at + 4] = wrong.to_bytes(4, "big")
        for t, a in zip(ts, want):
            b = lancefeed.decode_batch([bytes(broken)] * 8, transform=t, seed=1)
            np.testing.assert_array_equal(a, b)


def test_index_dataset_rewrites_the_jpegs_and_keeps_the_rest(tmp_path):
    png = io.BytesIO()
    Image.fromarray(photo(20, 20, seed=8)).save(png, "PNG")
    jpegs = [encode(photo(200, 150, seed=s), quality=90) for s in range(5)]
    images = jpegs + [png.getvalue(), _lossless()]
    src, out = str(tmp_path / "src.lance"), str(tmp_path / "out.lance")
    lance.write_dataset(pa.table({"image": pa.array(images, pa.binary()), "label": list("abcdefg")}), src)
    s = index_dataset(src, out, progress=False)
    assert (s.rows, s.indexed, s.kept) == (7, 5, 2) and s.reasons == {"lossless JPEG (SOF3) has no restart index (baseline Huffman only)": 1}
    table = lance.dataset(out).to_table()
    assert table.column("label").to_pylist() == list("abcdefg")
    got = table.column("image").to_pylist()
    assert got[5:] == images[5:]  # kept as they were
    for a, b in zip(got[:5], jpegs):
        assert restart_index(a) is not None
        np.testing.assert_array_equal(pillow(a), pillow(b))
    loader = lancefeed.DataLoader(out, 7, transform=lancefeed.Resize((16, 16)))
    images_out, _ = next(iter(loader))
    assert images_out.shape == (7, 16, 16, 3)


def test_ingest_can_store_restart_indexed_jpegs(tmp_path):
    (tmp_path / "src" / "cat").mkdir(parents=True)
    files = []
    for i in range(3):
        path = tmp_path / "src" / "cat" / f"{i}.jpg"
        Image.fromarray(photo(90, 70, seed=i)).save(path, quality=90)
        files.append(path.read_bytes())
    Image.fromarray(photo(30, 20, seed=9)).save(tmp_path / "src" / "cat" / "z.png")
    lancefeed.ingest_folder(tmp_path / "src", tmp_path / "out.lance", restart_index=True, progress=False)
    table = lance.dataset(str(tmp_path / "out.lance")).to_table()
    stored = table.column("image").to_pylist()
    assert [restart_index(b) is not None for b in stored] == [True, True, True, False]  # the PNG as it was
    for a, b in zip(stored, files):
        np.testing.assert_array_equal(pillow(a), pillow(b))
