"""``lancefeed.DataLoader``: a drop-in for torch's ``DataLoader`` over a Lance dataset.

One batch: the positions of this epoch, this rank (``lancefeed.sampler``) -> one
sorted take of the needed columns (``Permutation.take_positions``) -> the decode core
fills one uint8 NHWC buffer (``decode_batch``) -> labels to class indices, other
columns to tensors or lists (``lancefeed.labels``) -> the stage (CPU tensors, or the
CUDA prefetcher). The takes run ahead of the decode on background threads of this
process (``lancefeed.pipeline``); no worker processes.

Semantics a user can rely on:

- Randomness: the epoch order depends only on ``(seed, epoch)`` (and
  ``shuffle_clump_size``: runs of that many neighbouring positions shuffled as one,
  see ``lancefeed.sampler.epoch_order``); each sample's
  augmentation (crop box, flip) only on ``(seed, epoch, position)``, where the
  position is the sample's index in the loader's ``Permutation``. So a sample gets the
  same augmentation in an epoch whatever the batch size, rank count or resume point.
- Epochs: ``set_epoch(e)`` sets the epoch of the next iteration; without it, each new
  iteration takes the next epoch (a new order when shuffling, new augmentations).
- Distributed: ``rank``/``world_size`` default from ``torch.distributed`` when it is
  initialized. Ranks read disjoint contiguous shards of ``len(source) // world_size``
  samples of each epoch's order; the last ``len(source) % world_size`` samples of that
  order are not read that epoch (no padding with duplicates).
- ``len(loader)``: batches per epoch on this rank: ``ceil(shard / batch_size)``, or
  ``floor`` with ``drop_last``. Rows skipped by ``on_error="skip"`` shorten their batch;
  they never change the number of batches.
- Resume: ``state_dict()`` holds the epoch, the seed and the batches handed out in that
  epoch; a loader given it with ``load_state_dict()`` continues with exactly the
  batches an uninterrupted run would have produced.
- Memory: at most ``prefetch`` finished batches wait, one is being decoded, and
  ``prefetch + io_threads`` takes are read ahead; by default (``io_threads=None``)
  that number sizes itself: it starts at ``prefetch + 1`` and grows while the decode
  waits on reads (an object store's latency), to at most 16 takes and 256 MiB of
  taken columns (``lancefeed.pipeline``). A take covers several batches when
  the images are small (about 1,024 rows, at most 8 MiB of encoded images), one
  batch otherwise; this changes only how rows are read, never which or in what order.
- Reads: a take of the batch's rows, sorted by row id; or, when the loader reads every
  row of the dataset in storage order (``shuffle=False`` over the whole dataset, no
  blob column), a Lance scan of the batches' contiguous range (``offset``/``limit``,
  Lance's read-ahead), checked against the row ids the take would have read (a take
  where they differ). Both give the same batches.
- Labels (a numeric or string label column) are read for the whole permutation once,
  when the loader is made, and checked against ``classes`` there.

Example:
    >>> import lancefeed
    >>> loader = lancefeed.DataLoader("cifar.lance", batch_size=256, shuffle=True,
    ...                               transform=lancefeed.RandomHorizontalFlip())  # doctest: +SKIP
    >>> for images, labels in loader:  # doctest: +SKIP
    ...     pass  # images: uint8 (256, 32, 32, 3); labels: int64 (256,)
"""

from __future__ import annotations

import os
import threading
import re
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from lancefeed import _core
from lancefeed._core import DecodeError, SizeMismatchError
from lancefeed.columns import image_column_kind
from lancefeed.decode import decode_batch, decode_targets
from lancefeed.transforms import Compose
from lancefeed.transforms.compose import apply_output, as_compose, run_rest
from lancefeed.transforms.torchvision import OutputStep
from lancefeed.labels import (
    ClassMap,
    collate_column,
    column_by_position,
    distinct_labels,
    is_numeric_type,
    is_string_list_type,
    is_string_type,
    read_column,
)
from lancefeed.memory import keep_freed_memory_unless_disabled
from lancefeed.permutation import Permutation
from lancefeed.pipeline import Meter, Pipeline, PipelineStats
from lancefeed.reads import RowReader, in_storage_order
from lancefeed.reads.cache import memory_budget
from lancefeed.reads.reader import TAKE_ROWS
from lancefeed.reads.take import describe_row
from lancefeed.sampler import Segment, num_batches, plan_epoch, remaining, shard_length
from lancefeed.staging import CpuStage, Normalize, NormalizeArg
from lancefeed.targets import ClassSelection, TargetSpec, assemble, select_boxes

SourceLike = Union[str, "os.PathLike[str]", lance.LanceDataset, Permutation]
_CHANNELS = {"RGB": 3, "L": 1}
_ROW_PREFIX = re.compile(r"^(row|item|index) \d+: ")
_STATE_KEYS = ("epoch", "batches_consumed", "seed")
_FLOATS = ("float32", "float16", "bfloat16")
# Preloaded label dtypes gathered through numpy (see _BatchMaker._columns).
_NUMPY_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool, torch.float64, torch.float32, torch.float16)
# The batches of one take are decoded by one call when their output fits this
# (_BatchMaker.joins): 4 batches of 256 CIFAR-10 images are 3 MB.
_JOINT_BYTES = 32 << 20
# What loader.stats() reports (one name for users; the pipeline fills it in).
LoaderStats = PipelineStats


@dataclass
class _Progress:
    """How far the latest iteration got; shared by the loader and its iterator."""

    epoch: int
    consumed: int
    total: int
    # Earlier runs' parts of this epoch (a resume on another world size).
    history: Tuple[Segment, ...] = ()


class _BatchMaker:
    """Everything the background thread needs to turn a take into a batch: the rows
    come from ``reader`` (:class:`lancefeed.reads.RowReader`), the pixels from the
    decode."""

    def __init__(
        self,
        perm: Permutation,
        reader: RowReader,
        image_column: str,
        other_columns: List[str],
        class_maps: Dict[str, ClassMap],
        transform: Any,
        mode: str,
        num_threads: Optional[int],
        on_error: str,
        seed: int,
        skipped: List[Tuple[int, str]],
        preloaded: Dict[str, torch.Tensor],
        truncated: str = "error",
        rest: Sequence[Any] = (),
        output: Sequence[OutputStep] = (),
        device: Optional[torch.device] = None,
        targets: Optional["_TargetConfig"] = None,
    ) -> None:
        self.targets = targets
        self.reader = reader
        # Whole decoded images by position (see _resolve_pixel_cache), used from epoch 1.
        self.pixels: Optional[_core.PixelCache] = None
        # Preloaded columns (the labels) are indexed by position; the take reads the rest.
        self.preloaded = preloaded
        self._preloaded_np = {k: v.numpy() for k, v in preloaded.items() if v.device.type == "cpu" and v.dtype in _NUMPY_DTYPES}
        self.perm = perm
        self.image_column = image_column
        self.other_columns = other_columns
        self.class_maps = class_maps
        self.transform = transform
        self.mode = mode
        self.num_threads = num_threads
        self.on_error = on_error
        self.truncated = truncated
        # The chain's per-sample Python part and the output steps the stage does not do.
        self.rest = list(rest)
        self.output = list(output)
        self.device = device
        self.seed = seed
        self.skipped = skipped
        size = getattr(transform, "output_size", None) if transform is not None and not self.rest else None
        channels = _CHANNELS.get(mode)
        self.shape: Optional[Tuple[int, int, int]] = (
            (int(size[0]), int(size[1]), channels) if size is not None and channels is not None else None
        )

    def build(self, rows: pa.RecordBatch, order: np.ndarray, positions: np.ndarray, epoch: int, stage: Any) -> Any:
        """One batch: ``rows.take(order)`` holds the rows of ``positions``, in that order."""
        if self.targets is not None:
            return self._build_targets(rows, order, positions, epoch)
        try:
            handle, images, info = self._decode(rows, order, positions, epoch, stage)
        except SizeMismatchError:
            # Rows that come out at different sizes: a list of images, one per row, where
            # the transform allows it (no per-sample Python part, the CPU stage).
            if self.rest or not isinstance(stage, CpuStage):
                raise
            return self._build_ragged(rows, order, positions, epoch, stage)
        if info.errors:
            self._errors(info, positions, epoch)
            kept = np.asarray(info.kept, dtype=np.int64)
            order = order[kept]
            positions = positions[kept]
        if self.rest or self.output:
            images = self._finish_slow(images, positions, epoch)
        return stage.finish(handle, images, self._columns(rows, order, positions))

    def joins(self, parts: Sequence[np.ndarray], stage: Any) -> bool:
        """Whether the batches ``parts`` of one take are decoded by one call
        (:meth:`build_joint`): small images on the CPU stage, with no per-sample Python
        step, the joint output within _JOINT_BYTES."""
        if len(parts) < 2 or self.targets is not None or self.rest or self.output or not isinstance(stage, CpuStage):
            return False
        rows = sum(len(p) for p in parts)
        if self.shape is None:
            return self.reader.small_rows() and rows <= TAKE_ROWS
        fused = stage.fused_normalize
        per_value = 1 if fused is None else (4 if fused.dtype == "float32" else 2)
        return rows * self.shape[0] * self.shape[1] * self.shape[2] * per_value <= _JOINT_BYTES

    def build_joint(self, rows: pa.RecordBatch, order: np.ndarray, parts: Sequence[np.ndarray], epoch: int, stage: Any) -> Iterator[Any]:
        """The batches ``parts`` (their rows ``rows.take(order)``, one after the other)
        decoded by one call, each handed out as a view of the joint output: what a call
        costs besides its rows (waking the decode threads, the GIL's hand-over, Arrow's
        export of the column) is paid once per take rather than once per batch, on the
        thread the decode threads wait for. Each batch is what :meth:`build` makes of it
        alone: skipped rows leave their own batch shorter, a bad row with
        ``on_error="raise"`` raises after the batches before its own, and rows of
        different sizes are built batch by batch."""
        positions = np.concatenate(parts)
        try:
            handle, images, info = self._decode(rows, order, positions, epoch, stage)
        except SizeMismatchError:
            # A batch of one size each may still span sizes across batches.
            yield from self.build_each(rows, order, parts, epoch, stage)
            return
        ends = np.cumsum([len(p) for p in parts])
        kept = np.arange(len(positions)) if not info.errors else np.asarray(info.kept, dtype=np.int64)
        raising = bool(info.errors) and self.on_error == "raise"
        if raising:
            # Only the batches before the bad row's are handed out (all their rows kept).
            ends = ends[: int(np.searchsorted(ends, info.errors[0][0], side="right"))]
            kept = kept[kept < (ends[-1] if len(ends) else 0)]
            images = images[: len(kept)]
        elif info.errors:
            self._errors(info, positions, epoch)  # lists the skipped rows
        t, columns = stage.finish(handle, images, self._columns(rows, order[kept], positions[kept]))
        start = 0
        for stop in np.searchsorted(kept, ends):
            yield t[start:stop], {k: v[start:stop] for k, v in columns.items()}
            start = stop
        if raising:
            self._errors(info, positions, epoch)  # raises, naming the row

    def build_each(self, rows: pa.RecordBatch, order: np.ndarray, parts: Sequence[np.ndarray], epoch: int, stage: Any) -> Iterator[Any]:
        """The batches ``parts`` of one take, one :meth:`build` each."""
        offset = 0
        for positions in parts:
            yield self.build(rows, order[offset : offset + len(positions)], positions, epoch, stage)
            offset += len(positions)

    def _decode(self, rows: pa.RecordBatch, order: np.ndarray, positions: np.ndarray, epoch: int, stage: Any) -> Tuple[Optional[Any], Any, Any]:
        """The images of ``positions`` decoded (errors skipped, listed in the info):
        the stage's buffer handle, the images and the decode's info."""
        n = len(order)
        fused = getattr(stage, "fused_normalize", None)
        # Epoch 0 decodes only each crop's part of a JPEG (the fastest first pass); the
        # epochs after it crop from whole decoded images, kept in the pixel cache. Which
        # one a batch gets depends on its epoch alone, so a resumed run sees the same pixels.
        pixels = self.pixels if epoch >= 1 else None
        handle = stage.buffer(n, self.shape) if self.shape is not None and fused is None else None
        out = None if handle is None else handle.array
        images, info = decode_batch(
            rows.column(self.image_column),
            order=order,
            transform=self.transform,
            mode=self.mode,
            num_threads=self.num_threads,
            out=out,
            on_error="skip",
            seed=self.seed,
            epoch=epoch,
            positions=positions,
            return_info=True,
            truncated=self.truncated,
            normalize=None if fused is None else (fused.mean, fused.std),
            normalize_dtype="float32" if fused is None else fused.dtype,
            _channels_last=fused is not None and fused.channels_last,
            _normalize_out=stage.normalized_buffer(n, self.shape) if fused is not None and self.shape is not None else None,
            pixel_cache=pixels,
        )
        return handle, images, info

    def _errors(self, info: Any, positions: np.ndarray, epoch: int) -> None:
        """Raise the first undecodable row (``on_error="raise"``) or list them as skipped."""
        if not info.errors:
            return
        row_ids = self.perm.row_ids[positions]
        if self.on_error == "raise":
            index, message = info.errors[0]
            row = describe_row(self.perm.dataset, int(row_ids[index]))
            raise DecodeError(
                f"{row}, position {int(positions[index])} of the loader's permutation (epoch {epoch}), "
                f"column {self.image_column!r}: {_ROW_PREFIX.sub('', str(message))}"
            )
        self.skipped.extend((int(row_ids[i]), str(m)) for i, m in info.errors)

    def _build_ragged(self, rows: pa.RecordBatch, order: np.ndarray, positions: np.ndarray, epoch: int, stage: Any) -> Any:
        """A batch whose images differ in size: a list of tensors, (H, W, C) uint8, or
        (C, H, W) after output steps or ``normalize``."""
        output = list(self.output)
        norm = stage.normalize
        if norm is not None:
            output = [OutputStep(dtype=norm.dtype, scale=True), OutputStep(mean=tuple(norm.mean), std=tuple(norm.std))]
        transform = Compose(([self.transform] if self.transform is not None else []) + output)
        images, _, info = decode_targets(
            rows.column(self.image_column), transform=transform, mode=self.mode, num_threads=self.num_threads,
            on_error="skip", seed=self.seed, epoch=epoch, positions=positions, order=order, truncated=self.truncated,
            ragged=True, return_info=True,
        )
        self._errors(info, positions, epoch)
        kept = np.asarray(info.kept, dtype=np.int64)
        images = [x if isinstance(x, torch.Tensor) else torch.from_numpy(x) for x in images]
        return images, self._columns(rows, order[kept], positions[kept])

    def _columns(self, rows: pa.RecordBatch, order: np.ndarray, positions: np.ndarray) -> Dict[str, Any]:
        """The batch's other columns, for the rows of ``positions`` (``rows.take(order)``)."""
        row_ids = None
        gather = None
        columns: Dict[str, Any] = {}
        for name in self.other_columns:
            if name in self._preloaded_np:
                # numpy's gather: a torch index of a small batch costs several times more
                # in dispatch, on the thread that starts the next batch's decode.
                columns[name] = torch.from_numpy(self._preloaded_np[name][positions])
                continue
            if name in self.preloaded:
                columns[name] = self.preloaded[name][torch.from_numpy(positions)]
                continue
            cmap = self.class_maps.get(name)
            if row_ids is None:
                row_ids = self.perm.row_ids[positions]
            if gather is None:
                gather = pa.array(order)
            columns[name] = collate_column(rows.column(name).take(gather), class_map=cmap, row_ids=row_ids)
        return columns


    def _build_targets(self, rows: pa.RecordBatch, order: np.ndarray, positions: np.ndarray, epoch: int) -> Any:
        """A batch with its targets: the class selection, then the images with their boxes
        and masks through the transform, then each role's values per kept row."""
        tc = self.targets
        assert tc is not None
        spec = tc.spec
        sel = select_boxes(rows, spec, tc.selection, self.perm.row_ids[positions]) if spec.box_column else None
        transform = Compose(([self.transform] if self.transform is not None else []) + list(self.output))
        images, targets, info = decode_targets(
            rows.column(self.image_column),
            boxes=None if sel is None else (sel.values, sel.offsets),
            box_format=spec.box_format,
            masks=None if spec.mask_column is None else rows.column(spec.mask_column),
            mask_fill=tc.mask_fill,
            transform=transform,
            mode=self.mode,
            num_threads=self.num_threads,
            on_error="skip",
            seed=self.seed,
            epoch=epoch,
            positions=positions,
            order=order,
            truncated=self.truncated,
            min_area=tc.min_area,
            min_visibility=tc.min_visibility,
            ragged=self.shape is None,
            return_info=True,
        )
        kept = np.asarray(info.kept, dtype=np.int64)
        self._errors(info, positions, epoch)
        columns: Dict[str, Any] = assemble(rows, spec, sel, order, targets, kept)
        if self.shape is not None and spec.mask_column is not None and not tc.detection:
            columns["mask"] = torch.stack(columns["mask"]) if columns["mask"] else torch.zeros((0, *self.shape[:2]), dtype=torch.uint8)
        images = _detection_images(images) if tc.detection else _as_tensors(images)
        if self.device is not None and self.device.type != "cpu":
            images = [x.to(self.device) for x in images] if isinstance(images, list) else images.to(self.device)
            columns = {k: [v.to(self.device) if isinstance(v, torch.Tensor) else v for v in vs] if isinstance(vs, list) else vs.to(self.device) for k, vs in columns.items()}
        return images, columns

    def _finish_slow(self, images: np.ndarray, positions: np.ndarray, epoch: int) -> torch.Tensor:
        """The chain's per-sample Python part and output steps on the fused batch."""
        if self.rest:
            rows = self.perm.row_ids[positions]
            first = len(self.transform.ops()) if self.transform is not None else 0
            x = run_rest(images, self.rest, positions, first, seed=self.seed, epoch=epoch, threads=self.num_threads, rows=rows)
        else:
            x = torch.from_numpy(images).permute(0, 3, 1, 2)
        x = apply_output(x, self.output)
        return x if self.device is None or self.device.type == "cpu" else x.to(self.device)


def _as_tensors(images: Any) -> Any:
    """decode_targets' images as tensors: one batch tensor, or a list of them."""
    if isinstance(images, np.ndarray):
        return torch.from_numpy(images)
    if isinstance(images, list):
        return [x if isinstance(x, torch.Tensor) else torch.from_numpy(x) for x in images]
    return images


def _detection_images(images: Any) -> List[torch.Tensor]:
    """decode_targets' images as torchvision's detection models take them: a list of
    (C, H, W) tensors (numpy results are HWC; output steps already gave CHW tensors)."""
    if isinstance(images, np.ndarray):
        return list(torch.from_numpy(images).permute(0, 3, 1, 2).unbind(0))
    if isinstance(images, torch.Tensor):
        return list(images.unbind(0))
    return [x if isinstance(x, torch.Tensor) else torch.from_numpy(x).permute(2, 0, 1) for x in images]


@dataclass
class _TargetConfig:
    """What the loader does with targets (see ``DataLoader(targets=)``)."""

    spec: TargetSpec
    selection: Optional[ClassSelection]
    detection: bool
    mask_fill: int = 0
    min_area: Optional[float] = None
    min_visibility: float = 0.0


class _SamplerShim:
    """``loader.sampler``: lets PyTorch Lightning call ``set_epoch`` as on a sampler."""

    def __init__(self, loader: "DataLoader") -> None:
        self._loader = weakref.ref(loader)

    def set_epoch(self, epoch: int) -> None:
        loader = self._loader()
        if loader is not None:
            loader.set_epoch(epoch)


class LoaderIterator:
    """One pass over an epoch; ``close()`` (or dropping it) stops its threads.

    As with torch's ``DataLoader``, the epoch is fixed by the first ``next()``, not by
    ``iter()``: a ``set_epoch`` in between (PyTorch Lightning does exactly this) still
    applies, and an iterator that is never advanced starts no thread and uses no epoch.

    Example:
        >>> it = iter(loader)  # doctest: +SKIP
        >>> images, labels = next(it)  # doctest: +SKIP
        >>> it.close()  # doctest: +SKIP
    """

    def __init__(self, loader: "DataLoader", stage: Any) -> None:
        self._loader = loader
        self._stage = stage
        self._pipeline: Optional[Pipeline[Any, Any, Any]] = None
        self._progress: Optional[_Progress] = None
        self._closed = False

    def __iter__(self) -> "LoaderIterator":
        return self

    def __next__(self) -> Any:
        if self._pipeline is None:
            if self._closed:
                raise StopIteration
            self._pipeline, self._progress = self._loader._start(self._stage)
        images, columns = self._stage.deliver(next(self._pipeline))
        assert self._progress is not None
        self._progress.consumed += 1
        return self._loader._shape_output(images, columns)

    def __len__(self) -> int:
        return self._progress.total if self._progress is not None else len(self._loader)

    def close(self) -> None:
        """Stop the background threads now (also done when the iterator is dropped)."""
        self._closed = True
        if self._pipeline is not None:
            self._pipeline.close()


class DataLoader:
    """Batches of decoded images (and their columns) from a Lance dataset.

    ``source``: a URI, a ``lance.LanceDataset`` or a ``lancefeed.Permutation``.
    Batches are ``(images, labels)`` (``output="tuple"``: the image column, then the
    other selected columns in order; by default the ``label`` column when there is
    one) or a dict with one entry per column (``output="dict"``; by default all
    columns). Images are a uint8 NHWC tensor over the decoded buffer; with
    ``normalize=(mean, std)`` (0..1 scale, per channel) float32 NCHW, normalized per
    batch (``channels_last=True`` for channels_last memory). String labels become class
    indices through ``classes`` (a list, or ``"auto"``/``None``: the sorted distinct
    labels of the dataset, reported as ``loader.classes``); numeric labels pass through
    as int64; list columns come as lists of tensors.

    ``transform``: lancefeed's transforms, torchvision's (``transforms`` or ``v2``,
    ``Compose`` included) or any callable, see :class:`lancefeed.Compose`: the ops with
    a counterpart in the core run fused in the decode; the rest runs per sample on the
    loader's threads (announced once by a :class:`lancefeed.SlowPathWarning`). A chain
    ending in ``ToTensor()``/``ToDtype(float32, scale=True)`` and ``Normalize`` gives
    float32 NCHW batches, as ``normalize=`` does.
    ``num_threads``: decode threads (default: the cores). ``io_threads``: concurrent
    takes (default ``None``: as many as hide the store's latency, bounded; see the
    module). ``prefetch``: ready batches kept ahead. ``log_every``: log
    :meth:`stats` as one line on the ``lancefeed`` logger (INFO) every that many
    seconds while iterating (off by default). ``on_error="skip"`` drops rows whose
    image does not decode (listed in ``loader.skipped``) instead of raising
    ``DecodeError`` naming the row; ``truncated="pad"`` decodes truncated images as
    Pillow does with ``LOAD_TRUNCATED_IMAGES`` (see :func:`lancefeed.decode_batch`).
    ``device="cuda"`` moves batches through a :class:`lancefeed.CudaPrefetcher`.
    ``batch_transform``: a callable applied to each whole batch as it is handed out (on
    the GPU with ``device="cuda"``), as ``batch_transform(images, labels) -> (images,
    labels)`` when there is a label column (torchvision's ``v2.MixUp``/``v2.CutMix``,
    kornia's augmentations), else ``batch_transform(images) -> images``.
    ``normalize_dtype``: ``"float16"``/``"bfloat16"`` for half-precision normalised batches.
    ``targets``/``output="detection"``/``classes``/``drop_empty``/``mask_fill``/``min_area``/
    ``min_visibility``: boxes and masks that follow the transform (see the README's
    "Detection and segmentation"). ``log_every``: log :meth:`stats` every that many seconds.
    ``cache``: ``"auto"`` keeps the rows the first epoch reads in memory when Lance's
    statistics say they are small (<= 2 GiB and 1/8 of the memory), so later epochs gather
    from memory; ``True``/``False`` force it. Unless ``False``, a local dataset's image
    column is read in place from its mapped data files where :mod:`lancefeed.mapped` can
    check them (no Lance scan or take; with ``"auto"`` also past the cache's budget, up to
    half the machine's memory: those rows are the page cache's). ``LANCEFEED_MMAP=0``
    turns that off.
    ``pixel_cache``: ``"auto"`` (with the row cache on and small images, read by scans
    or in place) keeps each image's whole decode from epoch 1 on, within the same memory
    budget, so later epochs crop and resize from pixels instead of decoding JPEGs
    (CIFAR-10: about twice the images/s). Epoch 0 decodes only each crop's part of a
    JPEG; epochs from 1 on cut the crop from the whole decoded image, as
    ``decode_batch(decode_crop=False)`` does, whether a row is held or not (the epoch
    decides, not what the cache holds, so a resumed run sees the same pixels);
    ``True``/``False`` force it on or off (``False``: every epoch as epoch 0; boxes and
    masks are decoded every epoch).
    ``shuffle_clump_size=k`` (with ``shuffle=True``): each epoch shuffles runs of ``k``
    consecutive positions of the permutation instead of single samples (the last run
    may be shorter; each run keeps its rows in order), so a batch reads neighbouring
    rows: fewer, larger reads on an object store, for a coarser shuffle. Every sample
    is still read once an epoch; ranks, resume and augmentations behave as with
    ``shuffle=True``. Unshuffled, the loader reads whole-dataset epochs by Lance scans
    (see the module), with the same batches as takes.

    Example:
        >>> loader = DataLoader("imagenet.lance", 64, shuffle=True, seed=1,
        ...                     transform=RandomResizedCrop(224),
        ...                     normalize=((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))  # doctest: +SKIP
        >>> images, labels = next(iter(loader))  # doctest: +SKIP
        >>> images.shape, images.dtype, labels.dtype  # doctest: +SKIP
        (torch.Size([64, 3, 224, 224]), torch.float32, torch.int64)
    """

    def __init__(
        self,
        source: SourceLike,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        shuffle_clump_size: Optional[int] = None,
        cache: Union[bool, str] = "auto",
        pixel_cache: Union[bool, str] = "auto",
        image_column: str = "image",
        label_column: Optional[str] = "label",
        columns: Optional[Sequence[str]] = None,
        transform: Any = None,
        classes: Union[None, str, Sequence[str]] = None,
        mode: str = "RGB",
        num_threads: Optional[int] = None,
        io_threads: Optional[int] = None,
        prefetch: int = 2,
        on_error: str = "raise",
        truncated: str = "error",
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        device: Union[None, str, torch.device] = None,
        normalize: Optional[NormalizeArg] = None,
        channels_last: bool = False,
        normalize_dtype: str = "float32",
        output: str = "tuple",
        version: Union[None, int, str] = None,
        storage_options: Optional[Dict[str, str]] = None,
        batch_transform: Optional[Callable[..., Any]] = None,
        targets: Optional[Dict[str, str]] = None,
        drop_empty: bool = False,
        mask_fill: int = 0,
        min_area: Optional[float] = None,
        min_visibility: float = 0.0,
        log_every: Optional[float] = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if truncated not in ("error", "pad"):
            raise ValueError(f"truncated must be 'error' or 'pad', got {truncated!r}")
        if output not in ("tuple", "dict", "detection"):
            raise ValueError(f"output must be 'tuple', 'dict' or 'detection', got {output!r}")
        if int(prefetch) < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch!r}")
        if io_threads is not None and int(io_threads) < 1:
            raise ValueError(f"io_threads must be at least 1 (or None: self-sized), got {io_threads!r}")
        if shuffle_clump_size is not None:
            if isinstance(shuffle_clump_size, bool) or not isinstance(shuffle_clump_size, (int, np.integer)) or shuffle_clump_size < 1:
                raise ValueError(f"shuffle_clump_size must be a positive integer (or None), got {shuffle_clump_size!r}")
            if not shuffle:
                raise ValueError("shuffle_clump_size= shuffles clumps of rows: it needs shuffle=True")
        if log_every is not None and not float(log_every) > 0:
            raise ValueError(f"log_every must be a positive number of seconds (or None: off), got {log_every!r}")

        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.shuffle_clump_size = None if shuffle_clump_size is None or int(shuffle_clump_size) == 1 else int(shuffle_clump_size)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.output = output
        self.prefetch = int(prefetch)
        self.io_threads = None if io_threads is None else int(io_threads)
        self.log_every = None if log_every is None else float(log_every)
        self.on_error = on_error
        self.image_column = image_column
        self.rank, self.world_size = _resolve_rank(rank, world_size)
        self.device = _resolve_device(device)
        keep_freed_memory_unless_disabled()  # see lancefeed.memory: no page faults per batch

        perm = _as_permutation(source, version, storage_options)
        self.target_spec: Optional[TargetSpec] = None
        if targets is not None or output == "detection":
            self.target_spec = TargetSpec.resolve(targets, perm.columns)
            columns, label_column = self.target_spec.columns, None
        self.columns = _resolve_columns(perm, image_column, label_column, columns, output)
        self.permutation = perm.select_columns(self.columns)
        self.dataset = self.permutation  # what torch and Lightning look for on a loader
        self.label_column = label_column if label_column in self.columns and label_column != image_column else None
        _check_image_column(self.permutation.schema, image_column)
        # Small rows are read before the first batch (RowReader's prefill): it starts
        # now, beside what building the loader reads (classes, labels), which on an
        # object store costs round trips of its own.
        self.reader: Optional[RowReader] = None
        if self.target_spec is None:
            self.reader = RowReader(self.permutation, image_column, preloaded=_preloadable(self.permutation, self.label_column),
                                    cache=cache, num_threads=num_threads)
            self.reader.start_prefill()

        class_maps: Dict[str, ClassMap] = {}
        self.classes: Optional[List[str]] = None
        label_table: Optional[pa.Table] = None  # the label column's one scan, for both uses
        if self.label_column is not None:
            ltype = self.permutation.schema.field(self.label_column).type
            if is_string_type(ltype) or is_string_list_type(ltype):
                if classes is None or (isinstance(classes, str) and classes == "auto"):
                    label_table = read_column(self.permutation.dataset, self.label_column)
                    names = distinct_labels(self.permutation.dataset, self.label_column, table=label_table)
                elif isinstance(classes, str):
                    raise ValueError(f"classes must be a list of class names or 'auto', got {classes!r}")
                else:
                    names = list(classes)
                class_maps[self.label_column] = ClassMap(names)
                self.classes = class_maps[self.label_column].classes
            elif classes is not None:
                raise ValueError(
                    f"classes= maps string labels to indices, but column {self.label_column!r} is {ltype}; "
                    "numeric labels pass through as they are: leave classes=None"
                )
        elif self.target_spec is not None:
            pass  # classes= selects boxes by their labels: see _target_config
        elif classes is not None:
            raise ValueError(
                f"classes= was given but there is no label column to map (label_column={label_column!r}, "
                f"columns {self.columns})"
            )
        self.class_to_idx: Optional[Dict[str, int]] = (
            None if self.classes is None else {c: i for i, c in enumerate(self.classes)}
        )

        target_config = None
        if self.target_spec is not None:
            target_config = self._target_config(classes, output == "detection", mask_fill, min_area, min_visibility)
            if drop_empty:
                self.permutation = _drop_empty(self.permutation, self.target_spec, target_config.selection)
                self.dataset = self.permutation
        elif drop_empty:
            raise ValueError("drop_empty=True drops images without boxes: it needs targets (a box column)")

        channels = _CHANNELS.get(mode)
        if channels is None:
            raise ValueError(f"mode must be one of {sorted(_CHANNELS)}, got {mode!r}")
        chain = as_compose(transform)
        rest: List[Any] = []
        output: List[OutputStep] = []
        if isinstance(chain, Compose) and not chain.fused_only:
            rest, output = list(chain.rest), list(chain.output)
            chain = Compose(chain.fused)
            as_normalize = None if rest else _output_as_normalize(output)
            if as_normalize is not None:
                if normalize is not None:
                    raise ValueError("the transform ends in ToTensor/ToDtype/Normalize and normalize= is given too: give one of them")
                normalize, output, normalize_dtype = as_normalize[:2], [], as_normalize[2]
        self.normalize = Normalize.of(normalize, channels, channels_last, normalize_dtype)
        if (rest or output) and self.normalize is not None:
            raise ValueError("normalize= with a transform that runs per sample in Python: end the transform with ToTensor and Normalize instead")
        if target_config is not None:
            if rest:
                raise ValueError(
                    f"boxes and masks follow the ops lancefeed runs; {rest} would run per sample in Python and leave "
                    "them behind: use lancefeed's (or torchvision's fused) ops for the geometry"
                )
            if self.normalize is not None:
                # Per image (sizes may differ): ToDtype + Normalize as output steps.
                mean, std = self.normalize.mean, self.normalize.std
                output = [OutputStep(dtype=self.normalize.dtype, scale=True), OutputStep(mean=tuple(mean), std=tuple(std))]
                self.normalize = None
        self.transform = chain
        if batch_transform is not None and not callable(batch_transform):
            raise TypeError(f"batch_transform must be callable, got {batch_transform!r}")
        self.batch_transform = batch_transform
        self.mode = mode
        self.num_threads = num_threads
        self.skipped: List[Tuple[int, str]] = []
        preloaded = _preload_labels(self.permutation, self.label_column, class_maps, label_table)
        if self.reader is None or set(self.reader.preloaded) != set(preloaded):
            # Labels that could not be read whole, or boxes and masks read with each take.
            self.reader = RowReader(self.permutation, image_column, preloaded=list(preloaded), cache=cache,
                                    num_threads=num_threads, chunked=target_config is None)
        self._maker = _BatchMaker(
            self.permutation,
            self.reader,
            image_column,
            [c for c in self.columns if c != image_column],
            class_maps,
            self.transform,
            mode,
            num_threads,
            on_error,
            self.seed,
            self.skipped,
            preloaded,
            truncated,
            rest,
            output,
            self.device,
            target_config,
        )
        self._maker.pixels = _resolve_pixel_cache(pixel_cache, self._maker, len(self.permutation), mode)
        self.sampler = _SamplerShim(self)
        self.batch_sampler = None  # Lightning reads it next to .sampler
        self._next: Optional[Tuple[int, int]] = (0, 0)
        # What earlier runs read of the epoch in `_next` (set by load_state_dict).
        self._next_history: Tuple[Segment, ...] = ()
        self._progress: Optional[_Progress] = None
        self._prefetcher: Any = None
        self._meter = Meter(self.log_every, label=f"{self.permutation.uri}: ")
        self._scannable: Optional[bool] = None

    def stats(self) -> Dict[str, Any]:
        """What the loader did so far, summed over its epochs, as a dict.

        ``batches`` handed out; ``takes`` (the batches' reads, from Lance or from the
        cache) and ``bytes_read`` (the Arrow size of what they read from the dataset:
        rows from the cache count nothing); ``take_s`` (their latencies,
        summed: they overlap); ``io_wait_s`` (time the decode waited for a take) and
        ``decode_s`` (time decoding and collating); ``wait_p50_s``/``wait_p95_s``
        (time the training loop waited in ``next()``, over the last 4,096 batches);
        ``queue_depth_mean``/``_max`` (ready batches at each ``next()``);
        ``in_flight_mean``/``_max``/``_limit``/``_bound`` (takes read ahead: seen,
        the window now, the most it may grow to); ``io_bound`` (the decode waited on
        reads longer than it worked); ``elapsed_s`` since the loader was made;
        ``pixel_cache_rows``/``pixel_cache_bytes``: what the pixel cache holds;
        ``read_path`` (``"in_place"``: the image column read from the data files,
        ``"lance"``: by Lance's takes or scans, ``"mixed"``), ``read_path_reason`` (why
        not every row in place), ``rows_in_place``/``rows_through_lance``: see
        :meth:`lancefeed.reads.RowReader.stats`.

        Example:
            >>> for batch in loader: ...  # doctest: +SKIP
            >>> s = loader.stats(); s["batches"] == len(loader), s["io_bound"]  # doctest: +SKIP
            (True, False)
        """
        stats = self._meter.snapshot().as_dict()
        pixels = self._maker.pixels
        stats["pixel_cache_rows"] = 0 if pixels is None else pixels.cached
        stats["pixel_cache_bytes"] = 0 if pixels is None else pixels.nbytes
        stats.update(self.reader.stats())
        return stats

    @property
    def pixel_cache(self) -> Optional[_core.PixelCache]:
        """The loader's cache of whole decoded images (``pixel_cache=``), or None. From
        epoch 1 on, with one, every row's crop is cut from its whole decoded image, as
        ``decode_batch(decode_crop=False)`` does (held or not).

        Example:
            >>> DataLoader("cifar.lance", 256, shuffle=True).pixel_cache  # doctest: +SKIP
            PixelCache(rows=50000, cached=0, nbytes=0, max_bytes=2147483648, mode='RGB')
        """
        return self._maker.pixels

    # -- sizes and epochs ---------------------------------------------------------

    @property
    def num_samples(self) -> int:
        """Samples this rank reads each epoch (before any ``drop_last``)."""
        return shard_length(len(self.permutation), self.world_size)

    def __len__(self) -> int:
        """Batches of the next epoch (or the running one) on this rank: fewer in an epoch
        resumed on another world size, whose rest is re-sharded."""
        history = self._next_history if self._next is not None else (self._progress.history if self._progress else ())
        left = len(self.permutation) - _read_before(len(self.permutation), history)
        return num_batches(shard_length(left, self.world_size), self.batch_size, self.drop_last)

    @property
    def epoch(self) -> int:
        """The epoch of the next iteration (or of the running one, when none is set)."""
        if self._next is not None:
            return self._next[0]
        assert self._progress is not None
        return self._progress.epoch + 1

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next iteration (as ``DistributedSampler.set_epoch``).

        Setting the epoch a loaded state resumes in keeps the resume point.

        Example:
            >>> for epoch in range(3):  # doctest: +SKIP
            ...     loader.set_epoch(epoch)
            ...     for images, labels in loader: ...
        """
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        if self._next is not None and self._next[0] == epoch:
            return
        self._next = (int(epoch), 0)
        self._next_history = ()

    # -- resume -------------------------------------------------------------------

    def state_dict(self) -> Dict[str, Any]:
        """Where the loader stands: epoch, seed and batches handed out in that epoch.

        Example:
            >>> state = loader.state_dict()  # doctest: +SKIP
            >>> fresh = DataLoader(uri, 64, shuffle=True); fresh.load_state_dict(state)  # doctest: +SKIP
        """
        if self._next is not None:
            (epoch, consumed), history = self._next, self._next_history
        else:
            assert self._progress is not None
            epoch, consumed, history = self._progress.epoch, self._progress.consumed, self._progress.history
        return {
            "epoch": epoch,
            "batches_consumed": consumed,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "shuffle_clump_size": self.shuffle_clump_size,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "world_size": self.world_size,
            "num_samples": len(self.permutation),
            "dataset_version": self.permutation.version,
            # Earlier runs' parts of this epoch, [world_size, batch_size, batches] each.
            "history": [[h.world_size, h.batch_size, h.batches] for h in history],
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue from ``state`` (see :meth:`state_dict`) at the next iteration.

        The seed is taken from the state. With the same world size and batch size the
        batches are exactly those the saved run would have gone on with. With another
        world size or batch size (an elastic restart), the samples every rank of the
        saved run had read are taken out of the epoch and the rest is re-sharded over
        this run's ranks: each read at most once in the epoch, none repeated, every rank
        the same number of steps (the remainder of the re-shard is left out, as in any
        epoch). Every rank saves the same state, so any rank's may be loaded on all.
        A different shuffle or number of samples would give another epoch, and raises.

        Example:
            >>> state = loader.state_dict()  # on 4 ranks  # doctest: +SKIP
            >>> loader2 = DataLoader(uri, 64, shuffle=True, world_size=2, rank=r)  # doctest: +SKIP
            >>> loader2.load_state_dict(state)  # the rest of the epoch over 2 ranks  # doctest: +SKIP
        """
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise ValueError(f"not a lancefeed DataLoader state: missing {missing}; got keys {sorted(state)}")
        mine = self.state_dict()
        for key in ("shuffle", "shuffle_clump_size", "num_samples"):
            if key in state and state[key] != mine[key]:
                raise ValueError(
                    f"cannot resume: the state was saved with {key}={state[key]!r} but this loader has "
                    f"{key}={mine[key]!r}; the epoch would be another one"
                )
        epoch, consumed = int(state["epoch"]), int(state["batches_consumed"])
        if consumed < 0 or epoch < 0:
            raise ValueError(f"bad state: epoch={epoch}, batches_consumed={consumed}")
        try:
            history = tuple(Segment(int(w), int(b), int(k)) for w, b, k in state.get("history", []))
        except (TypeError, ValueError):
            raise ValueError(f"bad state: history must be [world_size, batch_size, batches] lists, got {state.get('history')!r}") from None
        saved = Segment(int(state.get("world_size", self.world_size)), int(state.get("batch_size", self.batch_size)), consumed)
        n = len(self.permutation)
        left = n - _read_before(n, history)
        saved_batches = num_batches(shard_length(left, saved.world_size), saved.batch_size, bool(state.get("drop_last", self.drop_last)))
        self.seed = int(state["seed"])
        self._maker.seed = self.seed
        if consumed >= saved_batches:
            self._next, self._next_history = (epoch + 1, 0), ()
        elif (saved.world_size, saved.batch_size) == (self.world_size, self.batch_size):
            self._next, self._next_history = (epoch, consumed), history
        else:
            self._next, self._next_history = (epoch, 0), history + (saved,)

    # -- iteration ----------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        slow = self._maker.rest or self._maker.output or self._maker.targets is not None
        if self.device is not None and self.device.type != "cpu" and not slow:
            if self._prefetcher is None:  # one side stream for the loader's life
                from lancefeed.cuda import CudaPrefetcher

                self._prefetcher = CudaPrefetcher(self, device=self.device)
            return iter(self._prefetcher)
        return self._iterate(CpuStage(self.normalize))

    def _iterate(self, stage: Any) -> LoaderIterator:
        """An iterator over the next epoch, delivering through ``stage``; starts lazily."""
        return LoaderIterator(self, stage)

    def _start(self, stage: Any) -> Tuple[Pipeline[Any, Any, Any], _Progress]:
        """Fix the epoch and resume point, and start its pipeline."""
        if self._next is not None:
            (epoch, start), history = self._next, self._next_history
        else:
            assert self._progress is not None
            epoch, start, history = self._progress.epoch + 1, 0, ()
        plan = plan_epoch(
            len(self.permutation),
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=epoch,
            rank=self.rank,
            world_size=self.world_size,
            drop_last=self.drop_last,
            start_batch=start,
            history=history,
            clump_size=self.shuffle_clump_size,
        )
        self._next, self._next_history = None, ()
        progress = _Progress(epoch, start, len(plan), history)
        self._progress = progress
        maker = self._maker

        # One take feeds `group` consecutive batches: Lance's cost per row drops with
        # bigger takes (small images), while a take stays under TAKE_BYTES.
        group = maker.reader.batches_per_take(self.batch_size)
        keys = [range(k, min(k + group, len(plan))) for k in range(start, len(plan), group)]

        meter, uri = self._meter, self.permutation.uri
        maker.reader.use_scan = self._uses_scan()

        def fetch(batches: range) -> Tuple[pa.RecordBatch, np.ndarray, List[np.ndarray]]:
            parts = [plan.batch(k) for k in batches]
            positions = parts[0] if len(parts) == 1 else np.concatenate(parts)
            try:
                rows, order, nbytes = maker.reader.take(positions)
            except (OSError, ValueError) as exc:  # Lance's I/O errors name the HTTP request, not the dataset
                raise _read_error(uri, batches, exc) from exc
            meter.add_bytes(nbytes)
            return rows, order, parts

        def process(batches: range, fetched: Tuple[pa.RecordBatch, np.ndarray, List[np.ndarray]]) -> Iterator[Any]:
            rows, order, parts = fetched
            if maker.joins(parts, stage):
                yield from maker.build_joint(rows, order, parts, epoch, stage)
            else:
                yield from maker.build_each(rows, order, parts, epoch, stage)

        pipeline = Pipeline(
            keys,
            fetch,
            process,
            prefetch=self.prefetch,
            io_threads=self.io_threads,
            depth=None if self.io_threads is None else self.prefetch + self.io_threads,
            meter=meter,
        )
        return pipeline, progress

    def _uses_scan(self) -> bool:
        """Whether this epoch's positions are in storage order (unshuffled, over the
        whole dataset): then contiguous positions may be read by scans."""
        if self.shuffle:
            return False
        if self._scannable is None:
            self._scannable = in_storage_order(self.reader.take_perm)
        return self._scannable

    def _target_config(self, classes: Any, detection: bool, mask_fill: int, min_area: Optional[float],
                       min_visibility: float) -> _TargetConfig:
        """The class selection on the per-box labels column (``classes``: keep those
        labels' boxes, as indices in that order; else names map to the sorted distinct
        labels of the dataset and numbers pass through)."""
        spec = self.target_spec
        assert spec is not None
        selection = None
        labels = spec.labels_column
        if labels is not None:
            ltype = self.permutation.schema.field(labels).type
            if isinstance(classes, str) and classes != "auto":
                raise ValueError(f"classes must be a list of labels or 'auto', got {classes!r}")
            chosen = None if classes is None or isinstance(classes, str) else list(classes)
            if is_string_list_type(ltype):
                names = None if chosen is not None else distinct_labels(self.permutation.dataset, labels)
                selection = ClassSelection(chosen, names)
                self.classes = selection.classes
            else:
                selection = ClassSelection(chosen)
                self.classes = chosen
            if self.classes is not None:
                self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        elif classes is not None:
            raise ValueError(f"classes= selects boxes by a per-box labels column; targets {spec.per_box} name none as 'labels'")
        if not 0.0 <= min_visibility <= 1.0:
            raise ValueError(f"min_visibility must be in [0, 1], got {min_visibility}")
        if not 0 <= int(mask_fill) <= 255:
            raise ValueError(f"mask_fill must be in [0, 255], got {mask_fill}")
        return _TargetConfig(spec, selection, detection, int(mask_fill), min_area, float(min_visibility))

    def _shape_output(self, images: Any, columns: Dict[str, Any]) -> Any:
        spec = self.target_spec
        if spec is not None:
            if self.batch_transform is not None:
                images, columns = self.batch_transform(images, columns)
            if self.output == "detection":
                n = len(images)
                return images, [{role: columns[role][k] for role in spec.roles} for k in range(n)]
            if self.output == "tuple":
                return (images, *(columns[role] for role in spec.roles))
            return {self.image_column: images, **columns}
        if self.batch_transform is not None:
            if self.label_column is not None:
                images, columns[self.label_column] = self.batch_transform(images, columns[self.label_column])
            else:
                images = self.batch_transform(images)
        if self.output == "tuple":
            return (images, *(columns[c] for c in self.columns if c != self.image_column))
        return {c: images if c == self.image_column else columns[c] for c in self.columns}

    def __repr__(self) -> str:
        return (
            f"DataLoader({self.permutation.uri!r}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            + (f"shuffle_clump_size={self.shuffle_clump_size}, " if self.shuffle_clump_size else "")
            + f"samples={len(self.permutation)}, batches={len(self)}, rank={self.rank}/{self.world_size})"
        )


def _read_error(uri: str, batches: range, exc: BaseException) -> BaseException:
    """``exc`` with the dataset URI and the batches in its message, same type where it
    can be made (so ``except OSError`` still catches it)."""
    message = f"reading {uri!r} (batches {batches.start}..{batches.stop - 1} of the epoch): {exc}"
    try:
        return type(exc)(message)
    except Exception:  # noqa: BLE001 - an exception type that takes other arguments
        return OSError(message)


def _resolve_pixel_cache(pixel_cache: Union[bool, str], maker: _BatchMaker, rows: int, mode: str) -> Optional[_core.PixelCache]:
    """``pixel_cache="auto"``: keep whole decoded images from epoch 1 on where the loader
    already keeps the encoded rows of small images, read whole before the first batch
    (see lancefeed.reads.reader): there a JPEG's decode costs several times its crop and resize.
    Within the memory budget of the row cache; rows past it are decoded every epoch."""
    if pixel_cache not in (True, False, "auto"):
        raise ValueError(f"pixel_cache must be True, False or 'auto', got {pixel_cache!r}")
    if maker.targets is not None:
        if pixel_cache is True:
            raise ValueError("pixel_cache=True keeps decoded images for image batches; boxes and masks (targets) are decoded every epoch")
        return None
    # Small rows kept whole: scanned, or read in place (any permutation, the seeds' splits
    # among them), within the row cache's budget.
    kept = maker.reader.prefill
    if pixel_cache == "auto" and not kept:
        return None
    if not pixel_cache or rows == 0:
        return None
    return _core.PixelCache(rows, memory_budget(), mode)


def _read_before(num_samples: int, history: Sequence[Segment]) -> int:
    """How many samples of an epoch the runs in ``history`` read (see sampler.remaining)."""
    if not history:
        return 0
    return num_samples - len(remaining(np.arange(num_samples), history))


def _drop_empty(perm: Permutation, spec: TargetSpec, selection: Optional[ClassSelection]) -> Permutation:
    """``perm`` without the rows left with no box (after the class selection), read once
    now so that every epoch, rank and resume counts only the rows it will hand out."""
    column = spec.labels_column if selection is not None and selection.selects else spec.box_column
    if column is None:
        raise ValueError("drop_empty=True needs a box column in targets")
    values = column_by_position(perm.dataset, perm.row_ids, column)
    if values is None:
        values = perm.take_positions(np.arange(len(perm))).column(column) if len(perm) else None
    if values is None or len(values) == 0:
        return perm
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    lengths = np.asarray(pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False))
    if column == spec.box_column:
        keep = lengths > 0
    else:
        assert selection is not None
        flat = selection.indices(values.flatten()) >= 0
        owner = np.repeat(np.arange(len(lengths)), lengths)
        keep = np.bincount(owner[flat], minlength=len(lengths)) > 0
    return perm._replace(row_ids=perm.row_ids[keep])


def _output_as_normalize(output: Sequence[OutputStep]) -> Optional[Tuple[Tuple[float, ...], Tuple[float, ...], str]]:
    """Output steps that amount to a float (float32, float16 or bfloat16) on the 0..1
    scale, then an optional Normalize, as the loader's own ``normalize=(mean, std)`` in
    that dtype (done in one pass, on the GPU with ``device="cuda"``); None for anything
    else."""
    steps = [o for o in output if o != OutputStep()]
    if not steps or steps[0].mean is not None or not steps[0].scale or steps[0].dtype not in _FLOATS:
        return None
    dtype = str(steps[0].dtype)
    if len(steps) == 1:
        return ((0.0,), (1.0,), dtype)
    if len(steps) == 2 and steps[1].dtype is None and steps[1].mean is not None:
        return (steps[1].mean, steps[1].std, dtype)  # type: ignore[return-value]
    return None


def _preloadable(perm: Permutation, label_column: Optional[str]) -> List[str]:
    """The columns :func:`_preload_labels` will most likely read whole (a number or
    string label column): the early reader leaves them out of its takes."""
    if label_column is None:
        return []
    ltype = perm.schema.field(label_column).type
    return [label_column] if is_numeric_type(ltype) or is_string_type(ltype) else []


def _preload_labels(
    perm: Permutation, label_column: Optional[str], class_maps: Dict[str, ClassMap], table: Optional[pa.Table] = None
) -> Dict[str, torch.Tensor]:
    """The label of every position as one int64 tensor, checked now (a label missing
    from ``classes`` fails at construction, naming its row), or nothing when the labels
    cannot be scanned (then each batch takes them with its images). ``table``: the
    column already scanned (:func:`~lancefeed.labels.read_column`)."""
    if label_column is None:
        return {}
    ltype = perm.schema.field(label_column).type
    if not (is_numeric_type(ltype) or (is_string_type(ltype) and label_column in class_maps)):
        return {}  # lists of labels (COCO categories) are read with each batch
    values = column_by_position(perm.dataset, perm.row_ids, label_column, table=table)
    if values is None:
        return {}
    return {label_column: collate_column(values, class_map=class_maps.get(label_column), row_ids=perm.row_ids)}


def _as_permutation(
    source: SourceLike, version: Union[None, int, str], storage_options: Optional[Dict[str, str]]
) -> Permutation:
    if isinstance(source, Permutation):
        if version is not None:
            raise ValueError("version= applies to a URI or a LanceDataset; a Permutation is already pinned")
        if storage_options is not None:
            raise ValueError(
                "storage_options= applies to a URI or a LanceDataset; a Permutation opens its dataset with the "
                "options it was built with: pass them to Permutation.identity/from_tables"
            )
        return source
    if isinstance(source, (str, os.PathLike, lance.LanceDataset)):
        return Permutation.identity(source, version=version, storage_options=storage_options)
    raise TypeError(
        f"source must be a URI, a lance.LanceDataset or a lancefeed.Permutation, got {type(source).__name__}"
    )


def _resolve_columns(
    perm: Permutation,
    image_column: str,
    label_column: Optional[str],
    columns: Optional[Sequence[str]],
    output: str,
) -> List[str]:
    available = perm.columns
    if isinstance(columns, str):
        columns = [columns]
    if columns is None:
        if output == "dict":
            chosen = list(available)
        else:
            has_label = label_column and label_column != image_column and label_column in available
            chosen = [image_column] + ([label_column] if has_label else [])
    else:
        chosen = list(columns)
        if image_column not in chosen:
            chosen.insert(0, image_column)
    dupes = sorted({c for c in chosen if chosen.count(c) > 1})
    if dupes:
        raise ValueError(f"columns must be distinct; repeated: {dupes}")
    missing = [c for c in chosen if c not in available]
    if missing:
        what = "image column" if missing == [image_column] else "columns"
        raise ValueError(f"{what} {missing} not in the dataset; available columns: {available}")
    return chosen


def _check_image_column(schema: pa.Schema, image_column: str) -> None:
    """Refuse, at construction, an image column no batch could be decoded from
    (``ImageColumnTypeError``: a ``ValueError`` and a ``TypeError``, naming the type
    and the supported ones)."""
    image_column_kind(schema.field(image_column), image_column)


def _resolve_rank(rank: Optional[int], world_size: Optional[int]) -> Tuple[int, int]:
    if rank is None and world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank()), int(dist.get_world_size())
        return 0, 1
    if rank is None or world_size is None:
        raise ValueError(
            f"pass both rank and world_size (got rank={rank!r}, world_size={world_size!r}), "
            "or neither to take them from torch.distributed"
        )
    if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
        raise ValueError(f"rank must be in 0..world_size-1 and world_size >= 1, got rank={rank}, world_size={world_size}")
    return int(rank), int(world_size)


def _resolve_device(device: Union[None, str, torch.device]) -> Optional[torch.device]:
    if device is None:
        return None
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={str(device)!r} but CUDA is not available (torch {torch.__version__}, "
            f"built with CUDA {torch.version.cuda}, no GPU visible); use device=None for CPU tensors"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be None, 'cpu' or 'cuda[:N]', got {str(device)!r}")
    return dev

