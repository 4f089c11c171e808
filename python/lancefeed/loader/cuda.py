"""The device path: decode into pinned buffers, copy on a side stream, convert on the device.

A pass on a device (``DataLoader(device="cuda")`` or :class:`CudaPrefetcher`) gets a
:class:`DeviceStage`. The loader's background thread decodes each batch of images
straight into one buffer of a ring of pinned host buffers (``decode_batch(out=...)``);
then, still in that thread, the stage queues on the backend's side stream: the batch's
copy to the device, an event that releases the pinned buffer as soon as that copy is
done, the uint8 to float conversion and normalization, the copies of every other tensor
(labels, columns, boxes, masks, images of varying sizes, the slow path's output: each
pinned first), and an event after all of it. In the training loop's thread the current
stream waits on that event and records every tensor as used by it
(:mod:`lancefeed.loader.backends` holds those rules). Every batch a loader makes on the
CPU comes this way: a batch tensor, a list of images, detection targets.

The device index is resolved in the thread that starts the pass
(:func:`~lancefeed.loader.backends.resolve_cuda_index`), never in a background thread.
Neither the loader nor the prefetcher holds the other in a cycle: each holds a
:class:`DeviceFeed`, which makes the stage of each pass.

Example:
    >>> loader = lancefeed.DataLoader("cifar.lance", 256, shuffle=True)  # doctest: +SKIP
    >>> for images, labels in lancefeed.CudaPrefetcher(
    ...         loader, normalize=((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))):  # doctest: +SKIP
    ...     pass  # images: float32 (256, 3, 32, 32) on cuda; labels: int64 on cuda
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch

from lancefeed.loader.backends import backend_for
from lancefeed.loader.staging import Normalize, NormalizeArg, normalize_batch

__all__ = ["CudaPrefetcher", "DeviceFeed", "DeviceStage", "HostRing", "Ready", "send_all"]


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
        >>> from lancefeed.loader.backends import CpuBackend
        >>> ring = HostRing(CpuBackend(), 2)
        >>> slot = ring.acquire(12)
        >>> ring.release(slot, CpuBackend().event())
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
            slot.host = self.backend.pinned(_round_up(nbytes))
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


@dataclass
class Ready:
    """A batch queued on the side stream: its tensors and the event after them."""

    value: Tuple[Any, Dict[str, Any]]
    event: Any


class DeviceStage:
    """The loader stage of one pass on a device: fills the ring, queues the copies.

    Example:
        >>> from lancefeed.loader.backends import CpuBackend
        >>> stage = DeviceStage(CpuBackend(), HostRing(CpuBackend(), 2), None)
        >>> handle = stage.buffer(2, (4, 4, 3)); handle.array[:] = 7
        >>> images, columns = stage.deliver(stage.finish(handle, handle.array, {"label": torch.tensor([1, 2])}))
        >>> images.shape, int(images.sum()), columns["label"].tolist()
        (torch.Size([2, 4, 4, 3]), 672, [1, 2])
    """

    # The decode threads never normalise for this stage: the device does.
    fused_normalize = None

    def __init__(self, backend: Any, ring: HostRing, normalize: Optional[Normalize]) -> None:
        self.backend = backend
        self.ring = ring
        self.normalize = normalize

    def buffer(self, n: int, shape: Tuple[int, int, int]) -> _Handle:
        """A ring buffer for ``n`` uint8 images of ``shape`` (H, W, C), once its last copy is done."""
        nbytes = n * shape[0] * shape[1] * shape[2]
        slot = self.ring.acquire(nbytes)
        view = slot.host[:nbytes].view(n, *shape)
        return _Handle(slot, view.numpy())

    def finish(self, handle: Optional[_Handle], images: Any, columns: Dict[str, Any]) -> Ready:
        """Queue the batch's copies on the side stream (on the loader's thread).

        ``images``: a uint8 NHWC batch (in ``handle``'s buffer, or staged into one; the
        stage normalizes it), a tensor (the slow path's) or a list of images (normalized
        per image already, when asked: see ``BatchMaker``); ``columns``: tensors, lists
        of them, or other values (left on the host)."""
        batch = isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
        slot, host = self._staged(handle, images) if batch else (None, None)
        backend = self.backend
        with backend.side():
            if host is not None:
                out = backend.send_pinned(host)
                self.ring.release(slot, backend.event())  # free once this copy is done
                if self.normalize is not None:
                    out = normalize_batch(out, self.normalize, backend.coefficients(self.normalize, out.shape[-1]))
            else:
                out = send_all(images, backend)
            value = (out, send_all(columns, backend))
            return Ready(value, backend.event())

    def _staged(self, handle: Optional[_Handle], images: np.ndarray) -> Tuple[Any, torch.Tensor]:
        """The ring slot holding ``images`` and the pinned tensor over them."""
        if handle is None:  # the core allocated (image sizes unknown up front): stage it
            slot = self.ring.acquire(images.nbytes)
            host = slot.host[: images.nbytes].view(*images.shape)
            np.copyto(host.numpy(), images)
            return slot, host
        if images.size and images.__array_interface__["data"][0] != handle.array.__array_interface__["data"][0]:
            raise RuntimeError("decode_batch did not decode into the buffer it was given")
        return handle.slot, handle.slot.host[: images.nbytes].view(*images.shape)

    def deliver(self, ready: Ready) -> Tuple[Any, Dict[str, Any]]:
        """The batch, usable on the calling thread's current stream (the training loop's)."""
        return self.backend.receive(ready.value, ready.event)


def send_all(value: Any, backend: Any) -> Any:
    """Every tensor (or numpy array) in ``value`` sent to the device; the rest as it is.

    Example:
        >>> from lancefeed.loader.backends import CpuBackend
        >>> send_all({"label": torch.tensor([1]), "note": ["a"]}, CpuBackend())
        {'label': tensor([1]), 'note': ['a']}
    """
    if isinstance(value, torch.Tensor):
        return backend.send(value)
    if isinstance(value, np.ndarray) and value.dtype != object:
        return backend.send(torch.from_numpy(value))
    if isinstance(value, dict):
        return {k: send_all(v, backend) for k, v in value.items()}
    if isinstance(value, list):
        return [send_all(v, backend) for v in value]
    if isinstance(value, tuple):
        return tuple(send_all(v, backend) for v in value)
    return value


class DeviceFeed:
    """What starts a pass on a device: the device asked for, the normalization, the ring
    size, and the backend of each device index used so far (one side stream each).

    Example:
        >>> feed = DeviceFeed("cpu", None, num_buffers=2)
        >>> type(feed.stage()).__name__
        'DeviceStage'
    """

    def __init__(self, device: Union[str, torch.device], normalize: Optional[Normalize], num_buffers: int = 2,
                 *, backend: Any = None, cuda: Any = None) -> None:
        self.device = torch.device(device)
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {str(device)!r}")
        self.normalize = normalize
        self.num_buffers = int(num_buffers)
        self._backend = backend
        self._cuda = cuda
        self._backends: Dict[int, Any] = {}
        HostRing(backend, self.num_buffers)  # checked now, not at the first iteration

    def backend(self) -> Any:
        """The backend for a pass started on the calling thread (its device resolved here)."""
        if self._backend is not None:
            return self._backend
        return backend_for(self.device, self._cuda, self._backends)

    def stage(self) -> DeviceStage:
        """A fresh stage and ring for one pass: the last pass's buffers may still be copying."""
        backend = self.backend()
        return DeviceStage(backend, HostRing(backend, self.num_buffers), self.normalize)


class CudaPrefetcher:
    """Iterate a :class:`lancefeed.DataLoader` with batches delivered on a CUDA device.

    ``normalize=(mean, std)`` (0..1 scale), ``channels_last`` and ``normalize_dtype``
    default to the loader's; without normalize, images arrive as uint8 NHWC on the
    device, as on the CPU. Every tensor of a batch (labels, columns, boxes, masks,
    lists of images) arrives on the device. ``num_buffers`` pinned host buffers form the
    ring (at least 2). ``device``: ``"cuda"`` (the current device of the thread that
    starts each pass, or ``LOCAL_RANK``'s: see
    :func:`~lancefeed.loader.backends.resolve_cuda_index`), ``"cuda:N"``, or ``"cpu"``
    to run the same code without a GPU. ``backend=`` replaces the device backend
    altogether (tests). Epochs, ``len()`` and resume are the loader's.

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
        normalize_dtype: Optional[str] = None,
        num_buffers: int = 2,
        backend: Any = None,
    ) -> None:
        self.loader = loader
        own = loader.normalize
        cl = own.channels_last if channels_last is None and own is not None else bool(channels_last)
        dtype = normalize_dtype or (own.dtype if own is not None else "float32")
        if normalize is not None:
            norm: Optional[Normalize] = Normalize.of(normalize, 1 if loader.mode == "L" else 3, cl, dtype)
        elif own is not None:
            norm = Normalize(own.mean, own.std, cl, dtype)
        else:
            norm = None
        if norm is not None and not loader.batches_are_images():
            raise ValueError(
                "CudaPrefetcher(normalize=...) normalizes uint8 image batches; this loader's transform runs per "
                "sample in Python or gives images with their targets: give normalize= to the DataLoader "
                "(or end the transform with ToDtype and Normalize) instead"
            )
        self.feed = DeviceFeed(device if backend is None else backend.device, norm, num_buffers, backend=backend)
        self.normalize = norm
        self.num_buffers = self.feed.num_buffers

    @property
    def device(self) -> torch.device:
        """The device asked for (``cuda`` without an index: resolved at each pass)."""
        return self.feed.device

    def __iter__(self) -> Any:
        return self.loader.iterate(self.feed.stage())

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        """The loader's :meth:`~lancefeed.DataLoader.set_epoch`.

        Example:
            >>> CudaPrefetcher(loader).set_epoch(3)  # doctest: +SKIP
        """
        self.loader.set_epoch(epoch)

    def state_dict(self) -> Dict[str, Any]:
        """The loader's :meth:`~lancefeed.DataLoader.state_dict`.

        Example:
            >>> state = CudaPrefetcher(loader).state_dict()  # doctest: +SKIP
        """
        return self.loader.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """The loader's :meth:`~lancefeed.DataLoader.load_state_dict`.

        Example:
            >>> CudaPrefetcher(loader).load_state_dict(state)  # doctest: +SKIP
        """
        self.loader.load_state_dict(state)
