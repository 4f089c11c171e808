"""A transform as lancefeed runs it, planned once from whatever the user passed.

:class:`TransformPlan` is made once per transform (``decode_batch`` per call, the
``DataLoader`` once for its life) from lancefeed's transforms, torchvision's
(``transforms`` or ``v2``), albumentations' or any callable, and is what the decode
core and the slow path take:

- ``ops``: the op list the core runs; its first ``fused`` ops are fused into the decode
  (the geometric map: crops, resizes, flips), the rest run on each decoded image in the
  core (rotation, colour, the policies). Which ops fuse is the core's decision, asked
  once here (``_core.fused_prefix``);
- ``rest``: what the core has no counterpart for, run per sample in Python after the
  core's part (:mod:`lancefeed.transforms.slow`);
- ``output``: the output steps (``ToTensor``, ``ToDtype``, ``Normalize``) on the batch;
- ``output_size``: every output's (height, width) when the plan fixes it;
- ``box_filter``: how boxes are filtered (the chain's ``SanitizeBoundingBoxes``);
- ``albumentations``: an albumentations pipeline's own plan
  (:class:`~lancefeed.transforms.albumentations.AlbumentationsPlan`), run per sample
  with its targets instead of all the above.

Example:
    >>> from lancefeed.transforms import RandomResizedCrop, RandomHorizontalFlip, ColorJitter
    >>> plan = TransformPlan.of([RandomResizedCrop(32), RandomHorizontalFlip(), ColorJitter(0.4)])
    >>> [name for name, _ in plan.ops], plan.fused, plan.output_size, plan.runs_in_core
    (['random_resized_crop', 'hflip', 'color_jitter'], 2, (32, 32), True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from lancefeed import _core
from lancefeed.transforms.albumentations import AlbumentationsPlan, is_albumentations
from lancefeed.transforms.base import Op, Size, pair
from lancefeed.transforms.compose import Compose, as_compose
from lancefeed.transforms.geometric import Resize
from lancefeed.transforms.slow import apply_output, run_rest
from lancefeed.transforms.torchvision import OutputStep

__all__ = ["TransformPlan"]

_FLOATS = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class TransformPlan:
    """A transform planned for the core and the slow path (see the module).

    Example:
        >>> TransformPlan.of(None, size=(24, 24)).ops
        (('resize', (24.0, 24.0)),)
    """

    ops: Tuple[Op, ...] = ()
    fused: int = 0
    rest: Tuple[Any, ...] = ()
    output: Tuple[OutputStep, ...] = ()
    output_size: Optional[Tuple[int, int]] = None
    box_filter: Tuple[float, float] = (1.0, 1.0)
    albumentations: Optional[AlbumentationsPlan] = None

    @classmethod
    def of(cls, transform: Any, size: Optional[Size] = None) -> "TransformPlan":
        """The plan of ``transform`` (None, one of lancefeed's transforms, torchvision's,
        a callable or a list of them; a plan is returned as it is), then a stretch to
        ``size`` (height, width) if given, which needs a transform the core runs whole.

        Example:
            >>> TransformPlan.of([abs]).rest
            (<built-in function abs>,)
        """
        if isinstance(transform, TransformPlan):
            return transform if size is None else transform._stretched(size)
        albumentations = _albumentations(transform)
        if albumentations is not None:
            plan = cls(albumentations=AlbumentationsPlan.of(albumentations))
            return plan if size is None else plan._stretched(size)
        chain = as_compose(transform)
        if isinstance(chain, Compose):
            fused, rest, output = list(chain.fused), tuple(chain.rest), tuple(chain.output)
            box_filter = chain.box_filter
        else:
            fused, rest, output, box_filter = ([] if chain is None else [chain]), (), (), (1.0, 1.0)
        ops = tuple(op for t in fused for op in t.ops())
        out_size: Optional[Tuple[int, int]] = None
        if not rest:
            out_size = chain.output_size if chain is not None else None
        plan = cls(ops, _core.fused_prefix(list(ops)), rest, output, out_size, box_filter)
        return plan if size is None else plan._stretched(size)

    def _stretched(self, size: Size) -> "TransformPlan":
        if not self.runs_in_core:
            what = self.albumentations.compose if self.albumentations is not None else list(self.rest or self.output)
            raise ValueError(
                "out= and size= need a transform the core runs whole; this one runs per sample in Python "
                f"({what}): put a Resize in the transform instead of size="
            )
        h, w = pair(size, "size")
        ops = self.ops + tuple(Resize((h, w)).ops())
        return dataclasses.replace(self, ops=ops, fused=_core.fused_prefix(list(ops)), output_size=(h, w))

    @property
    def runs_in_core(self) -> bool:
        """Whether the core runs the whole plan (no per-sample Python, no output step)."""
        return not self.rest and not self.output and self.albumentations is None

    @property
    def first_rest_op(self) -> int:
        """The op index of the first step of ``rest`` (its draws are keyed from it)."""
        return len(self.ops)

    def without_output(self) -> "TransformPlan":
        """The plan without its output steps (a stage does them instead)."""
        return dataclasses.replace(self, output=())

    def with_output(self, steps: Sequence[OutputStep]) -> "TransformPlan":
        """The plan with ``steps`` added after its output steps."""
        return dataclasses.replace(self, output=self.output + tuple(steps))

    def as_normalize(self) -> Optional[Tuple[Tuple[float, ...], Tuple[float, ...], str]]:
        """The output steps as ``(mean, std, dtype)`` where they amount to a float
        (float32, float16 or bfloat16) on the 0..1 scale then an optional Normalize,
        with no per-sample Python before them: a stage can then do them in one pass (on
        the GPU with ``device="cuda"``). None otherwise.

        Example:
            >>> from lancefeed.transforms import OutputStep
            >>> TransformPlan(output=(OutputStep(dtype="float32", scale=True), OutputStep(mean=(0.5,), std=(0.2,)))).as_normalize()
            ((0.5,), (0.2,), 'float32')
        """
        steps = [o for o in self.output if o != OutputStep()]
        if self.rest or self.albumentations is not None or not steps or steps[0].mean is not None or not steps[0].scale or steps[0].dtype not in _FLOATS:
            return None
        dtype = str(steps[0].dtype)
        if len(steps) == 1:
            return ((0.0,), (1.0,), dtype)
        if len(steps) == 2 and steps[1].dtype is None and steps[1].mean is not None and steps[1].std is not None:
            return (tuple(steps[1].mean), tuple(steps[1].std), dtype)
        return None

    def finish(self, images: np.ndarray, positions: np.ndarray, *, seed: int, epoch: int,
               num_threads: Optional[int] = None, rows: Optional[np.ndarray] = None) -> Any:
        """The slow path on the core's (N, H, W, C) uint8 batch: ``rest`` per sample
        (row i drawing as position ``positions[i]``; an error names ``rows[i]``), then the
        output steps. A (N, C, H, W) torch tensor.

        Example:
            >>> plan = TransformPlan.of([abs])
            >>> plan.finish(np.zeros((1, 2, 2, 3), np.uint8), np.arange(1), seed=0, epoch=0).shape
            torch.Size([1, 3, 2, 2])
        """
        import torch

        if self.rest:
            x = run_rest(images, self.rest, positions, self.first_rest_op, seed=seed, epoch=epoch,
                         threads=num_threads, rows=rows)
        else:
            x = torch.from_numpy(images).permute(0, 3, 1, 2)
        return apply_output(x, self.output)

    def __repr__(self) -> str:
        if self.albumentations is not None:
            a = self.albumentations
            return f"TransformPlan(albumentations: {a.fused} fused, rest={a.rest_names})"
        parts = [f"ops={[n for n, _ in self.ops]}", f"fused={self.fused}"]
        if self.rest:
            parts.append(f"rest={list(self.rest)}")
        if self.output:
            parts.append(f"output={list(self.output)}")
        return f"TransformPlan({', '.join(parts)})"



def _albumentations(transform: Any) -> Any:
    """``transform`` as an albumentations pipeline (a list of albumentations ops becomes
    an ``A.Compose``), or None when it is not one."""
    if is_albumentations(transform):
        return transform
    if isinstance(transform, (list, tuple)) and transform and any(is_albumentations(t) for t in transform):
        if not all(is_albumentations(t) for t in transform):
            others = [t for t in transform if not is_albumentations(t)]
            raise TypeError(
                f"a list of transforms mixes albumentations' ops with others ({others}): put albumentations' in one "
                "A.Compose, or wrap a function as A.Lambda(image=...)"
            )
        import albumentations as A

        return A.Compose(list(transform))
    return None
