"""``imagefolder-pillow``: a torchvision-style ImageFolder Dataset over the image
files, decoded with Pillow (pillow-simd where installed), torch DataLoader with a
worker process per core. Its "conversion" is the export of the rows as files.

Example:
    >>> available()  # doctest: +SKIP
    (True, '')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from lancefeed.bench.peers._common import export_files, files_root, image_files, need, to_tensor

# The harness converts once per dataset for every loader of the same FORMAT, and
# skips it when the dataset came with its image files (the default datasets).
FORMAT = "files"


def available() -> tuple[bool, str]:
    """Needs torch and Pillow."""
    return need(("torch", "pip install torch"), ("PIL", "pip install pillow"))


def convert(spec: dict[str, Any], dest: Path) -> None:
    """Export the rows as ``dest/<label>/<row>.img``."""
    export_files(spec["uri"], dest, spec.get("limit"))


class ImageFolderDataset:
    """What a torchvision ``ImageFolder`` does: list ``root/[split/]label/file``,
    open each file with Pillow, convert to RGB, transform.

    Example:
        >>> ds = ImageFolderDataset(Path("cifar-files"), lambda img: img, None)  # doctest: +SKIP
        >>> len(ds.classes)  # doctest: +SKIP
        10
    """

    def __init__(self, root: Path, transform: Callable[[Any], Any], limit: int | None):
        self.files = image_files(root, limit)
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
        return to_tensor(self.transform(img)), self.classes[path.parent.name]


def make_loader(spec: dict[str, Any]) -> Iterable[Any]:
    """torch's DataLoader over :class:`ImageFolderDataset`, ``spec["workers"]`` workers."""
    import torch

    from lancefeed.bench.transforms import pillow_transform

    ds = ImageFolderDataset(files_root(spec), pillow_transform(spec["plan"], seed=0), spec.get("limit"))
    return torch.utils.data.DataLoader(
        ds,  # type: ignore[arg-type]
        batch_size=spec["batch_size"],
        shuffle=spec["shuffle"],
        num_workers=spec["workers"],
    )
