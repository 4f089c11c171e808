"""``take-pillow`` and ``take-pillow-workers``: the seeds' map-style Dataset, one
``take([idx])`` and one Pillow decode per item, under torch's DataLoader with 0
workers or one per core.

Example:
    >>> available()  # doctest: +SKIP
    (True, '')
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from lancefeed.bench.peers._common import class_index, images, is_blob, label_columns, need, pil_decode, to_tensor


def available() -> tuple[bool, str]:
    """Needs torch and Pillow."""
    return need(("torch", "pip install torch"), ("PIL", "pip install pillow"))


class SeedsTakeDataset:
    """The seeds' map-style Dataset: one ``take([idx])`` and one Pillow decode per item.

    The Lance dataset is opened in ``__init__``, in the parent process, as the seeds
    do; forked DataLoader workers then inherit it, which is what hangs.

    Example:
        >>> ds = SeedsTakeDataset("cifar.lance", lambda img: img, {})  # doctest: +SKIP
        >>> ds[0][0].shape  # doctest: +SKIP
        torch.Size([32, 32, 3])
    """

    def __init__(self, uri: str, transform: Callable[[Any], Any], classes: dict[str, int]):
        import lance

        self.ds = lance.dataset(uri)
        self.n = self.ds.count_rows()
        self.columns = label_columns(uri)
        self.blob = is_blob(self.ds)
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
            data = images(table.column("image"))[0]
        row = table.slice(0, 1).to_pylist()[0]
        img = self.transform(pil_decode(data))
        return to_tensor(img), self.classes.get(row.get("label"), -1)


def make_loader(spec: dict[str, Any]) -> Iterable[Any]:
    """torch's DataLoader over :class:`SeedsTakeDataset` with ``spec["workers"]`` workers."""
    import torch

    from lancefeed.bench.transforms import pillow_transform

    ds = SeedsTakeDataset(spec["uri"], pillow_transform(spec["plan"], seed=0), class_index(spec["uri"]))
    return torch.utils.data.DataLoader(
        ds, batch_size=spec["batch_size"], shuffle=spec["shuffle"], num_workers=spec["workers"]  # type: ignore[arg-type]
    )
