"""Permutations over small Lance datasets written by the tests."""

from __future__ import annotations

import io
import json
import pickle

import lance
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import lancefeed
from lancefeed.permutation import Permutation, Permutations, open_source, permutation_builder

N = 120
LABELS = ["cat", "dog", "car"]


def _png(i: int) -> bytes:
    img = Image.new("RGB", (4, 4), (i % 256, (7 * i) % 256, (13 * i) % 256))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _table(ids: range) -> pa.Table:
    ids = list(ids)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "image": pa.array([_png(i) for i in ids], pa.binary()),
            "filename": [f"img/{i:04d}.png" for i in ids],
            "label": [LABELS[i % 3] for i in ids],
            "categories": [["car", "road"] if i % 4 == 0 else ["tree"] for i in ids],
        }
    )


@pytest.fixture()
def uri(tmp_path) -> str:
    path = str(tmp_path / "ds.lance")
    # Several fragments, so row ids are not plain offsets.
    lance.write_dataset(_table(range(N)), path, max_rows_per_file=50)
    return path


def _ids(perm: Permutation) -> list[int]:
    return perm.with_format("arrow").take_positions(np.arange(len(perm))).column("id").to_pylist()


def test_identity_reads_every_row_in_dataset_order(uri):
    perm = Permutation.identity(uri)
    assert len(perm) == N
    assert perm.columns == ["id", "image", "filename", "label", "categories"]
    assert perm.version == 1
    assert _ids(perm) == list(range(N))


def test_take_positions_returns_rows_in_permutation_order_with_selected_columns(uri):
    table = permutation_builder(uri).shuffle(seed=3).execute()
    perm = Permutation.from_tables(uri, table).select_columns(["image", "id"])
    positions = [17, 3, 99, 3, 0]
    batch = perm.take_positions(positions)
    assert isinstance(batch, pa.RecordBatch)
    assert batch.schema.names == ["image", "id"]
    assert pa.types.is_binary(batch.schema.field("image").type)
    full = _ids(Permutation.from_tables(uri, table))
    assert batch.column("id").to_pylist() == [full[p] for p in positions]
    assert batch.column("image").to_pylist() == [_png(full[p]) for p in positions]
    assert full != list(range(N))  # the shuffle really moved rows


def test_take_positions_sorted_reads_storage_order_and_says_where_each_position_is(uri):
    table = permutation_builder(uri).shuffle(seed=3).execute()
    perm = Permutation.from_tables(uri, table).select_columns(["id", "image"])
    positions = [17, 3, 99, 3, 0]
    rows, order = perm.take_positions_sorted(positions)
    ids = rows.column("id").to_pylist()
    assert ids == sorted(ids) and len(ids) == len(positions)
    assert rows.take(pa.array(order)).to_pylist() == perm.take_positions(positions).to_pylist()
    empty, none = perm.take_positions_sorted([])
    assert empty.num_rows == 0 and len(none) == 0 and empty.schema.names == ["id", "image"]


def test_random_splits_are_disjoint_and_cover_every_filtered_row(uri):
    table = (
        permutation_builder(uri)
        .filter("label != 'dog'")
        .split_random(ratios=[0.6, 0.3, 0.1], seed=5, split_names=["train", "val", "test"])
        .shuffle(seed=1)
        .execute()
    )
    expected = {i for i in range(N) if LABELS[i % 3] != "dog"}
    parts = [set(_ids(Permutation.from_tables(uri, table, split=s))) for s in ("train", "val", "test")]
    assert set().union(*parts) == expected
    assert sum(len(p) for p in parts) == len(expected)
    assert [len(p) for p in parts] == [48, 24, 8]  # 80 filtered rows at 60/30/10 %
    assert table.column("split_id").to_pylist() == sorted(table.column("split_id").to_pylist())


def test_counts_fixed_and_partial_ratios(uri):
    def sizes(builder) -> list[int]:
        return np.bincount(builder.execute().column("split_id").to_numpy()).tolist()

    assert sizes(permutation_builder(uri).split_random(counts=[10, 25], seed=0)) == [10, 25]
    assert sizes(permutation_builder(uri).split_random(fixed=7, seed=0)) == [17] * 7
    # Ratios summing below one leave the remaining rows out of every split.
    assert sizes(permutation_builder(uri).split_random(ratios=[0.25, 0.25], seed=0)) == [30, 30]
    # Ratios summing to one lose no row to rounding (0.33 * 120 rounds to 40 each: 120).
    assert sum(sizes(permutation_builder(uri).split_random(ratios=[1 / 3] * 3))) == N


def test_same_seed_same_order_other_seed_other_order(uri):
    def order(split_seed: int, shuffle_seed: int) -> list[int]:
        t = permutation_builder(uri).split_random(ratios=[0.5, 0.5], seed=split_seed).shuffle(seed=shuffle_seed).execute()
        return t.column("row_id").to_pylist()

    assert order(1, 2) == order(1, 2)
    assert order(1, 2) != order(1, 3)
    assert order(1, 2) != order(4, 2)


def test_unseeded_shuffle_records_the_seed_it_drew(uri):
    first = permutation_builder(uri).shuffle().execute()
    seed = int(first.schema.metadata[b"seed"])
    again = permutation_builder(uri).shuffle(seed=seed).execute()
    assert first.column("row_id").to_pylist() == again.column("row_id").to_pylist()


def test_metadata_records_lineage(uri):
    table = (
        permutation_builder(uri)
        .filter("id < 100")
        .split_random(ratios=[0.5, 0.5], seed=9, split_names=["a", "b"])
        .shuffle(seed=4, clump_size=5)
        .execute()
    )
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["uri"] == uri
    assert meta["version"] == "1"
    assert meta["seed"] == "4" and meta["split_seed"] == "9" and meta["clump_size"] == "5"
    assert meta["filter"] == "id < 100"
    assert json.loads(meta["split_names"]) == ["a", "b"]
    assert table.schema.names == ["row_id", "split_id"]


def test_clump_shuffle_moves_runs_of_neighbours_together(uri):
    table = permutation_builder(uri).shuffle(seed=2, clump_size=8).execute()
    ids = _ids(Permutation.from_tables(uri, table))
    runs = [ids[i : i + 8] for i in range(0, N, 8)]
    assert all(run == list(range(run[0], run[0] + 8)) for run in runs)
    assert ids != list(range(N))


def test_sequential_split_takes_rows_in_dataset_order(uri):
    table = permutation_builder(uri).split_sequential(counts=[30, 50], split_names=["a", "b"]).execute()
    assert _ids(Permutation.from_tables(uri, table, split="a")) == list(range(30))
    assert _ids(Permutation.from_tables(uri, table, split=1)) == list(range(30, 80))


def test_hash_split_keeps_old_rows_in_their_split_after_append(uri):
    def assignment(table: pa.Table) -> dict[int, int]:
        out = {}
        for split in range(3):
            for i in _ids(Permutation.from_tables(uri, table, split=split)):
                out[i] = split
        return out

    before = assignment(permutation_builder(uri).split_hash(["filename"], [3, 1, 1]).execute())
    lance.write_dataset(_table(range(N, 2 * N)), uri, mode="append")
    after = assignment(permutation_builder(uri).split_hash(["filename"], [3, 1, 1]).execute())
    assert len(before) == N and len(after) == 2 * N
    assert all(after[i] == split for i, split in before.items())
    counts = np.bincount(list(after.values()))
    assert counts[0] > counts[1] and counts[0] > counts[2]  # weights 3:1:1
    assert min(counts) > 0


def test_hash_split_discard_weight_drops_rows(uri):
    table = permutation_builder(uri).split_hash(["id"], [1], discard_weight=1).execute()
    assert 0 < table.num_rows < N


def test_filter_on_list_column(uri):
    table = permutation_builder(uri).filter("array_has_any(categories, ['car'])").execute()
    assert _ids(Permutation.from_tables(uri, table)) == [i for i in range(N) if i % 4 == 0]


def test_persisted_table_reloads_to_identical_order(uri, tmp_path):
    perm_uri = str(tmp_path / "perm.lance")
    table = (
        permutation_builder(uri)
        .split_random(ratios=[0.8, 0.2], seed=1, split_names=["train", "val"])
        .shuffle(seed=7)
        .persist(perm_uri)
        .execute()
    )
    reloaded = lance.dataset(perm_uri)
    assert reloaded.to_table().equals(table)
    for source_table in (reloaded, perm_uri):
        perm = Permutation.from_tables(uri, source_table, split="val")
        assert _ids(perm) == _ids(Permutation.from_tables(uri, table, split="val"))
    # The table alone knows its dataset.
    assert _ids(Permutation.from_tables(None, perm_uri, split="train")) == _ids(
        Permutation.from_tables(uri, table, split="train")
    )


def test_permutation_pins_its_version_across_delete_and_update(uri):
    table = permutation_builder(uri).shuffle(seed=0).execute()
    expected = _ids(Permutation.from_tables(uri, table))
    labels = Permutation.from_tables(uri, table).select_columns(["label"]).take_positions(range(N)).column(0)

    ds = lance.dataset(uri)
    ds.delete("id % 2 = 0")
    ds.update({"label": "'changed'"})
    assert lance.dataset(uri).version == 3

    perm = Permutation.from_tables(uri, table)  # a URI opens the version the table was built on
    assert perm.version == 1
    assert _ids(perm) == expected
    assert perm.select_columns(["label"]).take_positions(range(N)).column(0).equals(labels)

    with pytest.raises(ValueError, match=r"built on version 1 .* applied to version 3"):
        Permutation.from_tables(lance.dataset(uri), table)
    with pytest.raises(ValueError, match="built on version 1"):
        Permutation.from_tables(uri, table, version=2)


def test_stable_row_ids_follow_rows_to_a_later_version(tmp_path):
    path = str(tmp_path / "stable.lance")
    lance.write_dataset(_table(range(40)), path, max_rows_per_file=16, enable_stable_row_ids=True)
    table = permutation_builder(path).shuffle(seed=1).execute()
    order = _ids(Permutation.from_tables(path, table))

    ds = lance.dataset(path)
    ds.update({"label": "'changed'"}, where="id < 10")
    latest = Permutation.from_tables(lance.dataset(path), table)
    assert latest.version == 2
    assert _ids(latest) == order
    labels = latest.select_columns(["id", "label"]).with_format("python_col")[0:40]
    assert all((lab == "changed") == (i < 10) for i, lab in zip(labels["id"], labels["label"]))

    lance.dataset(path).delete("id = 5")
    with pytest.raises(LookupError, match="gone from version 3"):
        Permutation.from_tables(lance.dataset(path), table)


def test_version_by_number_and_tag(uri):
    ds = lance.dataset(uri)
    lance.write_dataset(_table(range(N, N + 10)), uri, mode="append")
    ds = lance.dataset(uri)
    ds.tags.create("first", 1)
    assert len(Permutation.identity(uri)) == N + 10
    assert len(Permutation.identity(uri, version=1)) == N
    assert len(Permutation.identity(uri, version="first")) == N
    table = permutation_builder(uri, version="first").execute()
    assert table.schema.metadata[b"version"] == b"1"
    assert len(Permutation.from_tables(uri, table)) == N
    assert open_source(f"file://{uri}").version == 2


def test_io_uring_reader_can_be_turned_off_and_reads_the_same_rows(uri, monkeypatch):
    table = permutation_builder(uri).shuffle(seed=4).execute()
    fast = Permutation.from_tables(uri, table)
    monkeypatch.setenv("LANCEFEED_IO_URING", "0")
    plain = Permutation.from_tables(uri, table)
    assert not str(plain.dataset.uri).startswith("file+uring://")
    assert fast.uri == plain.uri == uri
    positions = np.arange(N)[::-1]
    assert fast.take_positions(positions).equals(plain.take_positions(positions))


def test_blob_encoded_images_read_as_binary(tmp_path):
    path = str(tmp_path / "blob.lance")
    schema = pa.schema(
        [
            pa.field("id", pa.int64()),
            pa.field("image", pa.large_binary(), metadata={"lance-encoding:blob": "true"}),
        ]
    )
    images = [_png(i) for i in range(30)]
    lance.write_dataset(pa.table({"id": list(range(30)), "image": images}, schema=schema), path, max_rows_per_file=10)
    table = permutation_builder(path).shuffle(seed=2).execute()
    perm = Permutation.from_tables(path, table)
    assert perm.blob_columns == ["image"]
    batch = perm.take_positions([5, 0, 29, 12])
    ids = batch.column("id").to_pylist()
    assert pa.types.is_large_binary(batch.schema.field("image").type)
    assert batch.column("image").to_pylist() == [images[i] for i in ids]


def test_iteration_in_arrow_batches_and_formats(uri):
    perm = Permutation.from_tables(uri, permutation_builder(uri).shuffle(seed=5).execute())
    batches = list(perm.select_columns(["id"]).iter_batches(50))
    assert [b.num_rows for b in batches] == [50, 50, 20]
    assert sum((b.column(0).to_pylist() for b in batches), []) == _ids(perm)
    assert [b.num_rows for b in perm.iter_batches(50, skip_last_batch=True)] == [50, 50]
    # lancedb's formats: "python" is a list of row dicts, "python_col" a dict of lists,
    # "numpy" a rows x columns array.
    assert perm.select_columns(["id"])[2] == [{"id": _ids(perm)[2]}]
    assert perm.select_columns(["id"]).with_format("python_col")[2] == {"id": [_ids(perm)[2]]}
    rows = list(perm.select_columns(["id"]).with_batch_size(40))
    assert [len(r) for r in rows] == [40, 40, 40]
    assert [r["id"] for r in sum(rows, [])] == _ids(perm)
    arr = perm.with_format("numpy").select_columns(["id"])[0:3]
    assert isinstance(arr, np.ndarray) and arr.tolist() == [[i] for i in _ids(perm)[:3]]


def test_torch_dataloader_with_collate_fn_returns_rows_in_order(uri):
    torch = pytest.importorskip("torch")
    table = permutation_builder(uri).filter("label = 'cat'").shuffle(seed=11).execute()
    perm = Permutation.from_tables(uri, table).select_columns(["id", "label"]).with_format("arrow")
    calls = []

    def collate(batch: pa.RecordBatch) -> dict:
        calls.append(batch.num_rows)
        return {"id": torch.tensor(batch.column("id").to_numpy()), "label": batch.column("label").to_pylist()}

    loader = torch.utils.data.DataLoader(perm, batch_size=16, shuffle=False, collate_fn=collate)
    out = list(loader)
    assert calls == [16, 16, 8]  # one __getitems__ call, so one take, per batch
    assert torch.cat([b["id"] for b in out]).tolist() == _ids(perm)
    assert all(label == "cat" for b in out for label in b["label"])


def test_permutation_pickles_to_the_same_pinned_rows(uri):
    table = permutation_builder(uri).shuffle(seed=8).execute()
    perm = Permutation.from_tables(uri, table).select_columns(["id"])
    lance.dataset(uri).delete("id < 10")
    clone = pickle.loads(pickle.dumps(perm))
    assert clone.version == 1 and clone.columns == ["id"]
    assert _ids(clone) == _ids(perm)


def test_permutations_collection_by_name_and_index(uri):
    table = permutation_builder(uri).split_random(ratios=[0.75, 0.25], seed=0, split_names=["train", "test"]).execute()
    perms = Permutations(uri, table)
    assert perms.split_names == ["train", "test"] and len(perms) == 2
    assert len(perms["train"]) == 90 and len(perms[1]) == 30
    assert perms["test"].split_name == "test"


def test_package_exports_the_builder():
    assert lancefeed.permutation_builder is permutation_builder
    assert lancefeed.Permutation is Permutation


# -- bad input ---------------------------------------------------------------------


def test_unknown_columns_are_named(uri):
    perm = Permutation.identity(uri)
    with pytest.raises(ValueError, match=r"unknown column 'lable'.*expected one of \['id', 'image'"):
        perm.select_columns(["image", "lable"])
    with pytest.raises(ValueError, match="unknown split_hash column 'nope'"):
        permutation_builder(uri).split_hash(["nope"], [1, 1])
    with pytest.raises(ValueError, match=r"were removed from this permutation's selection"):
        perm.select_columns(["id"]).select_columns(["label"])


def test_bad_filter_names_the_filter_and_the_columns(uri):
    with pytest.raises(ValueError, match=r"filter 'id >' could not be applied.*expected an SQL predicate"):
        permutation_builder(uri).filter("id >").execute()
    with pytest.raises(ValueError, match=r"filter 'nope = 1'.*nope"):
        permutation_builder(uri).filter("nope = 1").execute()


def test_bad_split_sizes(uri):
    with pytest.raises(ValueError, match=r"must sum to at most 1, got \[0.7, 0.4\]"):
        permutation_builder(uri).split_random(ratios=[0.7, 0.4])
    with pytest.raises(ValueError, match="exactly one of ratios=, counts= or fixed="):
        permutation_builder(uri).split_random(ratios=[0.5], counts=[3])
    with pytest.raises(ValueError, match=r"ask for 200 rows but only 120 rows pass the filter"):
        permutation_builder(uri).split_sequential(counts=[100, 100]).execute()
    with pytest.raises(ValueError, match="one name per split"):
        permutation_builder(uri).split_random(ratios=[0.5, 0.5], split_names=["a"])
    with pytest.raises(ValueError, match="positive integers"):
        permutation_builder(uri).split_hash(["id"], [1, 0])


def test_unknown_split_name_and_index(uri):
    table = permutation_builder(uri).split_random(ratios=[0.5, 0.5], split_names=["train", "test"]).execute()
    with pytest.raises(ValueError, match=r"unknown split 'validation': the splits are named \['train', 'test'\]"):
        Permutation.from_tables(uri, table, split="validation")
    with pytest.raises(ValueError, match="split index 2 is out of range: the table has 2 split"):
        Permutation.from_tables(uri, table, split=2)


def test_missing_dataset_and_version(uri, tmp_path):
    with pytest.raises(FileNotFoundError, match="no Lance dataset at .*missing.lance"):
        permutation_builder(str(tmp_path / "missing.lance"))
    with pytest.raises(ValueError, match=r"has no version 9: expected one of versions 1..1"):
        Permutation.identity(uri, version=9)
    with pytest.raises(ValueError, match=r"has no tag 'best'"):
        open_source(uri, version="best")
    with pytest.raises(TypeError, match="expected a Lance dataset"):
        open_source(42)  # type: ignore[arg-type]


def test_applying_a_table_to_another_dataset_warns(uri, tmp_path):
    other = str(tmp_path / "other.lance")
    lance.write_dataset(_table(range(N)), other)
    table = permutation_builder(uri).execute()
    with pytest.warns(UserWarning, match=r"built on .*ds.lance.* applied to .*other.lance"):
        Permutation.from_tables(other, table)


def test_out_of_range_position(uri):
    with pytest.raises(IndexError, match="position 120 is out of range for a permutation of 120 rows"):
        Permutation.identity(uri).take_positions([0, 120])


def _scanned_ids(ds: lance.LanceDataset) -> list[int]:
    return ds.to_table(columns=[], with_row_id=True, scan_in_order=True)["_rowid"].to_pylist()


@pytest.mark.parametrize("history", ["written", "appended", "deleted", "compacted", "stable_ids", "empty"])
def test_identity_and_builder_hold_the_ids_lance_scans(tmp_path, history):
    # Row ids are read off the manifest where they follow from it (address-style ids, no
    # deletion): that must give exactly Lance's own scan, in the same order, after any
    # history, and fall back to the scan where it would not.
    path = str(tmp_path / "h.lance")
    options = {"enable_stable_row_ids": True} if history == "stable_ids" else {}
    first = _table(range(1)).slice(0, 0) if history == "empty" else _table(range(40))
    lance.write_dataset(first, path, max_rows_per_file=15, **options)
    if history in ("appended", "deleted", "compacted", "stable_ids"):
        lance.write_dataset(_table(range(40, 55)), path, mode="append", max_rows_per_file=15)
    if history in ("deleted", "compacted", "stable_ids"):
        lance.dataset(path).delete("id % 7 = 3")
    if history in ("compacted", "stable_ids"):
        lance.dataset(path).optimize.compact_files(target_rows_per_fragment=1000)
    ds = lance.dataset(path)
    expected = _scanned_ids(ds)
    assert ds.has_stable_row_ids == (history == "stable_ids")
    if history in ("written", "appended", "deleted"):
        assert any(i >= 1 << 32 for i in expected)  # several fragments: ids are not offsets

    perm = Permutation.identity(path)
    assert perm.row_ids.tolist() == expected
    assert _ids(perm) == ds.to_table(columns=["id"], scan_in_order=True)["id"].to_pylist()
    table = permutation_builder(path).execute()
    assert table["row_id"].to_pylist() == expected
    shuffled = permutation_builder(path).shuffle(seed=2).execute()["row_id"].to_pylist()
    assert sorted(shuffled) == sorted(expected) and (len(expected) < 2 or shuffled != expected)
