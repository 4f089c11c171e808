"""albumentations 2.x pipelines, taken as they are.

An ``A.Compose`` (a bare op or container is wrapped in one) is split once: its longest
prefix of ops the core can do (:func:`fusable`: crops, resizes, pads, flips, rotations and
affine warps, brightness/contrast, colour jitter, hue/saturation/value, grey, blur,
dropout holes, ``Normalize``, ``ToTensorV2``) and the rest. Then, per sample, with
generators seeded from its (seed, epoch, position):

1. :meth:`AlbumentationsPlan.begin`: albumentations itself draws every parameter and
   moves the boxes, labels and mask geometry as it always does (its ``p`` draws, its
   containers, its box filters and format conversions), over an image that has the
   sample's shape but no pixels: the prefix's ops record what they would do to the
   pixels instead (:class:`Recorder`), kept in a :class:`Drawn`;
2. the core decodes the image (and mask) and does what was recorded, with OpenCV's
   arithmetic (``_core.cv_decode_batch``; pointwise maps as tables albumentations
   computed);
3. :meth:`Drawn.finish`: the rest runs as albumentations runs it, on the real pixels,
   then albumentations' postprocess.

So boxes, labels and masks are albumentations' own results, and pixels match
albumentations' for the same parameters (the README states the bounds the tests measure).
Nothing here imports albumentations until a Compose is given.

Example:
    >>> import albumentations as A  # doctest: +SKIP
    >>> plan = AlbumentationsPlan.of(A.Compose([A.RandomCrop(64, 64), A.CLAHE(p=1)]))  # doctest: +SKIP
    >>> plan.fused, [type(t).__name__ for t in plan.rest]  # doctest: +SKIP
    (1, ['CLAHE'])
"""

from __future__ import annotations

import copy
import inspect
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["AlbumentationsPlan", "Drawn", "OpFailed", "Recorder", "Sample", "fusable", "is_albumentations"]

Ops = List[Tuple[str, List[float]]]
# OpenCV's interpolations and border modes the core does (rust/cv/).
_INTERPOLATIONS = (0, 1)
_BORDERS = (0, 1, 2, 3, 4)


def is_albumentations(obj: Any) -> bool:
    """Whether ``obj`` is an albumentations transform or composition.

    Example:
        >>> is_albumentations(lambda x: x)
        False
    """
    return type(obj).__module__.split(".")[0] == "albumentations"


# -- which ops the core does ------------------------------------------------------------


def fusable(t: Any) -> Optional[str]:
    """None when the core can do ``t`` as albumentations does, else why not.

    Example:
        >>> import albumentations as A  # doctest: +SKIP
        >>> fusable(A.Resize(64, 64, interpolation=3))  # doctest: +SKIP
        'interpolation 3 (only nearest and linear are fused)'
    """
    import albumentations as A

    name = type(t).__name__
    if isinstance(t, (A.OneOf, A.SomeOf, A.Sequential)) and type(t) in (A.OneOf, A.SomeOf, A.Sequential):
        for child in t.transforms:
            why = fusable(child)
            if why is not None:
                return f"{name} holds {type(child).__name__}: {why}"
        return None
    if type(t) not in _translators():
        return f"{name} has no counterpart in the core"
    for attr in ("interpolation", "mask_interpolation"):
        if getattr(t, attr, 1) not in _INTERPOLATIONS:
            return f"{attr} {getattr(t, attr)} (only nearest and linear are fused)"
    if getattr(t, "border_mode", 0) not in _BORDERS:
        return f"border mode {t.border_mode}"
    if getattr(t, "area_for_downscale", None):
        return "area_for_downscale (INTER_AREA is not fused)"
    for attr in ("fill", "fill_mask"):
        if isinstance(getattr(t, attr, 0), str):
            return f"{attr}={getattr(t, attr)!r}"
    if isinstance(t, A.RandomBrightnessContrast) and not t.brightness_by_max:
        return "brightness_by_max=False reads the image's mean while drawing"
    if isinstance(t, A.Normalize) and t.normalization != "standard":
        return f"normalization={t.normalization!r} reads the image's statistics"
    if isinstance(t, A.ToGray) and t.method != "weighted_average":
        return f"method={t.method!r}"
    if isinstance(t, A.GaussianBlur) and "kernel" not in inspect.signature(type(t).apply).parameters:
        # Older albumentations blur with cv2.GaussianBlur's fixed-point kernels, not a drawn kernel.
        return "this albumentations' GaussianBlur calls cv2.GaussianBlur (later versions draw a kernel, which is fused)"
    return None


@dataclass
class Step:
    """What one op does to the pixels: core ops for the image and for the mask, the shape
    and dtype after it, and a Python step left for after the core (ToTensorV2)."""

    image: Ops = field(default_factory=list)
    mask: Ops = field(default_factory=list)
    shape: Tuple[int, ...] = ()
    dtype: Any = np.uint8
    post: bool = False


def _cv_value(value: Any, channels: int) -> List[float]:
    """A fill as OpenCV reads albumentations' ``borderValue``: a float for every channel
    (``extend_value``), a sequence as it is, any other number as Scalar(v, 0, 0, 0)."""
    if isinstance(value, float):
        return [value] * channels
    if isinstance(value, (int, np.integer)):
        return [float(value)] + [0.0] * (channels - 1)
    values = [float(v) for v in value]
    return (values + [0.0] * channels)[:channels]


def _resize(h: int, w: int, interp: int, shape: Tuple[int, ...]) -> Ops:
    return [] if (h, w) == tuple(shape[:2]) else [("resize", [h, w, interp])]


def _crop(coords: Sequence[int]) -> Ops:
    x0, y0, x1, y1 = (int(v) for v in coords)
    return [("crop", [x0, y0, x1, y1])]


def _ramp(channels: int) -> np.ndarray:
    return np.repeat(np.arange(256, dtype=np.uint8).reshape(1, 256, 1), channels, axis=2)


def _table(out: np.ndarray, channels: int) -> List[float]:
    """A (1, 256, C) result of a pointwise op on the ramp as 256 values per channel."""
    out = np.asarray(out).reshape(256, -1)
    if out.shape[1] == 1 and channels > 1:
        out = np.repeat(out, channels, axis=1)
    return out.T.reshape(-1).astype(np.float64).tolist()


def _geometric(t: Any, params: Dict[str, Any], shape: Tuple[int, ...]) -> Step:
    """Crops, resizes, pads, flips and warps: image and mask ops and the shape after."""
    import albumentations as A

    h, w = shape[:2]
    c = shape[2] if len(shape) == 3 else 1
    interp = getattr(t, "interpolation", 1)
    mask_interp = getattr(t, "mask_interpolation", 0)
    s = Step(shape=shape)
    if isinstance(t, A.Resize):
        s.image, s.mask, s.shape = _resize(t.height, t.width, interp, shape), _resize(t.height, t.width, mask_interp, shape), (t.height, t.width, c)
    elif isinstance(t, (A.LongestMaxSize, A.SmallestMaxSize)):
        scale = params["scale"]
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        s.image, s.mask, s.shape = _resize(nh, nw, interp, shape), _resize(nh, nw, mask_interp, shape), (nh, nw, c)
    elif isinstance(t, A.PadIfNeeded):
        pads = [params["pad_top"], params["pad_bottom"], params["pad_left"], params["pad_right"], t.border_mode]
        s.image = [("pad", pads + _cv_value(t.fill, c))]
        s.mask = [("pad", pads + _cv_value(t.fill_mask, 1))]
        s.shape = (h + pads[0] + pads[1], w + pads[2] + pads[3], c)
    elif isinstance(t, (A.RandomSizedBBoxSafeCrop, A.RandomResizedCrop)):
        size = (t.height, t.width) if isinstance(t, A.RandomSizedBBoxSafeCrop) else tuple(t.size)
        crop = _crop(params["crop_coords"])
        x0, y0, x1, y1 = params["crop_coords"]
        cropped = (y1 - y0, x1 - x0)
        s.image = crop + _resize(size[0], size[1], interp, cropped)
        s.mask = crop + _resize(size[0], size[1], mask_interp, cropped)
        s.shape = (size[0], size[1], c)
    elif isinstance(t, (A.RandomCrop, A.CenterCrop, A.BBoxSafeRandomCrop)):
        pad = params.get("pad_params")
        if pad is not None:
            pads = [pad["pad_top"], pad["pad_bottom"], pad["pad_left"], pad["pad_right"], t.border_mode]
            s.image.append(("pad", pads + _cv_value(t.fill, c)))
            s.mask.append(("pad", pads + _cv_value(t.fill_mask, 1)))
        s.image += _crop(params["crop_coords"])
        s.mask += _crop(params["crop_coords"])
        x0, y0, x1, y1 = params["crop_coords"]
        s.shape = (y1 - y0, x1 - x0, c)
    elif isinstance(t, (A.HorizontalFlip, A.VerticalFlip)):
        op = "hflip" if isinstance(t, A.HorizontalFlip) else "vflip"
        s.image, s.mask = [(op, [])], [(op, [])]
    elif isinstance(t, (A.Rotate, A.Affine)):
        matrix = np.asarray(params["matrix"], dtype=np.float64)
        out = params["output_shape"] if "output_shape" in params else shape[:2]
        oh, ow = int(np.round(out[0])), int(np.round(out[1]))
        if not np.allclose(matrix, np.eye(3, dtype=matrix.dtype)):  # albumentations' is_identity_matrix
            m = matrix[:2].reshape(-1).tolist()
            s.image = [("warp", m + [oh, ow, interp, t.border_mode] + _cv_value(t.fill, c))]
            s.mask = [("warp", m + [oh, ow, mask_interp, t.border_mode] + _cv_value(t.fill_mask, 1))]
        else:
            oh, ow = h, w
        s.shape = (oh, ow, c)
        if isinstance(t, A.Rotate) and t.crop_border:
            crop = _crop((params["x_min"], params["y_min"], params["x_max"], params["y_max"]))
            s.image, s.mask = s.image + crop, s.mask + crop
            s.shape = (params["y_max"] - params["y_min"], params["x_max"] - params["x_min"], c)
    return s


def _colour(t: Any, params: Dict[str, Any], shape: Tuple[int, ...]) -> Step:
    """Pixel-only ops: tables albumentations computes on a ramp, or the core's colour ops."""
    import albucore
    import albumentations as A

    c = shape[2] if len(shape) == 3 else 1
    s = Step(shape=shape)
    if isinstance(t, A.RandomBrightnessContrast):
        s.image = [("lut", _table(type(t).apply(t, _ramp(c), alpha=params["alpha"], beta=params["beta"]), c))]
    elif isinstance(t, A.ColorJitter):
        factors = [params["brightness"], params["contrast"], params["saturation"], params["hue"]]
        for i in params["order"]:
            f = factors[i]
            if i == 0 and f != 1:
                s.image.append(("lut", _table(t.transforms[0](_ramp(c), f), c)))
            elif i == 1 and f != 1:
                s.image.append(("contrast", [f]))
            elif i == 2 and f != 1 and c == 3:
                s.image.append(("saturation", [f]))
            elif i == 3 and f != 0 and c == 3:
                hue = np.mod(np.arange(0, 256, dtype=np.int16) + 180 * f, 180).astype(np.uint8)  # _adjust_hue_torchvision_uint8
                s.image.append(("hsv", hue.tolist() + list(range(256)) * 2 + [0]))
    elif isinstance(t, A.HueSaturationValue):
        hs, ss, vs = params["hue_shift"], params["sat_shift"], params["val_shift"]
        if (hs, ss, vs) != (0, 0, 0) and c == 3:  # fpixel.shift_hsv
            ramp = np.arange(256, dtype=np.uint8)
            hue = np.mod(np.arange(0, 256, dtype=np.int16) + hs, 180).astype(np.uint8) if hs != 0 else ramp
            sat = albucore.add_constant(ramp.copy(), ss, inplace=True) if ss != 0 else ramp
            val = albucore.add_constant(ramp.copy(), vs, inplace=True) if vs != 0 else ramp
            s.image = [("hsv", np.concatenate([hue, sat, val]).astype(np.float64).tolist() + [1])]
    elif isinstance(t, A.ToGray):
        if c == 3:
            s.image = [("gray", [t.num_output_channels])]
            s.shape = (shape[0], shape[1], t.num_output_channels)
    elif isinstance(t, A.GaussianBlur):
        s.image = [("blur", np.asarray(params["kernel"], dtype=np.float64).tolist())]
    elif isinstance(t, A.CoarseDropout):
        holes = np.asarray(params["holes"]).reshape(-1, 4)
        if len(holes):
            rects = [float(v) for v in holes.reshape(-1)]
            s.image = [("holes", [len(holes)] + rects + _fill_bytes(t.fill, c))]
            if t.fill_mask is not None:
                s.mask = [("holes", [len(holes)] + rects + _fill_bytes(t.fill_mask, 1))]
    elif isinstance(t, A.Normalize):
        s.image = [("normalize", _table(type(t).apply(t, _ramp(c)), c))]
        s.dtype = np.float32
    return s


def _fill_bytes(fill: Any, channels: int) -> List[float]:
    """``np.array(fill, dtype=uint8)`` per channel, as ``cutout`` casts it."""
    values = np.array(fill, dtype=np.uint8).reshape(-1)
    if values.size == 1:
        values = np.repeat(values, channels)
    return values.astype(np.float64).tolist()


def _to_tensor(t: Any, params: Dict[str, Any], shape: Tuple[int, ...]) -> Step:
    return Step(shape=shape, post=True)


def _translators() -> Dict[type, Callable[[Any, Dict[str, Any], Tuple[int, ...]], Step]]:
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    geometric = (A.Resize, A.LongestMaxSize, A.SmallestMaxSize, A.PadIfNeeded, A.RandomCrop, A.CenterCrop,
                 A.RandomResizedCrop, A.RandomSizedBBoxSafeCrop, A.BBoxSafeRandomCrop, A.HorizontalFlip,
                 A.VerticalFlip, A.Rotate, A.Affine, A.ShiftScaleRotate)
    colour = (A.RandomBrightnessContrast, A.ColorJitter, A.HueSaturationValue, A.ToGray, A.GaussianBlur,
              A.CoarseDropout, A.Normalize)
    table: Dict[type, Callable[..., Step]] = {cls: _geometric for cls in geometric}
    table.update({cls: _colour for cls in colour})
    table[ToTensorV2] = _to_tensor
    return table


# -- one sample's recording -------------------------------------------------------------


class Recorder:
    """What the fused ops of one sample would do, in order, and the stand-in images they
    hand on (zeros of the right shape, kept per shape: albumentations copies a
    non-contiguous array, so the stand-ins are real arrays, made once per copy).

    Example:
        >>> r = Recorder()
        >>> r.stand_in((2, 3, 3), np.uint8).shape
        (2, 3, 3)
    """

    def __init__(self) -> None:
        self.image: Ops = []
        self.mask: Ops = []
        self.post: List[Any] = []
        self._stand_ins: Dict[Tuple[Tuple[int, ...], Any], np.ndarray] = {}

    def reset(self) -> None:
        self.image, self.mask, self.post = [], [], []

    def stand_in(self, shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
        key = (tuple(int(v) for v in shape), np.dtype(dtype))
        if key not in self._stand_ins:
            if len(self._stand_ins) > 16:
                self._stand_ins.clear()
            self._stand_ins[key] = np.zeros(key[0], dtype=key[1])
        return self._stand_ins[key]


def _record(t: Any, translate: Callable[..., Step], recorder: Recorder) -> None:
    """Make ``t`` (a copy of the plan's own) record its image and mask work instead of doing it."""

    def image(img: np.ndarray, *args: Any, **params: Any) -> np.ndarray:
        step = translate(t, params, img.shape)
        recorder.image.extend(step.image)
        if step.post:
            recorder.post.append(t)
        return img if step.post else recorder.stand_in(step.shape, step.dtype)

    def mask(m: np.ndarray, *args: Any, **params: Any) -> np.ndarray:
        step = translate(t, params, m.shape + (1,) if m.ndim == 2 else m.shape)
        recorder.mask.extend(step.mask)
        return m if step.post else recorder.stand_in(step.shape[:2], np.uint8)

    t._key2func["image"] = image  # albumentations' map from a target to its function
    if "mask" in t._key2func:
        t._key2func["mask"] = mask


def _patch(t: Any, recorder: Recorder, table: Dict[type, Callable[..., Step]]) -> None:
    if type(t) in table:
        _record(t, table[type(t)], recorder)
    for child in getattr(t, "transforms", []) or []:
        _patch(child, recorder, table)


# -- the plan -----------------------------------------------------------------------------


class OpFailed(Exception):
    """An op of the rest raised: ``op`` names it, the op's exception is the cause.

    Example:
        >>> OpFailed("CLAHE").op
        'CLAHE'
    """

    def __init__(self, op: str) -> None:
        super().__init__(op)
        self.op = op


@dataclass
class Sample:
    """One sample's inputs: the image's shape, its boxes in the Compose's format with
    their index as a fifth column (albumentations carries extra columns with each box),
    and whether it has a mask."""

    shape: Tuple[int, int, int]
    boxes: Optional[np.ndarray] = None
    mask: bool = False


class AlbumentationsPlan:
    """A Compose split into the core's prefix and albumentations' rest, run per sample.

    ``fused``: how many top-level transforms the core does; ``rest``: the others, in order;
    ``box_format`` and ``label_fields``: the Compose's ``bbox_params`` (or pascal_voc and
    none when boxes are given to a Compose without them: one is added to the plan's
    copies, with ``min_area``/``min_visibility`` from the loader).

    Example:
        >>> import albumentations as A  # doctest: +SKIP
        >>> AlbumentationsPlan.of(A.HorizontalFlip(p=1)).fused  # doctest: +SKIP
        1
    """

    def __init__(self, compose: Any, fused: int, why: Optional[str]) -> None:
        self.compose = compose
        self.fused = fused
        self.why = why  # why the first of the rest is not fused
        self.rest = list(compose.transforms[fused:])
        bbox = compose.processors.get("bboxes")
        self.box_format: Optional[str] = bbox.params.format if bbox is not None else None
        self.label_fields: List[str] = list(bbox.params.label_fields or []) if bbox is not None else []
        if self.label_fields:
            # Each box's index rides as its fifth column and its values follow it, so the
            # copies carry no label fields: albumentations keeps them in per-call state
            # between preprocess and postprocess, which would pin a sample to one copy.
            compose = copy.deepcopy(compose)
            compose.processors["bboxes"].params.label_fields = []
            self.compose = compose
        self._free: List[Tuple[Any, Recorder]] = []
        self._lock = threading.Lock()
        self._boxed: Dict[Tuple[float, float], "AlbumentationsPlan"] = {}

    @classmethod
    def of(cls, transform: Any) -> "AlbumentationsPlan":
        """The plan of an ``A.Compose``, or of a bare op or container (wrapped in one)."""
        import albumentations as A

        compose = transform if isinstance(transform, A.Compose) else A.Compose([transform])
        fused, why = 0, None
        ts = compose.transforms
        for i, t in enumerate(ts):
            why = fusable(t)
            name, after = type(t).__name__, [type(n).__name__ for n in ts[i + 1:]]
            if why is None and name == "Normalize" and after[:1] not in ([], ["ToTensorV2"]):
                why = f"Normalize is followed by {after[0]} (the core's float image goes on to ToTensorV2 only)"
            if why is None and name == "ToTensorV2" and after:
                why = "ToTensorV2 is not the last op"
            if why is not None:
                break
            fused = i + 1
        return cls(compose, fused, why if fused < len(compose.transforms) else None)

    def with_boxes(self, min_area: float = 0.0, min_visibility: float = 0.0) -> "AlbumentationsPlan":
        """This plan, with ``bbox_params`` (pascal_voc, the given filters) when the Compose has none."""
        if self.box_format is not None:
            return self
        key = (float(min_area), float(min_visibility))
        with self._lock:
            if key not in self._boxed:  # made once: each plan keeps its Compose copies
                import albumentations as A

                c = self.compose
                compose = A.Compose(copy.deepcopy(list(c.transforms)), p=c.p, bbox_params=A.BboxParams(
                    format="pascal_voc", label_fields=[], min_area=key[0], min_visibility=key[1]))
                self._boxed[key] = AlbumentationsPlan(compose, self.fused, self.why)
            return self._boxed[key]

    @property
    def seed(self) -> Optional[int]:
        """The Compose's own ``seed=``, which the samples' generators take in too."""
        seed = getattr(self.compose, "seed", None)
        return None if seed is None else int(seed)

    @property
    def rest_names(self) -> List[str]:
        """The names of the ops albumentations runs on the real pixels."""
        return [type(t).__name__ for t in self.rest]

    @property
    def python_ops(self) -> List[str]:
        """Ops of the rest that may draw from the global generators (``A.Lambda``, a
        user's own op): their samples hold :data:`~lancefeed.transforms.seeding.GLOBAL_LOCK`."""
        out: List[str] = []

        def walk(t: Any) -> None:
            module = type(t).__module__.split(".")[0]
            if type(t).__name__ == "Lambda" or module != "albumentations":
                out.append(type(t).__name__)
            for child in getattr(t, "transforms", []) or []:
                walk(child)

        for t in self.rest:
            walk(t)
        return out

    def _take(self) -> Tuple[Any, Recorder]:
        """A copy of the Compose (albumentations' objects keep per-call state and random
        generators, so samples in flight cannot share one) and its recorder: copies are
        made as threads need them and handed back (:meth:`_give`) for the next samples,
        so a copy is made once per concurrent thread over the plan's life."""
        with self._lock:
            pair = self._free.pop() if self._free else None
        if pair is None:
            with self._lock:  # deepcopy reads the shared Compose
                c = copy.deepcopy(self.compose)
            recorder = Recorder()
            table = _translators()
            for t in c.transforms[: self.fused]:
                _patch(t, recorder, table)
            pair = (c, recorder)
        return pair

    def _give(self, pair: Tuple[Any, Recorder]) -> None:
        with self._lock:
            self._free.append(pair)

    def begin(self, sample: Sample, generators: Tuple[Any, Any]) -> "Drawn":
        """The first half of one sample (see the module): ``generators`` are its (numpy
        Generator, random.Random); albumentations draws the prefix's parameters and
        moves the targets. The :class:`Drawn` holds the core's ops for the pixels;
        :meth:`Drawn.finish` takes the real pixels and runs the rest."""
        c, recorder = pair = self._take()
        recorder.reset()
        c.set_random_state(*generators)
        h, w, ch = sample.shape
        data: Dict[str, Any] = {"image": recorder.stand_in((h, w, ch), np.uint8)}
        if sample.mask:
            data["mask"] = recorder.stand_in((h, w), np.uint8)
        if self.box_format is not None:
            # A Compose with bbox_params needs boxes (none where the rows have none).
            boxes = sample.boxes if sample.boxes is not None else np.zeros((0, 5), np.float32)
            data["bboxes"] = boxes
        # Compose.__call__, split where the rest begins.
        if getattr(c, "save_applied_params", False) and getattr(c, "main_compose", True):
            data["applied_transforms"] = []
        drawn = Drawn(self, generators, data, skipped=not c.py_random.random() < c.p)
        try:
            if not drawn.skipped:
                c.preprocess(data)
                for t in c.transforms[: self.fused]:
                    drawn.data = drawn.step(c, t, drawn.data)
            drawn.freeze(recorder)
        finally:
            # The sample's state is its generators (advanced by the prefix's draws) and
            # its dict: the rest may run on any copy, so one copy serves a thread.
            self._give(pair)
        return drawn


class Drawn:
    """One sample between its draws and its pixels: ``data`` (albumentations' dict, with
    stand-in pixels of the right shapes), the core's ops for the image and the mask,
    and the post steps (``ToTensorV2``) for after the core.

    Example:
        >>> import albumentations as A  # doctest: +SKIP
        >>> import random  # doctest: +SKIP
        >>> gens = (np.random.default_rng(0), random.Random(0))  # doctest: +SKIP
        >>> d = AlbumentationsPlan.of(A.HorizontalFlip(p=1)).begin(Sample((4, 6, 3)), gens)  # doctest: +SKIP
        >>> d.ops  # doctest: +SKIP
        [('hflip', [])]
    """

    def __init__(self, plan: AlbumentationsPlan, generators: Tuple[Any, Any], data: Dict[str, Any], skipped: bool) -> None:
        self.plan, self.generators, self.data, self.skipped = plan, generators, data, skipped
        self.ops: Ops = []
        self.mask_ops: Ops = []
        self.post: List[Any] = []

    @staticmethod
    def step(c: Any, t: Any, data: Dict[str, Any]) -> Dict[str, Any]:
        """One transform of Compose ``c`` on ``data``, as ``Compose.__call__`` runs it."""
        data = t(**data)
        if "applied_transforms" in data and getattr(t, "params", None):
            data["applied_transforms"].append((t.__class__.__name__, t.params.copy()))
        return c.check_data_post_transform(data)

    def freeze(self, recorder: Recorder) -> None:
        self.ops, self.mask_ops, self.post = list(recorder.image), list(recorder.mask), list(recorder.post)

    def finish(self, data: Dict[str, Any]) -> Dict[str, Any]:
        """``data`` with the real pixels through the rest and albumentations'
        postprocess, on a copy of the Compose given the sample's generators back."""
        if self.skipped:
            return data
        pair = self.plan._take()
        c = pair[0]
        try:
            c.set_random_state(*self.generators)
            for t in c.transforms[self.plan.fused :]:
                try:
                    data = self.step(c, t, data)
                except Exception as e:
                    raise OpFailed(type(t).__name__) from e
            return c.postprocess(data)
        finally:
            self.plan._give(pair)
