"""The CUDA prefetcher's ring, on the CPU (a backend whose copies finish late) and on a GPU.

The ring's bookkeeping is the same code on every backend. ``LateCopyBackend`` runs each
queued copy on a worker thread some milliseconds later, like a GPU stream: if the ring
handed a buffer back to the decoder before the copy out of it had finished, the decoder
would overwrite bytes not yet copied, and the batches would come out wrong.
"""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, List, Tuple

import lance
import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

import lancefeed
from lancefeed.loader.cuda import CpuBackend, CudaPrefetcher, HostRing, Launched

N = 40
W = 6


def encode(i: int) -> bytes:
    a = np.zeros((4, W, 3), np.uint8)
    a[..., 0] = i % 256
    a[..., 1] = i // 256
    a[..., 2] = np.arange(W) * 40
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("cuda") / "ds.lance"
    table = pa.table(
        {
            "image": pa.array([encode(i) for i in range(N)], pa.binary()),
            "label": pa.array(["ab"[i % 2] for i in range(N)]),
        }
    )
    lance.write_dataset(table, str(path))
    return str(path)


def sample_ids(images: torch.Tensor) -> List[int]:
    px = images[:, 0, 0, :].to(torch.int64).cpu()
    return (px[:, 0] + 256 * px[:, 1]).tolist()


class LateEvent:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.future: "Future[Any] | None" = None


class LateCopyBackend:
    """Copies (and the conversion after them) run in order on one worker thread,
    ``delay`` seconds after they are queued; an event completes when its work has run."""

    def __init__(self, delay: float = 0.01) -> None:
        self.device = torch.device("cpu")
        self.delay = delay
        self.stream = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-stream")
        self.allocations = 0
        self.waits = 0

    def host_empty(self, nbytes: int) -> torch.Tensor:
        self.allocations += 1
        return torch.empty(nbytes, dtype=torch.uint8)

    def to_device(self, host: torch.Tensor) -> torch.Tensor:
        return host.clone()

    def launch(self, work: Callable[[], Any]) -> Launched:
        event = LateEvent()

        def run() -> Any:
            time.sleep(self.delay)
            value = work()
            event.done.set()
            return value

        event.future = self.stream.submit(run)
        return Launched(event.future, event)

    def synchronize(self, event: LateEvent) -> None:
        self.waits += 1
        event.done.wait()

    def query(self, event: LateEvent) -> bool:
        return event.done.is_set()

    def collect(self, launched: Launched) -> Any:
        return launched.value.result()


@pytest.fixture
def ring_log(monkeypatch: pytest.MonkeyPatch) -> List[Tuple[int, bool]]:
    """(slot index, was its previous copy finished) each time the ring lends a buffer."""
    log: List[Tuple[int, bool]] = []
    original = HostRing.acquire

    def acquire(self: HostRing, nbytes: int) -> Any:
        before = {s.index: s.event for s in self.slots}
        slot = original(self, nbytes)
        event = before[slot.index]
        log.append((slot.index, event is None or self.backend.query(event)))
        return slot

    monkeypatch.setattr(HostRing, "acquire", acquire)
    return log


@pytest.mark.parametrize("fixed_size", [True, False])
def test_ring_never_refills_a_buffer_before_its_copy_finished(
    uri: str, ring_log: List[Tuple[int, bool]], fixed_size: bool
) -> None:
    # With a fixed output size the core decodes into the ring; without one the batch is
    # staged into it. Both go through the same ring.
    transform = lancefeed.Resize((4, W)) if fixed_size else None
    loader = lancefeed.DataLoader(uri, batch_size=3, shuffle=True, seed=1, transform=transform, prefetch=4)
    expect = [(sample_ids(x), y.tolist()) for x, y in loader]
    loader.set_epoch(0)
    backend = LateCopyBackend()
    got = [(sample_ids(x), y.tolist()) for x, y in CudaPrefetcher(loader, backend=backend, num_buffers=2)]
    assert got == expect
    assert len(ring_log) == len(loader) == 14
    assert [i for i, _ in ring_log] == [k % 2 for k in range(14)]  # two buffers, in turn
    assert all(ok for _, ok in ring_log)
    assert backend.waits == 12  # every reuse waited for the previous copy
    assert backend.allocations == 2  # the buffers are reused, not reallocated
    backend.stream.shutdown()


def test_the_ring_check_catches_a_ring_that_does_not_wait(
    uri: str, ring_log: List[Tuple[int, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control: the same run with the wait removed must fail both checks above.
    loader = lancefeed.DataLoader(uri, batch_size=3, transform=lancefeed.Resize((4, W)), prefetch=4)
    expect = [sample_ids(x) for x, _ in loader]
    backend = LateCopyBackend(delay=0.02)
    monkeypatch.setattr(backend, "synchronize", lambda event: None)
    loader.set_epoch(0)
    got = [sample_ids(x) for x, _ in CudaPrefetcher(loader, backend=backend)]
    assert not all(ok for _, ok in ring_log)
    assert got != expect


def test_cpu_backend_runs_the_same_path_with_normalize(uri: str) -> None:
    mean, std = (0.1, 0.2, 0.3), (0.3, 0.2, 0.1)
    plain = lancefeed.DataLoader(uri, batch_size=8, shuffle=True, normalize=(mean, std), channels_last=True)
    expect = [x for x, _ in plain]
    plain.set_epoch(0)
    got = [x for x, _ in CudaPrefetcher(plain, device="cpu")]
    assert len(got) == len(expect) == 5
    for a, b in zip(got, expect):
        assert a.shape == (8, 3, 4, W) and a.dtype == torch.float32
        assert a.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    raw = lancefeed.DataLoader(uri, batch_size=8, transform=lancefeed.Resize((4, W)))
    pre = CudaPrefetcher(raw, device="cpu", normalize=((0.5,), (0.5,)))
    images, labels = next(iter(pre))
    assert images.shape == (8, 3, 4, W) and images.is_contiguous()
    # The red channel holds the sample index: samples 0..7, normalized with mean 0.5, std 0.5.
    torch.testing.assert_close(images[:, 0, 0, 0], torch.arange(8, dtype=torch.float32) / 255 / 0.5 - 1.0)


def test_prefetcher_delegates_epochs_len_and_resume(uri: str) -> None:
    loader = lancefeed.DataLoader(uri, batch_size=6, shuffle=True, seed=3)
    pre = CudaPrefetcher(loader, device="cpu")
    assert len(pre) == len(loader) == 7
    full = [sample_ids(x) for x, _ in pre]
    pre.set_epoch(0)
    it = iter(pre)
    head = [sample_ids(next(it)[0]) for _ in range(3)]
    state = pre.state_dict()
    del it
    other = CudaPrefetcher(lancefeed.DataLoader(uri, batch_size=6, shuffle=True), device="cpu")
    other.load_state_dict(state)
    assert head + [sample_ids(x) for x, _ in other] == full


def test_ring_needs_two_buffers() -> None:
    with pytest.raises(ValueError, match="num_buffers must be at least 2"):
        HostRing(CpuBackend(), 1)


def test_ring_grows_a_buffer_only_when_free() -> None:
    backend = LateCopyBackend(delay=0.05)
    ring = HostRing(backend, 2)
    a = ring.acquire(10)
    ring.release(a, backend.launch(lambda: None).event)
    b = ring.acquire(10)
    ring.release(b, backend.launch(lambda: None).event)
    t0 = time.perf_counter()
    big = ring.acquire(5 << 20)  # slot 0 again: waits for its copy, then reallocates
    assert big is a and big.host is not None and big.host.numel() >= 5 << 20
    assert time.perf_counter() - t0 > 0.04
    assert backend.waits == 1


# -- on a GPU -------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_cuda_end_to_end(uri: str) -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    cpu = lancefeed.DataLoader(uri, batch_size=8, shuffle=True, seed=2, normalize=(mean, std))
    expect = [(x, y) for x, y in cpu]
    for channels_last in (False, True):
        gpu = lancefeed.DataLoader(
            uri, batch_size=8, shuffle=True, seed=2, normalize=(mean, std), channels_last=channels_last,
            device="cuda", transform=lancefeed.Resize((4, W)),
        )
        got = [(x, y) for x, y in gpu]
        assert len(got) == len(expect)
        for (gx, gy), (cx, cy) in zip(got, expect):
            assert gx.device.type == "cuda" and gy.device.type == "cuda"
            assert gx.dtype == torch.float32 and gx.shape == (8, 3, 4, W)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            assert gx.is_contiguous(memory_format=fmt)
            torch.testing.assert_close(gx.cpu(), cx, atol=1e-5, rtol=0)
            assert gy.cpu().tolist() == cy.tolist()
    raw = lancefeed.DataLoader(uri, batch_size=8)
    pre = CudaPrefetcher(raw, "cuda", num_buffers=3)
    batches = list(pre)
    assert batches[0][0].dtype == torch.uint8 and batches[0][0].device.type == "cuda"
    assert [i for x, _ in batches for i in sample_ids(x)] == list(range(N))
