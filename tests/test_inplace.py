"""The in-place read of a local dataset's image column (lancefeed.reads.inplace).

The bytes must be Lance's own, row for row, whatever the page layout; what the reader
does not know (or cannot check) goes to Lance's reader and says so; a file that changes
or fails under it gives an error, never a signal. The writer matrix (test_writers.py)
runs the loader over every writer; these tests pin the reader's own parts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, List

import lance
import numpy as np
import pyarrow as pa
import pytest
from lance.file import LanceFileReader

import lancefeed
import lancefeed.reads.inplace as inplace
from lancefeed.reads import InPlaceColumn, InPlaceReadWarning, NotInPlace
from lancefeed.reads.lance_file import column_pages, decode_fields
from lancefeed.source import live_row_ids
from images import jpeg


def values(n: int, seed: int = 0) -> List[bytes]:
    """Random blobs of 300-3,000 bytes, and an empty one and short ones (a binary view
    holds up to 12 bytes inline) among them."""
    rng = np.random.default_rng(seed)
    out = [rng.integers(0, 256, int(rng.integers(300, 3000)), dtype=np.uint8).tobytes() for _ in range(n)]
    out[3], out[5], out[7], out[8] = b"", b"x", bytes(range(12)), bytes(range(13))
    return out


def big_values(n: int, seed: int = 0) -> List[bytes]:
    """Incompressible blobs of 40-300 KB (Lance's per-value zstd: raw frames of one to
    three blocks), and two that compress (zstd keeps compressed blocks)."""
    rng = np.random.default_rng(seed)
    out = [rng.integers(0, 256, int(rng.integers(40_000, 300_000)), dtype=np.uint8).tobytes() for _ in range(n)]
    out[2] = b"lancefeed " * 5000
    out[min(5, n - 1)] = out[min(5, n - 1)][:20_000] + bytes(60_000)
    return out


COMPRESSIBLE = {b"lancefeed " * 5000}


def write(path: Path, blobs: List[bytes], kind: pa.DataType = pa.binary(), **kw: Any) -> lance.LanceDataset:
    """``blobs`` as the ``image`` column; ``metadata`` on its field; ``batches``: rows a
    batch handed to the writer (with ``data_cache_bytes``: a page every few batches)."""
    meta = kw.pop("metadata", None)
    rows = kw.pop("batches", None)
    table = pa.table({"image": pa.array(blobs, kind), "label": pa.array([i % 3 for i in range(len(blobs))])})
    if meta:
        table = table.set_column(0, pa.field("image", kind, metadata=meta), table.column(0))
    data: Any = table if rows is None else pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=rows))
    lance.write_dataset(data, str(path), **kw)
    return lance.dataset(str(path))


def lance_reads(ds: lance.LanceDataset) -> List[bytes]:
    return ds.to_table(columns=["image"]).column("image").to_pylist()


def test_the_file_metadata_decoded_here_is_lances_own(tmp_path: Path) -> None:
    # The structured decode against pylance's own reader of the same file: the same
    # pages, buffers and row counts, and the layout its printed form names.
    cases = {
        "raw": (values(60), {}),
        "zstd": (big_values(12), {}),
        "large": (big_values(6), {"kind": pa.large_binary()}),
        "none": (big_values(6), {"metadata": {"lance-encoding:compression": "none"}}),
        "mini": ([bytes([i]) * 20 for i in range(50)], {}),
        "pages": (values(400, seed=2), {"data_cache_bytes": 64 << 10, "batches": 50}),
    }
    if not _writes_pages():
        del cases["pages"]
    for name, (blobs, kw) in cases.items():
        ds = write(tmp_path / f"{name}.lance", blobs, **kw)
        (data_file,) = ds.get_fragments()[0].metadata.files
        path = str(tmp_path / f"{name}.lance" / "data" / data_file.path)
        theirs = LanceFileReader(path).metadata().columns[0].pages
        mine = column_pages(path, 0)
        assert len(mine) == len(theirs) and (name != "pages" or len(mine) > 1)
        for p, q in zip(mine, theirs):
            assert p.buffers == tuple((b.position, b.size) for b in q.buffers)
            printed = str(q.encoding)
            assert int(re.search(r"num_items: (\d+)", printed).group(1)) == p.rows == p.layout.num_items if p.layout.kind == "full_zip" else True
            if p.layout.kind == "full_zip":
                assert "FullZipLayout" in printed
                zstd = "CompressionAlgorithmZstd" in printed
                assert p.layout.values == ("zstd" if zstd else "raw")
                assert f"BitsPerOffset(\n                        {p.layout.bits_per_offset}," in printed
            else:
                assert p.layout.kind == "mini_block" and "MiniBlockLayout" in printed
    assert decode_fields(bytes([0x08, 0x96, 0x01, 0x12, 0x02, 0x68, 0x69])) == {1: [150], 2: [b"hi"]}


def _writes_pages() -> bool:
    """Whether this pylance takes ``data_cache_bytes`` (how a test gets several pages
    into one file; pylance 14 and later)."""
    import inspect

    return "data_cache_bytes" in inspect.signature(lance.write_dataset).parameters


@pytest.mark.parametrize(
    "case",
    ["raw", "zstd-frames", "large_binary", "none", "deletions", "stable-row-ids", "pages", "mixed-fragments"],
)
def test_in_place_reads_are_lances_reads(tmp_path: Path, case: str) -> None:
    if case == "pages" and not _writes_pages():
        pytest.skip(f"pylance {lance.__version__} writes one page a file for a dataset this small")
    path = tmp_path / "ds.lance"
    blobs = big_values(14) if case in ("zstd-frames", "large_binary", "none", "stable-row-ids") else values(100)
    kw: dict = {"max_rows_per_file": 6}
    if case == "large_binary":
        kw["kind"] = pa.large_binary()
    if case == "none":
        kw["metadata"] = {"lance-encoding:compression": "none"}
    if case == "stable-row-ids":
        kw["enable_stable_row_ids"] = True
    if case == "pages":
        kw = {"data_cache_bytes": 16 << 10, "batches": 10}
    ds = write(path, blobs, **kw)
    if case in ("deletions", "stable-row-ids"):
        ds.delete("label = 1")
    if case == "stable-row-ids":
        lance.dataset(str(path)).optimize.compact_files(target_rows_per_fragment=1000)
    if case == "mixed-fragments":  # small raw values, then ImageNet-sized zstd ones
        lance.write_dataset(pa.table({"image": pa.array(big_values(5), pa.binary()), "label": pa.array([0] * 5)}),
                            str(path), mode="append")
    ds = lance.dataset(str(path))
    col = InPlaceColumn.open(ds, "image")
    ids = live_row_ids(ds)
    want = lance_reads(ds)
    rng = np.random.default_rng(0)
    orders = (np.arange(len(ids)), rng.permutation(len(ids)), rng.permutation(len(ids))[: len(ids) // 3])
    for order in orders:
        got = col.read(ids[order])
        got.validate(full=True)
        assert got.type == pa.binary_view()
        assert got.to_pylist() == [want[i] for i in order]
    stats = col.stats()
    # Read through Lance: the values zstd compresses (Lance stores compressed blocks).
    compressed = {i for i, v in enumerate(want) if v in COMPRESSIBLE or v.endswith(bytes(60_000))}
    zstd = case in ("zstd-frames", "large_binary", "stable-row-ids", "mixed-fragments")
    assert compressed or not zstd
    expect = sum(int(np.isin(order, sorted(compressed)).sum()) for order in orders) if zstd else 0
    assert stats["rows_through_lance"] == expect
    assert stats["rows_in_place"] == sum(len(o) for o in orders) - expect
    assert stats["misread_rows"] == 0 and stats["compressed_rows"] == expect
    assert (stats["reason"] is None) == (expect == 0)


def test_values_past_a_views_offset_range_are_reached_through_later_windows(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A view's offset is an int32: what one read returns is addressed through buffers
    # that start every _WINDOW bytes. A small window makes a test-sized read need several.
    monkeypatch.setattr(inplace, "_WINDOW", 1000)
    blobs = values(60, seed=1)
    ds = write(tmp_path / "ds.lance", blobs)
    got = InPlaceColumn.open(ds, "image").read(live_row_ids(ds))
    assert len(got.buffers()) > 10
    got.validate(full=True)
    assert got.to_pylist() == blobs


def test_what_it_does_not_read_is_named(tmp_path: Path) -> None:
    blobs = values(50)
    cases = {
        "mini-block pages": write(tmp_path / "small.lance", [bytes([i]) * 20 for i in range(50)]),
        "Lance file version 2.0": write(tmp_path / "v20.lance", blobs, data_storage_version="2.0"),
        "a blob column": write(tmp_path / "blob.lance", blobs, kind=pa.large_binary(), metadata={"lance-encoding:blob": "true"}),
    }
    for why, ds in cases.items():
        with pytest.raises(NotInPlace, match=why):
            InPlaceColumn.open(ds, "image")
    ds = write(tmp_path / "ok.lance", blobs)
    with pytest.raises(NotInPlace, match="not binary"):
        InPlaceColumn.open(ds, "label")
    with pytest.raises(NotInPlace, match="no column"):
        InPlaceColumn.open(ds, "nope")


def test_a_file_that_disagrees_with_its_layout_is_refused_at_open(tmp_path: Path) -> None:
    # A length prefix that disagrees with the index (a layout this reader does not
    # know reads the same way): the check of the values read at open refuses it.
    ds = write(tmp_path / "ok.lance", values(50))
    data = tmp_path / "ok.lance" / "data"
    (name,) = os.listdir(data)
    page = LanceFileReader(str(data / name)).metadata().columns[0].pages[0]
    raw = bytearray((data / name).read_bytes())
    raw[page.buffers[0].position] ^= 1  # the first value's length, one off
    (data / name).write_bytes(bytes(raw))
    with pytest.raises(NotInPlace, match="length prefix"):
        InPlaceColumn.open(lance.dataset(str(tmp_path / "ok.lance")), "image")


def test_bytes_that_differ_from_lances_read_are_refused_at_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = write(tmp_path / "ok.lance", big_values(8))
    real = inplace.InPlaceColumn._take
    monkeypatch.setattr(inplace.InPlaceColumn, "_take", lambda self, e: pa.array([b"other"] * len(e), pa.binary_view()))
    with pytest.raises(NotInPlace, match="differs from Lance's take"):
        InPlaceColumn.open(ds, "image")
    monkeypatch.setattr(inplace.InPlaceColumn, "_take", real)
    InPlaceColumn.open(ds, "image")


def test_a_file_that_changes_after_open_is_read_through_lance_with_a_warning(tmp_path: Path) -> None:
    ds = write(tmp_path / "ok.lance", values(50))
    col = InPlaceColumn.open(ds, "image")
    data = tmp_path / "ok.lance" / "data"
    (name,) = os.listdir(data)
    page = LanceFileReader(str(data / name)).metadata().columns[0].pages[0]
    with open(data / name, "r+b") as f:  # the same file, changed in place
        f.seek(page.buffers[0].position + 1)
        f.write(b"\x7f")
    # Never passed on as an image: the warning, then Lance's own read of those rows,
    # which finds the file corrupt (an OSError; a Rust panic in pylance before 14).
    with pytest.warns(InPlaceReadWarning, match="disagrees with its layout"), pytest.raises(BaseException) as info:
        col.read(live_row_ids(ds)[:4])
    assert isinstance(info.value, OSError) or type(info.value).__name__ == "PanicException", info.value
    assert col.stats()["misread_rows"] > 0


def _loader_script(uri: str, cache: bool) -> str:
    return textwrap.dedent(
        f"""
        import os, lancefeed
        loader = lancefeed.DataLoader({uri!r}, batch_size=4, cache={cache}, label_column=None,
                                      transform=lancefeed.Resize((16, 16)))
        loader.reader.rows_per_take = 4
        it = iter(loader)
        next(it)
        data = os.path.join({uri!r}, "data")
        for name in os.listdir(data):  # as an outside copy or a failing file system would
            with open(os.path.join(data, name), "r+b") as f:
                f.truncate(os.path.getsize(os.path.join(data, name)) // 3)
        try:
            for _ in it:
                pass
        except OSError as exc:
            print("OSError", exc)
        else:
            print("no error")
        print("read_path", loader.stats()["read_path"])
        """
    )


@pytest.mark.parametrize("cache", [False, True])
def test_a_data_file_truncated_mid_epoch_is_an_error_not_a_signal(tmp_path: Path, cache: bool) -> None:
    # ImageNet-sized rows (Lance's default zstd frames): read take by take, so the
    # epoch's later takes meet the truncated file.
    blobs = [jpeg(400, 300, seed=i, quality=95) for i in range(64)]
    uri = str(tmp_path / "ds.lance")
    write(tmp_path / "ds.lance", blobs)
    proc = subprocess.run([sys.executable, "-c", _loader_script(uri, cache)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])  # SIGBUS would be -7
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("OSError") and uri in lines[0], proc.stdout
    assert lines[-1] == "read_path in_place"


def test_a_loader_reads_a_local_dataset_in_place_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = [jpeg(96, 96, seed=i, quality=95) for i in range(30)]
    uri = str(tmp_path / "ds.lance")
    write(tmp_path / "ds.lance", blobs)
    kw: dict = dict(batch_size=6, shuffle=True, seed=3, transform=lancefeed.RandomResizedCrop(24), label_column="label")
    monkeypatch.setenv("LANCEFEED_IN_PLACE", "0")
    off = lancefeed.DataLoader(uri, cache=False, **kw)
    want = [(x.clone(), y.clone()) for x, y in off]
    assert off.stats()["read_path"] == "lance" and off.stats()["read_path_reason"] == "turned off (LANCEFEED_IN_PLACE=0)"
    monkeypatch.delenv("LANCEFEED_IN_PLACE")

    def refuse(*a: Any, **k: Any) -> Any:
        raise AssertionError("the image column read through Lance")

    loader = lancefeed.DataLoader(uri, cache=False, **kw)
    loader.reader.take_perm.take_positions_sorted = refuse  # type: ignore[method-assign]
    got = list(loader)
    assert len(got) == len(want) and all(a.equal(c) and b.equal(d) for (a, b), (c, d) in zip(got, want))
    stats = loader.stats()
    assert (stats["read_path"], stats["read_path_reason"], stats["rows_in_place"]) == ("in_place", None, 30)


def test_storage_options_with_a_permutation_are_refused(tmp_path: Path) -> None:
    ds = write(tmp_path / "ds.lance", values(10))
    perm = lancefeed.Permutation.identity(ds)
    with pytest.raises(ValueError, match="storage_options= applies to a URI"):
        lancefeed.DataLoader(perm, batch_size=2, storage_options={"region": "us-east-1"})


def test_no_pylance_private_take_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Lance's take by row id is pylance-internal: without it, rows are taken by index
    # through the public take, to the same rows (after deletions too).
    ds = write(tmp_path / "ds.lance", values(60), max_rows_per_file=25)
    ds.delete("label = 2")
    ds = lance.dataset(str(tmp_path / "ds.lance"))
    from lancefeed.reads.take import take_rows

    ids = live_row_ids(ds)[::-1]
    want = take_rows(ds, ids, ["image", "label"])
    monkeypatch.setattr(type(ds), "_take_rows", property(lambda self: None))
    got = take_rows(ds, ids, ["image", "label"])
    assert got.to_pydict() == want.to_pydict()
    # The options a dataset was opened with (each torch worker reopens it with them):
    # pylance's public property where it has one, else the attribute older ones keep.
    opened = lance.dataset(str(tmp_path / "ds.lance"), storage_options={"timeout": "31s"})
    assert lancefeed.source.dataset_options(opened) == {"timeout": "31s"}
    assert lancefeed.source.dataset_options(ds) is None
    monkeypatch.delattr(type(ds), "initial_storage_options", raising=False)
    monkeypatch.setattr(opened, "_storage_options", {"timeout": "32s"}, raising=False)
    assert lancefeed.source.dataset_options(opened) == {"timeout": "32s"}
