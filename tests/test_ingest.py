"""Ingest of image folders and COCO files: rows, columns, bad files, the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import lancefeed
from lancefeed.cli import main
from lancefeed.ingest import IngestError


def _image_bytes(width: int, height: int, fmt: str = "JPEG", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


@pytest.fixture()
def split_tree(tmp_path: Path) -> dict[str, tuple[bytes, int, int]]:
    """root/<split>/<label>/<file>: 5 images (one PNG) and one broken file."""
    root = tmp_path / "root"
    files = {
        "train/cat/a.jpg": (40, 30, "JPEG"),
        "train/cat/b.png": (21, 11, "PNG"),
        "train/dog/c.jpg": (33, 44, "JPEG"),
        "test/cat/d.jpg": (8, 9, "JPEG"),
        "test/dog/e.jpg": (16, 16, "JPEG"),
    }
    out = {}
    for i, (rel, (w, h, fmt)) in enumerate(files.items()):
        out[rel] = (_write(root / rel, _image_bytes(w, h, fmt, seed=i)), w, h)
    _write(root / "train" / "dog" / "broken.jpg", b"this is not an image")
    _write(root / "train" / "dog" / ".DS_Store", b"hidden files are ignored")
    return out


def test_folder_with_splits_round_trips(tmp_path: Path, split_tree: dict) -> None:
    summary = lancefeed.ingest_folder(tmp_path / "root", tmp_path / "out.lance", progress=False)
    assert summary.rows == 5
    assert summary.skipped[0][0] == "train/dog/broken.jpg"
    assert len(summary.skipped) == 1
    assert "skipped 1 file" in str(summary)

    table = lance.dataset(str(tmp_path / "out.lance")).to_table()
    assert table.schema.names == ["image", "filename", "label", "split", "width", "height"]
    rows = table.to_pylist()
    # Ordered by split, label, path.
    assert [r["filename"] for r in rows] == [
        "test/cat/d.jpg",
        "test/dog/e.jpg",
        "train/cat/a.jpg",
        "train/cat/b.png",
        "train/dog/c.jpg",
    ]
    for r in rows:
        data, w, h = split_tree[r["filename"]]
        assert r["image"] == data  # the encoded file, byte for byte
        assert (r["width"], r["height"]) == (w, h)
        split, label, _ = r["filename"].split("/")
        assert (r["split"], r["label"]) == (split, label)


def test_folder_without_split_level(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    _write(root / "ant" / "1.jpg", _image_bytes(5, 7))
    _write(root / "bee" / "nested" / "2.jpg", _image_bytes(9, 3))
    summary = lancefeed.ingest_folder(root, tmp_path / "o.lance", progress=False, batch_size=1)
    assert (summary.rows, summary.skipped) == (2, [])
    rows = lance.dataset(str(tmp_path / "o.lance")).to_table().to_pylist()
    assert [(r["filename"], r["label"], r["split"]) for r in rows] == [
        ("ant/1.jpg", "ant", None),
        ("bee/nested/2.jpg", "bee", None),
    ]
    assert [(r["width"], r["height"]) for r in rows] == [(5, 7), (9, 3)]


def test_strict_fails_on_broken_file_and_writes_nothing(tmp_path: Path, split_tree: dict) -> None:
    out = tmp_path / "strict.lance"
    with pytest.raises(IngestError, match="train/dog/broken.jpg"):
        lancefeed.ingest_folder(tmp_path / "root", out, strict=True, progress=False)
    assert not out.exists()


def test_existing_output_needs_overwrite(tmp_path: Path, split_tree: dict) -> None:
    out = tmp_path / "o.lance"
    lancefeed.ingest_folder(tmp_path / "root", out, progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        lancefeed.ingest_folder(tmp_path / "root", out, progress=False)
    lancefeed.ingest_folder(tmp_path / "root", out, progress=False, mode="append")
    assert lance.dataset(str(out)).count_rows() == 10
    lancefeed.ingest_folder(tmp_path / "root", out, progress=False, mode="overwrite")
    assert lance.dataset(str(out)).count_rows() == 5
    with pytest.raises(ValueError, match="mode must be one of"):
        lancefeed.ingest_folder(tmp_path / "root", out, mode="replace")


def test_chunked_commits_write_the_same_rows(tmp_path: Path, split_tree: dict) -> None:
    one = lancefeed.ingest_folder(tmp_path / "root", tmp_path / "one.lance", progress=False)
    many = lancefeed.ingest_folder(
        tmp_path / "root", tmp_path / "many.lance", progress=False, commit_every=2, batch_size=1
    )
    assert (one.rows, one.skipped) == (many.rows, many.skipped)
    a, b = (lance.dataset(str(tmp_path / n)) for n in ("one.lance", "many.lance"))
    # 6 files (one broken) in commits of 2: 3 versions, each a readable prefix.
    assert (a.version, b.version) == (1, 3)
    assert b.to_table().equals(a.to_table(), check_metadata=True)
    assert b.schema.field("image").metadata == {b"lance-encoding:compression": b"none"}
    firsts = [b.checkout_version(v).to_table(columns=["filename"]).column(0).to_pylist() for v in (1, 2)]
    assert firsts == [["test/cat/d.jpg", "test/dog/e.jpg"], ["test/cat/d.jpg", "test/dog/e.jpg",
                                                           "train/cat/a.jpg", "train/cat/b.png"]]
    with pytest.raises(ValueError, match="commit_every must be >= 1; got 0"):
        lancefeed.ingest_folder(tmp_path / "root", tmp_path / "z.lance", progress=False, commit_every=0)


def test_bad_layouts_are_explained(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    _write(flat / "a.jpg", _image_bytes(4, 4))
    with pytest.raises(ValueError, match="no sub-folders"):
        lancefeed.ingest_folder(flat, tmp_path / "o.lance", progress=False)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        lancefeed.ingest_folder(tmp_path / "missing", tmp_path / "o.lance", progress=False)


def _coco(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    _write(images / "1.jpg", _image_bytes(64, 48, seed=1))
    _write(images / "2.png", _image_bytes(30, 20, "PNG", seed=2))
    _write(images / "3.jpg", _image_bytes(10, 10, seed=3))
    _write(images / "4.jpg", b"\xff\xd8 not really a jpeg")
    coco = {
        "images": [
            {"id": 11, "file_name": "1.jpg", "width": 64, "height": 48},
            {"id": 12, "file_name": "2.png", "width": 30, "height": 20},
            {"id": 13, "file_name": "3.jpg", "width": 10, "height": 10},
            {"id": 14, "file_name": "4.jpg", "width": 10, "height": 10},
            {"id": 15, "file_name": "missing.jpg", "width": 10, "height": 10},
        ],
        "annotations": [
            {"id": 1, "image_id": 11, "bbox": [1.5, 2.0, 10.25, 20.0], "category_id": 3},
            {"id": 2, "image_id": 11, "bbox": [0, 0, 5, 5], "category_id": 7, "area": 20.5,
             "iscrowd": 1},
            # No id, area or iscrowd: the index in the file, w*h of the box, false.
            {"image_id": 12, "bbox": [3, 4, 5, 6], "category_id": 7},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(coco))
    return ann, images


def test_coco_round_trips(tmp_path: Path) -> None:
    ann, images = _coco(tmp_path)
    summary = lancefeed.ingest_coco(ann, images, tmp_path / "coco.lance", progress=False)
    assert summary.rows == 3
    assert sorted(p for p, _ in summary.skipped) == ["4.jpg", "missing.jpg"]
    table = lance.dataset(str(tmp_path / "coco.lance")).to_table()
    assert table.schema.names == [
        "image", "image_id", "filename", "width", "height", "boxes", "categories",
        "category_ids", "iscrowd", "area", "annotation_ids",
    ]
    new = {name: table.schema.field(name).type for name in table.schema.names[-4:]}
    assert new == {
        "category_ids": pa.list_(pa.int64()),
        "iscrowd": pa.list_(pa.bool_()),
        "area": pa.list_(pa.float32()),
        "annotation_ids": pa.list_(pa.int64()),
    }
    rows = table.to_pylist()
    assert [r["image_id"] for r in rows] == [11, 12, 13]
    assert [(r["width"], r["height"]) for r in rows] == [(64, 48), (30, 20), (10, 10)]
    assert rows[0]["boxes"] == [[1.5, 2.0, 10.25, 20.0], [0.0, 0.0, 5.0, 5.0]]
    assert rows[0]["categories"] == ["cat", "dog"]
    assert rows[1]["boxes"] == [[3.0, 4.0, 5.0, 6.0]] and rows[1]["categories"] == ["dog"]
    assert rows[2]["boxes"] == [] and rows[2]["categories"] == []
    assert [r["category_ids"] for r in rows] == [[3, 7], [7], []]
    assert [r["iscrowd"] for r in rows] == [[False, True], [False], []]
    assert [r["area"] for r in rows] == [[205.0, 20.5], [30.0], []]
    assert [r["annotation_ids"] for r in rows] == [[1, 2], [2], []]
    assert rows[1]["image"] == (images / "2.png").read_bytes()


def test_coco_strict_and_bad_annotations(tmp_path: Path) -> None:
    ann, images = _coco(tmp_path)
    with pytest.raises(IngestError, match=r"4\.jpg"):
        lancefeed.ingest_coco(ann, images, tmp_path / "c.lance", strict=True, progress=False)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "1.jpg"}],
                               "annotations": [{"id": 9, "image_id": 1, "bbox": [0, 0, 1, 1],
                                                "category_id": 5}],
                               "categories": []}))
    with pytest.raises(ValueError, match="category_id 5"):
        lancefeed.ingest_coco(bad, images, tmp_path / "c.lance", progress=False)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a COCO annotation file"):
        lancefeed.ingest_coco(bad, images, tmp_path / "c.lance", progress=False)


def test_cli_ingest(tmp_path: Path, split_tree: dict, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.lance"
    assert main(["ingest", "folder", str(tmp_path / "root"), str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert f"wrote 5 rows to {out}, skipped 1 file(s)" in captured.out
    assert "skipped train/dog/broken.jpg" in captured.err
    assert lance.dataset(str(out)).count_rows() == 5

    assert main(["ingest", "folder", str(tmp_path / "root"), str(out), "--no-progress"]) == 1
    assert "already exists" in capsys.readouterr().err

    code = main(["ingest", "folder", str(tmp_path / "root"), str(tmp_path / "s.lance"),
                 "--strict", "--no-progress"])
    assert code == 1
    assert "train/dog/broken.jpg" in capsys.readouterr().err

    ann, images = _coco(tmp_path)
    assert main(["ingest", "coco", str(ann), str(images), str(tmp_path / "c.lance"),
                 "--no-progress"]) == 0
    assert "wrote 3 rows" in capsys.readouterr().out


# --- segmentation masks ---------------------------------------------------------


def _rle_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE of a boolean mask: runs of 0, 1, 0, ... in column-major order."""
    flat = mask.ravel(order="F").astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def _rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE string (its rleToString), written out independently of lancefeed."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def _png_array(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.mode == "L"
    return np.array(img)


@pytest.fixture(params=["pycocotools", "numpy"])
def rasteriser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both polygon rasterisers: pycocotools (when installed) and the numpy fallback."""
    if request.param == "pycocotools":
        pytest.importorskip("pycocotools")
    else:
        monkeypatch.setattr("lancefeed.ingest.masks.POLYGONS", "numpy")
    return request.param


def _seg_coco(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A 12x10 image with a polygon, an uncompressed and a compressed RLE, overlapping."""
    h, w = 10, 12
    images = tmp_path / "images"
    _write(images / "a.png", _image_bytes(w, h, "PNG"))
    _write(images / "b.jpg", _image_bytes(6, 4))
    expected = np.zeros((h, w), np.uint8)
    # Polygon x 2..8, y 1..5: the pixels whose centres are inside are columns 2..7, rows 1..4.
    expected[1:5, 2:8] = 3
    crowd = np.zeros((h, w), bool)
    crowd[4:8, 6:11] = True  # overlaps the polygon at row 4, columns 6..7: 7 wins there
    expected[crowd] = 7
    rng = np.random.default_rng(5)
    speckle = rng.random((h, w)) < 0.3  # many short runs: multi-group, negative deltas
    expected[speckle] = 9
    compressed = _rle_string(_rle_counts(speckle))
    try:
        from pycocotools import mask as cm

        assert cm.encode(np.asfortranarray(speckle.astype(np.uint8)))["counts"].decode() == compressed
    except ImportError:
        pass
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": w, "height": h},
            {"id": 2, "file_name": "b.jpg"},  # no size in the JSON: the header's, 6x4
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "bbox": [2, 1, 6, 4], "category_id": 3,
             "segmentation": [[2, 1, 8, 1, 8, 5, 2, 5]]},
            {"id": 11, "image_id": 1, "bbox": [6, 4, 5, 4], "category_id": 7, "iscrowd": 1,
             "segmentation": {"counts": _rle_counts(crowd), "size": [h, w]}},
            {"id": 12, "image_id": 1, "bbox": [0, 0, 12, 10], "category_id": 9, "iscrowd": 1,
             "segmentation": {"counts": compressed, "size": [h, w]}},
            {"id": 13, "image_id": 1, "bbox": [0, 0, 12, 10], "category_id": 5},  # paints nothing
            {"id": 14, "image_id": 2, "bbox": [0, 0, 3, 4], "category_id": 5,
             "segmentation": [[0, 0, 3, 0, 3, 4, 0, 4]]},
        ],
        "categories": [{"id": i, "name": f"c{i}"} for i in (3, 5, 7, 9)],
    }
    ann = tmp_path / "seg.json"
    ann.write_text(json.dumps(coco))
    return ann, images, expected


def test_coco_masks(tmp_path: Path, rasteriser: str) -> None:
    ann, images, expected = _seg_coco(tmp_path)
    summary = lancefeed.ingest_coco(ann, images, tmp_path / "m.lance", masks=True, progress=False)
    assert (summary.rows, summary.skipped) == (2, [])
    table = lance.dataset(str(tmp_path / "m.lance")).to_table()
    assert table.schema.names[:3] == ["image", "mask", "image_id"]
    assert table.schema.field("mask").metadata == {b"lance-encoding:compression": b"none"}
    rows = table.to_pylist()
    np.testing.assert_array_equal(_png_array(rows[0]["mask"]), expected)
    second = np.zeros((4, 6), np.uint8)
    second[:, :3] = 5
    np.testing.assert_array_equal(_png_array(rows[1]["mask"]), second)
    assert rows[0]["iscrowd"] == [False, True, True, False]


def test_coco_mask_errors(tmp_path: Path) -> None:
    ann, images, _ = _seg_coco(tmp_path)
    coco = json.loads(ann.read_text())
    coco["annotations"][1]["segmentation"]["size"] = [10, 13]  # not the image's size
    ann.write_text(json.dumps(coco))
    summary = lancefeed.ingest_coco(ann, images, tmp_path / "a.lance", masks=True, progress=False)
    assert summary.rows == 1
    [(path, reason)] = summary.skipped
    assert path == "a.png" and "annotation 11" in reason and "[10, 13]" in reason
    with pytest.raises(IngestError, match=r"a\.png: .*annotation 11"):
        lancefeed.ingest_coco(ann, images, tmp_path / "b.lance", masks=True, strict=True, progress=False)
    # Without masks the segmentation is not read at all.
    assert lancefeed.ingest_coco(ann, images, tmp_path / "c.lance", progress=False).rows == 2

    coco["categories"].append({"id": 300, "name": "too-many"})
    coco["annotations"][0]["category_id"] = 300
    ann.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="category 'too-many' has id 300"):
        lancefeed.ingest_coco(ann, images, tmp_path / "d.lance", masks=True, progress=False)


def test_png_encoder_round_trips_through_pillow() -> None:
    from lancefeed.ingest.masks import encode_png

    arr = np.random.default_rng(0).integers(0, 256, (7, 13), dtype=np.uint8)
    np.testing.assert_array_equal(_png_array(encode_png(arr)), arr)
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((2, 2), np.int32))


def test_rle_decoding_is_exact() -> None:
    from lancefeed.ingest.masks import decode_rle_string, rasterise

    rng = np.random.default_rng(1)
    for trial in range(20):
        h, w = rng.integers(1, 40, 2)
        m = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        counts = _rle_counts(m)
        assert decode_rle_string(_rle_string(counts)) == counts
        np.testing.assert_array_equal(rasterise({"counts": counts, "size": [h, w]}, h, w), m)
        np.testing.assert_array_equal(rasterise({"counts": _rle_string(counts), "size": [h, w]}, h, w), m)
    with pytest.raises(ValueError, match="sum to 5; expected 2\\*3 = 6"):
        rasterise({"counts": [1, 4], "size": [2, 3]}, 2, 3)


# pycocotools.mask.decode warns on every call under numpy 2.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_polygon_fallback_matches_pycocotools() -> None:
    """The numpy scanline fill against COCO's rasteriser on random (also self-crossing,
    partly outside) polygons. They may differ only on pixels whose centre is within
    0.5 px of an edge, and on at most one pixel per 2 px of perimeter (measured: at most
    0.25 px away, 0.2 pixels per px of perimeter, over 500 polygons)."""
    cm = pytest.importorskip("pycocotools.mask")
    from lancefeed.ingest.masks import fill_polygon

    rng = np.random.default_rng(0)
    h, w = 30, 40
    centres = np.stack(np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5), -1).reshape(-1, 2)
    for trial in range(50):
        pts = rng.uniform([-3, -3], [w + 3, h + 3], (int(rng.integers(3, 10)), 2))
        ours = fill_polygon(pts, h, w)
        ref = cm.decode(cm.merge(cm.frPyObjects([pts.ravel().tolist()], h, w))).astype(bool)
        a, ab = pts, np.roll(pts, -1, axis=0) - pts
        t = np.clip(((centres[:, None] - a) * ab).sum(-1) / (ab**2).sum(-1), 0, 1)
        dist = np.linalg.norm(centres[:, None] - (a + t[..., None] * ab), axis=-1).min(1).reshape(h, w)
        differ = ours != ref
        assert (dist[differ] <= 0.5).all(), trial
        assert differ.sum() <= np.linalg.norm(ab, axis=1).sum() / 2, trial


def _seg_folder(tmp_path: Path, flat: bool) -> tuple[Path, Path, dict[str, bytes]]:
    """Images and their masks; returns the mask bytes by image filename."""
    root, masks = tmp_path / "img", tmp_path / "masks"
    prefix = "" if flat else "cat/"
    mask_bytes = {}
    for i, (name, mask_name, size) in enumerate(
        [("a.jpg", "a.png", (8, 6)), ("b.png", "b.webp", (5, 9)), ("c.jpg", None, (4, 4))]
    ):
        _write(root / prefix / name, _image_bytes(*size, "PNG" if name.endswith("png") else "JPEG", i))
        if mask_name:
            fmt = "PNG" if mask_name.endswith("png") else "WEBP"
            data = _write(masks / prefix / mask_name, _png_like(size, fmt))
            mask_bytes[prefix + name] = data
    _write(root / prefix / "d.jpg", _image_bytes(7, 7))
    _write(masks / prefix / "d.png", _png_like((7, 8), "PNG"))  # 7x8, not 7x7
    return root, masks, mask_bytes


def _png_like(size: tuple[int, int], fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full(size[::-1], 4, np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("flat", [False, True])
def test_folder_masks(tmp_path: Path, flat: bool) -> None:
    root, masks, mask_bytes = _seg_folder(tmp_path, flat)
    summary = lancefeed.ingest_folder(root, tmp_path / "o.lance", masks=masks, progress=False)
    prefix = "" if flat else "cat/"
    assert summary.rows == 2
    reasons = dict(summary.skipped)
    assert str(masks / prefix / "c.png") in reasons[prefix + "c.jpg"]
    assert "is 7x8 but the image is 7x7" in reasons[prefix + "d.jpg"]
    table = lance.dataset(str(tmp_path / "o.lance")).to_table()
    assert table.schema.names == ["image", "mask", "filename", "label", "split", "width", "height"]
    assert table.schema.field("mask").metadata == {b"lance-encoding:compression": b"none"}
    rows = table.to_pylist()
    assert [r["filename"] for r in rows] == [prefix + "a.jpg", prefix + "b.png"]
    assert [r["mask"] for r in rows] == [mask_bytes[r["filename"]] for r in rows]  # as is
    assert {r["label"] for r in rows} == {None if flat else "cat"}

    with pytest.raises(IngestError, match=rf"{prefix}c\.jpg: no mask .*c\.png"):
        lancefeed.ingest_folder(root, tmp_path / "s.lance", masks=masks, strict=True, progress=False)
    with pytest.raises(FileNotFoundError, match="masks folder"):
        lancefeed.ingest_folder(root, tmp_path / "s.lance", masks=tmp_path / "nope", progress=False)


def test_cli_ingest_masks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, masks, _ = _seg_folder(tmp_path, flat=True)
    out = tmp_path / "f.lance"
    assert main(["ingest", "folder", str(root), str(out), "--masks", str(masks), "--no-progress"]) == 0
    assert "skipped c.jpg: no mask" in capsys.readouterr().err
    assert lance.dataset(str(out)).schema.names[:2] == ["image", "mask"]

    ann, images, expected = _seg_coco(tmp_path)
    out = tmp_path / "c.lance"
    assert main(["ingest", "coco", str(ann), str(images), str(out), "--masks", "--no-progress"]) == 0
    assert "wrote 2 rows" in capsys.readouterr().out
    first = lance.dataset(str(out)).to_table().to_pylist()[0]
    np.testing.assert_array_equal(_png_array(first["mask"]), expected)


def test_cli_restart_index_and_resume(tmp_path: Path) -> None:
    from lancefeed.cli import main
    from lancefeed.restart import restart_index

    (tmp_path / "src" / "cat").mkdir(parents=True)
    for i in range(3):
        buf = io.BytesIO()
        Image.fromarray(np.full((40, 48, 3), 30 * i, np.uint8)).save(buf, "JPEG")
        (tmp_path / "src" / "cat" / f"{i}.jpg").write_bytes(buf.getvalue())
    out = str(tmp_path / "out.lance")
    assert main(["ingest", "folder", str(tmp_path / "src"), out, "--restart-index", "--commit-every", "2", "--no-progress"]) == 0
    ds = lance.dataset(out)
    assert all(restart_index(b) is not None for b in ds.to_table().column("image").to_pylist())
    assert len(ds.versions()) == 2  # two commits of at most 2 files
    # Resuming a finished ingest writes nothing; other options are refused.
    assert main(["ingest", "folder", str(tmp_path / "src"), out, "--restart-index", "--resume", "--no-progress"]) == 0
    assert lance.dataset(out).count_rows() == 3
    assert main(["ingest", "folder", str(tmp_path / "src"), out, "--resume", "--no-progress"]) == 1
