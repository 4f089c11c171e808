//! Many encoded blobs -> one contiguous NHWC uint8 buffer, decoded in parallel, each
//! image straight into its slot, with per-row errors. `row` decodes one row, `rows`
//! runs rows on the pool, `buffer` owns the output, `targets` carries boxes and masks
//! along, `gather` picks and splits a batch's inputs.

mod buffer;
pub mod gather;
mod row;
mod rows;
mod targets;

use std::sync::Arc;

use crate::augment::{self, Applied, Step};
use crate::codec::Channels;
use crate::pixels::PixelCache;
use crate::plan::{self, Op, Plan};

pub use buffer::Target;
use buffer::{with_pixels, Buffer, Slot};
use row::{decode_into_slot, decode_row, decoded_image, plan_row, Job, RowResult};
use rows::{largest_first, run_rows};
pub use targets::{decode_targets, RowTargets};

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
    pub(crate) fn cached(&self, position: u64) -> Option<&crate::pixels::Entry> {
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
    use crate::plan::Op;
    use row::dest_span;

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
