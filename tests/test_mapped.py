"""A local dataset's image column read in place from its mapped data files.

The bytes must be Lance's own, row for row and in dataset order, whatever the page
and fragment layout; anything the reader cannot check must give None (Lance reads it);
and a loader over such a dataset must give the batches it gives without the mapping,
with no Lance scan or take at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List

import lance
import numpy as np
import pyarrow as pa
import pytest
import torch
from lance.file import LanceFileReader

import lancefeed
import lancefeed.loader as loader_module
import lancefeed.mapped as mapped_module
from lancefeed.mapped import mapped_column
from images import jpeg


def values(n: int, seed: int = 0) -> List[bytes]:
    """Random blobs of 400-3,000 bytes (Lance writes them as full-zip pages), with an
    empty one and short ones (a binary view holds up to 12 bytes inline) among them."""
    rng = np.random.default_rng(seed)
    out = [rng.integers(0, 256, int(rng.integers(400, 3000)), dtype=np.uint8).tobytes() for _ in range(n)]
    out[3], out[5], out[7], out[8] = b"", b"x", bytes(range(12)), bytes(range(13))
    return out


def write(path: Path, blobs: List[bytes], **kw: Any) -> lance.LanceDataset:
    table = pa.table({"image": pa.array(blobs, pa.binary()), "label": pa.array([i % 3 for i in range(len(blobs))])})
    lance.write_dataset(table, str(path), **kw)
    return lance.dataset(str(path))


def as_lance_reads_it(ds: lance.LanceDataset) -> pa.Table:
    return ds.to_table(columns=["image"], with_row_id=True)


def test_every_row_reads_as_lance_reads_it(tmp_path: Path) -> None:
    blobs = values(100)
    ds = write(tmp_path / "ds.lance", blobs, max_rows_per_file=40)  # three fragments
    got = mapped_column(ds, "image")
    assert got is not None
    images, row_ids = got
    assert images.type == pa.binary_view() and images.num_chunks == 3
    images.validate(full=True)  # views within their buffers, short values inline
    want = as_lance_reads_it(ds)
    assert images.cast(pa.binary()).to_pylist() == want.column("image").to_pylist() == blobs
    np.testing.assert_array_equal(row_ids, want.column("_rowid").to_numpy())


def test_values_past_a_views_offset_range_are_reached_through_later_buffers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A view's offset is an int32: a page is addressed through buffers that start every
    # _WINDOW bytes. A small window makes a test-sized page need several.
    monkeypatch.setattr(mapped_module, "_WINDOW", 1000)
    blobs = values(60, seed=1)
    ds = write(tmp_path / "ds.lance", blobs)
    images, _ = mapped_column(ds, "image")  # type: ignore[misc]
    assert len(images.chunk(0).buffers()) > 10
    images.validate(full=True)
    assert images.cast(pa.binary()).to_pylist() == blobs


def test_what_cannot_be_checked_is_left_to_lance(tmp_path: Path) -> None:
    blobs = values(50)
    # Deleted rows (their values are still in the file).
    ds = write(tmp_path / "deleted.lance", blobs)
    ds.delete("label = 1")
    assert mapped_column(lance.dataset(str(tmp_path / "deleted.lance")), "image") is None
    # Values small enough that Lance packs them in mini-blocks, and the 2.0 file layout.
    assert mapped_column(write(tmp_path / "small.lance", [bytes([i]) * 20 for i in range(50)]), "image") is None
    assert mapped_column(write(tmp_path / "v20.lance", blobs, data_storage_version="2.0"), "image") is None
    # Not a binary column; no such column.
    ds = write(tmp_path / "ok.lance", blobs)
    assert mapped_column(ds, "label") is None and mapped_column(ds, "nope") is None
    # A file whose length prefixes disagree with its index (a layout this reader does
    # not know reads the same way): the check of every row refuses it.
    data = tmp_path / "ok.lance" / "data"
    (name,) = os.listdir(data)
    page = LanceFileReader(str(data / name)).metadata().columns[0].pages[0]
    raw = bytearray((data / name).read_bytes())
    raw[page.buffers[0].position] ^= 1  # the first value's length, one off
    (data / name).write_bytes(bytes(raw))
    assert mapped_column(lance.dataset(str(tmp_path / "ok.lance")), "image") is None


def images_dataset(path: Path, n: int, size: int) -> str:
    blobs = [jpeg(size, size, seed=i, quality=95) for i in range(n)]
    write(path, blobs, max_rows_per_file=n // 2 + 1)
    return str(path)


def _refuse(*a: Any, **k: Any) -> Any:
    raise AssertionError("read through Lance")


@pytest.mark.parametrize("size", [32, 160])
def test_a_loader_reads_a_local_dataset_in_place(tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = images_dataset(tmp_path / "ds.lance", 40, size)
    kw: dict = dict(batch_size=6, shuffle=True, seed=3, transform=lancefeed.RandomResizedCrop(24))
    plain = lancefeed.DataLoader(uri, cache=False, **kw)
    want = [[(x.clone(), y.clone()) for x, y in plain] for _ in range(2)]
    monkeypatch.setattr(loader_module, "_SCAN_ROW_BYTES", 4000)  # 32x32: scanned; 160x160: taken
    monkeypatch.setattr(loader_module._BatchMaker, "scan", _refuse)  # the prefill's scans too
    loader = lancefeed.DataLoader(uri, **kw)
    maker = loader._maker
    small = size == 32
    assert (maker.prefill, maker.map_first) == (small, not small)
    maker.take_perm.take_positions_sorted = _refuse
    for epoch in range(2):
        got = list(loader)
        assert len(got) == len(want[epoch])
        for (a, b), (c, d) in zip(got, want[epoch]):
            assert torch.equal(b, d)
            # Small images' later epochs crop from the pixel cache (whole decoded images).
            assert torch.equal(a, c) or (small and epoch > 0)
    assert maker._rows.table.column("image").type == pa.binary_view()
    assert (maker.pixels is not None) == small  # larger rows keep decoding each epoch
    assert loader.stats()["bytes_read"] > 0


def test_the_mapping_can_be_turned_off_and_falls_back_where_it_cannot_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = images_dataset(tmp_path / "ds.lance", 30, 32)
    kw: dict = dict(batch_size=4, shuffle=True, seed=1, transform=lancefeed.RandomHorizontalFlip())
    want = [(x.clone(), y.clone()) for x, y in lancefeed.DataLoader(uri, cache=False, **kw)]

    def epoch(loader: Any) -> None:
        got = list(loader)
        assert len(got) == len(want) and all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(got, want))

    monkeypatch.setenv("LANCEFEED_MMAP", "0")
    off = lancefeed.DataLoader(uri, **kw)
    epoch(off)
    assert off._maker._rows.table.column("image").type == pa.binary()  # read by Lance's scans
    monkeypatch.delenv("LANCEFEED_MMAP")
    # A file the reader refuses: Lance's scans read it, the same batches.
    monkeypatch.setattr(mapped_module, "_page", lambda mapped, page: None)
    refused = lancefeed.DataLoader(uri, **kw)
    epoch(refused)
    assert refused._maker._rows.table.column("image").type == pa.binary()


def test_a_dataset_over_the_cache_budget_is_still_read_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Mapped rows are the page cache's, not the loader's memory: a dataset the row cache
    # would not hold is mapped all the same (within half the machine's memory).
    uri = images_dataset(tmp_path / "ds.lance", 30, 64)
    kw: dict = dict(batch_size=4, shuffle=True, seed=4, transform=lancefeed.RandomResizedCrop(24))
    want = [[(x.clone(), y.clone()) for x, y in lancefeed.DataLoader(uri, cache=False, **kw)]]
    monkeypatch.setattr(loader_module, "_CACHE_BYTES", 1)
    loader = lancefeed.DataLoader(uri, **kw)
    maker = loader._maker
    assert (maker.cache, maker.prefill, maker.map_first, maker.map_only) == (True, False, True, True)
    assert maker.pixels is None
    maker.take_perm.take_positions_sorted = _refuse
    got = list(loader)
    assert len(got) == len(want[0]) and all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(got, want[0]))
    # cache=False is a choice: then Lance reads every batch, as before.
    assert not lancefeed.DataLoader(uri, cache=False, **kw)._maker.map_first
    # A file the reader refuses: takes read it, and no row is kept (it is over the budget).
    monkeypatch.setattr(mapped_module, "_page", lambda mapped, page: None)
    refused = lancefeed.DataLoader(uri, **kw)
    assert refused._maker.map_only
    got = list(refused)
    assert len(got) == len(want[0]) and all(torch.equal(a, c) for (a, _), (c, _) in zip(got, want[0]))
    assert not refused._maker.cache and refused._maker._rows.rows == 0


def test_a_split_and_shuffled_permutation_picks_its_rows_from_the_mapped_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The seeds' flow: a random split, shuffled; neither every row nor storage order.
    uri = images_dataset(tmp_path / "ds.lance", 40, 48)
    table = lancefeed.permutation_builder(uri).split_random(ratios=[0.75, 0.25], seed=5, split_names=["train", "val"]).shuffle(seed=2).execute()
    kw: dict = dict(batch_size=5, shuffle=True, seed=8, transform=lancefeed.RandomResizedCrop(24))
    for split in ("train", "val"):
        perm = lancefeed.Permutation.from_tables(uri, table, split=split)
        want = [(x.clone(), y.clone()) for x, y in lancefeed.DataLoader(perm, cache=False, **kw)]
        loader = lancefeed.DataLoader(perm, **kw)
        maker = loader._maker
        assert maker.map_first and not maker.prefill
        maker.take_perm.take_positions_sorted = _refuse
        got = list(loader)
        assert len(got) == len(want) == -(-len(perm) // 5)
        assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(got, want))
        assert maker._rows.table.column("image").type == pa.binary_view()
        # Small rows kept: later epochs crop from whole decoded images, as without a split.
        assert maker.pixels is not None
        later = list(loader)
        assert sorted(int(v) for _, y in later for v in y) == sorted(int(v) for _, y in got for v in y)
        assert loader.stats()["pixel_cache_rows"] == len(perm)
