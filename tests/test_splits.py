"""Split sizes, hash assignment and clump shuffles (lancefeed.permutation.splits)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from lancefeed.permutation import splits


@pytest.mark.parametrize(
    ("num_rows", "kwargs", "expected"),
    [
        (100, {"ratios": [0.3, 0.7]}, [30, 70]),
        (70, {"ratios": [0.3, 0.41]}, [21, 29]),  # sums below one: leftovers stay out
        (10, {"ratios": [1 / 3, 1 / 3, 1 / 3]}, [4, 3, 3]),  # sums to one: no row lost
        (100, {"counts": [5, 15]}, [5, 15]),
        (10, {"fixed": 3}, [3, 3, 3]),
    ],
)
def test_split_sizes(num_rows, kwargs, expected):
    assert splits.split_sizes(num_rows, **kwargs) == expected


def test_split_sizes_reject_impossible_requests():
    with pytest.raises(ValueError, match="rounds to an empty split"):
        splits.split_sizes(100, ratios=[0.001, 0.5])
    with pytest.raises(ValueError, match="fixed=5 splits need at least one row each but only 3"):
        splits.split_sizes(3, fixed=5)
    with pytest.raises(ValueError, match=r"split ratio -0.1 is outside \[0, 1\]"):
        splits.split_sizes(10, ratios=[-0.1, 0.5])


def test_hash_assignment_depends_only_on_values():
    a = pa.table({"k": ["x", "y", "z", None], "n": [1, 2, 3, 4]})
    b = pa.table({"k": ["z", None, "x"], "n": [3, 4, 1]})  # same rows, other order and fewer
    ha = dict(zip(range(4), splits.assign_hash(a, ["k", "n"], [1, 1, 1], 0)))
    hb = splits.assign_hash(b, ["k", "n"], [1, 1, 1], 0)
    assert [ha[2], ha[3], ha[0]] == hb.tolist()


def test_hash_weights_share_out_rows():
    t = pa.table({"id": np.arange(20_000)})
    counts = np.bincount(splits.assign_hash(t, ["id"], [3, 1], 1) + 1, minlength=3)
    discarded, first, second = counts / len(t)
    assert abs(first - 0.6) < 0.02 and abs(second - 0.2) < 0.02 and abs(discarded - 0.2) < 0.02


def test_clump_shuffle_keeps_runs_and_covers_everything():
    members = np.arange(100, 110)
    out = splits.shuffled(members, splits.rng(splits.SHUFFLE_STREAM, 3), clump_size=4)
    assert sorted(out.tolist()) == members.tolist()
    clump = (out - 100) // 4
    blocks = [int(c) for i, c in enumerate(clump) if i == 0 or c != clump[i - 1]]
    assert sorted(blocks) == [0, 1, 2]  # each clump is one unbroken block
    for c in range(3):
        assert out[clump == c].tolist() == members[(members - 100) // 4 == c].tolist()
    orders = {tuple(splits.shuffled(members, splits.rng(splits.SHUFFLE_STREAM, s), 4)) for s in range(20)}
    assert len(orders) > 1  # the clumps really move
