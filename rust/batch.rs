//! Many encoded blobs -> one contiguous NHWC uint8 buffer, decoded in parallel, each
//! image straight into its slot, with per-row errors.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use std::cmp::Reverse;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::augment::{self, Applied, Step};
use crate::codec::{self, Channels, Format, Header, Rect, Request};
use crate::ops::targets::{Filter, Targets};
use crate::ops::Image;
use crate::pixels::PixelCache;
use crate::plan::{self, Op, Plan};
use crate::pool;
use crate::resize;
use crate::rng::Stream;

pub struct Config {
    /// The leading geometric ops, fused into the decode.
    pub ops: Vec<Op>,
    /// The transforms after them, run on each decoded image, with their index in the
    /// whole transform (which keys their draws).
    pub steps: Vec<(usize, Step)>,
    pub channels: Channels,
    pub seed: u64,
    pub epoch: u64,
    pub max_pixels: u64,
    pub skip_errors: bool,
    pub dct_scaling: bool,
    pub decode_crop: bool,
    /// Decode what a truncated image holds instead of failing (see `Request`).
    pub pad_truncated: bool,
    pub threads: usize,
    /// Whole decoded images kept by row position (`positions` are its keys): a row in
    /// it is cropped and resized from its pixels; a row not in it is decoded whole and
    /// kept. Rows come out as with `decode_crop: false`, cached or not.
    pub pixel_cache: Option<Arc<PixelCache>>,
}

impl Config {
    fn cached(&self, position: u64) -> Option<&crate::pixels::Entry> {
        self.pixel_cache.as_ref()?.get(position)
    }
}

#[derive(Debug, PartialEq)]
pub enum BatchError {
    /// A row could not be decoded (and errors are not skipped).
    Row { row: usize, message: String },
    /// Kept rows come out at different sizes, which one array cannot hold.
    Sizes(String),
    /// The batch as a whole is not possible (`out` has the wrong shape, ...).
    Invalid(String),
}

/// Where the pixels go: a caller's buffer of `rows` slots of `height` x `width`, or a
/// new buffer sized by the batch.
pub enum Target<'a> {
    Caller { buf: &'a mut [u8], rows: usize, height: u32, width: u32, channels: usize },
    Owned,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub kept: Vec<usize>,
    pub errors: Vec<(usize, String)>,
    /// (top, left, height, width) of each kept row's crop, in source pixels.
    pub boxes: Vec<[f32; 4]>,
    pub flips: Vec<bool>,
    /// Vertical flips fused into the decode.
    pub vflips: Vec<bool>,
    /// What the transforms after the fused part did to each kept row.
    pub applied: Vec<Vec<Applied>>,
    pub height: u32,
    pub width: u32,
    /// The pixels when the target was `Owned`.
    pub pixels: Option<Vec<u8>>,
    /// (height, width) of each kept row, when rows may differ (`decode_targets`).
    pub shapes: Vec<(u32, u32)>,
    /// Each kept row's boxes (x0, y0, x1, y1 in output pixels) after the filter, and
    /// their indices among the row's input boxes.
    pub target_boxes: Vec<Vec<[f32; 4]>>,
    pub box_index: Vec<Vec<u32>>,
    /// Each kept row's mask (its image's height x width), one after the other.
    pub masks: Option<Vec<u8>>,
}

/// Per-row targets that follow the images: boxes (x0, y0, x1, y1 in source pixels)
/// and label masks (encoded, one per row), after `order`.
pub struct RowTargets<'a> {
    pub boxes: Option<Vec<&'a [[f64; 4]]>>,
    pub masks: Option<Vec<Option<&'a [u8]>>>,
    pub mask_fill: u8,
    pub filter: Filter,
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

struct Job<'a> {
    row: usize,
    blob: &'a [u8],
    header: Header,
    plan: Plan,
    position: u64,
}

/// A row's fused decode and what the steps after it did.
type RowResult = Result<(Plan, Vec<Applied>), String>;

fn plan_row(blob: Option<&[u8]>, position: u64, cfg: &Config) -> Result<(Header, Plan), String> {
    let blob = blob.ok_or("null value (no image bytes)")?;
    // A cached row's header is the one its blob gave when it was cached.
    let header = match cfg.cached(position) {
        Some(entry) => entry.header,
        None => codec::read_header(blob).map_err(|e| e.0)?,
    };
    codec::check_pixels(&header, cfg.max_pixels).map_err(|e| e.0)?;
    let p = plan::plan(&cfg.ops, header.width, header.height, |op| {
        Stream::new(cfg.seed, cfg.epoch, position, op as u64)
    });
    Ok((header, p))
}

/// Integer destination span of `[a, b]` inside the box `[lo, lo + len]` shown at `size` pixels.
fn dest_span(a: f64, b: f64, lo: f64, len: f64, size: u32) -> (u32, u32) {
    let f = size as f64 / len;
    let s = ((a - lo) * f).round().clamp(0.0, size as f64) as u32;
    let e = ((b - lo) * f).round().clamp(0.0, size as f64) as u32;
    (s, e.max(s))
}

fn decode_row(job: &Job, cfg: &Config, slot: &mut [u8]) -> Result<(), String> {
    let ch = cfg.channels.count();
    let (p, h) = (&job.plan, &job.header);
    let (ow, oh) = (p.out_width, p.out_height);
    let wanted = Rect { x0: p.left, y0: p.top, x1: p.left + p.width, y1: p.top + p.height };
    let clip = Rect {
        x0: wanted.x0.max(0.0),
        y0: wanted.y0.max(0.0),
        x1: wanted.x1.min(h.width as f64),
        y1: wanted.y1.min(h.height as f64),
    };
    let padded = clip != wanted;
    let (dx0, dx1) = if padded { dest_span(clip.x0, clip.x1, wanted.x0, wanted.width(), ow) } else { (0, ow) };
    let (dy0, dy1) = if padded { dest_span(clip.y0, clip.y1, wanted.y0, wanted.height(), oh) } else { (0, oh) };
    let (dw, dh) = (dx1 - dx0, dy1 - dy0);
    if clip.width() <= 0.0 || clip.height() <= 0.0 || dw == 0 || dh == 0 {
        slot.fill(0);
        return Ok(());
    }

    let full = clip == Rect::full(h.width, h.height);
    let req = Request {
        region: clip,
        min_width: dw,
        min_height: dh,
        dct_scaling: cfg.dct_scaling,
        crop: cfg.decode_crop && cfg.pixel_cache.is_none(),
        channels: cfg.channels,
        pad_truncated: cfg.pad_truncated,
    };
    // Into the slot, or into a part of it when the crop reaches past the image. Returns
    // whether the resize also mirrored the slot (the plan's flip, done in its pass).
    let place = |src: &[u8], decoded: &codec::Decoded, slot: &mut [u8]| -> Result<bool, String> {
        let src_box = decoded.map(&clip);
        if !padded {
            return resize::crop_resize_mirrored(src, decoded, &src_box, ch, slot, (ow, oh), p.flip);
        }
        let mut part = vec![0u8; dw as usize * dh as usize * ch];
        resize::crop_resize(src, decoded, &src_box, ch, &mut part, dw, dh)?;
        slot.fill(0);
        let (row, prow) = (ow as usize * ch, dw as usize * ch);
        for (y, line) in part.chunks_exact(prow).enumerate() {
            let at = (dy0 as usize + y) * row + dx0 as usize * ch;
            slot[at..at + prow].copy_from_slice(line);
        }
        Ok(false)
    };
    // The pixel cache stands in for a whole decode at full scale; a row whose crop a
    // JPEG would decode at a smaller DCT scale is decoded as without the cache.
    let cache = cfg.pixel_cache.as_ref().filter(|_| codec::full_scale(h, &req));
    let entry = cfg.cached(job.position);
    let fresh;
    let h = match entry {
        // A cached header is detached from the decoder: a decode reads the blob's again.
        Some(_) if cache.is_none() => {
            fresh = codec::read_header(job.blob).map_err(|e| e.0)?;
            &fresh
        }
        _ => h,
    };
    let mirrored = if let Some(cache) = cache {
        let whole = Request { region: Rect::full(h.width, h.height), min_width: h.width, min_height: h.height, dct_scaling: false, crop: false, ..req };
        let kept;
        let pixels: &[u8] = match entry {
            Some(entry) => &entry.pixels,
            None => {
                let mut buf = Vec::new();
                codec::decode(job.blob, h, &whole, &mut buf).map_err(|e| e.0)?;
                match cache.insert(job.position, *h, buf) {
                    Ok(entry) => &entry.pixels,
                    Err(buf) => {
                        kept = buf;
                        &kept
                    }
                }
            }
        };
        place(pixels, &codec::Decoded::unscaled(h.width, h.height), slot)?
    } else {
        let direct = h.format == Format::Jpeg && full && !padded && (ow, oh) == (h.width, h.height);
        if direct && codec::decode_jpeg_into(job.blob, h, slot, cfg.channels, cfg.pad_truncated).map_err(|e| e.0)? {
            false
        } else {
            SCRATCH.with(|scratch| -> Result<bool, String> {
                let mut scratch = scratch.borrow_mut();
                let decoded = codec::decode(job.blob, h, &req, &mut scratch).map_err(|e| e.0)?;
                place(&scratch, &decoded, slot)
            })?
        }
    };
    if p.flip && !mirrored {
        resize::flip_horizontal(slot, ow as usize, ch);
    }
    if p.vflip {
        resize::flip_vertical(slot, ow as usize, ch);
    }
    Ok(())
}

/// The row through the fused decode, then through `cfg.steps`.
fn decoded_image(job: &Job, cfg: &Config) -> Result<(Image, Vec<Applied>), String> {
    let mut img = Image::new(job.plan.out_width as usize, job.plan.out_height as usize, cfg.channels.count());
    decode_row(job, cfg, &mut img.data)?;
    let mut applied = Vec::new();
    augment::run(&cfg.steps, &mut img, |op| Stream::new(cfg.seed, cfg.epoch, job.position, op as u64), &mut applied, None)?;
    Ok((img, applied))
}

/// The row into `slot` (`height` x `width`): straight from the decode, or through the
/// steps and copied.
fn decode_into_slot(job: &Job, cfg: &Config, slot: &mut [u8], height: u32, width: u32) -> Result<Vec<Applied>, String> {
    if cfg.steps.is_empty() {
        decode_row(job, cfg, slot)?;
        return Ok(Vec::new());
    }
    let (img, applied) = decoded_image(job, cfg)?;
    if (img.height, img.width) != (height as usize, width as usize) {
        return Err(format!("came out at {}x{}, not the {height}x{width} the transform promises", img.height, img.width));
    }
    slot.copy_from_slice(&img.data);
    Ok(applied)
}

/// Runs `work`, turning a panic into a row error: no panic crosses into Python.
fn guarded<T>(work: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(format!("internal error while decoding ({what})"))
    })
}

/// `work(i, slot i)` for every slot, on `cfg.threads` threads, taking the slots in
/// `order`: each worker takes the next one from a shared counter, so with the largest
/// images first a batch ends on its smallest instead of one thread finishing a large
/// one while the others wait.
///
/// `blob(i)` is row i's encoded bytes: each worker asks the memory for the next row it
/// will likely take while it decodes this one (see `prefetch`).
fn run_rows<'b, T: Send>(
    cfg: &Config,
    order: &[usize],
    slots: Vec<Slot<'_>>,
    blob: impl Fn(usize) -> &'b [u8] + Sync,
    work: impl Fn(usize, &mut [u8]) -> Result<T, String> + Sync,
) -> Result<Vec<Result<T, String>>, BatchError> {
    if cfg.threads <= 1 || slots.len() <= 1 {
        let n = slots.len();
        return Ok(slots
            .into_iter()
            .enumerate()
            .map(|(i, slot)| {
                if i + 1 < n {
                    prefetch(blob(i + 1));
                }
                guarded(|| work(i, slot.bytes()))
            })
            .collect());
    }
    let pool = pool::get(cfg.threads).map_err(BatchError::Invalid)?;
    let slots: Vec<Mutex<Option<Slot>>> = slots.into_iter().map(|s| Mutex::new(Some(s))).collect();
    let results: Vec<Mutex<Option<Result<T, String>>>> = slots.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    pool.broadcast(|_| loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        let Some(&i) = order.get(k) else { break };
        // The workers take turns, so this one's next row is about `threads` ahead.
        if let Some(&ahead) = order.get(k + cfg.threads) {
            prefetch(blob(ahead));
        }
        let slot = slots[i].lock().unwrap_or_else(|e| e.into_inner()).take().expect("each slot is decoded once");
        *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(guarded(|| work(i, slot.bytes())));
    });
    Ok(results
        .into_iter()
        .map(|r| r.into_inner().unwrap_or_else(|e| e.into_inner()).unwrap_or_else(|| Err("row was not decoded".into())))
        .collect())
}

/// Bytes of a row's blob asked for ahead of its decode: all of a small image, the
/// headers and first data of a large one (the hardware's own prefetch follows a read
/// once it runs). A loader's rows sit at random places in its cache (a shuffled batch
/// is gathered by pointer), so each small image's first bytes were a trip to memory:
/// two threads decoding CIFAR-10 in a random order ran 17% below the same rows in order.
const PREFETCH_BYTES: usize = 4096;

#[inline]
fn prefetch(blob: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = blob.as_ptr();
        for off in (0..blob.len().min(PREFETCH_BYTES)).step_by(64) {
            // SAFETY: `off` is inside the blob, and a prefetch never faults or writes.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off) as *const i8) };
        }
    }
}

/// Row indices, largest blob first (the decode order, see `run_rows`).
fn largest_first(sizes: impl Iterator<Item = usize>) -> Vec<usize> {
    let sizes: Vec<usize> = sizes.collect();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    // Unstable: ties may go in any order (they only schedule the decode), at a third of
    // a stable sort's cost on the calling thread while the workers wait.
    order.sort_unstable_by_key(|&i| Reverse(sizes[i]));
    order
}

/// A batch's output: the caller's buffer (checked against `rows` x `height` x `width`),
/// or one allocated for the batch. An allocated buffer is not zeroed as a whole on the
/// calling thread, where a batch of 256 CIFAR-10 rows spent a fifth of that thread's
/// time in memset while the workers waited: each slot is zeroed by the worker that
/// takes it, just before its decode writes it (see `Slot`).
struct Buffer<'a> {
    caller: Option<&'a mut [u8]>,
    owned: Vec<u8>,
    len: usize,
    slot_len: usize,
    /// Whether `slots()` handed out every slot of `owned` (each is written before it
    /// is dropped, so `owned[..len]` is then initialized).
    handed_out: bool,
}

impl<'a> Buffer<'a> {
    fn new(target: Target<'a>, rows: usize, height: u32, width: u32, ch: usize) -> Result<Self, BatchError> {
        let slot_len = height as usize * width as usize * ch;
        let len = rows * slot_len;
        match target {
            Target::Caller { buf, rows: have, height: th, width: tw, channels: tc } => {
                if (th, tw, tc) != (height, width, ch) || have < rows {
                    return Err(BatchError::Invalid(format!(
                        "out has shape ({have}, {th}, {tw}, {tc}) but this batch needs ({rows}, {height}, {width}, {ch}) or more rows"
                    )));
                }
                Ok(Buffer { caller: Some(&mut buf[..len]), owned: Vec::new(), len, slot_len, handed_out: true })
            }
            Target::Owned => Ok(Buffer { caller: None, owned: Vec::with_capacity(len), len, slot_len, handed_out: false }),
        }
    }

    /// One slot per row, in row order (none when rows are zero bytes).
    fn slots(&mut self) -> Vec<Slot<'_>> {
        if self.slot_len == 0 {
            return Vec::new();
        }
        let zero = self.caller.is_none();
        let mem: &mut [MaybeUninit<u8>] = match &mut self.caller {
            // SAFETY: the same bytes seen as possibly uninitialized; only initialized
            // values (zeros, pixels) are ever written through it.
            Some(buf) => unsafe { &mut *(&mut **buf as *mut [u8] as *mut [MaybeUninit<u8>]) },
            None => &mut self.owned.spare_capacity_mut()[..self.len],
        };
        self.handed_out = true;
        mem.chunks_mut(self.slot_len).map(|mem| Slot { mem, zero }).collect()
    }

    /// The whole buffer, every slot written: after `slots()` (whose slots are all gone
    /// by now, as they borrow `self`), or zeroed here.
    fn filled(&mut self) -> &mut [u8] {
        if let Some(buf) = &mut self.caller {
            return buf;
        }
        if self.owned.len() < self.len {
            if self.handed_out {
                // SAFETY: every slot was written (zeroed or decoded) before it was
                // consumed or dropped, and the slots cover `owned[..len]`.
                unsafe { self.owned.set_len(self.len) };
            } else {
                self.owned.resize(self.len, 0);
            }
        }
        &mut self.owned[..]
    }

    /// The allocated pixels, cut to the first `kept` rows (None for a caller's buffer).
    fn into_pixels(mut self, kept: usize) -> Option<Vec<u8>> {
        if self.caller.is_some() {
            return None;
        }
        self.filled();
        self.owned.truncate(kept * self.slot_len);
        Some(self.owned)
    }
}

/// One row's slot of a `Buffer`. An allocated slot is zeroed when its worker takes it
/// (`bytes`), or when it is dropped untaken, so no byte of the buffer is ever read
/// unwritten: a failed decode may have written part of its slot, and a row of another
/// size none of it.
struct Slot<'a> {
    mem: &'a mut [MaybeUninit<u8>],
    zero: bool,
}

impl<'a> Slot<'a> {
    /// No slot: for rows decoded into images of their own (`decode_each`, targets).
    fn none() -> Self {
        Slot { mem: &mut [], zero: false }
    }

    fn bytes(mut self) -> &'a mut [u8] {
        let mem = std::mem::take(&mut self.mem);
        if self.zero {
            // SAFETY: `mem` is valid for writes of its length.
            unsafe { std::ptr::write_bytes(mem.as_mut_ptr(), 0, mem.len()) };
        }
        // SAFETY: every byte is initialized: the caller's were, an allocated slot's
        // were just zeroed.
        unsafe { &mut *(mem as *mut [MaybeUninit<u8>] as *mut [u8]) }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.zero {
            // SAFETY: as in `bytes`; empty once `bytes` took it.
            unsafe { std::ptr::write_bytes(self.mem.as_mut_ptr(), 0, self.mem.len()) };
        }
    }
}

/// Decodes `blobs` (None = a null row) with `positions[i]` keying row i's random draws.
pub fn decode_batch(blobs: &[Option<&[u8]>], positions: &[u64], cfg: &Config, target: Target) -> Result<Outcome, BatchError> {
    let fused = plan::fixed_size(&cfg.ops);
    let size = augment::steps_output_size(&cfg.steps, fused);
    match size {
        Some((height, width)) => decode_fixed(blobs, positions, cfg, target, height, width),
        None if cfg.steps.is_empty() => decode_planned(blobs, positions, cfg, target),
        None => decode_each(blobs, positions, cfg, target),
    }
}

/// The transform fixes the output size: every row is planned (header read, random
/// draws) and decoded by the worker that takes it, all rows in parallel.
fn decode_fixed(blobs: &[Option<&[u8]>], positions: &[u64], cfg: &Config, target: Target, height: u32, width: u32) -> Result<Outcome, BatchError> {
    let ch = cfg.channels.count();
    let mut buf = Buffer::new(target, blobs.len(), height, width, ch)?;
    let slot_len = buf.slot_len;
    let order = largest_first(blobs.iter().map(|b| b.map_or(0, <[u8]>::len)));
    let results = if slot_len == 0 {
        (0..blobs.len()).map(|i| plan_row(blobs[i], positions[i], cfg).map(|(_, p)| (p, Vec::new()))).collect()
    } else {
        run_rows(cfg, &order, buf.slots(), |i| blobs[i].unwrap_or_default(), |i, slot| {
            let (header, plan) = plan_row(blobs[i], positions[i], cfg)?;
            let job = Job { row: i, blob: blobs[i].unwrap_or_default(), header, plan, position: positions[i] };
            let applied = decode_into_slot(&job, cfg, slot, height, width)?;
            Ok((plan, applied))
        })?
    };
    let rows: Vec<usize> = (0..blobs.len()).collect();
    let out = finish(buf.filled(), slot_len, &rows, results, cfg, height, width)?;
    Ok(with_pixels(out, buf))
}

/// The output size depends on the images: read every header first, check that all rows
/// come out at one size, then decode in parallel.
fn decode_planned(blobs: &[Option<&[u8]>], positions: &[u64], cfg: &Config, target: Target) -> Result<Outcome, BatchError> {
    // Reading every header on this thread first left the workers idle meanwhile: a third
    // of a CIFAR-10 batch's time. So, where the buffer can hold every row, the size is
    // taken from the first row that plans, and the workers plan and decode the rest in
    // parallel on that guess (a dataset's rows mostly share one size). The outcome,
    // errors included, is the same as planning all first.
    let fits = match &target {
        Target::Caller { rows, .. } => *rows >= blobs.len(),
        Target::Owned => true,
    };
    if cfg.threads > 1 && blobs.len() > 1 && fits {
        for (row, (blob, &position)) in blobs.iter().zip(positions).enumerate() {
            match plan_row(*blob, position, cfg) {
                Ok((_, plan)) => return decode_guessed(blobs, positions, cfg, target, row, (plan.out_height, plan.out_width)),
                Err(_) if cfg.skip_errors => {}
                Err(message) => return Err(BatchError::Row { row, message }),
            }
        }
    }
    let mut errors = Vec::new();
    let mut jobs = Vec::with_capacity(blobs.len());
    for (row, (blob, &position)) in blobs.iter().zip(positions).enumerate() {
        match plan_row(*blob, position, cfg) {
            Ok((header, plan)) => jobs.push(Job { row, blob: blob.unwrap_or_default(), header, plan, position }),
            Err(message) if cfg.skip_errors => errors.push((row, message)),
            Err(message) => return Err(BatchError::Row { row, message }),
        }
    }

    // One batch, one size: every kept row must come out the same.
    let size = jobs.first().map(|j| (j.plan.out_height, j.plan.out_width));
    if let Some(other) = jobs.iter().find(|j| Some((j.plan.out_height, j.plan.out_width)) != size) {
        let first = &jobs[0];
        return Err(different_sizes(first.row, (first.plan.out_height, first.plan.out_width), other.row, (other.plan.out_height, other.plan.out_width)));
    }
    let (height, width) = batch_size(&target, size);
    let ch = cfg.channels.count();
    let mut buf = Buffer::new(target, jobs.len(), height, width, ch)?;
    let slot_len = buf.slot_len;
    let results = if slot_len == 0 {
        jobs.iter().map(|j| Ok((j.plan, Vec::new()))).collect()
    } else {
        let order = largest_first(jobs.iter().map(|j| j.blob.len()));
        run_rows(cfg, &order, buf.slots(), |i| jobs[i].blob, |i, slot| decode_row(&jobs[i], cfg, slot).map(|()| (jobs[i].plan, Vec::new())))?
    };
    let rows: Vec<usize> = jobs.iter().map(|j| j.row).collect();
    let mut out = finish(buf.filled(), slot_len, &rows, results, cfg, height, width)?;
    out.errors.extend(errors);
    out.errors.sort_by_key(|(row, _)| *row);
    Ok(with_pixels(out, buf))
}

/// How a row of `decode_guessed` came out, short of a decode error.
enum Guessed {
    Decoded(Plan),
    Unplanned(String),
    OtherSize((u32, u32)),
}

/// `decode_planned` on a guess: row `first` (every row before it failed to plan, and
/// errors are skipped) plans to `size`; each worker plans its row and decodes it where it
/// comes out at that size.
fn decode_guessed(blobs: &[Option<&[u8]>], positions: &[u64], cfg: &Config, target: Target, first: usize, size: (u32, u32)) -> Result<Outcome, BatchError> {
    let (height, width) = size;
    let ch = cfg.channels.count();
    let mut buf = Buffer::new(target, blobs.len(), height, width, ch)?;
    let slot_len = buf.slot_len;
    let order = largest_first(blobs.iter().map(|b| b.map_or(0, <[u8]>::len)));
    let work = |i: usize, slot: &mut [u8]| -> Result<Guessed, String> {
        let (header, plan) = match plan_row(blobs[i], positions[i], cfg) {
            Ok(hp) => hp,
            Err(message) => return Ok(Guessed::Unplanned(message)),
        };
        if (plan.out_height, plan.out_width) != size {
            return Ok(Guessed::OtherSize((plan.out_height, plan.out_width)));
        }
        if slot_len > 0 {
            let job = Job { row: i, blob: blobs[i].unwrap_or_default(), header, plan, position: positions[i] };
            decode_row(&job, cfg, slot)?;
        }
        Ok(Guessed::Decoded(plan))
    };
    let done = if slot_len == 0 {
        (0..blobs.len()).map(|i| work(i, &mut [])).collect()
    } else {
        run_rows(cfg, &order, buf.slots(), |i| blobs[i].unwrap_or_default(), work)?
    };
    // As planning every row first would end: its first error, then a row of another size.
    if !cfg.skip_errors {
        if let Some((row, Ok(Guessed::Unplanned(message)))) = done.iter().enumerate().find(|(_, r)| matches!(r, Ok(Guessed::Unplanned(_)))) {
            return Err(BatchError::Row { row, message: message.clone() });
        }
    }
    if let Some((row, Ok(Guessed::OtherSize(other)))) = done.iter().enumerate().find(|(_, r)| matches!(r, Ok(Guessed::OtherSize(_)))) {
        return Err(different_sizes(first, size, row, *other));
    }
    let results: Vec<RowResult> = done
        .into_iter()
        .map(|r| match r {
            Ok(Guessed::Decoded(plan)) => Ok((plan, Vec::new())),
            Ok(Guessed::Unplanned(message)) | Err(message) => Err(message),
            Ok(Guessed::OtherSize(_)) => unreachable!("a row of another size ends the batch above"),
        })
        .collect();
    let rows: Vec<usize> = (0..blobs.len()).collect();
    let out = finish(buf.filled(), slot_len, &rows, results, cfg, height, width)?;
    Ok(with_pixels(out, buf))
}

/// The output size depends on the images and on the steps' draws (a rotation with
/// `expand`, say): every row is decoded and transformed first, in parallel, then the
/// batch checks that they agree and gathers them.
fn decode_each(blobs: &[Option<&[u8]>], positions: &[u64], cfg: &Config, target: Target) -> Result<Outcome, BatchError> {
    let order = largest_first(blobs.iter().map(|b| b.map_or(0, <[u8]>::len)));
    let done = run_rows(cfg, &order, (0..blobs.len()).map(|_| Slot::none()).collect(), |i| blobs[i].unwrap_or_default(), |i, _| {
        let (header, plan) = plan_row(blobs[i], positions[i], cfg)?;
        let job = Job { row: i, blob: blobs[i].unwrap_or_default(), header, plan, position: positions[i] };
        let (img, applied) = decoded_image(&job, cfg)?;
        Ok((plan, img, applied))
    })?;
    let mut first: Option<(usize, (u32, u32))> = None;
    for (row, r) in done.iter().enumerate() {
        if let Ok((_, img, _)) = r {
            let size = (img.height as u32, img.width as u32);
            match first {
                None => first = Some((row, size)),
                Some((r0, s0)) if s0 != size => return Err(different_sizes(r0, s0, row, size)),
                Some(_) => {}
            }
        }
    }
    let (height, width) = batch_size(&target, first.map(|(_, s)| s));
    let ch = cfg.channels.count();
    let mut buf = Buffer::new(target, blobs.len(), height, width, ch)?;
    let slot_len = buf.slot_len;
    let pixels = buf.filled();
    let mut results = Vec::with_capacity(done.len());
    for (k, r) in done.into_iter().enumerate() {
        results.push(r.map(|(plan, img, applied)| {
            pixels[k * slot_len..(k + 1) * slot_len].copy_from_slice(&img.data);
            (plan, applied)
        }));
    }
    let rows: Vec<usize> = (0..blobs.len()).collect();
    let out = finish(pixels, slot_len, &rows, results, cfg, height, width)?;
    Ok(with_pixels(out, buf))
}

/// What one row comes out as with its targets.
struct TargetRow {
    plan: Plan,
    img: Image,
    mask: Option<Image>,
    boxes: (Vec<[f32; 4]>, Vec<u32>),
    applied: Vec<Applied>,
}

/// The row through the fused decode and the steps, its boxes and mask alongside.
fn target_row(i: usize, blobs: &[Option<&[u8]>], positions: &[u64], cfg: &Config, t: &RowTargets) -> Result<TargetRow, String> {
    let blob = blobs[i].ok_or("null value (no image bytes)")?;
    let header = codec::read_header(blob).map_err(|e| e.0)?;
    codec::check_pixels(&header, cfg.max_pixels).map_err(|e| e.0)?;
    let boxes = t.boxes.as_ref().map(|b| b[i]);
    let mut alive = vec![true; boxes.map_or(0, <[_]>::len)];
    let position = positions[i];
    let stream = |op: usize| Stream::new(cfg.seed, cfg.epoch, position, op as u64);
    let plan = plan::plan_with_boxes(&cfg.ops, header.width, header.height, boxes.unwrap_or(&[]), &mut alive, stream);
    let mask = match &t.masks {
        Some(m) => {
            let blob = m[i].ok_or("null mask (no mask bytes)")?;
            let (w, h, labels) = codec::decode_mask(blob, cfg.max_pixels).map_err(|e| format!("mask: {}", e.0))?;
            Some(Image::from_vec(labels, w as usize, h as usize, 1)?)
        }
        None => None,
    };
    let mut targets = Targets::new(boxes, mask, t.mask_fill, header.width as usize, header.height as usize)?;
    if let Some(b) = &mut targets.boxes {
        b.alive = alive;
    }
    targets.fused(&plan);
    let job = Job { row: i, blob, header, plan, position };
    let mut img = Image::new(plan.out_width as usize, plan.out_height as usize, cfg.channels.count());
    decode_row(&job, cfg, &mut img.data)?;
    let mut applied = Vec::new();
    augment::run(&cfg.steps, &mut img, stream, &mut applied, Some(&mut targets))?;
    let boxes = targets.finish(&t.filter);
    Ok(TargetRow { plan, img, mask: targets.mask, boxes, applied })
}

/// Decodes with targets: every row through `target_row` in parallel, then gathered
/// into one buffer, rows at their own sizes when `ragged` (`Outcome::shapes`), else
/// all at one size.
pub fn decode_targets(blobs: &[Option<&[u8]>], positions: &[u64], cfg: &Config, targets: &RowTargets, ragged: bool) -> Result<Outcome, BatchError> {
    let order = largest_first(blobs.iter().map(|b| b.map_or(0, <[u8]>::len)));
    let done = run_rows(cfg, &order, (0..blobs.len()).map(|_| Slot::none()).collect(), |i| blobs[i].unwrap_or_default(), |i, _| target_row(i, blobs, positions, cfg, targets))?;
    let mut out = Outcome::default();
    // Sized once: grown row by row, the batch's pixels (a detection batch: tens of MB)
    // were copied again at every doubling.
    let rows = || done.iter().flatten();
    let mut pixels = Vec::with_capacity(rows().map(|r| r.img.data.len()).sum());
    let mut masks = targets.masks.as_ref().map(|_| Vec::with_capacity(rows().filter_map(|r| r.mask.as_ref()).map(|m| m.data.len()).sum()));
    let mut first: Option<(usize, (u32, u32))> = None;
    for (row, r) in done.into_iter().enumerate() {
        let r = match r {
            Ok(r) => r,
            Err(message) if cfg.skip_errors => {
                out.errors.push((row, message));
                continue;
            }
            Err(message) => return Err(BatchError::Row { row, message }),
        };
        let size = (r.img.height as u32, r.img.width as u32);
        match first {
            None => first = Some((row, size)),
            Some((r0, s0)) if s0 != size && !ragged => return Err(different_sizes(r0, s0, row, size)),
            Some(_) => {}
        }
        pixels.extend_from_slice(&r.img.data);
        if let (Some(all), Some(m)) = (&mut masks, &r.mask) {
            all.extend_from_slice(&m.data);
        }
        out.kept.push(row);
        out.shapes.push(size);
        out.boxes.push([r.plan.top as f32, r.plan.left as f32, r.plan.height as f32, r.plan.width as f32]);
        out.flips.push(r.plan.flip);
        out.vflips.push(r.plan.vflip);
        out.applied.push(r.applied);
        out.target_boxes.push(r.boxes.0);
        out.box_index.push(r.boxes.1);
    }
    (out.height, out.width) = first.map_or((0, 0), |(_, s)| s);
    out.pixels = Some(pixels);
    out.masks = masks;
    Ok(out)
}

/// Two kept rows that come out at different sizes: no batch can hold both.
fn different_sizes(row_a: usize, (ha, wa): (u32, u32), row_b: usize, (hb, wb): (u32, u32)) -> BatchError {
    BatchError::Sizes(format!(
        "rows {row_a} and {row_b} come out at different sizes ({ha}x{wa} and {hb}x{wb}); a batch needs one size: \
         end the transform with a fixed size (CenterCrop, RandomResizedCrop or Resize((h, w)))"
    ))
}

/// The batch's (height, width): its rows', else (no row kept) the caller's buffer's.
fn batch_size(target: &Target, rows: Option<(u32, u32)>) -> (u32, u32) {
    match (target, rows) {
        (_, Some(s)) => s,
        (Target::Caller { height, width, .. }, None) => (*height, *width),
        (Target::Owned, None) => (0, 0),
    }
}

/// Hands a buffer the batch allocated over to the outcome, cut to the kept rows.
fn with_pixels(mut out: Outcome, buf: Buffer) -> Outcome {
    out.pixels = buf.into_pixels(out.kept.len());
    out
}

/// Drops failed rows (or fails on the first), moving later slots down so the kept ones
/// stay contiguous. `rows[k]` is the input row of slot k.
fn finish(
    buf: &mut [u8],
    slot_len: usize,
    rows: &[usize],
    results: Vec<RowResult>,
    cfg: &Config,
    height: u32,
    width: u32,
) -> Result<Outcome, BatchError> {
    let mut out = Outcome::default();
    let mut kept = 0;
    for (k, (&row, result)) in rows.iter().zip(results).enumerate() {
        match result {
            Ok((p, applied)) => {
                if kept != k && slot_len > 0 {
                    buf.copy_within(k * slot_len..(k + 1) * slot_len, kept * slot_len);
                }
                kept += 1;
                out.kept.push(row);
                out.boxes.push([p.top as f32, p.left as f32, p.height as f32, p.width as f32]);
                out.flips.push(p.flip);
                out.vflips.push(p.vflip);
                out.applied.push(applied);
            }
            Err(message) if cfg.skip_errors => out.errors.push((row, message)),
            Err(message) => return Err(BatchError::Row { row, message }),
        }
    }
    out.height = height;
    out.width = width;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ops: Vec<Op>, skip: bool) -> Config {
        Config { ops, steps: vec![], channels: Channels::Rgb, seed: 0, epoch: 0, max_pixels: 1 << 30, skip_errors: skip, dct_scaling: true, decode_crop: true, pad_truncated: false, threads: 1, pixel_cache: None }
    }

    #[test]
    fn null_and_garbage_rows_are_named() {
        let blobs: Vec<Option<&[u8]>> = vec![None, Some(b"nope")];
        let e = decode_batch(&blobs, &[0, 1], &cfg(vec![], false), Target::Owned).unwrap_err();
        assert_eq!(e, BatchError::Row { row: 0, message: "null value (no image bytes)".into() });
        let out = decode_batch(&blobs, &[0, 1], &cfg(vec![], true), Target::Owned).unwrap();
        assert!(out.kept.is_empty());
        assert_eq!(out.errors.len(), 2);
        assert!(out.errors[1].1.starts_with("unknown image format"));
    }

    #[test]
    fn dest_span_rounds_inside_the_slot() {
        assert_eq!(dest_span(0.0, 32.0, -4.0, 40.0, 40), (4, 36));
        assert_eq!(dest_span(0.0, 10.0, -100.0, 50.0, 5), (5, 5));
    }
}
