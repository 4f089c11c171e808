"""lancefeed.mix: datasets mixed by weight through lancefeed.DataLoader.

Three sources written the ways users write them: pylance's ``lance.write_dataset``
defaults, a lancedb table whose label column has another name (mapped by ``columns=``),
and one split of a permutation. Every image is a small real JPEG of its own, and every
row carries ``idx``, its row number as written, so a batch tells which row of which
source each sample is and its pixels can be checked against Pillow's decode of that row.
The counts are checked against largest-remainder rounding written out here, on exact
decimal fractions.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, List, Tuple

import lance
import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

import lancefeed
from images import jpeg
from lancefeed.permutation.mix import Mix, largest_remainder

WEIGHTS = [0.5, 0.3, 0.2]
EPOCH = 50
COLUMNS = ["image", "label", "idx", "_source"]


@dataclass
class Sources:
    """The test's sources: what to give mix(), and each source's JPEG bytes by idx."""

    items: List[Any]
    columns: List[Any]
    blobs: List[List[bytes]]
    rows: List[int]


def _table(n: int, width: int, height: int, seed: int, label: str = "label", labels: Any = None) -> pa.Table:
    return pa.table({
        "image": pa.array([jpeg(width, height, seed=seed + i) for i in range(n)], pa.binary()),
        label: pa.array(labels(i) if labels else f"s{seed}-{i % 3}" for i in range(n)),
        "idx": pa.array(range(n), pa.int64()),
    })


def _lancedb_or_lance(root: Path, name: str, table: pa.Table) -> Any:
    try:
        import lancedb
    except ImportError:  # the mix reads plain Lance datasets the same way
        lance.write_dataset(table, str(root / f"{name}.lance"))
        return str(root / f"{name}.lance")
    return lancedb.connect(str(root / "db")).create_table(name, table)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    root = tmp_path_factory.mktemp("mix")
    a = _table(30, 16, 16, 0)
    lance.write_dataset(a, str(root / "a.lance"), max_rows_per_file=12)  # pylance's defaults, 3 fragments
    b = _table(12, 16, 16, 100, label="class")
    c = _table(40, 16, 16, 200)
    lance.write_dataset(c, str(root / "c.lance"))
    split = (lancefeed.permutation_builder(str(root / "c.lance"))
             .split_random(ratios=[0.5, 0.5], seed=1, split_names=["train", "val"]).shuffle(seed=2).execute())
    train = lancefeed.Permutation.from_tables(str(root / "c.lance"), split, split="train")
    blobs = [t.column("image").to_pylist() for t in (a, b, c)]
    return Sources([str(root / "a.lance"), _lancedb_or_lance(root, "b", b), train], [None, {"class": "label"}, None],
                   blobs, [30, 12, len(train)])


def make_mix(src: Sources, **kw: Any) -> Mix:
    kw.setdefault("weights", WEIGHTS)
    kw.setdefault("epoch_size", EPOCH)
    kw.setdefault("seed", 5)
    return lancefeed.mix(src.items, columns=src.columns, **kw)


def reference_counts(weights: List[Any], total: int) -> List[int]:
    """Largest remainder on the decimals the weights print as."""
    exact = [Fraction(str(w)) for w in weights]
    quotas = [w * total / sum(exact) for w in exact]
    counts = [math.floor(q) for q in quotas]
    leftover = total - sum(counts)
    ranked = sorted(range(len(quotas)), key=lambda i: (quotas[i] - counts[i], -i), reverse=True)
    for i in ranked[:leftover]:
        counts[i] += 1
    return counts


def pillow(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def epoch_samples(loader: lancefeed.DataLoader, limit: int | None = None) -> List[Tuple[int, int, str]]:
    """(source, idx, digest of the image's pixels) of each sample, in order, for ``limit``
    batches (all of them by default)."""
    out = []
    it = iter(loader)
    for k, (images, _, idx, source) in enumerate(it):
        for i in range(len(idx)):
            out.append((int(source[i]), int(idx[i]), hashlib.sha1(images[i].numpy().tobytes()).hexdigest()))
        if limit is not None and k + 1 == limit:
            it.close()
            break
    return out


def loader_for(m: Any, rank: int = 0, world_size: int = 1, batch_size: int = 4, **kw: Any) -> lancefeed.DataLoader:
    kw.setdefault("transform", lancefeed.Compose([lancefeed.RandomResizedCrop(8), lancefeed.RandomHorizontalFlip()]))
    kw.setdefault("columns", COLUMNS)
    return lancefeed.DataLoader(m, batch_size, shuffle=True, seed=9, rank=rank, world_size=world_size, **kw)


# -- counts, ranks, repeats ---------------------------------------------------------


@pytest.mark.parametrize("weights, total, expected", [
    ([0.5, 0.3, 0.2], 7, [4, 2, 1]),
    ([1, 1, 1], 10, [4, 3, 3]),
    ([0.1, 0.2, 0.7], 10, [1, 2, 7]),
    ([2, 1, 1], 5, [3, 1, 1]),
    ([1, 0, 3], 9, [2, 0, 7]),
    ([0.3, 0.1], 2, [2, 0]),  # an exact tie (1.5, 0.5), which 0.3 and 0.1 as binary floats would break the other way
])
def test_reference_rounding_is_largest_remainder(weights, total, expected):
    assert reference_counts(weights, total) == expected  # the reference itself, on worked cases
    assert largest_remainder(weights, total) == expected


@pytest.mark.parametrize("weights, total", [(WEIGHTS, EPOCH), ([1, 1, 1], 37), ([0.05, 0.9, 0.05], 61), ([3, 0, 1], 22)])
def test_each_epoch_holds_exactly_the_rounded_count_of_each_source(sources, weights, total):
    m = make_mix(sources, weights=weights, epoch_size=total)
    want = reference_counts(weights, total)
    assert list(m.counts) == want and len(m) == total
    loader = loader_for(m, transform=None, columns=["image", "_source"], batch_size=8)
    for epoch in range(2):
        loader.set_epoch(epoch)
        got = Counter(int(s) for _, source in loader for s in source)
        assert [got[i] for i in range(3)] == want


def test_per_rank_counts_follow_the_shards_and_every_rank_runs_the_same_steps(sources):
    m = make_mix(sources)
    world, batch = 3, 5
    shard = EPOCH // world
    source_of, _ = m.locate(m.epoch_order(0, shuffle=True))
    loaders = [loader_for(m, rank=r, world_size=world, batch_size=batch) for r in range(world)]
    assert {len(loader) for loader in loaders} == {math.ceil(shard / batch)}
    union: Counter = Counter()
    for r, loader in enumerate(loaders):
        got = Counter(s for s, _, _ in epoch_samples(loader))
        want = Counter(source_of[r * shard:(r + 1) * shard].tolist())
        assert got == want and sum(got.values()) == shard
        # The interleave is stratified: each rank's shard holds each source within two
        # samples of its weight's share.
        for i, w in enumerate(WEIGHTS):
            assert abs(got[i] - w * shard) <= 2, (r, i, got)
        union += got
    left_out = Counter(source_of[world * shard:].tolist())  # the remainder of the shard, as for one dataset
    assert union + left_out == Counter(dict(enumerate(reference_counts(WEIGHTS, EPOCH))))


def test_repeats_only_where_a_source_is_short(sources):
    m = make_mix(sources, weights=[0.3, 0.6, 0.1], epoch_size=60)
    counts = reference_counts([0.3, 0.6, 0.1], 60)  # 18 of 30 rows, 36 of 12, 6 of 20
    assert counts == [18, 36, 6]
    loader = loader_for(m, transform=None)
    for epoch in range(2):
        loader.set_epoch(epoch)
        seen = Counter((s, i) for s, i, _ in epoch_samples(loader))
        for s, (count, rows) in enumerate(zip(counts, sources.rows)):
            times = [n for (source, _), n in seen.items() if source == s]
            assert sum(times) == count
            if count <= rows:
                assert set(times) == {1}
            else:  # whole passes over every row, then a partial one: no row twice more than another
                assert len(times) == rows and min(times) == count // rows and max(times) <= -(-count // rows)


def test_a_new_draw_each_epoch_and_the_same_one_for_a_seed(sources):
    first = loader_for(make_mix(sources))
    again = loader_for(make_mix(sources))
    other = loader_for(make_mix(sources, seed=6))
    epochs = [epoch_samples(first) for _ in range(2)]
    assert epochs[0] != epochs[1]
    assert [s for s, _, _ in epochs[0]] != [s for s, _, _ in epochs[1]]  # the interleave is drawn anew too
    # Source 0 is downsampled (25 of 30 rows): another subset of it, not only another order.
    assert {i for s, i, _ in epochs[0] if s == 0} != {i for s, i, _ in epochs[1] if s == 0}
    assert [epoch_samples(again) for _ in range(2)] == epochs  # pixels (augmentations) included
    assert [(s, i) for s, i, _ in epoch_samples(other)] != [(s, i) for s, i, _ in epochs[0]]


def test_unshuffled_mix_reads_each_source_in_order_going_on_each_epoch(sources):
    m = make_mix(sources, weights=[0.5, 0.5, 0.0], epoch_size=20)
    loader = lancefeed.DataLoader(m, 4, columns=["image", "idx", "_source"])
    for epoch in range(3):
        got = [(int(s), int(i)) for _, idx, source in loader for s, i in zip(source, idx)]
        assert [i for s, i in got if s == 0] == [(epoch * 10 + k) % 30 for k in range(10)]
        assert [i for s, i in got if s == 1] == [(epoch * 10 + k) % 12 for k in range(10)]
        assert [s for s, _ in got] == [0, 1] * 10  # equal weights alternate, the lower source first


def test_copies_of_a_row_get_augmentations_of_their_own(sources):
    m = make_mix(sources, weights=[0.1, 0.8, 0.1], epoch_size=60)  # source 1: 48 samples of 12 rows
    samples = epoch_samples(loader_for(m))
    by_row: Dict[Tuple[int, int], set] = {}
    for s, i, digest in samples:
        by_row.setdefault((s, i), set()).add(digest)
    repeated = [(key, d) for key, d in by_row.items() if key[0] == 1]
    assert len(repeated) == 12 and all(len(d) >= 2 for _, d in repeated)


# -- pixels, labels, columns --------------------------------------------------------


def test_each_sample_is_its_sources_row_decoded(sources):
    m = make_mix(sources)
    loader = lancefeed.DataLoader(m, 8, shuffle=True, columns=COLUMNS, classes="auto")
    names = {0: "label", 1: "class", 2: "label"}
    tables = {0: lance.dataset(sources.items[0]).to_table(),
              1: lancefeed.Permutation.identity(sources.items[1]).take_positions(range(12)),
              2: sources.items[2].dataset.to_table()}
    labels = {s: dict(zip(t.column("idx").to_pylist(), t.column(names[s]).to_pylist())) for s, t in tables.items()}
    assert loader.classes == sorted({v for d in labels.values() for v in d.values()})
    for epoch in range(2):  # epoch 1 crops from the pixel cache's whole decodes
        count = 0
        for images, label, idx, source in loader:
            for k in range(len(idx)):
                s, i = int(source[k]), int(idx[k])
                assert np.array_equal(images[k].numpy(), pillow(sources.blobs[s][i])), (epoch, s, i)
                assert loader.classes[int(label[k])] == labels[s][i]
                count += 1
        assert count == EPOCH
    assert loader.stats()["read_path"] is not None


def test_sources_of_other_sizes_come_out_at_the_transforms_size(tmp_path):
    small = _table(10, 16, 16, 300)
    large = _table(10, 40, 24, 400)
    lance.write_dataset(small, str(tmp_path / "small.lance"))
    lance.write_dataset(large, str(tmp_path / "large.lance"))
    blobs = [small.column("image").to_pylist(), large.column("image").to_pylist()]
    m = lancefeed.mix([str(tmp_path / "small.lance"), str(tmp_path / "large.lance")], weights=[1, 1], epoch_size=16)
    resize = lancefeed.Resize((12, 12))
    loader = lancefeed.DataLoader(m, 8, shuffle=True, transform=resize, columns=["image", "idx", "_source"])
    for images, idx, source in loader:
        assert images.shape == (8, 12, 12, 3) and sorted(Counter(source.tolist()).values()) == [4, 4]
        for k in range(8):
            alone = lancefeed.decode_batch([blobs[int(source[k])][int(idx[k])]], transform=resize)[0]
            assert np.array_equal(images[k].numpy(), alone)
    # Without a transform that gives them one size, a batch of two sizes is a list of images.
    ragged = lancefeed.DataLoader(m, 8, shuffle=True, columns=["image", "idx", "_source"])
    for images, idx, source in ragged:
        assert isinstance(images, list)
        for k, image in enumerate(images):
            assert np.array_equal(image.numpy(), pillow(blobs[int(source[k])][int(idx[k])]))


def test_the_source_index_is_a_column_of_dict_batches(sources):
    m = make_mix(sources)
    batch = next(iter(lancefeed.DataLoader(m, 10, shuffle=True, output="dict")))
    assert set(batch) == {"image", "label", "idx", "_source"}
    assert batch["_source"].dtype == torch.int64 and set(batch["_source"].tolist()) <= {0, 1, 2}


# -- resume -------------------------------------------------------------------------


def _uninterrupted(m: Any) -> Counter:
    return Counter(epoch_samples(loader_for(m)))


def test_resume_at_the_same_world_size_gives_the_same_batches(sources):
    m = make_mix(sources)
    whole = epoch_samples(loader_for(m))
    first = loader_for(m)
    before = epoch_samples(first, limit=5)
    fresh = loader_for(m)
    fresh.load_state_dict(first.state_dict())
    assert before + epoch_samples(fresh) == whole


def test_resume_two_ranks_on_one(sources):
    m = make_mix(sources)
    whole = _uninterrupted(m)
    ranks = [loader_for(m, rank=r, world_size=2) for r in range(2)]
    before = Counter()
    for loader in ranks:
        before += Counter(epoch_samples(loader, limit=3))
    state = ranks[0].state_dict()
    assert state == ranks[1].state_dict()
    one = loader_for(m)
    one.load_state_dict(state)
    assert len(one) == math.ceil((EPOCH - 2 * 3 * 4) / 4)
    after = Counter(epoch_samples(one))
    # One rank leaves nothing of the rest out: every sample once, pixels as uninterrupted.
    assert before + after == whole


def test_resume_one_rank_on_two(sources):
    m = make_mix(sources)
    whole = _uninterrupted(m)
    one = loader_for(m)
    before = Counter(epoch_samples(one, limit=4))
    state = one.state_dict()
    ranks = [loader_for(m, rank=r, world_size=2) for r in range(2)]
    for loader in ranks:
        loader.load_state_dict(state)
    assert len(ranks[0]) == len(ranks[1]) == math.ceil(((EPOCH - 16) // 2) / 4)
    after = [Counter(epoch_samples(loader)) for loader in ranks]
    union = before + after[0] + after[1]
    assert sum(union.values()) == EPOCH - (EPOCH - 16) % 2  # only the re-shard's remainder is left out
    assert not (union - whole)  # nothing read twice, nothing that was not in the epoch
    assert not (after[0] & after[1]) and not ((after[0] + after[1]) & before)


# -- errors ------------------------------------------------------------------------


@pytest.mark.parametrize("weights, message", [
    ([0.5, -0.1, 0.6], r"weight of source 1 \('.*b\.lance'\) is -0\.1: weights must be finite and non-negative"),
    ([0.5, float("nan"), 0.5], r"weight of source 1 .* is nan"),
    ([0.5, 0.5, float("inf")], r"weight of source 2 .* is inf"),
    ([0.5, 0.5], r"2 weights for 3 sources"),
    ([0, 0, 0], r"the weights are all zero"),
    ([0.5, "a", 0.5], r"weight of source 1 .* is 'a': weights must be numbers"),
])
def test_bad_weights_say_which_source(sources, weights, message):
    with pytest.raises(ValueError, match=message):
        make_mix(sources, weights=weights)


def test_bad_epoch_size_seed_and_sources(sources):
    with pytest.raises(ValueError, match="epoch_size must be a positive integer"):
        make_mix(sources, epoch_size=0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        make_mix(sources, seed=-1)
    with pytest.raises(TypeError, match="sources must be a list"):
        lancefeed.mix(sources.items[0])
    with pytest.raises(ValueError, match="at least one source"):
        lancefeed.mix([])


def test_a_column_missing_from_a_source_is_named(sources):
    m = lancefeed.mix(sources.items, weights=WEIGHTS)  # no columns= mapping: source 1 calls it "class"
    with pytest.raises(ValueError, match=r"column.*\['label'\] not in source 1 \('.*b\.lance'\).*columns="):
        lancefeed.DataLoader(m, 4)
    assert lancefeed.DataLoader(m, 4, label_column=None).columns == ["image"]
    with pytest.raises(ValueError, match=r"renames \['klass'\], which no source has"):
        lancefeed.mix(sources.items, columns={"klass": "label"})
    with pytest.raises(ValueError, match="one dict .* per source"):
        lancefeed.mix(sources.items, columns=[None, {"class": "label"}])
    with pytest.raises(ValueError, match=r"source 0 .*a column '_source'"):
        lancefeed.mix(sources.items, columns={"idx": "_source"})


def test_differing_column_types_are_named(sources, tmp_path):
    numeric = _table(6, 16, 16, 500, labels=lambda i: i % 2)
    lance.write_dataset(numeric, str(tmp_path / "numeric.lance"))
    m = lancefeed.mix([sources.items[0], str(tmp_path / "numeric.lance")], weights=[1, 1])
    with pytest.raises(ValueError, match=r"column 'label' is string in source 0 \('.*a\.lance'\) but int64 in source 1 "
                                         r"\('.*numeric\.lance'\)"):
        lancefeed.DataLoader(m, 4)
    lancefeed.DataLoader(m, 4, columns=["image", "idx"])  # the label left out, the rest agree


def test_what_a_mix_does_not_take(sources):
    m = make_mix(sources)
    with pytest.raises(ValueError, match="shuffle_clump_size"):
        lancefeed.DataLoader(m, 4, shuffle=True, shuffle_clump_size=4)
    with pytest.raises(ValueError, match="targets"):
        lancefeed.DataLoader(m, 4, output="detection")
    with pytest.raises(ValueError, match="already pinned"):
        lancefeed.DataLoader(m, 4, version=1)


def test_an_undecodable_row_is_named_by_its_source(sources, tmp_path):
    bad = _table(6, 16, 16, 600)
    bad = bad.set_column(0, "image", pa.array([b"not an image" if i == 4 else v for i, v in enumerate(
        bad.column("image").to_pylist())], pa.binary()))
    lance.write_dataset(bad, str(tmp_path / "bad.lance"))
    m = lancefeed.mix([sources.items[0], str(tmp_path / "bad.lance")], weights=[1, 1], epoch_size=12)
    with pytest.raises(lancefeed.DecodeError, match=r"source 1 \('.*bad\.lance'\): row 4 of the dataset"):
        for _ in lancefeed.DataLoader(m, 4, shuffle=True, columns=["image", "idx"]):
            pass
    skipping = lancefeed.DataLoader(m, 4, shuffle=True, columns=["image", "idx", "_source"], on_error="skip")
    kept = [(int(s), int(i)) for _, idx, source in skipping for s, i in zip(source, idx)]
    assert len(kept) == 12 - 1 and (1, 4) not in kept


def test_a_source_read_twice_an_epoch_is_kept_whole_by_its_row_cache(sources, monkeypatch):
    import lancefeed.reads.reader as reader_module

    monkeypatch.setattr(reader_module, "SCAN_ROW_BYTES", 0)  # rows read take by take, as large images are
    m = make_mix(sources)  # source 1: 15 samples of its 12 rows, two passes
    cached = loader_for(m, cache=True)
    plain = loader_for(m, cache=False)
    for loader in (cached, plain):
        # Takes of four batches: the third holds the last new rows of source 1's first
        # pass and rows of its second, kept already.
        loader.reader.rows_per_take = 16
    assert not cached.reader.prefill
    twice = cached.reader.readers[1]
    read = []
    for _ in range(3):
        assert epoch_samples(cached) == epoch_samples(plain)
        got = twice.stats()
        read.append(got["rows_in_place"] + got["rows_through_lance"])
    assert twice.kept_rows == 12
    assert read[0] >= 12 and read[1] == read[2] == read[0]  # after the first epoch, nothing read again
