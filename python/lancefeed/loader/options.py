"""The DataLoader's arguments, checked once, and what they resolve to: the source as a
permutation, the columns, the rank and world size, the device.

Example:
    >>> resolve_rank(None, None)
    (0, 1)
    >>> check_arguments(batch_size=0)
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be a positive integer, got 0
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import lance
import numpy as np
import pyarrow as pa
import torch

import lancefeed.loader.backends as backends
from lancefeed.columns import image_column_kind
from lancefeed.loader.ray_train import ray_train_rank
from lancefeed.permutation import Permutation
from lancefeed.permutation.mix import Mix

__all__ = [
    "CHANNELS",
    "SourceLike",
    "as_permutation",
    "check_arguments",
    "check_image_column",
    "resolve_columns",
    "resolve_device",
    "resolve_rank",
]

SourceLike = Union[str, "os.PathLike[str]", lance.LanceDataset, Permutation, Mix]
CHANNELS = {"RGB": 3, "L": 1}


def _positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1


def check_arguments(*, batch_size: Any = 1, seed: Any = 0, on_error: str = "raise", truncated: str = "error",
                    output: str = "tuple", prefetch: Any = 2, io_threads: Any = None, shuffle: bool = False,
                    shuffle_clump_size: Any = None, log_every: Any = None, mode: str = "RGB") -> None:
    """Raise ``ValueError`` naming the first argument of a DataLoader that is wrong and
    what it takes.

    Example:
        >>> check_arguments(on_error="ignore")
        Traceback (most recent call last):
        ...
        ValueError: on_error must be 'raise' or 'skip', got 'ignore'
    """
    if not _positive_int(batch_size):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if truncated not in ("error", "pad"):
        raise ValueError(f"truncated must be 'error' or 'pad', got {truncated!r}")
    if output not in ("tuple", "dict", "detection"):
        raise ValueError(f"output must be 'tuple', 'dict' or 'detection', got {output!r}")
    if int(prefetch) < 1:
        raise ValueError(f"prefetch must be at least 1, got {prefetch!r}")
    if io_threads is not None and int(io_threads) < 1:
        raise ValueError(f"io_threads must be at least 1 (or None: self-sized), got {io_threads!r}")
    if shuffle_clump_size is not None:
        if not _positive_int(shuffle_clump_size):
            raise ValueError(f"shuffle_clump_size must be a positive integer (or None), got {shuffle_clump_size!r}")
        if not shuffle:
            raise ValueError("shuffle_clump_size= shuffles clumps of rows: it needs shuffle=True")
    if log_every is not None and not float(log_every) > 0:
        raise ValueError(f"log_every must be a positive number of seconds (or None: off), got {log_every!r}")
    if mode not in CHANNELS:
        raise ValueError(f"mode must be one of {sorted(CHANNELS)}, got {mode!r}")


def as_permutation(source: SourceLike, version: Union[None, int, str],
                   storage_options: Optional[Dict[str, str]]) -> Permutation:
    """The loader's source as a :class:`lancefeed.Permutation`: a URI or dataset at
    ``version`` (every row, in dataset order), or a permutation as it is (pinned already,
    opening its dataset with the options it was built with); a mix
    (:func:`lancefeed.mix`) as it is too.

    Example:
        >>> as_permutation("cifar.lance", None, None).num_rows  # doctest: +SKIP
        50000
    """
    if isinstance(source, (Permutation, Mix)):
        kind = type(source).__name__
        if version is not None:
            raise ValueError(f"version= applies to a URI or a LanceDataset; a {kind} is already pinned")
        if storage_options is not None:
            datasets = "dataset" if kind == "Permutation" else "datasets"
            raise ValueError(
                f"storage_options= applies to a URI or a LanceDataset; a {kind} opens its {datasets} with the "
                "options it was built with: pass them to Permutation.identity/from_tables"
            )
        return source
    if isinstance(source, (str, os.PathLike, lance.LanceDataset)):
        return Permutation.identity(source, version=version, storage_options=storage_options)
    raise TypeError(
        f"source must be a URI, a lance.LanceDataset, a lancefeed.Permutation or a lancefeed.mix, got {type(source).__name__}"
    )


def resolve_columns(perm: Permutation, image_column: str, label_column: Optional[str],
                    columns: Optional[Sequence[str]], output: str) -> List[str]:
    """The columns a batch holds, image column first: ``columns`` as given, else all of
    them (``output="dict"``) or the image and label columns.

    Example:
        >>> resolve_columns(perm, "image", "label", None, "tuple")  # doctest: +SKIP
        ['image', 'label']
    """
    available = perm.columns
    if isinstance(columns, str):
        columns = [columns]
    if columns is None:
        if output == "dict":
            chosen = list(available)
        else:
            has_label = label_column and label_column != image_column and label_column in available
            chosen = [image_column] + ([label_column] if has_label else [])
    else:
        chosen = list(columns)
        if image_column not in chosen:
            chosen.insert(0, image_column)
    dupes = sorted({c for c in chosen if chosen.count(c) > 1})
    if dupes:
        raise ValueError(f"columns must be distinct; repeated: {dupes}")
    missing = [c for c in chosen if c not in available]
    if missing:
        what = "image column" if missing == [image_column] else "columns"
        raise ValueError(f"{what} {missing} not in the dataset; available columns: {available}")
    return chosen


def check_image_column(schema: pa.Schema, image_column: str) -> None:
    """Refuse, at construction, an image column no batch could be decoded from
    (``ImageColumnTypeError``: a ``ValueError`` and a ``TypeError``, naming the type
    and the supported ones)."""
    image_column_kind(schema.field(image_column), image_column)


def resolve_rank(rank: Optional[int], world_size: Optional[int]) -> Tuple[int, int]:
    """(rank, world size): as given, else torch.distributed's when it is initialized,
    else a Ray Train worker's (lancefeed.loader.ray_train), else (0, 1)."""
    if rank is None and world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank()), int(dist.get_world_size())
        return ray_train_rank() or (0, 1)
    if rank is None or world_size is None:
        raise ValueError(
            f"pass both rank and world_size (got rank={rank!r}, world_size={world_size!r}), "
            "or neither to take them from torch.distributed"
        )
    if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
        raise ValueError(f"rank must be in 0..world_size-1 and world_size >= 1, got rank={rank}, world_size={world_size}")
    return int(rank), int(world_size)


def resolve_device(device: Union[None, str, torch.device]) -> Optional[torch.device]:
    """The device batches go to (None: CPU tensors); CUDA must be there."""
    if device is None:
        return None
    dev = torch.device(device)
    if dev.type == "cuda" and not backends.default_cuda().is_available():
        raise RuntimeError(
            f"device={str(device)!r} but CUDA is not available (torch {torch.__version__}, "
            f"built with CUDA {torch.version.cuda}, no GPU visible); use device=None for CPU tensors"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be None, 'cpu' or 'cuda[:N]', got {str(device)!r}")
    return dev
