"""``lancefeed.DataLoader``: a drop-in for torch's ``DataLoader`` over a Lance dataset.

- :mod:`~lancefeed.loader.dataloader`: the DataLoader (arguments, epochs, resume);
- :mod:`~lancefeed.loader.epoch`: one epoch's reads and decodes, and its iterator;
- :mod:`~lancefeed.loader.options`: its arguments checked and resolved;
- :mod:`~lancefeed.loader.sampler`: each epoch's order and each rank's shard;
- :mod:`~lancefeed.loader.state`: where it stands in its epochs (``state_dict``);
- :mod:`~lancefeed.loader.pipeline`: the threads that read ahead and decode;
- :mod:`~lancefeed.loader.batches`: rows into batches through the transform plan;
- :mod:`~lancefeed.loader.labels`, :mod:`~lancefeed.loader.targets`: labels, boxes, masks;
- :mod:`~lancefeed.loader.staging`, :mod:`~lancefeed.loader.cuda`: where batches go.

The rows come from :class:`lancefeed.reads.RowReader`, the pixels from
:mod:`lancefeed.decode`.

Example:
    >>> from lancefeed.loader import DataLoader
    >>> loader = DataLoader("cifar.lance", 256, shuffle=True)  # doctest: +SKIP
"""

from lancefeed.loader.dataloader import DataLoader, LoaderStats
from lancefeed.loader.epoch import LoaderIterator

__all__ = ["DataLoader", "LoaderIterator", "LoaderStats"]
