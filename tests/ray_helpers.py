"""What test_ray.py's Ray workers run: functions they import by name (this folder is on
their PYTHONPATH), kept apart from the test module so a worker imports no pytest.

Example:
    >>> items = make_items(Path(tempfile.mkdtemp()), 3)  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
from PIL import Image

import lancefeed
from lancefeed.ingest.common import Item
from lancefeed.ingest.options import IngestOptions


def jpeg(seed: int, size: tuple = (24, 16), **kw: Any) -> bytes:
    """A noisy JPEG of ``size`` (width, height)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG", **kw)
    return buf.getvalue()


def crash_once(marker: str, width: int, height: int) -> Dict[str, Any]:
    """A row's ``derive`` that kills its worker process the first time it runs anywhere
    (the marker file, on the disk every local worker shares, says it did)."""
    if not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)
    return {}


def slow(seconds: float, width: int, height: int) -> Dict[str, Any]:
    """A row's ``derive`` that takes ``seconds``: an ingest long enough to be killed."""
    time.sleep(seconds)
    return {}


def make_items(root: Any, n: int, derive: Any = None, every: bool = False) -> List[Item]:
    """``n`` JPEGs written under ``root`` and their items (``derive`` on the middle one,
    or on ``every`` one)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        path = root / f"{i:03d}.jpg"
        if not path.exists():
            path.write_bytes(jpeg(i))
        items.append(Item(path, {"filename": path.name, "label": "x", "split": None},
                          derive if every or i == n // 2 else None))
    return items


def record(name: str) -> Dict[str, Any]:
    """A folder ingest's resume record for source ``name``."""
    return {"source": {"kind": "folder", "root": name, "masks": None}, "options": IngestOptions().recorded()}


def train_loop(config: Dict[str, Any]) -> None:
    """A Ray Train worker: ``passes`` passes over the loader, the last cut after
    ``stop_after`` batches; writes the sample ids it saw and reports the loader's state
    in a checkpoint."""
    import ray.train

    context = ray.train.get_context()
    loader = lancefeed.DataLoader(config["uri"], 4, shuffle=True, seed=7)
    assert (loader.rank, loader.world_size) == (context.get_world_rank(), context.get_world_size())
    resumed = lancefeed.load_loader_state(loader)
    seen: List[int] = []
    for epoch_pass in range(config["passes"]):
        for step, (_images, labels) in enumerate(loader):
            seen += labels.tolist()
            if epoch_pass == config["passes"] - 1 and step + 1 == config["stop_after"]:
                break
    out = Path(config["out"], f"{config['tag']}-rank{loader.rank}.json")
    out.write_text(json.dumps({"seen": seen, "resumed": resumed}))
    with tempfile.TemporaryDirectory() as d:
        lancefeed.save_loader_state(loader, d)
        ray.train.report({"seen": len(seen)}, checkpoint=ray.train.Checkpoint.from_directory(d))
