"""Rows into batches: the decode of a take's rows through the loader's transform plan,
their other columns, their targets, what the stage hands out.

A take's rows come from the reader (:class:`lancefeed.reads.RowReader`) in storage
order with ``order`` (row ``order[i]`` is the one at ``positions[i]``); the decode
gathers them by pointer (:mod:`lancefeed.decode.core`), the stage
(:mod:`lancefeed.loader.staging`) owns the output buffers.

Example:
    >>> maker = BatchMaker(perm, reader, plan, BatchColumns("image", ["label"], {}, preloaded))  # doctest: +SKIP
    >>> images, columns = maker.build(rows, order, positions, epoch=0, stage=CpuStage())  # doctest: +SKIP
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import torch

from lancefeed import _core
from lancefeed._core import DecodeError, SizeMismatchError
from lancefeed.decode.core import BatchInfo, DecodeOptions, TargetOptions, decode_images, decode_with_targets
from lancefeed.loader.labels import ClassMap, collate_column
from lancefeed.loader.mixing import describe_position
from lancefeed.loader.options import CHANNELS
from lancefeed.loader.staging import CpuStage
from lancefeed.loader.targets import TargetConfig, assemble, select_boxes
from lancefeed.permutation import Permutation
from lancefeed.reads import RowReader
from lancefeed.reads.reader import TAKE_ROWS
from lancefeed.transforms.plan import TransformPlan
from lancefeed.transforms.torchvision import OutputStep

__all__ = ["BatchColumns", "BatchMaker", "DecodeSettings"]

_ROW_PREFIX = re.compile(r"^(row|item|index) \d+: ")
# Preloaded label dtypes gathered through numpy (see BatchMaker.columns).
_NUMPY_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool, torch.float64, torch.float32, torch.float16)
# The batches of one take are decoded by one call when their output fits this
# (BatchMaker.joins): 4 batches of 256 CIFAR-10 images are 3 MB.
JOINT_BYTES = 32 << 20


@dataclass
class BatchColumns:
    """The columns of a batch: the image column, the others in order, their class maps
    (string labels to indices), and the columns held for every position already (labels
    read at construction, by position)."""

    image: str
    others: List[str]
    class_maps: Dict[str, ClassMap] = field(default_factory=dict)
    preloaded: Dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class DecodeSettings:
    """How every batch of a loader is decoded, besides its epoch and rows."""

    mode: str = "RGB"
    num_threads: Optional[int] = None
    on_error: str = "raise"
    truncated: str = "error"
    seed: int = 0


class BatchMaker:
    """Everything the pipeline's threads need to turn a take into batches."""

    def __init__(self, perm: Permutation, reader: RowReader, plan: TransformPlan, columns: BatchColumns,
                 settings: DecodeSettings, *, targets: Optional[TargetConfig] = None) -> None:
        self.perm = perm
        self.reader = reader
        self.plan = plan
        self.columns_spec = columns
        self.settings = settings
        self.targets = targets
        # Rows that did not decode, (row id, reason), with on_error="skip".
        self.skipped: List[Tuple[int, str]] = []
        # Whole decoded images by position, used from epoch 1 (see DataLoader(pixel_cache=)).
        self.pixels: Optional[_core.PixelCache] = None
        self._preloaded_np = {k: v.numpy() for k, v in columns.preloaded.items()
                              if v.device.type == "cpu" and v.dtype in _NUMPY_DTYPES}
        size, channels = plan.output_size, CHANNELS.get(settings.mode)
        self.shape: Optional[Tuple[int, int, int]] = (
            (int(size[0]), int(size[1]), channels) if size is not None and channels is not None else None
        )

    @property
    def seed(self) -> int:
        return self.settings.seed

    def options(self, positions: np.ndarray, order: np.ndarray, epoch: int, **extra: Any) -> DecodeOptions:
        """The decode's options for one call: rows ``order`` at ``positions``, errors
        skipped (this maker raises or lists them, naming the row)."""
        s = self.settings
        return DecodeOptions(mode=s.mode, num_threads=s.num_threads, on_error="skip", seed=s.seed, epoch=epoch,
                             positions=positions, order=order, truncated=s.truncated, **extra).checked()

    # -- one batch ----------------------------------------------------------------

    def build(self, rows: pa.RecordBatch, order: np.ndarray, positions: np.ndarray, epoch: int, stage: Any) -> Any:
        """One batch: ``rows.take(order)`` holds the rows of ``positions``, in that order."""
        if self.targets is not None:
            return stage.finish(None, *self._build_targets(rows, order, positions, epoch))
        try:
            handle, images, info = self._decode(rows, order, positions, epoch, stage)
        except SizeMismatchError:
            # Rows that come out at different sizes: a list of images, one per row, where
            # the plan allows it (no per-sample Python part).
            if self.plan.rest:
                raise
            return stage.finish(None, *self._build_ragged(rows, order, positions, epoch, stage))
        if info.errors:
            self.errors(info, positions, epoch)
            kept = np.asarray(info.kept, dtype=np.int64)
            order, positions = order[kept], positions[kept]
        return stage.finish(handle, images, self.columns(rows, order, positions))

    def joins(self, parts: Sequence[np.ndarray], stage: Any) -> bool:
        """Whether the batches ``parts`` of one take are decoded by one call
        (:meth:`build_joint`): small images on the CPU stage, the plan run in the core,
        the joint output within JOINT_BYTES."""
        if len(parts) < 2 or self.targets is not None or not self.plan.runs_in_core or not isinstance(stage, CpuStage):
            return False
        rows = sum(len(p) for p in parts)
        if self.shape is None:
            return self.reader.small_rows() and rows <= TAKE_ROWS
        fused = stage.fused_normalize
        per_value = 1 if fused is None else (4 if fused.dtype == "float32" else 2)
        return rows * self.shape[0] * self.shape[1] * self.shape[2] * per_value <= JOINT_BYTES

    def build_joint(self, rows: pa.RecordBatch, order: np.ndarray, parts: Sequence[np.ndarray], epoch: int,
                    stage: Any) -> Iterator[Any]:
        """The batches ``parts`` (their rows ``rows.take(order)``, one after the other)
        decoded by one call, each handed out as a view of the joint output: what a call
        costs besides its rows (waking the decode threads, the GIL's hand-over, Arrow's
        export of the column) is paid once per take rather than once per batch. Each
        batch is what :meth:`build` makes of it alone: skipped rows leave their own batch
        shorter, a bad row with ``on_error="raise"`` raises after the batches before its
        own, and rows of different sizes are built batch by batch."""
        positions = np.concatenate(parts)
        try:
            handle, images, info = self._decode(rows, order, positions, epoch, stage)
        except SizeMismatchError:
            # A batch of one size each may still span sizes across batches.
            yield from self.build_each(rows, order, parts, epoch, stage)
            return
        ends = np.cumsum([len(p) for p in parts])
        kept = np.arange(len(positions)) if not info.errors else np.asarray(info.kept, dtype=np.int64)
        raising = bool(info.errors) and self.settings.on_error == "raise"
        if raising:
            # Only the batches before the bad row's are handed out (all their rows kept).
            ends = ends[: int(np.searchsorted(ends, info.errors[0][0], side="right"))]
            kept = kept[kept < (ends[-1] if len(ends) else 0)]
            images = images[: len(kept)]
        elif info.errors:
            self.errors(info, positions, epoch)  # lists the skipped rows
        t, columns = stage.finish(handle, images, self.columns(rows, order[kept], positions[kept]))
        start = 0
        for stop in np.searchsorted(kept, ends):
            yield t[start:stop], {k: v[start:stop] for k, v in columns.items()}
            start = stop
        if raising:
            self.errors(info, positions, epoch)  # raises, naming the row

    def build_each(self, rows: pa.RecordBatch, order: np.ndarray, parts: Sequence[np.ndarray], epoch: int,
                   stage: Any) -> Iterator[Any]:
        """The batches ``parts`` of one take, one :meth:`build` each."""
        offset = 0
        for positions in parts:
            yield self.build(rows, order[offset : offset + len(positions)], positions, epoch, stage)
            offset += len(positions)

    def _decode(self, rows: pa.RecordBatch, order: np.ndarray, positions: np.ndarray, epoch: int,
                stage: Any) -> Tuple[Optional[Any], Any, BatchInfo]:
        """The images of ``positions`` through the plan (errors skipped, listed in the
        info): the stage's buffer handle, the images and the decode's info."""
        n = len(order)
        fused = getattr(stage, "fused_normalize", None)
        core_only = self.plan.runs_in_core
        handle = stage.buffer(n, self.shape) if self.shape is not None and fused is None and core_only else None
        extra: Dict[str, Any] = {}
        if handle is not None:
            extra["out"] = handle.array
        if fused is not None:
            extra.update(normalize=(fused.mean, fused.std), normalize_dtype=fused.dtype, channels_last=fused.channels_last,
                         normalize_out=stage.normalized_buffer(n, self.shape) if self.shape is not None else None)
        # Epoch 0 decodes only each crop's part of a JPEG (the fastest first pass); the
        # epochs after it crop from whole decoded images, kept in the pixel cache. Which
        # one a batch gets depends on its epoch alone, so a resumed run sees the same pixels.
        opts = self.options(positions, order, epoch, pixel_cache=self.pixels if epoch >= 1 else None, **extra)
        images, info = decode_images(rows.column(self.columns_spec.image), self.plan, opts,
                                     rows=self.perm.row_ids[positions])
        return handle, images, info

    def errors(self, info: BatchInfo, positions: np.ndarray, epoch: int) -> None:
        """Raise the first undecodable row (``on_error="raise"``) or list them as skipped."""
        if not info.errors:
            return
        row_ids = self.perm.row_ids[positions]
        if self.settings.on_error == "raise":
            index, message = info.errors[0]
            row = describe_position(self.perm, int(positions[index]), int(row_ids[index]))
            raise DecodeError(
                f"{row}, position {int(positions[index])} of the loader's permutation (epoch {epoch}), "
                f"column {self.columns_spec.image!r}: {_ROW_PREFIX.sub('', str(message))}"
            )
        self.skipped.extend((int(row_ids[i]), str(m)) for i, m in info.errors)

    def _build_ragged(self, rows: pa.RecordBatch, order: np.ndarray, positions: np.ndarray, epoch: int,
                      stage: Any) -> Tuple[List[torch.Tensor], Dict[str, Any]]:
        """A batch whose images differ in size: a list of tensors, (H, W, C) uint8, or
        (C, H, W) after output steps or the stage's ``normalize`` (done here, per image)."""
        plan = self.plan
        norm = stage.normalize
        if norm is not None:
            plan = plan.with_output([OutputStep(dtype=norm.dtype, scale=True), OutputStep(mean=tuple(norm.mean), std=tuple(norm.std))])
        images, _, info = decode_with_targets(rows.column(self.columns_spec.image), plan,
                                              self.options(positions, order, epoch), TargetOptions(ragged=True))
        self.errors(info, positions, epoch)
        kept = np.asarray(info.kept, dtype=np.int64)
        images = [x if isinstance(x, torch.Tensor) else torch.from_numpy(x) for x in images]
        return images, self.columns(rows, order[kept], positions[kept])

    def columns(self, rows: pa.RecordBatch, order: np.ndarray, positions: np.ndarray) -> Dict[str, Any]:
        """The batch's other columns, for the rows of ``positions`` (``rows.take(order)``)."""
        spec = self.columns_spec
        row_ids = None
        gather = None
        columns: Dict[str, Any] = {}
        for name in spec.others:
            if name in self._preloaded_np:
                # numpy's gather: a torch index of a small batch costs several times more
                # in dispatch, on the thread that starts the next batch's decode.
                columns[name] = torch.from_numpy(self._preloaded_np[name][positions])
                continue
            if name in spec.preloaded:
                columns[name] = spec.preloaded[name][torch.from_numpy(positions)]
                continue
            if row_ids is None:
                row_ids = self.perm.row_ids[positions]
            if gather is None:
                gather = pa.array(order)
            columns[name] = collate_column(rows.column(name).take(gather), class_map=spec.class_maps.get(name), row_ids=row_ids)
        return columns

    def _build_targets(self, rows: pa.RecordBatch, order: np.ndarray, positions: np.ndarray,
                       epoch: int) -> Tuple[Any, Dict[str, Any]]:
        """A batch with its targets: the class selection, then the images with their boxes
        and masks through the plan, then each role's values per kept row."""
        tc = self.targets
        assert tc is not None
        spec = tc.spec
        sel = select_boxes(rows, spec, tc.selection, self.perm.row_ids[positions]) if spec.box_column else None
        targets = TargetOptions(
            boxes=None if sel is None else (sel.values, sel.offsets), box_format=spec.box_format,
            masks=None if spec.mask_column is None else rows.column(spec.mask_column), mask_fill=tc.mask_fill,
            min_area=tc.min_area, min_visibility=tc.min_visibility, ragged=self.shape is None,
        ).checked()
        images, per_row, info = decode_with_targets(rows.column(self.columns_spec.image), self.plan,
                                                    self.options(positions, order, epoch), targets)
        if self.plan.albumentations is not None and not tc.detection:
            # An albumentations pipeline's size is known once it ran: one batch where it is one.
            images = _one_size(images)
        kept = np.asarray(info.kept, dtype=np.int64)
        self.errors(info, positions, epoch)
        columns: Dict[str, Any] = assemble(rows, spec, sel, order, per_row, kept)
        if not isinstance(images, list) and spec.mask_column is not None and not tc.detection:
            shape = self.shape[:2] if self.shape is not None else (0, 0)
            columns["mask"] = torch.stack(columns["mask"]) if columns["mask"] else torch.zeros((0, *shape), dtype=torch.uint8)
        images = _detection_images(images) if tc.detection else _as_tensors(images)
        return images, columns


def _one_size(images: Any) -> Any:
    """A list of images of one shape as one batch (numpy or torch, as they came); any
    other list as it is."""
    if not isinstance(images, list) or not images or len({tuple(x.shape) for x in images}) > 1:
        return images
    return torch.stack(images) if isinstance(images[0], torch.Tensor) else np.stack(images)


def _as_tensors(images: Any) -> Any:
    """Decoded images as tensors: one batch tensor, or a list of them."""
    if isinstance(images, np.ndarray):
        return torch.from_numpy(images)
    if isinstance(images, list):
        return [x if isinstance(x, torch.Tensor) else torch.from_numpy(x) for x in images]
    return images


def _detection_images(images: Any) -> List[torch.Tensor]:
    """Decoded images as torchvision's detection models take them: a list of (C, H, W)
    tensors (numpy results are HWC; output steps already gave CHW tensors)."""
    if isinstance(images, np.ndarray):
        return list(torch.from_numpy(images).permute(0, 3, 1, 2).unbind(0))
    if isinstance(images, torch.Tensor):
        return list(images.unbind(0))
    return [x if isinstance(x, torch.Tensor) else torch.from_numpy(x).permute(2, 0, 1) for x in images]
