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


def test_decode_batch_reuses_a_big_output_only_once_it_is_dropped():
    import io

    from PIL import Image

    import lancefeed
    from lancefeed import memory

    memory.release_batch_buffers()
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(buf, "JPEG")
    blobs = [buf.getvalue()] * 200  # 200 x 224 x 224 x 3: 30 MB of uint8, 120 MB as floats
    t = lancefeed.Compose([lancefeed.RandomResizedCrop(224), lancefeed.RandomHorizontalFlip()])
    small = lancefeed.decode_batch(blobs[:8], transform=t, seed=0)
    assert memory.release_batch_buffers() == 0  # under 32 MiB: glibc's business
    norm = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    first = lancefeed.decode_batch(blobs, transform=t, seed=1, normalize=norm)
    want = first.copy()
    views = (first[3:], np.asarray(memoryview(first)))  # held as a slice and through a memoryview
    del first
    second = lancefeed.decode_batch(blobs, transform=t, seed=2, normalize=norm)
    assert not np.shares_memory(second, views[0])  # the first batch's buffer is still held
    np.testing.assert_array_equal(views[0], want[3:])
    np.testing.assert_array_equal(views[1], want)
    address = views[0].__array_interface__["data"][0] - views[0].strides[0] * 3
    del views, second
    third = lancefeed.decode_batch(blobs, transform=t, seed=1, normalize=norm)
    np.testing.assert_array_equal(third, want)  # the same pixels in reused memory
    pooled = {b.__array_interface__["data"][0] for b in memory._batch_pool}
    assert address in pooled and third.__array_interface__["data"][0] in pooled
    assert memory.release_batch_buffers() == 2 * want.nbytes
    assert small.shape == (8, 224, 224, 3)
