"""Clump shuffles (``shuffle_clump_size``) and the scan path of unshuffled epochs.

The test dataset is ``test_loader``'s: every image encodes its own sample index in its
pixels, so a batch says which samples it holds without trusting any other column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import lance
import numpy as np
import pytest
import torch

import lancefeed
from lancefeed._core import DecodeError
from lancefeed.loader.sampler import epoch_order, plan_epoch
from test_loader import N, make_dataset, sample_ids

K = 4


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_dataset(tmp_path_factory.mktemp("clump"))


def epoch_ids(loader: Any) -> List[int]:
    return [i for images, *_ in loader for i in sample_ids(images)]


def clumps_of(order: np.ndarray, n: int, k: int) -> List[int]:
    """The clump indices ``order`` is made of; fails unless it is whole clumps, in order within each."""
    out, i = [], 0
    while i < len(order):
        start = int(order[i])
        assert start % k == 0, f"a clump starts at {start}, not a multiple of {k}"
        size = min(k, n - start)
        assert order[i : i + size].tolist() == list(range(start, start + size))
        out.append(start // k)
        i += size
    return out


# -- the sampler ---------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 16])
def test_each_epoch_is_a_permutation_of_whole_clumps_in_order(k: int) -> None:
    for n in list(range(0, 40)) + [1000, 1001]:
        for epoch in range(3):
            order = epoch_order(n, shuffle=True, seed=5, epoch=epoch, clump_size=k)
            assert sorted(order.tolist()) == list(range(n))
            assert sorted(clumps_of(order, n, k)) == list(range(-(-n // k)))


def test_clump_size_one_is_the_plain_shuffle_and_epochs_and_seeds_differ() -> None:
    for epoch in range(3):
        plain = epoch_order(101, shuffle=True, seed=2, epoch=epoch)
        assert np.array_equal(epoch_order(101, shuffle=True, seed=2, epoch=epoch, clump_size=1), plain)
    orders = [epoch_order(400, shuffle=True, seed=s, epoch=e, clump_size=K).tolist() for s, e in [(0, 0), (0, 1), (0, 2), (1, 0)]]
    assert len({tuple(o) for o in orders}) == 4
    assert np.array_equal(epoch_order(9, shuffle=False, seed=0, epoch=1, clump_size=K), np.arange(9))
    with pytest.raises(ValueError, match="clump_size"):
        epoch_order(9, shuffle=True, seed=0, epoch=0, clump_size=0)


def test_plan_epoch_shards_batches_and_resumes_the_clumped_order() -> None:
    n, k, b = 103, 8, 5
    order = epoch_order(n, shuffle=True, seed=1, epoch=2, clump_size=k)
    for world in (1, 2, 3):
        shards = [plan_epoch(n, batch_size=b, shuffle=True, seed=1, epoch=2, rank=r, world_size=world, clump_size=k).positions
                  for r in range(world)]
        assert np.array_equal(np.concatenate(shards), order[: world * (n // world)])
        resumed = plan_epoch(n, batch_size=b, shuffle=True, seed=1, epoch=2, rank=world - 1, world_size=world,
                             start_batch=2, clump_size=k)
        whole = plan_epoch(n, batch_size=b, shuffle=True, seed=1, epoch=2, rank=world - 1, world_size=world, clump_size=k)
        assert [p.tolist() for _, p in resumed] == [p.tolist() for k_, p in whole if k_ >= 2]


# -- the loader ----------------------------------------------------------------------


def test_loader_epochs_follow_the_clumped_order_and_reshuffle(uri: str) -> None:
    loader = lancefeed.DataLoader(uri, batch_size=8, shuffle=True, seed=3, shuffle_clump_size=K)
    epochs = [epoch_ids(loader) for _ in range(3)]
    for e, ids in enumerate(epochs):
        assert ids == epoch_order(N, shuffle=True, seed=3, epoch=e, clump_size=K).tolist()
        clumps_of(np.array(ids), N, K)
    assert epochs[0] != epochs[1] != epochs[2]
    assert "shuffle_clump_size=4" in repr(loader)


def test_loader_ranks_are_disjoint_and_cover_the_epoch(uri: str) -> None:
    per_rank = [
        epoch_ids(lancefeed.DataLoader(uri, batch_size=4, shuffle=True, seed=7, shuffle_clump_size=K, rank=r, world_size=3))
        for r in range(3)
    ]
    order = epoch_order(N, shuffle=True, seed=7, epoch=0, clump_size=K).tolist()
    m = N // 3
    assert per_rank == [order[r * m : (r + 1) * m] for r in range(3)]
    assert len(set().union(*map(set, per_rank))) == 3 * m


def test_loader_resume_gives_the_uninterrupted_batches(uri: str) -> None:
    kw: Dict[str, Any] = dict(batch_size=4, shuffle=True, seed=9, shuffle_clump_size=K, transform=lancefeed.RandomHorizontalFlip())
    whole = lancefeed.DataLoader(uri, **kw)
    whole.set_epoch(1)
    want = [x for x, _ in whole]
    first = lancefeed.DataLoader(uri, **kw)
    first.set_epoch(1)
    it = iter(first)
    for _ in range(5):
        next(it)
    state = first.state_dict()
    it.close()
    assert state["shuffle_clump_size"] == K
    resumed = lancefeed.DataLoader(uri, **kw)
    resumed.load_state_dict(state)
    got = [x for x, _ in resumed]
    assert len(got) == len(want) - 5
    assert all(torch.equal(a, b) for a, b in zip(got, want[5:]))


def test_loader_resume_on_another_world_size_reads_each_sample_once(uri: str) -> None:
    kw: Dict[str, Any] = dict(batch_size=3, shuffle=True, seed=4, shuffle_clump_size=K)
    seen: List[int] = []
    states = []
    for r in range(2):
        loader = lancefeed.DataLoader(uri, rank=r, world_size=2, **kw)
        it = iter(loader)
        for _ in range(2):
            seen.extend(sample_ids(next(it)[0]))
        states.append(loader.state_dict())
        it.close()
    assert states[0] == states[1]
    rest = lancefeed.DataLoader(uri, rank=0, world_size=1, **kw)
    rest.load_state_dict(states[0])
    seen.extend(epoch_ids(rest))
    assert sorted(seen) == list(range(N))


def test_clump_size_is_checked_and_part_of_the_state(uri: str) -> None:
    with pytest.raises(ValueError, match="shuffle=True"):
        lancefeed.DataLoader(uri, batch_size=4, shuffle_clump_size=K)
    with pytest.raises(ValueError, match="positive integer"):
        lancefeed.DataLoader(uri, batch_size=4, shuffle=True, shuffle_clump_size=0)
    state = lancefeed.DataLoader(uri, batch_size=4, shuffle=True, shuffle_clump_size=K).state_dict()
    with pytest.raises(ValueError, match="shuffle_clump_size"):
        lancefeed.DataLoader(uri, batch_size=4, shuffle=True, shuffle_clump_size=8).load_state_dict(state)
    plain = lancefeed.DataLoader(uri, batch_size=4, shuffle=True, shuffle_clump_size=1)
    assert plain.shuffle_clump_size is None  # clumps of one: the plain shuffle, same state


# -- the scan path -------------------------------------------------------------------


@pytest.fixture
def through_lance(monkeypatch: pytest.MonkeyPatch) -> None:
    """The image column read by Lance's scans and takes: a local dataset's is otherwise
    read in place, by neither (scans are what an object store's unshuffled epochs use)."""
    monkeypatch.setenv("LANCEFEED_IN_PLACE", "0")


def counting_scans(loader: lancefeed.DataLoader) -> List[int]:
    calls: List[int] = []
    perm = loader.reader.take_perm
    real = perm.scan_positions

    def scan(start: int, count: int, **kw: Any) -> Any:
        calls.append(start)
        return real(start, count, **kw)

    perm.scan_positions = scan  # type: ignore[method-assign]
    return calls


def batches(uri: Any, path: str, group: int | None = None, **kw: Any) -> tuple[List[Any], List[int], lancefeed.DataLoader]:
    kw.setdefault("cache", False)  # a cached dataset is read once, by neither path
    loader = lancefeed.DataLoader(uri, **kw)
    loader.reader.read = path
    if group is not None:
        loader.reader.rows_per_take = group * kw["batch_size"]
    calls = counting_scans(loader)
    return list(loader), calls, loader


def assert_same(a: List[Any], b: List[Any]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], torch.Tensor):
                assert torch.equal(x[key], y[key]), key
            else:
                assert len(x[key]) == len(y[key]), key
                for p, q in zip(x[key], y[key]):
                    assert torch.equal(p, q) if isinstance(p, torch.Tensor) else p == q, key


@pytest.mark.parametrize("group", [None, 1, 3])
def test_scan_gives_the_take_paths_batches(uri: str, group: int | None, through_lance: None) -> None:
    kw: Dict[str, Any] = dict(batch_size=6, output="dict", columns=["image", "label", "idx", "boxes", "filename", "tags"],
                              transform=lancefeed.RandomHorizontalFlip(), seed=2)
    taken, take_calls, _ = batches(uri, "take", group, **kw)
    scanned, scan_calls, _ = batches(uri, "scan", group, **kw)
    auto, auto_calls, _ = batches(uri, "auto", group, **kw)
    assert take_calls == [] and scan_calls and auto_calls == scan_calls
    assert_same(scanned, taken)
    assert_same(auto, taken)
    assert [i for b in scanned for i in sample_ids(b["image"])] == list(range(N))
    if group == 1:
        assert scan_calls == list(range(0, N, 6))  # one scan per batch, across fragments


def test_scan_resume_and_ranks_match_the_take_path(uri: str, through_lance: None) -> None:
    for rank in range(2):
        kw: Dict[str, Any] = dict(batch_size=4, rank=rank, world_size=2, cache=False)
        taken, _, _ = batches(uri, "take", 1, **kw)
        scanned, calls, loader = batches(uri, "scan", 1, **kw)
        assert len(calls) == len(loader)
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(scanned, taken))
        assert [i for x, _ in scanned for i in sample_ids(x)] == list(range(rank * 25, rank * 25 + 25))
        # resume at batch 3
        first = lancefeed.DataLoader(uri, **kw)
        it = iter(first)
        for _ in range(3):
            next(it)
        state = first.state_dict()
        it.close()
        resumed = lancefeed.DataLoader(uri, **kw)
        resumed.reader.rows_per_take = 4
        calls = counting_scans(resumed)
        resumed.load_state_dict(state)
        rest = list(resumed)
        assert calls and calls[0] == rank * 25 + 12
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(rest, taken[3:]))
        assert len(rest) == len(taken) - 3


def test_scan_names_the_same_row_in_a_decode_error(tmp_path: Path, through_lance: None) -> None:
    bad = make_dataset(tmp_path, bad=(13,))
    messages = []
    for path in ("take", "scan"):
        loader = lancefeed.DataLoader(bad, batch_size=4)
        loader.reader.read = path
        with pytest.raises(DecodeError) as info:
            list(loader)
        messages.append(str(info.value))
        skipping = lancefeed.DataLoader(bad, batch_size=4, on_error="skip")
        skipping.reader.read = path
        assert 13 not in epoch_ids(skipping) and len(skipping.skipped) == 1
    assert messages[0] == messages[1] and "position 13 " in messages[0]


def test_scan_after_deletions_and_not_for_shuffled_or_filtered_permutations(tmp_path: Path, through_lance: None) -> None:
    uri = make_dataset(tmp_path)
    lance.dataset(uri).delete("idx % 7 = 3")
    kw: Dict[str, Any] = dict(batch_size=5, output="dict", columns=["image", "idx", "tags"])
    taken, _, _ = batches(uri, "take", 1, **kw)
    scanned, calls, _ = batches(uri, "auto", 1, **kw)
    assert calls and len(taken) == len(scanned)
    assert_same(scanned, taken)
    assert [i for b in scanned for i in b["idx"].tolist()] == [i for i in range(N) if i % 7 != 3]

    _, calls, _ = batches(uri, "auto", None, batch_size=5, shuffle=True)
    assert calls == []
    table = lancefeed.permutation_builder(uri).split_sequential(ratios=[0.5, 0.5]).execute()
    second = lancefeed.Permutation.from_tables(uri, table, split=1)
    part, calls, loader = batches(second, "auto", None, batch_size=5)
    assert calls == [] and not loader.reader.use_scan
    # Forced to scan, a permutation whose positions are not scan offsets still reads right:
    # each scan is checked against the row ids and falls back to a take.
    forced, _, _ = batches(second, "scan", 1, batch_size=5)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(forced, part))
