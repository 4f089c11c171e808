"""Names and checks shared by the builder and the permutation view."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import lance
import numpy as np
import pyarrow as pa

from lancefeed.source import column_names, dataset_uri

ROW_ID_COLUMN = "row_id"
SPLIT_ID_COLUMN = "split_id"
SPLIT_NAMES_KEY = "split_names"  # the key lancedb uses, so its tables read here too
# lancedb 0.40 pins a permutation table to its base table with these two keys.
BASE_VERSION_KEY = "base_version"
BASE_BRANCH_KEY = "base_branch"
ROWID = "_rowid"  # Lance's row id column, selectable as a column as in lancedb
DEFAULT_BATCH_SIZE = 100


def scan(ds: lance.LanceDataset, columns: Any, filter: Optional[str]) -> pa.Table:
    """Scan ``columns`` (names, or ``{name: sql}``) of rows passing ``filter``, with ``_rowid``."""
    try:
        return ds.to_table(columns=columns, filter=filter, with_row_id=True, scan_in_order=True)
    except (ValueError, OSError) as exc:
        if filter is None and not isinstance(columns, dict):
            raise
        if filter is not None:
            what, expected = f"filter {filter!r}", "an SQL predicate"
        else:
            what, expected = f"expression {list(columns.values())[0]!r}", "an integer SQL expression"
        raise ValueError(
            f"{what} could not be applied to dataset {dataset_uri(ds)!r}: {first_line(exc)}; "
            f"expected {expected} over columns {column_names(ds)}"
        ) from None


def first_line(exc: BaseException) -> str:
    text = str(exc).split("\n")[0]
    # Lance appends Rust source locations; they help nobody reading the error.
    return text.split(", /")[0]


def check_seed(seed: Optional[int]) -> Optional[int]:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


def check_names(names: Optional[Sequence[str]], expected: Optional[int]) -> Optional[List[str]]:
    if names is None:
        return None
    if isinstance(names, str):
        raise TypeError(f"split_names must be a list of strings, got the string {names!r}")
    names = list(names)
    if any(not isinstance(n, str) or not n for n in names):
        raise ValueError(f"split_names must be non-empty strings, got {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"split_names must be unique, got {names}")
    if expected is not None and len(names) != expected:
        raise ValueError(f"got {len(names)} split_names {names} for {expected} splits; expected one name per split")
    return names


def as_list(values: Optional[Sequence[Any]], kind: type) -> Optional[List[Any]]:
    return None if values is None else [kind(v) for v in values]
