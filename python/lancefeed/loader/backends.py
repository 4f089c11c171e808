"""Where the device path's copies run: CUDA's primitives behind one small interface
(:class:`TorchCuda`), and PyTorch's stream rules kept in one place (:class:`CudaBackend`).

The rules (PyTorch's "CUDA semantics"), each kept by one method of :class:`CudaBackend`:

- Devices are explicit indices (:func:`resolve_cuda_index`): the loader's threads run
  with device 0 current whatever the training loop's thread set, so nothing there may
  use a bare ``"cuda"``.
- The side stream (one per backend) runs every copy to the device and every kernel on a
  batch; what it reads is made on it (the batch's copies, the normalization
  coefficients: :meth:`CudaBackend.coefficients`), so the caching allocator never hands
  their blocks to other work while it still reads them.
- Copies are from pinned memory, non-blocking (:meth:`CudaBackend.send`): a pageable
  copy would block the decoding thread until the side stream's earlier work is done.
- A ring buffer is released by an event recorded right after its own copy
  (:meth:`CudaBackend.event`), not after the normalization that follows it; events are
  blocking, so waiting on one sleeps instead of spinning a core the decoder needs.
- The consumer's current stream waits on the batch's ready event and ``record_stream``s
  every tensor it receives (:meth:`CudaBackend.receive`), so the blocks are not reused
  while the training loop's stream still reads them.

Tests bring a fake of :class:`TorchCuda` (same methods) that checks each rule on the CPU.

Example:
    >>> backend = CpuBackend()
    >>> with backend.side():
    ...     batch = backend.send_pinned(backend.pinned(8))
    >>> backend.receive(batch, backend.event()).shape
    torch.Size([8])
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, ContextManager, Dict, Iterator, Optional, Tuple

import torch

from lancefeed.loader.staging import Normalize

__all__ = ["CpuBackend", "CudaBackend", "TorchCuda", "backend_for", "default_cuda", "resolve_cuda_index", "tensors"]


class TorchCuda:
    """``torch.cuda``'s primitives, one method each, for :class:`CudaBackend`.

    Example:
        >>> TorchCuda().is_available() in (True, False)
        True
    """

    def is_available(self) -> bool:
        return torch.cuda.is_available()

    def device_count(self) -> int:
        return torch.cuda.device_count()

    def current_device(self) -> int:
        """The calling thread's current device."""
        return torch.cuda.current_device()

    def stream(self, index: int) -> Any:
        return torch.cuda.Stream(device=index)

    def current_stream(self, index: int) -> Any:
        """The calling thread's current stream on device ``index``."""
        return torch.cuda.current_stream(index)

    def using(self, index: int, stream: Any) -> ContextManager[Any]:
        """Device ``index`` and ``stream`` current in the calling thread, inside the block."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.cuda.device(index))
        stack.enter_context(torch.cuda.stream(stream))
        return stack

    def event(self, blocking: bool) -> Any:
        return torch.cuda.Event(blocking=blocking)

    def pinned(self, nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)

    def pin(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if tensor.is_pinned() else tensor.pin_memory()

    def to_device(self, host: torch.Tensor, index: int) -> torch.Tensor:
        """``host`` (pinned) copied to device ``index`` on the current stream, asynchronously."""
        return host.to(torch.device("cuda", index), non_blocking=True)

    def on_device(self, tensor: torch.Tensor) -> bool:
        return tensor.is_cuda

    def record_stream(self, tensor: torch.Tensor, stream: Any) -> None:
        tensor.record_stream(stream)


def resolve_cuda_index(device: torch.device, cuda: Any) -> int:
    """The CUDA device index batches go to, decided in the thread that starts a pass.

    ``cuda:N``: N. ``cuda``: this thread's current device (what the training script's
    ``torch.cuda.set_device`` chose); when that is device 0 and ``LOCAL_RANK`` (torchrun,
    Lightning, accelerate) names another one, that one: a DDP script that moves its model
    to ``cuda:LOCAL_RANK`` without ``set_device`` gets its batches there too.

    Example:
        >>> class OneGpu:
        ...     def current_device(self): return 0
        ...     def device_count(self): return 4
        >>> resolve_cuda_index(torch.device("cuda", 2), OneGpu())
        2
        >>> os.environ["LOCAL_RANK"] = "3"; resolve_cuda_index(torch.device("cuda"), OneGpu())
        3
        >>> del os.environ["LOCAL_RANK"]
    """
    count = cuda.device_count()
    if device.index is not None:
        if device.index >= count:
            raise ValueError(f"device={str(device)!r} but this machine has {count} CUDA device(s)")
        return int(device.index)
    current = int(cuda.current_device())
    local = os.environ.get("LOCAL_RANK", "")
    if current == 0 and local.isdigit() and 0 < int(local) < count:
        return int(local)
    return current


def tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in ``value`` (tensors, lists, tuples, dicts of them, nested).

    Example:
        >>> len(list(tensors({"a": [torch.zeros(1), "x"], "b": (torch.ones(2),)})))
        2
    """
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from tensors(v)


class CudaBackend:
    """The device path on CUDA device ``index``: its side stream and the rules above.

    Example:
        >>> backend = CudaBackend(0)  # doctest: +SKIP
        >>> with backend.side():  # doctest: +SKIP
        ...     x = backend.send(torch.zeros(4)); done = backend.event()
        >>> backend.receive(x, done).device  # doctest: +SKIP
        device(type='cuda', index=0)
    """

    def __init__(self, index: int, cuda: Any = None) -> None:
        self.cuda = cuda if cuda is not None else default_cuda()
        if not self.cuda.is_available():
            raise RuntimeError(
                f"a CUDA device was asked for but CUDA is not available (torch {torch.__version__}, "
                f"built with CUDA {torch.version.cuda}, no GPU visible)"
            )
        self.index = int(index)
        self.device = torch.device("cuda", self.index)
        self.stream = self.cuda.stream(self.index)
        self._coefficients: Dict[Tuple[Normalize, int], Tuple[torch.Tensor, torch.Tensor]] = {}

    def side(self) -> ContextManager[Any]:
        """The side stream and this backend's device, current in the calling thread."""
        return self.cuda.using(self.index, self.stream)

    def pinned(self, nbytes: int) -> torch.Tensor:
        """A pinned host buffer of ``nbytes`` (the ring's)."""
        return self.cuda.pinned(nbytes)

    def send_pinned(self, host: torch.Tensor) -> torch.Tensor:
        """``host``, pinned already, copied to the device on the side stream (inside :meth:`side`)."""
        return self.cuda.to_device(host, self.index)

    def send(self, tensor: torch.Tensor) -> torch.Tensor:
        """Any host tensor to the device: pinned first (torch's pinned allocator keeps the
        block until the copy is done), then copied asynchronously (inside :meth:`side`)."""
        return self.cuda.to_device(self.cuda.pin(tensor), self.index)

    def event(self) -> Any:
        """A blocking event recorded on the side stream now: done when the work queued so far is."""
        event = self.cuda.event(blocking=True)
        event.record(self.stream)
        return event

    def synchronize(self, event: Any) -> None:
        """Block the calling thread (sleeping) until ``event`` is done."""
        event.synchronize()

    def coefficients(self, norm: Normalize, channels: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """``norm``'s scale and shift on the device, made on the side stream once (inside
        :meth:`side`) and kept for the backend's life: only the side stream reads them."""
        key = (norm, channels)
        if key not in self._coefficients:
            scale, shift = norm.coefficients(channels, torch.device("cpu"))
            self._coefficients[key] = (self.send(scale), self.send(shift))
        return self._coefficients[key]

    def receive(self, value: Any, ready: Any) -> Any:
        """``value`` made usable on the calling thread's current stream: it waits on
        ``ready`` (no host stall), and each device tensor is recorded as used by it."""
        stream = self.cuda.current_stream(self.index)
        stream.wait_event(ready)
        for t in tensors(value):
            if self.cuda.on_device(t):
                self.cuda.record_stream(t, stream)
        return value


class _Done:
    """An event that is complete when made (the CPU's copies are)."""

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        return None


class CpuBackend:
    """The same path on the CPU: plain buffers, copies that are clones and done at once.

    Example:
        >>> CpuBackend().send(torch.ones(2)).tolist()
        [1.0, 1.0]
    """

    def __init__(self) -> None:
        self.device = torch.device("cpu")

    def side(self) -> ContextManager[Any]:
        return contextlib.nullcontext()

    def pinned(self, nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8)

    def send_pinned(self, host: torch.Tensor) -> torch.Tensor:
        return host.clone()  # the buffer goes back to the ring; the batch must not alias it

    def send(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.clone()

    def event(self) -> _Done:
        return _Done()

    def synchronize(self, event: Any) -> None:
        event.synchronize()

    def coefficients(self, norm: Normalize, channels: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return norm.coefficients(channels, self.device)

    def receive(self, value: Any, ready: Any) -> Any:
        return value


def default_cuda() -> Any:
    """The CUDA primitives the device path uses: :class:`TorchCuda` (a test replaces this).

    Example:
        >>> type(default_cuda()).__name__
        'TorchCuda'
    """
    return TorchCuda()


def backend_for(device: torch.device, cuda: Optional[Any], backends: Dict[int, Any]) -> Any:
    """The backend of ``device`` for a pass started on the calling thread (a CUDA one per
    device index, kept in ``backends``).

    Example:
        >>> backend_for(torch.device("cpu"), None, {}).device
        device(type='cpu')
    """
    if device.type == "cpu":
        return CpuBackend()
    cuda = cuda if cuda is not None else default_cuda()
    if not cuda.is_available():
        CudaBackend(0, cuda)  # raises, saying why
    index = resolve_cuda_index(device, cuda)
    if index not in backends:
        backends[index] = CudaBackend(index, cuda)
    return backends[index]
