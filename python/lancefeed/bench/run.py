"""A whole ``lancefeed bench`` run: the datasets, every loader on each, the outputs.

This is the top of :mod:`lancefeed.bench`: it uses the peers' registry
(:mod:`lancefeed.bench.peers`), the harness (:mod:`lancefeed.bench.harness`), the
data and transforms, and writes through :mod:`lancefeed.bench.report`; nothing
below imports it.

Example:
    >>> from lancefeed.bench import run_bench
    >>> report = run_bench(tiny=True, peers=True, out="bench-out")  # doctest: +SKIP
    >>> print(report.table())  # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from lancefeed.bench.data import disk_bytes
from lancefeed.bench.harness import run_convert, run_loader
from lancefeed.bench.options import redacted
from lancefeed.bench.peers import PEERS, availability, describe, load
from lancefeed.bench.peers._common import pillow_name
from lancefeed.bench.report import write_outputs
from lancefeed.bench.results import BenchReport, LoaderResult
from lancefeed.bench.transforms import TRANSFORMS, describe_plan, make_plan, output_side

__all__ = ["DEFAULT_LOADERS", "PEER_LOADERS", "run_bench"]

# The default run: the loaders people used before lancefeed (what the README's first
# table shows). ``--peers`` adds the other data loaders, each in its own format.
DEFAULT_LOADERS = tuple(p.name for p in PEERS.values() if p.baseline)
PEER_LOADERS = tuple(p.name for p in PEERS.values() if not p.baseline and not p.hidden)
VISIBLE_LOADERS = DEFAULT_LOADERS + PEER_LOADERS


def median_short_side(uri: str, sample: int = 256, storage_options: dict[str, str] | None = None) -> int:
    """Median short side of the dataset's images (``width``/``height`` columns, or
    the headers of the first ``sample`` images).

    Example:
        >>> median_short_side("imagenet-sample.lance")  # doctest: +SKIP
        375
    """
    import numpy as np

    from lancefeed.source import open_source

    # lancefeed's opening: refused credentials or a missing bucket say so, naming the URI.
    ds = open_source(uri, storage_options=storage_options)
    names = ds.schema.names
    n = min(sample, ds.count_rows())
    if n == 0:
        raise ValueError(f"{uri} has no rows to benchmark")
    if "width" in names and "height" in names:
        t = ds.head(n, columns=["width", "height"])
        sides = np.minimum(t.column("width").to_numpy(), t.column("height").to_numpy())
    else:
        if "image" not in names:
            raise ValueError(f"{uri} has no 'image' column; columns are {', '.join(names)}")
        from lancefeed import image_info

        from lancefeed.columns import image_array

        # Blob columns read as their bytes, not as descriptions; other image column
        # types (Hugging Face's struct, encoded_image) as binary.
        column = ds.head(n, columns=["image"], blob_handling="all_binary").column("image")
        blobs = image_array(column, column="image").to_pylist()
        sides = np.array([min(image_info(b)[:2]) for b in blobs])
    return int(np.median(sides))


def _remote(uri: str, storage_options: dict[str, str] | None) -> dict[str, str] | None:
    """``storage_options`` when ``uri`` is on an object store, else None."""
    return storage_options if "://" in uri and not uri.startswith("file:") else None


def _dataset_name(uri: str) -> str:
    """``/data/cifar10.lance/`` -> ``cifar10``."""
    name = Path(uri.rstrip("/")).name or uri
    return name[: -len(".lance")] if name.endswith(".lance") and len(name) > 6 else name


def _describe(name: str, workers: int, threads: int) -> str:
    return describe(name, workers, threads, pillow_name())


def run_bench(
    uri: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    *,
    transform: str = "train",
    batch_size: int | None = None,
    limit: int | None = None,
    timeout: float = 120.0,
    stall_timeout: float = 30.0,
    startup_timeout: float = 300.0,
    workers: int | None = None,
    threads: int | None = None,
    loaders: Sequence[str] | None = None,
    out: str | os.PathLike[str] = "bench-out",
    tiny: bool = False,
    repeat: int = 1,
    progress: bool = True,
    peers: bool = False,
    scale: int = 1,
    storage_options: dict[str, str] | None = None,
    epochs: int = 1,
) -> BenchReport:
    """Benchmark every loader on ``uri`` (one dataset or a list of them), or, when
    it is None, on the built-in default datasets.

    Writes ``results.json``, ``results.csv``, ``table.txt`` and ``bench.png`` to
    ``out`` and returns the report. ``batch_size`` defaults to 64 for
    ImageNet-sized output and 256 for CIFAR-sized; ``workers`` (torch DataLoader
    worker processes of the baselines) and ``threads`` (lancefeed's) default to
    the number of cores. ``repeat`` runs each loader that many times and keeps the
    median run.

    ``peers`` adds the other data loaders (torchvision, FFCV, SPDL, litdata,
    mosaicml-streaming, webdataset, lancedb, DALI: :data:`PEER_LOADERS`) to the
    default loaders (or to ``loaders``); each converts the rows into its own format
    once (timed, its size on disk reported) and then runs like the others. Peers
    that are not installed are listed as ``missing`` with what to install.
    ``scale`` repeats each dataset's rows that many times first. ``epochs`` runs that
    many passes over each loader in its process; the table then adds the median
    images/s of the passes after the first (``later img/s``: training's steady state,
    where caches are full and pipelines compiled), each run's ``timeout`` is that many
    times longer, and CPU per 1,000 images covers every pass.

    ``storage_options`` (Lance's names: ``aws_endpoint``, ``aws_region``...) are
    for datasets on an object store (``s3://``, ``gs://``, ``az://``): every loader
    reading the Lance dataset gets them, and the conversions of the peers that read
    files read the rows through them. Lance also reads the usual environment
    variables itself (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_REGION``, ``AWS_ENDPOINT``...), and each loader's process inherits them.
    The options reach the loaders' processes through their environment, not their
    command lines; the settings record them with the values of keys that look
    secret (``secret``, ``key``, ``token``, ``password``, ``session``) masked, and
    the loaders' error messages have those values masked too.

    Limits per loader run: ``startup_timeout`` seconds for its process to import
    what it needs and build the loader (and, after the pass, to exit), then
    ``timeout`` seconds for the timed pass, killed sooner when no batch arrives
    for ``stall_timeout`` seconds.

    Example:
        >>> report = run_bench("cifar10.lance", transform="eval", limit=10_000)  # doctest: +SKIP
        >>> [(r.loader, round(r.images_per_s)) for r in report.results]  # doctest: +SKIP
        >>> opts = {"aws_region": "us-east-1"}  # keys from AWS_* variables
        >>> run_bench("s3://bucket/cifar10.lance", storage_options=opts, loaders=["lancefeed"])  # doctest: +SKIP
    """
    uris = [os.fspath(u) for u in ([uri] if isinstance(uri, (str, os.PathLike)) else list(uri or []))]
    names = _checked(uris, transform, loaders, peers, scale, limit, repeat)
    cores = os.cpu_count() or 1
    workers = cores if workers is None else workers
    threads = cores if threads is None else threads
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    limits = {"timeout": timeout, "stall_timeout": stall_timeout, "startup_timeout": startup_timeout}
    run = {"workers": workers, "threads": threads, "limit": limit, "epochs": epochs, "repeat": repeat, "scale": scale}
    # The generated datasets keep the image folders they were made from: file-based peers read those.
    run["own_folders"] = not uris

    with tempfile.TemporaryDirectory(prefix="lancefeed-bench-") as tmp:
        if not uris:
            from lancefeed.bench.data import build_default_datasets

            if progress:
                print("building the default datasets (generated images) ...", file=sys.stderr)
            datasets = build_default_datasets(tmp, tiny=tiny, progress=progress)
        else:
            datasets = {_dataset_name(u): u for u in uris}
            if len(datasets) < len(uris):
                raise ValueError(f"datasets must have distinct names; got {', '.join(uris)}")
        results: list[LoaderResult] = []
        plans: dict[str, str] = {}
        available = {name: availability(name) for name in names}
        for dataset, ds_uri in datasets.items():
            base = _dataset_spec(dataset, ds_uri, Path(tmp), transform, batch_size, run, storage_options, progress)
            plans[dataset] = describe_plan(base["plan"])
            conversions: dict[str, tuple[float | None, int | None, str]] = {}
            for name in names:
                results.append(
                    _run_one(name, available[name], dataset, base, run, limits, Path(tmp), conversions, progress)
                )
        _fill_ratios(results)
    settings = {
        "datasets": uris or "built-in default (generated images)",
        "transform": transform,
        "plans": plans,
        "batch_size": batch_size or "64 (224 px output) / 256 (small images)",
        "limit": limit,
        "repeat": repeat,
        "timeout_s": timeout,
        "stall_timeout_s": stall_timeout,
        "startup_timeout_s": startup_timeout,
        "workers": workers,
        "threads": threads,
        "cores": cores,
        "python": sys.version.split()[0],
        "pillow": pillow_name(),
        "peers": peers,
        "scale": scale,
        "epochs": epochs,
        "storage_options": redacted(storage_options),
    }
    report = BenchReport(results=results, settings=settings)
    write_outputs(report, out_dir)
    return report


def _dataset_spec(
    dataset: str,
    uri: str,
    tmp: Path,
    transform: str,
    batch_size: int | None,
    run: dict[str, Any],
    storage_options: dict[str, str] | None,
    progress: bool,
) -> dict[str, Any]:
    """What every loader's run on this dataset shares: its (``scale``-repeated) URI,
    the transform plan sized to its images, the batch size, the image folder (of a
    generated dataset read at scale 1)."""
    from lancefeed.bench.data import files_folder, repeat_dataset

    scale = run["scale"]
    if scale > 1:
        if progress:
            print(f"[{dataset}] repeating its rows {scale} times ...", file=sys.stderr)
        dest = tmp / f"{dataset}-x{scale}.lance"
        uri = repeat_dataset(uri, scale, dest, storage_options=_remote(uri, storage_options))
    # --scale's copy is local: the store's options are not for it.
    remote = _remote(uri, storage_options)
    side = output_side(median_short_side(uri, storage_options=remote))
    folder = files_folder(uri) if run["own_folders"] and scale == 1 else None
    spec = {
        "uri": uri,
        "plan": make_plan(transform, side),
        "batch_size": batch_size or (64 if side > 64 else 256),
        "shuffle": transform == "train",
        "folder": str(folder) if folder else None,
        **{k: run[k] for k in ("limit", "workers", "threads", "epochs")},
    }
    if remote:
        spec["storage_options"] = remote
    return spec


def _checked(
    uris: list[str],
    transform: str,
    loaders: Sequence[str] | None,
    peers: bool,
    scale: int,
    limit: int | None,
    repeat: int,
) -> list[str]:
    """The loaders to run, once every argument of :func:`run_bench` is known good."""
    for u in uris:
        if "://" not in u and not os.path.isdir(u):
            raise FileNotFoundError(f"{u}: no Lance dataset there (expected a dataset folder or URI)")
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}; got {transform!r}")
    names = list(loaders) if loaders else list(DEFAULT_LOADERS)
    if peers:
        names += [n for n in PEER_LOADERS if n not in names]
    for name in names:
        if name not in PEERS:
            raise ValueError(f"unknown loader {name!r}; expected some of {', '.join(VISIBLE_LOADERS)}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1; got {scale}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1; got {limit}")
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1; got {repeat}")
    return names


def _run_one(
    name: str,
    available: tuple[bool, str],
    dataset: str,
    base: dict[str, Any],
    run: dict[str, Any],
    limits: dict[str, float],
    tmp: Path,
    conversions: dict[str, tuple[float | None, int | None, str]],
    progress: bool,
) -> LoaderResult:
    """One loader on one dataset: converted first when it reads its own format, then
    run ``run["repeat"]`` times; a loader that is missing or whose conversion failed
    is reported, never dropped."""
    description = _describe(name, run["workers"], run["threads"])
    ok, reason = available
    if not ok:
        if progress:
            print(f"[{dataset}] {name}: {reason}", file=sys.stderr)
        return LoaderResult(dataset, name, description, "missing", message=reason)
    spec = {"loader": name, **base}
    module = load(name)
    converted = _convert(module, spec, tmp, dataset, conversions, limits["startup_timeout"], progress)
    if converted[2]:
        return LoaderResult(dataset, name, description, "failed", message=converted[2])
    if progress:
        print(f"[{dataset}] {name} ...", file=sys.stderr, end="", flush=True)
    r = _repeated(
        spec,
        run["repeat"],
        dataset=dataset,
        description=description,
        timeout=limits["timeout"] * run["epochs"],
        stall_timeout=min(limits["stall_timeout"], limits["timeout"]),
        startup_timeout=limits["startup_timeout"],
    )
    r.convert_s = converted[0]
    r.disk_mib = _disk_mib(module, spec, converted[1])
    if progress:
        rate = f"{r.images_per_s:,.0f} images/s" if r.images_per_s else "-"
        own = f", {r.own_startup_s:.2f} s after import torch" if r.own_startup_s is not None else ""
        start = f" (start-up {r.startup_s:.1f} s{own})" if r.startup_s is not None else ""
        print(f" {r.status}, {rate}{start}", file=sys.stderr)
    return r


def _repeated(spec: dict[str, Any], repeat: int, **kwargs: Any) -> LoaderResult:
    """Run a loader ``repeat`` times and keep the run with the median images/s
    (all rates go to ``runs``). A loader that does not finish is not run again."""
    runs: list[LoaderResult] = []
    for _ in range(repeat):
        r = run_loader(spec, **kwargs)
        runs.append(r)
        if r.status != "ok":
            break
    ok = sorted((r for r in runs if r.status == "ok"), key=lambda r: r.images_per_s or 0.0)
    chosen = ok[(len(ok) - 1) // 2] if len(ok) == len(runs) else runs[-1]
    chosen.runs = [r.images_per_s for r in runs]
    return chosen


def _fill_ratios(results: list[LoaderResult]) -> None:
    base = {r.dataset: r.images_per_s for r in results if r.loader == "lancefeed" and r.status == "ok"}
    for r in results:
        ref = base.get(r.dataset)
        if ref and r.images_per_s is not None and r.status == "ok":
            r.ratio = r.images_per_s / ref


def _convert(
    module: Any,
    spec: dict[str, Any],
    tmp: Path,
    dataset: str,
    done: dict[str, tuple[float | None, int | None, str]],
    timeout: float,
    progress: bool,
) -> tuple[float | None, int | None, str]:
    """Convert the rows for ``module``'s format once per dataset (loaders of the same
    ``FORMAT`` share it; file-based loaders use the dataset's own image folder when
    it has one); sets ``spec["converted"]``. Returns (seconds, bytes, error)."""
    if not hasattr(module, "convert"):
        return None, None, ""
    fmt = getattr(module, "FORMAT", module.__name__.rsplit(".", 1)[-1])
    if fmt == "files" and spec.get("folder"):
        return None, None, ""
    dest = tmp / f"{dataset}-{fmt}"
    spec["converted"] = str(dest)
    if fmt not in done:
        if progress:
            print(f"[{dataset}] converting to {fmt} ...", file=sys.stderr, end="", flush=True)
        done[fmt] = run_convert(spec, timeout=timeout)
        if progress:
            seconds, size, error = done[fmt]
            print(f" {error}" if error else f" {seconds:.1f} s, {size / 2**20:,.1f} MiB", file=sys.stderr)
    return done[fmt]


def _disk_mib(module: Any, spec: dict[str, Any], converted_bytes: int | None) -> float | None:
    """Size of what the loader reads: its converted copy, the dataset's image folder,
    or the Lance dataset (local paths only)."""
    if converted_bytes is not None:
        return converted_bytes / 2**20
    if getattr(module, "FORMAT", None) == "files" and spec.get("folder"):
        return disk_bytes(spec["folder"]) / 2**20
    if not hasattr(module, "convert") and os.path.isdir(spec["uri"]):
        return disk_bytes(spec["uri"]) / 2**20
    return None
