"""``lancefeed.DataLoader`` inside Ray Train: the rank and world size of the worker
group, and the loader's state in Ray's checkpoints.

A ``TorchTrainer`` worker has torch.distributed initialised, which the loader reads
first; a worker of another Ray trainer has only Ray's train context, read here. The
loader's state is the same on every rank (it is global: epoch, seed, the batches
handed out), so every rank writes the same file into its checkpoint folder and Ray's
merge of the ranks' folders keeps one. A run restored on another number of workers
loads it on every rank and re-shards the rest of the epoch (see
:meth:`lancefeed.DataLoader.load_state_dict`).

Example:
    >>> def train_loop(config):  # doctest: +SKIP
    ...     loader = lancefeed.DataLoader(config["uri"], 64, shuffle=True)  # rank from Ray
    ...     load_loader_state(loader)                  # from ray.train.get_checkpoint(), if any
    ...     for step, (images, labels) in enumerate(loader):
    ...         ...
    ...         with tempfile.TemporaryDirectory() as d:
    ...             save_loader_state(loader, d)
    ...             ray.train.report({"step": step}, checkpoint=ray.train.Checkpoint.from_directory(d))
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional, Tuple

__all__ = ["STATE_FILE", "load_loader_state", "ray_train_rank", "save_loader_state"]

# The loader's state in a checkpoint folder.
STATE_FILE = "lancefeed_loader.json"


def ray_train_rank() -> Optional[Tuple[int, int]]:
    """(world rank, world size) of this Ray Train worker, or None outside one. Ray is
    not imported for this: a process that did not import ``ray.train`` is no worker.

    Example:
        >>> ray_train_rank() is None or len(ray_train_rank()) == 2
        True
    """
    train = sys.modules.get("ray.train")
    if train is None:
        return None
    try:
        context = train.get_context()
        return int(context.get_world_rank()), int(context.get_world_size())
    except (RuntimeError, ValueError, AttributeError):  # the driver, or another process
        return None


def save_loader_state(loader: Any, directory: str) -> str:
    """Write ``loader.state_dict()`` into ``directory`` (a checkpoint's folder, before
    ``ray.train.report``); returns the file's path.

    Example:
        >>> save_loader_state(loader, "ckpt/")  # doctest: +SKIP
        'ckpt/lancefeed_loader.json'
    """
    path = os.path.join(directory, STATE_FILE)
    with open(path, "w") as f:
        json.dump(loader.state_dict(), f)
    return path


def load_loader_state(loader: Any, checkpoint: Any = None) -> bool:
    """Continue ``loader`` from the state saved in ``checkpoint`` (a
    ``ray.train.Checkpoint``, or a folder; default: ``ray.train.get_checkpoint()``, the
    run's latest). False when there is none (a fresh run), True when loaded.

    Example:
        >>> load_loader_state(loader)  # in a train loop  # doctest: +SKIP
        True
    """
    if checkpoint is None:
        train = sys.modules.get("ray.train")
        checkpoint = train.get_checkpoint() if train is not None else None
    if checkpoint is None:
        return False
    if hasattr(checkpoint, "as_directory"):  # a Checkpoint (which refuses os.fspath)
        with checkpoint.as_directory() as directory:
            return _load_from(loader, directory)
    return _load_from(loader, os.fspath(checkpoint))


def _load_from(loader: Any, directory: str) -> bool:
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        return False
    with open(path) as f:
        loader.load_state_dict(json.load(f))
    return True
