"""How an ingest reads and writes: one set of options for ``ingest_folder``,
``ingest_coco`` and the ``lancefeed ingest`` command.

Example:
    >>> IngestOptions(mode="create", commit_every=5).checked().commit_every
    5
    >>> IngestOptions(mode="replace").checked()
    Traceback (most recent call last):
    ...
    ValueError: mode must be one of create, overwrite, append; got 'replace'
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

from lancefeed.cluster import ENGINES, check_engine
from lancefeed.source import parse_storage_options

__all__ = ["COMMIT_EVERY", "MODES", "IngestOptions"]

MODES = ("create", "overwrite", "append")
# Files per commit. Each chunk becomes one Lance version and (at least) one fragment:
# 10,000 ImageNet-sized files are about 1 GiB, a minute or less of reading to redo after
# a kill, and ImageNet's 1.28 M files make ~130 fragments, which readers handle well.
COMMIT_EVERY = 10_000


@dataclass(frozen=True)
class IngestOptions:
    """The options every ingest takes (see :func:`lancefeed.ingest_folder` for each):
    ``strict``, ``batch_size``, ``num_threads``, ``mode``, ``progress``, ``verify``,
    ``blob``, ``enable_stable_row_ids``, ``resume``, ``commit_every``,
    ``restart_index``, ``storage_options``, ``engine``, ``ray_address``.

    Example:
        >>> IngestOptions().recorded()
        {'strict': False, 'verify': False, 'blob': False, 'enable_stable_row_ids': False}
    """

    strict: bool = False
    batch_size: int = 256
    num_threads: Optional[int] = None
    mode: str = "create"
    progress: bool = True
    verify: bool = False
    blob: bool = False
    enable_stable_row_ids: bool = False
    resume: bool = False
    commit_every: int = COMMIT_EVERY
    restart_index: bool = False
    storage_options: Optional[Dict[str, str]] = None
    engine: str = "threads"
    ray_address: Optional[str] = None

    def checked(self) -> "IngestOptions":
        """These options, or ``ValueError`` naming the first that is wrong."""
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}")
        if self.commit_every < 1:
            raise ValueError(f"commit_every must be >= 1; got {self.commit_every}")
        check_engine(self.engine)
        if self.ray_address and self.engine != "ray":
            raise ValueError(f"ray_address={self.ray_address!r} is for engine='ray' (CLI: --engine ray); got engine={self.engine!r}")
        if self.resume and self.mode == "overwrite":
            raise ValueError(
                "resume=True continues an interrupted ingest and mode='overwrite' discards it; "
                "pass one of them (CLI: --resume or --overwrite)"
            )
        return self

    def recorded(self) -> Dict[str, Any]:
        """The options that shape the rows: a resumed ingest must use the same ones (they
        go into each commit's record)."""
        kept = {k: v for k, v in asdict(self).items() if k in ("strict", "verify", "blob", "enable_stable_row_ids")}
        return {**kept, **({"restart_index": True} if self.restart_index else {})}

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """The ``lancefeed ingest`` flags for these options."""
        positive = _positive_int
        parser.add_argument("--strict", action="store_true", help="stop at the first unreadable or non-image file")
        parser.add_argument("--verify", action="store_true", help="decode every image fully (also catches truncated files; slower)")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
        mode.add_argument("--append", action="store_true", help="add rows to an existing OUT")
        mode.add_argument("--resume", action="store_true",
                          help="continue an interrupted ingest into OUT after its last commit (a finished OUT is left as is)")
        parser.add_argument("--commit-every", type=positive, default=COMMIT_EVERY,
                            help=f"files per commit; a kill loses at most this many ({COMMIT_EVERY}); with --engine "
                            "ray, files per task at most (one commit at the end)")
        parser.add_argument("--restart-index", "--restart-interval", dest="restart_index", action="store_true",
                            help="store JPEGs losslessly rewritten with a restart marker after every MCU and an index "
                            "(the same pixels; a random crop entropy-decodes only its own MCUs)")
        parser.add_argument("--batch-size", type=positive, default=256, help="rows per written batch (256)")
        parser.add_argument("--threads", type=positive, default=None, help="reader threads (default: cores)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        parser.add_argument("--blob", action="store_true", help="write the image column as a Lance blob v2 column")
        parser.add_argument("--stable-row-ids", action="store_true", help="give rows stable ids (kept through compaction and updates)")
        parser.add_argument("--engine", choices=ENGINES, default="threads",
                            help="threads: this machine's threads (the default); ray: Ray Data tasks on a cluster, "
                            "fragments committed once (resumable with --resume)")
        parser.add_argument("--ray-address", default=None, metavar="ADDR",
                            help="the Ray cluster for --engine ray (auto, ray://head:10001); default: a local Ray "
                            "sized to this machine")
        parser.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                            help="an object store option for s3:// (gs://, az://) ROOT and OUT, Lance's names, "
                            "repeatable (aws_endpoint=http://host:9000, aws_region=us-east-1...)")

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> "IngestOptions":
        """The options the flags of :meth:`add_arguments` give."""
        return cls(
            strict=args.strict, batch_size=args.batch_size, num_threads=args.threads,
            mode="overwrite" if args.overwrite else "append" if args.append else "create",
            progress=not args.no_progress, verify=args.verify, blob=args.blob,
            enable_stable_row_ids=args.stable_row_ids, resume=args.resume, commit_every=args.commit_every,
            restart_index=args.restart_index, storage_options=parse_storage_options(args.storage_option) or None,
            engine=args.engine, ray_address=args.ray_address,
        )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value
