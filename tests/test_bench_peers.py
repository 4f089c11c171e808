"""`lancefeed bench --peers`: every installed peer runs on the same rows and reports
its figures; a peer that is not installed is listed as such; `--scale` multiplies rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lancefeed
from lancefeed.bench import PEER_LOADERS, BenchReport, run_bench
from lancefeed.bench.data import write_imagefolder
from lancefeed.bench.peers import availability
from lancefeed.cli import main

ROWS = 24  # small images: each peer's start-up (torch imports) dominates its run
SCALE = 2


@pytest.fixture(scope="module")
def tiny_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("peers")
    folder = write_imagefolder(root / "files", ROWS, kind="cifar-like")
    uri = str(root / "tiny.lance")
    lancefeed.ingest_folder(folder, uri, progress=False)
    return uri


@pytest.fixture(scope="module")
def peers_report(tiny_uri: str, tmp_path_factory: pytest.TempPathFactory) -> BenchReport:
    # One run for the tests below: lancefeed, every peer, and a peer that is never
    # installed. No worker processes (each peer's DataLoader runs in its own process):
    # starting them (lancedb's by forkserver) would take most of the test's time.
    return run_bench(
        tiny_uri,
        loaders=["lancefeed", "_missing"],
        peers=True,
        scale=SCALE,
        batch_size=8,
        workers=0,
        threads=1,
        # Bounds against a hang, not speed: FFCV compiles its pipeline (numba) in its
        # first batch, ~10 s here and many times that on a slow, busy machine.
        timeout=600,
        stall_timeout=300,
        startup_timeout=600,
        out=tmp_path_factory.mktemp("peers-out"),
        progress=False,
    )


def test_installed_peers_run_the_same_rows_with_figures(peers_report: BenchReport) -> None:
    by_name = {r.loader: r for r in peers_report.results}
    installed = [name for name in PEER_LOADERS if availability(name)[0]]
    assert "torchvision" in installed  # the test dependencies include it
    for name in ["lancefeed", *installed]:
        r = by_name[name]
        assert (r.status, r.message) == ("ok", ""), name
        assert r.images == ROWS * SCALE, name  # the same rows, repeated --scale times
        for figure in (
            r.images_per_s,
            r.steady_images_per_s,
            r.epoch_images_per_s,
            r.first_batch_s,
            r.cpu_s_per_1k,
            r.peak_mib,
            r.disk_mib,
        ):
            assert figure is not None and figure > 0, (name, r)
        # Start-up counts in the whole-epoch rate, never in the steady one.
        assert r.epoch_images_per_s < r.steady_images_per_s, name
    # Every peer that reads a format of its own reports its conversion.
    for name in set(installed) - {"torchvision", "spdl", "dali"}:
        assert by_name[name].convert_s is not None and by_name[name].convert_s > 0, name
    assert by_name["lancefeed"].convert_s is None  # it reads the Lance dataset as it is


def test_peers_not_installed_are_listed_with_what_to_install(peers_report: BenchReport) -> None:
    by_name = {r.loader: r for r in peers_report.results}
    assert set(by_name) == {"lancefeed", "_missing", *PEER_LOADERS}  # none dropped
    assert by_name["_missing"].status == "missing"
    assert by_name["_missing"].message.startswith("not installed: pip install")
    for name in PEER_LOADERS:
        ok, reason = availability(name)
        if not ok:
            assert (by_name[name].status, by_name[name].message) == ("missing", reason)
            assert by_name[name].images_per_s is None
    table = peers_report.table()
    assert "missing: not installed: pip install lancefeed-no-such-peer" in table
    assert table.splitlines()[0].split()[:4] == ["dataset", "loader", "steady", "img/s"]


def test_a_real_peer_that_says_no_is_reported_missing(
    tiny_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lancefeed.bench.peers import webdataset_tar

    monkeypatch.setattr(webdataset_tar, "available", lambda: (False, "not installed: pip install webdataset"))
    report = run_bench(tiny_uri, loaders=["webdataset"], out=tmp_path, progress=False)
    [r] = report.results
    assert (r.loader, r.status, r.message) == ("webdataset", "missing", "not installed: pip install webdataset")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"][0]["status"] == "missing"
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_scale_multiplies_the_rows_from_the_command_line(
    tiny_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["bench", tiny_uri, "--loaders", "lancefeed", "--scale", "3", "--quiet", "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"]["scale"] == 3
    assert [r["images"] for r in saved["results"]] == [ROWS * 3]


def test_epochs_add_the_later_passes_rate(tiny_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = ["bench", tiny_uri, "--loaders", "lancefeed,imagefolder-pillow", "--epochs", "3", "--quiet", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"]["epochs"] == 3
    for r in saved["results"]:
        assert r["status"] == "ok", r
        assert r["images"] == ROWS  # the first pass's figures stay the first pass's
        assert r["later_images_per_s"] > 0, r
    header = printed.splitlines()[0].split()
    assert header[:5] == ["dataset", "loader", "images/s", "later", "img/s"]
    assert "later img/s" in (out / "results.md").read_text().splitlines()[0]
    # One epoch (the default): no later rate, no column.
    one = run_bench(tiny_uri, loaders=["lancefeed"], out=tmp_path / "one", progress=False)
    assert one.results[0].later_images_per_s is None and "later" not in one.table()


# FFCV and SPDL, when installed (FFCV builds against libopencv-dev and libturbojpeg0-dev;
# SPDL needs FFmpeg's libraries): their loaders run on a few images and yield the
# benchmark's batches, the right pixels with the right labels.
NATIVE_PEERS = ["ffcv", "spdl"]


def _skip_unless_available(name: str) -> None:
    ok, reason = availability(name)
    if not ok:
        pytest.skip(f"{name}: {reason}")


@pytest.mark.parametrize("name", NATIVE_PEERS)
def test_native_peer_runs_in_the_harness(name: str, peers_report: BenchReport) -> None:
    _skip_unless_available(name)
    r = {r.loader: r for r in peers_report.results}[name]
    assert (r.status, r.message) == ("ok", "")
    assert r.images == ROWS * SCALE
    assert r.images_per_s is not None and r.images_per_s > 0
    assert r.steady_images_per_s is not None and r.steady_images_per_s > 0


@pytest.fixture(scope="module")
def photo_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    # A few ImageNet-sized images: a 224 px crop of them tests the loaders' geometry.
    root = tmp_path_factory.mktemp("photos")
    folder = write_imagefolder(root / "files", 6, kind="imagenet-like")
    uri = str(root / "photos.lance")
    lancefeed.ingest_folder(folder, uri, progress=False)
    return uri


def _batches(name: str, uri: str, plan: list, dest: Path, shuffle: bool) -> list[tuple[np.ndarray, list[int]]]:
    # The peer's loader as the worker builds it (converted once into ``dest``), its
    # batches as HWC uint8 arrays.
    import torch

    from lancefeed.bench.peers import load

    module = load(name)
    spec = {"loader": name, "uri": uri, "plan": plan, "batch_size": 4, "shuffle": shuffle, "limit": None,
            "workers": 1, "threads": 2, "folder": None, "converted": str(dest)}
    if not dest.exists():
        module.convert(spec, dest)
    out = []
    for images, labels in module.make_loader(spec):
        assert images.dtype == torch.uint8, name
        assert labels.ndim == 1 and labels.shape[0] == images.shape[0], name
        if images.shape[1] == 3:  # FFCV's ToTorchImage: B x C x H x W (channels-last memory)
            images = images.permute(0, 2, 3, 1)
        out.append((images.numpy(), labels.tolist()))
    return out


# numba's finalizer can raise a KeyError when FFCV's compiled pipeline is collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("name", NATIVE_PEERS)
def test_native_peer_yields_the_planned_images_and_labels(
    name: str, tiny_uri: str, photo_uri: str, tmp_path: Path
) -> None:
    _skip_unless_available(name)
    from lancefeed.bench.peers._common import iter_rows, pil_decode
    from lancefeed.bench.transforms import make_plan, pillow_transform

    # train on the 32 px images: every row once, 32 x 32 RGB, each row's label.
    batches = _batches(name, tiny_uri, make_plan("train", 32), tmp_path / "tiny", shuffle=True)
    assert all(images.shape[1:] == (32, 32, 3) for images, _ in batches)
    labels = sorted(label for _, batch_labels in batches for label in batch_labels)
    assert labels == sorted(label for _, label in iter_rows(tiny_uri, None))
    assert len(set(labels)) > 1

    # eval on ImageNet-sized images: each output is Resize(256) + CenterCrop(224) of
    # its row (Pillow's as the reference; FFCV re-encodes to JPEG and FFmpeg converts
    # colours its own way, hence a tolerance), under that row's label.
    plan = make_plan("eval", 224)
    reference = pillow_transform(plan)
    rows = [
        (np.asarray(reference(pil_decode(data)), dtype=np.float32), label) for data, label in iter_rows(photo_uri, None)
    ]
    refs = np.stack([ref for ref, _ in rows])
    seen = 0
    for images, batch_labels in _batches(name, photo_uri, plan, tmp_path / "photos", shuffle=False):
        assert images.shape[1:] == (224, 224, 3), name
        for image, label in zip(images.astype(np.float32), batch_labels):
            errors = np.abs(refs - image).mean(axis=(1, 2, 3))
            nearest = int(errors.argmin())
            assert errors[nearest] < 12, (name, float(errors[nearest]))
            assert rows[nearest][1] == label, name
            seen += 1
    assert seen == len(rows)
