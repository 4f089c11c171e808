"""Image columns of every type Lance and Hugging Face write: the loader, decode_batch,
decode_targets, the bench and ingest read the same pixels as Pillow from each."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable, Dict, List

import lance
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import lancefeed
from lancefeed.columns import ImageColumnTypeError, image_array, image_column_kind

N = 6
W, H = 20, 14
HF_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


class _EncodedImageType(pa.ExtensionType):
    """pylance's ``lance.arrow.EncodedImageType`` (same name and storage): that module
    needs pandas to import, which this environment may lack."""

    def __init__(self, storage_type: pa.DataType = pa.binary()) -> None:
        pa.ExtensionType.__init__(self, storage_type, "lance.arrow.encoded_image")

    def __arrow_ext_serialize__(self) -> bytes:
        return b""

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type: pa.DataType, serialized: bytes) -> "_EncodedImageType":
        return cls(storage_type)


def _encoded_image_type() -> Any:
    try:
        from lance.arrow import EncodedImageType

        return EncodedImageType(pa.binary())
    except ImportError:  # lance.arrow imports pandas
        return _EncodedImageType()


def _png(i: int) -> bytes:
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


IMAGES = [_png(i) for i in range(N)]


def pillow(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


EXPECTED = np.stack([pillow(b) for b in IMAGES])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """The images as files, one each, and all of them end to end in one file."""
    root = tmp_path_factory.mktemp("files")
    paths = []
    for i, data in enumerate(IMAGES):
        p = root / f"{i}.png"
        p.write_bytes(data)
        paths.append(str(p))
    packed = root / "all.bin"
    packed.write_bytes(b"".join(IMAGES))
    ranges, start = [], 0
    for data in IMAGES:
        ranges.append((start, len(data)))
        start += len(data)
    return {"paths": paths, "packed": str(packed), "ranges": ranges}


def _blob_table(values: List[Any], **field_kw: Any) -> pa.Table:
    schema = pa.schema([lance.blob_field("image", **field_kw), pa.field("label", pa.int64())])
    return pa.table([lance.blob_array(values), pa.array(range(N), pa.int64())], schema=schema)


def _plain(image: pa.Array) -> pa.Table:
    return pa.table({"image": image, "label": pa.array(range(N), pa.int64())})


# name -> (table, write_dataset keywords): the same images in each image column type.
TABLES: Dict[str, Callable[[Dict[str, Any]], Any]] = {
    "binary": lambda f: (_plain(pa.array(IMAGES, pa.binary())), {}),
    "large_binary": lambda f: (_plain(pa.array(IMAGES, pa.large_binary())), {}),
    "encoded_image": lambda f: (
        _plain(pa.ExtensionArray.from_storage(_encoded_image_type(), pa.array(IMAGES, pa.binary()))),
        {},
    ),
    "hf_bytes": lambda f: (_plain(pa.array([{"bytes": b, "path": None} for b in IMAGES], HF_TYPE)), {}),
    "hf_paths": lambda f: (
        _plain(pa.array([{"bytes": None if i % 2 else b, "path": p} for i, (b, p) in enumerate(zip(IMAGES, f["paths"]))], HF_TYPE)),
        {},
    ),
    "blob_v1": lambda f: (
        pa.table(
            [pa.array(IMAGES, pa.large_binary()), pa.array(range(N), pa.int64())],
            schema=pa.schema([pa.field("image", pa.large_binary(), metadata={"lance-encoding:blob": "true"}),
                              pa.field("label", pa.int64())]),
        ),
        # Storage 2.2 turns a v1 blob field into v2; 2.1 keeps it v1.
        {"data_storage_version": "2.1"},
    ),
    "blob_v2_inline": lambda f: (_blob_table(IMAGES), {}),
    "blob_v2_packed": lambda f: (_blob_table(IMAGES, inline_size_threshold=0), {}),
    "blob_v2_dedicated": lambda f: (_blob_table(IMAGES, inline_size_threshold=0, dedicated_size_threshold=1), {}),
    "blob_v2_uri": lambda f: (
        _blob_table([Path(p).as_uri() for p in f["paths"]]),
        {"allow_external_blob_outside_bases": True},
    ),
    "blob_v2_uri_range": lambda f: (
        _blob_table([lance.Blob.from_uri(Path(f["packed"]).as_uri(), s, n) for s, n in f["ranges"]]),
        {"allow_external_blob_outside_bases": True},
    ),
    "blob_v2_stable_row_ids": lambda f: (_blob_table(IMAGES), {"enable_stable_row_ids": True}),
}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory, files: Dict[str, Any]) -> Dict[str, str]:
    root = tmp_path_factory.mktemp("image-columns")
    out = {}
    for name, make in TABLES.items():
        table, kw = make(files)
        out[name] = str(root / f"{name}.lance")
        lance.write_dataset(table, out[name], **kw)
    return out


def test_what_lance_stores_for_each_type(datasets: Dict[str, str]) -> None:
    # The dataset really holds the column type the test is named after.
    kinds = {name: image_column_kind(lance.dataset(uri).schema.field("image")) for name, uri in datasets.items()}
    assert kinds["binary"] == kinds["large_binary"] == kinds["encoded_image"] == "binary"
    assert kinds["hf_bytes"] == kinds["hf_paths"] == "hf_image"
    assert all(kinds[n] == "blob" for n in kinds if n.startswith("blob"))
    field = lance.dataset(datasets["encoded_image"]).schema.field("image")
    # Metadata where pylance's extension type is not registered (lance.arrow needs pandas), the type where it is.
    assert (field.metadata or {}).get(b"ARROW:extension:name") == b"lance.arrow.encoded_image" or getattr(
        field.type, "extension_name", None) == "lance.arrow.encoded_image"
    assert lance.dataset(datasets["blob_v1"]).schema.field("image").metadata[b"lance-encoding:blob"] == b"true"
    assert "lance.blob.v2" in str(lance.dataset(datasets["blob_v2_packed"]).schema.field("image").type)
    assert lance.dataset(datasets["blob_v2_stable_row_ids"]).has_stable_row_ids


@pytest.mark.parametrize("name", list(TABLES))
def test_loader_reads_every_image_column_type_as_pillow_does(datasets: Dict[str, str], name: str) -> None:
    loader = lancefeed.DataLoader(datasets[name], batch_size=4, shuffle=False, image_column="image", label_column="label")
    images, labels = [], []
    for x, y in loader:
        images.append(x.numpy())
        labels.append(y.numpy())
    got_labels = np.concatenate(labels)
    assert sorted(got_labels.tolist()) == list(range(N))
    # Each image comes with its own row's label, whatever order the rows come in.
    np.testing.assert_array_equal(np.concatenate(images), EXPECTED[got_labels])


@pytest.mark.parametrize("name", ["hf_paths", "blob_v2_packed", "encoded_image"])
def test_loader_shuffled_with_a_transform(datasets: Dict[str, str], name: str) -> None:
    from lancefeed.transforms import Resize

    loader = lancefeed.DataLoader(datasets[name], batch_size=N, shuffle=True, seed=3, transform=Resize((7, 10)))
    x, y = next(iter(loader))
    want = lancefeed.decode_batch(IMAGES, size=(7, 10))
    np.testing.assert_array_equal(x.numpy(), want[y.numpy()])


def _arrays(files: Dict[str, Any]) -> Dict[str, Any]:
    enc = _encoded_image_type()
    return {
        "binary": pa.array(IMAGES, pa.binary()),
        "large_binary": pa.array(IMAGES, pa.large_binary()),
        "binary_view": pa.array(IMAGES, pa.binary_view()),
        "chunked": pa.chunked_array([IMAGES[:2], IMAGES[2:]], pa.binary()),
        "encoded_image": pa.ExtensionArray.from_storage(enc, pa.array(IMAGES, pa.binary())),
        "encoded_image_chunked": pa.chunked_array(
            [pa.ExtensionArray.from_storage(enc, pa.array(IMAGES[:3], pa.binary())),
             pa.ExtensionArray.from_storage(enc, pa.array(IMAGES[3:], pa.binary()))]
        ),
        "hf_struct": pa.array([{"bytes": b, "path": None} for b in IMAGES], HF_TYPE),
        "hf_struct_paths": pa.array([{"bytes": None, "path": p} for p in files["paths"]], HF_TYPE),
        "hf_struct_sliced": pa.array([{"bytes": b"junk", "path": None}] + [{"bytes": b, "path": None} for b in IMAGES], HF_TYPE)[1:],
        "hf_dicts": [{"bytes": None if i == 2 else b, "path": p} for i, (b, p) in enumerate(zip(IMAGES, files["paths"]))],
        "blob_array_data": lance.blob_array(IMAGES),
        "blob_array_uris": lance.blob_array([Path(p).as_uri() for p in files["paths"]]),
        "blob_array_ranges": lance.blob_array([lance.Blob.from_uri(Path(files["packed"]).as_uri(), s, n) for s, n in files["ranges"]]),
    }


ARRAY_NAMES = ["binary", "large_binary", "binary_view", "chunked", "encoded_image", "encoded_image_chunked",
               "hf_struct", "hf_struct_paths", "hf_struct_sliced", "hf_dicts", "blob_array_data", "blob_array_uris",
               "blob_array_ranges"]


@pytest.mark.parametrize("name", ARRAY_NAMES)
def test_decode_batch_reads_each_array_type(files: Dict[str, Any], name: str) -> None:
    images = _arrays(files)[name]
    np.testing.assert_array_equal(lancefeed.decode_batch(images), EXPECTED)
    # Gathered out of order, and through decode_targets, the same rows come out.
    order = [5, 0, 3, 3]
    np.testing.assert_array_equal(lancefeed.decode_batch(images, order=order), EXPECTED[order])
    got, _ = lancefeed.decode_targets(images, order=order, ragged=True)
    np.testing.assert_array_equal(np.stack(got), EXPECTED[order])


def test_bytes_in_memory_are_not_copied() -> None:
    storage = pa.array(IMAGES, pa.binary())
    enc = pa.ExtensionArray.from_storage(_encoded_image_type(), storage)
    assert image_array(enc).buffers()[2].address == storage.buffers()[2].address
    hf = pa.StructArray.from_arrays([storage, pa.array([None] * N, pa.string())], ["bytes", "path"])
    assert image_array(hf).buffers()[2].address == storage.buffers()[2].address


def test_hf_null_bytes_read_the_file_at_path(files: Dict[str, Any]) -> None:
    arr = pa.array([{"bytes": None, "path": files["paths"][4]}, {"bytes": IMAGES[1], "path": "/nowhere.png"}], HF_TYPE)
    # Bytes win over the path; the path is read only where the bytes are null.
    np.testing.assert_array_equal(lancefeed.decode_batch(arr), EXPECTED[[4, 1]])


def test_missing_hf_file_names_row_and_path(files: Dict[str, Any], tmp_path: Path) -> None:
    gone = str(tmp_path / "gone.png")
    arr = pa.array([{"bytes": IMAGES[0], "path": None}, {"bytes": None, "path": gone}], HF_TYPE)
    with pytest.raises(lancefeed.DecodeError, match=rf"row 1: image file '{gone}' not found"):
        lancefeed.decode_batch(arr)
    # Gathered, the row is named as it comes out.
    with pytest.raises(lancefeed.DecodeError, match=rf"row 2: image file '{gone}' not found"):
        lancefeed.decode_batch(arr, order=[0, 0, 1])
    with pytest.raises(lancefeed.DecodeError, match=rf"row 1: image file '{gone}' not found"):
        lancefeed.decode_targets(arr, ragged=True)
    with pytest.raises(lancefeed.DecodeError, match=rf"row 1: image file '{gone}' not found"):
        lancefeed.decode_batch([{"bytes": IMAGES[0], "path": None}, {"bytes": None, "path": gone}])
    batch, info = lancefeed.decode_batch(arr, on_error="skip", return_info=True)
    np.testing.assert_array_equal(batch, EXPECTED[:1])
    assert [i for i, _ in info.errors] == [1] and gone in info.errors[0][1]
    with pytest.raises(lancefeed.DecodeError, match=rf"row 1 of column 'picture': image file '{gone}' not found"):
        image_array(arr, column="picture")


def test_loader_names_row_and_path_of_a_missing_file(tmp_path: Path, files: Dict[str, Any]) -> None:
    gone = str(tmp_path / "gone.png")
    paths = list(files["paths"])
    paths[3] = gone
    uri = str(tmp_path / "hf.lance")
    lance.write_dataset(_plain(pa.array([{"bytes": None, "path": p} for p in paths], HF_TYPE)), uri)
    loader = lancefeed.DataLoader(uri, batch_size=N, shuffle=False)
    with pytest.raises(lancefeed.DecodeError, match=rf"row 3 .*column 'image': image file '{gone}' not found"):
        next(iter(loader))
    skipping = lancefeed.DataLoader(uri, batch_size=N, shuffle=False, on_error="skip")
    x, y = next(iter(skipping))
    assert y.tolist() == [0, 1, 2, 4, 5]
    np.testing.assert_array_equal(x.numpy(), EXPECTED[[0, 1, 2, 4, 5]])
    assert [r for r, _ in skipping.skipped] == [3] and gone in skipping.skipped[0][1]


def test_unsupported_types_name_the_type_and_what_is_supported(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"images are Arrow int64; expected an Arrow binary .*lance.arrow.encoded_image"):
        lancefeed.decode_batch(pa.array([1, 2]))
    with pytest.raises(TypeError, match=r"images are Arrow int64"):
        lancefeed.decode_targets(pa.chunked_array([[1, 2]]))
    uri = str(tmp_path / "ints.lance")
    lance.write_dataset(pa.table({"image": pa.array(IMAGES), "pixels": pa.array(range(N), pa.int64())}), uri)
    with pytest.raises(ImageColumnTypeError, match=r"image column 'pixels' is int64; expected binary .*Hugging Face"):
        lancefeed.DataLoader(uri, batch_size=2, image_column="pixels")
    # A struct that is not an image struct, and blob descriptions, say what they are.
    with pytest.raises(TypeError, match=r"an image struct needs bytes: binary and path: string"):
        image_column_kind(pa.struct([("bytes", pa.int32()), ("path", pa.string())]), "image")
    blob_uri = str(tmp_path / "blob.lance")
    lance.write_dataset(_blob_table(IMAGES), blob_uri)
    descriptions = lance.dataset(blob_uri).take([0, 1], columns=["image"]).column("image")
    with pytest.raises(TypeError, match=r"Lance blob descriptions.*read_blobs"):
        lancefeed.decode_batch(descriptions)


def _folder(root: Path) -> Dict[str, bytes]:
    """An ImageFolder tree of the images: ``root/<label>/<i>.png``."""
    by_name = {}
    for i, data in enumerate(IMAGES):
        label = "even" if i % 2 == 0 else "odd"
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{i}.png").write_bytes(data)
        by_name[f"{label}/{i}.png"] = data
    return by_name


def _check_loads(uri: str, by_name: Dict[str, bytes]) -> None:
    loader = lancefeed.DataLoader(uri, batch_size=N, shuffle=False, columns=["image", "filename"], output="dict")
    batch = next(iter(loader))
    want = np.stack([pillow(by_name[f]) for f in batch["filename"]])
    np.testing.assert_array_equal(batch["image"].numpy(), want)


def test_ingest_blob_and_stable_row_ids_load(tmp_path: Path) -> None:
    from lancefeed.ingest import ingest_folder

    by_name = _folder(tmp_path / "imgs")
    uri = str(tmp_path / "blob.lance")
    summary = ingest_folder(tmp_path / "imgs", uri, blob=True, enable_stable_row_ids=True, progress=False)
    assert summary.rows == N
    ds = lance.dataset(uri)
    assert image_column_kind(ds.schema.field("image")) == "blob" and ds.has_stable_row_ids
    _check_loads(uri, by_name)
    # A second fragment: its stable row ids (6..11) are not its row addresses (1 << 32...),
    # so the loader's blob reads by id find the right rows only if ids are ids.
    ingest_folder(tmp_path / "imgs", uri, blob=True, mode="append", progress=False)
    ds = lance.dataset(uri)
    assert len(ds.get_fragments()) == 2 and ds.count_rows() == 2 * N
    loader = lancefeed.DataLoader(uri, batch_size=2 * N, shuffle=True, columns=["image", "filename"], output="dict")
    batch = next(iter(loader))
    np.testing.assert_array_equal(batch["image"].numpy(), np.stack([pillow(by_name[f]) for f in batch["filename"]]))
    # Without the options, the same ingest writes plain binary and address row ids.
    plain = ingest_folder(tmp_path / "imgs", str(tmp_path / "plain.lance"), progress=False).uri
    assert lance.dataset(plain).schema.field("image").type == pa.binary()
    assert not lance.dataset(plain).has_stable_row_ids


def test_cli_ingest_blob_stable_row_ids(tmp_path: Path) -> None:
    from lancefeed.cli import main

    by_name = _folder(tmp_path / "imgs")
    uri = str(tmp_path / "cli.lance")
    assert main(["ingest", "folder", str(tmp_path / "imgs"), uri, "--blob", "--stable-row-ids", "--no-progress"]) == 0
    ds = lance.dataset(uri)
    assert image_column_kind(ds.schema.field("image")) == "blob" and ds.has_stable_row_ids
    _check_loads(uri, by_name)


@pytest.mark.parametrize("name", ["hf_paths", "blob_v2_packed", "blob_v1", "encoded_image"])
def test_bench_reads_image_sizes_of_each_type(datasets: Dict[str, str], name: str, tmp_path: Path) -> None:
    from lancefeed.bench.run import median_short_side
    from lancefeed.bench.peers._common import export_files
    from lancefeed.bench.peers.take_pillow import SeedsTakeDataset

    assert median_short_side(datasets[name]) == H
    # The Pillow baselines read the same images.
    seeds = SeedsTakeDataset(datasets[name], lambda img: img, {})
    np.testing.assert_array_equal(seeds[2][0].numpy(), EXPECTED[2])
    folder = export_files(datasets[name], tmp_path / "export", limit=None)
    assert (folder / "4" / "00000004.img").read_bytes() == IMAGES[4]


def test_docstring_examples() -> None:
    import doctest

    import lancefeed.columns

    result = doctest.testmod(lancefeed.columns, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
