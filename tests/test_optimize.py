"""``lancefeed optimize`` on one machine: every JPEG of a dataset written by anything
restart-indexed in place, as a new version; each row equal to restart-indexing it
alone, the pixels unchanged, the other columns' files untouched; resumable; the
loader reads the result as Lance does. (On Ray: tests/test_ray.py.)"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, List

import lance
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import lancefeed
from lancefeed.cli import main
from lancefeed.ledger import Ledger
from lancefeed.optimizer import run as optimize_run
from lancefeed.restart import add_restart_index, restart_index

N = 36


def _blob(i: int) -> bytes:
    """A JPEG (some progressive, some gray), or every seventh a PNG."""
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    if i % 7 == 3:
        Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(buf, "PNG")
    elif i % 5 == 1:
        Image.fromarray(rng.integers(0, 256, (40, 56), dtype=np.uint8), "L").save(buf, "JPEG")
    else:
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(buf, "JPEG", progressive=i % 4 == 0)
    return buf.getvalue()


@pytest.fixture()
def written(tmp_path: Path) -> str:
    """pylance's defaults, the image column not first, three fragments, two rows deleted."""
    table = pa.table({"idx": pa.array(range(N), pa.int64()), "image": pa.array([_blob(i) for i in range(N)], pa.binary()),
                      "label": pa.array([f"c{i % 3}" for i in range(N)])})
    uri = str(tmp_path / "in.lance")
    lance.write_dataset(table, uri, max_rows_per_file=14)
    lance.dataset(uri).delete("idx = 5 OR idx = 20")
    return uri


def _pixels(blob: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))


def _files(uri: str) -> List[List[Any]]:
    return [[(d.path, list(d.fields)) for d in f.data_files()] for f in lance.dataset(uri).get_fragments()]


def test_each_row_equals_its_restart_index_and_nothing_else_moves(written: str) -> None:
    before = lance.dataset(written)
    old, files_before = before.to_table(), _files(written)
    summary = lancefeed.optimize(written, progress=False)
    after = lance.dataset(written)
    new = after.to_table()
    assert (summary.version_before, summary.version_after, after.version) == (before.version, before.version + 1,
                                                                               before.version + 1)
    assert new.schema.equals(old.schema, check_metadata=True) and new.drop(["image"]).equals(old.drop(["image"]))
    jpegs = 0
    for a, b in zip(old["image"].to_pylist(), new["image"].to_pylist()):
        if a[:2] == b"\xff\xd8":
            jpegs += 1
            assert b == add_restart_index(a) and restart_index(b) is not None
        else:
            assert b == a
        assert np.array_equal(_pixels(a), _pixels(b))
    assert summary.indexed == jpegs and summary.kept == N - 2 - jpegs and summary.rows == N - 2
    for was, now in zip(files_before, _files(written)):  # the old files, the image field dropped, plus one
        image_id = now[-1][1]
        assert [p for p, _f in now[:-1]] == [p for p, _f in was] and len(image_id) == 1
        assert all((-2 if f == image_id[0] else f) == g for (_p, fs), (_q, gs) in zip(was, now) for f, g in zip(fs, gs))
    assert after.count_rows() == N - 2 and not Path(written, "_lancefeed").exists()
    again = lancefeed.optimize(written, progress=False)  # nothing left to do: no new version
    assert again.version_after == again.version_before == after.version and again.indexed == 0


def test_the_loader_reads_the_optimized_dataset_as_lance_does(written: str) -> None:
    lancefeed.optimize(written, progress=False, measure=False)
    ds = lance.dataset(written)
    loader = lancefeed.DataLoader(written, 8, label_column=None, transform=lancefeed.Resize((24, 24)))
    got = np.concatenate([(b[0] if isinstance(b, tuple) else b).numpy() for b in loader])
    ref = lancefeed.decode_batch(ds.to_table(columns=["image"]).column("image"), transform=lancefeed.Resize((24, 24)))
    assert got.shape == ref.shape and np.array_equal(got, ref)


class Killed(Exception):
    pass


def test_an_interrupted_optimize_continues(written: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real = optimize_run.rewrite_fragment
    calls: List[int] = []
    armed = [True]

    def flaky(ds: Any, fragment_id: int, *a: Any, **k: Any) -> Any:
        calls.append(fragment_id)
        if armed[0] and len(calls) == 2:
            armed[0] = False
            raise Killed("killed while on the second fragment")
        return real(ds, fragment_id, *a, **k)

    monkeypatch.setattr(optimize_run, "rewrite_fragment", flaky)
    version = lance.dataset(written).version
    with pytest.raises(Killed):
        lancefeed.optimize(written, progress=False, measure=False)
    assert lance.dataset(written).version == version  # nothing committed
    assert len([n for n in Ledger(written, "optimize").entries() if n != "plan"]) == 1
    calls.clear()
    summary = lancefeed.optimize(written, progress=False, measure=False)
    assert calls == [1, 2] and summary.resumed == 1 and summary.fragments == 3  # the first one not again
    old = lance.dataset(written, version=version).to_table()["image"].to_pylist()
    new = lance.dataset(written).to_table()["image"].to_pylist()
    assert new == [add_restart_index(b) if b[:2] == b"\xff\xd8" else b for b in old]


def test_columns_it_cannot_rewrite_are_refused(tmp_path: Path) -> None:
    uri = str(tmp_path / "x.lance")
    lance.write_dataset(pa.table({"image": pa.array([b"x"], pa.binary()), "label": ["a"]}), uri)
    with pytest.raises(TypeError, match="'label' is string"):
        lancefeed.optimize(uri, column="label", progress=False)
    with pytest.raises(ValueError, match="'picture' is not in"):
        lancefeed.optimize(uri, column="picture", progress=False)
    with pytest.raises(ValueError, match="nothing to optimize"):
        lancefeed.optimize(uri, restart_index=False, progress=False)
    blob = str(tmp_path / "blob.lance")
    field = pa.field("image", pa.large_binary(), metadata={"lance-encoding:blob": "true"})
    lance.write_dataset(pa.table({"image": pa.array([b"x" * 100], pa.large_binary())}, schema=pa.schema([field])), blob)
    with pytest.raises(ValueError, match="blob column"):
        lancefeed.optimize(blob, progress=False)


def test_cli_prints_the_report(written: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["optimize", written, "--restart-index", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "restart-indexed" in out and "size:" in out and "decode speed, RandomResizedCrop(" in out
    assert main(["optimize", written, "--column", "nope", "--no-progress"]) == 1
