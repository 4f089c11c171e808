"""The slow path: the part of a transform the core has no counterpart for, run per
sample in Python (on threads), then the output steps on the whole batch.

Each sample's Python ops run on a (C, H, W) uint8 tensor; lancefeed transforms that
follow a Python op run in the core with their own draws (``_core.run_ops``, keyed by
the sample's position and their op index, as when fused). The first time an op runs
here a :class:`SlowPathWarning` names it; an exception names the op and the row
(:class:`TransformError`).

Example:
    >>> import numpy as np, torch
    >>> x = run_rest(np.zeros((2, 4, 4, 3), np.uint8), [lambda t: t + 1], np.arange(2), 0, seed=0, epoch=0)
    >>> x.shape, int(x.max())
    (torch.Size([2, 3, 4, 4]), 1)
"""

from __future__ import annotations

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, Sequence

import numpy as np

from lancefeed import _core
from lancefeed.transforms.base import Transform
from lancefeed.transforms.torchvision import OutputStep

__all__ = ["SlowPathWarning", "TransformError", "apply_output", "reset_warnings", "run_rest"]


class SlowPathWarning(UserWarning):
    """A transform runs per sample in Python, outside the fused decode.

    Announced once per op; silence it as any warning, or make it an error to be sure
    a pipeline stays fused.

    Example:
        >>> import warnings
        >>> warnings.filterwarnings("error", category=SlowPathWarning)  # doctest: +SKIP
    """


class TransformError(RuntimeError):
    """A transform of the slow path raised: the message names the op and the row.

    The transform's own exception is its ``__cause__``.

    Example:
        >>> import io, warnings, lancefeed
        >>> from PIL import Image
        >>> buf = io.BytesIO(); Image.new("RGB", (4, 4)).save(buf, "PNG")
        >>> def broken(image):
        ...     raise ValueError("no")
        >>> try:
        ...     with warnings.catch_warnings():
        ...         warnings.simplefilter("ignore", SlowPathWarning)
        ...         lancefeed.decode_batch([buf.getvalue()], transform=broken)
        ... except TransformError as e:
        ...     print(type(e.__cause__).__name__)
        ValueError
    """


_warned: set[str] = set()
_warned_lock = threading.Lock()


def reset_warnings() -> None:
    """Forget which ops were announced: the next run of each warns again.

    Example:
        >>> reset_warnings()
    """
    with _warned_lock:
        _warned.clear()


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


def run_rest(batch: np.ndarray, rest: Sequence[Any], positions: np.ndarray, first_op: int, *, seed: int, epoch: int,
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


def apply_output(x: Any, output: Sequence[OutputStep]) -> Any:
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

