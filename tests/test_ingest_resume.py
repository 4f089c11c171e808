"""Interrupted ingests: what a kill leaves behind, the refusals, and resume=True.

The kills run the ingest in a child process (``sys.executable -c CHILD``). The child
slows the reader down by wrapping ``lancefeed.ingest.common.load`` in itself (no hook in
the library): each file sleeps a little, and from the file at ``stop_at`` (in ingest
order) on, the reader thread prints ``stopped`` and hangs, so the parent knows that
exactly ``stop_at // commit_every`` chunks can commit before it sends SIGKILL.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lance
import numpy as np
import pytest
from PIL import Image

import lancefeed
from lancefeed.ingest import IngestError

COMMIT_EVERY = 25
LABELS = ("ant", "bee", "cat")
PER_LABEL = 100

CHILD = r"""
import faulthandler, sys, threading, time
from pathlib import Path
import lancefeed.ingest as ingest
import lancefeed.ingest.common as common
import lancefeed.ingest.folder as folder

# A child that is never killed (a stuck test) ends itself, printing where it was.
faulthandler.dump_traceback_later(600, exit=True)

root, out, commit_every, stop_at, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
order = {it.extra["filename"]: i for i, it in enumerate(folder.folder_items(Path(root)))}
real_load = common.load

def slow_load(item, *args):
    if order[item.extra["filename"]] >= stop_at:
        print("stopped", flush=True)
        threading.Event().wait()  # hang until killed
    time.sleep(delay)
    loaded = real_load(item, *args)
    print("loaded", flush=True)
    return loaded

common.load = slow_load
ingest.ingest_folder(root, out, progress=False, commit_every=commit_every, batch_size=8, num_threads=2)
print("finished", flush=True)
"""


def _image(seed: int, fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (6 + seed % 5, 7, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture()
def tree(tmp_path: Path) -> tuple[Path, list[str]]:
    """300 small PNG/JPEG files in 3 label folders and one broken file; the expected filenames."""
    root = tmp_path / "root"
    names = []
    for li, label in enumerate(LABELS):
        (root / label).mkdir(parents=True)
        for i in range(PER_LABEL):
            fmt = "PNG" if i % 2 else "JPEG"
            name = f"{label}/{i:03d}.{'png' if fmt == 'PNG' else 'jpg'}"
            (root / name).write_bytes(_image(li * PER_LABEL + i, fmt))
            names.append(name)
    (root / "bee" / "050b.jpg").write_bytes(b"not an image")  # skipped, never a row
    return root, sorted(names)


def _filenames(out: Path) -> list[str]:
    return lance.dataset(str(out)).to_table(columns=["filename"]).column("filename").to_pylist()


def _check_complete(out: Path, root: Path, names: list[str]) -> None:
    """Every file exactly once, in ingest order, its bytes and pixels those of the file."""
    table = lance.dataset(str(out)).to_table()
    assert table.column("filename").to_pylist() == names
    for row in table.to_pylist():
        data = (root / row["filename"]).read_bytes()
        assert row["image"] == data
        stored = np.asarray(Image.open(io.BytesIO(row["image"])))
        np.testing.assert_array_equal(stored, np.asarray(Image.open(root / row["filename"])))
        assert (row["width"], row["height"]) == Image.open(root / row["filename"]).size


def _run_child(root: Path, out: Path, stop_at: int, delay: float = 0.002) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(out), str(COMMIT_EVERY), str(stop_at), str(delay)],
        stdout=subprocess.PIPE,
        text=True,
    )


def _kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.stdout is not None
    child.stdout.close()


def _versions(out: Path) -> int:
    return lance.dataset(str(out)).version if (out / "_versions").is_dir() else 0


def _uncommitted_data(out: Path) -> bool:
    """Whether ``out/data`` holds a file that no committed fragment refers to."""
    data = out / "data"
    if not data.is_dir():
        return False
    committed = set()
    if _versions(out):
        committed = {f.path for frag in lance.dataset(str(out)).get_fragments() for f in frag.metadata.files}
    return any(p.name not in committed for p in data.iterdir())


@pytest.mark.parametrize("stop_at", [20, 160, 290], ids=["before-first-commit", "mid-way", "near-end"])
def test_killed_ingest_resumes_with_every_file_once(tmp_path: Path, tree: tuple[Path, list[str]], stop_at: int) -> None:
    root, names = tree
    out = tmp_path / "out.lance"
    child = _run_child(root, out, stop_at)
    assert child.stdout is not None
    for line in child.stdout:
        if line.strip() == "stopped":
            break
    else:
        pytest.fail("the child ended without reaching the stop")
    chunks = stop_at // COMMIT_EVERY
    deadline = time.monotonic() + 300
    while _versions(out) < chunks and time.monotonic() < deadline:
        time.sleep(0.05)
    # The chunk in progress has handed Lance whole batches (stop_at % COMMIT_EVERY >
    # batch_size): wait for its data file to appear, so the kill leaves uncommitted data
    # behind, as a real kill does.
    while not _uncommitted_data(out) and time.monotonic() < deadline:
        time.sleep(0.05)
    _kill(child)

    # What the kill left: nothing committed (absent, or a folder of Lance's own entries
    # without a version), or a readable dataset holding exactly the committed chunks.
    assert _versions(out) == chunks
    items = sorted(names + ["bee/050b.jpg"])  # ingest order, the broken file included
    if chunks == 0:
        assert os.listdir(out) == ["data"]  # a data file, no version
        committed_rows = 0
    else:
        committed = [n for n in items[: chunks * COMMIT_EVERY] if n != "bee/050b.jpg"]
        assert _filenames(out) == committed
        committed_rows = len(committed)

    # A rerun without resume says what it found and what to do.
    with pytest.raises(FileExistsError) as info:
        lancefeed.ingest_folder(root, out, progress=False)
    message = str(info.value)
    assert "--resume" in message and "--overwrite" in message
    if chunks:
        assert f"{chunks * COMMIT_EVERY} of {len(items)} files committed" in message
    else:
        assert "no committed Lance version" in message

    summary = lancefeed.ingest_folder(root, out, progress=False, resume=True, commit_every=COMMIT_EVERY)
    assert summary.resumed_from == chunks * COMMIT_EVERY
    assert summary.rows == len(names) - committed_rows
    assert ("resumed after" in str(summary)) == (chunks > 0)
    _check_complete(out, root, names)
    # The same rows and schema (metadata included) as an ingest that was never killed.
    ref = tmp_path / "ref.lance"
    lancefeed.ingest_folder(root, ref, progress=False)
    assert lance.dataset(str(out)).to_table().equals(lance.dataset(str(ref)).to_table(), check_metadata=True)


def test_kill_at_any_moment_leaves_nothing_or_a_committed_prefix(
    tmp_path: Path, tree: tuple[Path, list[str]]
) -> None:
    """Kills at times not synchronised with the commits (mid-write, mid-commit)."""
    root, names = tree
    sorted_items = sorted(names + ["bee/050b.jpg"])
    for n, after in enumerate([40, 110, 230]):
        out = tmp_path / f"out{n}.lance"
        child = _run_child(root, out, stop_at=10**9)
        assert child.stdout is not None
        seen = 0
        for line in child.stdout:
            seen += line.strip() == "loaded"
            if seen >= after:
                break
        _kill(child)
        if _versions(out):
            got = _filenames(out)
            k = lance.dataset(str(out)).version * COMMIT_EVERY
            assert got == [f for f in sorted_items[:k] if f != "bee/050b.jpg"], after
        lancefeed.ingest_folder(root, out, progress=False, resume=True, commit_every=COMMIT_EVERY)
        assert _filenames(out) == names


def test_resume_after_a_clean_finish_changes_nothing(tmp_path: Path, tree: tuple[Path, list[str]]) -> None:
    root, names = tree
    out = tmp_path / "out.lance"
    first = lancefeed.ingest_folder(root, out, progress=False, commit_every=100)
    assert first.rows == len(names)
    version = lance.dataset(str(out)).version
    assert version == 4  # 301 files: 3 full chunks and one of 1
    again = lancefeed.ingest_folder(root, out, progress=False, resume=True, commit_every=7)
    assert (again.rows, again.skipped, again.resumed_from) == (0, [], len(names) + 1)
    assert lance.dataset(str(out)).version == version
    assert _filenames(out) == names


def _unfinished(tmp_path: Path, root: Path) -> Path:
    """An ingest stopped by strict at the broken file (item 150): 6 chunks committed."""
    out = tmp_path / "out.lance"
    with pytest.raises(IngestError, match="bee/050b.jpg"):
        lancefeed.ingest_folder(root, out, progress=False, strict=True, commit_every=COMMIT_EVERY)
    assert len(_filenames(out)) == 150
    return out


def test_resume_with_other_options_or_source_is_refused(tmp_path: Path, tree: tuple[Path, list[str]]) -> None:
    root, names = tree
    out = _unfinished(tmp_path, root)
    with pytest.raises(ValueError, match=r"with other options \(verify was False, now True\)"):
        lancefeed.ingest_folder(root, out, progress=False, strict=True, verify=True, resume=True)
    with pytest.raises(ValueError, match=r"with other options \(strict was True, now False\)"):
        lancefeed.ingest_folder(root, out, progress=False, resume=True)
    other = tmp_path / "copy"
    shutil.copytree(root, other)
    moved = re.escape(f"from another source (root was '{root.resolve()}', now '{other.resolve()}')")
    with pytest.raises(ValueError, match=moved):
        lancefeed.ingest_folder(other, out, progress=False, strict=True, resume=True)
    with pytest.raises(ValueError, match="pass one of them"):
        lancefeed.ingest_folder(root, out, progress=False, mode="overwrite", resume=True)
    with pytest.raises(FileExistsError, match="unfinished ingest .* before appending"):
        lancefeed.ingest_folder(root, out, progress=False, mode="append")
    assert len(_filenames(out)) == 150  # refusals wrote nothing

    # Strict stopped at the broken file: fix it, and resume finishes the rest.
    (root / "bee" / "050b.jpg").write_bytes(_image(999, "JPEG"))
    summary = lancefeed.ingest_folder(root, out, progress=False, strict=True, resume=True)
    assert (summary.resumed_from, summary.rows) == (150, 151)
    _check_complete(out, root, sorted(names + ["bee/050b.jpg"]))


def test_resume_refuses_when_committed_files_changed(tmp_path: Path, tree: tuple[Path, list[str]]) -> None:
    root, _ = tree
    out = _unfinished(tmp_path, root)
    (root / "ant" / "000.jpg").rename(root / "ant" / "000x.jpg")
    with pytest.raises(ValueError, match="changed since it was interrupted .*first 150 files"):
        lancefeed.ingest_folder(root, out, progress=False, strict=True, resume=True)


def test_leftover_without_a_version_is_taken_over_by_resume(tmp_path: Path, tree: tuple[Path, list[str]]) -> None:
    root, names = tree
    out = tmp_path / "out.lance"
    (out / "data").mkdir(parents=True)
    (out / "data" / "half-written.lance").write_bytes(b"\0" * 100)
    with pytest.raises(FileExistsError, match="no committed Lance version .*found only data.*--resume"):
        lancefeed.ingest_folder(root, out, progress=False)
    summary = lancefeed.ingest_folder(root, out, progress=False, resume=True)
    assert (summary.rows, summary.resumed_from) == (len(names), 0)
    assert not (out / "data" / "half-written.lance").exists()
    assert _filenames(out) == names


def test_resume_refuses_what_is_not_an_ingest(tmp_path: Path, tree: tuple[Path, list[str]]) -> None:
    root, _ = tree
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a Lance dataset .*notes.txt"):
        lancefeed.ingest_folder(root, folder, progress=False, resume=True)
    assert (folder / "notes.txt").read_text() == "keep me"
    plain = tmp_path / "plain.lance"
    lance.write_dataset(lance.dataset(str(_unfinished(tmp_path, root))).to_table(), str(plain))
    with pytest.raises(ValueError, match="not written by a resumable lancefeed ingest"):
        lancefeed.ingest_folder(root, plain, progress=False, resume=True)
    # Nothing there yet: resume simply writes it.
    fresh = tmp_path / "fresh.lance"
    assert lancefeed.ingest_folder(root, fresh, progress=False, resume=True).rows == 3 * PER_LABEL


def test_coco_resume(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    entries, anns = [], []
    for i in range(30):
        (images / f"{i:02d}.png").write_bytes(_image(i, "PNG") if i != 17 else b"broken")
        entries.append({"id": 100 + i, "file_name": f"{i:02d}.png"})
        anns.append({"id": i, "image_id": 100 + i, "bbox": [0, 0, 2, 3], "category_id": 1})
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": entries, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    out = tmp_path / "c.lance"
    with pytest.raises(IngestError, match="17.png"):
        lancefeed.ingest_coco(ann, images, out, progress=False, strict=True, commit_every=5)
    assert lance.dataset(str(out)).count_rows() == 15

    changed = json.loads(ann.read_text())
    changed["annotations"][0]["bbox"] = [1, 1, 2, 3]  # a committed row's box
    ann2 = tmp_path / "ann2.json"
    ann2.write_text(json.dumps(changed))
    with pytest.raises(ValueError, match="from another source .*annotations"):
        lancefeed.ingest_coco(ann2, images, out, progress=False, strict=True, resume=True)

    (images / "17.png").write_bytes(_image(17, "PNG"))
    summary = lancefeed.ingest_coco(ann, images, out, progress=False, strict=True, resume=True, commit_every=5)
    assert (summary.resumed_from, summary.rows) == (15, 15)
    ref = tmp_path / "ref.lance"
    lancefeed.ingest_coco(ann, images, ref, progress=False, strict=True)
    assert lance.dataset(str(out)).to_table().equals(lance.dataset(str(ref)).to_table(), check_metadata=True)
    assert lance.dataset(str(out)).to_table().column("image_id").to_pylist() == list(range(100, 130))
