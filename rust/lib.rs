//! The Python module `lancefeed._core`: argument conversion and GIL release only.
//! Everything below this file knows nothing of Python. `codec`, `batch` and `plan`
//! are public for the fuzz targets (fuzz/) and for Rust callers.

mod arrow;
pub mod augment;
pub mod batch;
pub mod codec;
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
use pyo3::types::{PyBytes, PyCapsule, PyTuple};

use crate::batch::{BatchError, Config, Target};
use crate::codec::Channels;
use crate::plan::Op;

create_exception!(
    _core,
    DecodeError,
    PyValueError,
    "An image could not be decoded: corrupt, truncated, empty, not an image, over the pixel limit, or null. The message names the row."
);

create_exception!(
    _core,
    SizeMismatchError,
    PyValueError,
    "The rows of a batch come out at different sizes, and one array cannot hold them. The message names two of them and their sizes."
);

fn channels(mode: &str) -> PyResult<Channels> {
    match mode {
        "RGB" => Ok(Channels::Rgb),
        "L" => Ok(Channels::Gray),
        other => Err(PyValueError::new_err(format!("mode must be 'RGB' or 'L', got {other:?}"))),
    }
}

/// The transform's ops split into the leading ones the decode fuses and the steps
/// after them (`augment.rs`), each step with its index in the whole list.
fn split_ops(ops: &[(String, Vec<f64>)]) -> PyResult<(Vec<Op>, Vec<(usize, augment::Step)>)> {
    let mut fused = Vec::new();
    let mut steps = Vec::new();
    for (i, (name, args)) in ops.iter().enumerate() {
        if !augment::NAMES.contains(&name.as_str()) {
            return Err(PyValueError::new_err(format!("unknown transform op {name:?}")));
        }
        match Op::from_name(name, args).map_err(PyValueError::new_err)? {
            Some(op) if steps.is_empty() => fused.push(op),
            _ => steps.push((i, augment::Step { name: name.clone(), args: args.clone() })),
        }
    }
    Ok((fused, steps))
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

/// The engine behind `lancefeed.decode_batch` (see there): `images` is a list of
/// Arrow arrays (`arrow=True`) or of bytes/None.
#[pyfunction]
#[pyo3(signature = (images, *, arrow, ops, mode, num_threads, out, skip_errors, seed, epoch, positions, max_pixels, dct_scaling, decode_crop, order = None, truncated = "error", normalize = None, boxes = None, masks = None, mask_fill = 0, box_filter = (1.0, 1.0, 0.0), ragged = false, normalize_dtype = 0, normalize_out = None, pixel_cache = None))]
#[allow(clippy::too_many_arguments)]
fn decode_batch<'py>(
    py: Python<'py>,
    images: Vec<Bound<'py, PyAny>>,
    arrow: bool,
    ops: Vec<(String, Vec<f64>)>,
    mode: &str,
    num_threads: Option<usize>,
    out: Option<Bound<'py, PyArrayDyn<u8>>>,
    skip_errors: bool,
    seed: u64,
    epoch: u64,
    positions: Option<PyReadonlyArray1<'py, u64>>,
    max_pixels: Option<u64>,
    dct_scaling: bool,
    decode_crop: bool,
    order: Option<PyReadonlyArray1<'py, u64>>,
    truncated: &str,
    normalize: Option<(Vec<f32>, Vec<f32>, bool)>,
    boxes: Option<(PyReadonlyArray1<'py, f64>, PyReadonlyArray1<'py, i64>)>,
    masks: Option<Vec<Bound<'py, PyAny>>>,
    mask_fill: u8,
    box_filter: (f64, f64, f64),
    ragged: bool,
    normalize_dtype: u8,
    normalize_out: Option<Bound<'py, PyAny>>,
    pixel_cache: Option<PyRef<'py, PixelCache>>,
) -> PyResult<BatchResult<'py>> {
    let float = ops::output::Float::from_code(normalize_dtype).map_err(PyValueError::new_err)?;
    let ch = channels(mode)?;
    let pixel_cache = match pixel_cache {
        Some(c) if c.inner.channels != ch => {
            return Err(PyValueError::new_err(format!("pixel_cache holds {} images; this batch is mode {mode:?}", c.mode())))
        }
        Some(_) if positions.is_none() => return Err(PyValueError::new_err("pixel_cache needs positions= (its keys)")),
        Some(_) if boxes.is_some() || masks.is_some() || ragged => {
            return Err(PyValueError::new_err("pixel_cache does not go with boxes, masks or ragged batches"))
        }
        Some(c) => Some(Arc::clone(&c.inner)),
        None => None,
    };
    let pad = pad_truncated(truncated)?;
    if let Some((scale, shift, _)) = &normalize {
        if scale.len() != ch.count() || shift.len() != ch.count() || out.is_some() {
            return Err(PyValueError::new_err(format!(
                "normalize needs one scale and one shift per channel ({}) and no out=, got {} and {}",
                ch.count(),
                scale.len(),
                shift.len()
            )));
        }
    }
    let (ops, steps) = split_ops(&ops)?;

    // Borrow every blob where it lives; the capsules and bytes stay alive below.
    let capsules = arrow_capsules(&images, arrow)?;
    // One Arrow array and an order (a gather from a cache of rows, say): only the rows
    // picked are looked at.
    // (A few chunks too: the loader's cache keeps its side-by-side scans as they came.)
    let picked = arrow && !capsules.is_empty() && masks.is_none() && boxes.is_none();
    let mut blobs = match (&order, picked) {
        (Some(order), true) => blobs_picked(&capsules, order.as_slice()?)?,
        _ => blobs_of(&images, &capsules, arrow, "images")?,
    };
    let mask_capsules = match &masks {
        Some(m) => arrow_capsules(m, arrow)?,
        None => Vec::new(),
    };
    let mut mask_blobs = match &masks {
        Some(m) => Some(blobs_of(m, &mask_capsules, arrow, "masks")?),
        None => None,
    };
    if let Some(m) = &mask_blobs {
        if m.len() != blobs.len() {
            return Err(PyValueError::new_err(format!("masks has {} rows for {} images", m.len(), blobs.len())));
        }
    }
    let box_values = match &boxes {
        Some((values, _)) => Some(values.as_slice()?),
        None => None,
    };
    let mut row_boxes: Option<Vec<&[[f64; 4]]>> = match (&boxes, box_values) {
        (Some((_, offsets)), Some(values)) => Some(split_boxes(values, offsets.as_slice()?, blobs.len())?),
        _ => None,
    };

    // Output row i decodes input row order[i]: a sorted take is gathered here, by
    // pointer, instead of having its bytes reordered first.
    if let Some(order) = &order {
        let order = order.as_slice()?;
        if !picked {
            blobs = gather(&blobs, order)?;
        }
        if let Some(m) = &mask_blobs {
            mask_blobs = Some(gather(m, order)?);
        }
        if let Some(b) = &row_boxes {
            row_boxes = Some(gather(b, order)?);
        }
    }

    let positions: Vec<u64> = match &positions {
        Some(p) => {
            let p = p.as_slice()?.to_vec();
            if p.len() != blobs.len() {
                return Err(PyValueError::new_err(format!("positions has {} entries for {} images", p.len(), blobs.len())));
            }
            p
        }
        None => (0..blobs.len() as u64).collect(),
    };
    let cfg = Config {
        ops,
        steps,
        channels: ch,
        seed,
        epoch,
        max_pixels: default_max_pixels(max_pixels),
        skip_errors,
        dct_scaling,
        decode_crop,
        pad_truncated: pad,
        threads: num_threads.unwrap_or_else(pool::default_threads).max(1),
        pixel_cache,
    };

    let mut out_rw = match &out {
        Some(o) => Some(o.try_readwrite().map_err(|e| PyValueError::new_err(format!("out is not writable: {e}")))?),
        None => None,
    };
    let target = match (&out, &mut out_rw) {
        (Some(o), Some(rw)) => {
            let shape = o.shape().to_vec();
            if shape.len() != 4 {
                return Err(PyValueError::new_err(format!("out must be 4-D (N, H, W, C), got shape {shape:?}")));
            }
            let buf = rw.as_slice_mut().map_err(|_| PyValueError::new_err("out must be C-contiguous"))?;
            Target::Caller { buf, rows: shape[0], height: shape[1] as u32, width: shape[2] as u32, channels: shape[3] }
        }
        _ => Target::Owned,
    };

    let with_targets = row_boxes.is_some() || mask_blobs.is_some() || ragged;
    if with_targets && (out.is_some() || normalize.is_some()) {
        return Err(PyValueError::new_err("out= and normalize= do not go with boxes, masks or ragged batches"));
    }
    let (min_area, min_size, min_visibility) = box_filter;
    let row_targets = batch::RowTargets {
        boxes: row_boxes,
        masks: mask_blobs,
        mask_fill,
        filter: ops::targets::Filter { min_area, min_size, min_visibility },
    };
    let result = py.detach(|| {
        if with_targets {
            batch::decode_targets(&blobs, &positions, &cfg, &row_targets, ragged)
        } else {
            batch::decode_batch(&blobs, &positions, &cfg, target)
        }
    });
    let outcome = result.map_err(|e| match e {
        BatchError::Row { row, message } => DecodeError::new_err(format!("row {row}: {message}")),
        BatchError::Sizes(message) => SizeMismatchError::new_err(message),
        BatchError::Invalid(message) => PyValueError::new_err(message),
    })?;
    drop(out_rw);

    let n = outcome.kept.len();
    let (h, w, c) = (outcome.height as usize, outcome.width as usize, ch.count());
    if with_targets {
        let pixels = PyArray1::from_vec(py, outcome.pixels.unwrap_or_default()).into_any();
        let shapes: Vec<u32> = outcome.shapes.iter().flat_map(|&(h, w)| [h, w]).collect();
        let counts: Vec<i64> = outcome.target_boxes.iter().map(|b| b.len() as i64).collect();
        let tboxes = PyArray1::from_vec(py, outcome.target_boxes.concat().concat()).reshape([counts.iter().sum::<i64>() as usize, 4])?;
        let index = PyArray1::from_vec(py, outcome.box_index.concat().iter().map(|&k| k as i64).collect());
        let masks = outcome.masks.map(|m| PyArray1::from_vec(py, m));
        let extra = (PyArray1::from_vec(py, shapes), tboxes, PyArray1::from_vec(py, counts), index, masks);
        let kept = PyArray1::from_vec(py, outcome.kept.iter().map(|&r| r as i64).collect());
        let boxes = PyArray1::from_vec(py, outcome.boxes.concat()).reshape([n, 4])?;
        let flips = PyArray1::from_vec(py, outcome.flips);
        let vflips = PyArray1::from_vec(py, outcome.vflips);
        return Ok((Some(pixels), kept, outcome.errors, boxes, flips, vflips, outcome.applied, Some(extra)));
    }
    let pixels = match (outcome.pixels, normalize) {
        (Some(v), Some((scale, shift, channels_last))) => {
            let shape = if channels_last { [n, h, w, c] } else { [n, c, h, w] };
            Some(normalized(py, &v, h * w, (&scale, &shift), channels_last, float, normalize_out, shape, cfg.threads)?)
        }
        (Some(v), None) => Some(PyArray1::from_vec(py, v).reshape([n, h, w, c])?.to_dyn().clone().into_any()),
        (None, _) => None,
    };
    let kept = PyArray1::from_vec(py, outcome.kept.iter().map(|&r| r as i64).collect());
    let boxes = PyArray1::from_vec(py, outcome.boxes.concat()).reshape([n, 4])?;
    let flips = PyArray1::from_vec(py, outcome.flips);
    let vflips = PyArray1::from_vec(py, outcome.vflips);
    Ok((pixels, kept, outcome.errors, boxes, flips, vflips, outcome.applied, None))
}

/// The normalised batch: float32, or float16/bfloat16 bits as uint16, in `out` (its
/// first rows; a C-contiguous array of that type holding at least `shape`) or new.
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
    use ops::output::{bf16_bits, f16_bits, normalize_into, Float};
    let len = shape.iter().product::<usize>();
    let planar = !channels_last;
    let run = |f: &mut (dyn FnMut() + Send)| -> PyResult<()> {
        let pool = pool::get(threads).map_err(PyValueError::new_err)?;
        pool.install(f);
        Ok(())
    };
    let wrong = |what: &str| PyValueError::new_err(format!("normalize out= must be a C-contiguous {what} array of at least {len} values"));
    match (float, out) {
        (Float::F32, Some(o)) => {
            let arr = o.cast::<PyArrayDyn<f32>>().map_err(|_| wrong("float32"))?;
            let mut rw = arr.try_readwrite().map_err(|e| PyValueError::new_err(format!("normalize out= is not writable: {e}")))?;
            let buf = rw.as_slice_mut().map_err(|_| wrong("float32"))?;
            let buf = buf.get_mut(..len).ok_or_else(|| wrong("float32"))?;
            py.detach(|| run(&mut || normalize_into(v, hw, scale, shift, planar, buf, |x| x)))?;
            drop(rw);
            Ok(arr.call_method1("reshape", (-1,))?.get_item(pyo3::types::PySlice::new(py, 0, len as isize, 1))?.call_method1("reshape", (shape.to_vec(),))?)
        }
        (Float::F32, None) => {
            let mut out = vec![0f32; len];
            py.detach(|| run(&mut || normalize_into(v, hw, scale, shift, planar, &mut out, |x| x)))?;
            Ok(PyArray1::from_vec(py, out).reshape(shape)?.to_dyn().clone().into_any())
        }
        (half, o) => {
            let store: fn(f32) -> u16 = if half == Float::F16 { f16_bits } else { bf16_bits };
            match o {
                Some(o) => {
                    let arr = o.cast::<PyArrayDyn<u16>>().map_err(|_| wrong("uint16"))?;
                    let mut rw = arr.try_readwrite().map_err(|e| PyValueError::new_err(format!("normalize out= is not writable: {e}")))?;
                    let buf = rw.as_slice_mut().map_err(|_| wrong("uint16"))?;
                    let buf = buf.get_mut(..len).ok_or_else(|| wrong("uint16"))?;
                    py.detach(|| run(&mut || normalize_into(v, hw, scale, shift, planar, buf, store)))?;
                    drop(rw);
                    Ok(arr.call_method1("reshape", (-1,))?.get_item(pyo3::types::PySlice::new(py, 0, len as isize, 1))?.call_method1("reshape", (shape.to_vec(),))?)
                }
                None => {
                    let mut out = vec![0u16; len];
                    py.detach(|| run(&mut || normalize_into(v, hw, scale, shift, planar, &mut out, store)))?;
                    Ok(PyArray1::from_vec(py, out).reshape(shape)?.to_dyn().clone().into_any())
                }
            }
        }
    }
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

/// The blobs of rows `order[i]` of the arrays' rows end to end (a chunked array's), in
/// that order; only the rows picked are looked at.
fn blobs_picked<'a>(capsules: &'a [(Bound<'_, PyAny>, Bound<'_, PyAny>)], order: &[u64]) -> PyResult<Vec<Option<&'a [u8]>>> {
    let arrow_error = |e: String| if e.starts_with("order holds") { PyIndexError::new_err(e) } else { PyTypeError::new_err(e) };
    let ptrs = capsules
        .iter()
        .map(|(s, a)| Ok((capsule_ptr(s, c"arrow_schema")?, capsule_ptr(a, c"arrow_array")?)))
        .collect::<PyResult<Vec<_>>>()?;
    if let [(s, a)] = ptrs[..] {
        let mut blobs = Vec::new();
        unsafe { arrow::binary_values(s, a, &mut blobs, Some(order)) }.map_err(arrow_error)?;
        return Ok(blobs);
    }
    // starts[c]: the first row of chunk c, counted over all chunks.
    let mut starts = Vec::with_capacity(ptrs.len());
    let mut total = 0u64;
    for &(_, a) in &ptrs {
        starts.push(total);
        total += unsafe { arrow::array_length(a) }.map_err(PyTypeError::new_err)? as u64;
    }
    // Each chunk's rows picked (its own indices) and the output rows they go to.
    let mut picks: Vec<(Vec<u64>, Vec<usize>)> = vec![(Vec::new(), Vec::new()); ptrs.len()];
    for (k, &j) in order.iter().enumerate() {
        if j >= total {
            return Err(PyIndexError::new_err(format!("order holds {j}, out of range for {total} images")));
        }
        let c = starts.partition_point(|&s| s <= j) - 1;
        picks[c].0.push(j - starts[c]);
        picks[c].1.push(k);
    }
    let mut blobs = vec![None; order.len()];
    let mut got = Vec::new();
    for (&(s, a), (rows, to)) in ptrs.iter().zip(&picks) {
        if rows.is_empty() {
            continue;
        }
        got.clear();
        unsafe { arrow::binary_values(s, a, &mut got, Some(rows)) }.map_err(arrow_error)?;
        for (&k, &blob) in to.iter().zip(&got) {
            blobs[k] = blob;
        }
    }
    Ok(blobs)
}

/// `items[order[i]]` for each i.
fn gather<T: Copy>(items: &[T], order: &[u64]) -> PyResult<Vec<T>> {
    let picked: Option<Vec<T>> = order.iter().map(|&j| items.get(j as usize).copied()).collect();
    picked.ok_or_else(|| {
        let bad = order.iter().find(|&&j| j as usize >= items.len()).copied().unwrap_or_default();
        PyIndexError::new_err(format!("order holds {bad}, out of range for {} images", items.len()))
    })
}

/// Row i's boxes are `values[offsets[i]..offsets[i + 1]]`, (n, 4) flattened.
fn split_boxes<'a>(values: &'a [f64], offsets: &[i64], rows: usize) -> PyResult<Vec<&'a [[f64; 4]]>> {
    if offsets.len() != rows + 1 || values.len() % 4 != 0 {
        return Err(PyValueError::new_err(format!("boxes need {} offsets and 4 values a box, got {} and {}", rows + 1, offsets.len(), values.len())));
    }
    let (quads, rest) = values.as_chunks::<4>();
    debug_assert!(rest.is_empty());
    offsets
        .windows(2)
        .map(|w| {
            let (a, b) = (w[0] as usize, w[1] as usize);
            quads.get(a..b).ok_or_else(|| PyValueError::new_err(format!("box offsets {a}..{b} are out of range for {} boxes", quads.len())))
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
    m.add_function(wrap_pyfunction!(decode_batch, m)?)?;
    m.add_function(wrap_pyfunction!(random_uniforms, m)?)?;
    m.add_function(wrap_pyfunction!(apply_op, m)?)?;
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
