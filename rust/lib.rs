//! The Python module `lancefeed._core`: argument conversion and GIL release only.
//! Everything below this file knows nothing of Python. `codec`, `batch` and `plan`
//! are public for the fuzz targets (fuzz/) and for Rust callers.

mod arrow;
pub mod augment;
pub mod batch;
pub mod codec;
pub mod cv;
pub mod fullzip;
mod malloc;
pub mod ops;
pub mod pixels;
pub mod plan;
mod pool;
mod resize;
mod rng;

use std::ffi::CStr;
use std::sync::Arc;

use numpy::{PyArray1, PyArray2, PyArrayDyn, PyArrayMethods, PyReadonlyArray1, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyIndexError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyCapsule, PyTuple};

use crate::batch::{gather, BatchError, Config, Target};
use crate::codec::Channels;
use crate::plan::Op;

create_exception!(
    _core,
    DecodeError,
    PyValueError,
    "An image could not be decoded: corrupt, truncated, empty, not an image, over the pixel limit, or null. The message names the row.\n\nExample:\n    >>> import lancefeed\n    >>> try:\n    ...     lancefeed.decode_image(b\"not an image\")\n    ... except lancefeed.DecodeError as e:\n    ...     print(type(e).__name__)\n    DecodeError"
);

create_exception!(
    _core,
    SizeMismatchError,
    PyValueError,
    "The rows of a batch come out at different sizes, and one array cannot hold them. The message names two of them and their sizes.\n\nExample:\n    >>> import io, lancefeed\n    >>> from PIL import Image\n    >>> def png(w, h):\n    ...     buf = io.BytesIO(); Image.new(\"RGB\", (w, h)).save(buf, \"PNG\"); return buf.getvalue()\n    >>> try:\n    ...     lancefeed.decode_batch([png(8, 8), png(8, 9)])\n    ... except lancefeed.SizeMismatchError as e:\n    ...     print(type(e).__name__)\n    SizeMismatchError"
);

fn channels(mode: &str) -> PyResult<Channels> {
    match mode {
        "RGB" => Ok(Channels::Rgb),
        "L" => Ok(Channels::Gray),
        other => Err(PyValueError::new_err(format!("mode must be 'RGB' or 'L', got {other:?}"))),
    }
}

/// `ops` as the core runs them: the first `fused` through the decode (`plan::Op`), the
/// rest as steps after it (`augment`), each step with its index in the whole list.
fn core_ops(ops: &[(String, Vec<f64>)], fused: usize) -> PyResult<(Vec<Op>, Vec<(usize, augment::Step)>)> {
    let mut plan = Vec::new();
    let mut steps = Vec::new();
    for (i, (name, args)) in ops.iter().enumerate() {
        if !augment::NAMES.contains(&name.as_str()) {
            return Err(PyValueError::new_err(format!("unknown transform op {name:?}")));
        }
        match Op::from_name(name, args).map_err(PyValueError::new_err)? {
            Some(op) if i < fused => plan.push(op),
            None if i < fused => return Err(PyValueError::new_err(format!("op {i} ({name:?}) is not one the decode fuses"))),
            _ => steps.push((i, augment::Step { name: name.clone(), args: args.clone() })),
        }
    }
    Ok((plan, steps))
}

/// How many leading ops of `ops` the decode fuses (the rest run after it): decided here,
/// once per transform plan (`lancefeed.transforms.TransformPlan`).
#[pyfunction]
fn fused_prefix(ops: Vec<(String, Vec<f64>)>) -> PyResult<usize> {
    let mut n = 0;
    for (name, args) in &ops {
        if !augment::NAMES.contains(&name.as_str()) {
            return Err(PyValueError::new_err(format!("unknown transform op {name:?}")));
        }
        if Op::from_name(name, args).map_err(PyValueError::new_err)?.is_none() {
            break;
        }
        n += 1;
    }
    Ok(n)
}

fn default_max_pixels(max_pixels: Option<u64>) -> u64 {
    // Pillow's DecompressionBombError threshold: twice Image.MAX_IMAGE_PIXELS.
    max_pixels.unwrap_or(2 * 89_478_485)
}

fn pad_truncated(truncated: &str) -> PyResult<bool> {
    match truncated {
        "error" => Ok(false),
        "pad" => Ok(true),
        other => Err(PyValueError::new_err(format!("truncated must be 'error' or 'pad', got {other:?}"))),
    }
}

/// Decodes one encoded image (JPEG, PNG or WebP) to an (H, W, 3) or (H, W, 1) uint8 array.
///
/// Example:
///     >>> import io, lancefeed
///     >>> from PIL import Image
///     >>> buf = io.BytesIO(); Image.new("RGB", (5, 4), "red").save(buf, "PNG")
///     >>> lancefeed.decode_image(buf.getvalue()).shape, lancefeed.decode_image(buf.getvalue(), mode="L").shape
///     ((4, 5, 3), (4, 5, 1))
#[pyfunction]
#[pyo3(signature = (data, *, mode = "RGB", max_pixels = None, truncated = "error"))]
fn decode_image<'py>(py: Python<'py>, data: &[u8], mode: &str, max_pixels: Option<u64>, truncated: &str) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
    let ch = channels(mode)?;
    let max = default_max_pixels(max_pixels);
    let pad = pad_truncated(truncated)?;
    let (header, pixels) = py.detach(|| codec::decode_full(data, ch, max, pad)).map_err(|e| DecodeError::new_err(e.0))?;
    let shape = [header.height as usize, header.width as usize, ch.count()];
    Ok(PyArray1::from_vec(py, pixels).reshape(shape)?.to_dyn().clone())
}

/// Reads only the header: (width, height, format) with format "jpeg", "png" or "webp".
///
/// Example:
///     >>> import io, lancefeed
///     >>> from PIL import Image
///     >>> buf = io.BytesIO(); Image.new("RGB", (640, 480)).save(buf, "JPEG")
///     >>> lancefeed.image_info(buf.getvalue())
///     (640, 480, 'jpeg')
#[pyfunction]
fn image_info(data: &[u8]) -> PyResult<(u32, u32, &'static str)> {
    let h = codec::read_header(data).map_err(|e| DecodeError::new_err(e.0))?;
    Ok((h.width, h.height, h.format.name()))
}

/// Applies one image op (see `rust/ops/`) to an (H, W, C) uint8 array, C = 1 or 3,
/// and returns the result: the fused transforms' pixel code, callable on its own for
/// tests and for users who replay a sample's augmentation.
#[pyfunction]
fn apply_op<'py>(py: Python<'py>, image: PyReadonlyArrayDyn<'py, u8>, name: &str, params: Vec<f64>) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
    let mut img = image_in(&image)?;
    py.detach(|| ops::apply(name, &params, &mut img)).map_err(PyValueError::new_err)?;
    image_out(py, img)
}

/// An (H, W, C) uint8 array as an `ops::Image` (one copy, in bulk where it is contiguous).
fn image_in(image: &PyReadonlyArrayDyn<'_, u8>) -> PyResult<ops::Image> {
    let shape = image.shape().to_vec();
    if shape.len() != 3 {
        return Err(PyValueError::new_err(format!("image must be (H, W, C), got shape {shape:?}")));
    }
    let data = match image.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => image.as_array().iter().copied().collect(),
    };
    ops::Image::from_vec(data, shape[1], shape[0], shape[2]).map_err(PyValueError::new_err)
}

fn image_out<'py>(py: Python<'py>, img: ops::Image) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
    let shape = [img.height, img.width, img.channels];
    Ok(PyArray1::from_vec(py, img.data).reshape(shape)?.to_dyn().clone())
}

/// Runs transform ops (as `decode_batch` takes them) on one (H, W, C) uint8 image with
/// the draws of sample `position`, the first op being op `first_op` of its transform:
/// what the fused pipeline does after the decode, for ops that follow a Python one.
#[pyfunction]
#[pyo3(signature = (image, ops, *, seed, epoch, position, first_op))]
fn run_ops<'py>(
    py: Python<'py>,
    image: PyReadonlyArrayDyn<'py, u8>,
    ops: Vec<(String, Vec<f64>)>,
    seed: u64,
    epoch: u64,
    position: u64,
    first_op: usize,
) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
    let mut img = image_in(&image)?;
    for (name, _) in &ops {
        if !augment::NAMES.contains(&name.as_str()) {
            return Err(PyValueError::new_err(format!("unknown transform op {name:?}")));
        }
    }
    let steps: Vec<(usize, augment::Step)> =
        ops.into_iter().enumerate().map(|(k, (name, args))| (first_op + k, augment::Step { name, args })).collect();
    py.detach(|| augment::run(&steps, &mut img, |op| rng::Stream::new(seed, epoch, position, op as u64), &mut Vec::new(), None))
        .map_err(PyValueError::new_err)?;
    image_out(py, img)
}

/// The uniform draws in [0, 1) that transform `op` of a sample gets; for tests and for
/// users who replay the sampling.
#[pyfunction]
#[pyo3(signature = (seed, epoch, position, op, n))]
fn random_uniforms(seed: u64, epoch: u64, position: u64, op: u64, n: usize) -> Vec<f64> {
    let mut s = rng::Stream::new(seed, epoch, position, op);
    (0..n).map(|_| s.uniform()).collect()
}

/// The number of threads `num_threads=None` means: the machine's cores.
#[pyfunction]
fn default_num_threads() -> usize {
    pool::default_threads()
}

/// Which JPEG Huffman decoder this process runs: "x86-64-v3+tables" (lancefeed's table
/// path, chosen on CPUs that have AVX2, BMI2, LZCNT and the rest of that level),
/// "x86-64-v3" (libjpeg-turbo's, built for that level) or "portable" (libjpeg-turbo's).
/// `select` switches for the decodes started after it (benchmarks compare them).
///
/// >>> lancefeed._core.huffman_decoder() in ("x86-64-v3+tables", "portable")
/// True
#[pyfunction]
#[pyo3(signature = (select = None))]
fn huffman_decoder(select: Option<&str>) -> PyResult<&'static str> {
    codec::huffman_decoder(select).map_err(PyValueError::new_err)
}

/// Whether this build resets a thread's TurboJPEG decompressor between images (True:
/// lancefeed's C next to the vendored libjpeg-turbo was built) or makes a new one per
/// image (False: as exact, slower). Either way no state passes from one image to the next.
#[pyfunction]
fn jpeg_handles_reset() -> bool {
    codec::jpeg::resets_handles()
}

/// Makes glibc keep freed buffers for reuse: allocations up to `mmap_threshold` bytes
/// come from its arenas and up to `trim_threshold` freed bytes stay mapped. False where
/// the C library is not glibc or refused the values (see `lancefeed.memory`).
#[pyfunction]
#[pyo3(signature = (mmap_threshold, trim_threshold))]
fn keep_freed_memory(mmap_threshold: usize, trim_threshold: usize) -> bool {
    malloc::keep_freed_memory(mmap_threshold, trim_threshold)
}

fn capsule_ptr<T>(obj: &Bound<'_, PyAny>, name: &CStr) -> PyResult<*const T> {
    let capsule = obj.cast::<PyCapsule>().map_err(|_| PyTypeError::new_err("__arrow_c_array__ did not return capsules"))?;
    Ok(capsule.pointer_checked(Some(name))?.as_ptr() as *const T)
}

type BatchResult<'py> = (
    Option<Bound<'py, PyAny>>,
    Bound<'py, PyArray1<i64>>,
    Vec<(usize, String)>,
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray1<bool>>,
    Bound<'py, PyArray1<bool>>,
    Vec<Vec<(String, Vec<f64>)>>,
    Option<TargetResult<'py>>,
);

/// With targets: row shapes (h, w pairs), boxes (k, 4), boxes per row, their input
/// indices, masks (flat).
type TargetResult<'py> = (
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Option<Bound<'py, PyArray1<u8>>>,
);

/// One `decode` call's options: `lancefeed.decode.CoreCall`, read field by field (the
/// same struct on both sides of the binding).
#[derive(FromPyObject)]
struct CoreCall<'py> {
    #[pyo3(attribute)]
    arrow: bool,
    #[pyo3(attribute)]
    ops: Vec<(String, Vec<f64>)>,
    #[pyo3(attribute)]
    fused: usize,
    #[pyo3(attribute)]
    mode: String,
    #[pyo3(attribute)]
    num_threads: Option<usize>,
    #[pyo3(attribute)]
    out: Option<Bound<'py, PyArrayDyn<u8>>>,
    #[pyo3(attribute)]
    skip_errors: bool,
    #[pyo3(attribute)]
    seed: u64,
    #[pyo3(attribute)]
    epoch: u64,
    #[pyo3(attribute)]
    positions: Option<PyReadonlyArray1<'py, u64>>,
    #[pyo3(attribute)]
    max_pixels: Option<u64>,
    #[pyo3(attribute)]
    dct_scaling: bool,
    #[pyo3(attribute)]
    decode_crop: bool,
    #[pyo3(attribute)]
    order: Option<PyReadonlyArray1<'py, u64>>,
    #[pyo3(attribute)]
    truncated: String,
    #[pyo3(attribute)]
    normalize: Option<(Vec<f32>, Vec<f32>, bool)>,
    #[pyo3(attribute)]
    normalize_dtype: u8,
    #[pyo3(attribute)]
    normalize_out: Option<Bound<'py, PyAny>>,
    #[pyo3(attribute)]
    boxes: Option<(PyReadonlyArray1<'py, f64>, PyReadonlyArray1<'py, i64>)>,
    #[pyo3(attribute)]
    masks: Option<Vec<Bound<'py, PyAny>>>,
    #[pyo3(attribute)]
    mask_fill: u8,
    #[pyo3(attribute)]
    box_filter: (f64, f64, f64),
    #[pyo3(attribute)]
    ragged: bool,
    #[pyo3(attribute)]
    pixel_cache: Option<Bound<'py, PixelCache>>,
}

/// The engine behind `lancefeed.decode_batch` and `decode_targets` (see there):
/// `images` is a list of Arrow arrays (`call.arrow`) or of bytes/None.
#[pyfunction]
fn decode<'py>(py: Python<'py>, images: Vec<Bound<'py, PyAny>>, call: CoreCall<'py>) -> PyResult<BatchResult<'py>> {
    let ch = channels(&call.mode)?;
    let cfg = config_of(&call, ch)?;
    let with_targets = call.boxes.is_some() || call.masks.is_some() || call.ragged;
    if with_targets && (call.out.is_some() || call.normalize.is_some()) {
        return Err(PyValueError::new_err("out= and normalize= do not go with boxes, masks or ragged batches"));
    }
    if let Some((scale, shift, _)) = &call.normalize {
        if scale.len() != ch.count() || shift.len() != ch.count() || call.out.is_some() {
            let (a, b) = (scale.len(), shift.len());
            return Err(PyValueError::new_err(format!("normalize needs one scale and one shift per channel ({}) and no out=, got {a} and {b}", ch.count())));
        }
    }
    // Borrow every blob where it lives; the capsules and bytes stay alive below.
    let capsules = arrow_capsules(&images, call.arrow)?;
    let order = match &call.order {
        Some(o) => Some(o.as_slice()?),
        None => None,
    };
    // One Arrow array (or a few chunks) and an order: only the rows picked are looked at.
    let picked = call.arrow && !capsules.is_empty() && !with_targets;
    // Output row i decodes input row order[i]: gathered by pointer, never copied.
    let (blobs, inputs) = if let (Some(order), true) = (order, picked) {
        (blobs_picked(&capsules, order)?, 0)
    } else {
        let all = blobs_of(&images, &capsules, call.arrow, "images")?;
        let inputs = all.len();
        (if let Some(order) = order { gathered(all, order)? } else { all }, inputs)
    };
    let positions: Vec<u64> = match &call.positions {
        Some(p) => p.as_slice()?.to_vec(),
        None => (0..blobs.len() as u64).collect(),
    };
    if positions.len() != blobs.len() {
        return Err(PyValueError::new_err(format!("positions has {} entries for {} images", positions.len(), blobs.len())));
    }
    let mask_capsules = match &call.masks {
        Some(m) => arrow_capsules(m, call.arrow)?,
        None => Vec::new(),
    };
    let result = if with_targets {
        let targets = row_targets(&call, &mask_capsules, inputs, order)?;
        py.detach(|| batch::decode_targets(&blobs, &positions, &cfg, &targets, call.ragged))
    } else {
        let mut out_rw = match &call.out {
            Some(o) => Some(o.try_readwrite().map_err(|e| PyValueError::new_err(format!("out is not writable: {e}")))?),
            None => None,
        };
        let target = caller_target(call.out.as_ref(), out_rw.as_mut())?;
        py.detach(|| batch::decode_batch(&blobs, &positions, &cfg, target))
    };
    let outcome = result.map_err(|e| match e {
        BatchError::Row { row, message } => DecodeError::new_err(format!("row {row}: {message}")),
        BatchError::Sizes(message) => SizeMismatchError::new_err(message),
        BatchError::Invalid(message) => PyValueError::new_err(message),
    })?;
    outcome_to_py(py, outcome, &call, ch, cfg.threads, with_targets)
}

/// The decode's `batch::Config` from a call's options.
fn config_of(call: &CoreCall<'_>, ch: Channels) -> PyResult<Config> {
    let pixel_cache = match &call.pixel_cache {
        Some(c) if c.get().inner.channels != ch => {
            return Err(PyValueError::new_err(format!("pixel_cache holds {} images; this batch is mode {:?}", c.get().mode(), call.mode)))
        }
        Some(_) if call.positions.is_none() => return Err(PyValueError::new_err("pixel_cache needs positions= (its keys)")),
        Some(_) if call.boxes.is_some() || call.masks.is_some() || call.ragged => {
            return Err(PyValueError::new_err("pixel_cache does not go with boxes, masks or ragged batches"))
        }
        Some(c) => Some(Arc::clone(&c.get().inner)),
        None => None,
    };
    let (ops, steps) = core_ops(&call.ops, call.fused)?;
    Ok(Config {
        ops,
        steps,
        channels: ch,
        seed: call.seed,
        epoch: call.epoch,
        max_pixels: default_max_pixels(call.max_pixels),
        skip_errors: call.skip_errors,
        dct_scaling: call.dct_scaling,
        decode_crop: call.decode_crop,
        pad_truncated: pad_truncated(&call.truncated)?,
        threads: call.num_threads.unwrap_or_else(pool::default_threads).max(1),
        pixel_cache,
    })
}

/// A call's boxes and masks for its `inputs` input rows, after `order`.
fn row_targets<'a>(
    call: &'a CoreCall<'_>,
    mask_capsules: &'a [(Bound<'_, PyAny>, Bound<'_, PyAny>)],
    inputs: usize,
    order: Option<&[u64]>,
) -> PyResult<batch::RowTargets<'a>> {
    let picked = |rows: Vec<_>| match order {
        Some(o) => gather::gather(&rows, o).map_err(PyIndexError::new_err),
        None => Ok(rows),
    };
    let masks = match &call.masks {
        Some(m) => {
            let all = blobs_of(m, mask_capsules, call.arrow, "masks")?;
            if all.len() != inputs {
                return Err(PyValueError::new_err(format!("masks has {} rows for {inputs} images", all.len())));
            }
            Some(picked(all)?)
        }
        None => None,
    };
    let boxes = match &call.boxes {
        Some((values, offsets)) => {
            let rows = gather::split_boxes(values.as_slice()?, offsets.as_slice()?, inputs).map_err(PyValueError::new_err)?;
            Some(match order {
                Some(o) => gather::gather(&rows, o).map_err(PyIndexError::new_err)?,
                None => rows,
            })
        }
        None => None,
    };
    let (min_area, min_size, min_visibility) = call.box_filter;
    Ok(batch::RowTargets { boxes, masks, mask_fill: call.mask_fill, filter: ops::targets::Filter { min_area, min_size, min_visibility } })
}

/// The caller's `out=` array as the batch's target, or a new buffer.
fn caller_target<'a>(out: Option<&Bound<'_, PyArrayDyn<u8>>>, rw: Option<&'a mut numpy::PyReadwriteArrayDyn<'_, u8>>) -> PyResult<Target<'a>> {
    let (Some(o), Some(rw)) = (out, rw) else { return Ok(Target::Owned) };
    let shape = o.shape().to_vec();
    if shape.len() != 4 {
        return Err(PyValueError::new_err(format!("out must be 4-D (N, H, W, C), got shape {shape:?}")));
    }
    let buf = rw.as_slice_mut().map_err(|_| PyValueError::new_err("out must be C-contiguous"))?;
    Ok(Target::Caller { buf, rows: shape[0], height: shape[1] as u32, width: shape[2] as u32, channels: shape[3] })
}

/// The decode's outcome as the Python layer takes it (see `BatchResult`).
fn outcome_to_py<'py>(py: Python<'py>, outcome: batch::Outcome, call: &CoreCall<'py>, ch: Channels, threads: usize, with_targets: bool) -> PyResult<BatchResult<'py>> {
    let n = outcome.kept.len();
    let (h, w, c) = (outcome.height as usize, outcome.width as usize, ch.count());
    let kept = PyArray1::from_vec(py, outcome.kept.iter().map(|&r| r as i64).collect());
    let boxes = PyArray1::from_vec(py, outcome.boxes.concat()).reshape([n, 4])?;
    let flips = PyArray1::from_vec(py, outcome.flips);
    let vflips = PyArray1::from_vec(py, outcome.vflips);
    if with_targets {
        let pixels = PyArray1::from_vec(py, outcome.pixels.unwrap_or_default()).into_any();
        let shapes: Vec<u32> = outcome.shapes.iter().flat_map(|&(h, w)| [h, w]).collect();
        let counts: Vec<i64> = outcome.target_boxes.iter().map(|b| b.len() as i64).collect();
        let tboxes = PyArray1::from_vec(py, outcome.target_boxes.concat().concat()).reshape([counts.iter().sum::<i64>() as usize, 4])?;
        let index = PyArray1::from_vec(py, outcome.box_index.concat().iter().map(|&k| k as i64).collect());
        let masks = outcome.masks.map(|m| PyArray1::from_vec(py, m));
        let extra = (PyArray1::from_vec(py, shapes), tboxes, PyArray1::from_vec(py, counts), index, masks);
        return Ok((Some(pixels), kept, outcome.errors, boxes, flips, vflips, outcome.applied, Some(extra)));
    }
    let float = ops::output::Float::from_code(call.normalize_dtype).map_err(PyValueError::new_err)?;
    let pixels = match (outcome.pixels, &call.normalize) {
        (Some(v), Some((scale, shift, channels_last))) => {
            let shape = if *channels_last { [n, h, w, c] } else { [n, c, h, w] };
            Some(normalized(py, &v, h * w, (scale, shift), *channels_last, float, call.normalize_out.clone(), shape, threads)?)
        }
        (Some(v), None) => Some(PyArray1::from_vec(py, v).reshape([n, h, w, c])?.to_dyn().clone().into_any()),
        (None, _) => None,
    };
    Ok((pixels, kept, outcome.errors, boxes, flips, vflips, outcome.applied, None))
}

/// The normalised batch: float32, or float16/bfloat16 bits as uint16, in `out` (its
/// first values; a C-contiguous array of that type holding at least `shape`) or new.
#[allow(clippy::too_many_arguments)]
fn normalized<'py>(
    py: Python<'py>,
    v: &[u8],
    hw: usize,
    (scale, shift): (&[f32], &[f32]),
    channels_last: bool,
    float: ops::output::Float,
    out: Option<Bound<'py, PyAny>>,
    shape: [usize; 4],
    threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    use ops::output::{normalize_batch, Float, FloatOut};
    let len = shape.iter().product::<usize>();
    let planar = !channels_last;
    let run = |dst: FloatOut| py.detach(|| normalize_batch(v, hw, scale, shift, planar, threads, dst)).map_err(PyValueError::new_err);
    let Some(o) = out else {
        return Ok(if float == Float::F32 {
            let mut buf = vec![0f32; len];
            run(FloatOut::F32(&mut buf))?;
            PyArray1::from_vec(py, buf).reshape(shape)?.to_dyn().clone().into_any()
        } else {
            let mut buf = vec![0u16; len];
            run(FloatOut::Bits(&mut buf, float))?;
            PyArray1::from_vec(py, buf).reshape(shape)?.to_dyn().clone().into_any()
        });
    };
    let what = if float == Float::F32 { "float32" } else { "uint16" };
    let wrong = || PyValueError::new_err(format!("normalize out= must be a C-contiguous {what} array of at least {len} values"));
    let unwritable = |e| PyValueError::new_err(format!("normalize out= is not writable: {e}"));
    if float == Float::F32 {
        let arr = o.cast::<PyArrayDyn<f32>>().map_err(|_| wrong())?;
        let mut rw = arr.try_readwrite().map_err(unwritable)?;
        run(FloatOut::F32(rw.as_slice_mut().map_err(|_| wrong())?.get_mut(..len).ok_or_else(wrong)?))?;
    } else {
        let arr = o.cast::<PyArrayDyn<u16>>().map_err(|_| wrong())?;
        let mut rw = arr.try_readwrite().map_err(unwritable)?;
        run(FloatOut::Bits(rw.as_slice_mut().map_err(|_| wrong())?.get_mut(..len).ok_or_else(wrong)?, float))?;
    }
    Ok(o.call_method1("reshape", (-1,))?.get_item(pyo3::types::PySlice::new(py, 0, len as isize, 1))?.call_method1("reshape", (shape.to_vec(),))?)
}

/// The C Data Interface capsules of each Arrow array in `items` (none for bytes).
fn arrow_capsules<'py>(items: &[Bound<'py, PyAny>], arrow: bool) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    let mut capsules = Vec::new();
    if arrow {
        for chunk in items {
            let pair = chunk.call_method0("__arrow_c_array__")?;
            let pair = pair.cast::<PyTuple>().map_err(|_| PyTypeError::new_err("__arrow_c_array__ must return a tuple"))?;
            capsules.push((pair.get_item(0)?, pair.get_item(1)?));
        }
    }
    Ok(capsules)
}

/// Every blob of `items` (Arrow arrays through `capsules`, or bytes/None), borrowed
/// where it lives.
fn blobs_of<'a>(items: &'a [Bound<'_, PyAny>], capsules: &'a [(Bound<'_, PyAny>, Bound<'_, PyAny>)], arrow: bool, what: &str) -> PyResult<Vec<Option<&'a [u8]>>> {
    let mut blobs: Vec<Option<&[u8]>> = Vec::new();
    if arrow {
        for (schema, array) in capsules {
            let (s, a) = (capsule_ptr(schema, c"arrow_schema")?, capsule_ptr(array, c"arrow_array")?);
            unsafe { arrow::binary_values(s, a, &mut blobs, None) }.map_err(PyTypeError::new_err)?;
        }
    } else {
        for item in items {
            if item.is_none() {
                blobs.push(None);
            } else {
                let bytes = item.cast::<PyBytes>().map_err(|_| {
                    PyTypeError::new_err(format!("{what} must hold bytes, got {}", item.get_type().name().map(|n| n.to_string()).unwrap_or_default()))
                })?;
                blobs.push(Some(bytes.as_bytes()));
            }
        }
    }
    Ok(blobs)
}

/// `blobs[order[i]]` for each i; an index out of range is an `IndexError`.
fn gathered<'a>(blobs: Vec<Option<&'a [u8]>>, order: &[u64]) -> PyResult<Vec<Option<&'a [u8]>>> {
    gather::gather(&blobs, order).map_err(PyIndexError::new_err)
}

/// The blobs of rows `order[i]` of the capsules' arrays end to end (`arrow::pick`).
fn blobs_picked<'a>(capsules: &'a [(Bound<'_, PyAny>, Bound<'_, PyAny>)], order: &[u64]) -> PyResult<Vec<Option<&'a [u8]>>> {
    let ptrs = capsules
        .iter()
        .map(|(s, a)| Ok((capsule_ptr(s, c"arrow_schema")?, capsule_ptr(a, c"arrow_array")?)))
        .collect::<PyResult<Vec<_>>>()?;
    unsafe { arrow::pick(&ptrs, order) }.map_err(|e| match e {
        arrow::PickError::OutOfRange(m) => PyIndexError::new_err(m),
        arrow::PickError::Other(m) => PyTypeError::new_err(m),
    })
}

fn cv_ops(ops: &[(String, Vec<f64>)]) -> PyResult<Vec<cv::Op>> {
    ops.iter().map(|(name, p)| cv::parse(name, p).map_err(PyValueError::new_err)).collect()
}

fn cv_out<'py>(py: Python<'py>, out: cv::Output) -> PyResult<Bound<'py, PyAny>> {
    Ok(match out {
        cv::Output::U8(img) => PyArray1::from_vec(py, img.data).reshape([img.h, img.w, img.c])?.into_any(),
        cv::Output::F32 { h, w, c, data } => PyArray1::from_vec(py, data).reshape([h, w, c])?.into_any(),
    })
}

/// Runs ops with OpenCV's semantics (`rust/cv/`: what albumentations' transforms do once
/// their parameters are drawn) on an (H, W, C) uint8 array; uint8 out, or float32 after
/// a `normalize` op. Each op is `(name, numbers)`, as `lancefeed.transforms.albumentations`
/// makes them.
///
/// Example:
///     >>> import numpy as np, lancefeed._core as core
///     >>> img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
///     >>> core.cv_run(img, [("crop", [1.0, 0.0, 3.0, 2.0]), ("hflip", [])])[0, 0].tolist()
///     [6, 7, 8]
#[pyfunction]
fn cv_run<'py>(py: Python<'py>, image: PyReadonlyArrayDyn<'py, u8>, ops: Vec<(String, Vec<f64>)>) -> PyResult<Bound<'py, PyAny>> {
    let img = image_in(&image)?;
    let img = cv::Img { h: img.height, w: img.width, c: img.channels, data: img.data };
    let ops = cv_ops(&ops)?;
    let out = py.detach(|| cv::run(img, &ops)).map_err(PyValueError::new_err)?;
    cv_out(py, out)
}

/// Decodes one image (and its label mask: a PNG's stored values, another format as gray)
/// and runs `ops` on the image and
/// `mask_ops` on the mask (see `cv_run`), with the GIL released throughout. Returns
/// (image, mask or None); a bad image is a `DecodeError`.
///
/// Example:
///     >>> import io, lancefeed._core as core
///     >>> from PIL import Image
///     >>> buf = io.BytesIO(); Image.new("RGB", (8, 6), "red").save(buf, "PNG")
///     >>> image, mask = core.cv_decode(buf.getvalue(), [("resize", [3.0, 4.0, 1.0])])
///     >>> image.shape, mask
///     ((3, 4, 3), None)
#[pyfunction]
#[pyo3(signature = (data, ops, *, mask = None, mask_ops = Vec::new(), mode = "RGB", max_pixels = None, truncated = "error"))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn cv_decode<'py>(
    py: Python<'py>,
    data: &[u8],
    ops: Vec<(String, Vec<f64>)>,
    mask: Option<&[u8]>,
    mask_ops: Vec<(String, Vec<f64>)>,
    mode: &str,
    max_pixels: Option<u64>,
    truncated: &str,
) -> PyResult<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)> {
    let ch = channels(mode)?;
    let (max, pad) = (default_max_pixels(max_pixels), pad_truncated(truncated)?);
    let (ops, mask_ops) = (cv_ops(&ops)?, cv_ops(&mask_ops)?);
    let (image, mask) = py.detach(|| (cv::decode_run(data, ch, max, pad, &ops), mask.map(|m| cv::decode_mask_run(m, max, &mask_ops))));
    let failure = |e: cv::Failure, what: &str| match e {
        cv::Failure::Decode(m) => DecodeError::new_err(format!("{what}{m}")),
        cv::Failure::Op(m) => PyValueError::new_err(m),
    };
    let image = image.map_err(|e| failure(e, ""))?;
    let mask = match mask {
        None => None,
        Some(m) => Some(cv_out(py, m.map_err(|e| failure(e, "mask: "))?)?),
    };
    Ok((cv_out(py, image)?, mask))
}

/// `cv_decode` over a batch on lancefeed's decode threads, the GIL released once: each
/// item is `(data, ops, mask or None, mask_ops)`. Returns, per item, `(image, mask,
/// None)` or `(None, None, reason)` where its image (or, the reason starting "mask: ",
/// its mask) did not decode; an op that refuses its parameters raises.
///
/// Example:
///     >>> import io, lancefeed._core as core
///     >>> from PIL import Image
///     >>> buf = io.BytesIO(); Image.new("RGB", (8, 6), "red").save(buf, "PNG")
///     >>> out = core.cv_decode_batch([(buf.getvalue(), [("hflip", [])], None, []), (b"junk", [], None, [])])
///     >>> out[0][0].shape, out[1][2][:14]
///     ((6, 8, 3), 'unknown image ')
#[pyfunction]
#[pyo3(signature = (items, *, mode = "RGB", max_pixels = None, truncated = "error", num_threads = None))]
#[allow(clippy::type_complexity)]
fn cv_decode_batch<'py>(
    py: Python<'py>,
    items: Vec<(PyBackedBytes, Vec<(String, Vec<f64>)>, Option<PyBackedBytes>, Vec<(String, Vec<f64>)>)>,
    mode: &str,
    max_pixels: Option<u64>,
    truncated: &str,
    num_threads: Option<usize>,
) -> PyResult<Vec<(Option<Bound<'py, PyAny>>, Option<Bound<'py, PyAny>>, Option<String>)>> {
    let ch = channels(mode)?;
    let (max, pad) = (default_max_pixels(max_pixels), pad_truncated(truncated)?);
    let threads = num_threads.unwrap_or_else(pool::default_threads);
    let mut samples = Vec::with_capacity(items.len());
    for (image, ops, mask, mask_ops) in &items {
        // The Python bytes themselves, not copies: they live as long as `items`.
        samples.push(cv::Sample { image, ops: cv_ops(ops)?, mask: mask.as_deref(), mask_ops: cv_ops(mask_ops)? });
    }
    let results = py.detach(|| cv::decode_batch(&samples, ch, max, pad, threads)).map_err(PyValueError::new_err)?;
    results
        .into_iter()
        .map(|r| match r {
            Ok((image, mask)) => Ok((Some(cv_out(py, image)?), mask.map(|m| cv_out(py, m)).transpose()?, None)),
            Err((cv::Failure::Decode(m), is_mask)) => Ok((None, None, Some(if is_mask { format!("mask: {m}") } else { m }))),
            Err((cv::Failure::Op(m), _)) => Err(PyValueError::new_err(m)),
        })
        .collect()
}

/// Whole decoded images kept between batches, keyed by row position.
///
/// ``PixelCache(rows, max_bytes, mode="RGB")`` holds up to ``max_bytes`` of pixels for
/// positions 0 to ``rows - 1``. Handed to ``decode_batch(pixel_cache=...,
/// positions=...)``, a row already held is cropped and resized from its pixels with no
/// decode; a row not held is decoded whole and kept while the budget has room. The
/// pixels come out as with ``decode_crop=False`` either way. ``cached`` and ``nbytes``
/// say what it holds; it is filled once per row and never changes, so share one only
/// between calls on the same rows and mode. ``DataLoader(pixel_cache=...)`` makes one.
///
/// Example:
///     >>> import io, numpy as np, lancefeed
///     >>> from PIL import Image
///     >>> buf = io.BytesIO(); Image.new("RGB", (32, 32), "red").save(buf, "JPEG")
///     >>> cache = lancefeed.PixelCache(rows=4, max_bytes=1 << 20)
///     >>> batch = lancefeed.decode_batch([buf.getvalue()] * 4, transform=lancefeed.RandomResizedCrop(24),
///     ...                                positions=np.arange(4), pixel_cache=cache)
///     >>> batch.shape, cache.cached, cache.nbytes
///     ((4, 24, 24, 3), 4, 12288)
#[pyclass(module = "lancefeed._core", frozen)]
struct PixelCache {
    inner: Arc<pixels::PixelCache>,
}

#[pymethods]
impl PixelCache {
    #[new]
    #[pyo3(signature = (rows, max_bytes, mode = "RGB"))]
    fn new(rows: usize, max_bytes: usize, mode: &str) -> PyResult<Self> {
        Ok(PixelCache { inner: Arc::new(pixels::PixelCache::new(rows, channels(mode)?, max_bytes)) })
    }

    /// Positions it can hold (0 to rows - 1).
    #[getter]
    fn rows(&self) -> usize {
        self.inner.rows()
    }

    #[getter]
    fn max_bytes(&self) -> usize {
        self.inner.max_bytes()
    }

    #[getter]
    fn mode(&self) -> &'static str {
        if self.inner.channels == Channels::Gray {
            "L"
        } else {
            "RGB"
        }
    }

    /// Pixel bytes held.
    #[getter]
    fn nbytes(&self) -> usize {
        self.inner.bytes()
    }

    /// Rows held.
    #[getter]
    fn cached(&self) -> usize {
        self.inner.filled()
    }

    fn __len__(&self) -> usize {
        self.inner.filled()
    }

    fn __repr__(&self) -> String {
        format!(
            "PixelCache(rows={}, cached={}, nbytes={}, max_bytes={}, mode={:?})",
            self.inner.rows(),
            self.inner.filled(),
            self.inner.bytes(),
            self.inner.max_bytes(),
            self.mode()
        )
    }
}

/// `fullzip::read_values` for `lancefeed.reads.inplace`: the entries at `starts[i]..ends[i]`
/// of the file open at `fd` (ascending), stored as `kinds[i]` says. Returns the bytes read,
/// each value's binary view over them ((n, 4) int32, buffers every `window` bytes) and
/// the entries only Lance can read (stored compressed), and None; or, for an entry that disagrees
/// with its layout, (None, (its index, why)). An I/O error is an `OSError`.
#[pyfunction]
fn read_full_zip<'py>(
    py: Python<'py>,
    fd: i32,
    starts: PyReadonlyArray1<'py, u64>,
    ends: PyReadonlyArray1<'py, u64>,
    kinds: PyReadonlyArray1<'py, u8>,
    window: usize,
) -> PyResult<(Option<FullZipValues<'py>>, Option<(usize, String)>)> {
    let (starts, ends, kinds) = (starts.as_slice()?, ends.as_slice()?, kinds.as_slice()?);
    if starts.len() != ends.len() {
        return Err(PyValueError::new_err(format!("{} starts for {} ends", starts.len(), ends.len())));
    }
    let spans: Vec<(u64, u64)> = starts.iter().copied().zip(ends.iter().copied()).collect();
    let read = py.detach(|| fullzip::read_values(fd, &spans, kinds)).map_err(|e| PyOSError::new_err(e.to_string()))?;
    let values = match read {
        Ok(v) => v,
        Err(misread) => return Ok((None, Some(misread))),
    };
    let views = fullzip::binary_views(&values.buf, &values.values, window)
        .ok_or_else(|| PyValueError::new_err(format!("values do not fit binary views of {window}-byte windows")))?;
    let lance: Vec<i64> = values.values.iter().enumerate().filter(|(_, v)| v.is_none()).map(|(i, _)| i as i64).collect();
    let n = views.len();
    let values = (PyArray1::from_vec(py, values.buf), PyArray1::from_vec(py, views.concat()).reshape([n, 4])?, PyArray1::from_vec(py, lance));
    Ok((Some(values), None))
}

/// The bytes read, each value's view over them, the entries only Lance can read.
type FullZipValues<'py> = (Bound<'py, PyArray1<u8>>, Bound<'py, PyArray2<i32>>, Bound<'py, PyArray1<i64>>);

/// `data` (a JPEG) rewritten losslessly with a restart marker after every MCU and an index
/// of the intervals (see `codec::restart`); a `DecodeError` for what cannot be.
#[pyfunction]
fn add_restart_index<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let out = py.detach(|| codec::restart::add_restart_index(data)).map_err(|e| DecodeError::new_err(e.0))?;
    Ok(PyBytes::new(py, &out))
}

/// (pixel rows per MCU row, byte offset of each MCU row) of a restart-indexed JPEG, or None.
#[pyfunction]
fn restart_index(data: &[u8]) -> Option<(u32, Vec<u32>)> {
    codec::restart::read_index(data).map(|i| (i.interval_rows, i.offsets))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DecodeError", m.py().get_type::<DecodeError>())?;
    m.add("SizeMismatchError", m.py().get_type::<SizeMismatchError>())?;
    m.add_class::<PixelCache>()?;
    m.add_function(wrap_pyfunction!(decode_image, m)?)?;
    m.add_function(wrap_pyfunction!(image_info, m)?)?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_function(wrap_pyfunction!(fused_prefix, m)?)?;
    m.add_function(wrap_pyfunction!(random_uniforms, m)?)?;
    m.add_function(wrap_pyfunction!(apply_op, m)?)?;
    m.add_function(wrap_pyfunction!(cv_run, m)?)?;
    m.add_function(wrap_pyfunction!(cv_decode, m)?)?;
    m.add_function(wrap_pyfunction!(cv_decode_batch, m)?)?;
    m.add_function(wrap_pyfunction!(run_ops, m)?)?;
    m.add_function(wrap_pyfunction!(default_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(huffman_decoder, m)?)?;
    m.add_function(wrap_pyfunction!(keep_freed_memory, m)?)?;
    m.add_function(wrap_pyfunction!(jpeg_handles_reset, m)?)?;
    m.add_function(wrap_pyfunction!(add_restart_index, m)?)?;
    m.add_function(wrap_pyfunction!(restart_index, m)?)?;
    m.add_function(wrap_pyfunction!(read_full_zip, m)?)?;
    Ok(())
}
