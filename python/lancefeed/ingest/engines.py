"""Which engine runs an ingest: this machine's threads (:mod:`lancefeed.ingest.writer`)
or Ray Data tasks on a cluster (:mod:`lancefeed.ingest.ray_engine`). Both take the same
listing, schema, resume record and options, and read every file with the same per-row
function (:func:`lancefeed.ingest.common.load`), so their rows cannot drift apart.

Example:
    >>> summary = run_engine(listing, "out.lance", FOLDER_SCHEMA, record, IngestOptions(engine="ray"),
    ...                      root=Path("."), desc="ingest")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Dict

import pyarrow as pa

from lancefeed.ingest.common import IngestSummary, Listing
from lancefeed.ingest.options import IngestOptions
from lancefeed.ingest.writer import run

__all__ = ["run_engine"]


def run_engine(listing: Listing, uri: str, schema: pa.Schema, record: Dict[str, Any], opts: IngestOptions, *,
               root: Any, desc: str) -> IngestSummary:
    """Ingest ``listing`` into ``uri`` on ``opts.engine``.

    Example:
        >>> run_engine(Listing.of([]), "empty.lance", FOLDER_SCHEMA, {"source": {}, "options": {}},
        ...            IngestOptions(progress=False), root=".", desc="ingest")  # doctest: +SKIP
    """
    if opts.engine == "ray":
        # Imported here: Ray is an optional dependency, and its import costs a second.
        from lancefeed.ingest.ray_engine import run_on_ray

        return run_on_ray(listing, uri, schema, record, opts, root=root, desc=desc)
    return run(listing.items(), uri, schema, record, opts, root=root, desc=desc)
