"""Row reading benchmark: batched permutation reads against the seeds' per-row take.

Reads the ``image`` and ``label`` columns of a shuffled permutation of CIFAR-10 train,
without decoding, and reports rows/s for

* ``Permutation.take_positions`` over the whole epoch in batches (one sorted take per
  batch, put back in permutation order), and
* the seeds' loop, one ``dataset.take([idx])`` per row, on a sample of the same
  shuffled order,

in the same run, and their ratio. The seeds' loop opens the dataset with a plain
``lance.dataset(path)``; the permutation opens it through ``lancefeed.open_source``,
which uses Lance's io_uring reader for local paths on Linux (``LANCEFEED_IO_URING=0``
turns that off, for comparison). The first run writes the train images of
``../shared/data/cifar10-jpeg.tar.gz`` to Lance in the seeds' layout (``image``
binary, ``filename``, ``label``, ``split``) in a cache directory; later runs reuse it.

Usage:
    python benches/bench_rows.py                      # defaults below
    python benches/bench_rows.py --batch-size 512 --per-row-sample 5000 --variants
    python benches/bench_rows.py --blob               # also a blob-encoded copy
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Tuple

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).parent))
import data  # noqa: E402  (benches/data.py: the reference archives)


def bench_batched(perm, batch_size: int) -> Tuple[float, int, int]:
    """Read the whole permutation in batches; return (seconds, rows, image bytes)."""
    n = len(perm)
    perm.take_positions(np.arange(min(batch_size, n)))  # warm caches and metadata
    rows = nbytes = 0
    t0 = time.perf_counter()
    for start in range(0, n, batch_size):
        batch = perm.take_positions(np.arange(start, min(start + batch_size, n)))
        rows += batch.num_rows
        nbytes += pc.sum(pc.binary_length(batch.column(0))).as_py()
    return time.perf_counter() - t0, rows, nbytes


def bench_per_row(
    ds: lance.LanceDataset, offsets: np.ndarray, columns: Optional[List[str]], blob: bool = False
) -> Tuple[float, int]:
    """The seeds' loop: one ``take([idx])`` per row (``columns=None``: every column).

    A blob-encoded image takes as a description, so for a blob dataset each row also
    reads its image through ``take_blobs``, as a per-row loop over it would have to.
    """

    def one(idx: int) -> None:
        ds.take([idx], columns=columns)
        if blob:
            ds.take_blobs("image", indices=[idx])[0].readall()

    one(int(offsets[0]))
    t0 = time.perf_counter()
    for idx in offsets:
        one(int(idx))
    return time.perf_counter() - t0, len(offsets)


def bench_variant(fn, ids: np.ndarray, batch_size: int) -> float:
    """rows/s of ``fn(batch_of_ids)`` over ``ids`` in batches."""
    fn(ids[:batch_size])
    t0 = time.perf_counter()
    for start in range(0, len(ids), batch_size):
        fn(ids[start : start + batch_size])
    return len(ids) / (time.perf_counter() - t0)


def run(args: argparse.Namespace) -> dict:
    import lancefeed
    from lancefeed.permutation import Permutation

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    results: dict = {"batch_size": args.batch_size, "per_row_sample": args.per_row_sample}
    for kind, blob in [("binary", False)] + ([("blob", True)] if args.blob else []):
        uri = data.lance_dataset("cifar10-train", cache, Path(args.data), blob=blob)
        ds = lance.dataset(str(uri))
        columns = ["image", "label"]
        t0 = time.perf_counter()
        table = lancefeed.permutation_builder(str(uri)).shuffle(seed=args.seed).execute()
        build_s = time.perf_counter() - t0
        perm = Permutation.from_tables(str(uri), table).select_columns(columns)

        # The seeds index by dataset offset; map the same shuffled order to offsets.
        identity = Permutation.identity(ds).row_ids
        offsets = np.searchsorted(identity, perm.row_ids)

        # Alternate the two loops for a few rounds and keep the medians: the machine is
        # shared and Lance's caches warm up, so one pass of each would mostly measure noise.
        batched_runs, per_row_runs, seeds_runs = [], [], []
        for r in range(args.rounds):
            sample = offsets[r * args.per_row_sample : (r + 1) * args.per_row_sample]
            per_secs, per_rows = bench_per_row(ds, sample, columns, blob)
            per_row_runs.append(per_rows / per_secs)
            secs, rows, nbytes = bench_batched(perm, args.batch_size)
            batched_runs.append(rows / secs)
            seed_secs, seed_rows = bench_per_row(ds, sample[: args.per_row_sample // 4], None, blob)
            seeds_runs.append(seed_rows / seed_secs)
        batched = float(np.median(batched_runs))
        per_row = float(np.median(per_row_runs))
        seeds_literal = float(np.median(seeds_runs))
        entry = {
            "reader": str(perm.dataset.uri).split("://")[0] if "://" in str(perm.dataset.uri) else "file",
            "rows": rows,
            "build_permutation_s": round(build_s, 3),
            "batched_rows_per_s": round(batched),
            "batched_MB_per_s": round(batched * nbytes / rows / 1e6, 1),
            "per_row_rows_per_s": round(per_row),
            "speedup": round(batched / per_row, 1),
            "per_row_all_columns_rows_per_s": round(seeds_literal),
            "speedup_vs_all_columns": round(batched / seeds_literal, 1),
            "rounds": {
                "batched": [round(x) for x in batched_runs],
                "per_row": [round(x) for x in per_row_runs],
                "per_row_all_columns": [round(x) for x in seeds_runs],
            },
        }
        if args.clump_size:
            clumped = lancefeed.permutation_builder(str(uri)).shuffle(seed=args.seed, clump_size=args.clump_size).execute()
            cperm = Permutation.from_tables(str(uri), clumped).select_columns(columns)
            runs = [bench_batched(cperm, args.batch_size) for _ in range(args.rounds)]
            entry["clumped_batched_rows_per_s"] = round(float(np.median([r / s for s, r, _ in runs])))
        if args.variants and not blob:
            ids = perm.row_ids
            offs = np.searchsorted(identity, ids)
            entry["variant_take_offsets_unsorted"] = round(
                bench_variant(lambda x: ds.take(pa.array(np.searchsorted(identity, x)), columns=columns), ids, args.batch_size)
            )
            entry["variant_take_rows_unsorted"] = round(
                bench_variant(lambda x: ds._take_rows(pa.array(x), columns=columns), ids, args.batch_size)
            )
            entry["variant_take_offsets_sorted_only"] = round(
                bench_variant(lambda x: ds.take(pa.array(np.sort(x)), columns=columns), offs, args.batch_size)
            )
        results[kind] = entry
        print(
            f"[{kind}] shuffled permutation of {rows} rows, columns {columns}, batch {args.batch_size}, "
            f"{entry['reader']} reader: "
            f"{batched:,.0f} rows/s batched ({entry['batched_MB_per_s']} MB/s) vs "
            f"{per_row:,.0f} rows/s one-row take([idx], columns) loop -> {batched / per_row:.1f}x "
            f"(medians of {args.rounds} rounds; one-row take([idx]) of all columns: {seeds_literal:,.0f} rows/s "
            f"-> {batched / seeds_literal:.1f}x)",
            flush=True,
        )
        print(f"  rounds: {entry['rounds']}", flush=True)
        if args.clump_size:
            print(
                f"  shuffle(clump_size={args.clump_size}): {entry['clumped_batched_rows_per_s']:,} rows/s batched",
                flush=True,
            )
        if args.variants and not blob:
            print(
                "  variants (rows/s): lance take(offsets) unsorted {variant_take_offsets_unsorted:,}, "
                "_take_rows unsorted {variant_take_rows_unsorted:,}, take(offsets) sorted, no reorder "
                "{variant_take_offsets_sorted_only:,}".format(**entry),
                flush=True,
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(data.DATA), help="folder holding cifar10-jpeg.tar.gz")
    parser.add_argument(
        "--cache",
        default=os.environ.get("LANCEFEED_BENCH_CACHE", str(Path(tempfile.gettempdir()) / "lancefeed-bench")),
        help="where the Lance datasets are kept between runs",
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--per-row-sample", type=int, default=2_000, help="rows read by the one-row take loop")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both loops (medians reported)")
    parser.add_argument("--clump-size", type=int, default=0, help="also time a shuffle with this clump size")
    parser.add_argument("--variants", action="store_true", help="also time raw lance take strategies")
    parser.add_argument("--blob", action="store_true", help="also bench a copy with a blob-encoded image column")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args()
    results = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
