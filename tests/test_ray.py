"""lancefeed on Ray: ingest as Ray Data tasks (equal to the one-machine ingest, a killed
task retried without duplicates, an interrupted ingest resumed, object storage in and
out), ``optimize`` on Ray, and the DataLoader under Ray Train (exactly once; resumed on
another number of workers).

One local Ray (2 CPUs) serves the whole module; the datasets are tiny.
"""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List

import lance
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

ray = pytest.importorskip("ray", reason="needs Ray (pip install 'lancefeed[ray]'; CI installs it)")
pytest.importorskip("ray.data")

import lancefeed  # noqa: E402
from lancefeed.ingest.common import FOLDER_SCHEMA, Listing  # noqa: E402
from lancefeed.ingest.options import IngestOptions  # noqa: E402
from lancefeed.ingest.ray_engine import run_on_ray  # noqa: E402
from lancefeed.ledger import Ledger  # noqa: E402
from lancefeed.restart import add_restart_index, restart_index  # noqa: E402
import ray_helpers  # noqa: E402

TESTS = Path(__file__).resolve().parent
PACKAGE_ROOT = Path(lancefeed.__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cluster():
    """One local Ray for the module: 2 CPUs, a small object store, no token file; its
    workers import this lancefeed and this test module (for the functions they run)."""
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")}
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    path = os.pathsep.join([str(PACKAGE_ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])
    with warnings.catch_warnings():  # Ray's fork + exec of its processes, after Lance's import
        warnings.filterwarnings("ignore", message="lance is not fork-safe")
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 << 20,
                 log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


_jpeg = ray_helpers.jpeg


def _png(seed: int, size: tuple = (24, 16), mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 8, shape, dtype=np.uint8), mode).save(buf, "PNG")
    return buf.getvalue()


def _tree(root: Path, *, masks: bool = False) -> None:
    """root/<split>/<label>/<file>: 21 images (two PNGs, one progressive JPEG), one broken
    file, and with ``masks`` a mask per image under root/../masks (one missing)."""
    n = 0
    for split in ("test", "train"):
        for label in ("cat", "dog", "emu"):
            for k in range(4 if split == "train" else 3):
                name = f"{split}/{label}/{k:02d}.{'png' if n % 9 == 4 else 'jpg'}"
                data = _png(n) if n % 9 == 4 else _jpeg(n, progressive=n == 7)
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(data)
                if masks and n != 5:
                    m = root.parent / "masks" / name
                    m.parent.mkdir(parents=True, exist_ok=True)
                    m.with_suffix(".png").write_bytes(_png(100 + n, mode="L"))
                n += 1
    (root / "train" / "dog" / "zz-broken.jpg").write_bytes(b"not an image")


def _same_dataset(a: str, b: str) -> None:
    """The same schema (field metadata included), rows, bytes and order; and the same
    resume record (but the run's id)."""
    ta, tb = lance.dataset(a).to_table(), lance.dataset(b).to_table()
    assert ta.schema.equals(tb.schema, check_metadata=True)
    assert ta.num_rows > 0 and ta.equals(tb)
    ra = json.loads(lance.dataset(a).read_transaction(lance.dataset(a).version).transaction_properties["lancefeed.ingest"])
    rb = json.loads(lance.dataset(b).read_transaction(lance.dataset(b).version).transaction_properties["lancefeed.ingest"])
    assert rb.pop("job") and ra == rb


def test_folder_on_ray_equals_the_one_machine_ingest(cluster: Any, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _tree(root, masks=True)
    kw = dict(masks=tmp_path / "masks", restart_index=True, progress=False)
    one = lancefeed.ingest_folder(root, tmp_path / "one.lance", **kw)
    on_ray = lancefeed.ingest_folder(root, tmp_path / "ray.lance", engine="ray", **kw)
    _same_dataset(str(tmp_path / "one.lance"), str(tmp_path / "ray.lance"))
    assert (on_ray.rows, on_ray.skipped) == (one.rows, one.skipped) and len(one.skipped) == 2  # broken, no mask
    ds = lance.dataset(str(tmp_path / "ray.lance"))
    assert len(ds.get_fragments()) > 2  # several tasks' fragments, put back in ingest order
    rows = ds.to_table().to_pylist()
    jpegs = [r for r in rows if r["filename"].endswith(".jpg")]
    assert jpegs and all(restart_index(r["image"]) is not None for r in jpegs)
    for r in rows:  # the bytes are the files', restart-indexed; masks as they are
        data = (root / r["filename"]).read_bytes()
        assert r["image"] == (add_restart_index(data) if r["filename"].endswith(".jpg") else data)
        assert r["mask"] == (tmp_path / "masks" / r["filename"]).with_suffix(".png").read_bytes()
        assert r["label"] == r["filename"].split("/")[1]
    assert not (tmp_path / "ray.lance" / "_lancefeed").exists()  # the ledger is gone after the commit


def _coco(tmp_path: Path) -> tuple:
    images = tmp_path / "images"
    images.mkdir()
    entries, anns = [], []
    for i in range(7):
        (images / f"{i}.jpg").write_bytes(_jpeg(i, size=(20, 12)))
        entries.append({"id": 10 + i, "file_name": f"{i}.jpg", "width": 20, "height": 12})
        anns.append({"id": 100 + i, "image_id": 10 + i, "category_id": 1 + i % 2, "bbox": [1, 2, 5, 4],
                     "segmentation": [[1, 1, 9, 1, 9, 8, 1, 8]], "area": 20.0, "iscrowd": 0})
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps({"images": entries, "annotations": anns,
                               "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    return ann, images


def test_coco_with_masks_on_ray_equals_the_one_machine_ingest(cluster: Any, tmp_path: Path) -> None:
    ann, images = _coco(tmp_path)
    lancefeed.ingest_coco(ann, images, tmp_path / "one.lance", masks=True, progress=False)
    lancefeed.ingest_coco(ann, images, tmp_path / "ray.lance", masks=True, progress=False, engine="ray")
    _same_dataset(str(tmp_path / "one.lance"), str(tmp_path / "ray.lance"))
    masks = lance.dataset(str(tmp_path / "ray.lance")).to_table(columns=["mask"])["mask"].to_pylist()
    assert all(np.asarray(Image.open(io.BytesIO(m))).max() > 0 for m in masks)  # painted in the tasks


def test_a_task_killed_mid_ingest_is_retried_without_duplicates(cluster: Any, tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    items = ray_helpers.make_items(tmp_path / "src", 12, functools.partial(ray_helpers.crash_once, str(marker)))
    out = str(tmp_path / "out.lance")
    summary = run_on_ray(Listing.of(items), out, FOLDER_SCHEMA, ray_helpers.record("src"),
                         IngestOptions(engine="ray", progress=False), root=tmp_path / "src", desc="ingest")
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker died, not this process
    names = lance.dataset(out).to_table(columns=["filename"])["filename"].to_pylist()
    assert summary.rows == 12 and names == [f"{i:03d}.jpg" for i in range(12)]  # each once, in order


def test_an_interrupted_ingest_resumes_from_its_ledger(cluster: Any, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _tree(root)
    out = tmp_path / "out.lance"
    kw = dict(progress=False, engine="ray", strict=True, commit_every=2)
    with pytest.raises(lancefeed.IngestError, match="zz-broken.jpg"):
        lancefeed.ingest_folder(root, out, **kw)  # stopped by a bad file: nothing committed
    recorded = {n: e for n, e in Ledger(str(out), "ingest").entries().items() if n != "plan"}
    assert recorded and not (out / "_versions").exists()
    # A file of a recorded unit changes: a resumed run must not read it again.
    kept_name = json.loads(min(recorded.values(), key=lambda e: e["start"])["keys"][0])[0]
    old = (root / kept_name).read_bytes()
    (root / kept_name).write_bytes(_jpeg(999))
    (root / "train" / "dog" / "zz-broken.jpg").write_bytes(_jpeg(1000))
    with pytest.raises(FileExistsError, match="resume"):
        lancefeed.ingest_folder(root, out, **kw)
    summary = lancefeed.ingest_folder(root, out, resume=True, **kw)
    assert summary.resumed_from == sum(e["files"] for e in recorded.values()) > 0
    table = lance.dataset(str(out)).to_table()
    names = table["filename"].to_pylist()
    assert sorted(names) == names and len(set(names)) == len(names) == 22  # every file once
    assert table["image"][names.index(kept_name)].as_py() == old
    assert lancefeed.ingest_folder(root, out, resume=True, **kw).rows == 0  # complete: left as is


def test_a_driver_killed_before_the_commit_resumes(cluster: Any, tmp_path: Path) -> None:
    src, out = tmp_path / "src", str(tmp_path / "out.lance")
    ray_helpers.make_items(src, 16)
    path = os.pathsep.join([str(PACKAGE_ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])
    driver = f"""
import functools, ray, ray_helpers
from lancefeed.ingest.common import FOLDER_SCHEMA, Listing
from lancefeed.ingest.options import IngestOptions
from lancefeed.ingest.ray_engine import run_on_ray
ray.init(address={cluster.get_runtime_context().gcs_address!r}, log_to_driver=False,
         runtime_env={{"env_vars": {{"PYTHONPATH": {path!r}}}}})
items = ray_helpers.make_items({str(src)!r}, 16, functools.partial(ray_helpers.slow, 0.4), every=True)
run_on_ray(Listing.of(items), {out!r}, FOLDER_SCHEMA, ray_helpers.record("src"),
           IngestOptions(engine="ray", commit_every=1, progress=False), root={str(src)!r}, desc="ingest")
"""
    proc = subprocess.Popen([sys.executable, "-c", driver], env={**os.environ, "PYTHONPATH": path},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ledger = Ledger(out, "ingest")
    deadline = time.monotonic() + 300  # a busy machine starts Ray slowly
    while len(ledger.entries()) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert not os.path.exists(os.path.join(out, "_versions")) and len(ledger.entries()) >= 4  # killed before the commit
    items = ray_helpers.make_items(src, 16)
    summary = run_on_ray(Listing.of(items), out, FOLDER_SCHEMA, ray_helpers.record("src"),
                         IngestOptions(engine="ray", commit_every=1, progress=False, resume=True), root=src, desc="ingest")
    assert summary.resumed_from >= 3 and summary.rows == 16
    names = lance.dataset(out).to_table(columns=["filename"])["filename"].to_pylist()
    assert names == [f"{i:03d}.jpg" for i in range(16)]  # each file once, in order


def test_object_storage_in_and_out(cluster: Any, s3: Any, tmp_path: Path) -> None:
    import boto3

    root = tmp_path / "root"
    _tree(root)
    options = s3.storage_options()
    client = boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key,
                          aws_secret_access_key=s3.secret_key, region_name=options["aws_region"])
    for p in root.rglob("*"):
        if p.is_file():
            client.put_object(Bucket="lancefeed", Key=f"src/{p.relative_to(root).as_posix()}", Body=p.read_bytes())
    lancefeed.ingest_folder(root, tmp_path / "local.lance", progress=False, restart_index=True)
    for engine in ("threads", "ray"):
        out = f"s3://lancefeed/{engine}.lance"
        s = lancefeed.ingest_folder("s3://lancefeed/src", out, engine=engine, progress=False, restart_index=True,
                                    storage_options=options)
        assert s.skipped == [("train/dog/zz-broken.jpg", s.skipped[0][1])]
        got = lance.dataset(out, storage_options=options).to_table()
        assert got.equals(lance.dataset(str(tmp_path / "local.lance")).to_table())


def test_optimize_on_ray_a_dataset_lance_ray_wrote(cluster: Any, tmp_path: Path) -> None:
    lance_ray = pytest.importorskip("lance_ray")
    blobs = [_jpeg(i, size=(40, 24)) if i % 5 else _png(i) for i in range(30)]
    table = pa.table({"idx": pa.array(range(30), pa.int64()), "image": pa.array(blobs, pa.binary())})
    uri = str(tmp_path / "lr.lance")
    lance_ray.write_lance(ray.data.from_arrow(table).repartition(3), uri, min_rows_per_file=1, max_rows_per_file=12)
    before = lance.dataset(uri)
    files_before = {f.fragment_id: [d.path for d in f.data_files()] for f in before.get_fragments()}
    summary = lancefeed.optimize(uri, engine="ray", progress=False)
    after = lance.dataset(uri)
    assert (summary.version_before, summary.version_after) == (before.version, before.version + 1)
    assert summary.indexed == 24 and summary.kept == 6
    got = after.to_table().sort_by("idx")
    want = before.to_table().sort_by("idx")
    assert got["idx"].equals(want["idx"])
    for old, new in zip(want["image"].to_pylist(), got["image"].to_pylist()):
        assert new == (add_restart_index(old) if old[:2] == b"\xff\xd8" else old)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(new))), np.asarray(Image.open(io.BytesIO(old))))
    for f in after.get_fragments():  # the other column's files are the very same
        assert [d.path for d in f.data_files()][:-1] == files_before[f.fragment_id]


def _fit(tag: str, workers: int, run: str, tmp_path: Path, uri: str, passes: int, stop_after: int) -> List[Dict[str, Any]]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    config = {"uri": uri, "tag": tag, "out": str(tmp_path), "passes": passes, "stop_after": stop_after}
    TorchTrainer(ray_helpers.train_loop, train_loop_config=config, scaling_config=ScalingConfig(num_workers=workers),
                 run_config=RunConfig(name=run, storage_path=str(tmp_path / "runs"))).fit()
    return [json.loads((tmp_path / f"{tag}-rank{r}.json").read_text()) for r in range(workers)]


def test_ray_train_reads_each_sample_once_and_resumes_on_other_worker_counts(cluster: Any, tmp_path: Path) -> None:
    pytest.importorskip("ray.train.torch")
    n = 40
    table = pa.table({"image": pa.array([_jpeg(i, size=(8, 8)) for i in range(n)], pa.binary()),
                      "label": pa.array(range(n), pa.int64())})
    uri = str(tmp_path / "ds.lance")
    lance.write_dataset(table, uri)
    # 2 workers, epoch 0 cut after 2 batches each: disjoint ranks.
    a = _fit("a", 2, "run", tmp_path, uri, passes=1, stop_after=2)
    assert not a[0]["resumed"] and len(a[0]["seen"]) == len(a[1]["seen"]) == 8
    assert not set(a[0]["seen"]) & set(a[1]["seen"])
    # 2 -> 1: the rest of epoch 0 on one worker, then epoch 1 cut after 3 batches.
    (b,) = _fit("b", 1, "run", tmp_path, uri, passes=2, stop_after=3)
    rest = b["seen"][: n - 16]
    assert b["resumed"] and sorted(a[0]["seen"] + a[1]["seen"] + rest) == list(range(n))  # epoch 0: each once
    # 1 -> 2: the rest of epoch 1 over two workers.
    c = _fit("c", 2, "run", tmp_path, uri, passes=1, stop_after=10**6)
    assert c[0]["resumed"] and c[1]["resumed"]
    epoch1 = b["seen"][n - 16:] + c[0]["seen"] + c[1]["seen"]
    assert sorted(epoch1) == list(range(n)) and len(c[0]["seen"]) == len(c[1]["seen"])  # epoch 1: each once


def test_cli_ingest_on_ray(cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lancefeed.cli import main

    root = tmp_path / "root"
    _tree(root)
    assert main(["ingest", "folder", str(root), str(tmp_path / "out.lance"), "--engine", "ray", "--restart-index",
                 "--no-progress"]) == 0
    assert "wrote 21 rows" in capsys.readouterr().out
    assert lance.dataset(str(tmp_path / "out.lance")).count_rows() == 21
    assert main(["ingest", "folder", str(root), str(tmp_path / "x.lance"), "--ray-address", "auto",
                 "--no-progress"]) == 1  # an address without --engine ray
    assert "engine='ray'" in capsys.readouterr().err


def test_the_rank_comes_from_a_ray_train_context_without_torch_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from lancefeed.loader.options import resolve_rank

    context = SimpleNamespace(get_world_rank=lambda: 2, get_world_size=lambda: 3)
    monkeypatch.setitem(sys.modules, "ray.train", SimpleNamespace(get_context=lambda: context))
    assert resolve_rank(None, None) == (2, 3)
    assert resolve_rank(0, 1) == (0, 1)  # given ones win

    def outside() -> None:
        raise RuntimeError("`get_context` cannot be used outside of a Ray Train training function")

    monkeypatch.setitem(sys.modules, "ray.train", SimpleNamespace(get_context=outside))
    assert resolve_rank(None, None) == (0, 1)  # the driver, not a worker
