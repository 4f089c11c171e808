"""lancefeed: feed image training data from Lance datasets to PyTorch.

The decode core (``lancefeed._core``) is always imported; the modules that pull in
pylance, torch or matplotlib are imported on first use, so ``import lancefeed``
stays cheap.

Example:
    >>> import lancefeed
    >>> loader = lancefeed.DataLoader("cifar.lance", batch_size=256, shuffle=True,
    ...                               transform=lancefeed.RandomHorizontalFlip())  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lancefeed._core import DecodeError, PixelCache, SizeMismatchError, decode_image, image_info
from lancefeed.decode import BatchInfo, decode_batch, decode_targets
from lancefeed import transforms
from lancefeed.transforms import *  # noqa: F403 - transforms.__all__, listed once there

__version__ = "0.1.0"

# name -> module that defines it; resolved lazily by __getattr__ below.
_LAZY = {
    "permutation_builder": "lancefeed.permutation",
    "PermutationBuilder": "lancefeed.permutation",
    "Permutation": "lancefeed.permutation",
    "Permutations": "lancefeed.permutation",
    "mix": "lancefeed.permutation",
    "open_source": "lancefeed.source",
    "DataLoader": "lancefeed.loader",
    "CudaPrefetcher": "lancefeed.loader.cuda",
    "ingest_folder": "lancefeed.ingest",
    "ingest_coco": "lancefeed.ingest",
    "IngestSummary": "lancefeed.ingest",
    "IngestError": "lancefeed.ingest",
    "add_restart_index": "lancefeed.restart",
    "index_dataset": "lancefeed.restart",
    "LoaderStats": "lancefeed.loader",
    "optimize": "lancefeed.optimizer",
    "OptimizeSummary": "lancefeed.optimizer",
    "save_loader_state": "lancefeed.loader.ray_train",
    "load_loader_state": "lancefeed.loader.ray_train",
}

if TYPE_CHECKING:
    from lancefeed.loader.cuda import CudaPrefetcher
    from lancefeed.ingest import IngestError, IngestSummary, ingest_coco, ingest_folder
    from lancefeed.loader import DataLoader, LoaderStats
    from lancefeed.restart import add_restart_index, index_dataset
    from lancefeed.permutation import Permutation, PermutationBuilder, Permutations, mix, permutation_builder
    from lancefeed.source import open_source
    from lancefeed.optimizer import OptimizeSummary, optimize
    from lancefeed.loader.ray_train import load_loader_state, save_loader_state


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lancefeed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    *transforms.__all__,
    "BatchInfo",
    "CudaPrefetcher",
    "DataLoader",
    "DecodeError",
    "IngestError",
    "IngestSummary",
    "LoaderStats",
    "OptimizeSummary",
    "Permutation",
    "PermutationBuilder",
    "Permutations",
    "PixelCache",
    "SizeMismatchError",
    "add_restart_index",
    "decode_batch",
    "decode_targets",
    "decode_image",
    "image_info",
    "index_dataset",
    "ingest_coco",
    "ingest_folder",
    "load_loader_state",
    "mix",
    "open_source",
    "optimize",
    "permutation_builder",
    "save_loader_state",
]
