"""Turn image folders and COCO annotation files into Lance datasets.

- :mod:`~lancefeed.ingest.folder`, :mod:`~lancefeed.ingest.coco`: the two sources;
- :mod:`~lancefeed.ingest.common`: schemas, items, the reader threads;
- :mod:`~lancefeed.ingest.options`: :class:`IngestOptions`, shared by both and the CLI;
- :mod:`~lancefeed.ingest.files`: local or object store source paths;
- :mod:`~lancefeed.ingest.engines`: this machine's threads or Ray;
- :mod:`~lancefeed.ingest.writer`: the batches and the commits;
- :mod:`~lancefeed.ingest.ray_engine`: the ingest as Ray Data tasks, committed once;
- :mod:`~lancefeed.ingest.resume`: interrupted ingests;
- :mod:`~lancefeed.ingest.masks`: COCO segmentations as label masks.

Files are read on a thread pool and written to Lance as a stream of record
batches, so memory stays bounded (about ``batch_size`` files per batch, a few
batches in flight) whatever the size of the dataset. Each file's header is
parsed with :func:`lancefeed.image_info`, which both validates the file and gives
``width``/``height`` without decoding the pixels.

Example:
    >>> import lancefeed
    >>> summary = lancefeed.ingest_folder("cifar10/", "cifar10.lance")  # doctest: +SKIP
    >>> summary.rows, len(summary.skipped)  # doctest: +SKIP
    (60000, 0)

Interrupted ingests. An ingest commits every ``commit_every`` files (a Lance
``write_dataset`` per chunk, so each chunk is a dataset version of its own): a
killed ingest loses at most the chunk in progress. Each chunk's commit carries, in
its Lance transaction properties (key ``lancefeed.ingest``), a JSON record of the
source, the options that shape the rows, how many files (in ingest order) are
committed and a digest of their names. ``resume=True`` reads the latest record and
continues after it; it refuses when the source or the options differ.

    >>> lancefeed.ingest_folder("imagenet/train/", "in.lance", resume=True)  # doctest: +SKIP
"""

from lancefeed.ingest.coco import ingest_coco, ingest_coco_with
from lancefeed.ingest.common import COCO_SCHEMA, FOLDER_SCHEMA, IMAGE_FIELD, MASK_FIELD, IngestError, IngestSummary
from lancefeed.ingest.folder import ingest_folder, ingest_folder_with
from lancefeed.ingest.options import COMMIT_EVERY, IngestOptions

__all__ = [
    "COCO_SCHEMA", "COMMIT_EVERY", "FOLDER_SCHEMA", "IMAGE_FIELD", "MASK_FIELD", "IngestError", "IngestOptions",
    "IngestSummary", "ingest_coco", "ingest_coco_with", "ingest_folder", "ingest_folder_with",
]
