"""The loaders ``lancefeed bench`` compares, one module per peer.

Every module here has the same three functions:

* ``available() -> (bool, reason)``: whether it can run on this machine, and if not
  why (``"not installed: pip install webdataset"``); cheap, and it imports nothing
  heavy, because the harness calls it in its own process.
* ``convert(spec, dest)``: the one-time conversion of the benchmark's rows into the
  peer's own format under ``dest`` (absent for loaders that read the Lance dataset
  or its image files as they are). The harness times it in a process of its own.
* ``make_loader(spec)``: the loader in its documented best configuration for the
  machine (``spec["workers"]`` processes or ``spec["threads"]`` threads: the cores),
  an iterable of ``(images, labels)`` batches, built but not yet iterated.

:data:`PEERS` lists them. ``baseline`` marks the loaders of the default run (what
``lancefeed bench`` compares without ``--peers``); test hooks are ``hidden``.
Nothing here imports the harness: the harness (and the worker process) import this.

Example:
    >>> from lancefeed.bench.peers import PEERS, availability
    >>> [p.name for p in PEERS.values() if p.baseline][:2]
    ['lancefeed', 'take-pillow']
    >>> availability("_missing")
    (False, 'not installed: pip install lancefeed-no-such-peer (a test hook)')
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

__all__ = ["PEERS", "Peer", "availability", "describe", "load"]


@dataclass(frozen=True)
class Peer:
    """One loader: its name in the results, the module that runs it, a one-line
    description (``{workers}``, ``{threads}`` and ``{pillow}`` are filled in), and
    ``options`` merged into its spec (how two loaders share one module)."""

    name: str
    module: str
    description: str
    baseline: bool = False
    hidden: bool = False
    options: dict[str, Any] = field(default_factory=dict)


_PEERS = [
    Peer("lancefeed", "lancefeed_dataloader", "lancefeed.DataLoader: Rust decode + transform on {threads} threads", True),
    Peer("take-pillow", "take_pillow", "seeds' take([idx]) + Pillow Dataset, torch DataLoader, 0 workers", True,
         options={"workers": 0}),
    Peer("take-pillow-workers", "take_pillow", "seeds' take([idx]) + Pillow Dataset, torch DataLoader, {workers} workers",
         True),
    Peer("lance-torch-pillow", "lance_torch", "lance.torch.data.LanceDataset batches decoded with Pillow (sequential scan)",
         True),
    Peer("imagefolder-pillow", "imagefolder", "{pillow} ImageFolder-style Dataset over files, torch DataLoader, {workers} workers",
         True),
    Peer("torchvision", "torchvision_files", "files, torchvision.io.decode_jpeg + v2 transforms, torch DataLoader, {workers} workers"),
    Peer("ffcv", "ffcv_beton", "FFCV .beton (JPEG), its fused RandomResizedCrop decoder, {workers} threads"),
    Peer("spdl", "spdl_files", "files, spdl.io decode (FFmpeg) with the crop as a filter, {threads} threads"),
    Peer("litdata", "litdata_chunks", "litdata optimize() chunks, StreamingDataLoader, {workers} workers, torchvision v2"),
    Peer("mosaicml-streaming", "mosaic_streaming", "MDS shards, streaming.StreamingDataset, torch DataLoader, {workers} workers"),
    Peer("webdataset", "webdataset_tar", "tar shards, wds.WebDataset + WebLoader, {workers} workers, torchvision v2"),
    Peer("lancedb-permutation", "lancedb_table", "lancedb table, Permutation + torch DataLoader, {workers} workers",
         options={"mode": "permutation"}),
    Peer("lancedb-streaming", "lancedb_table", "lancedb table, lancedb StreamingDataset + torch DataLoader, {workers} workers",
         options={"mode": "streaming"}),
    Peer("dali", "dali_files", "NVIDIA DALI: files, GPU (mixed) decode + random crop, {threads} threads"),
    # Test hooks: a loader that never yields a batch, one that fails, one whose
    # start-up takes ``startup_sleep`` seconds (then yields ``batches`` batches, and
    # hangs after them when ``hang`` is set), and a peer that is never installed.
    Peer("_sleep", "_hooks", "test hook _sleep", hidden=True, options={"hook": "sleep"}),
    Peer("_fail", "_hooks", "test hook _fail", hidden=True, options={"hook": "fail"}),
    Peer("_slow_start", "_hooks", "test hook _slow_start", hidden=True, options={"hook": "slow_start"}),
    Peer("_missing", "_hooks", "test hook _missing: a peer that is not installed", hidden=True,
         options={"hook": "missing"}),
]
PEERS: dict[str, Peer] = {p.name: p for p in _PEERS}


def load(name: str) -> ModuleType:
    """The module that runs loader ``name``.

    Example:
        >>> load("webdataset").__name__
        'lancefeed.bench.peers.webdataset_tar'
    """
    if name not in PEERS:
        known = ", ".join(p.name for p in _PEERS if not p.hidden)
        raise ValueError(f"unknown loader {name!r}; expected some of {known}")
    return importlib.import_module(f"{__name__}.{PEERS[name].module}")


def availability(name: str) -> tuple[bool, str]:
    """``available()`` of loader ``name``'s module, with that peer's options.

    Example:
        >>> availability("lancefeed")
        (True, '')
    """
    module = load(name)
    hook = PEERS[name].options.get("hook")
    return module.available(hook) if hook else module.available()


def describe(name: str, workers: int | str, threads: int | str, pillow: str = "Pillow") -> str:
    """The one-line description of loader ``name`` for ``workers`` and ``threads``.

    Example:
        >>> describe("take-pillow-workers", 2, 2)
        "seeds' take([idx]) + Pillow Dataset, torch DataLoader, 2 workers"
    """
    return PEERS[name].description.format(workers=workers, threads=threads, pillow=pillow)
