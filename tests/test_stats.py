"""``DataLoader.stats()``, ``log_every`` and the self-sizing number of takes in flight."""

from __future__ import annotations

import io
import logging
import threading
import time
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import lancefeed
from lancefeed.loader.pipeline import Pipeline

N = 48


def encode(i: int) -> bytes:
    a = np.full((8, 8, 3), i % 256, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def make(path: Path) -> str:
    uri = str(path / "ds.lance")
    images = [encode(i) for i in range(N)]
    lance.write_dataset(pa.table({"image": pa.array(images, pa.binary()), "label": pa.array(np.arange(N) % 4)}), uri)
    return uri


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make(tmp_path_factory.mktemp("stats"))


def per_batch(loader: lancefeed.DataLoader) -> lancefeed.DataLoader:
    # One take per batch (tiny images would make the epoch one take): more events to count.
    loader.reader.rows_per_take = loader.batch_size
    return loader


def test_counts_and_times_add_up_over_an_epoch(uri: str) -> None:
    loader = per_batch(lancefeed.DataLoader(uri, 5))
    assert loader.stats()["batches"] == 0
    list(loader)
    s = loader.stats()
    assert s["batches"] == len(loader) == 10
    assert s["takes"] == len(loader)
    encoded = sum(len(encode(i)) for i in range(N))
    assert s["bytes_read"] >= encoded  # the image column's Arrow size, at least its bytes
    assert s["decode_s"] > 0 and s["take_s"] > 0 and s["io_wait_s"] >= 0
    assert 0 <= s["wait_p50_s"] <= s["wait_p95_s"] <= s["consumer_wait_s"] <= s["elapsed_s"]
    assert 1 <= s["in_flight_max"] <= s["in_flight_bound"]
    list(loader)  # a second epoch adds to the same counters
    assert loader.stats()["batches"] == 2 * len(loader)
    assert loader.stats()["takes"] == 2 * len(loader)
    assert loader.stats()["bytes_read"] == s["bytes_read"]  # all from the cache: nothing read


def test_a_slow_training_step_waits_for_no_batch(uri: str) -> None:
    step = 0.05
    loader = per_batch(lancefeed.DataLoader(uri, 4, prefetch=2))
    for _ in loader:
        time.sleep(step)  # the "training step": the loader has time to get ahead
    s = loader.stats()
    # Measured: ~0.1 ms. Bounded by the step, not by the machine's speed: a batch of four
    # tiny images is ready long before a step ends even on a machine ten times slower.
    assert s["wait_p50_s"] < step / 2
    assert s["queue_depth_mean"] >= 1
    assert not s["io_bound"]


def test_slow_takes_show_as_io_bound_and_grow_the_takes_in_flight(uri: str) -> None:
    loader = per_batch(lancefeed.DataLoader(uri, 4))
    real = loader.reader.take
    running, most = [0], [0]
    lock = threading.Lock()

    def slow_take(positions: np.ndarray) -> Any:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)  # a remote store's round trip
        with lock:
            running[0] -= 1
        return real(positions)

    loader.reader.take = slow_take  # type: ignore[method-assign]
    ids = [int(x[0, 0, 0, 0]) for x, _ in loader]
    s = loader.stats()
    assert ids == list(range(0, N, 4))
    assert s["io_bound"] and s["io_wait_s"] > s["decode_s"]
    assert s["in_flight_limit"] > loader.prefetch + 1
    # The takes overlapped (counted, not timed: a slow machine overlaps them as well).
    assert most[0] > loader.prefetch + 1


def test_log_every_logs_one_line_summaries_and_is_off_by_default(uri: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="lancefeed"):
        list(lancefeed.DataLoader(uri, 4))
        assert not [r for r in caplog.records if r.name == "lancefeed"]
        loader = per_batch(lancefeed.DataLoader(uri, 4, log_every=0.01))
        for _ in loader:
            time.sleep(0.02)
    lines = [r.getMessage() for r in caplog.records if r.name == "lancefeed"]
    assert lines and all("\n" not in m for m in lines)
    assert uri in lines[-1] and "batches=" in lines[-1] and "io_wait=" in lines[-1]
    with pytest.raises(ValueError, match="log_every"):
        lancefeed.DataLoader(uri, 4, log_every=0)


def test_the_window_never_exceeds_its_bound_and_keeps_the_order() -> None:
    running = 0
    most = 0
    lock = threading.Lock()

    def fetch(k: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return k

    p = Pipeline(range(200), fetch, lambda k, v: [v], prefetch=1, io_threads=None, max_in_flight=5)
    assert list(p) == list(range(200))
    s = p.meter.snapshot()
    assert most <= 5 and s.in_flight_max <= 5 and s.in_flight_limit == 5  # it grew to the bound, no further

    most = 0
    p = Pipeline(range(20), fetch, lambda k, v: [v], prefetch=1, io_threads=1)
    assert list(p) == list(range(20))
    assert most == 1  # io_threads= fixes the concurrency as before
