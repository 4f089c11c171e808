"""``lance-torch-pillow``: pylance's own ``lance.torch.data.LanceDataset`` (a
sequential scan in batches), decoded with Pillow.

Example:
    >>> available()  # doctest: +SKIP
    (True, '')
"""

from __future__ import annotations

from typing import Any, Iterable

from lancefeed.bench.peers._common import class_index, images, is_blob, label_columns, need, pil_decode


def available() -> tuple[bool, str]:
    """Needs torch and Pillow (pylance is lancefeed's own dependency)."""
    return need(("torch", "pip install torch"), ("PIL", "pip install pillow"))


def make_loader(spec: dict[str, Any]) -> Iterable[Any]:
    """``LanceDataset`` batches under torch's DataLoader (0 workers: it scans)."""
    import lance
    import numpy as np
    import pyarrow as pa
    import torch
    from lance.torch.data import LanceDataset

    from lancefeed.bench.transforms import pillow_transform

    transform = pillow_transform(spec["plan"], seed=0)
    classes = class_index(spec["uri"])
    columns = label_columns(spec["uri"])

    field = lance.dataset(spec["uri"]).schema.field("image")
    if is_blob(lance.dataset(spec["uri"])) and not pa.types.is_large_binary(field.type):
        # Its blob support looks for v1's metadata only; v2 rows come as descriptions.
        raise RuntimeError("lance.torch.data.LanceDataset reads a blob v2 column as descriptions, not images")

    def to_tensor(batch: Any, **_: Any) -> Any:
        column = batch["image"]
        # A blob v1 column comes as Lance BlobFiles (one per row), anything else as Arrow.
        data = [f.readall() for f in column] if isinstance(column, list) else images(column)
        out = np.stack([np.asarray(transform(pil_decode(b)), dtype=np.uint8) for b in data])
        labels = torch.tensor([classes[v] for v in batch["label"].to_pylist()]) if "label" in columns else None
        return torch.from_numpy(out), labels

    ds = LanceDataset(spec["uri"], batch_size=spec["batch_size"], columns=columns, to_tensor_fn=to_tensor)
    return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0)
