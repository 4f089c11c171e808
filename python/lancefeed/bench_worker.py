"""One benchmark loader, run in its own process: ``python -m lancefeed.bench_worker SPEC``.

``SPEC`` is a JSON object (``loader``, ``uri``, ``plan``, ``batch_size``,
``shuffle``, ``limit``, ``workers``, ``threads``, and for the file-based baseline
``folder``, an image folder of the dataset, or ``export_dir``, where to write one).
The process sets the loader up (imports, building the loader), then times one pass
over at most ``limit`` images and reports on stdout with lines that start with
:data:`TAG`:

    {"event": "ready"}                                  start-up done, timing starts
    {"event": "batch", "images": 512, "seconds": 1.9}   after every batch
    {"event": "done", "images": ..., "seconds": ..., "cpu_s": ...}

Running each loader in a process of its own lets the harness kill one that hangs
(the seeds' Lance Dataset under torch's DataLoader with worker processes deadlocks
after fork) and measure each loader's CPU time and memory on its own.

Example:
    $ python -m lancefeed.bench_worker '{"loader": "lancefeed", "uri": "cifar.lance",
    ...   "plan": [["resize", [32, 32]]], "batch_size": 256, "limit": 1000}'
"""

from __future__ import annotations

import gc
import io
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

TAG = "@@lancefeed-bench "

# Loader name -> one-line description (the {workers}/{threads} are filled in).
LOADERS = {
    "lancefeed": "lancefeed.DataLoader: Rust decode + transform on {threads} threads",
    "take-pillow": "seeds' take([idx]) + Pillow Dataset, torch DataLoader, 0 workers",
    "take-pillow-workers": "seeds' take([idx]) + Pillow Dataset, torch DataLoader, {workers} workers",
    "lance-torch-pillow": "lance.torch.data.LanceDataset batches decoded with Pillow (sequential scan)",
    "imagefolder-pillow": "{pillow} ImageFolder-style Dataset over files, torch DataLoader, {workers} workers",
}
# Test-only loaders: one that never yields a batch, one that fails, and one whose
# start-up takes ``startup_sleep`` seconds (then yields ``batches`` batches, and hangs
# after them when ``hang`` is set).
HIDDEN_LOADERS = ("_sleep", "_fail", "_slow_start")


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(TAG + json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def pillow_name() -> str:
    """``"pillow-simd"`` when that fork is installed, else ``"Pillow"``."""
    from importlib import metadata

    try:
        metadata.version("pillow-simd")
        return "pillow-simd"
    except metadata.PackageNotFoundError:
        return "Pillow"


def _class_index(uri: str) -> dict[str, int]:
    """Label string -> class index (sorted labels), read before timing starts."""
    import lance
    import pyarrow.compute as pc

    ds = lance.dataset(uri)
    if "label" not in ds.schema.names:
        return {}
    labels = pc.unique(ds.to_table(columns=["label"]).column("label")).to_pylist()
    return {lab: i for i, lab in enumerate(sorted(x for x in labels if x is not None))}


def _label_columns(uri: str) -> list[str]:
    import lance

    return ["image", "label"] if "label" in lance.dataset(uri).schema.names else ["image"]


def _images(column: Any) -> list[Any]:
    """The encoded images of an image column of any type lancefeed reads (Hugging
    Face's ``{bytes, path}`` struct, ``encoded_image``...) as bytes."""
    from lancefeed.columns import image_array

    return image_array(column, column="image").to_pylist()


def _is_blob(ds: Any) -> bool:
    """Whether the dataset's ``image`` column is a Lance blob column, which ``take``
    returns as descriptions rather than bytes."""
    from lancefeed.columns import image_column_kind

    return image_column_kind(ds.schema.field("image")) == "blob"


def _pil_decode(data: bytes) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def _to_tensor(img: Any) -> Any:
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())


# --- the loaders: each returns an iterable of (images NHWC uint8, labels) ----------


def _lancefeed(spec: dict[str, Any]) -> Iterable[Any]:
    import lancefeed
    from lancefeed.bench_transforms import lancefeed_transform

    return lancefeed.DataLoader(
        spec["uri"],
        spec["batch_size"],
        shuffle=spec["shuffle"],
        seed=0,
        transform=lancefeed_transform(spec["plan"]),
        num_threads=spec.get("threads"),
    )


class SeedsTakeDataset:
    """The seeds' map-style Dataset: one ``take([idx])`` and one Pillow decode per item.

    The Lance dataset is opened in ``__init__``, in the parent process, as the seeds
    do; forked DataLoader workers then inherit it, which is what hangs.
    """

    def __init__(self, uri: str, transform: Callable[[Any], Any], classes: dict[str, int]):
        import lance

        self.ds = lance.dataset(uri)
        self.n = self.ds.count_rows()
        self.columns = _label_columns(uri)
        self.blob = _is_blob(self.ds)
        self.transform = transform
        self.classes = classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: int) -> Any:
        table = self.ds.take([idx], columns=self.columns)
        if self.blob:
            # What a blob column's user does: Lance's blob reader for the bytes.
            data = self.ds.read_blobs("image", indices=[idx])[0][1]
        else:
            data = _images(table.column("image"))[0]
        row = table.slice(0, 1).to_pylist()[0]
        img = self.transform(_pil_decode(data))
        return _to_tensor(img), self.classes.get(row.get("label"), -1)


def _take_pillow(spec: dict[str, Any], workers: int) -> Iterable[Any]:
    import torch

    from lancefeed.bench_transforms import pillow_transform

    ds = SeedsTakeDataset(spec["uri"], pillow_transform(spec["plan"], seed=0), _class_index(spec["uri"]))
    return torch.utils.data.DataLoader(
        ds, batch_size=spec["batch_size"], shuffle=spec["shuffle"], num_workers=workers  # type: ignore[arg-type]
    )


def _lance_torch_pillow(spec: dict[str, Any]) -> Iterable[Any]:
    import numpy as np
    import pyarrow as pa
    import torch
    from lance.torch.data import LanceDataset

    from lancefeed.bench_transforms import pillow_transform

    transform = pillow_transform(spec["plan"], seed=0)
    classes = _class_index(spec["uri"])
    columns = _label_columns(spec["uri"])

    import lance

    field = lance.dataset(spec["uri"]).schema.field("image")
    if _is_blob(lance.dataset(spec["uri"])) and not pa.types.is_large_binary(field.type):
        # Its blob support looks for v1's metadata only; v2 rows come as descriptions.
        raise RuntimeError("lance.torch.data.LanceDataset reads a blob v2 column as descriptions, not images")

    def to_tensor(batch: Any, **_: Any) -> Any:
        column = batch["image"]
        # A blob v1 column comes as Lance BlobFiles (one per row), anything else as Arrow.
        data = [f.readall() for f in column] if isinstance(column, list) else _images(column)
        images = np.stack([np.asarray(transform(_pil_decode(b)), dtype=np.uint8) for b in data])
        labels = (
            torch.tensor([classes[v] for v in batch["label"].to_pylist()]) if "label" in columns else None
        )
        return torch.from_numpy(images), labels

    ds = LanceDataset(spec["uri"], batch_size=spec["batch_size"], columns=columns, to_tensor_fn=to_tensor)
    return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0)


class ImageFolderDataset:
    """What a torchvision ``ImageFolder`` does: list ``root/[split/]label/file``,
    open each file with Pillow, convert to RGB, transform."""

    def __init__(self, root: Path, transform: Callable[[Any], Any], limit: int | None):
        files = sorted(p for p in root.rglob("*") if p.is_file())
        self.files = files[:limit] if limit else files
        labels = sorted({p.parent.name for p in self.files})
        self.classes = {lab: i for i, lab in enumerate(labels)}
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int) -> Any:
        from PIL import Image

        path = self.files[idx]
        with Image.open(path) as f:
            img = f.convert("RGB")
        return _to_tensor(self.transform(img)), self.classes[path.parent.name]


def export_files(uri: str, folder: Path, limit: int | None) -> Path:
    """Write the dataset's first ``limit`` images as files ``folder/<label>/<row>.img``
    (for the file-based baseline when the dataset has no folder of its own)."""
    import lance

    ds = lance.dataset(uri)
    columns = _label_columns(uri)
    row = 0
    for batch in ds.to_batches(columns=columns, batch_size=1024, blob_handling="all_binary"):
        images = _images(batch.column("image"))
        labels = batch.column("label").to_pylist() if "label" in columns else [None] * len(images)
        for data, label in zip(images, labels):
            if limit is not None and row >= limit:
                return folder
            sub = folder / (str(label) if label is not None else "unlabelled")
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"{row:08d}.img").write_bytes(data)
            row += 1
    return folder


def _imagefolder_pillow(spec: dict[str, Any]) -> Iterable[Any]:
    import torch

    from lancefeed.bench_transforms import pillow_transform

    folder = spec.get("folder")
    if folder is None:
        # The harness passes a folder it removes afterwards; alone, use a fresh one.
        export_to = spec.get("export_dir") or tempfile.mkdtemp(prefix="lancefeed-bench-files-")
        folder = str(export_files(spec["uri"], Path(export_to), spec.get("limit")))
    ds = ImageFolderDataset(Path(folder), pillow_transform(spec["plan"], seed=0), spec.get("limit"))
    return torch.utils.data.DataLoader(
        ds,  # type: ignore[arg-type]
        batch_size=spec["batch_size"],
        shuffle=spec["shuffle"],
        num_workers=spec["workers"],
    )


def _sleeper(spec: dict[str, Any]) -> Iterable[Any]:
    while True:  # a loader that never produces a batch (test hook for the timeout)
        time.sleep(3600)
        yield None


def _failer(spec: dict[str, Any]) -> Iterable[Any]:
    raise RuntimeError("this loader fails on purpose (test hook)")


def _slow_starter(spec: dict[str, Any]) -> Iterable[Any]:
    import numpy as np

    # Sleeps while it is built, so before "ready": a start-up, not a stall.
    time.sleep(float(spec.get("startup_sleep", 2.0)))
    batch = (np.zeros((int(spec.get("batch_size", 8)), 1, 1, 3), np.uint8), None)

    def batches() -> Iterable[Any]:
        for _ in range(int(spec.get("batches", 4))):
            yield batch
        while spec.get("hang"):  # hangs for certain after its batches: a stall
            time.sleep(3600)

    return batches()


def make_loader(spec: dict[str, Any]) -> Iterable[Any]:
    """Build the loader ``spec["loader"]`` names (not yet iterated)."""
    name = spec["loader"]
    if name == "lancefeed":
        return _lancefeed(spec)
    if name == "take-pillow":
        return _take_pillow(spec, 0)
    if name == "take-pillow-workers":
        return _take_pillow(spec, spec["workers"])
    if name == "lance-torch-pillow":
        return _lance_torch_pillow(spec)
    if name == "imagefolder-pillow":
        return _imagefolder_pillow(spec)
    if name == "_sleep":
        return _sleeper(spec)
    if name == "_fail":
        return _failer(spec)
    if name == "_slow_start":
        return _slow_starter(spec)
    raise ValueError(f"unknown loader {name!r}; expected one of {', '.join(LOADERS)}")


def _cpu(kind: int) -> float:
    r = resource.getrusage(kind)
    return r.ru_utime + r.ru_stime


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one pass of the loader; returns the ``done`` record."""
    limit = spec.get("limit")
    loader = make_loader(spec)
    _emit("ready")
    cpu0 = _cpu(resource.RUSAGE_SELF)
    children0 = _cpu(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    images = 0
    it = iter(loader)
    for batch in it:
        images += int(batch[0].shape[0])
        _emit("batch", images=images, seconds=time.perf_counter() - start)
        if limit is not None and images >= limit:
            break
    seconds = time.perf_counter() - start
    # Join DataLoader worker processes so that their CPU time is counted below.
    del it, loader
    gc.collect()
    cpu = _cpu(resource.RUSAGE_SELF) - cpu0 + _cpu(resource.RUSAGE_CHILDREN) - children0
    return {"images": images, "seconds": seconds, "cpu_s": cpu}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m lancefeed.bench_worker SPEC_JSON", file=sys.stderr)
        return 2
    spec = json.loads(args[0])
    _emit("done", **run(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
