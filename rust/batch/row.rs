//! One row: its plan (header, random draws), its fused decode into a slot, and the
//! steps after it.

use std::cell::RefCell;

use super::Config;
use crate::augment::{self, Applied};
use crate::codec::{self, Format, Header, Rect, Request};
use crate::ops::Image;
use crate::plan::{self, Plan};
use crate::resize;
use crate::rng::Stream;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

pub(super) struct Job<'a> {
    pub row: usize,
    pub blob: &'a [u8],
    pub header: Header,
    pub plan: Plan,
    pub position: u64,
}

/// A row's fused decode and what the steps after it did.
pub(super) type RowResult = Result<(Plan, Vec<Applied>), String>;

pub(super) fn plan_row(blob: Option<&[u8]>, position: u64, cfg: &Config) -> Result<(Header, Plan), String> {
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
pub(super) fn dest_span(a: f64, b: f64, lo: f64, len: f64, size: u32) -> (u32, u32) {
    let f = size as f64 / len;
    let s = ((a - lo) * f).round().clamp(0.0, size as f64) as u32;
    let e = ((b - lo) * f).round().clamp(0.0, size as f64) as u32;
    (s, e.max(s))
}

pub(super) fn decode_row(job: &Job, cfg: &Config, slot: &mut [u8]) -> Result<(), String> {
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
pub(super) fn decoded_image(job: &Job, cfg: &Config) -> Result<(Image, Vec<Applied>), String> {
    let mut img = Image::new(job.plan.out_width as usize, job.plan.out_height as usize, cfg.channels.count());
    decode_row(job, cfg, &mut img.data)?;
    let mut applied = Vec::new();
    augment::run(&cfg.steps, &mut img, |op| Stream::new(cfg.seed, cfg.epoch, job.position, op as u64), &mut applied, None)?;
    Ok((img, applied))
}

/// The row into `slot` (`height` x `width`): straight from the decode, or through the
/// steps and copied.
pub(super) fn decode_into_slot(job: &Job, cfg: &Config, slot: &mut [u8], height: u32, width: u32) -> Result<Vec<Applied>, String> {
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

