"""What ``lancefeed optimize`` gained: bytes before and after, and the decode speed of a
sample of rows before and after (a random crop, the training path restart indexes
speed up), measured in this process.

Example:
    >>> print(OptimizeSummary("in.lance", version_before=1, version_after=2, rows=10, indexed=10,
    ...                       bytes_before=1000, bytes_after=1076, speed_before=900.0, speed_after=1250.0,
    ...                       speed_what="RandomResizedCrop(224) of 10 rows"))
    in.lance: version 1 -> 2, 10 of 10 images restart-indexed, 0 kept as they were
      size: 1,000 -> 1,076 bytes (+7.6%)
      decode speed, RandomResizedCrop(224) of 10 rows: 900 -> 1,250 img/s (1.39x)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["OptimizeSummary", "decode_speed"]

# Rows whose decode is timed: enough to average over image sizes, few enough to take a
# second or two on one core.
SAMPLE_ROWS = 256


@dataclass
class OptimizeSummary:
    """What :func:`lancefeed.optimize` did.

    Attributes:
        uri: the dataset.
        version_before, version_after: the version read, and the one committed (equal
            when nothing needed rewriting).
        rows, indexed, kept: images read, restart-indexed, left as they were (not JPEG,
            indexed already, or refused: ``reasons`` counts those by reason).
        bytes_before, bytes_after: the column's encoded bytes.
        fragments: fragments rewritten; ``resumed``: of those, written by an earlier,
            interrupted run and not again; ``unchanged``: fragments with nothing to do.
        speed_before, speed_after: images/s decoding a sample (``speed_what``) before
            and after, in this process (0 when not measured).
        seconds: wall time.

    Example:
        >>> OptimizeSummary("x.lance").gain()
        0.0
    """

    uri: str
    version_before: int = 0
    version_after: int = 0
    rows: int = 0
    indexed: int = 0
    kept: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    reasons: Dict[str, int] = field(default_factory=dict)
    fragments: int = 0
    resumed: int = 0
    unchanged: int = 0
    speed_before: float = 0.0
    speed_after: float = 0.0
    speed_what: str = ""
    seconds: float = 0.0

    def gain(self) -> float:
        """Decode speed after / before (0.0 when not measured)."""
        return self.speed_after / self.speed_before if self.speed_before else 0.0

    def add(self, entry: Dict[str, Any]) -> None:
        """Count a rewritten fragment's ledger entry in (its images and bytes; ``rows``
        and ``kept`` are the dataset's)."""
        for key in ("indexed", "bytes_before", "bytes_after"):
            setattr(self, key, getattr(self, key) + int(entry[key]))
        for reason, n in (entry.get("reasons") or {}).items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n

    def __str__(self) -> str:
        lines = [f"{self.uri}: version {self.version_before} -> {self.version_after}, {self.indexed} of {self.rows} "
                 f"images restart-indexed, {self.kept} kept as they were"]
        if self.reasons:
            lines[0] += " (" + ", ".join(f"{n} {why}" for why, n in sorted(self.reasons.items())) + ")"
        if self.bytes_before:
            growth = 100.0 * (self.bytes_after / self.bytes_before - 1)
            lines.append(f"  size: {self.bytes_before:,} -> {self.bytes_after:,} bytes ({growth:+.1f}%)")
        if self.speed_before:
            lines.append(f"  decode speed, {self.speed_what}: {self.speed_before:,.0f} -> {self.speed_after:,.0f} img/s "
                         f"({self.gain():.2f}x)")
        return "\n".join(lines)


def _sample_positions(rows: int) -> List[int]:
    step = max(1, rows // SAMPLE_ROWS)
    return list(range(0, rows, step))[:SAMPLE_ROWS]


def _crop_size(blobs: List[Optional[bytes]]) -> int:
    """224 (ImageNet's crop), or the sample's median short side when images are smaller."""
    from lancefeed._core import DecodeError, image_info

    sides = []
    for b in blobs:
        try:
            w, h, _fmt = image_info(b)
            sides.append(min(w, h))
        except (DecodeError, TypeError):
            continue
    sides.sort()
    return max(8, min(224, sides[len(sides) // 2])) if sides else 224


def _seconds(blobs: Any, size: int, epoch: int) -> Tuple[float, int]:
    from lancefeed.decode import decode_batch
    from lancefeed.transforms import Compose, RandomHorizontalFlip, RandomResizedCrop

    transform = Compose([RandomResizedCrop(size), RandomHorizontalFlip()])
    began = time.perf_counter()
    out = decode_batch(blobs, transform=transform, seed=0, epoch=epoch, on_error="skip")
    return time.perf_counter() - began, len(out)


def decode_speed(before: Any, after: Any, column: str, rounds: int = 3) -> Tuple[float, float, str]:
    """Images/s decoding the same sample rows of datasets ``before`` and ``after`` (two
    versions of one) with ``RandomResizedCrop`` + flip, the best of ``rounds``, the two
    alternating so that a change in the machine's speed hits both alike.

    Example:
        >>> decode_speed(lance.dataset(uri, version=1), lance.dataset(uri, version=2), "image")  # doctest: +SKIP
        (1480.0, 2090.0, 'RandomResizedCrop(224) + flip of 256 rows')
    """
    positions = _sample_positions(before.count_rows())
    if not positions:
        return 0.0, 0.0, ""
    old = before.take(positions, columns=[column]).column(column)
    new = after.take(positions, columns=[column]).column(column)
    size = _crop_size(old.to_pylist())
    _seconds(old, size, 0)  # warm the pool and the caches, for both alike
    best = {"old": (float("inf"), 0), "new": (float("inf"), 0)}
    for r in range(rounds):
        for key, blobs in (("old", old), ("new", new)):
            best[key] = min(best[key], _seconds(blobs, size, r))
    rates = [n / s if s > 0 else 0.0 for s, n in (best["old"], best["new"])]
    return rates[0], rates[1], f"RandomResizedCrop({size}) + flip of {len(positions)} rows"
