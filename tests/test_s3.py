"""lancefeed against a real S3-compatible server (moto) on loopback, with and without latency.

Every image encodes its own sample index in its pixels (PNG, exact), so a batch says
which samples it holds without trusting any other column. Failures (wrong keys, a
missing bucket, a connection dropped mid-epoch) must raise an error naming the URI
within ``BOUND_S`` seconds: the storage options cap Lance's retries at about 5 s
(``client_retry_timeout``), the rest is slack for a busy machine.
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import lance
import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

pytest.importorskip("moto.server", reason="needs moto[server] (the test extras)")

import lancefeed  # noqa: E402
from lancefeed.loader.sampler import epoch_order  # noqa: E402
from s3server import LatencyProxy, S3Server, S3sFsServer  # noqa: E402

N = 60
BATCH = 4
BOUND_S = 60.0
LABELS = ["dog", "cat", "emu"]


def encode(i: int) -> bytes:
    a = np.zeros((4, 6, 3), np.uint8)
    a[..., 0] = i % 256
    a[..., 1] = i // 256
    a[..., 2] = np.arange(6) * 40
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def table(n: int = N) -> pa.Table:
    return pa.table(
        {
            "image": pa.array([encode(i) for i in range(n)], pa.binary()),
            "label": pa.array([LABELS[i % 3] for i in range(n)]),
            "idx": pa.array(range(n), pa.int64()),
        }
    )


def sample_ids(images: torch.Tensor) -> List[int]:
    px = images[:, 0, 0, :].to(torch.int64)
    return (px[:, 0] + 256 * px[:, 1]).tolist()


def within(seconds: float, fn: Callable[[], Any]) -> Tuple[Any, BaseException | None, float]:
    """Run ``fn`` in a thread; fail the test (instead of hanging) if it takes longer."""
    out: Dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out["error"] = exc

    t = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    elapsed = time.monotonic() - t
    assert not thread.is_alive(), f"still running after {seconds}s: a hang"
    return out.get("value"), out.get("error"), elapsed


def one_batch_per_take(uri: str, batch_size: int, **kw: Any) -> lancefeed.DataLoader:
    # Tiny test images would fit the whole epoch in one take, and be cached whole
    # (cache="auto"); real images (or a bigger dataset) give one take per batch or few,
    # which is what these tests need to see.
    loader = lancefeed.DataLoader(uri, batch_size, cache=False, **kw)
    loader.reader.rows_per_take = batch_size
    return loader


@pytest.fixture(scope="module")
def local_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = str(tmp_path_factory.mktemp("s3") / "ds.lance")
    lance.write_dataset(table(), uri, max_rows_per_file=25)
    return uri


@pytest.fixture(scope="module")
def s3_uri(s3: S3Server) -> str:
    uri = "s3://lancefeed/ds.lance"
    lance.write_dataset(table(), uri, max_rows_per_file=25, storage_options=s3.storage_options())
    return uri


def test_epochs_from_s3_equal_the_local_copy(s3: S3Server, s3_uri: str, local_uri: str) -> None:
    kw: Dict[str, Any] = dict(batch_size=8, shuffle=True, seed=3, transform=lancefeed.RandomHorizontalFlip())
    remote = lancefeed.DataLoader(s3_uri, storage_options=s3.storage_options(), **kw)
    local = lancefeed.DataLoader(local_uri, **kw)
    for _ in range(2):  # two epochs: new order, new flips, same on both stores
        got = list(remote)
        want = list(local)
        assert len(got) == len(want) == len(local)
        for (xa, ya), (xb, yb) in zip(got, want):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    ids = [i for x, _ in got for i in sample_ids(x)]
    assert ids == epoch_order(N, shuffle=True, seed=3, epoch=1).tolist()


def test_small_rows_on_an_object_store_are_read_by_one_scan(s3: S3Server, s3_uri: str, local_uri: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # One request per row (a take of random rows) is what an object store serves worst:
    # small rows are read by one scan into the loader's cache before the first batch.
    kw: Dict[str, Any] = dict(batch_size=8, shuffle=True, seed=4, transform=lancefeed.RandomHorizontalFlip())
    remote = lancefeed.DataLoader(s3_uri, storage_options=s3.storage_options(), **kw)
    local = lancefeed.DataLoader(local_uri, **kw)
    assert remote.reader.prefill and local.reader.prefill  # a local disk's are read whole first too (in place)
    takes: List[int] = []
    real = remote.reader.take_perm.take_positions_sorted
    remote.reader.take_perm.take_positions_sorted = lambda p: takes.append(len(p)) or real(p)  # type: ignore[method-assign]
    for _ in range(2):
        for (xa, ya), (xb, yb) in zip(list(remote), list(local)):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert takes == []
    # The store gone before the scan (none started while the loader was built): an error
    # naming the dataset, not a hang.
    monkeypatch.setattr(lancefeed.reads.RowReader, "start_prefill", lambda self: None)
    proxy = LatencyProxy(s3.port)
    try:
        gone = lancefeed.DataLoader(s3_uri, storage_options=s3.storage_options(port=proxy.port, retry_timeout_s=5), **kw)
        assert gone.reader.prefill
        proxy.stop()
        _, error, _ = within(BOUND_S, lambda: list(gone))
    finally:
        proxy.stop()
    assert isinstance(error, OSError) and s3_uri in str(error), error
    # A split is not one scan's rows: it keeps its takes.
    opts = s3.storage_options()
    tbl = lancefeed.permutation_builder(s3_uri, storage_options=opts).split_random(ratios=[0.75, 0.25], seed=1).execute()
    split = lancefeed.Permutation.from_tables(s3_uri, tbl, split=0, storage_options=opts)
    assert not lancefeed.DataLoader(split, **kw).reader.prefill


@pytest.mark.skipif(not S3sFsServer.available(), reason="s3s-fs (the benchmark's server) is not installed")
def test_the_benchmarks_s3s_fs_server_serves_the_same_epochs(local_uri: str) -> None:
    # benches/bench_s3.py measures against s3s-fs where it is installed: it must read right.
    with S3sFsServer() as fs:
        fs.create_bucket("bench")
        uri = "s3://bench/ds.lance"
        lance.write_dataset(lance.dataset(local_uri).to_table(), uri, storage_options=fs.storage_options())
        kw: Dict[str, Any] = dict(batch_size=8, shuffle=True, seed=5, transform=lancefeed.RandomHorizontalFlip())
        got = list(lancefeed.DataLoader(uri, storage_options=fs.storage_options(), **kw))
        want = list(lancefeed.DataLoader(local_uri, **kw))
        assert len(got) == len(want)
        for (xa, ya), (xb, yb) in zip(got, want):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_permutation_builder_and_splits_on_s3(s3: S3Server, s3_uri: str, local_uri: str) -> None:
    opts = s3.storage_options()
    splits: Dict[str, List[List[int]]] = {}
    for name, uri, so in (("s3", s3_uri, opts), ("local", local_uri, None)):
        tbl = lancefeed.permutation_builder(uri, storage_options=so).split_random(ratios=[0.75, 0.25], seed=1).execute()
        perms = [lancefeed.Permutation.from_tables(uri, tbl, split=k, storage_options=so) for k in (0, 1)]
        splits[name] = [p.take_positions(np.arange(len(p))).column("idx").to_pylist() for p in perms]
    assert splits["s3"] == splits["local"]
    assert sorted(splits["s3"][0] + splits["s3"][1]) == list(range(N))
    assert len(splits["s3"][0]) == 45


def test_decode_batch_over_rows_taken_from_s3(s3: S3Server, s3_uri: str) -> None:
    perm = lancefeed.Permutation.identity(s3_uri, storage_options=s3.storage_options())
    positions = np.array([59, 3, 30, 0, 17])
    rows = perm.take_positions(positions)
    images = lancefeed.decode_batch(rows.column("image"))
    assert sample_ids(torch.from_numpy(np.asarray(images))) == positions.tolist()
    assert np.array_equal(np.asarray(images)[1], np.asarray(Image.open(io.BytesIO(encode(3))).convert("RGB")))


def test_torch_workers_spawned_read_every_row_once_from_s3(s3: S3Server, s3_uri: str) -> None:
    perm = lancefeed.Permutation.identity(s3_uri, storage_options=s3.storage_options())
    perm = perm.select_columns(["idx"]).with_format("torch")
    loader = torch.utils.data.DataLoader(perm, batch_size=7, num_workers=2, multiprocessing_context="spawn", timeout=120)
    ids = torch.cat([b["idx"] for b in loader]).tolist()
    assert sorted(ids) == list(range(N))


def test_wrong_credentials_fail_fast_naming_the_uri() -> None:
    with S3Server(auth=True) as server:
        server.create_bucket("locked")
        uri = "s3://locked/ds.lance"
        opts = server.storage_options(aws_access_key_id="AKIAWRONGWRONGWRONG1", aws_secret_access_key="nope")
        _, error, elapsed = within(BOUND_S, lambda: lancefeed.DataLoader(uri, 4, storage_options=opts))
    assert isinstance(error, PermissionError), error
    assert uri in str(error) and "credentials" in str(error)
    assert "nope" not in str(error)  # the secret is not repeated back
    assert elapsed < BOUND_S


def test_a_missing_bucket_fails_fast_naming_the_uri(s3: S3Server) -> None:
    uri = "s3://no-such-bucket/ds.lance"
    _, error, _ = within(BOUND_S, lambda: lancefeed.DataLoader(uri, 4, storage_options=s3.storage_options()))
    assert isinstance(error, FileNotFoundError), error
    assert uri in str(error) and "bucket" in str(error)


def test_a_connection_dropped_mid_epoch_raises_in_the_loop_without_a_partial_batch(s3: S3Server, s3_uri: str) -> None:
    proxy = LatencyProxy(s3.port, delay_ms=5)
    try:
        opts = s3.storage_options(port=proxy.port)
        loader = one_batch_per_take(s3_uri, BATCH, shuffle=True, seed=5, storage_options=opts, prefetch=1)
        order = epoch_order(N, shuffle=True, seed=5, epoch=0).tolist()
        got: List[List[int]] = []

        def run() -> None:
            for images, _ in loader:
                got.append(sample_ids(images))
                if len(got) == 2:
                    proxy.stop()  # the store goes away: open connections reset, new ones refused

        _, error, elapsed = within(BOUND_S, run)
    finally:
        proxy.stop()
    assert isinstance(error, OSError), error
    assert s3_uri in str(error)
    assert 2 <= len(got) < len(loader)
    # Every batch handed out before the error is whole and the right one.
    flat = [i for batch in got for i in batch]
    assert all(len(b) == BATCH for b in got) and flat == order[: len(flat)]


@pytest.mark.parametrize("delay_ms", [0, 10, 50])
def test_through_latency_the_epoch_is_the_same_and_takes_in_flight_stay_bounded(
    s3: S3Server, s3_uri: str, delay_ms: int
) -> None:
    with LatencyProxy(s3.port, delay_ms=delay_ms) as proxy:
        opts = s3.storage_options(port=proxy.port)
        loader = one_batch_per_take(s3_uri, BATCH, shuffle=True, seed=2, storage_options=opts)
        ids, error, _ = within(BOUND_S * 2, lambda: [i for x, _ in loader for i in sample_ids(x)])
        assert error is None, error
        assert proxy.requests > 0 or delay_ms == 0
    assert ids == epoch_order(N, shuffle=True, seed=2, epoch=0).tolist()
    stats = loader.stats()
    assert stats["batches"] == len(loader) and stats["takes"] == len(loader)
    # The memory bound: never more takes read ahead than the window may grow to.
    assert stats["in_flight_max"] <= stats["in_flight_bound"] <= lancefeed.loader.pipeline.MAX_IN_FLIGHT
    if delay_ms == 50:
        # 50 ms per request against a decode of microseconds: the window grew.
        assert stats["in_flight_limit"] > loader.prefetch + 1
        assert stats["io_bound"]


def test_takes_in_flight_stay_under_the_byte_bound(s3: S3Server, s3_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with LatencyProxy(s3.port, delay_ms=20) as proxy:
        loader = one_batch_per_take(s3_uri, BATCH, storage_options=s3.storage_options(port=proxy.port), prefetch=1)
        # Room for 3 takes' worth of columns: the window stops growing there.
        take_bytes = loader.permutation.take_positions(np.arange(BATCH)).nbytes
        monkeypatch.setattr(lancefeed.loader.pipeline, "MAX_IN_FLIGHT_BYTES", 3 * take_bytes)
        ids, error, _ = within(BOUND_S * 2, lambda: [i for x, _ in loader for i in sample_ids(x)])
    assert error is None, error
    assert ids == list(range(N))
    stats = loader.stats()
    assert stats["in_flight_bound"] <= 3 and stats["in_flight_max"] <= max(3, loader.prefetch + 1)


def test_io_threads_still_fixes_the_takes_in_flight(s3: S3Server, s3_uri: str) -> None:
    with LatencyProxy(s3.port, delay_ms=20) as proxy:
        loader = one_batch_per_take(s3_uri, BATCH, storage_options=s3.storage_options(port=proxy.port), io_threads=2,
                                    prefetch=1)
        ids, error, _ = within(BOUND_S * 2, lambda: [i for x, _ in loader for i in sample_ids(x)])
    assert error is None and ids == list(range(N))
    stats = loader.stats()
    assert stats["in_flight_limit"] == 3 and stats["in_flight_max"] <= 3


def test_ingest_folder_writes_to_s3_resumably_and_the_loader_reads_it_back(
    s3: S3Server, tmp_path: Path
) -> None:
    root = tmp_path / "folder"
    for i in range(12):
        (root / LABELS[i % 3]).mkdir(parents=True, exist_ok=True)
        (root / LABELS[i % 3] / f"{i:03d}.png").write_bytes(encode(i))
    opts = s3.storage_options()
    uri = "s3://lancefeed/ingested.lance"
    summary = lancefeed.ingest_folder(root, uri, storage_options=opts, progress=False, commit_every=5)
    assert summary.rows == 12
    # The resume record is read back through the same options: a second create refuses,
    # a resume of the finished ingest writes nothing.
    with pytest.raises(FileExistsError, match="already exists"):
        lancefeed.ingest_folder(root, uri, storage_options=opts, progress=False)
    again = lancefeed.ingest_folder(root, uri, storage_options=opts, progress=False, resume=True)
    assert again.rows == 0 and again.resumed_from == 12
    ds = lance.dataset(uri, storage_options=opts)
    assert ds.count_rows() == 12 and ds.version == 3  # 3 commits of at most 5 files
    assert "aws_secret_access_key" not in str(ds.read_transaction(ds.version).transaction_properties)
    loader = lancefeed.DataLoader(uri, batch_size=5, storage_options=opts)
    ids, labels = [], []
    for images, y in loader:
        ids.extend(sample_ids(images))
        labels.extend(loader.classes[k] for k in y.tolist())
    # Rows are ordered by label, then path.
    want = sorted(range(12), key=lambda i: (LABELS[i % 3], i))
    assert ids == want and labels == [LABELS[i % 3] for i in want]
    assert loader.reader.use_scan  # unshuffled over the whole dataset: read by scans
    shuffled = lancefeed.DataLoader(uri, batch_size=5, shuffle=True, shuffle_clump_size=4, storage_options=opts)
    got = [i for x, _ in shuffled for i in sample_ids(x)]
    assert got == [want[p] for p in epoch_order(12, shuffle=True, seed=0, epoch=0, clump_size=4)]
