"""lancefeed.permutation against lancedb.permutation (0.40): the seeds' page snippets
run on both, results compared; each library reads the other's tables, pinned."""

from __future__ import annotations

import datetime

import lance
import pyarrow as pa
import pytest

lancedb = pytest.importorskip("lancedb")
ldb_perm = pytest.importorskip("lancedb.permutation")

from lancefeed import permutation as lf_perm  # noqa: E402
from lancefeed.permutation import PinnedVersionError  # noqa: E402

N = 60


def _data(ids) -> pa.Table:
    ids = list(ids)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "prompt": [f"p{i}" for i in ids],
            "category": ["cat" if i % 3 == 0 else "dog" for i in ids],
            "x": pa.array([float(i) / 2 for i in ids], pa.float64()),
        }
    )


@pytest.fixture()
def table(tmp_path):
    db = lancedb.connect(str(tmp_path / "db"))
    return db.create_table("some_table", _data(range(N)))


def _rows(perm) -> list:
    return perm.with_format("python").take_offsets(list(range(len(perm))))


def test_identity_and_select_columns_match(table):
    # "Selecting All Rows" / "Selecting Columns"
    ours = lf_perm.Permutation.identity(table).select_columns(["id", "prompt"])
    theirs = ldb_perm.Permutation.identity(table).select_columns(["id", "prompt"])
    assert len(ours) == len(theirs) == N
    assert ours.column_names == theirs.column_names == ["id", "prompt"]
    assert _rows(ours) == _rows(theirs)


def test_filter_matches(table):
    # "Filtering Rows"
    ours = lf_perm.Permutation.from_tables(table, lf_perm.permutation_builder(table).filter("category = 'cat'").execute())
    theirs = ldb_perm.Permutation.from_tables(table, ldb_perm.permutation_builder(table).filter("category = 'cat'").execute())
    assert _rows(ours) == _rows(theirs)
    assert [r["id"] for r in _rows(ours)] == [i for i in range(N) if i % 3 == 0]


@pytest.mark.parametrize("fmt", ["python", "python_col", "arrow", "torch", "torch_row", "torch_col"])
def test_formats_match(table, fmt):
    if fmt.startswith("torch"):
        torch = pytest.importorskip("torch")
    ours = lf_perm.Permutation.identity(table).select_columns(["id", "x"]).with_format(fmt)
    theirs = ldb_perm.Permutation.identity(table).select_columns(["id", "x"]).with_format(fmt)
    a, b = ours.take_offsets([3, 1, 7]), theirs.take_offsets([3, 1, 7])
    assert type(a) is type(b)
    if fmt == "arrow":
        assert a.equals(b)
    elif fmt == "torch":
        assert [{k: v.item() for k, v in r.items()} for r in a] == [{k: v.item() for k, v in r.items()} for r in b]
        assert {k: v.dtype for k, v in a[0].items()} == {k: v.dtype for k, v in b[0].items()}
    elif fmt == "torch_row":
        assert len(a) == len(b) == 3 and all(torch.equal(x, y) for x, y in zip(a, b))
    elif fmt == "torch_col":
        assert torch.equal(a, b)
    else:
        assert a == b


def test_numpy_format_is_rows_by_columns(table):
    ours = lf_perm.Permutation.identity(table).select_columns(["id", "x"]).with_format("numpy").take_offsets([2, 4])
    # lancedb's code is batch.to_pandas().to_numpy(): a rows x columns array.
    assert ours.shape == (2, 2) and ours.tolist() == [[2.0, 1.0], [4.0, 2.0]]


def test_batches_and_iteration_match(table):
    ours = lf_perm.Permutation.identity(table).select_columns(["id"]).with_batch_size(25)
    theirs = ldb_perm.Permutation.identity(table).select_columns(["id"]).with_batch_size(25)
    # __iter__ drops the short last batch in both; iter() keeps it unless asked.
    assert list(ours) == list(theirs) and [len(b) for b in ours] == [25, 25]
    assert list(ours.iter(25)) == list(theirs.iter(25))
    assert [len(b) for b in ours.iter(25)] == [25, 25, 10]
    assert list(ours.iter(25, skip_last_batch=True)) == list(theirs.iter(25, skip_last_batch=True))


def test_skip_take_rename_rowid_match(table):
    ours = lf_perm.Permutation.identity(table)
    theirs = ldb_perm.Permutation.identity(table)
    for make in (
        lambda p: p.with_skip(5).with_take(7),
        lambda p: p.with_take(7).with_skip(5),  # skip applies first whatever the order
        lambda p: p.with_skip(5).with_skip(2),  # a second skip replaces the first
        lambda p: p.select_columns(["id", "prompt"]).rename_column("id", "k"),
        lambda p: p.select_columns(["id", "prompt", "x"]).rename_columns({"prompt": "text", "x": "y"}),
    ):
        a, b = make(ours), make(theirs)
        assert len(a) == len(b)
        assert a.column_names == b.column_names
        # compared through iteration: lancedb 0.40's identity take_offsets ignores with_skip
        assert list(a.iter(1000)) == list(b.iter(1000))
        assert list(a.iter(1000))[0] == _rows(a)
    a = ours.select_columns(["_rowid", "id"]).take_offsets([0, 5])
    b = theirs.select_columns(["_rowid", "id"]).take_offsets([0, 5])
    assert a == b  # row dicts: lancedb puts _rowid last in the row, the values agree
    with pytest.raises(ValueError):
        ours.rename_column("id", "prompt")
    with pytest.raises(ValueError):
        ours.rename_column("nope", "other")


def test_sequential_and_calculated_split_membership_match(table):
    for configure in (
        lambda b: b.split_sequential(ratios=[0.5, 0.3], split_names=["a", "b"]),
        lambda b: b.split_sequential(counts=[10, 20]),
        lambda b: b.split_calculated("id % 3", split_names=["a", "b", "c"]),
        lambda b: b.split_calculated("id % 4"),
    ):
        ours_t = configure(lf_perm.permutation_builder(table)).execute()
        theirs_t = configure(ldb_perm.permutation_builder(table)).execute()
        ours, theirs = lf_perm.Permutations(table, ours_t), ldb_perm.Permutations(table, theirs_t)
        assert ours.split_names == theirs.split_names
        k = len(ours)
        assert k >= 2
        for i in range(k):
            a = sorted(r["id"] for r in _rows(ours[i]))
            b = sorted(r["id"] for r in _rows(theirs[i]))
            assert a == b and a


def test_calculated_split_by_reference(table):
    t = lf_perm.permutation_builder(table).split_calculated("id % 3", split_names=["a", "b", "c"]).execute()
    for i, name in enumerate(["a", "b", "c"]):
        ids = [r["id"] for r in _rows(lf_perm.Permutation.from_tables(table, t, name))]
        assert ids == [j for j in range(N) if j % 3 == i]


def test_random_and_hash_splits_keep_lancedb_guarantees(table):
    for configure in (
        lambda b: b.split_random(ratios=[0.75, 0.25], seed=3),
        lambda b: b.split_random(counts=[13, 29], seed=3),
        lambda b: b.split_random(fixed=3, seed=3),
        lambda b: b.split_random(ratios=[0.5, 0.5], seed=3, clump_size=4),
    ):
        ours_t = configure(lf_perm.permutation_builder(table)).execute()
        theirs_t = configure(ldb_perm.permutation_builder(table)).execute()
        ours, theirs = lf_perm.Permutations(table, ours_t), ldb_perm.Permutations(table, theirs_t)
        sizes = [len(ours[i]) for i in range(len(ours))]
        assert sizes == [len(theirs[i]) for i in range(len(sizes))]
        members = [set(r["id"] for r in _rows(ours[i])) for i in range(len(sizes))]
        assert sum(len(m) for m in members) == len(set().union(*members))  # disjoint
        # the same seed, the same splits
        again = configure(lf_perm.permutation_builder(table)).execute()
        assert again.equals(ours_t)
    # clump_size: splits are made of runs of 4 neighbouring rows
    t = lf_perm.permutation_builder(table).split_random(ratios=[0.5, 0.5], seed=9, clump_size=4).execute()
    first = sorted(r["id"] for r in _rows(lf_perm.Permutation.from_tables(table, t, 0)))
    partial = [c for c in {i // 4 for i in first} if not all(c * 4 + j in first for j in range(4))]
    assert len(first) == 30 and len(partial) <= 1  # whole clumps, but where the two splits meet

    # hash: weights share the rows, and a row's split depends only on its values
    ours_t = lf_perm.permutation_builder(table).split_hash(["id"], [1, 1], discard_weight=0).execute()
    theirs_t = ldb_perm.permutation_builder(table).split_hash(["id"], [1, 1], discard_weight=0).execute()
    assert ours_t.num_rows == theirs_t.count_rows() == N
    table.add(_data(range(N, N + 20)))
    grown = lf_perm.permutation_builder(table).split_hash(["id"], [1, 1], discard_weight=0).execute()

    def split_of(t):
        ids = lf_perm.Permutations(table, t)
        return {r["id"]: s for s in range(2) for r in _rows(ids[s])}

    before, after = split_of(ours_t), split_of(grown)
    assert all(after[i] == s for i, s in before.items())


def _compact(table) -> None:
    table.delete("id < 6")
    table.add(_data(range(100, 110)))
    table.optimize()


def test_lancedb_table_read_by_lancefeed_is_pinned(table):
    perm_t = ldb_perm.permutation_builder(table).filter("category = 'cat'").execute()
    assert perm_t.schema.metadata[b"base_version"] == str(table.version).encode()
    before = _rows(lf_perm.Permutation.from_tables(table, perm_t))
    _compact(table)
    # lancefeed reads the version lancedb pinned, through the lancedb Table, its dataset or its URI
    for source in (table, table.to_lance().uri):
        assert _rows(lf_perm.Permutation.from_tables(source, perm_t)) == before
    assert [r["id"] for r in before] == [i for i in range(N) if i % 3 == 0]


def test_lancefeed_table_read_by_lancedb_is_pinned(table, tmp_path):
    db = lancedb.connect(str(tmp_path / "db"))
    lf_perm.permutation_builder(table).filter("category = 'dog'").split_sequential(
        counts=[10, 20], split_names=["train", "val"]
    ).persist(str(tmp_path / "db" / "perm.lance")).execute()
    perm_tbl = db.open_table("perm")
    expected = [i for i in range(N) if i % 3][10:30]
    _compact(table)
    assert [r["id"] for r in _rows(ldb_perm.Permutation.from_tables(table, perm_tbl, "val"))] == expected
    assert [r["id"] for r in _rows(lf_perm.Permutation.from_tables(table, perm_tbl, "val"))] == expected


def test_persisted_version_survives_cleanup_and_untagged_one_errors(table, tmp_path):
    uri = table.to_lance().uri
    tagged = lf_perm.permutation_builder(uri).split_sequential(counts=[5]).persist(str(tmp_path / "p1.lance")).execute()
    untagged = lf_perm.permutation_builder(uri).split_sequential(counts=[5]).execute()  # not persisted: no tag
    version = table.version
    assert lance.dataset(uri).tags.list()[tagged.schema.metadata[b"base_tag"].decode()]["version"] == version
    table.delete("id < 3")
    table.add(_data(range(200, 205)))
    # Lance refuses by default to clean up past a tag, naming it
    with pytest.raises(OSError, match="lancefeed-perm-p1-v"):
        lance.dataset(uri).cleanup_old_versions(older_than=datetime.timedelta(0))
    lance.dataset(uri).cleanup_old_versions(older_than=datetime.timedelta(0), error_if_tagged_old_versions=False)
    # lancedb's optimize() cannot remove it either: it stops, naming the tag
    with pytest.raises(RuntimeError, match="lancefeed-perm-p1-v"):
        table.optimize(cleanup_older_than=datetime.timedelta(0))
    assert [r["id"] for r in _rows(lf_perm.Permutation.from_tables(uri, str(tmp_path / "p1.lance")))] == list(range(5))
    assert [r["id"] for r in _rows(lf_perm.Permutation.from_tables(uri, tagged))] == list(range(5))
    # the same build without persist() pinned the same version; drop the tag and clean up
    lance.dataset(uri).tags.delete(tagged.schema.metadata[b"base_tag"].decode())
    lance.dataset(uri).cleanup_old_versions(older_than=datetime.timedelta(0))
    with pytest.raises(PinnedVersionError, match=rf"version {version} .* is gone.*cleanup_old_versions.*persist"):
        lf_perm.Permutation.from_tables(uri, untagged)


def test_persist_with_explicit_tag_and_conflicting_tag(table, tmp_path):
    uri = table.to_lance().uri
    lf_perm.permutation_builder(uri).persist(str(tmp_path / "a.lance"), tag="train-v1").execute()
    assert lance.dataset(uri).tags.list()["train-v1"]["version"] == table.version
    table.add(_data(range(300, 302)))
    with pytest.raises(ValueError, match="tag 'train-v1' .* already names version"):
        lf_perm.permutation_builder(uri).persist(str(tmp_path / "b.lance"), tag="train-v1").execute()
