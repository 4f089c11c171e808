"""Type stubs for the Rust extension ``lancefeed._core``."""

from typing import Any, Optional, Sequence

import numpy as np
import numpy.typing as npt

class DecodeError(ValueError):
    """An image could not be decoded; the message names the row and the reason."""

class SizeMismatchError(ValueError):
    """A batch's rows come out at different sizes; the message names two of them."""

class PixelCache:
    """Whole decoded images kept between batches, keyed by row position."""

    def __init__(self, rows: int, max_bytes: int, mode: str = "RGB") -> None: ...
    @property
    def rows(self) -> int: ...
    @property
    def max_bytes(self) -> int: ...
    @property
    def mode(self) -> str: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def cached(self) -> int: ...
    def __len__(self) -> int: ...

def decode_image(
    data: bytes, *, mode: str = "RGB", max_pixels: Optional[int] = None, truncated: str = "error"
) -> npt.NDArray[np.uint8]: ...
def image_info(data: bytes) -> tuple[int, int, str]: ...
def apply_op(image: npt.NDArray[np.uint8], name: str, params: Sequence[float]) -> npt.NDArray[np.uint8]: ...
def run_ops(
    image: npt.NDArray[np.uint8], ops: Sequence[tuple[str, Sequence[float]]], *, seed: int, epoch: int, position: int, first_op: int
) -> npt.NDArray[np.uint8]: ...
def random_uniforms(seed: int, epoch: int, position: int, op: int, n: int) -> list[float]: ...
def default_num_threads() -> int: ...
def huffman_decoder(select: Optional[str] = None) -> str: ...
def jpeg_handles_reset() -> bool: ...
def keep_freed_memory(mmap_threshold: int, trim_threshold: int) -> bool: ...
def decode_batch(
    images: Sequence[Any],
    *,
    arrow: bool,
    ops: Sequence[tuple[str, Sequence[float]]],
    mode: str,
    num_threads: Optional[int],
    out: Optional[npt.NDArray[np.uint8]],
    skip_errors: bool,
    seed: int,
    epoch: int,
    positions: Optional[npt.NDArray[np.uint64]],
    max_pixels: Optional[int],
    dct_scaling: bool,
    decode_crop: bool,
    order: Optional[npt.NDArray[np.uint64]] = None,
    truncated: str = "error",
    normalize: Optional[tuple[Sequence[float], Sequence[float], bool]] = None,
    boxes: Optional[tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]] = None,
    masks: Optional[Sequence[Any]] = None,
    mask_fill: int = 0,
    box_filter: tuple[float, float, float] = (1.0, 1.0, 0.0),
    ragged: bool = False,
    normalize_dtype: int = 0,
    normalize_out: Optional[Any] = None,
    pixel_cache: Optional[PixelCache] = None,
) -> tuple[
    Optional[npt.NDArray[Any]],
    npt.NDArray[np.int64],
    list[tuple[int, str]],
    npt.NDArray[np.float32],
    npt.NDArray[np.bool_],
    npt.NDArray[np.bool_],
    list[list[tuple[str, list[float]]]],
    # With boxes, masks or ragged: row shapes (h, w pairs), boxes (k, 4) xyxy, boxes per
    # row, their input indices, masks (flat).
    Optional[
        tuple[
            npt.NDArray[np.uint32],
            npt.NDArray[np.float32],
            npt.NDArray[np.int64],
            npt.NDArray[np.int64],
            Optional[npt.NDArray[np.uint8]],
        ]
    ],
]: ...
CvOps = Sequence[tuple[str, Sequence[float]]]

def cv_run(image: npt.NDArray[np.uint8], ops: CvOps) -> npt.NDArray[Any]: ...
def cv_decode(
    data: bytes,
    ops: CvOps,
    *,
    mask: Optional[bytes] = None,
    mask_ops: CvOps = ...,
    mode: str = "RGB",
    max_pixels: Optional[int] = None,
    truncated: str = "error",
) -> tuple[npt.NDArray[Any], Optional[npt.NDArray[np.uint8]]]: ...
def cv_decode_batch(
    items: Sequence[tuple[bytes, CvOps, Optional[bytes], CvOps]],
    *,
    mode: str = "RGB",
    max_pixels: Optional[int] = None,
    truncated: str = "error",
    num_threads: Optional[int] = None,
) -> list[tuple[Optional[npt.NDArray[Any]], Optional[npt.NDArray[np.uint8]], Optional[str]]]: ...
def add_restart_index(data: bytes) -> bytes: ...
def restart_index(data: bytes) -> Optional[tuple[int, list[int]]]: ...
def read_full_zip(
    fd: int,
    starts: npt.NDArray[np.uint64],
    ends: npt.NDArray[np.uint64],
    kinds: npt.NDArray[np.uint8],
    window: int,
) -> tuple[
    Optional[tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32], npt.NDArray[np.int64]]],
    Optional[tuple[int, str]],
]: ...
