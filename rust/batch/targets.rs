//! Decoding with targets: boxes and masks through the very same plan and steps as
//! their image.

use super::buffer::Slot;
use super::row::{decode_row, Job};
use super::rows::{largest_first, run_rows};
use super::{different_sizes, BatchError, Config, Outcome};
use crate::augment::{self, Applied};
use crate::codec;
use crate::ops::targets::{Filter, Targets};
use crate::ops::Image;
use crate::plan::{self, Plan};
use crate::rng::Stream;

/// Per-row targets that follow the images: boxes (x0, y0, x1, y1 in source pixels)
/// and label masks (encoded, one per row), after `order`.
pub struct RowTargets<'a> {
    pub boxes: Option<Vec<&'a [[f64; 4]]>>,
    pub masks: Option<Vec<Option<&'a [u8]>>>,
    pub mask_fill: u8,
    pub filter: Filter,
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

