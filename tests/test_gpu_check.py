"""scripts/gpu_check.py's dry run on the CPU: every check that does not need CUDA runs
through the same code (CudaPrefetcher(device="cpu")), and the JSON a GPU run writes
has its shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_dry_run_passes_and_writes_every_check(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "--device", "cpu", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(results) == {"environment", "cuda_tests", "exact", "race", "sanitizer", "cleanup", "resnet"}
    exact = results["exact"]
    assert {k for k in exact if k != "seconds"} == {"uint8", "float32", "bfloat16", "channels_last", "mode L"}
    assert all(v["ok"] and v["devices"] == ["cpu"] for k, v in exact.items() if k != "seconds")
    assert results["cleanup"]["ok"] and results["cleanup"]["decode_error_raised"]
    for key in ("resident_images_per_s", "host_decode_images_per_s", "fed_images_per_s", "wait_p50_s", "wait_p95_s"):
        assert results["resnet"][key] is not None and results["resnet"][key] >= 0
    for key in ("cuda_tests", "race", "sanitizer"):
        assert "CUDA" in results[key]["skipped"]
    assert "all checks passed" in proc.stderr


def test_without_a_gpu_the_cuda_run_says_so(tmp_path: Path) -> None:
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: scripts/gpu_check.sh runs the real thing")
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "--out", str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
