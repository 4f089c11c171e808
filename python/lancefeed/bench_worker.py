"""Moved to :mod:`lancefeed.bench.worker` and :mod:`lancefeed.bench.peers`; this name
stays only because tests/test_image_columns.py imports it (remove it once that does
``from lancefeed.bench.peers.take_pillow import SeedsTakeDataset``).

Example:
    >>> from lancefeed.bench_worker import SeedsTakeDataset, export_files  # doctest: +SKIP
"""

from lancefeed.bench.peers._common import export_files
from lancefeed.bench.peers.take_pillow import SeedsTakeDataset
from lancefeed.bench.protocol import TAG

__all__ = ["SeedsTakeDataset", "TAG", "export_files"]
