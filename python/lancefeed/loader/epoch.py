"""One epoch of a :class:`~lancefeed.loader.DataLoader`: its reads and decodes wired
into a :class:`~lancefeed.loader.pipeline.Pipeline` (:class:`EpochRun`), and the
iterator a training loop holds (:class:`LoaderIterator`).

Example:
    >>> it = iter(loader)  # a LoaderIterator; its epoch starts at the first next()  # doctest: +SKIP
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from lancefeed.loader.batches import BatchMaker
from lancefeed.loader.pipeline import Meter, Pipeline
from lancefeed.loader.sampler import EpochPlan
from lancefeed.loader.state import Progress
from lancefeed.reads.take import reworded

__all__ = ["EpochRun", "LoaderIterator", "SamplerShim"]

Fetched = Tuple[pa.RecordBatch, np.ndarray, List[np.ndarray]]


class EpochRun:
    """The reads and decodes of one epoch's batches (``plan``), delivered through ``stage``.

    Example:
        >>> run = EpochRun(maker, plan, epoch=0, stage=CpuStage(None), meter=meter, uri=uri)  # doctest: +SKIP
        >>> batches = run.pipeline(start=0, batch_size=64, prefetch=2, io_threads=None)  # doctest: +SKIP
    """

    def __init__(self, maker: BatchMaker, plan: EpochPlan, epoch: int, stage: Any, meter: Meter, uri: str) -> None:
        self.maker = maker
        self.plan = plan
        self.epoch = epoch
        self.stage = stage
        self.meter = meter
        self.uri = uri

    def pipeline(self, start: int, batch_size: int, prefetch: int, io_threads: Optional[int]) -> Pipeline[Any, Any, Any]:
        """Batches ``start`` onwards: reads run ahead on I/O threads, each a take of
        one or more consecutive batches; decodes follow in order."""
        # One take feeds `group` consecutive batches: Lance's cost per row drops with
        # bigger takes (small images), while a take stays under TAKE_BYTES.
        group = self.maker.reader.batches_per_take(batch_size)
        n = len(self.plan)
        keys = [range(k, min(k + group, n)) for k in range(start, n, group)]
        depth = None if io_threads is None else prefetch + io_threads
        return Pipeline(keys, self.fetch, self.process, prefetch=prefetch, io_threads=io_threads, depth=depth, meter=self.meter)

    def fetch(self, batches: range) -> Fetched:
        """The rows of ``batches`` (on an I/O thread)."""
        parts = [self.plan.batch(k) for k in batches]
        positions = parts[0] if len(parts) == 1 else np.concatenate(parts)
        try:
            rows, order, nbytes = self.maker.reader.take(positions)
        except (OSError, ValueError) as exc:  # Lance's I/O errors name the HTTP request, not the dataset
            raise read_error(self.uri, batches, exc) from exc
        self.meter.add_bytes(nbytes)
        return rows, order, parts

    def process(self, batches: range, fetched: Fetched) -> Iterator[Any]:
        """The decoded batches of what :meth:`fetch` read, in order."""
        rows, order, parts = fetched
        if self.maker.joins(parts, self.stage):
            yield from self.maker.build_joint(rows, order, parts, self.epoch, self.stage)
        else:
            yield from self.maker.build_each(rows, order, parts, self.epoch, self.stage)


def read_error(uri: str, batches: range, exc: BaseException) -> BaseException:
    """``exc`` with the dataset URI and the batches in its message, same type where it
    can be made (so ``except OSError`` still catches it).

    Example:
        >>> read_error("s3://b/d.lance", range(4, 6), OSError("HTTP 503"))
        OSError("reading 's3://b/d.lance' (batches 4..5 of the epoch): HTTP 503")
    """
    return reworded(exc, f"reading {uri!r} (batches {batches.start}..{batches.stop - 1} of the epoch): {exc}")


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

    def __init__(
        self,
        start: Callable[[], Tuple[Pipeline[Any, Any, Any], Progress]],
        stage: Any,
        shape: Callable[[Any, Dict[str, Any]], Any],
        length: Callable[[], int],
    ) -> None:
        self._start = start
        self._stage = stage
        self._shape = shape
        self._length = length
        self._pipeline: Optional[Pipeline[Any, Any, Any]] = None
        self._progress: Optional[Progress] = None
        self._closed = False

    def __iter__(self) -> "LoaderIterator":
        return self

    def __next__(self) -> Any:
        if self._pipeline is None:
            if self._closed:
                raise StopIteration
            self._pipeline, self._progress = self._start()
        images, columns = self._stage.deliver(next(self._pipeline))
        assert self._progress is not None
        self._progress.consumed += 1
        return self._shape(images, columns)

    def __len__(self) -> int:
        return self._progress.total if self._progress is not None else self._length()

    def close(self) -> None:
        """Stop the background threads now (also done when the iterator is dropped)."""
        self._closed = True
        if self._pipeline is not None:
            self._pipeline.close()


class SamplerShim:
    """``loader.sampler``: lets PyTorch Lightning call ``set_epoch`` as on a sampler.

    Example:
        >>> loader.sampler.set_epoch(3); loader.epoch  # doctest: +SKIP
        3
    """

    def __init__(self, loader: Any) -> None:
        self._loader = weakref.ref(loader)

    def set_epoch(self, epoch: int) -> None:
        loader = self._loader()
        if loader is not None:
            loader.set_epoch(epoch)
