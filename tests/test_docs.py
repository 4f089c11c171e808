"""The examples in the modules' docstrings run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "lancefeed.bench.options",
    "lancefeed.bench.results",
    "lancefeed.columns",
    "lancefeed.decode",
    "lancefeed.decode.core",
    "lancefeed.boxes",
    "lancefeed.ingest.common",
    "lancefeed.ingest.masks",
    "lancefeed.ingest.options",
    "lancefeed.ingest.resume",
    "lancefeed.loader.options",
    "lancefeed.loader.state",
    "lancefeed.reads.cache",
    "lancefeed.reads.lance_file",
    "lancefeed.transforms.plan",
    "lancefeed.transforms.slow",
    "lancefeed.permutation.formats",
    "lancefeed.permutation.interop",
    "lancefeed.restart",
    "lancefeed.loader.sampler",
    "lancefeed.permutation.splits",
    "lancefeed.loader.targets",
    "lancefeed.transforms.detection",
    "lancefeed.transforms.compose",
    "lancefeed.transforms.geometric",
    "lancefeed.transforms.photometric",
    "lancefeed.transforms.policies",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
