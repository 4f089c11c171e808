"""Where decoded images go: the buffer the core decodes into, and what the loop receives.

A *stage* sits at the end of the loader's pipeline. In the background thread it may
lend a buffer to decode into (``buffer``) and turns a decoded uint8 NHWC batch into a
*ready* item (``finish``); in the training loop's thread it hands the ready item over
(``deliver``). :class:`CpuStage` keeps batches on the CPU; the CUDA prefetcher
(``lancefeed.loader.cuda``) is the other stage.

Normalizing is one vectorized pass over the whole batch (not per image), the same
math on the CPU and the GPU: ``(x / 255 - mean) / std`` with ``mean``/``std`` on the
0..1 scale as in torchvision, giving float32 NCHW (or NCHW with channels_last memory).

Example:
    >>> import torch
    >>> x = torch.full((1, 2, 2, 3), 255, dtype=torch.uint8)
    >>> normalize_batch(x, Normalize.of(((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), 3)).shape
    torch.Size([1, 3, 2, 2])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from lancefeed.memory import reuse_buffer

Number = Union[int, float]
# Float buffers kept for reuse: the batches in the loader's queue and a few the loop holds.
_MAX_POOLED = 8
NormalizeArg = Tuple[Union[Number, Sequence[Number]], Union[Number, Sequence[Number]]]


@dataclass(frozen=True)
class Normalize:
    """Per-channel ``mean`` and ``std`` on the 0..1 scale, checked against the channel count."""

    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    channels_last: bool = False
    #: float32, float16 or bfloat16: computed in float32, then rounded once to it.
    dtype: str = "float32"

    @classmethod
    def of(cls, value: Optional[NormalizeArg], channels: Optional[int], channels_last: bool = False,
           dtype: str = "float32") -> Optional["Normalize"]:
        """Validate a user's ``normalize=(mean, std)``; ``None`` stays ``None``.

        Example:
            >>> Normalize.of((0.5, 0.25), 3).std
            (0.25, 0.25, 0.25)
        """
        if value is None:
            return None
        try:
            mean, std = value
        except (TypeError, ValueError):
            raise ValueError(f"normalize must be a pair (mean, std), got {value!r}") from None
        m, s = _per_channel("mean", mean, channels), _per_channel("std", std, channels)
        if len(m) != len(s):
            raise ValueError(f"normalize: mean has {len(m)} values and std {len(s)}; expected one per channel")
        if any(v == 0 for v in s):
            raise ValueError(f"normalize: std must not be 0, got {s}")
        if dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"normalize_dtype must be 'float32', 'float16' or 'bfloat16', got {dtype!r}")
        return cls(m, s, channels_last, dtype)

    def coefficients(self, channels: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """``scale`` and ``shift`` of shape (1, C, 1, 1) with ``x * scale - shift`` the result."""
        mean = self.mean * channels if len(self.mean) == 1 else self.mean
        std = self.std * channels if len(self.std) == 1 else self.std
        if len(mean) != channels:
            raise ValueError(f"normalize has {len(mean)} values per statistic but the images have {channels} channels")
        m = torch.tensor(mean, dtype=torch.float64)
        s = torch.tensor(std, dtype=torch.float64)
        scale = (1.0 / (255.0 * s)).to(torch.float32).reshape(1, channels, 1, 1)
        shift = (m / s).to(torch.float32).reshape(1, channels, 1, 1)
        return scale.to(device), shift.to(device)


def _per_channel(name: str, value: Any, channels: Optional[int]) -> Tuple[float, ...]:
    vals = (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
    if channels is not None and len(vals) not in (1, channels):
        raise ValueError(f"normalize: {name} has {len(vals)} values, expected 1 or {channels} (one per channel)")
    if channels is not None and len(vals) == 1:
        vals = vals * channels
    return vals


def normalize_batch(
    images: torch.Tensor, norm: Normalize, coefficients: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW ``(x/255 - mean)/std``, in one pass plus one in place.

    The layout change is free in the first pass: the NCHW view of NHWC memory is
    already channels_last; ``channels_last=False`` writes contiguous NCHW instead.

    Example:
        >>> x = torch.zeros((2, 4, 4, 1), dtype=torch.uint8)
        >>> normalize_batch(x, Normalize.of((0.5, 0.5), 1)).unique().tolist()
        [-1.0]
    """
    n, h, w, c = images.shape
    scale, shift = coefficients if coefficients is not None else norm.coefficients(c, images.device)
    # Made from `images` (its device, and on a device the current stream's allocator): an
    # NHWC buffer seen as NCHW is channels_last memory.
    if norm.channels_last:
        out = images.new_empty((n, h, w, c), dtype=torch.float32).permute(0, 3, 1, 2)
    else:
        out = images.new_empty((n, c, h, w), dtype=torch.float32)
    torch.mul(images.permute(0, 3, 1, 2), scale, out=out)
    out.sub_(shift)
    return out if norm.dtype == "float32" else out.to(getattr(torch, norm.dtype))


def to_tensor(array: Any) -> torch.Tensor:
    """A numpy batch as a tensor over the same memory (no copy); a tensor as it is."""
    return array if isinstance(array, torch.Tensor) else torch.from_numpy(array)


class _Lent:
    """A batch buffer lent by :meth:`CpuStage.buffer`: ``array`` is the view to decode into."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


class CpuStage:
    """Batches stay on the CPU: the core decodes into a buffer, the tensor shares it.

    Buffers are reused, but only once no batch, view or tensor over them is alive
    (reference counts, see ``lancefeed.memory.reuse_buffer``), because a training loop may keep a batch
    past the next ``next()``.
    """

    def __init__(self, normalize: Optional[Normalize] = None) -> None:
        self.normalize = normalize
        # The decode threads normalise into float32 themselves: no torch pass here.
        self.fused_normalize = normalize
        self._floats: list[np.ndarray] = []
        self._bytes: list[np.ndarray] = []

    def buffer(self, n: int, shape: Tuple[int, int, int]) -> _Lent:
        """A uint8 buffer for ``n`` images of ``shape`` (H, W, C), reused once free.

        A batch of 256 ImageNet crops is 38.5 MB, over glibc's largest mmap threshold
        (see ``lancefeed.memory``): allocated fresh, each batch was mapped anew and
        its pages faulted in and zeroed by the kernel, ~10% of the decode threads'
        time on a 2-core machine.

        Example:
            >>> stage = CpuStage()
            >>> a = stage.buffer(2, (4, 4, 3)).array
            >>> a.shape
            (2, 4, 4, 3)
            >>> b = stage.buffer(2, (4, 4, 3)).array  # `a` is still alive: another buffer
            >>> a.base is b.base
            False
            >>> del a, b
            >>> stage.buffer(1, (4, 4, 3)).array.base is stage._bytes[0]  # free again: reused
            True
        """
        size = n * shape[0] * shape[1] * shape[2]
        return _Lent(reuse_buffer(self._bytes, size, np.dtype(np.uint8), _MAX_POOLED)[:size].reshape(n, *shape))

    def normalized_buffer(self, n: int, shape: Tuple[int, int, int]) -> Optional[np.ndarray]:
        """A buffer for a normalised batch of ``n`` images of ``shape``, reused once no
        batch handed out refers to it any more.

        A float batch of 64 ImageNet crops is 38 MB, over glibc's largest mmap
        threshold: allocated fresh, every batch was mapped anew and faulted in page by
        page (~9,000 faults), which cost more than the normalising. A buffer comes back
        here when the training loop has dropped every tensor over it, which CPython's
        reference count says exactly: so nothing a loop still holds is ever
        overwritten.
        """
        norm = self.fused_normalize
        if norm is None:
            return None
        size = n * shape[0] * shape[1] * shape[2]
        return reuse_buffer(self._floats, size, np.dtype(np.float32 if norm.dtype == "float32" else np.uint16), _MAX_POOLED)

    def finish(self, handle: Optional[_Lent], images: Any, columns: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
        """The batch as the training loop gets it: a tensor over the decoded buffer
        (normalised here unless the decode threads did), or the list of images as it is."""
        if isinstance(images, list):
            return images, columns
        t = to_tensor(images)
        if t.is_floating_point() and self.normalize is not None and self.normalize.channels_last:
            t = t.permute(0, 3, 1, 2)  # NHWC memory: NCHW in channels_last
        elif self.normalize is not None and t.dtype == torch.uint8:
            t = normalize_batch(t, self.normalize)
        return t, columns

    def deliver(self, ready: Tuple[Any, Dict[str, Any]]) -> Tuple[Any, Dict[str, Any]]:
        """The batch, on the training loop's thread (nothing to do on the CPU)."""
        return ready
