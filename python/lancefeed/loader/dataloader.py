"""``lancefeed.DataLoader``: a drop-in for torch's ``DataLoader`` over a Lance dataset.

One batch: the positions of this epoch, this rank (:mod:`lancefeed.loader.sampler`) ->
the reader's rows for them (:class:`lancefeed.reads.RowReader`: in place, takes, scans
or the row cache) -> the decode core fills one uint8 NHWC buffer through the loader's
:class:`~lancefeed.transforms.plan.TransformPlan` (:mod:`lancefeed.loader.batches`) ->
labels to class indices, other columns to tensors or lists
(:mod:`lancefeed.loader.labels`) -> the stage (CPU tensors, or the CUDA prefetcher).
The reads run ahead of the decode on background threads of this process
(:mod:`lancefeed.loader.pipeline`); no worker processes.

Semantics a user can rely on:

- Randomness: the epoch order depends only on ``(seed, epoch)`` (and
  ``shuffle_clump_size``: runs of that many neighbouring positions shuffled as one,
  see ``lancefeed.loader.sampler.epoch_order``); each sample's
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
  taken columns (``lancefeed.loader.pipeline``). A take covers several batches when
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

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import pyarrow as pa
import torch

from lancefeed import _core
from lancefeed.loader.batches import BatchColumns, BatchMaker, DecodeSettings
from lancefeed.loader.cuda import DeviceFeed
from lancefeed.loader.epoch import EpochRun, LoaderIterator, SamplerShim
from lancefeed.loader.labels import preloadable
from lancefeed.loader.mixing import (
    check_mix_options,
    is_mix,
    mix_order,
    open_reader,
    position_count,
    preload_labels,
    resolve_classes,
)
from lancefeed.loader.options import (
    CHANNELS,
    SourceLike,
    as_permutation,
    check_arguments,
    check_image_column,
    resolve_columns,
    resolve_device,
    resolve_rank,
)
from lancefeed.loader.pipeline import Meter, Pipeline, PipelineStats
from lancefeed.loader.sampler import plan_epoch, shard_length
from lancefeed.loader.staging import CpuStage, Normalize, NormalizeArg
from lancefeed.loader.state import STATE_KEYS, EpochCursor, Progress
from lancefeed.loader.targets import TargetConfig, TargetSpec, drop_empty, target_config
from lancefeed.memory import keep_freed_memory_unless_disabled
from lancefeed.reads import RowReader, in_storage_order
from lancefeed.reads.cache import memory_budget
from lancefeed.transforms.plan import TransformPlan
from lancefeed.transforms.torchvision import OutputStep

__all__ = ["DataLoader", "LoaderStats"]

# What loader.stats() reports (one name for users; the pipeline fills it in).
LoaderStats = PipelineStats


class DataLoader:
    """Batches of decoded images (and their columns) from a Lance dataset.

    ``source``: a URI, a ``lance.LanceDataset``, a ``lancefeed.Permutation`` or a
    ``lancefeed.mix`` of several (:mod:`lancefeed.permutation.mix`).
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
    ``device="cuda"`` (or ``"cuda:N"``) delivers every batch on that device as
    :class:`lancefeed.CudaPrefetcher` does: images, labels, columns, boxes and masks,
    copied from pinned memory on a side stream; ``"cuda"`` is the current device of the
    thread that iterates (or ``LOCAL_RANK``'s, under torchrun without ``set_device``).
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
    column is read in place from its data files where :mod:`lancefeed.reads.inplace` can
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
        check_arguments(batch_size=batch_size, seed=seed, on_error=on_error, truncated=truncated, output=output,
                        prefetch=prefetch, io_threads=io_threads, shuffle=shuffle, shuffle_clump_size=shuffle_clump_size,
                        log_every=log_every, mode=mode)
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
        self.mode = mode
        self.num_threads = num_threads
        self.rank, self.world_size = resolve_rank(rank, world_size)
        self.device = resolve_device(device)
        keep_freed_memory_unless_disabled()  # see lancefeed.memory: no page faults per batch
        if batch_transform is not None and not callable(batch_transform):
            raise TypeError(f"batch_transform must be callable, got {batch_transform!r}")
        self.batch_transform = batch_transform

        plan = TransformPlan.of(transform)
        source = as_permutation(source, version, storage_options)
        check_mix_options(source, targets=targets, output=output, shuffle_clump_size=self.shuffle_clump_size)
        self._select(source, image_column, label_column, columns, targets, output,
                     plan.albumentations.label_fields if plan.albumentations is not None else ())
        # Small rows are read before the first batch (RowReader's prefill): it starts
        # now, beside what building the loader reads (classes, labels), which on an
        # object store costs round trips of its own.
        self.reader: Optional[RowReader] = None
        if self.target_spec is None:
            self.reader = open_reader(self.permutation, image_column, preloaded=preloadable(self.permutation, self.label_column),
                                      cache=cache, num_threads=num_threads)
            self.reader.start_prefill()
        class_maps, label_table, targets_config = self._classes(classes, label_column, output, drop_empty, mask_fill, min_area,
                                                                min_visibility)
        self.plan, self.normalize = self._plan(plan, normalize, channels_last, normalize_dtype, targets_config)
        preloaded = preload_labels(self.permutation, self.label_column, class_maps, label_table)
        if self.reader is None or set(self.reader.preloaded) != set(preloaded):
            # Labels that could not be read whole, or boxes and masks read with each take.
            self.reader = open_reader(self.permutation, image_column, preloaded=list(preloaded), cache=cache,
                                      num_threads=num_threads, chunked=targets_config is None)
        batch_columns = BatchColumns(image_column, [c for c in self.columns if c != image_column], class_maps, preloaded)
        settings = DecodeSettings(mode=mode, num_threads=num_threads, on_error=on_error, truncated=truncated, seed=self.seed)
        self._maker = BatchMaker(self.permutation, self.reader, self.plan, batch_columns, settings, targets=targets_config)
        self._maker.pixels = resolve_pixel_cache(pixel_cache, self._maker, position_count(self.permutation), mode)
        self.skipped: List[Tuple[int, str]] = self._maker.skipped
        self.sampler = SamplerShim(self)
        self.batch_sampler = None  # Lightning reads it next to .sampler
        self._cursor = EpochCursor(num_samples=len(self.permutation), batch_size=self.batch_size,
                                   world_size=self.world_size, drop_last=self.drop_last)
        # Not a CudaPrefetcher: it would hold this loader, and this loader it (a cycle).
        on_device = self.device is not None and self.device.type != "cpu"
        self._feed = DeviceFeed(self.device, self.normalize) if on_device else None
        self._meter = Meter(self.log_every, label=f"{self.permutation.uri}: ")
        self._scannable: Optional[bool] = None

    # -- construction -------------------------------------------------------------

    def _select(self, perm: Any, image_column: str, label_column: Optional[str], columns: Optional[Sequence[str]],
                targets: Optional[Dict[str, str]], output: str, label_fields: Sequence[str] = ()) -> None:
        """The permutation's columns a batch holds, and which is the label column.
        albumentations' ``label_fields`` that name per-box columns are handed out too."""
        self.target_spec: Optional[TargetSpec] = None
        if targets is not None or output == "detection":
            self.target_spec = TargetSpec.resolve(targets, perm.columns).with_per_box(label_fields, perm.columns)
            columns, label_column = self.target_spec.columns, None
        self.columns = resolve_columns(perm, image_column, label_column, columns, output)
        self.permutation = perm.select_columns(self.columns)
        self.dataset = self.permutation  # what torch and Lightning look for on a loader
        self.label_column = label_column if label_column in self.columns and label_column != image_column else None
        check_image_column(self.permutation.schema, image_column)

    def _classes(self, classes: Any, label_column: Optional[str], output: str, drop: bool, mask_fill: int,
                 min_area: Optional[float], min_visibility: float) -> Tuple[Dict[str, Any], Optional[pa.Table], Optional[TargetConfig]]:
        """The label column's class maps (or the targets' class selection), the label
        column's scan made for them, and the targets' configuration."""
        self.classes: Optional[List[str]] = None
        config = None
        if self.target_spec is not None:
            config = target_config(self.permutation, self.target_spec, classes, output == "detection", mask_fill,
                                   min_area, min_visibility)
            self.classes = config.selection.classes if config.selection is not None else None
            if drop:
                self.permutation = drop_empty(self.permutation, self.target_spec, config.selection)
                self.dataset = self.permutation
            class_maps: Dict[str, Any] = {}
            table = None
        else:
            if drop:
                raise ValueError("drop_empty=True drops images without boxes: it needs targets (a box column)")
            if self.label_column is None and classes is not None:
                raise ValueError(
                    f"classes= was given but there is no label column to map (label_column={label_column!r}, "
                    f"columns {self.columns})"
                )
            class_maps, self.classes, table = resolve_classes(self.permutation, self.label_column, classes)
        self.class_to_idx: Optional[Dict[str, int]] = None if self.classes is None else {c: i for i, c in enumerate(self.classes)}
        return class_maps, table, config

    def _plan(self, plan: TransformPlan, normalize: Optional[NormalizeArg], channels_last: bool, normalize_dtype: str,
              targets: Optional[TargetConfig]) -> Tuple[TransformPlan, Optional[Normalize]]:
        """The normalisation the stage does: ``normalize=``, or the plan's output steps
        where they amount to it (one pass, on the GPU with ``device="cuda"``). With
        targets, the normalisation is done per image instead."""
        as_normalize = plan.as_normalize()
        if as_normalize is not None:
            if normalize is not None:
                raise ValueError("the transform ends in ToTensor/ToDtype/Normalize and normalize= is given too: give one of them")
            normalize, normalize_dtype = as_normalize[:2], as_normalize[2]
            plan = plan.without_output()
        norm = Normalize.of(normalize, CHANNELS[self.mode], channels_last, normalize_dtype)
        if not plan.runs_in_core and norm is not None:
            raise ValueError("normalize= with a transform that runs per sample in Python: end the transform with ToTensor and Normalize instead")
        if targets is not None and plan.albumentations is not None:
            a = plan.albumentations
            if a.box_format is not None and (targets.min_area is not None or targets.min_visibility):
                raise ValueError(
                    f"min_area={targets.min_area} and min_visibility={targets.min_visibility} filter boxes, and so does the "
                    "Compose's bbox_params: give the filters in A.BboxParams (min_area, min_visibility) only")
        elif targets is not None:
            if norm is not None:
                # Per image (sizes may differ): ToDtype + Normalize as output steps.
                plan = plan.with_output([OutputStep(dtype=norm.dtype, scale=True), OutputStep(mean=tuple(norm.mean), std=tuple(norm.std))])
                norm = None
        return plan, norm

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
        return self._cursor.batches()

    @property
    def epoch(self) -> int:
        """The epoch of the next iteration (or of the running one, when none is set)."""
        return self._cursor.epoch

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next iteration (as ``DistributedSampler.set_epoch``).

        Setting the epoch a loaded state resumes in keeps the resume point.

        Example:
            >>> for epoch in range(3):  # doctest: +SKIP
            ...     loader.set_epoch(epoch)
            ...     for images, labels in loader: ...
        """
        self._cursor.set_epoch(epoch)

    # -- resume -------------------------------------------------------------------

    def state_dict(self) -> Dict[str, Any]:
        """Where the loader stands: epoch, seed and batches handed out in that epoch.

        Example:
            >>> state = loader.state_dict()  # doctest: +SKIP
            >>> fresh = DataLoader(uri, 64, shuffle=True); fresh.load_state_dict(state)  # doctest: +SKIP
        """
        state = self._cursor.state()
        return {
            "epoch": state["epoch"],
            "batches_consumed": state["batches_consumed"],
            "seed": self.seed,
            "shuffle": self.shuffle,
            "shuffle_clump_size": self.shuffle_clump_size,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "world_size": self.world_size,
            "num_samples": len(self.permutation),
            "dataset_version": self.permutation.version,
            "history": state["history"],
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
        missing = [k for k in STATE_KEYS if k not in state]
        if missing:
            raise ValueError(f"not a lancefeed DataLoader state: missing {missing}; got keys {sorted(state)}")
        mine = self.state_dict()
        for key in ("shuffle", "shuffle_clump_size", "num_samples"):
            if key in state and state[key] != mine[key]:
                raise ValueError(
                    f"cannot resume: the state was saved with {key}={state[key]!r} but this loader has "
                    f"{key}={mine[key]!r}; the epoch would be another one"
                )
        self._cursor.load(state)
        self.seed = int(state["seed"])
        self._maker.settings.seed = self.seed

    # -- iteration ----------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        # The device is resolved here, in the thread that starts the pass (see DeviceFeed).
        return self.iterate(self._feed.stage() if self._feed is not None else CpuStage(self.normalize))

    def batches_are_images(self) -> bool:
        """Whether each batch's images come as one uint8 batch a stage may normalize (the
        transform runs in the core, without targets), not a slow-path tensor or a list
        with targets.

        Example:
            >>> DataLoader("cifar.lance", 256).batches_are_images()  # doctest: +SKIP
            True
        """
        return self.plan.runs_in_core and self.target_spec is None

    def iterate(self, stage: Any) -> LoaderIterator:
        """An iterator over the next epoch, delivering through ``stage`` (the CPU's, or a
        :class:`lancefeed.CudaPrefetcher`'s); it starts lazily, at its first ``next()``.

        Example:
            >>> it = loader.iterate(CpuStage(None))  # what iter(loader) does on the CPU  # doctest: +SKIP
        """
        return LoaderIterator(lambda: self._start(stage), stage, self._shape_output, lambda: len(self))

    def _start(self, stage: Any) -> Tuple[Pipeline[Any, Any, Any], Progress]:
        """Fix the epoch and resume point, and start its pipeline."""
        epoch, start, history = self._cursor.start()
        plan = plan_epoch(
            len(self.permutation), batch_size=self.batch_size, shuffle=self.shuffle, seed=self.seed, epoch=epoch,
            rank=self.rank, world_size=self.world_size, drop_last=self.drop_last, start_batch=start, history=history,
            clump_size=self.shuffle_clump_size, order=mix_order(self.permutation, epoch, self.shuffle),
        )
        progress = Progress(epoch, start, len(plan), history)
        self._cursor.progress = progress
        self._maker.reader.use_scan = self._uses_scan()
        run = EpochRun(self._maker, plan, epoch, stage, self._meter, self.permutation.uri)
        return run.pipeline(start, self.batch_size, self.prefetch, self.io_threads), progress

    def _uses_scan(self) -> bool:
        """Whether this epoch's positions are in storage order (unshuffled, over the
        whole dataset): then contiguous positions may be read by scans."""
        if self.shuffle or is_mix(self.permutation):
            return False
        if self._scannable is None:
            self._scannable = in_storage_order(self._maker.reader.take_perm)
        return self._scannable

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


def resolve_pixel_cache(pixel_cache: Union[bool, str], maker: BatchMaker, rows: int, mode: str) -> Optional[_core.PixelCache]:
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


