"""Every Lance dataset reads right, whoever wrote it: a matrix of writers x read paths.

Datasets are written the ways users write them (pylance's defaults, every storage
version and compression, large_binary, blob columns, appends, deletions, compaction,
updates, merge_insert, stable row ids, columns added later, lancedb), with small
(CIFAR-sized) and ImageNet-sized JPEGs from several encoders (Pillow baseline and
progressive, OpenCV, libjpeg-turbo's cjpeg, grayscale, a large compressible comment:
Lance's per-value zstd then holds compressed blocks, not raw ones). Each read path of
the loader (the in-place read, Lance's takes, scans, joint takes, the row cache, the
pixel cache of later epochs, torch workers over a Permutation, an S3 server) must give,
over two epochs, exactly ``decode_batch`` of the bytes Lance's own ``take`` returns for
the same positions. The in-place read must be what reads a layout it understands, and
the mutation checks at the end show that a layout misread or a missing check makes
this matrix fail.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import lance
import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

import lancefeed
from images import encode, photo

N_SMALL, N_BIG = 40, 14
SEED = 3


def _cv2_jpeg(arr: np.ndarray) -> bytes:
    cv2 = pytest.importorskip("cv2")
    ok, buf = cv2.imencode(".jpg", arr[..., ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), 92])
    assert ok
    return buf.tobytes()


def _cjpeg(arr: np.ndarray, *args: str) -> bytes:
    """libjpeg-turbo's own command-line encoder (restart markers, arithmetic, ...)."""
    if shutil.which("cjpeg") is None:
        return encode(arr, "JPEG", quality=88)
    ppm = io.BytesIO()
    Image.fromarray(arr).save(ppm, "PPM")
    return subprocess.run(["cjpeg", *args], input=ppm.getvalue(), capture_output=True, check=True).stdout


def _with_comment(data: bytes, size: int) -> bytes:
    """A JPEG with a COM segment of ``size`` repetitive bytes after its SOI: zstd
    compresses such a value, so Lance stores compressed blocks (read through Lance)."""
    body = (b"lancefeed " * (size // 10 + 1))[:size]
    return data[:2] + b"\xff\xfe" + (len(body) + 2).to_bytes(2, "big") + body + data[2:]


def images(big: bool) -> List[bytes]:
    """JPEGs from several encoders. ImageNet-sized ones span one zstd block (<128 KiB)
    and two (>128 KiB), and two carry a large compressible comment."""
    n = N_BIG if big else N_SMALL
    out = []
    for i in range(n):
        w, h = ((640, 480) if i % 3 == 0 else (500, 375)) if big else (32, 32)
        arr = photo(w, h, seed=i)
        kind = i % 6
        if kind == 0:
            data = encode(arr, "JPEG", quality=95)
        elif kind == 1:
            data = encode(arr, "JPEG", quality=90, progressive=True)
        elif kind == 2:
            data = _cv2_jpeg(arr)
        elif kind == 3:
            data = _cjpeg(arr, "-quality", "93", "-restart", "2")
        elif kind == 4:
            data = encode(Image.fromarray(arr).convert("L"), "JPEG", quality=94)
        else:
            data = encode(arr, "JPEG", quality=97, subsampling=0)
        if big and i in (4, 9):
            data = _with_comment(data, 60_000)
        out.append(data)
    return out


def table(big: bool, start: int = 0, n: int | None = None, blobs: List[bytes] | None = None) -> pa.Table:
    data = images(big) if blobs is None else blobs
    n = len(data) - start if n is None else n
    rows = range(start, start + n)
    return pa.table(
        {
            "image": pa.array([data[i] for i in rows], pa.binary()),
            "idx": pa.array(list(rows), pa.int64()),
            "label": pa.array([f"class{i % 4}" for i in rows]),
            "filename": pa.array([f"img{i:04d}.jpg" for i in rows]),
        }
    )


def _with_image_type(t: pa.Table, kind: pa.DataType, **metadata: str) -> pa.Table:
    field = pa.field("image", kind, metadata=metadata or None)
    return t.set_column(0, field, t.column("image").cast(kind))


# -- the writers --------------------------------------------------------------------
# Each writes the dataset at `uri` and returns what to open (a URI).


def w_defaults(uri: str, big: bool) -> str:
    lance.write_dataset(table(big), uri)
    return uri


def _version(v: str) -> Callable[[str, bool], str]:
    def write(uri: str, big: bool) -> str:
        lance.write_dataset(table(big), uri, data_storage_version=v)
        return uri

    return write


def _compression(c: str) -> Callable[[str, bool], str]:
    def write(uri: str, big: bool) -> str:
        lance.write_dataset(_with_image_type(table(big), pa.binary(), **{"lance-encoding:compression": c}), uri)
        return uri

    return write


def w_large_binary(uri: str, big: bool) -> str:
    lance.write_dataset(_with_image_type(table(big), pa.large_binary()), uri)
    return uri


def w_binary_view(uri: str, big: bool) -> str:
    lance.write_dataset(_with_image_type(table(big), pa.binary_view()), uri)
    return uri


def w_blob(uri: str, big: bool) -> str:
    lance.write_dataset(_with_image_type(table(big), pa.large_binary(), **{"lance-encoding:blob": "true"}), uri)
    return uri


def w_one_row_batches(uri: str, big: bool) -> str:
    t = table(big)
    reader = pa.RecordBatchReader.from_batches(t.schema, t.to_batches(max_chunksize=1))
    lance.write_dataset(reader, uri, max_rows_per_group=1)
    return uri


def w_many_files(uri: str, big: bool) -> str:
    lance.write_dataset(table(big), uri, max_rows_per_file=3)
    return uri


def w_appended(uri: str, big: bool) -> str:
    t = table(big)
    half = t.num_rows // 2
    lance.write_dataset(t.slice(0, half), uri)
    lance.write_dataset(t.slice(half), uri, mode="append")
    return uri


def w_deletions(uri: str, big: bool) -> str:
    lance.write_dataset(table(big), uri, max_rows_per_file=8)
    lance.dataset(uri).delete("idx % 5 = 1")
    return uri


def w_compacted(uri: str, big: bool) -> str:
    lance.write_dataset(table(big), uri, max_rows_per_file=4)
    ds = lance.dataset(uri)
    ds.delete("idx % 3 = 0")
    ds.optimize.compact_files(target_rows_per_fragment=1000)
    return uri


def w_updated(uri: str, big: bool) -> str:
    lance.write_dataset(table(big), uri)
    lance.dataset(uri).update({"label": "'updated'"}, where="idx % 4 = 2")
    return uri


def w_merge_insert(uri: str, big: bool) -> str:
    lance.write_dataset(table(big), uri)
    data = images(big)
    swapped = [data[(i + 7) % len(data)] for i in range(len(data))]  # new images for some rows
    new = table(big, start=2, n=5, blobs=swapped)
    lance.dataset(uri).merge_insert("idx").when_matched_update_all().when_not_matched_insert_all().execute(new)
    return uri


def w_stable_row_ids(uri: str, big: bool) -> str:
    lance.write_dataset(table(big), uri, enable_stable_row_ids=True, max_rows_per_file=6)
    ds = lance.dataset(uri)
    ds.delete("idx % 4 = 0")
    ds.optimize.compact_files(target_rows_per_fragment=1000)
    lance.dataset(uri).update({"label": "'updated'"}, where="idx % 5 = 2")
    return uri


def w_column_added(uri: str, big: bool) -> str:
    lance.write_dataset(table(big), uri)
    lance.dataset(uri).add_columns({"double_idx": "idx * 2"})
    return uri


def w_lancedb(uri: str, big: bool) -> str:
    lancedb = pytest.importorskip("lancedb")
    db = lancedb.connect(os.path.dirname(uri))
    name = os.path.basename(uri)[: -len(".lance")]
    db.create_table(name, table(big))
    return str(Path(os.path.dirname(uri)) / f"{name}.lance")


WRITERS: Dict[str, Callable[[str, bool], str]] = {
    "pylance-defaults": w_defaults,
    "storage-2.0": _version("2.0"),
    "storage-2.1": _version("2.1"),
    "storage-2.2": _version("2.2"),
    "compression-none": _compression("none"),
    "compression-lz4": _compression("lz4"),
    "compression-zstd": _compression("zstd"),
    "large_binary": w_large_binary,
    "binary_view": w_binary_view,
    "blob": w_blob,
    "one-row-batches": w_one_row_batches,
    "many-files": w_many_files,
    "appended": w_appended,
    "deletions": w_deletions,
    "compacted": w_compacted,
    "updated": w_updated,
    "merge_insert": w_merge_insert,
    "stable-row-ids": w_stable_row_ids,
    "column-added": w_column_added,
    "lancedb": w_lancedb,
}
# Layouts the in-place read does not read (Lance's reader does, visibly).
NOT_IN_PLACE = {"storage-2.0", "blob"}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, bool], str]:
    """The dataset a writer writes, written once per module."""
    root = tmp_path_factory.mktemp("writers")
    made: Dict[Tuple[str, bool], str] = {}

    def get(writer: str, big: bool) -> str:
        key = (writer, big)
        if key not in made:
            made[key] = WRITERS[writer](str(root / f"{writer}-{'big' if big else 'small'}.lance"), big)
        return made[key]

    return get


# -- the reference and the check ----------------------------------------------------


def transform(big: bool) -> Any:
    size = 64 if big else 24
    return lancefeed.Compose([lancefeed.RandomResizedCrop(size), lancefeed.RandomHorizontalFlip()])


class Reference:
    """What Lance's own reader gives: each position's bytes (``take``) and the position
    of each ``idx`` value (the identity permutation's position: the dataset index)."""

    def __init__(self, uri: str, storage_options: Dict[str, str] | None = None) -> None:
        ds = lance.dataset(uri, storage_options=storage_options)
        t = ds.to_table(columns=["idx"])
        self.positions = {int(v): i for i, v in enumerate(t.column("idx").to_pylist())}
        everything = list(range(ds.count_rows()))
        if "blob" in str(ds.schema.field("image").type) or (ds.schema.field("image").metadata or {}).get(b"lance-encoding:blob"):
            self.blobs = [f.readall() for f in ds.take_blobs("image", indices=everything)]  # Lance's blob reader
        else:
            self.blobs = ds.take(everything, columns=["image"]).column("image").to_pylist()
        self.n = ds.count_rows()

    def batch(self, idx: List[int], epoch: int, big: bool, whole: bool = False) -> np.ndarray:
        positions = [self.positions[i] for i in idx]
        return lancefeed.decode_batch(
            [self.blobs[p] for p in positions], transform=transform(big), seed=SEED, epoch=epoch,
            positions=np.array(positions), decode_crop=not whole,
        )


def check(loader: Any, ref: Reference, big: bool, epochs: int = 2) -> None:
    """Two epochs of ``loader`` (label column ``idx``) against the reference."""
    for epoch in range(epochs):
        seen: List[int] = []
        for images, idx in loader:
            ids = idx.tolist()
            # From epoch 1, a loader with a pixel cache crops from whole decoded images.
            whole = epoch > 0 and loader.pixel_cache is not None
            want = ref.batch(ids, epoch, big, whole=whole)
            assert images.shape == want.shape
            bad = [i for k, i in enumerate(ids) if not np.array_equal(images[k].numpy(), want[k])]
            assert not bad, f"epoch {epoch}: rows idx {bad[:5]} differ from decode_batch of Lance's take"
            seen += ids
        assert sorted(seen) == sorted(ref.positions), f"epoch {epoch}: rows lost or repeated"


READ_PATHS = ["in_place", "take", "scan", "joint", "row_cache", "pixel_cache"]


def make_loader(uri: str, path: str, big: bool, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> Any:
    kw: Dict[str, Any] = dict(batch_size=4, shuffle=True, seed=SEED, transform=transform(big), label_column="idx", **extra)
    monkeypatch.setenv("LANCEFEED_IN_PLACE", "1" if path in ("in_place", "joint", "row_cache", "pixel_cache") else "0")
    if path in ("in_place", "take", "joint"):
        kw["cache"] = False
    if path == "scan":
        kw.update(cache=False, shuffle=False)
    if path in ("row_cache", "pixel_cache"):
        kw["cache"] = True
        kw["pixel_cache"] = path == "pixel_cache"
    loader = lancefeed.DataLoader(uri, **kw)
    if path == "joint":
        loader.reader.rows_per_take = 12  # three batches a take, decoded by one call
    return loader


@pytest.mark.parametrize("big", [False, True], ids=["small", "imagenet"])
@pytest.mark.parametrize("path", READ_PATHS)
@pytest.mark.parametrize("writer", list(WRITERS))
def test_every_writer_reads_right_on_every_path(written: Callable[[str, bool], str], writer: str, path: str, big: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    uri = written(writer, big)
    ref = Reference(uri)
    loader = make_loader(uri, path, big, monkeypatch)
    check(loader, ref, big)
    stats = loader.stats()
    if path == "in_place":
        # The in-place read reads every layout it understands, and says why not others.
        if writer in NOT_IN_PLACE:
            assert stats["read_path"] == "lance" and stats["read_path_reason"]
        elif writer in ("compression-lz4", "compression-zstd") and not big:
            # Asked to compress, Lance's per-value zstd shrinks every small JPEG (by its
            # headers): stored compressed, read through Lance, and said so.
            assert stats["read_path"] == "lance" and "stores compressed" in stats["read_path_reason"], stats
        else:
            assert stats["read_path"] in ("in_place", "mixed"), stats
            assert stats["rows_in_place"] > 0
        if stats["read_path"] != "in_place":
            assert stats["read_path_reason"], stats
    if path in ("take", "scan"):
        assert stats["read_path"] == "lance" and "LANCEFEED_IN_PLACE=0" in stats["read_path_reason"]


def test_the_default_layout_of_imagenet_sized_images_is_read_in_place(written: Callable[[str, bool], str],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # pylance's default for values over 32 KiB: each in a zstd frame; raw frames are
    # read in place (one block or several), the two compressible ones through Lance.
    uri = written("pylance-defaults", True)
    loader = make_loader(uri, "in_place", True, monkeypatch)
    check(loader, Reference(uri), True, epochs=1)
    stats = loader.stats()
    assert stats["read_path"] == "mixed" and stats["rows_through_lance"] == 2 and stats["rows_in_place"] == N_BIG - 2


def test_errors_name_a_row_the_user_can_find(tmp_path: Path) -> None:
    # A bad image in the second fragment, after deletions: the error gives the row's
    # index in the dataset (what ds.take takes), its id as fragment and offset, and its
    # filename.
    t = table(False)
    blobs = t.column("image").to_pylist()
    blobs[13] = b"not an image"
    t = t.set_column(0, "image", pa.array(blobs, pa.binary()))
    uri = str(tmp_path / "bad.lance")
    lance.write_dataset(t, uri, max_rows_per_file=10)
    lance.dataset(uri).delete("idx = 2 or idx = 11")
    loader = lancefeed.DataLoader(uri, batch_size=40, label_column="idx")
    with pytest.raises(lancefeed.DecodeError) as info:
        list(loader)
    message = str(info.value)
    assert message.startswith("row 11 of the dataset (row id 4294967299: fragment 1, offset 3; filename 'img0013.jpg')")
    assert lance.dataset(uri).take([11], columns=["filename"]).column(0)[0].as_py() == "img0013.jpg"


# -- torch workers and an object store: a subset of writers -------------------------

SUBSET = ["pylance-defaults", "deletions", "stable-row-ids", "storage-2.0"]


def _collate(rows: Any) -> Any:
    return rows


@pytest.mark.parametrize("writer", SUBSET)
def test_torch_workers_over_a_permutation_read_lances_bytes(written: Callable[[str, bool], str], writer: str) -> None:
    uri = written(writer, True)
    ref = Reference(uri)
    perm = lancefeed.Permutation.identity(uri).select_columns(["image", "idx"]).with_format("arrow")
    loader = torch.utils.data.DataLoader(perm, batch_size=4, shuffle=True, num_workers=2, collate_fn=_collate,
                                         multiprocessing_context="forkserver", generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        seen = []
        for batch in loader:
            for blob, i in zip(batch.column("image").to_pylist(), batch.column("idx").to_pylist()):
                assert blob == ref.blobs[ref.positions[i]]
                seen.append(i)
        assert sorted(seen) == sorted(ref.positions)


@pytest.mark.parametrize("writer", SUBSET)
def test_an_s3_copy_reads_as_the_local_one(written: Callable[[str, bool], str], writer: str, s3: Any,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    boto3 = pytest.importorskip("boto3")
    uri = written(writer, True)
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3.port}", aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    prefix = f"writers/{writer}.lance"
    for dirpath, _, files in os.walk(uri):
        for f in files:
            path = os.path.join(dirpath, f)
            client.upload_file(path, "lancefeed", f"{prefix}/{os.path.relpath(path, uri)}")
    remote = f"s3://lancefeed/{prefix}"
    opts = s3.storage_options()
    loader = lancefeed.DataLoader(remote, batch_size=4, shuffle=True, seed=SEED, transform=transform(True),
                                  label_column="idx", storage_options=opts)
    check(loader, Reference(remote, storage_options=opts), True)
    stats = loader.stats()
    assert stats["read_path"] == "lance" and "object store" in stats["read_path_reason"]


# -- mutation checks: the matrix fails when the in-place read is broken -------------


def _mutant_matrix(written: Callable[[str, bool], str], monkeypatch: pytest.MonkeyPatch) -> None:
    for writer in ("pylance-defaults", "compression-none", "deletions"):
        uri = written(writer, True)
        loader = make_loader(uri, "in_place", True, monkeypatch)
        check(loader, Reference(uri), True, epochs=1)
        assert loader.stats()["read_path"] in ("in_place", "mixed"), "read_path: " + str(loader.stats()["read_path"])


def test_a_layout_misread_is_refused_and_the_matrix_says_so(written: Callable[[str, bool], str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import lancefeed.reads.inplace as inplace

    _mutant_matrix(written, monkeypatch)  # as built: passes
    real = inplace._entries

    def shifted(*a: Any) -> Any:  # each entry's start read 4 bytes late
        starts, ends, kinds = real(*a)
        return starts + np.uint64(4), ends, kinds

    # The entries' checks refuse it (Lance reads, right): the matrix fails on its
    # expectation that this layout is read in place.
    monkeypatch.setattr(inplace, "_entries", shifted)
    with pytest.raises(AssertionError, match="read_path"):
        _mutant_matrix(written, monkeypatch)


def test_without_the_comparison_with_lance_a_framing_misread_fails_the_matrix(written: Callable[[str, bool], str],
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import lancefeed.reads.inplace as inplace

    # Lance's zstd frames taken for raw values: every entry's length prefix still agrees
    # with the index, so only the comparison with Lance's take at open can tell. With
    # it off, the matrix sees the frames' bytes as images.
    monkeypatch.setattr(inplace, "_KINDS", {("raw", 32): 0, ("raw", 64): 1, ("zstd", 32): 0, ("zstd", 64): 1})
    with pytest.raises(AssertionError, match="read_path"):  # with it: refused, read by Lance
        _mutant_matrix(written, monkeypatch)
    monkeypatch.setattr(inplace.InPlaceColumn, "_compare_sample", lambda self, n: None)
    with pytest.raises((AssertionError, lancefeed.DecodeError), match="differ from decode_batch|unknown image format"):
        _mutant_matrix(written, monkeypatch)
