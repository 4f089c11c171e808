"""``torchvision``: what torchvision's documentation does for images on disk: a map-style
Dataset over the files, ``torchvision.io.decode_jpeg`` (libjpeg-turbo) and the v2
transforms on tensors, torch DataLoader with a worker process per core.

Example:
    >>> available()  # doctest: +SKIP
    (True, '')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from lancefeed.bench.peers._common import export_files, files_root, image_files, need, tv_decode

FORMAT = "files"  # shares the exported files with the other file-based loaders


def available() -> tuple[bool, str]:
    """Needs torch and torchvision."""
    return need(("torch", "pip install torch"), ("torchvision", "pip install torchvision"))


def convert(spec: dict[str, Any], dest: Path) -> None:
    """Export the rows as ``dest/<label>/<row>.img``."""
    export_files(spec["uri"], dest, spec.get("limit"))


class TensorImageFolder:
    """Files read with ``torchvision.io.read_file``, decoded to CHW uint8 tensors and
    transformed with v2 transforms; labels from the parent folder.

    Example:
        >>> ds = TensorImageFolder(Path("cifar-files"), lambda x: x, None)  # doctest: +SKIP
        >>> ds[0][0].shape  # doctest: +SKIP
        torch.Size([3, 32, 32])
    """

    def __init__(self, root: Path, transform: Callable[[Any], Any], limit: int | None):
        self.files = image_files(root, limit)
        self.classes = {lab: i for i, lab in enumerate(sorted({p.parent.name for p in self.files}))}
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int) -> Any:
        path = self.files[idx]
        return self.transform(tv_decode(path.read_bytes())), self.classes[path.parent.name]


def make_loader(spec: dict[str, Any]) -> Iterable[Any]:
    """torch's DataLoader, ``spec["workers"]`` workers, over :class:`TensorImageFolder`."""
    import torch

    from lancefeed.bench.transforms import torchvision_transform

    ds = TensorImageFolder(files_root(spec), torchvision_transform(spec["plan"]), spec.get("limit"))
    workers = spec["workers"]
    return torch.utils.data.DataLoader(
        ds,  # type: ignore[arg-type]
        batch_size=spec["batch_size"],
        shuffle=spec["shuffle"],
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
