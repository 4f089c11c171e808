"""``lancefeed``: :class:`lancefeed.DataLoader` on the Lance dataset itself (no
conversion): Rust decode with the transform fused in, on a thread pool.

Example:
    >>> available()
    (True, '')
"""

from __future__ import annotations

from typing import Any, Iterable


def available() -> tuple[bool, str]:
    """Always: lancefeed is what runs this benchmark."""
    return True, ""


def make_loader(spec: dict[str, Any]) -> Iterable[Any]:
    """``lancefeed.DataLoader`` with ``spec["threads"]`` decode threads (and
    ``spec["storage_options"]`` for a dataset on an object store)."""
    import lancefeed
    from lancefeed.bench.transforms import lancefeed_transform

    return lancefeed.DataLoader(
        spec["uri"],
        spec["batch_size"],
        shuffle=spec["shuffle"],
        seed=0,
        transform=lancefeed_transform(spec["plan"]),
        num_threads=spec.get("threads"),
        storage_options=spec.get("storage_options"),
    )
