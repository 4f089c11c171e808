"""Ingest of image folders and COCO files: rows, columns, bad files, the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import lance
import numpy as np
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
            {"id": 2, "image_id": 11, "bbox": [0, 0, 5, 5], "category_id": 7},
            {"id": 3, "image_id": 12, "bbox": [3, 4, 5, 6], "category_id": 7},
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
        "image", "image_id", "filename", "width", "height", "boxes", "categories"
    ]
    rows = table.to_pylist()
    assert [r["image_id"] for r in rows] == [11, 12, 13]
    assert [(r["width"], r["height"]) for r in rows] == [(64, 48), (30, 20), (10, 10)]
    assert rows[0]["boxes"] == [[1.5, 2.0, 10.25, 20.0], [0.0, 0.0, 5.0, 5.0]]
    assert rows[0]["categories"] == ["cat", "dog"]
    assert rows[1]["boxes"] == [[3.0, 4.0, 5.0, 6.0]] and rows[1]["categories"] == ["dog"]
    assert rows[2]["boxes"] == [] and rows[2]["categories"] == []
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
