"""The ``lancefeed`` command: ``ingest folder``, ``ingest coco``, ``optimize`` and ``bench``.

Example:
    $ lancefeed ingest folder cifar10/ cifar10.lance
    $ lancefeed ingest coco annotations/instances_val2017.json val2017/ coco-val.lance
    $ lancefeed ingest folder s3://bucket/imagenet/ s3://bucket/imagenet.lance --engine ray --ray-address auto
    $ lancefeed optimize imagenet.lance --restart-index --engine ray
    $ lancefeed bench                      # built-in generated datasets
    $ lancefeed bench cifar10.lance imagenet.lance --transform eval --limit 20000
    $ lancefeed bench s3://bucket/cifar10.lance --storage-option aws_region=us-east-1
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lancefeed`` command.

    Example:
        >>> build_parser().parse_args(["bench", "--tiny"]).tiny
        True
    """
    parser = argparse.ArgumentParser(
        prog="lancefeed", description="Feed image training data from Lance datasets to PyTorch."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{ingest,optimize,bench}")
    _add_ingest(sub)
    _add_optimize(sub)
    _add_bench(sub)
    return parser


def _add_ingest(sub: Any) -> None:
    """``lancefeed ingest folder|coco``: the sources' own arguments, then the
    :class:`~lancefeed.ingest.options.IngestOptions` both share."""
    from lancefeed.ingest.options import IngestOptions

    ingest = sub.add_parser("ingest", help="write image files to a Lance dataset")
    isub = ingest.add_subparsers(dest="source", required=True, metavar="{folder,coco}")
    folder = isub.add_parser(
        "folder",
        help="an ImageFolder tree: ROOT/<label>/* or ROOT/<split>/<label>/*",
        description="Columns: image, filename, label, split, width, height "
        "(with --masks: image, mask, filename, ...).",
    )
    folder.add_argument("root", help="the folder to read")
    folder.add_argument("out", help="the Lance dataset to write")
    folder.add_argument(
        "--masks",
        metavar="DIR",
        default=None,
        help="segmentation masks mirroring ROOT (ROOT/a/x.jpg -> DIR/a/x.png); adds a 'mask' "
        "column; ROOT may then be a flat folder of images",
    )
    IngestOptions.add_arguments(folder)
    coco = isub.add_parser(
        "coco",
        help="a COCO annotation file and its image folder",
        description="Columns: image, image_id, filename, width, height, boxes, categories, "
        "category_ids, iscrowd, area, annotation_ids (with --masks: a 'mask' after image).",
    )
    coco.add_argument("annotations", help="the COCO annotation JSON file")
    coco.add_argument("images_dir", help="the folder the file_name entries are relative to")
    coco.add_argument("out", help="the Lance dataset to write")
    coco.add_argument(
        "--masks",
        action="store_true",
        help="add a 'mask' column: a grayscale PNG of each pixel's category_id (0: background)",
    )
    IngestOptions.add_arguments(coco)


def _add_optimize(sub: Any) -> None:
    """``lancefeed optimize``: :func:`~lancefeed.optimizer.optimize`'s arguments."""
    from lancefeed.cluster import ENGINES

    opt = sub.add_parser(
        "optimize",
        help="rewrite a dataset's JPEGs restart-indexed, as a new version",
        description="Rewrites the JPEGs of URI's image column losslessly restart-indexed (the same pixels; a random "
        "crop entropy-decodes only its own MCUs), as one new version: the other columns, row ids and deletions "
        "stay as they are. Any dataset in Lance's v2 formats, whoever wrote it. Run it again after an interruption "
        "to continue where it stopped. Prints the size and decode speed before and after.",
    ).add_argument
    opt("uri", help="the Lance dataset (a path or an object store URI)")
    opt("--restart-index", action="store_true", help="restart-index the JPEGs (the default, and for now the only optimization)")
    opt("--column", default="image", help="the image column (image)")
    opt("--engine", choices=ENGINES, default="threads", help="threads: this machine; ray: one Ray Data task a fragment")
    opt("--ray-address", default=None, metavar="ADDR", help="the Ray cluster for --engine ray (default: a local one)")
    opt("--batch-size", type=_positive_int, default=256, help="rows per batch read and written (256)")
    opt("--threads", type=_positive_int, default=None, help="threads indexing one fragment's rows (default: cores; "
        "1 per Ray task)")
    opt("--storage-option", action="append", default=[], metavar="KEY=VALUE",
        help="an object store option for an s3:// (gs://, az://) URI, Lance's names, repeatable")
    opt("--no-measure", action="store_true", help="skip timing the decode of a sample before and after")
    opt("--no-progress", action="store_true", help="no progress bar")


def _add_bench(sub: Any) -> None:
    """``lancefeed bench``: :func:`~lancefeed.bench.run_bench`'s arguments."""
    from lancefeed.bench.peers import PEERS, describe
    from lancefeed.bench.transforms import TRANSFORMS

    visible = [p.name for p in PEERS.values() if not p.hidden]
    loaders = "\n".join(
        f"  {k:<21}{'' if PEERS[k].baseline else '(--peers) '}{describe(k, 'N', 'N')}"
        for k in visible
    )
    bench = sub.add_parser(
        "bench",
        help="compare lancefeed with other loaders",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Without a URI, generates an ImageNet-like and a CIFAR-like dataset in a temporary\n"
            "folder and benchmarks every loader on both (N: --workers / --threads, the cores).\n"
            "Loaders:\n" + loaders
        ),
    )
    opt = bench.add_argument
    opt("uri", nargs="*", default=[], help="Lance datasets with an 'image' column (default: built-in)")
    opt("--transform", choices=TRANSFORMS, default="train", help="(default: train)")
    opt("--batch-size", type=_positive_int, default=None, help="(default: 64, 256 for small images)")
    opt("--limit", type=_positive_int, default=None, help="images per loader (default: all)")
    opt("--timeout", type=_positive_float, default=120.0, help="seconds per loader's timed pass (120)")
    opt("--stall-timeout", type=_positive_float, default=30.0, help="seconds without a batch before a kill (30)")
    opt(
        "--startup-timeout",
        type=_positive_float,
        default=300.0,
        help="seconds for a loader process's start-up: imports, building the loader (300)",
    )
    opt("--workers", type=_non_negative_int, default=None, help="DataLoader workers of the baselines (cores)")
    opt("--threads", type=_positive_int, default=None, help="lancefeed decode threads (cores)")
    opt(
        "--loaders",
        default=None,
        help="comma-separated subset of: " + ",".join(visible) + " (default: the first five)",
    )
    opt(
        "--peers",
        action="store_true",
        help='also the other data loaders, each converted to its own format (pip install "lancefeed[peers]")',
    )
    opt("--scale", type=_positive_int, default=1, help="repeat each dataset's rows N times (1)")
    opt(
        "--epochs",
        type=_positive_int,
        default=1,
        help="passes per loader in its process; adds 'later img/s', the median of the passes after the first (1)",
    )
    opt(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an object store option for s3:// (gs://, az://) URIs, Lance's names, repeatable "
        "(aws_endpoint=http://host:9000, allow_http=true...); Lance also reads AWS_* variables. "
        "Values of keys with secret/key/token/password/session are never printed or written",
    )
    opt("--out", default="bench-out", help="folder for table, JSON, CSV and chart (./bench-out)")
    opt("--repeat", type=_positive_int, default=1, help="runs per loader; the median is kept (1)")
    opt("--tiny", action="store_true", help="a very small default dataset (a smoke test)")
    opt("--quiet", action="store_true", help="only print the table")


def _ingest(args: argparse.Namespace) -> int:
    from lancefeed.ingest import IngestError, IngestOptions, ingest_coco_with, ingest_folder_with

    try:
        opts = IngestOptions.from_arguments(args)
        if args.source == "folder":
            summary = ingest_folder_with(args.root, args.out, opts, masks=args.masks)
        else:
            summary = ingest_coco_with(args.annotations, args.images_dir, args.out, opts, masks=args.masks)
    except (IngestError, ValueError, FileNotFoundError, FileExistsError, ImportError) as exc:
        print(f"lancefeed: error: {exc}", file=sys.stderr)
        return 1
    for path, reason in summary.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"{summary} in {summary.seconds:.1f} s")
    return 0


def _optimize(args: argparse.Namespace) -> int:
    from lancefeed.source import parse_storage_options
    from lancefeed.optimizer import optimize

    try:
        summary = optimize(args.uri, column=args.column, engine=args.engine, ray_address=args.ray_address,
                           batch_size=args.batch_size, num_threads=args.threads, progress=not args.no_progress,
                           storage_options=parse_storage_options(args.storage_option) or None, measure=not args.no_measure)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        print(f"lancefeed: error: {exc}", file=sys.stderr)
        return 1
    print(summary)
    print(f"in {summary.seconds:.1f} s")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from lancefeed.bench import run_bench
    from lancefeed.bench.options import parse_storage_options, scrub
    from lancefeed.bench.results import stats_line

    loaders = [s.strip() for s in args.loaders.split(",") if s.strip()] if args.loaders else None
    options: dict[str, str] = {}
    try:
        options = parse_storage_options(args.storage_option)
        report = run_bench(
            args.uri or None,
            transform=args.transform,
            batch_size=args.batch_size,
            limit=args.limit,
            timeout=args.timeout,
            stall_timeout=args.stall_timeout,
            startup_timeout=args.startup_timeout,
            workers=args.workers,
            threads=args.threads,
            loaders=loaders,
            out=args.out,
            tiny=args.tiny,
            repeat=args.repeat,
            progress=not args.quiet,
            peers=args.peers,
            scale=args.scale,
            epochs=args.epochs,
            storage_options=options or None,
        )
    except (ValueError, OSError) as exc:  # OSError: refused credentials, a missing bucket...
        print(f"lancefeed: error: {scrub(str(exc), options)}", file=sys.stderr)
        return 1
    except Exception as exc:
        if not options:
            raise
        # A traceback would repeat whatever the message holds: keep the secrets out.
        print(f"lancefeed: error: {type(exc).__name__}: {scrub(str(exc), options)}", file=sys.stderr)
        return 1
    print(report.table())
    if not args.quiet:
        for dataset, plan in report.settings["plans"].items():
            print(f"{dataset}: {plan}")
        for r in report.results:
            if r.loader == "lancefeed" and r.loader_stats:
                print(f"{r.dataset}: lancefeed stats: {stats_line(r.loader_stats)}")
        print(f"wrote {args.out}/table.txt, results.json, results.csv, results.md, bench.png")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lancefeed`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "ingest":
        return _ingest(args)
    if args.command == "optimize":
        return _optimize(args)
    return _bench(args)


if __name__ == "__main__":
    sys.exit(main())
