"""A chain of transforms as the user writes it: a fused part, then (when the chain holds
something the core has no counterpart for) the rest run per sample, then the output
steps (dtype, scale, normalisation) applied to the whole batch. How it runs is planned
once (:class:`lancefeed.transforms.plan.TransformPlan`); the per-sample part runs in
:mod:`lancefeed.transforms.slow`."""

from __future__ import annotations

from typing import Any, Iterable, Optional

from lancefeed.transforms.base import Op, Size, Transform, pair
from lancefeed.transforms.detection import SanitizeBoundingBoxes
from lancefeed.transforms.geometric import Resize
from lancefeed.transforms.torchvision import OutputStep, from_torchvision, is_torchvision, register_container

__all__ = ["Compose", "RandomApply", "as_compose", "as_ops", "split"]


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
        ops += Resize(pair(size, "size")).ops()
    return ops


def as_compose(transform: Any) -> Optional[Transform]:
    """``transform`` as the core takes it: one of lancefeed's transforms as it is, anything
    else (torchvision's objects, callables, lists of them) as a Compose; None stays None."""
    if transform is None or isinstance(transform, Transform):
        return transform
    return Compose(transform if isinstance(transform, (list, tuple)) else [transform])
