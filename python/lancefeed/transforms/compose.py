"""A chain of transforms as the core runs it: a fused part, then (when the chain holds
something the core has no counterpart for) the rest run per sample, then the output
step (dtype, scale, normalisation) applied to the whole batch."""

from __future__ import annotations

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Optional

import numpy as np

from lancefeed import _core
from lancefeed.transforms.base import Op, Size, Transform, _pair
from lancefeed.transforms.detection import SanitizeBoundingBoxes
from lancefeed.transforms.geometric import Resize
from lancefeed.transforms.torchvision import OutputStep, from_torchvision, is_torchvision, register_container

__all__ = ["Compose", "RandomApply", "SlowPathWarning", "TransformError", "as_ops", "split"]


class SlowPathWarning(UserWarning):
    """A transform runs per sample in Python, outside the fused decode."""


class TransformError(RuntimeError):
    """A transform of the slow path raised: the message names the op and the row."""


_warned: set[str] = set()
_warned_lock = threading.Lock()


def _name(fn: Any) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _warn_once(fn: Any) -> None:
    key = f"{type(fn).__module__}.{_name(fn)}"
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(
        f"{_name(fn)} has no fused counterpart in lancefeed: it runs per sample in Python after the fused "
        "transforms (the slow path)",
        SlowPathWarning,
        stacklevel=4,
    )


def _flatten(items: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for t in items:
        if isinstance(t, Compose):
            out += _flatten(t.transforms)
        elif is_torchvision(t) and type(t).__name__ == "Compose":
            out += _flatten(t.transforms)
        else:
            out.append(t)
    return out


def _as_lancefeed(t: Any) -> Transform | OutputStep | None:
    if isinstance(t, (Transform, OutputStep)):
        return t
    converted = from_torchvision(t)
    return converted if isinstance(converted, (Transform, OutputStep)) else None


def split(items: Iterable[Any]) -> tuple[list[Transform], list[Any], list[OutputStep]]:
    """``items`` as (the fused transforms, the rest to run per sample, the output steps).

    The fused part is every lancefeed (or converted torchvision) transform up to the
    first item that has no counterpart; from there on items run per sample, in order,
    except output steps (ToTensor, ToDtype, Normalize, ...) that end the chain, which
    apply to the whole batch.

    Example:
        >>> from lancefeed.transforms import RandomResizedCrop, ColorJitter
        >>> fused, rest, out = split([RandomResizedCrop(32), ColorJitter(0.4), abs])
        >>> [type(t).__name__ for t in fused], rest, out
        (['RandomResizedCrop', 'ColorJitter'], [<built-in function abs>], [])
    """
    flat = _flatten(items)
    converted = [_as_lancefeed(t) for t in flat]
    end = len(flat)
    while end > 0 and isinstance(converted[end - 1], OutputStep):
        end -= 1
    output = [c for c in converted[end:] if isinstance(c, OutputStep)]
    fused: list[Transform] = []
    k = 0
    while k < end and isinstance(converted[k], Transform):
        fused.append(converted[k])  # type: ignore[arg-type]
        k += 1
    rest = flat[k:end]
    for t in rest:
        if not isinstance(t, Transform) and not callable(t):
            raise TypeError(f"transform item {t!r} is neither a transform nor callable")
    return fused, rest, output


class RandomApply(Transform):
    """torchvision's ``RandomApply``: the transforms run, in order, with probability
    ``p`` (one draw per sample); otherwise none of them does. Each must be one of
    lancefeed's transforms or a torchvision op with a counterpart.

    Example:
        >>> from lancefeed.transforms import RandomRotation
        >>> RandomApply([RandomRotation(20)], p=0.5).ops()[0]
        ('random_apply', (0.5, 1.0))
    """

    def __init__(self, transforms: Iterable[Any], p: float = 0.5) -> None:
        self.transforms = list(transforms)
        fused, rest, output = split(self.transforms)
        if rest or output:
            bad = (rest or output)[0]
            raise TypeError(f"RandomApply holds {bad!r}, which lancefeed cannot run in the core; RandomApply needs ops it can")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomApply p must be in [0, 1], got {p}")
        self.fused = fused
        self.p = float(p)

    def ops(self) -> list[Op]:
        inner = [op for t in self.fused for op in t.ops()]
        return [("random_apply", (self.p, float(len(inner))))] + inner

    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        after = size
        for t in self.fused:
            after = t.output_size_for(after)
        return size if after == size else None


# torchvision's RandomApply converts to this one (torchvision.py cannot import it: it
# sits below this module).
register_container("RandomApply", lambda t: RandomApply(list(t.transforms), p=t.p))


class Compose(Transform):
    """A chain of transforms: lancefeed's, torchvision's (``transforms`` or ``v2``, a
    torchvision ``Compose`` included), or any callable, in order.

    The leading run of ops with a counterpart in the core is fused into the decode;
    whatever follows the first op without one runs per sample in Python on a
    (C, H, W) uint8 tensor, on the loader's threads, after a one-time
    :class:`SlowPathWarning` naming it. Output steps at the end (``ToTensor``,
    ``ToDtype``, ``ConvertImageDtype``, ``Normalize``, ``ToImage``) apply to the batch.

    Example:
        >>> from lancefeed.transforms import CenterCrop, ColorJitter
        >>> t = Compose([Resize(256), CenterCrop(224), ColorJitter(0.4, 0.4, 0.4)])
        >>> t.output_size, t.fused_only
        ((224, 224), True)
    """

    def __init__(self, transforms: Iterable[Any]) -> None:
        self.transforms = list(transforms)
        self.fused, self.rest, self.output = split(self.transforms)

    def ops(self) -> list[Op]:
        return [op for t in self.fused for op in t.ops()]

    def output_size_for(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        for t in self.fused:
            size = t.output_size_for(size)
        return None if self.rest else size

    @property
    def box_filter(self) -> tuple[float, float]:
        """(min_size, min_area) of the chain's last ``SanitizeBoundingBoxes``, else (1, 1)."""
        found = [t for t in self.fused if isinstance(t, SanitizeBoundingBoxes)]
        return (found[-1].min_size, found[-1].min_area) if found else (1.0, 1.0)

    @property
    def fused_only(self) -> bool:
        """True when the core runs the whole chain (no per-sample Python)."""
        return not self.rest and not self.output

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def as_ops(transform: Any, size: Size | None = None) -> list[Op]:
    """The op list the core runs: the fused part of ``transform``, then a stretch to
    ``size`` if given.

    Example:
        >>> as_ops(Resize((32, 32)))
        [('resize', (32.0, 32.0))]
    """
    if transform is None:
        ops: list[Op] = []
    elif isinstance(transform, Transform):
        ops = transform.ops()
    else:
        ops = Compose([transform]).ops()
    if size is not None:
        ops += Resize(_pair(size, "size")).ops()
    return ops


def as_compose(transform: Any) -> Optional[Transform]:
    """``transform`` as the core takes it: one of lancefeed's transforms as it is, anything
    else (torchvision's objects, callables, lists of them) as a Compose; None stays None."""
    if transform is None or isinstance(transform, Transform):
        return transform
    return Compose(transform if isinstance(transform, (list, tuple)) else [transform])


def _to_tensor(x: Any) -> Any:
    import torch

    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1) if x.ndim == 3 else x[None]))
    try:  # a PIL image
        from PIL import Image

        if isinstance(x, Image.Image):
            a = np.asarray(x)
            return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1) if a.ndim == 3 else a[None]))
    except ImportError:
        pass
    raise TypeError(f"a transform returned {type(x).__name__}; expected a tensor, an array or a PIL image")


def _to_pil(x: Any) -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise TypeError("this transform needs a PIL image, and Pillow is not installed") from None
    a = x.permute(1, 2, 0).numpy()
    return Image.fromarray(a[..., 0] if a.shape[2] == 1 else a)


class _Call:
    """One slow-path op: called on a tensor, or on a PIL image when it refuses tensors
    (torchvision's v1 ops that need PIL say so with a TypeError)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.pil = False

    def __call__(self, x: Any) -> Any:
        if not self.pil:
            try:
                return self.fn(x)
            except TypeError as e:
                if "PIL" not in str(e):
                    raise
                self.pil = True
        return self.fn(_to_pil(x))


def run_rest(batch: np.ndarray, rest: list[Any], positions: np.ndarray, first_op: int, *, seed: int, epoch: int,
             threads: Optional[int] = None, rows: Optional[np.ndarray] = None) -> Any:
    """The slow path: each (H, W, C) uint8 image of ``batch`` through ``rest`` in order,
    as a (C, H, W) tensor, on ``threads`` threads; the results stacked into one tensor.
    lancefeed transforms in ``rest`` run in the core with their own draws (op indices
    from ``first_op``). An exception names the op and the row (``rows[i]``, default i).
    """
    import torch

    steps: list[Any] = []
    index = first_op
    for t in rest:
        if isinstance(t, Transform):
            ops = t.ops()
            steps.append(("core", ops, index))
            index += len(ops)
        else:
            _warn_once(t)
            steps.append(("python", _Call(t), index))
            index += 1

    def one(i: int) -> Any:
        x: Any = torch.from_numpy(batch[i]).permute(2, 0, 1)
        for kind, what, first in steps:
            try:
                if kind == "core":
                    hwc = np.ascontiguousarray(_to_tensor(x).permute(1, 2, 0).numpy())
                    x = torch.from_numpy(_core.run_ops(hwc, what, seed=seed, epoch=epoch, position=int(positions[i]), first_op=first)).permute(2, 0, 1)
                else:
                    x = _to_tensor(what(x))
            except Exception as e:
                row = int(rows[i]) if rows is not None else i
                op = _name(what.fn) if kind == "python" else type(what).__name__
                raise TransformError(f"row {row}: transform {op} raised {type(e).__name__}: {e}") from e
        return _to_tensor(x)

    n = len(batch)
    if threads is None or threads > 1:
        with ThreadPoolExecutor(max_workers=threads or _core.default_num_threads()) as pool:
            out = list(pool.map(one, range(n)))
    else:
        out = [one(i) for i in range(n)]
    if not out:
        return torch.zeros((0, batch.shape[3], batch.shape[1], batch.shape[2]), dtype=torch.uint8)
    shapes = {tuple(t.shape) for t in out}
    if len(shapes) > 1:
        raise ValueError(f"the transforms give images of different shapes {sorted(shapes)}; a batch needs one shape")
    return torch.stack(out)


def apply_output(x: Any, output: list[OutputStep]) -> Any:
    """The output steps on a (N, C, H, W) tensor, in order (dtype, scale, normalise)."""
    import torch

    for step in output:
        if step.dtype is not None:
            dtype = getattr(torch, step.dtype)
            if step.scale and not x.is_floating_point() and dtype.is_floating_point:
                x = x.to(dtype) / 255.0
            else:
                x = x.to(dtype)
        if step.mean is not None:
            if not x.is_floating_point():
                raise TypeError("Normalize needs a float tensor: put ToTensor() or ToDtype(torch.float32, scale=True) before it")
            c = x.shape[1]
            mean = torch.tensor(step.mean if len(step.mean) == c else step.mean * c, dtype=x.dtype).reshape(1, c, 1, 1)
            std = torch.tensor(step.std if len(step.std) == c else step.std * c, dtype=x.dtype).reshape(1, c, 1, 1)  # type: ignore[operator]
            x = (x - mean) / std
    return x

