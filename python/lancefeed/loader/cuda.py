"""``CudaPrefetcher``: decode into pinned buffers, copy on a side stream, convert on the GPU.

The loader's background thread decodes each batch straight into one buffer of a ring
of pinned host buffers (``decode_batch(out=...)``), then, still in that thread, queues
on a side CUDA stream: the host-to-device copy (``non_blocking=True``), the uint8 to
float conversion, the normalization and the NCHW / channels_last layout, and records a
CUDA event after them. A buffer is refilled only after the event of its last copy has
completed, so the decoder never overwrites bytes the GPU is still reading. In the
training loop's thread the current stream waits for the event (no host stall) and the
batch's tensors are marked as used by that stream, so the caching allocator does not
hand their memory to the side stream too early.

The ring, the events and the streams are reached only through a *backend*: the CUDA
backend uses ``torch.cuda``; :class:`CpuBackend` runs the same ring code on the CPU
(copies are clones, events are complete at once), and a test can bring its own backend
whose copies finish late to check the bookkeeping.

Example:
    >>> loader = lancefeed.DataLoader("cifar.lance", 256, shuffle=True)  # doctest: +SKIP
    >>> for images, labels in lancefeed.CudaPrefetcher(
    ...         loader, normalize=((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))):  # doctest: +SKIP
    ...     pass  # images: float32 (256, 3, 32, 32) on cuda; labels: int64 on cuda
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch

from lancefeed.loader.staging import Normalize, NormalizeArg, normalize_batch


# -- backends ---------------------------------------------------------------------


@dataclass
class Launched:
    """Work queued on the side stream: its outputs and the event recorded after it."""

    value: Any
    event: Any


class CudaBackend:
    """Pinned host memory, a side stream and events of one CUDA device."""

    def __init__(self, device: Union[str, torch.device] = "cuda") -> None:
        dev = torch.device(device)
        if dev.type != "cuda":
            raise ValueError(f"CudaBackend needs a cuda device, got {str(dev)!r}")
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device={str(device)!r} but CUDA is not available (torch {torch.__version__}, "
                f"built with CUDA {torch.version.cuda}, no GPU visible)"
            )
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        self.device = dev
        self.stream = torch.cuda.Stream(device=dev)

    def host_empty(self, nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)

    def to_device(self, host: torch.Tensor) -> torch.Tensor:
        return host.to(self.device, non_blocking=True)

    def launch(self, work: Callable[[], Any]) -> Launched:
        # Called from the loader's thread: the current device and stream are per thread.
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            value = work()
            event = torch.cuda.Event()
            event.record(self.stream)
        return Launched(value, event)

    def synchronize(self, event: Any) -> None:
        event.synchronize()

    def query(self, event: Any) -> bool:
        return bool(event.query())

    def collect(self, launched: Launched) -> Any:
        current = torch.cuda.current_stream(self.device)
        current.wait_event(launched.event)
        for t in _tensors(launched.value):
            if t.device.type == "cuda":
                t.record_stream(current)
        return launched.value


class _DoneEvent:
    def query(self) -> bool:
        return True


class CpuBackend:
    """The same ring on the CPU: plain buffers, synchronous copies, events done at once."""

    def __init__(self) -> None:
        self.device = torch.device("cpu")

    def host_empty(self, nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8)

    def to_device(self, host: torch.Tensor) -> torch.Tensor:
        return host.clone()  # the buffer goes back to the ring; the batch must not alias it

    def launch(self, work: Callable[[], Any]) -> Launched:
        return Launched(work(), _DoneEvent())

    def synchronize(self, event: Any) -> None:
        return None

    def query(self, event: Any) -> bool:
        return bool(event.query())

    def collect(self, launched: Launched) -> Any:
        return launched.value


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


# -- the ring ---------------------------------------------------------------------


class _Slot:
    __slots__ = ("index", "host", "event")

    def __init__(self, index: int) -> None:
        self.index = index
        self.host: Optional[torch.Tensor] = None
        self.event: Any = None  # recorded after the last copy out of this buffer


class HostRing:
    """``num_buffers`` host buffers taken in turn; one is reused only after its copy's event.

    Example:
        >>> ring = HostRing(CpuBackend(), 2)
        >>> slot = ring.acquire(12)
        >>> ring.release(slot, CpuBackend().launch(lambda: None).event)
    """

    def __init__(self, backend: Any, num_buffers: int = 2) -> None:
        if num_buffers < 2:
            raise ValueError(f"num_buffers must be at least 2 (one decoding while one copies), got {num_buffers}")
        self.backend = backend
        self.slots = [_Slot(i) for i in range(num_buffers)]
        self._next = 0
        self._lock = threading.Lock()

    def acquire(self, nbytes: int) -> _Slot:
        """The next buffer, with room for ``nbytes``, once the GPU is done reading it."""
        with self._lock:
            slot = self.slots[self._next]
            self._next = (self._next + 1) % len(self.slots)
        if slot.event is not None:
            self.backend.synchronize(slot.event)
            slot.event = None
        if slot.host is None or slot.host.numel() < nbytes:
            slot.host = None  # free the old one first: pinned memory is scarce
            slot.host = self.backend.host_empty(_round_up(nbytes))
        return slot

    def release(self, slot: _Slot, event: Any) -> None:
        """The copy out of ``slot`` was queued; ``event`` completes when it is done."""
        slot.event = event


def _round_up(nbytes: int, granule: int = 1 << 20) -> int:
    return max(granule, -(-nbytes // granule) * granule)


@dataclass
class _Handle:
    slot: Any
    array: np.ndarray


class DeviceStage:
    """The loader stage that fills the ring and moves batches to the device."""

    def __init__(self, backend: Any, ring: HostRing, normalize: Optional[Normalize]) -> None:
        self.backend = backend
        self.ring = ring
        self.normalize = normalize
        self._coefficients: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}

    def _coefficients_for(self, channels: int) -> Tuple[torch.Tensor, torch.Tensor]:
        # Made on the device once: a copy from pageable memory per batch would wait for
        # the side stream's previous copies.
        if channels not in self._coefficients:
            assert self.normalize is not None
            self._coefficients[channels] = self.normalize.coefficients(channels, self.backend.device)
        return self._coefficients[channels]

    def buffer(self, n: int, shape: Tuple[int, int, int]) -> _Handle:
        nbytes = n * shape[0] * shape[1] * shape[2]
        slot = self.ring.acquire(nbytes)
        view = slot.host[:nbytes].view(n, *shape)
        return _Handle(slot, view.numpy())

    def finish(self, handle: Optional[_Handle], images: np.ndarray, columns: Dict[str, Any]) -> Launched:
        if handle is None:  # the core allocated (image sizes unknown up front): stage it
            nbytes = images.nbytes
            slot = self.ring.acquire(nbytes)
            host = slot.host[:nbytes].view(*images.shape)
            np.copyto(host.numpy(), images)
        else:
            slot = handle.slot
            if images.size and images.__array_interface__["data"][0] != handle.array.__array_interface__["data"][0]:
                raise RuntimeError("decode_batch did not decode into the buffer it was given")
            host = slot.host[: images.nbytes].view(*images.shape)
        backend, norm = self.backend, self.normalize

        coefficients = self._coefficients_for(images.shape[-1]) if norm is not None else None

        def work() -> Tuple[torch.Tensor, Dict[str, Any]]:
            images_dev = backend.to_device(host)
            if norm is not None:
                images_dev = normalize_batch(images_dev, norm, coefficients)
            return images_dev, _move(columns, backend)

        launched = backend.launch(work)
        self.ring.release(slot, launched.event)
        return launched

    def deliver(self, launched: Launched) -> Tuple[torch.Tensor, Dict[str, Any]]:
        return self.backend.collect(launched)


def _move(value: Any, backend: Any) -> Any:
    if isinstance(value, torch.Tensor):
        if backend.device.type == "cpu":
            return value
        # Pinned, so the copy is asynchronous too (a pageable one would wait for the
        # stream); torch's pinned allocator keeps the block until the copy is done.
        return value.pin_memory().to(backend.device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _move(v, backend) for k, v in value.items()}
    if isinstance(value, list):
        return [_move(v, backend) for v in value]
    return value


class CudaPrefetcher:
    """Iterate a :class:`lancefeed.DataLoader` with batches delivered on a CUDA device.

    ``normalize=(mean, std)`` (0..1 scale) and ``channels_last`` default to the
    loader's; without normalize, images arrive as uint8 NHWC on the device, as on the
    CPU. ``num_buffers`` pinned host buffers form the ring (at least 2). ``device`` may
    be ``"cpu"`` to run the same code without a GPU; ``backend=`` replaces the device
    backend altogether (tests). Epochs, ``len()`` and resume are the loader's.

    Example:
        >>> for images, labels in CudaPrefetcher(loader):  # doctest: +SKIP
        ...     loss = model(images.float()).sum()
    """

    def __init__(
        self,
        loader: Any,
        device: Union[str, torch.device] = "cuda",
        *,
        normalize: Optional[NormalizeArg] = None,
        channels_last: Optional[bool] = None,
        num_buffers: int = 2,
        backend: Any = None,
    ) -> None:
        self.loader = loader
        if backend is None:
            dev = torch.device(device)
            backend = CpuBackend() if dev.type == "cpu" else CudaBackend(dev)
        self.backend = backend
        self.device = backend.device
        cl = loader.normalize.channels_last if channels_last is None and loader.normalize else bool(channels_last)
        if normalize is not None:
            channels = 1 if getattr(loader, "mode", "RGB") == "L" else 3
            self.normalize: Optional[Normalize] = Normalize.of(normalize, channels, cl)
        elif loader.normalize is not None:
            self.normalize = Normalize(loader.normalize.mean, loader.normalize.std, cl, loader.normalize.dtype)
        else:
            self.normalize = None
        self.num_buffers = int(num_buffers)
        HostRing(backend, self.num_buffers)  # validate now, not at the first iteration

    def __iter__(self) -> Any:
        # A fresh ring per pass: the previous pass's buffers may still be copying.
        ring = HostRing(self.backend, self.num_buffers)
        return self.loader.iterate(DeviceStage(self.backend, ring, self.normalize))

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def state_dict(self) -> Dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.loader.load_state_dict(state)
