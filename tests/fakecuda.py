"""A fake of ``lancefeed.loader.backends.TorchCuda`` that checks PyTorch's CUDA stream
rules on the CPU, for the device path's own code (``CudaBackend``, ``DeviceStage``).

"Device" tensors are CPU tensors of a subclass (:class:`FakeTensor`) whose storage the
fake tracks: the device it is on, the stream that allocated it, the stream and position
of the last work that wrote it, and the streams it was recorded on. Every torch op on one
runs on the calling thread's current stream of its device (as on CUDA), and is checked:

- it must see the data: the stream wrote it, or waited on an event recorded after the write;
- the stream must be the allocating one, or recorded with ``record_stream``;
- ``numpy()`` of a device tensor is an error (CUDA's too).

Pinned host buffers (``pinned``/``pin``) are tracked too: a copy to the device from
anything else is "pageable", and writing a pinned buffer (``numpy()``, ``copy_``) while
a copy out of it has not been waited for by the host (a synchronized event) is a race.
``synchronize()`` on a non-blocking event spins. Violations are collected in
``fake.violations`` (raising in the loader's threads would only end the pass early).

Each stream counts its work; an event records (stream, count); ``wait_event`` makes the
waiting stream see that stream's work up to the count; ``synchronize`` makes the host see
it. Nothing runs late: the checks are on the order of operations, which is what a GPU
would punish.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import torch

_ACTIVE: List["FakeCuda"] = []

# Ops that read no tensor data: metadata, views' bookkeeping.
_METADATA = {
    "__get__", "size", "dim", "stride", "is_contiguous", "numel", "element_size", "untyped_storage",
    "data_ptr", "storage_offset", "__len__", "is_pinned", "record_stream", "__repr__", "__format__",
    "nelement", "ndimension", "is_floating_point", "__hash__",
}
# Ops that make a view (same storage, no data read).
_VIEWS = {"view", "reshape", "permute", "__getitem__", "as_strided", "unbind", "select", "narrow", "flatten",
          "squeeze", "unsqueeze", "expand", "transpose", "t", "split", "chunk"}
_HOST_WRITES = {"numpy", "copy_", "fill_", "zero_", "__setitem__"}


class FakeStream:
    def __init__(self, device: int, name: str) -> None:
        self.device = device
        self.name = name
        self.tick = 0
        self.seen: Dict["FakeStream", int] = {}
        self.host_done = 0
        self.lock = threading.Lock()

    def step(self) -> int:
        with self.lock:
            self.tick += 1
            return self.tick

    def wait_event(self, event: "FakeEvent") -> None:
        _active().log.append(("wait", self.name, event.stream.name if event.stream else None, event.tick))
        if event.stream is not None:
            self.seen[event.stream] = max(self.seen.get(event.stream, 0), event.tick)

    def __repr__(self) -> str:
        return f"<stream {self.name}>"


class FakeEvent:
    def __init__(self, blocking: bool) -> None:
        self.blocking = blocking
        self.stream: Optional[FakeStream] = None
        self.tick = 0

    def record(self, stream: FakeStream) -> None:
        self.stream, self.tick = stream, stream.tick
        _active().log.append(("record", stream.name, stream.tick))

    def synchronize(self) -> None:
        fake = _active()
        fake.log.append(("synchronize", self.stream.name if self.stream else None, self.tick))
        if not self.blocking:
            fake.violation("synchronize() on a non-blocking event spins the calling thread")
        if self.stream is not None:
            self.stream.host_done = max(self.stream.host_done, self.tick)

    def query(self) -> bool:
        return self.stream is None or self.stream.host_done >= self.tick


@dataclass
class State:
    kind: str  # "device" or "pinned"
    device: int = -1
    alloc: Optional[FakeStream] = None
    written: Optional[Tuple[FakeStream, int]] = None
    recorded: Set[FakeStream] = field(default_factory=set)
    reads: List[Tuple[FakeStream, int]] = field(default_factory=list)  # copies out of a pinned buffer


def _active() -> "FakeCuda":
    return _ACTIVE[-1]


def _storage(t: torch.Tensor) -> int:
    """What a tensor's state is kept under: its storage's address (views share it); an
    empty tensor, whose storage has none, under its own identity."""
    with torch._C.DisableTorchFunctionSubclass():
        ptr = t.untyped_storage().data_ptr()
    return ptr if ptr else id(t)


def _flat(value: Any) -> Iterator[Any]:
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _flat(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _flat(v)
    else:
        yield value


class FakeTensor(torch.Tensor):
    """A tensor whose storage the active fake tracks (see the module)."""

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if not _ACTIVE or name in _METADATA:
            return super().__torch_function__(func, types, args, kwargs)
        fake = _active()
        tensors = [t for t in _flat((args, kwargs)) if isinstance(t, torch.Tensor)]
        states = [(t, fake.state_of(t)) for t in tensors]
        device_states = [st for _, st in states if st is not None and st.kind == "device"]
        for _, st in states:
            if st is not None and st.kind == "pinned" and name in _HOST_WRITES:
                fake.check_host_write(st, name)
        if name == "numpy" and device_states:
            fake.violation("numpy() of a device tensor")
        stream = None
        if device_states and name not in _VIEWS:
            stream = fake.current_stream(device_states[0].device)
            for st in device_states:
                fake.check_use(st, fake.current_stream(st.device), name)
        result = super().__torch_function__(func, types, args, kwargs)
        if name in ("cpu", "tolist", "item"):
            return result.as_subclass(torch.Tensor) if isinstance(result, torch.Tensor) else result
        if device_states and stream is not None:
            fake.mark_written(result, kwargs, args, name, stream, device_states[0].device)
        return result


class FakeCuda:
    """``TorchCuda``'s methods over fake devices ``0 .. devices - 1`` (see the module)."""

    def __init__(self, devices: int = 2) -> None:
        self.devices = devices
        self.violations: List[str] = []
        self.log: List[Tuple[Any, ...]] = []
        self.states: Dict[int, State] = {}
        self.defaults = [FakeStream(d, f"default{d}") for d in range(devices)]
        self._local = threading.local()
        self._lock = threading.Lock()
        self._streams = 0

    # -- activation (a test's fixture) --------------------------------------------

    def __enter__(self) -> "FakeCuda":
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _ACTIVE.remove(self)

    def violation(self, message: str) -> None:
        with self._lock:
            self.violations.append(message)

    # -- TorchCuda's methods ------------------------------------------------------

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return self.devices

    def current_device(self) -> int:
        return getattr(self._local, "device", 0)

    def set_device(self, index: int) -> None:
        """``torch.cuda.set_device`` for the calling thread."""
        self._local.device = index

    def stream(self, index: int) -> FakeStream:
        with self._lock:
            self._streams += 1
            return FakeStream(index, f"side{self._streams}@{index}")

    def current_stream(self, index: int) -> FakeStream:
        return getattr(self._local, "streams", {}).get(index, self.defaults[index])

    @contextlib.contextmanager
    def using(self, index: int, stream: FakeStream) -> Iterator[None]:
        if stream.device != index:
            self.violation(f"stream {stream.name} made current on device {index}")
        streams = dict(getattr(self._local, "streams", {}))
        old_streams, old_device = getattr(self._local, "streams", {}), self.current_device()
        streams[index] = stream
        self._local.streams, self._local.device = streams, index
        try:
            yield
        finally:
            self._local.streams, self._local.device = old_streams, old_device

    def event(self, blocking: bool = False) -> FakeEvent:
        return FakeEvent(blocking)

    def pinned(self, nbytes: int) -> torch.Tensor:
        t = torch.empty(nbytes, dtype=torch.uint8).as_subclass(FakeTensor)
        self.states[_storage(t)] = State("pinned")
        return t

    def pin(self, tensor: torch.Tensor) -> torch.Tensor:
        st = self.state_of(tensor)
        if st is not None and st.kind == "pinned":
            return tensor
        with torch._C.DisableTorchFunctionSubclass():
            t = tensor.clone().as_subclass(FakeTensor)
        self.states[_storage(t)] = State("pinned")
        return t

    def to_device(self, host: torch.Tensor, index: int) -> torch.Tensor:
        st = self.state_of(host)
        if st is None or st.kind != "pinned":
            self.violation("a copy to the device from pageable memory (it blocks the calling thread)")
        stream = self.current_stream(index)
        tick = stream.step()
        with torch._C.DisableTorchFunctionSubclass():
            t = host.clone().as_subclass(FakeTensor)
        self.states[_storage(t)] = State("device", index, stream, (stream, tick))
        if st is not None and st.kind == "pinned":
            st.reads.append((stream, tick))
        self.log.append(("copy", stream.name, tick, _storage(host)))
        return t

    def on_device(self, tensor: torch.Tensor) -> bool:
        st = self.state_of(tensor)
        return st is not None and st.kind == "device"

    def record_stream(self, tensor: torch.Tensor, stream: FakeStream) -> None:
        st = self.state_of(tensor)
        if st is not None:
            st.recorded.add(stream)

    # -- bookkeeping --------------------------------------------------------------

    def state_of(self, tensor: torch.Tensor) -> Optional[State]:
        if not isinstance(tensor, FakeTensor):
            return None
        return self.states.get(_storage(tensor))

    def device_of(self, tensor: torch.Tensor) -> Optional[int]:
        """The fake device a tensor is on (None: the host)."""
        st = self.state_of(tensor)
        return st.device if st is not None and st.kind == "device" else None

    def check_use(self, st: State, stream: FakeStream, op: str) -> None:
        if st.written is not None:
            writer, tick = st.written
            if writer is not stream and stream.seen.get(writer, 0) < tick:
                self.violation(f"{op} on {stream.name} reads work of {writer.name} it has not waited for")
        if st.alloc is not None and st.alloc is not stream and stream not in st.recorded:
            self.violation(f"{op} on {stream.name} uses a tensor allocated on {st.alloc.name} without record_stream")

    def check_host_write(self, st: State, op: str) -> None:
        pending = [(s, t) for s, t in st.reads if s.host_done < t]
        if pending:
            self.violation(f"{op}: a pinned buffer written while a copy out of it may still run")
        st.reads = pending

    def mark_written(self, result: Any, kwargs: Dict[str, Any], args: Any, name: str, stream: FakeStream,
                     device: int) -> None:
        tick = stream.step()
        outs = [t for t in _flat(result) if isinstance(t, torch.Tensor)]
        if "out" in kwargs:
            outs += [t for t in _flat(kwargs["out"]) if isinstance(t, torch.Tensor)]
        for t in outs:
            key = _storage(t)
            st = self.states.get(key) if isinstance(t, FakeTensor) else None
            if st is not None and st.kind == "device":
                st.written = (stream, tick)  # in place, or a view of a tracked tensor
            else:
                self.states[key] = State("device", device, stream, (stream, tick))

    def release_order(self) -> List[Tuple[int, int]]:
        """(tick of each host synchronize, tick of the copy before it on that stream) for
        every synchronize: equal when each event was recorded right after its copy."""
        pairs = []
        copies: Dict[str, List[int]] = {}
        for entry in self.log:
            if entry[0] == "copy":
                copies.setdefault(entry[1], []).append(entry[2])
            elif entry[0] == "synchronize" and entry[1] is not None:
                before = [t for t in copies.get(entry[1], []) if t <= entry[2]]
                pairs.append((entry[2], max(before) if before else -1))
        return pairs
