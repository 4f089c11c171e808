"""The examples (the seeds' training flows) run end to end, tiny, on generated data."""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("torchvision")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture()
def example(monkeypatch, tmp_path):
    # No reference data: the examples generate theirs, so this runs anywhere.
    monkeypatch.setenv("LANCEFEED_DATA", str(tmp_path / "no-data"))
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for name in ("common", "cifar_classifier", "vae", "lightning_gray", "detection"):
        sys.modules.pop(name, None)

    def load(name):
        return importlib.import_module(name)

    return load


def test_cifar_classifier_learns(example, tmp_path):
    accuracy = example("cifar_classifier").main(["--train", "1500", "--test", "300", "--epochs", "2", "--out", str(tmp_path)])
    assert accuracy > 0.3  # ten classes: chance is 0.1


def test_vae_writes_a_grid(example, tmp_path):
    from PIL import Image

    path = example("vae").main(["--train", "512", "--epochs", "1", "--out", str(tmp_path)])
    grid = Image.open(path)
    assert grid.size[0] > 200 and grid.mode == "RGB"


def test_lightning_flow_fits_with_val(example, tmp_path):
    pytest.importorskip("pytorch_lightning")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = example("lightning_gray").main(["--train", "512", "--val", "128", "--epochs", "1", "--out", str(tmp_path)])
    assert "val_accuracy" in metrics and "train_loss" in metrics


def test_detection_trains_faster_rcnn(example, tmp_path):
    import math

    loss = example("detection").main(["--images", "24", "--steps", "2", "--batch-size", "2", "--out", str(tmp_path)])
    assert math.isfinite(loss) and loss > 0
