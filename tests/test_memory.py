"""Freed batch buffers are kept for reuse: repeated takes stop page-faulting."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import lance
import numpy as np
import pyarrow as pa
import pytest

from lancefeed.ingest import IMAGE_FIELD

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")

ROWS, ROW_BYTES = 48, 256 << 10  # 12 MiB per take, as an ImageNet batch of ~100 images

TAKES = r"""
import resource, sys
import numpy as np
import lancefeed.memory
from lancefeed import Permutation
if sys.argv[2] == "keep":
    assert lancefeed.memory.keep_freed_memory()
perm = Permutation.identity(sys.argv[1])
rng = np.random.default_rng(1)
plan = [rng.permutation(len(perm)) for _ in range(13)]
for p in plan[:3]:
    perm.take_positions(p)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for p in plan[3:]:
    perm.take_positions(p)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 10)
"""


def _run(code: str, *args: str, env: dict | None = None) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("memory") / "big.lance")
    rng = np.random.default_rng(0)
    blobs = pa.array([rng.bytes(ROW_BYTES) for _ in range(ROWS)], pa.large_binary())
    lance.write_dataset(pa.table({"image": blobs}, schema=pa.schema([IMAGE_FIELD])), uri)
    return uri


@glibc
def test_repeated_takes_reuse_memory_instead_of_faulting_it_in(big):
    pages_per_take = ROWS * ROW_BYTES // 4096
    faults = int(_run(TAKES, big, "keep"))
    # Without the settings glibc hands the take's buffers back on free and every take
    # faults its 3,072 pages in again, twice over (measured: ~6,100 per take). With
    # them it is 0-1 per take, and now and then one take that lands in a new arena.
    assert faults < pages_per_take // 2, f"{faults} page faults per take of {pages_per_take} pages"


@glibc
def test_the_loader_turns_it_on_unless_told_not_to(big):
    code = (
        "import sys, lancefeed, lancefeed.memory as m; assert not m.active(); "
        "lancefeed.DataLoader(sys.argv[1], 4, label_column=None); print(m.active())"
    )
    env = {k: v for k, v in os.environ.items() if k != "LANCEFEED_KEEP_FREED_MEMORY"}
    assert _run(code, big, env=env) == "True"
    assert _run(code, big, env={**env, "LANCEFEED_KEEP_FREED_MEMORY": "0"}) == "False"
