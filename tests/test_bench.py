"""The benchmark harness: transforms, the watchdog, and whole runs of `lancefeed bench`."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lancefeed
from lancefeed.bench import run_loader
from lancefeed.bench.data import synthetic_image, write_imagefolder
from lancefeed.bench.transforms import lancefeed_transform, make_plan, output_side, pillow_transform
from lancefeed.cli import main


def test_plans_follow_image_size() -> None:
    assert output_side(375) == 224 and output_side(32) == 32
    assert make_plan("train", 224) == [("random_resized_crop", 224), ("hflip", 0.5)]
    assert make_plan("eval", 224) == [("resize", 256), ("center_crop", 224)]
    assert make_plan("eval", 32) == [("resize", 32), ("center_crop", 32)]
    assert make_plan("none", 32) == [("resize", (32, 32))]
    with pytest.raises(ValueError, match="train, eval, none"):
        make_plan("augment", 224)


def test_pillow_transforms_match_torchvision_geometry() -> None:
    img = Image.fromarray(np.arange(375 * 500 * 3, dtype=np.uint32).reshape(375, 500, 3).astype(np.uint8))
    # Resize(256) sets the short side: 500x375 -> 341x256, as torchvision's int(256 * 500 / 375).
    resized = pillow_transform([("resize", 256)])(img)
    assert resized.size == (341, 256)
    assert pillow_transform(make_plan("eval", 224))(img).size == (224, 224)
    assert pillow_transform(make_plan("none", 224))(img).size == (224, 224)
    crops = {pillow_transform(make_plan("train", 224), seed=s)(img).tobytes() for s in range(4)}
    assert len(crops) == 4  # random crops differ by seed
    same = [pillow_transform(make_plan("train", 224), seed=7)(img).tobytes() for _ in range(2)]
    assert same[0] == same[1]
    # CenterCrop takes the middle: a crop of the crop-sized image is the image itself.
    small = img.resize((32, 32))
    assert pillow_transform([("center_crop", 32)])(small).tobytes() == small.tobytes()


@pytest.mark.parametrize("kind", ["eval", "none"])
def test_baselines_do_the_same_work_as_lancefeed(kind: str) -> None:
    # The Pillow transforms and lancefeed's give (almost) the same pixels, so the
    # benchmark compares loaders doing the same work.
    buf = io.BytesIO()
    synthetic_image(np.random.default_rng(1), 500, 375).save(buf, "JPEG", quality=90)
    plan = make_plan(kind, 224)
    ours = lancefeed.decode_batch([buf.getvalue()], transform=lancefeed_transform(plan))[0]
    pil = np.asarray(pillow_transform(plan)(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    assert ours.shape == pil.shape == (224, 224, 3)
    assert np.abs(ours.astype(int) - pil.astype(int)).mean() < 1.0


def test_generated_images_look_like_photos(tmp_path: Path) -> None:
    img = synthetic_image(np.random.default_rng(0), 500, 375)
    assert img.size == (500, 375) and img.mode == "RGB"
    folder = write_imagefolder(tmp_path / "in", 10, kind="imagenet-like")
    files = sorted(folder.rglob("*.jpg"))
    assert len(files) == 10
    assert {f.parent.parent.name for f in files} == {"train", "val"}
    mean_kb = sum(f.stat().st_size for f in files) / len(files) / 1024
    assert 40 < mean_kb < 250  # JPEG sizes of real ImageNet photos (about 110 KB)


def test_a_hanging_loader_is_killed_at_the_timeout() -> None:
    start = time.monotonic()
    r = run_loader({"loader": "_sleep"}, dataset="d", description="sleeps", timeout=60, stall_timeout=1.5)
    # Killed by the stall clock (not the 60 s one), which starts after the start-up.
    assert r.status == "timeout"
    assert r.message == "no batch for 1.5 s, killed"
    assert r.startup_s is not None and time.monotonic() - start >= r.startup_s + 1.5
    assert r.images_per_s is None and r.images == 0


def test_a_slow_start_up_is_not_a_stall() -> None:
    # The loader's start-up sleeps past the stall timeout, then it runs fine.
    spec = {"loader": "_slow_start", "startup_sleep": 3, "batch_size": 8, "batches": 4, "limit": None}
    r = run_loader(spec, dataset="d", description="starts slowly", timeout=60, stall_timeout=1.5)
    assert (r.status, r.message, r.images) == ("ok", "", 32)
    assert r.startup_s is not None and r.startup_s >= 3
    assert r.seconds < 3  # the start-up is not part of the timed pass
    # Its start-up splits into `import torch` (first, timed on its own) and the
    # loader's own part after it, which holds the sleep.
    assert r.torch_import_s is not None and r.own_startup_s is not None
    assert r.torch_import_s > 0 and 3 <= r.own_startup_s <= r.startup_s - r.torch_import_s
    assert r.epoch_images_per_s is not None and r.own_epoch_images_per_s is not None
    assert r.own_epoch_images_per_s == pytest.approx(32 / (r.own_startup_s + r.seconds))
    assert r.own_epoch_images_per_s > r.epoch_images_per_s
    # The same start-up, then a hang after the batches: the stall clock still kills it.
    spec["hang"] = True
    hung = run_loader(spec, dataset="d", description="hangs", timeout=60, stall_timeout=1.5)
    assert (hung.status, hung.message, hung.images) == ("timeout", "no batch for 1.5 s, killed", 32)
    assert hung.startup_s is not None and hung.startup_s >= 3


def test_the_worker_times_import_torch_before_anything_has_imported_it() -> None:
    # Else torch_import_s would read ~0 and the loader's own start-up would hold it.
    code = (
        "import sys, lancefeed.bench.worker as w, lancefeed.bench.peers; "
        "w.with_options({'loader': 'lancefeed'}); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_start_up_past_its_limit_is_killed() -> None:
    # A start-up that never ends (it sleeps an hour) is stopped by its own limit.
    spec = {"loader": "_slow_start", "startup_sleep": 3600}
    r = run_loader(spec, dataset="d", description="stuck", timeout=60, stall_timeout=60, startup_timeout=2)
    assert (r.status, r.message, r.startup_s, r.images) == ("timeout", "start-up over 2 s, killed", None, 0)


def test_a_loader_that_yields_nothing_is_a_failure_not_a_rate() -> None:
    spec = {"loader": "_slow_start", "startup_sleep": 0, "batches": 0}
    r = run_loader(spec, dataset="d", description="empty", timeout=60, stall_timeout=60)
    assert (r.status, r.message, r.images) == ("failed", "the loader yielded no images", 0)


def test_a_failing_loader_is_reported() -> None:
    r = run_loader({"loader": "_fail"}, dataset="d", description="fails", timeout=60, stall_timeout=60)
    assert r.status == "failed"
    assert "fails on purpose" in r.message


def test_bench_on_tiny_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "bench",
            "--tiny",
            "--quiet",
            "--out",
            str(out),
            "--loaders",
            "lancefeed,imagefolder-pillow",
            "--startup-timeout",
            "600",
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["dataset", "loader", "images/s"]
    body = [ln.split() for ln in lines[2:]]
    assert [(b[0], b[1]) for b in body] == [
        ("imagenet-like", "lancefeed"),
        ("imagenet-like", "imagefolder-pillow"),
        ("cifar-like", "lancefeed"),
        ("cifar-like", "imagefolder-pillow"),
    ]
    assert all(b[-1] == "ok" for b in body)
    assert body[0][3] == "1.00x"

    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"]["startup_timeout_s"] == 600
    results = saved["results"]
    assert len(results) == 4
    tiny = {"imagenet-like": 16, "cifar-like": 64}
    for r in results:
        assert r["images"] == tiny[r["dataset"]]
        assert r["images_per_s"] > 0 and r["cpu_s"] > 0 and r["peak_mib"] > 0 and r["startup_s"] > 0
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "table.txt").read_text().strip() == table.strip()


def test_bench_on_a_dataset_with_limit_and_timeout(tmp_path: Path) -> None:
    folder = write_imagefolder(tmp_path / "files", 40, kind="cifar-like")
    uri = str(tmp_path / "small.lance")
    lancefeed.ingest_folder(folder, uri, progress=False)
    from lancefeed.bench import run_bench

    report = run_bench(
        uri,
        transform="none",
        batch_size=8,
        limit=16,
        loaders=["lance-torch-pillow", "_sleep"],
        # Ample for a healthy pass of 16 small images (ready to done in ~0.1 s) on a
        # slow machine; the start-up (imports of torch and pylance) is not watched by it.
        timeout=60,
        stall_timeout=5,
        out=tmp_path / "out",
        repeat=3,
        progress=False,
    )
    ok, hung = report.results
    assert (ok.loader, ok.status, ok.images, ok.message) == ("lance-torch-pillow", "ok", 16, "")
    assert ok.startup_s is not None and ok.startup_s > 0
    assert len(ok.runs) == 3 and sorted(ok.runs)[1] == ok.images_per_s  # the median run is kept
    assert len(hung.runs) == 1  # a loader that hangs is not tried again
    assert ok.ratio is None  # no lancefeed run to compare with
    assert (hung.loader, hung.status, hung.message) == ("_sleep", "timeout", "no batch for 5 s, killed")
    assert report.settings["plans"] == {"small": "Resize((32, 32))"}
    assert report.settings["startup_timeout_s"] == 300  # the default
    assert "timeout" in (tmp_path / "out" / "table.txt").read_text()


def test_bench_argument_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--loaders", "lancefeed,no-such-loader", "--out", str(tmp_path)]) == 1
    assert "unknown loader 'no-such-loader'" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "missing.lance"), "--out", str(tmp_path)]) == 1
    assert "missing.lance: no Lance dataset there" in capsys.readouterr().err


def test_failure_messages_name_the_signal_or_the_exception() -> None:
    from lancefeed.bench.harness import failure_message

    assert failure_message(-11, "") == "killed by SIGSEGV"
    stderr = "Traceback (most recent call last):\nRuntimeError: worker died\n  warnings.warn(\n"
    assert failure_message(1, stderr) == "RuntimeError: worker died"
    assert failure_message(2, "") == "exit status 2"


def test_peak_memory_reads_pss_once_a_second_and_scales_rss_between(monkeypatch: pytest.MonkeyPatch) -> None:
    # PSS walks the worker's page tables (~16 ms with torch loaded, under its memory
    # map's lock), so it is read once a second; the 0.1 s samples between read RSS and
    # count it at the latest PSS/RSS ratio. Here RSS is 100 MiB, then 300 MiB between
    # PSS readings, and PSS half of RSS.
    from lancefeed.bench import harness

    reads = []
    rss = {"now": 100.0}

    def fake(pids: list[int], pss: bool = True) -> float:
        reads.append(pss)
        return rss["now"] / 2 if pss else rss["now"]

    monkeypatch.setattr(harness, "_memory_mib", fake)
    memory = harness._Memory(pss_every=1.0)
    for step in range(25):
        rss["now"] = 300.0 if step == 13 else 100.0
        memory.sample([1], now=step * 0.1)
    assert reads.count(True) == 3  # at 0.0, 1.0 and 2.0 s
    assert reads.count(False) == 25
    assert memory.peak == pytest.approx(150.0)  # 300 MiB of RSS at the ratio 0.5
    # A new process in the tree (a forked worker) is read at once: its RSS counts pages
    # it shares with its parent, which the old ratio would count twice.
    reads.clear()
    memory.sample([1, 2], now=2.55)
    assert reads == [False, True]
