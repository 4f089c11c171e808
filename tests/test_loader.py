"""lancefeed.DataLoader: epochs, ranks, resume, labels, errors, threads.

Every image of the test dataset encodes its own sample index in its pixels (PNG, so
exactly), with a horizontal gradient in blue that shows flips. So a batch tells which
samples it holds and how they were augmented, without trusting any other column.
"""

from __future__ import annotations

import gc
import io
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, List, Tuple

import lance
import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image, PngImagePlugin

import lancefeed
from lancefeed.loader.sampler import epoch_order, num_batches, plan_epoch, rank_shard

N = 50
W = 6
LABELS = ["dog", "cat", "emu"]


def encode(i: int) -> bytes:
    a = np.zeros((4, W, 3), np.uint8)
    a[..., 0] = i % 256
    a[..., 1] = i // 256
    a[..., 2] = np.arange(W) * 40  # a left-to-right ramp: flipped images run right-to-left
    buf = io.BytesIO()
    # A text chunk makes each file 300+ bytes, as real images are: Lance stores values
    # under 256 bytes in another layout (mini-block) that is never read in place.
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "lancefeed test image " * 16)
    Image.fromarray(a).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def make_dataset(path: Path, n: int = N, bad: tuple[int, ...] = ()) -> str:
    images = [b"not an image at all" if i in bad else encode(i) for i in range(n)]
    boxes = [[[float(i), float(j), 1.0, 2.0] for j in range(i % 3)] for i in range(n)]
    table = pa.table(
        {
            "image": pa.array(images, pa.binary()),
            "label": pa.array([LABELS[i % 3] for i in range(n)]),
            "idx": pa.array(range(n), pa.int64()),
            "boxes": pa.array(boxes, pa.list_(pa.list_(pa.float32(), 4))),
            "filename": pa.array([f"img{i}.png" for i in range(n)]),
            "tags": pa.array([[LABELS[(i + j) % 3] for j in range(i % 3)] for i in range(n)]),
        }
    )
    uri = str(path / "ds.lance")
    lance.write_dataset(table, uri, max_rows_per_file=20)  # several fragments
    return uri


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_dataset(tmp_path_factory.mktemp("loader"))


def sample_ids(images: torch.Tensor) -> List[int]:
    """The sample index each decoded image encodes."""
    px = images[:, 0, 0, :].to(torch.int64)
    return (px[:, 0] + 256 * px[:, 1]).tolist()


def flipped(images: torch.Tensor) -> List[bool]:
    return (images[:, 0, 0, 2] > images[:, 0, -1, 2]).tolist()


def epoch_ids(loader: Any) -> List[int]:
    return [i for images, *_ in loader for i in sample_ids(images)]


def our_threads() -> List[threading.Thread]:
    # A DataLoader starts its prefill scan when it is built (small rows), on a thread of
    # its own that ends when the scan does: given a moment on a loaded machine, it is
    # not a thread left behind. One still scanning after 10 s is listed.
    for t in threading.enumerate():
        if t.name == "lancefeed-prefill":
            t.join(10)
    return [t for t in threading.enumerate() if t.name.startswith("lancefeed")]


# -- the order rules, exhaustively -----------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 7, 12, 13])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_plan_shards_are_disjoint_equal_and_drop_only_the_remainder(n: int, world_size: int) -> None:
    for shuffle in (False, True):
        for epoch in range(3):
            order = epoch_order(n, shuffle=shuffle, seed=5, epoch=epoch)
            assert sorted(order.tolist()) == list(range(n))
            shards = [rank_shard(order, r, world_size) for r in range(world_size)]
            assert {len(s) for s in shards} == {n // world_size}
            seen = np.concatenate(shards).tolist()
            assert len(set(seen)) == len(seen)
            # what no rank reads: exactly the last n % world_size of the epoch order
            assert sorted(set(range(n)) - set(seen)) == sorted(order[n - n % world_size :].tolist())
            for bs in (1, 3, 5):
                for drop_last in (False, True):
                    plan = plan_epoch(
                        n, batch_size=bs, shuffle=shuffle, seed=5, epoch=epoch,
                        rank=world_size - 1, world_size=world_size, drop_last=drop_last,
                    )
                    batches = [b.tolist() for _, b in plan]
                    assert len(batches) == num_batches(n // world_size, bs, drop_last) == len(plan)
                    assert all(len(b) == bs for b in batches[:-1])
                    flat = [i for b in batches for i in b]
                    expect = shards[-1].tolist()
                    assert flat == (expect[: len(expect) // bs * bs] if drop_last else expect)


def test_plan_orders_depend_on_seed_and_epoch_only() -> None:
    a = epoch_order(100, shuffle=True, seed=1, epoch=0)
    assert (a == epoch_order(100, shuffle=True, seed=1, epoch=0)).all()
    assert not (a == epoch_order(100, shuffle=True, seed=1, epoch=1)).all()
    assert not (a == epoch_order(100, shuffle=True, seed=2, epoch=0)).all()
    plan = plan_epoch(10, batch_size=3, shuffle=True, seed=1, epoch=0, start_batch=2)
    assert [k for k, _ in plan] == [2, 3]
    with pytest.raises(ValueError, match="cannot resume at batch 5"):
        plan_epoch(10, batch_size=3, shuffle=True, seed=1, epoch=0, start_batch=5)
    with pytest.raises(ValueError, match="rank must be in 0..1"):
        plan_epoch(10, batch_size=3, shuffle=True, seed=1, epoch=0, rank=2, world_size=2)


# -- batches ----------------------------------------------------------------------


def test_tuple_batches_are_uint8_nhwc_with_class_indices(uri: str) -> None:
    loader = lancefeed.DataLoader(uri, batch_size=16)
    assert loader.classes == sorted(LABELS)
    assert len(loader) == 4
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(16, 4, W, 3)] * 3 + [(2, 4, W, 3)]
    images, labels = batches[0]
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    ids = [i for b in batches for i in sample_ids(b[0])]
    assert ids == list(range(N))  # no shuffle: dataset order
    got = torch.cat([b[1] for b in batches]).tolist()
    assert got == [sorted(LABELS).index(LABELS[i % 3]) for i in range(N)]


def test_batches_are_the_decoded_buffers_not_copies(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import lancefeed.loader.batches as batches_module

    decoded: List[Tuple[int, int]] = []
    real = batches_module.decode_images

    def recording(*args: Any, **kw: Any) -> Any:
        images, info = real(*args, **kw)
        decoded.append((images.ctypes.data, images.nbytes))
        return images, info

    monkeypatch.setattr(batches_module, "decode_images", recording)
    for kw in ({}, {"transform": lancefeed.Resize((4, W))}):
        decoded.clear()
        batches = [images for images, _ in lancefeed.DataLoader(uri, batch_size=16, **kw)]
        # Each tensor lies in what a decode wrote (one decode may write several
        # batches of a take, each a view of it): the decoded buffer itself, no copy.
        for b in batches:
            start, end = b.data_ptr(), b.data_ptr() + b.numel()
            assert any(p <= start and end <= p + n for p, n in decoded), "a batch copied out of its decode"
        assert sum(b.numel() for b in batches) == sum(n for _, n in decoded)


def test_dict_output_columns_lists_and_strings(uri: str) -> None:
    loader = lancefeed.DataLoader(uri, batch_size=8, output="dict", classes=["emu", "dog", "cat"])
    batch = next(iter(loader))
    assert list(batch) == ["image", "label", "idx", "boxes", "filename", "tags"]
    assert batch["idx"].tolist() == list(range(8))
    assert batch["label"].tolist() == [["emu", "dog", "cat"].index(LABELS[i % 3]) for i in range(8)]
    assert batch["filename"] == [f"img{i}.png" for i in range(8)]
    boxes = batch["boxes"]
    assert [tuple(b.shape) for b in boxes] == [(i % 3, 4) for i in range(8)]
    assert boxes[5].tolist() == [[5.0, 0.0, 1.0, 2.0], [5.0, 1.0, 1.0, 2.0]]
    assert boxes[5].dtype == torch.float32


def test_tuple_output_follows_columns(uri: str) -> None:
    loader = lancefeed.DataLoader(uri, batch_size=4, columns=["idx", "filename"], label_column=None)
    images, idx, names = next(iter(loader))
    assert sample_ids(images) == idx.tolist() == [0, 1, 2, 3]
    assert names == ["img0.png", "img1.png", "img2.png", "img3.png"]


def test_a_list_of_labels_per_image_maps_to_a_tensor_each(uri: str) -> None:
    # COCO's categories: a list of class names per image.
    loader = lancefeed.DataLoader(uri, batch_size=6, label_column="tags", classes="auto")
    assert loader.classes == sorted(LABELS)
    images, tags = next(iter(loader))
    assert [t.dtype for t in tags] == [torch.int64] * 6
    assert [t.tolist() for t in tags] == [
        [sorted(LABELS).index(LABELS[(i + j) % 3]) for j in range(i % 3)] for i in range(6)
    ]


def test_numeric_labels_pass_through(uri: str) -> None:
    loader = lancefeed.DataLoader(uri, batch_size=5, label_column="idx")
    images, labels = next(iter(loader))
    assert loader.classes is None
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="numeric labels pass through"):
        lancefeed.DataLoader(uri, batch_size=5, label_column="idx", classes=["a"])


def test_label_not_in_classes_is_refused_with_the_row(uri: str) -> None:
    # Labels are read (and checked) once, up front: the loader fails before training.
    with pytest.raises(ValueError, match=r"row \d+: label 'emu' is not in classes \(2 classes: cat, dog\)"):
        lancefeed.DataLoader(uri, batch_size=4, classes=["cat", "dog"])


def test_an_exception_in_the_background_surfaces_in_the_loop(uri: str) -> None:
    loader = lancefeed.DataLoader(uri, batch_size=4, prefetch=1)
    loader.reader.rows_per_take = 4
    real_take = loader.reader.take

    def failing_take(positions: np.ndarray) -> Any:
        if positions[0] == 8:
            raise OSError("object store went away")
        return real_take(positions)

    loader.reader.take = failing_take  # type: ignore[method-assign]
    seen = []
    with pytest.raises(OSError, match="object store went away"):
        for images, _ in loader:
            seen.extend(sample_ids(images))
    assert seen == list(range(8))  # the batches before the failure arrived, in order
    assert our_threads() == []


def test_normalize_on_cpu_is_float_nchw(uri: str) -> None:
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    raw = next(iter(lancefeed.DataLoader(uri, batch_size=6)))[0]
    for cl in (False, True):
        loader = lancefeed.DataLoader(uri, batch_size=6, normalize=(mean, std), channels_last=cl)
        images, _ = next(iter(loader))
        assert images.shape == (6, 3, 4, W) and images.dtype == torch.float32
        assert images.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
        expect = (raw.permute(0, 3, 1, 2).double() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
            std
        ).view(1, 3, 1, 1)
        torch.testing.assert_close(images.double(), expect, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="expected 1 or 3"):
        lancefeed.DataLoader(uri, batch_size=6, normalize=((0.5, 0.5), (0.2, 0.2)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_batches_are_the_float32_ones_rounded_once(uri: str, dtype: torch.dtype) -> None:
    from torchvision.transforms import v2

    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    fixed = lancefeed.Resize((4, W))
    full = lancefeed.DataLoader(uri, batch_size=6, transform=fixed, normalize=(mean, std))
    half = lancefeed.DataLoader(uri, batch_size=6, transform=[fixed, v2.ToDtype(dtype, scale=True), v2.Normalize(mean, std)])
    for (a, _), (b, _) in zip(full, half):
        assert b.dtype == dtype and b.shape == a.shape
        # Computed in float32 and rounded to nearest even once, as a.to(dtype) rounds.
        assert torch.equal(b, a.to(dtype))
    got = lancefeed.decode_batch([encode(i) for i in range(3)], normalize=(mean, std), normalize_dtype=str(dtype).split(".")[1])
    ref = lancefeed.decode_batch([encode(i) for i in range(3)], normalize=(mean, std))
    assert torch.equal(torch.as_tensor(got), torch.from_numpy(ref).to(dtype))


# group 4: the batches of a take are decoded by one call, each a view of its output
# (_BatchMaker.build_joint); a buffer comes back once all of them are dropped, so the
# reuse is looked for over three passes.
@pytest.mark.parametrize("group", [1, 4])
def test_reused_float_buffers_never_overwrite_a_batch_still_held(uri: str, group: int) -> None:
    transform = lancefeed.Compose([lancefeed.Resize((4, W)), lancefeed.RandomHorizontalFlip()])
    loader = lancefeed.DataLoader(uri, batch_size=4, shuffle=True, transform=transform, normalize=((0.5,), (0.25,)))
    loader.reader.rows_per_take = 4 * group
    loader.set_epoch(3)
    held = [images for images, _ in loader]  # every batch kept: no buffer may be reused
    copies, pointers = [], []
    for _ in range(1 if group == 1 else 3):
        loader.set_epoch(3)
        for images, _ in loader:  # each batch dropped at once: buffers are reused
            copies.append(images.clone())
            pointers.append(images.data_ptr())
            del images
    assert len(held) > 8  # more batches than the pool keeps
    for k, b in enumerate(copies):
        assert torch.equal(held[k % len(held)], b)
    assert len({t.data_ptr() for t in held}) == len(held)
    assert len(set(pointers)) < len(pointers)  # the point of the pool


@pytest.mark.parametrize("group", [1, 4])
def test_reused_uint8_buffers_never_overwrite_a_batch_or_view_still_held(uri: str, group: int) -> None:
    transform = lancefeed.Compose([lancefeed.Resize((4, W)), lancefeed.RandomHorizontalFlip()])
    loader = lancefeed.DataLoader(uri, batch_size=4, shuffle=True, transform=transform)
    loader.reader.rows_per_take = 4 * group
    loader.set_epoch(3)
    want = [images.clone() for images, _ in loader]
    # Held in every form a loop keeps a batch: the tensor, a slice of it, a numpy view,
    # a permuted view; the others dropped at once, so their buffers come back.
    held, pointers = [], []
    for _ in range(1 if group == 1 else 3):
        loader.set_epoch(3)
        for k, (images, _) in enumerate(loader):
            pointers.append(images.data_ptr())
            keep = (lambda t: t, lambda t: t[1:], lambda t: t.numpy(), lambda t: t.permute(0, 3, 1, 2), None)[k % 5]
            held.append(None if keep is None else (k, keep(images)))
            del images
    assert len(want) > 8  # more batches than the pool keeps
    for item in held:
        if item is not None:
            k, view = item
            got = torch.as_tensor(view)
            ref = (want[k], want[k][1:], want[k], want[k].permute(0, 3, 1, 2))[k % 5]
            assert torch.equal(got, ref), f"batch {k} was overwritten"
    if group == 1:
        # (With joint buffers nearly every take holds a kept batch, which keeps the
        # take's buffer: the reuse is the float test's, where every batch is dropped.)
        assert len(set(pointers)) < len(pointers)  # dropped batches' buffers were reused


def test_images_of_different_sizes_come_as_a_list(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    blobs = []
    for i in range(7):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (10 + i, 12, 3), dtype=np.uint8)).save(buf, "PNG")
        blobs.append(buf.getvalue())
    path = str(tmp_path / "sizes.lance")
    lance.write_dataset(pa.table({"image": pa.array(blobs, pa.binary()), "label": pa.array(range(7))}), path)
    loader = lancefeed.DataLoader(path, 3)
    batches = list(loader)
    images = [x for b, _ in batches for x in b]
    assert [tuple(x.shape) for x in images] == [(10 + i, 12, 3) for i in range(7)]
    for i, x in enumerate(images):
        assert np.array_equal(x.numpy(), np.asarray(Image.open(io.BytesIO(blobs[i]))))
    assert [lab.tolist() for _, lab in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    # normalize= per image, (C, H, W) float32.
    (first, _) = next(iter(lancefeed.DataLoader(path, 3, normalize=((0.5,), (0.5,)))))
    assert [tuple(x.shape) for x in first] == [(3, 10 + i, 12) for i in range(3)] and first[0].dtype == torch.float32
    torch.testing.assert_close(first[1], images[1].permute(2, 0, 1).float() / 127.5 - 1, atol=1e-6, rtol=0)
    # A fixed size still stacks into one batch tensor.
    fixed, _ = next(iter(lancefeed.DataLoader(path, 3, transform=lancefeed.Resize((8, 8)))))
    assert isinstance(fixed, torch.Tensor) and fixed.shape == (3, 8, 8, 3)


def _count_scans(monkeypatch: pytest.MonkeyPatch) -> List[Tuple[int, int]]:
    """(start, count) of every scan any permutation makes from now on (a loader's
    prefill starts on a thread of its own while the loader is built)."""
    scans: List[Tuple[int, int]] = []
    real = lancefeed.Permutation.scan_positions

    def scan(self: Any, start: int, count: int, **kw: Any) -> Any:
        scans.append((start, count))
        return real(self, start, count, **kw)

    monkeypatch.setattr(lancefeed.Permutation, "scan_positions", scan)
    return scans


def _rows_read(loader: Any) -> int:
    """Rows the loader's reader has read from the dataset (in place or by Lance)."""
    stats = loader.reader.stats()
    return stats["rows_in_place"] + stats["rows_through_lance"]


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("prefill", [False, True])
@pytest.mark.parametrize("in_place", [False, True])
def test_a_cached_dataset_gives_the_same_batches_and_is_read_once(uri: str, world_size: int, prefill: bool, in_place: bool,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import lancefeed.reads.reader as reader_module

    kw: dict = dict(batch_size=7, shuffle=True, seed=9, transform=lancefeed.RandomHorizontalFlip(), output="dict",
                    columns=["image", "label", "idx", "boxes", "tags"], world_size=world_size)
    monkeypatch.setenv("LANCEFEED_IN_PLACE", "1" if in_place else "0")
    if not prefill:
        monkeypatch.setattr(reader_module, "SCAN_ROW_BYTES", 0)  # no row is small: nothing read up front
    for rank in range(world_size):
        scans = _count_scans(monkeypatch)
        cached = lancefeed.DataLoader(uri, cache=True, rank=rank, **kw)
        plain = lancefeed.DataLoader(uri, cache=False, rank=rank, **kw)
        assert cached.reader.prefill == prefill and not plain.reader.prefill
        per_epoch = []
        for _ in range(3):  # later epochs read only rows not read before
            before = _rows_read(cached)
            for a, b in zip(list(cached), list(plain)):
                assert a.keys() == b.keys()
                assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
                assert all(torch.equal(x, y) for x, y in zip(a["boxes"], b["boxes"]))
                assert a["tags"] == b["tags"]
            per_epoch.append(_rows_read(cached) - before)
        assert cached.stats()["read_path"] == ("in_place" if in_place else "lance")
        if prefill:  # every row read before the first batch (once), then no read at all
            assert _rows_read(cached) == N and per_epoch[1:] == [0, 0]
            assert scans == ([] if in_place else [(0, N)])
        else:
            assert per_epoch[0] == len(cached.permutation) // world_size  # read as it goes, pipelined
            if world_size == 1:
                assert per_epoch[1:] == [0, 0]  # every row kept: no read after the first epoch
        assert cached.reader.kept_rows <= N  # each row kept once


def test_small_rows_are_scanned_first_in_parts_side_by_side(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import lancefeed.reads.cache as cache_module
    import lancefeed.reads.reader as reader_module

    # Read through Lance: three decode threads, three scans of neighbouring ranges.
    monkeypatch.setenv("LANCEFEED_IN_PLACE", "0")
    monkeypatch.setattr(reader_module, "SCAN_PART_ROWS", 5)
    kw: dict = dict(batch_size=6, shuffle=True, seed=2, transform=lancefeed.RandomHorizontalFlip(), num_threads=3)
    scans = _count_scans(monkeypatch)
    cached = lancefeed.DataLoader(uri, **kw)
    plain = lancefeed.DataLoader(uri, cache=False, **kw)
    assert cached.reader.prefill
    cached.reader.take_perm.take_positions_sorted = None  # a take would fail
    for _ in range(2):
        got, want = list(cached), list(plain)
        assert len(got) == len(want)
        for (xa, ya), (xb, yb) in zip(got, want):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert sorted(scans) == [(0, N // 3), (N // 3, 2 * N // 3 - N // 3), (2 * N // 3, N - 2 * N // 3)]
    # The scans' rows stay as they came (no copy into one array); the decode picks
    # each batch's rows across them.
    assert cached.reader.kept_chunks == 3
    # More parts than the cache keeps apart: joined into one array, the same batches.
    monkeypatch.setattr(cache_module, "KEPT_CHUNKS", 2)
    joined = lancefeed.DataLoader(uri, **kw)
    for (xa, ya), (xb, yb) in zip(joined, lancefeed.DataLoader(uri, cache=False, **kw)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert joined.reader.kept_chunks == 1
    monkeypatch.setattr(cache_module, "KEPT_CHUNKS", 4)
    # Too few rows for two parts: one scan.
    monkeypatch.setattr(reader_module, "SCAN_PART_ROWS", N)
    scans.clear()
    list(lancefeed.DataLoader(uri, **kw))
    assert scans == [(0, N)]


def test_the_prefill_starts_while_the_loader_is_built_and_a_failure_surfaces_in_the_loop(
    uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lancefeed.reads.inplace as inplace_module

    kw: dict = dict(batch_size=6, shuffle=True, seed=5, transform=lancefeed.RandomHorizontalFlip())
    want = [(x, y) for x, y in lancefeed.DataLoader(uri, cache=False, **kw)]
    calls: List[str] = []
    for in_place in (True, False):
        monkeypatch.setenv("LANCEFEED_IN_PLACE", "1" if in_place else "0")
        # The first read of each kind: an in-place read of the whole column, or a scan.
        owner, name = (inplace_module.InPlaceColumn, "read") if in_place else (lancefeed.Permutation, "scan_positions")
        real = getattr(owner, name)

        def failing(self: Any, *a: Any, real: Any = real, **k: Any) -> Any:
            calls.append(threading.current_thread().name)
            if len(calls) <= fails:
                raise OSError(f"store went away reading {uri}")
            return real(self, *a, **k)

        monkeypatch.setattr(owner, name, failing)
        # The background read fails: the first batch reads again, and the epoch is whole.
        calls.clear()
        fails = 1
        loader = lancefeed.DataLoader(uri, **kw)
        got = list(loader)
        assert calls[0] == "lancefeed-prefill" and len(calls) == 2
        assert len(got) == len(want) and all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(got, want))
        # Every read fails: the error comes out of the loop, naming the dataset.
        calls.clear()
        fails = 10
        with pytest.raises(OSError, match=re.escape(uri)):
            list(lancefeed.DataLoader(uri, **kw))
        # Nothing to read before the first batch (no cache): no thread reads.
        calls.clear()
        fails = 0
        assert list(lancefeed.DataLoader(uri, cache=False, **kw)) and "lancefeed-prefill" not in calls
        monkeypatch.setattr(owner, name, real)


def test_cache_auto_keeps_only_small_datasets(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import lancefeed.reads.cache as cache_module

    assert lancefeed.DataLoader(uri, batch_size=4).reader.cache  # a few KB
    monkeypatch.setattr(cache_module, "CACHE_BYTES", 16)
    # Over the budget: no row is kept; each epoch reads its rows (in place here).
    over = lancefeed.DataLoader(uri, batch_size=4)
    assert len(epoch_ids(over)) == N and len(epoch_ids(over)) == N
    assert not over.reader.cache and over.reader.kept_rows == 0 and _rows_read(over) == 2 * N
    assert lancefeed.DataLoader(uri, batch_size=4, cache=True).reader.cache
    with pytest.raises(ValueError, match="cache must be"):
        lancefeed.DataLoader(uri, batch_size=4, cache="yes")


# -- epochs, ranks, determinism -----------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_each_sample_once_per_epoch_across_ranks(uri: str, world_size: int) -> None:
    loaders = [
        lancefeed.DataLoader(uri, batch_size=7, shuffle=True, seed=3, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    assert len({len(ld) for ld in loaders}) == 1
    epochs = []
    for epoch in range(3):  # each iteration is the next epoch
        per_rank = [epoch_ids(ld) for ld in loaders]
        assert {len(ids) for ids in per_rank} == {N // world_size}
        everything = [i for ids in per_rank for i in ids]
        assert len(set(everything)) == len(everything)  # no duplicate, within or across ranks
        dropped = set(range(N)) - set(everything)
        order = epoch_order(N, shuffle=True, seed=3, epoch=epoch)
        assert dropped == set(order[N - N % world_size :].tolist())  # only the documented remainder
        epochs.append(everything)
    assert epochs[0] != epochs[1] != epochs[2]  # a new order every epoch


def test_torch_distributed_gives_the_default_rank(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 3)
    loader = lancefeed.DataLoader(uri, batch_size=4)
    assert (loader.rank, loader.world_size, len(loader)) == (1, 3, 4)
    assert epoch_ids(loader) == list(range(16, 32))


def test_same_seed_same_batches_and_set_epoch(uri: str) -> None:
    flip = lancefeed.RandomHorizontalFlip()
    a = lancefeed.DataLoader(uri, batch_size=8, shuffle=True, seed=11, transform=flip)
    b = lancefeed.DataLoader(uri, batch_size=8, shuffle=True, seed=11, transform=flip)
    c = lancefeed.DataLoader(uri, batch_size=8, shuffle=True, seed=12, transform=flip)
    run_a = [(sample_ids(x), flipped(x)) for x, _ in a]
    assert run_a == [(sample_ids(x), flipped(x)) for x, _ in b]
    assert [i for ids, _ in run_a for i in ids] != epoch_ids(c)
    assert 0 < sum(f for _, fl in run_a for f in fl) < N  # the flip does happen, not always
    b.set_epoch(0)
    assert [(sample_ids(x), flipped(x)) for x, _ in b] == run_a
    second = [(sample_ids(x), flipped(x)) for x, _ in a]  # epoch 1
    assert second != run_a
    b.set_epoch(1)
    assert [(sample_ids(x), flipped(x)) for x, _ in b] == second


def test_augmentation_follows_the_sample_not_the_batch(uri: str) -> None:
    flip = lancefeed.RandomHorizontalFlip()

    def by_sample(loader: Any) -> dict[int, bool]:
        return {i: f for x, _ in loader for i, f in zip(sample_ids(x), flipped(x))}

    one = by_sample(lancefeed.DataLoader(uri, batch_size=4, shuffle=True, seed=2, transform=flip))
    other = by_sample(lancefeed.DataLoader(uri, batch_size=9, shuffle=True, seed=2, transform=flip))
    ranks = {}
    for r in range(2):
        ranks.update(by_sample(lancefeed.DataLoader(uri, 3, shuffle=True, seed=2, transform=flip, rank=r, world_size=2)))
    assert one == other
    assert all(one[i] == f for i, f in ranks.items())


def test_the_epoch_is_fixed_at_the_first_next_not_at_iter(uri: str) -> None:
    loader = lancefeed.DataLoader(uri, batch_size=10, shuffle=True, seed=9)
    unused = iter(loader)  # never advanced: starts nothing, uses no epoch
    assert our_threads() == []
    it = iter(loader)
    loader.set_epoch(3)  # as Lightning does between iter() and the first batch
    ids = [i for x, _ in it for i in sample_ids(x)]
    assert ids == epoch_order(N, shuffle=True, seed=9, epoch=3).tolist()
    # Advanced later, the first iterator reads the epoch after: 4.
    assert [i for x, _ in unused for i in sample_ids(x)] == epoch_order(N, shuffle=True, seed=9, epoch=4).tolist()
    state = loader.state_dict()
    assert (state["epoch"], state["batches_consumed"]) == (4, 5)


def test_len_counts_drop_last_and_ranks(uri: str) -> None:
    assert len(lancefeed.DataLoader(uri, batch_size=8)) == 7
    assert len(lancefeed.DataLoader(uri, batch_size=8, drop_last=True)) == 6
    assert len(lancefeed.DataLoader(uri, batch_size=6, rank=0, world_size=3)) == 3  # 16 samples a rank
    assert len(lancefeed.DataLoader(uri, batch_size=6, rank=2, world_size=3, drop_last=True)) == 2
    loader = lancefeed.DataLoader(uri, batch_size=8, drop_last=True)
    assert [len(x) for x, _ in loader] == [8] * 6


# -- resume -------------------------------------------------------------------------


@pytest.mark.parametrize("stop", [0, 1, 3, 6, 7])
def test_resume_gives_the_uninterrupted_batches(uri: str, stop: int) -> None:
    kw: dict[str, Any] = dict(batch_size=7, shuffle=True, seed=4, transform=lancefeed.RandomHorizontalFlip())
    full = lancefeed.DataLoader(uri, **kw)
    expect = [[(sample_ids(x), flipped(x), y.tolist()) for x, y in full] for _ in range(2)]  # epochs 0, 1

    first = lancefeed.DataLoader(uri, **kw)
    it = iter(first)
    got = [(sample_ids(x), flipped(x), y.tolist()) for _, (x, y) in zip(range(stop), it)]
    state = first.state_dict()
    del it
    assert state["epoch"] == 0 and state["batches_consumed"] == stop

    resumed = lancefeed.DataLoader(uri, **{**kw, "seed": 0})  # the seed comes from the state
    resumed.load_state_dict(state)
    got += [(sample_ids(x), flipped(x), y.tolist()) for x, y in resumed]
    got_second = [(sample_ids(x), flipped(x), y.tolist()) for x, y in resumed]
    assert got == expect[0]
    assert got_second == expect[1]


def test_resume_with_set_epoch_keeps_the_position(uri: str) -> None:
    loader = lancefeed.DataLoader(uri, batch_size=10, shuffle=True, seed=1)
    loader.set_epoch(3)
    expect = epoch_ids(loader)
    loader.set_epoch(3)
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    it.close()
    resumed = lancefeed.DataLoader(uri, batch_size=10, shuffle=True, seed=1)
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # what a DDP loop or Lightning does at the start of the epoch
    assert epoch_ids(resumed) == expect[20:]
    resumed.set_epoch(4)
    assert len(epoch_ids(resumed)) == N


def test_load_state_refuses_another_epoch(uri: str) -> None:
    state = lancefeed.DataLoader(uri, batch_size=10, shuffle=True).state_dict()
    with pytest.raises(ValueError, match="shuffle=True but this loader has shuffle=False"):
        lancefeed.DataLoader(uri, batch_size=5).load_state_dict(state)
    with pytest.raises(ValueError, match="missing"):
        lancefeed.DataLoader(uri, batch_size=5).load_state_dict({"epoch": 1})


def _run_ranks(uri: str, world_size: int, batch_size: int, steps: Any, state: Any = None) -> tuple:
    """Each rank of a run: load ``state``, read ``steps`` batches (all when None).
    Returns the ids each rank read, and rank 0's state after."""
    read, states = [], []
    for rank in range(world_size):
        loader = lancefeed.DataLoader(uri, batch_size, shuffle=True, seed=4, rank=rank, world_size=world_size)
        loader.set_epoch(2)
        if state is not None:
            loader.load_state_dict(state)
        ids = []
        it = iter(loader)
        for k, (images, _) in enumerate(it):
            ids += sample_ids(images)
            if steps is not None and k + 1 == steps:
                break
        it.close()
        read.append(ids)
        states.append(loader.state_dict())
    assert all(st == states[0] for st in states)  # every rank saves the same state
    return read, states[0]


@pytest.mark.parametrize("worlds", [(3, 2), (2, 3), (3, 2, 3), (1, 4)])
def test_resume_on_another_world_size_reads_the_rest_of_the_epoch_once(uri: str, worlds: tuple) -> None:
    seen: List[int] = []
    state = None
    for k, world in enumerate(worlds):
        last = k == len(worlds) - 1
        read, state = _run_ranks(uri, world, 4, None if last else 2, state)
        # Every rank runs the same number of steps.
        assert len({-(-len(r) // 4) for r in read}) == 1, [len(r) for r in read]
        seen += [i for r in read for i in r]
    assert len(seen) == len(set(seen)), "a sample was read twice in the epoch"
    # Left out: at most the remainder of each re-shard.
    assert N - len(seen) <= sum(w - 1 for w in worlds), (N, len(seen))
    fresh = lancefeed.DataLoader(uri, 4, shuffle=True, seed=4, rank=0, world_size=worlds[-1])
    fresh.load_state_dict(state)
    assert fresh.epoch == 3 and len(fresh) == N // worlds[-1] // 4 + (N // worlds[-1] % 4 > 0)  # the epoch is done


def test_resume_with_another_batch_size_reads_the_rest_once(uri: str) -> None:
    first, state = _run_ranks(uri, 2, 4, 3)
    rest, _ = _run_ranks(uri, 2, 7, None, state)
    ids = [i for r in first + rest for i in r]
    assert len(ids) == len(set(ids)) == N


def test_same_world_size_resume_is_the_uninterrupted_run(uri: str) -> None:
    whole, _ = _run_ranks(uri, 2, 4, None)
    first, state = _run_ranks(uri, 2, 4, 3)
    rest, _ = _run_ranks(uri, 2, 4, None, state)
    assert [a + b for a, b in zip(first, rest)] == whole


# -- errors -------------------------------------------------------------------------


def test_bad_rows_raise_with_the_row_or_are_skipped(tmp_path: Path) -> None:
    uri = make_dataset(tmp_path, n=12, bad=(5,))
    loader = lancefeed.DataLoader(uri, batch_size=4)
    it = iter(loader)
    next(it)
    with pytest.raises(lancefeed.DecodeError, match=r"row 5 of the dataset \(filename 'img5.png'\), position 5 of the loader's permutation \(epoch 0\)"):
        next(it)
    del it
    skip = lancefeed.DataLoader(uri, batch_size=4, on_error="skip", label_column="idx")
    batches = list(skip)
    assert [len(y) for _, y in batches] == [4, 3, 4]
    assert [i for x, y in batches for i in sample_ids(x)] == [i for i in range(12) if i != 5]
    assert [i for x, y in batches for i in y.tolist()] == [i for i in range(12) if i != 5]
    assert [r for r, _ in skip.skipped] == [5]


@pytest.mark.parametrize("group", [1, 4])
def test_shuffled_columns_stay_with_their_images_around_skipped_rows(tmp_path: Path, group: int) -> None:
    # Takes come back in storage order and are gathered into sample order: every
    # column of a batch must still line up with its image, also where a bad row drops out.
    uri = make_dataset(tmp_path, n=30, bad=(7, 19))
    loader = lancefeed.DataLoader(uri, batch_size=5, shuffle=True, seed=2, output="dict", on_error="skip")
    loader.reader.rows_per_take = 5 * group
    seen = []
    for batch in loader:
        ids = sample_ids(batch["image"])
        assert batch["idx"].tolist() == ids
        assert batch["filename"] == [f"img{i}.png" for i in ids]
        assert batch["label"].tolist() == [loader.classes.index(LABELS[i % 3]) for i in ids]
        assert [b[:, 0].tolist() for b in batch["boxes"]] == [[float(i)] * (i % 3) for i in ids]
        assert batch["tags"] == [[LABELS[(i + j) % 3] for j in range(i % 3)] for i in ids]
        seen += ids
    assert sorted(seen) == [i for i in range(30) if i not in (7, 19)]
    assert seen != sorted(seen)
    assert sorted(r for r, _ in loader.skipped) == [7, 19]


@pytest.mark.parametrize(
    "kw",
    [
        {},  # images at their own size: the output's shape is not known before decoding
        {"transform": lancefeed.Compose([lancefeed.RandomResizedCrop((4, 4)), lancefeed.RandomHorizontalFlip()])},
        {"transform": lancefeed.RandomResizedCrop((4, 4)), "normalize": ((0.5,), (0.25,))},
    ],
    ids=["own-size", "crop", "normalized"],
)
def test_a_takes_batches_decoded_together_are_the_batches_decoded_alone(tmp_path: Path, kw: dict) -> None:
    # The batches of one take are decoded by one call and handed out as views of its
    # output: each must hold exactly its own rows (bad ones skipped from it alone), with
    # its columns, pixels and draws as when each batch is decoded by a call of its own.
    uri = make_dataset(tmp_path, n=30, bad=(3, 4, 17))
    runs = {}
    for group in (1, 6):
        loader = lancefeed.DataLoader(uri, batch_size=5, shuffle=True, seed=4, on_error="skip", label_column="idx", **kw)
        loader.reader.rows_per_take = 5 * group
        runs[group] = [(x.clone(), y.clone()) for x, y in loader]
        assert sorted(r for r, _ in loader.skipped) == [3, 4, 17]
    alone, together = runs[1], runs[6]
    assert [len(y) for _, y in together] == [len(y) for _, y in alone]
    assert sum(len(y) for _, y in together) == 27 and min(len(y) for _, y in together) < 5
    for (xa, ya), (xt, yt) in zip(alone, together):
        assert torch.equal(ya, yt)
        assert torch.equal(xa, xt)
    if not kw:
        assert [sample_ids(x) for x, _ in together] == [y.tolist() for _, y in together]


def test_a_bad_row_raises_after_the_batches_before_its_own_in_a_joint_take(tmp_path: Path) -> None:
    uri = make_dataset(tmp_path, n=30, bad=(13,))
    loader = lancefeed.DataLoader(uri, batch_size=4, label_column="idx")
    loader.reader.rows_per_take = 24
    got = []
    with pytest.raises(lancefeed.DecodeError, match=r"row 13 of the dataset \(filename 'img13.png'\), position 13 of the loader's permutation \(epoch 0\)"):
        for _, y in loader:
            got.append(y.tolist())
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_construction_errors_name_what_is_wrong(uri: str) -> None:
    with pytest.raises(ValueError, match=r"columns \['nope'\] not in the dataset; available columns"):
        lancefeed.DataLoader(uri, batch_size=4, columns=["nope"])
    with pytest.raises(ValueError, match="image column 'label' is string; expected binary"):
        lancefeed.DataLoader(uri, batch_size=4, image_column="label")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        lancefeed.DataLoader(uri, batch_size=0)
    with pytest.raises(ValueError, match="pass both rank and world_size"):
        lancefeed.DataLoader(uri, batch_size=4, rank=1)
    with pytest.raises(TypeError, match="source must be a URI"):
        lancefeed.DataLoader(42, batch_size=4)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_device_without_cuda_is_a_clear_error(uri: str) -> None:
    with pytest.raises(RuntimeError, match="device='cuda' but CUDA is not available"):
        lancefeed.DataLoader(uri, batch_size=4, device="cuda")


def test_source_may_be_a_dataset_or_a_permutation(uri: str) -> None:
    ds = lance.dataset(uri)
    assert epoch_ids(lancefeed.DataLoader(ds, batch_size=16)) == list(range(N))
    perm = lancefeed.Permutation.identity(uri)
    assert epoch_ids(lancefeed.DataLoader(perm, batch_size=16, shuffle=True)) != list(range(N))


@pytest.mark.parametrize("group", [1, 3, 100])
def test_one_take_for_several_batches_changes_nothing(uri: str, group: int) -> None:
    kw: dict[str, Any] = dict(batch_size=4, shuffle=True, seed=6, transform=lancefeed.RandomHorizontalFlip())
    loader = lancefeed.DataLoader(uri, **kw)
    assert loader.reader.batches_per_take(4) == 256  # tiny images: 1024 rows a take
    expect = [(sample_ids(x), flipped(x), y.tolist()) for x, y in loader]
    grouped = lancefeed.DataLoader(uri, **kw)
    grouped.reader.rows_per_take = 4 * group
    assert [(sample_ids(x), flipped(x), y.tolist()) for x, y in grouped] == expect
    assert [len(b[0]) for b in expect] == [4] * 12 + [2]


def test_concurrent_takes_keep_the_order_and_gray_mode(uri: str) -> None:
    loader = lancefeed.DataLoader(uri, batch_size=3, shuffle=True, seed=8, io_threads=3, prefetch=1)
    assert epoch_ids(loader) == epoch_order(N, shuffle=True, seed=8, epoch=0).tolist()
    gray, _ = next(iter(lancefeed.DataLoader(uri, batch_size=3, mode="L")))
    assert gray.shape == (3, 4, W, 1) and gray.dtype == torch.uint8


# -- threads ------------------------------------------------------------------------


def test_break_exception_and_del_leave_no_thread(uri: str) -> None:
    assert our_threads() == []
    loader = lancefeed.DataLoader(uri, batch_size=2, prefetch=2)
    for _ in loader:
        assert our_threads()  # the pipeline runs in the background
        break
    assert our_threads() == []

    with pytest.raises(KeyError):
        for _ in loader:
            raise KeyError("boom in the training step")
    assert our_threads() == []

    it = iter(loader)
    next(it)
    del it, loader
    assert our_threads() == []


def test_pipeline_keeps_a_bounded_number_of_batches(uri: str) -> None:
    loader = lancefeed.DataLoader(uri, batch_size=2, prefetch=2, io_threads=1)
    loader.reader.rows_per_take = 2
    taken: List[int] = []
    real_take = loader.reader.take

    def counting_take(positions: np.ndarray) -> Any:
        taken.append(int(positions[0]))
        return real_take(positions)

    loader.reader.take = counting_take  # type: ignore[method-assign]
    it = iter(loader)
    next(it)
    # Let the pipeline fill up while the loop "trains": wait for the batch handed out
    # and the 2 queued (however slow the machine), then give it time to overrun.
    deadline = time.monotonic() + 120
    while len(taken) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)
    # one handed out + 2 queued + 1 blocked in the driver + takes ahead (prefetch + io_threads)
    assert 3 <= len(taken) <= 1 + 2 + 1 + 3
    it.close()
    assert our_threads() == []


def test_exit_with_an_unfinished_iterator_does_not_hang(uri: str) -> None:
    code = textwrap.dedent(
        f"""
        import lancefeed
        loader = lancefeed.DataLoader({uri!r}, batch_size=2, prefetch=1)
        it = iter(loader)
        next(it)
        print("ok", flush=True)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_exit_while_the_prefill_scan_runs_is_clean(tmp_path: Path) -> None:
    # Small rows are scanned into the cache by a thread the constructor starts. A script
    # that builds a loader and ends before that scan does (a quick check, a failed
    # config) used to abort in about a third of runs ("terminate called without an
    # active exception", exit -6): the interpreter's shutdown stopped the thread inside
    # native code. Exit now waits for the scan. CIFAR-10's shape: 50,000 rows of ~1 KB.
    n, rng = 50_000, np.random.default_rng(0)
    blob = rng.integers(0, 256, size=n * 900, dtype=np.uint8).tobytes()
    table = pa.table(
        {
            "image": pa.array([blob[i * 900 : (i + 1) * 900] for i in range(n)], pa.binary()),
            "filename": pa.array([f"img_{i:06d}.jpg" for i in range(n)]),
            "label": pa.array([LABELS[i % 3] for i in range(n)]),
            "split": pa.array(["train"] * n),
        }
    )
    path = str(tmp_path / "small-rows.lance")
    lance.write_dataset(table, path)
    code = textwrap.dedent(
        f"""
        import lancefeed
        loader = lancefeed.DataLoader({path!r}, batch_size=256, shuffle=True)
        print("ok", loader.reader.prefill, flush=True)
        """
    )
    for _ in range(6):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.split() == ["ok", "True"], (proc.returncode, proc.stderr[-500:])


def test_del_loader_mid_epoch_frees_it(uri: str) -> None:
    import weakref

    loader = lancefeed.DataLoader(uri, batch_size=2)
    for i, _ in enumerate(loader):
        if i == 2:
            break
    gone = weakref.ref(loader)
    del loader
    gc.collect()
    assert gone() is None  # nothing holds the loader: its memory is freed
    assert our_threads() == []
