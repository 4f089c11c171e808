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

import contextlib
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from lancefeed import _core
from lancefeed.transforms.base import Transform
from lancefeed.transforms.seeding import global_generators
from lancefeed.transforms.torchvision import OutputStep

__all__ = ["SlowPathWarning", "TransformError", "apply_output", "reset_warnings", "run_rest", "run_rest_with_targets",
           "warn_slow"]


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
    warn_slow(_name(fn), f"{type(fn).__module__}.{_name(fn)}", stacklevel=6)


def warn_slow(name: str, key: Optional[str] = None, stacklevel: int = 4) -> None:
    """A :class:`SlowPathWarning` naming the op ``name``, the first time it runs.

    Example:
        >>> import warnings
        >>> reset_warnings()
        >>> with warnings.catch_warnings(record=True) as w:
        ...     warnings.simplefilter("always")
        ...     warn_slow("CLAHE"); warn_slow("CLAHE")
        >>> len(w)
        1
    """
    key = key or name
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(
        f"{name} has no fused counterpart in lancefeed: it runs per sample in Python after the fused "
        "transforms (the slow path), drawing from generators seeded from the sample's (seed, epoch, position): "
        "albumentations' own, or Python's random, numpy's global and torch's CPU generator (held under a lock); "
        "a generator of another library (CuPy's, a Generator made once) is not seeded per sample",
        SlowPathWarning,
        stacklevel=stacklevel,
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


def _steps(rest: Sequence[Any], first_op: int) -> List[Tuple[str, Any, int]]:
    """``rest`` as steps: ("core", ops, first op index) for lancefeed's transforms (run in
    the core with their own draws), ("python", call, index) for everything else."""
    steps: List[Tuple[str, Any, int]] = []
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
    return steps


def _map(fn: Any, n: int, threads: Optional[int]) -> List[Any]:
    if threads is None or threads > 1:
        with ThreadPoolExecutor(max_workers=threads or _core.default_num_threads()) as pool:
            return list(pool.map(fn, range(n)))
    return [fn(i) for i in range(n)]


def _scope(steps: Sequence[Tuple[str, Any, int]], seed: int, epoch: int, position: int) -> Any:
    """A sample's Python ops draw from the global generators seeded for it (see
    :mod:`lancefeed.transforms.seeding`); lancefeed's own need no lock."""
    if any(kind == "python" for kind, _, _ in steps):
        return global_generators(seed, epoch, position)
    return contextlib.nullcontext()


def _failed(e: Exception, kind: str, what: Any, row: int) -> TransformError:
    op = _name(what.fn) if kind == "python" else type(what).__name__
    return TransformError(f"row {row}: transform {op} raised {type(e).__name__}: {e}")


def run_rest(batch: np.ndarray, rest: Sequence[Any], positions: np.ndarray, first_op: int, *, seed: int, epoch: int,
             threads: Optional[int] = None, rows: Optional[np.ndarray] = None) -> Any:
    """The slow path: each (H, W, C) uint8 image of ``batch`` through ``rest`` in order,
    as a (C, H, W) tensor, on ``threads`` threads; the results stacked into one tensor.
    lancefeed transforms in ``rest`` run in the core with their own draws (op indices
    from ``first_op``); Python ops draw from the global generators seeded from the
    sample's (seed, epoch, position). An exception names the op and the row (``rows[i]``,
    default i).
    """
    import torch

    steps = _steps(rest, first_op)

    def one(i: int) -> Any:
        x: Any = torch.from_numpy(batch[i]).permute(2, 0, 1)
        position = int(positions[i])
        with _scope(steps, seed, epoch, position):
            for kind, what, first in steps:
                try:
                    if kind == "core":
                        hwc = np.ascontiguousarray(_to_tensor(x).permute(1, 2, 0).numpy())
                        x = torch.from_numpy(_core.run_ops(hwc, what, seed=seed, epoch=epoch, position=position, first_op=first)).permute(2, 0, 1)
                    else:
                        x = _to_tensor(what(x))
                except Exception as e:
                    raise _failed(e, kind, what, int(rows[i]) if rows is not None else i) from e
        return _to_tensor(x)

    out = _map(one, len(batch), threads)
    if not out:
        return torch.zeros((0, batch.shape[3], batch.shape[1], batch.shape[2]), dtype=torch.uint8)
    shapes = {tuple(t.shape) for t in out}
    if len(shapes) > 1:
        raise ValueError(f"the transforms give images of different shapes {sorted(shapes)}; a batch needs one shape")
    return torch.stack(out)


def run_rest_with_targets(images: Sequence[np.ndarray], targets: Sequence[Dict[str, np.ndarray]], rest: Sequence[Any],
                          positions: np.ndarray, first_op: int, *, seed: int, epoch: int, threads: Optional[int] = None,
                          rows: Optional[np.ndarray] = None) -> Tuple[List[Any], List[Dict[str, np.ndarray]]]:
    """The slow path with targets: each (H, W, C) image and its targets (``boxes`` xyxy,
    ``box_index``, ``mask``) through ``rest``. torchvision v2 ops take them as
    ``tv_tensors`` (``BoundingBoxes``, ``Mask``, the box index as ``labels``) and move
    them; any other op gets the image alone and must keep its size where there are
    targets. (C, H, W) tensors and the moved targets.

    Example:
        >>> import numpy as np, torch
        >>> from torchvision.transforms import v2
        >>> imgs, t = run_rest_with_targets([np.zeros((4, 6, 3), np.uint8)],
        ...     [{"boxes": np.array([[0, 0, 2, 2]], np.float32), "box_index": np.array([0])}],
        ...     [v2.RandomHorizontalFlip(1.0)], np.arange(1), 0, seed=0, epoch=0)
        >>> t[0]["boxes"].tolist()
        [[4.0, 0.0, 6.0, 2.0]]
    """
    import torch

    steps = _steps(rest, first_op)

    def one(i: int) -> Tuple[Any, Dict[str, np.ndarray]]:
        x: Any = torch.from_numpy(np.ascontiguousarray(images[i])).permute(2, 0, 1)
        t = _tv_targets(targets[i], x.shape[-2:])
        position = int(positions[i])
        with _scope(steps, seed, epoch, position):
            for kind, what, first in steps:
                try:
                    x, t = _target_step(kind, what, first, x, t, seed, epoch, position)
                except Exception as e:
                    raise _failed(e, kind, what, int(rows[i]) if rows is not None else i) from e
        return _to_tensor(x), _plain_targets(t)

    done = _map(one, len(images), threads)
    return [x for x, _ in done], [t for _, t in done]


def _tv_targets(t: Dict[str, np.ndarray], size: Any) -> Dict[str, Any]:
    import torch
    from torchvision import tv_tensors

    out: Dict[str, Any] = {}
    if "boxes" in t:
        out["boxes"] = tv_tensors.BoundingBoxes(torch.from_numpy(np.ascontiguousarray(t["boxes"])), format="XYXY",
                                                canvas_size=tuple(int(v) for v in size))
        out["labels"] = torch.from_numpy(np.asarray(t["box_index"], dtype=np.int64))
    if "mask" in t:
        out["mask"] = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(t["mask"])))
    return out


def _plain_targets(t: Dict[str, Any]) -> Dict[str, np.ndarray]:
    import torch

    out: Dict[str, np.ndarray] = {}
    if "boxes" in t:
        out["boxes"] = t["boxes"].as_subclass(torch.Tensor).numpy().astype(np.float32, copy=False).reshape(-1, 4)
        out["box_index"] = t["labels"].numpy().astype(np.int64, copy=False)
    if "mask" in t:
        out["mask"] = np.ascontiguousarray(t["mask"].numpy().astype(np.uint8, copy=False).reshape(t["mask"].shape[-2:]))
    return out


def _target_step(kind: str, what: Any, first: int, x: Any, t: Dict[str, Any], seed: int, epoch: int,
                 position: int) -> Tuple[Any, Dict[str, Any]]:
    """One op on an image and its tv_tensors targets."""
    import torch

    if kind == "python" and _is_v2(what.fn):
        return what.fn(x, t)
    size = tuple(x.shape[-2:])
    if kind == "core":
        hwc = np.ascontiguousarray(_to_tensor(x).permute(1, 2, 0).numpy())
        x = torch.from_numpy(_core.run_ops(hwc, what, seed=seed, epoch=epoch, position=position, first_op=first)).permute(2, 0, 1)
    else:
        x = _to_tensor(what(x))
    if t and tuple(x.shape[-2:]) != size:
        raise ValueError(
            f"it changed the image from {size} to {tuple(x.shape[-2:])} and cannot move boxes or masks; use a "
            "torchvision v2 op (it moves tv_tensors), an albumentations pipeline, or lancefeed's op"
        )
    return x, t


def _is_v2(fn: Any) -> bool:
    """Whether ``fn`` is a torchvision v2 transform (it moves ``tv_tensors`` with the image)."""
    try:
        from torchvision.transforms import v2
    except ImportError:
        return False
    return isinstance(fn, v2.Transform)


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

