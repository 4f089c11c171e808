"""The examples in the modules' docstrings run as written."""

from __future__ import annotations

import doctest
import importlib
import inspect
import types

import pytest

MODULES = [
    "lancefeed.bench.harness",
    "lancefeed.bench.options",
    "lancefeed.bench.results",
    "lancefeed.cli",
    "lancefeed.columns",
    "lancefeed.decode",
    "lancefeed.decode.core",
    "lancefeed.boxes",
    "lancefeed.ingest.common",
    "lancefeed.ingest.files",
    "lancefeed.ingest.ray_engine",
    "lancefeed.ingest.writer",
    "lancefeed.cluster",
    "lancefeed.ledger",
    "lancefeed.optimizer.report",
    "lancefeed.loader.ray_train",
    "lancefeed.ingest.masks",
    "lancefeed.ingest.options",
    "lancefeed.ingest.resume",
    "lancefeed.loader.backends",
    "lancefeed.loader.cuda",
    "lancefeed.loader.epoch",
    "lancefeed.loader.options",
    "lancefeed.loader.state",
    "lancefeed.reads.cache",
    "lancefeed.reads.lance_file",
    "lancefeed.transforms.plan",
    "lancefeed.transforms.slow",
    "lancefeed.permutation.formats",
    "lancefeed.permutation.interop",
    "lancefeed.permutation.mix",
    "lancefeed.loader.mixing",
    "lancefeed.reads.mixed",
    "lancefeed.restart",
    "lancefeed.loader.sampler",
    "lancefeed.permutation.splits",
    "lancefeed.loader.targets",
    "lancefeed.transforms.detection",
    "lancefeed.transforms.compose",
    "lancefeed.transforms.geometric",
    "lancefeed.transforms.photometric",
    "lancefeed.transforms.policies",
    "lancefeed.transforms.torchvision",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def _undocumented(namespace: object, names: list[str]) -> list[str]:
    return [n for n in names if ">>>" not in (inspect.getdoc(getattr(namespace, n)) or "")]


def test_every_top_level_name_shows_an_example():
    import lancefeed

    names = [n for n in lancefeed.__all__ if callable(getattr(lancefeed, n))]
    assert len(names) > 40 and _undocumented(lancefeed, names) == []

    def shown():
        """Example:
        >>> 1
        1
        """

    def told():
        """No example."""

    ns = types.SimpleNamespace(shown=shown, told=told)
    assert _undocumented(ns, ["shown", "told"]) == ["told"]  # the check can fail
