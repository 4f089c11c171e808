"""The lines a worker process writes on stdout for the harness to follow: each starts
with :data:`TAG`, then one JSON event (see :mod:`lancefeed.bench.worker`).

Its own module so that the harness can read the protocol without importing the
worker module (``python -m lancefeed.bench.worker`` warns when its module was
already imported by its package).

Example:
    >>> parse(TAG + '{"event": "ready"}')
    {'event': 'ready'}
    >>> parse("some log line") is None
    True
"""

from __future__ import annotations

import json
import sys
from typing import Any

TAG = "@@lancefeed-bench "


def emit(event: str, **fields: Any) -> None:
    """Write one event line and flush it (the harness times events as they arrive)."""
    sys.stdout.write(TAG + json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def parse(line: str) -> dict[str, Any] | None:
    """The event of a protocol line, or None for any other output."""
    return json.loads(line[len(TAG) :]) if line.startswith(TAG) else None
