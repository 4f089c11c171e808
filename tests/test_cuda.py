"""The device path (``DataLoader(device="cuda")``, ``CudaPrefetcher``) on the CPU, through
the same code a GPU runs, with a fake of CUDA's primitives that checks PyTorch's stream
rules (tests/fakecuda.py); and, where a GPU is there, on it.

Every kind of loader that iterates on the CPU iterates on the device with the same
batches; the device is the iterating thread's (or LOCAL_RANK's); each stream rule holds,
and breaking any one of them (the mutations) makes the fake report it.
"""

from __future__ import annotations

import gc
import io
import json
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import lance
import numpy as np
import pyarrow as pa
import pytest
import torch
from fakecuda import FakeCuda
from PIL import Image
from torchvision.transforms import v2

import lancefeed
import lancefeed.loader.backends as backends
from lancefeed.loader.backends import CpuBackend, CudaBackend, backend_for
from lancefeed.loader.cuda import CudaPrefetcher, DeviceStage, HostRing, Ready, send_all
from lancefeed.loader.staging import normalize_batch

N = 40
W = 6
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def encode(i: int, h: int = 4, w: int = W) -> bytes:
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = i % 256
    a[..., 1] = i // 256
    a[..., 2] = (np.arange(w) * 40) % 256
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """40 images whose red and green channels hold their index; labels, an id, tags."""
    path = tmp_path_factory.mktemp("cuda") / "ds.lance"
    table = pa.table(
        {
            "image": pa.array([encode(i) for i in range(N)], pa.binary()),
            "label": pa.array(["ab"[i % 2] for i in range(N)]),
            "id": pa.array(range(N), pa.int64()),
            "tags": pa.array([list(range(i % 3)) for i in range(N)], pa.list_(pa.int64())),
            "note": pa.array([f"n{i}" for i in range(N)]),
        }
    )
    lance.write_dataset(table, str(path))
    return str(path)


@pytest.fixture(scope="module")
def sizes_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Images of different sizes: batches of lists."""
    path = tmp_path_factory.mktemp("cuda-sizes") / "ds.lance"
    images = [encode(i, 4 + i % 3, 5 + i % 2) for i in range(12)]
    lance.write_dataset(pa.table({"image": pa.array(images, pa.binary()), "label": pa.array([i % 3 for i in range(12)])}), str(path))
    return str(path)


@pytest.fixture(scope="module")
def coco_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A COCO dataset with boxes and masks, written by lancefeed's COCO ingest."""
    root = tmp_path_factory.mktemp("cuda-coco")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    entries, anns = [], []
    for i in range(10):
        w, h = int(rng.integers(20, 40)), int(rng.integers(20, 40))
        (root / "images" / f"{i}.png").write_bytes(encode(i, h, w))
        entries.append({"id": i, "file_name": f"{i}.png", "width": w, "height": h})
        for k in range(1 + i % 3):
            x, y = float(rng.uniform(0, w - 8)), float(rng.uniform(0, h - 8))
            anns.append({"id": len(anns), "image_id": i, "bbox": [x, y, 6.0, 6.0], "category_id": 1 + k % 2, "iscrowd": 0,
                         "segmentation": [[x, y, x + 6, y, x + 6, y + 6, x, y + 6]]})
    (root / "ann.json").write_text(json.dumps({"images": entries, "annotations": anns,
                                                "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "bus"}]}))
    lancefeed.ingest_coco(root / "ann.json", root / "images", root / "c.lance", masks=True, progress=False)
    return str(root / "c.lance")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCuda]:
    """Two fake CUDA devices in place of torch.cuda's, for everything the loader makes."""
    with FakeCuda(devices=2) as f:
        monkeypatch.setattr(backends, "default_cuda", lambda: f)
        monkeypatch.delenv("LOCAL_RANK", raising=False)
        yield f


def sample_ids(images: torch.Tensor) -> List[int]:
    px = images[:, 0, 0, :].to(torch.int64).cpu()
    return (px[:, 0] + 256 * px[:, 1]).tolist()


def host(value: Any, fake: FakeCuda, device: int, where: List[Any]) -> Any:
    """``value`` with every tensor read back to the host (on the calling thread's
    current stream, as a training loop would read it); their devices go to ``where``."""
    if isinstance(value, torch.Tensor):
        where.append(fake.device_of(value))
        return value.cpu()
    if isinstance(value, dict):
        return {k: host(v, fake, device, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(host(v, fake, device, where) for v in value)
    return value


def assert_same(got: Any, want: Any, float_tol: float = 1e-5) -> None:
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.shape == want.shape and got.dtype == want.dtype
        if want.dtype == torch.bfloat16:
            torch.testing.assert_close(got, want)
        elif want.is_floating_point():
            torch.testing.assert_close(got, want, atol=float_tol, rtol=0)
        else:
            assert torch.equal(got, want)
    elif isinstance(want, dict):
        assert got.keys() == want.keys()
        for k in want:
            assert_same(got[k], want[k], float_tol)
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert_same(a, b, float_tol)
    else:
        assert got == want


# Every kind of batch a loader makes on the CPU: (dataset fixture, DataLoader arguments).
KINDS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "uint8": ("uri", {"transform": lancefeed.Resize((4, W))}),
    "normalize": ("uri", {"normalize": (MEAN, STD)}),
    "channels_last": ("uri", {"normalize": (MEAN, STD), "channels_last": True}),
    "bfloat16": ("uri", {"normalize": (MEAN, STD), "normalize_dtype": "bfloat16"}),
    "gray": ("uri", {"mode": "L", "normalize": ((0.5,), (0.5,))}),
    "slow path": ("uri", {"transform": v2.Compose([v2.Resize((4, W), antialias=True), v2.Lambda(lambda x: x),
                                                   v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])}),
    "columns": ("uri", {"columns": ["image", "label", "id", "tags", "note"], "output": "dict"}),
    "sizes": ("sizes_uri", {}),
    "sizes normalized": ("sizes_uri", {"normalize": (MEAN, STD)}),
    "detection": ("coco_uri", {"output": "detection", "transform": [lancefeed.RandomResizedCrop(16), lancefeed.RandomHorizontalFlip()]}),
    "targets": ("coco_uri", {"targets": {"boxes": "xywh", "mask": "mask"}, "transform": [lancefeed.Resize((16, 16))],
                             "normalize": (MEAN, STD)}),
}
try:  # albumentations pipelines: its float CHW tensors, its HWC arrays, its boxes
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    KINDS["albumentations"] = ("uri", {"transform": A.Compose([A.RandomCrop(4, 4), A.CLAHE(p=1), A.Normalize(), ToTensorV2()])})
    KINDS["albumentations detection"] = ("coco_uri", {"output": "detection", "transform": A.Compose(
        [A.RandomCrop(12, 12), A.Rotate(limit=10)], bbox_params=A.BboxParams(format="coco", label_fields=[]))})
except ImportError:
    pass



def batches(loader: Any, fake: FakeCuda, device: int) -> Tuple[List[Any], List[Any]]:
    where: List[Any] = []
    out = [host(b, fake, device, where) for b in loader]
    return out, where


@pytest.mark.parametrize("how", ["device=cuda", "CudaPrefetcher"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_of_loader_iterates_on_the_device(kind: str, how: str, fake: FakeCuda,
                                                      request: pytest.FixtureRequest) -> None:
    fixture, kwargs = KINDS[kind]
    source = request.getfixturevalue(fixture)
    common = dict(batch_size=4, shuffle=True, seed=3, **kwargs)
    want = list(lancefeed.DataLoader(source, **common))
    if how == "device=cuda":
        loader: Any = lancefeed.DataLoader(source, device="cuda", **common)
    else:
        loader = CudaPrefetcher(lancefeed.DataLoader(source, **common), "cuda", num_buffers=2)
    for _ in range(2):  # two epochs: the ring's buffers come round again
        loader.set_epoch(0)
        got, where = batches(loader, fake, 0)
        assert len(got) == len(want) == len(loader)
        for a, b in zip(got, want):
            assert_same(a, b)
        # Every tensor of every batch (images, labels, columns, boxes, masks) on the device.
        assert where and set(where) == {0}, where
    assert fake.violations == []


@pytest.mark.parametrize("how", ["set_device", "LOCAL_RANK", "cuda:1"])
def test_batches_land_on_the_ranks_own_device(how: str, uri: str, fake: FakeCuda, monkeypatch: pytest.MonkeyPatch) -> None:
    device = "cuda:1" if how == "cuda:1" else "cuda"
    if how == "set_device":
        fake.set_device(1)  # torch.cuda.set_device(local_rank) in the training thread
    elif how == "LOCAL_RANK":
        monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun, without set_device
    loader = lancefeed.DataLoader(uri, batch_size=8, device=device, normalize=(MEAN, STD))
    _, where = batches(loader, fake, 1)
    assert set(where) == {1}, where
    _, where = batches(CudaPrefetcher(lancefeed.DataLoader(uri, batch_size=8), device), fake, 1)
    assert set(where) == {1}, where
    assert fake.violations == []


def test_a_device_chosen_on_the_loaders_thread_would_be_caught(uri: str, fake: FakeCuda,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The mutation: the backend picked where the copies run (a pipeline thread, whose
    # current device is 0), as the loader did before.
    fake.set_device(1)
    real_finish = DeviceStage.finish

    def finish(self: DeviceStage, handle: Any, images: Any, columns: Any) -> Any:
        self.backend = backend_for(torch.device("cuda"), fake, {})
        return real_finish(self, handle, images, columns)

    monkeypatch.setattr(DeviceStage, "finish", finish)
    _, where = batches(lancefeed.DataLoader(uri, batch_size=8, device="cuda", transform=lancefeed.Resize((4, W))), fake, 1)
    assert set(where) == {0}  # what the test above would have failed on


def _mutations(fake: FakeCuda) -> Dict[str, Callable[[pytest.MonkeyPatch], None]]:
    """Each rule of lancefeed.loader.backends broken, one at a time."""

    def no_ring_wait(mp: pytest.MonkeyPatch) -> None:
        mp.setattr(CudaBackend, "synchronize", lambda self, event: None)

    def no_consumer_wait(mp: pytest.MonkeyPatch) -> None:
        def receive(self: CudaBackend, value: Any, ready: Any) -> Any:
            stream = self.cuda.current_stream(self.index)
            for t in backends.tensors(value):
                self.cuda.record_stream(t, stream)
            return value

        mp.setattr(CudaBackend, "receive", receive)

    def no_record_stream(mp: pytest.MonkeyPatch) -> None:
        def receive(self: CudaBackend, value: Any, ready: Any) -> Any:
            self.cuda.current_stream(self.index).wait_event(ready)
            return value

        mp.setattr(CudaBackend, "receive", receive)

    def coefficients_off_the_side_stream(mp: pytest.MonkeyPatch) -> None:
        def coefficients(self: CudaBackend, norm: Any, channels: int) -> Any:
            with self.cuda.using(self.index, fake.defaults[self.index]):
                scale, shift = norm.coefficients(channels, torch.device("cpu"))
                return self.send(scale), self.send(shift)

        mp.setattr(CudaBackend, "coefficients", coefficients)

    def release_after_normalize(mp: pytest.MonkeyPatch) -> None:
        def finish(self: DeviceStage, handle: Any, images: Any, columns: Any) -> Ready:
            slot, host_buf = self._staged(handle, images)
            with self.backend.side():
                out = self.backend.send_pinned(host_buf)
                out = normalize_batch(out, self.normalize, self.backend.coefficients(self.normalize, out.shape[-1]))
                self.ring.release(slot, self.backend.event())  # one event for copy and normalize
                return Ready((out, send_all(columns, self.backend)), self.backend.event())

        mp.setattr(DeviceStage, "finish", finish)

    def spinning_event(mp: pytest.MonkeyPatch) -> None:
        def event(self: CudaBackend) -> Any:
            e = self.cuda.event(blocking=False)
            e.record(self.stream)
            return e

        mp.setattr(CudaBackend, "event", event)

    def pageable_copies(mp: pytest.MonkeyPatch) -> None:
        mp.setattr(CudaBackend, "send", lambda self, t: self.cuda.to_device(t, self.index))

    return {f.__name__: f for f in (no_ring_wait, no_consumer_wait, no_record_stream, coefficients_off_the_side_stream,
                                    release_after_normalize, spinning_event, pageable_copies)}


# What the fake says for each broken rule.
EXPECTED = {
    "no_ring_wait": "a pinned buffer written while a copy out of it may still run",
    "no_consumer_wait": "it has not waited for",
    "no_record_stream": "without record_stream",
    "coefficients_off_the_side_stream": "allocated on default0 without record_stream",
    "release_after_normalize": None,  # seen in the order of events, below
    "spinning_event": "spins",
    "pageable_copies": "pageable",
}


@pytest.mark.parametrize("mutation", [None, *EXPECTED])
def test_each_stream_rule_holds_and_breaking_it_is_caught(mutation: Any, uri: str, fake: FakeCuda,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if mutation is not None:
        _mutations(fake)[mutation](monkeypatch)
    common = dict(batch_size=3, shuffle=True, seed=1, prefetch=4, normalize=(MEAN, STD))
    want = list(lancefeed.DataLoader(uri, **common))
    loader = lancefeed.DataLoader(uri, device="cuda", **common)
    for epoch in range(2):
        loader.set_epoch(0)
        got, _ = batches(loader, fake, 0)
        assert_same(got, want)
    # Each reuse of a ring buffer waited for the event recorded right after its copy.
    order = fake.release_order()
    if mutation is None:
        assert fake.violations == []
        assert len(order) == 2 * (len(want) - 2)  # a fresh ring each pass: its first two fills wait on nothing
        assert all(event == copy for event, copy in order), order
    elif mutation == "release_after_normalize":
        assert len(order) == 2 * (len(want) - 2) and any(event != copy for event, copy in order)
    else:
        assert any(EXPECTED[mutation] in v for v in fake.violations), fake.violations


def test_neither_loader_nor_prefetcher_holds_the_other(uri: str, fake: FakeCuda) -> None:
    gc.collect()
    gc.disable()  # freed by reference counts alone: no cycle
    try:
        loader = lancefeed.DataLoader(uri, batch_size=8, device="cuda", normalize=(MEAN, STD))
        assert len(list(loader)) == 5
        ref = weakref.ref(loader)
        del loader
        assert ref() is None
        plain = lancefeed.DataLoader(uri, batch_size=8)
        pre = CudaPrefetcher(plain, "cuda")
        assert len(list(pre)) == 5
        refs = weakref.ref(plain), weakref.ref(pre)
        del plain, pre
        assert refs[0]() is None and refs[1]() is None
    finally:
        gc.enable()


def _threads_settle(baseline: int, timeout: float = 10.0) -> int:
    """The number of threads once it is down to ``baseline`` (or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    while threading.active_count() > baseline and time.monotonic() < deadline:
        time.sleep(0.02)
    return threading.active_count()


def test_early_breaks_and_an_error_leave_no_threads_behind(uri: str, fake: FakeCuda, tmp_path: Path) -> None:
    baseline = _threads_settle(0, timeout=0.5)
    loader = lancefeed.DataLoader(uri, batch_size=4, shuffle=True, device="cuda", normalize=(MEAN, STD), prefetch=4)
    for k in range(30):
        for i, (images, labels) in enumerate(loader):
            if i == k % 3:
                break
    del images, labels
    gc.collect()
    assert _threads_settle(baseline) == baseline
    table = pa.table({"image": pa.array([encode(i) for i in range(6)] + [b"broken"] + [encode(7)], pa.binary())})
    lance.write_dataset(table, str(tmp_path / "bad.lance"))
    bad = lancefeed.DataLoader(str(tmp_path / "bad.lance"), batch_size=2, device="cuda", prefetch=4)
    with pytest.raises(lancefeed.DecodeError, match="row 6 of the dataset"):
        for _ in bad:
            pass
    gc.collect()
    assert _threads_settle(baseline) == baseline
    assert fake.violations == []


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
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    raw = lancefeed.DataLoader(uri, batch_size=8, transform=lancefeed.Resize((4, W)))
    pre = CudaPrefetcher(raw, device="cpu", normalize=((0.5,), (0.5,)))
    images, labels = next(iter(pre))
    assert images.shape == (8, 3, 4, W) and images.is_contiguous()
    # The red channel holds the sample index: samples 0..7, normalized with mean 0.5, std 0.5.
    torch.testing.assert_close(images[:, 0, 0, 0], torch.arange(8, dtype=torch.float32) / 255 / 0.5 - 1.0)


def test_prefetcher_keeps_the_loaders_dtype_and_refuses_what_it_cannot_normalize(uri: str, coco_uri: str) -> None:
    loader = lancefeed.DataLoader(uri, batch_size=8, normalize=(MEAN, STD), normalize_dtype="bfloat16")
    images, _ = next(iter(CudaPrefetcher(loader, device="cpu")))
    assert images.dtype == torch.bfloat16
    slow = lancefeed.DataLoader(uri, batch_size=8, transform=v2.Compose([v2.Lambda(lambda x: x)]))
    with pytest.raises(ValueError, match="give normalize= to the DataLoader"):
        CudaPrefetcher(slow, device="cpu", normalize=(MEAN, STD))
    detection = lancefeed.DataLoader(coco_uri, batch_size=2, output="detection")
    with pytest.raises(ValueError, match="give normalize= to the DataLoader"):
        CudaPrefetcher(detection, device="cpu", normalize=(MEAN, STD))


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


def test_ring_takes_buffers_in_turn_and_grows_one_only_once_its_copy_is_done(fake: FakeCuda) -> None:
    backend = CudaBackend(0, fake)
    ring = HostRing(backend, 2)
    slots = []
    for nbytes in (10, 10, 10, 5 << 20):
        slot = ring.acquire(nbytes)
        slot.host.numpy()[:nbytes] = 1  # the decode writes it
        with backend.side():
            backend.send_pinned(slot.host[:nbytes])
            ring.release(slot, backend.event())
        slots.append(slot)
    assert [s.index for s in slots] == [0, 1, 0, 1]
    assert slots[3].host.numel() >= 5 << 20
    syncs = [e for e in fake.log if e[0] == "synchronize"]
    assert len(syncs) == 2  # the third and fourth acquire each waited for a copy
    assert fake.violations == []


def test_the_resolved_device_follows_the_thread_that_asks(fake: FakeCuda, monkeypatch: pytest.MonkeyPatch) -> None:
    assert backends.resolve_cuda_index(torch.device("cuda"), fake) == 0
    fake.set_device(1)
    assert backends.resolve_cuda_index(torch.device("cuda"), fake) == 1
    seen = []
    t = threading.Thread(target=lambda: seen.append(backends.resolve_cuda_index(torch.device("cuda"), fake)))
    t.start()
    t.join()
    assert seen == [0]  # another thread's current device is its own: why the loader asks in yours
    fake.set_device(0)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert backends.resolve_cuda_index(torch.device("cuda"), fake) == 1
    with pytest.raises(ValueError, match="has 2 CUDA device"):
        backends.resolve_cuda_index(torch.device("cuda", 2), fake)


# -- on a GPU -------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_cuda_end_to_end(uri: str) -> None:
    cpu = lancefeed.DataLoader(uri, batch_size=8, shuffle=True, seed=2, normalize=(MEAN, STD))
    expect = [(x, y) for x, y in cpu]
    for channels_last in (False, True):
        gpu = lancefeed.DataLoader(
            uri, batch_size=8, shuffle=True, seed=2, normalize=(MEAN, STD), channels_last=channels_last,
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
    batches_ = list(pre)
    assert batches_[0][0].dtype == torch.uint8 and batches_[0][0].device.type == "cuda"
    assert [i for x, _ in batches_ for i in sample_ids(x)] == list(range(N))


@cuda
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_of_loader_on_a_gpu(kind: str, request: pytest.FixtureRequest) -> None:
    fixture, kwargs = KINDS[kind]
    source = request.getfixturevalue(fixture)
    common = dict(batch_size=4, shuffle=True, seed=3, **kwargs)
    want = list(lancefeed.DataLoader(source, **common))
    got = []
    for batch in lancefeed.DataLoader(source, device="cuda", **common):
        devices = {t.device.type for t in backends.tensors(batch)}
        assert devices == {"cuda"}, devices
        got.append(_to_cpu(batch))
    assert_same(got, want)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value
