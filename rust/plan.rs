//! Geometry of the transforms: a chain of torchvision-style ops folded into one crop
//! box in source coordinates, an output size and a flip, so that the decode reads
//! only that box and one resize pass produces the output.

use crate::rng::Stream;

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Stretch to (height, width).
    Resize { height: u32, width: u32 },
    /// Shorter side to `size`, keeping the aspect ratio (torchvision's `Resize(int)`).
    ResizeShorter { size: u32, max_size: Option<u32> },
    /// torchvision's `CenterCrop`, zero-padding where the crop is larger than the image.
    CenterCrop { height: u32, width: u32 },
    /// torchvision's `RandomResizedCrop` sampling, resized to (height, width).
    RandomResizedCrop { height: u32, width: u32, scale: (f64, f64), ratio: (f64, f64) },
    HorizontalFlip { p: f64 },
    VerticalFlip { p: f64 },
    /// albumentations' `RandomSizedBBoxSafeCrop`: a crop holding the union of the
    /// boxes (eroded by `erosion`), resized to (height, width).
    BBoxSafeCrop { height: u32, width: u32, erosion: f64 },
    /// torchvision v2's `RandomIoUCrop` (SSD): a crop whose IoU with some box reaches
    /// a drawn threshold; boxes whose centre falls outside it are dropped.
    IoUCrop { scale: (f64, f64), aspect: (f64, f64), options: Vec<f64>, trials: u32 },
    /// Fit inside (height, width) keeping the aspect ratio, then pad to it, centred.
    Letterbox { height: u32, width: u32 },
}

impl Op {
    /// The fusable op the Python layer calls `name`, or None for a transform that runs
    /// on the decoded image instead (augment.rs).
    pub fn from_name(name: &str, a: &[f64]) -> Result<Option<Op>, String> {
        let need = |n: usize| -> Result<(), String> {
            if a.len() == n {
                Ok(())
            } else {
                Err(format!("transform op {name:?} takes {n} numbers, got {}", a.len()))
            }
        };
        Ok(Some(match name {
            "resize" => {
                need(2)?;
                Op::Resize { height: a[0] as u32, width: a[1] as u32 }
            }
            "resize_shorter" => {
                need(2)?;
                Op::ResizeShorter { size: a[0] as u32, max_size: (a[1] > 0.0).then_some(a[1] as u32) }
            }
            "center_crop" => {
                need(2)?;
                Op::CenterCrop { height: a[0] as u32, width: a[1] as u32 }
            }
            "random_resized_crop" => {
                need(6)?;
                Op::RandomResizedCrop { height: a[0] as u32, width: a[1] as u32, scale: (a[2], a[3]), ratio: (a[4], a[5]) }
            }
            "hflip" => {
                need(1)?;
                Op::HorizontalFlip { p: a[0] }
            }
            "vflip" => {
                need(1)?;
                Op::VerticalFlip { p: a[0] }
            }
            "bbox_safe_crop" => {
                need(3)?;
                Op::BBoxSafeCrop { height: a[0] as u32, width: a[1] as u32, erosion: a[2] }
            }
            "iou_crop" => {
                if a.len() < 6 {
                    return Err(format!("transform op {name:?} takes at least 6 numbers, got {}", a.len()));
                }
                Op::IoUCrop { scale: (a[0], a[1]), aspect: (a[2], a[3]), trials: a[4] as u32, options: a[5..].to_vec() }
            }
            "letterbox" => {
                need(2)?;
                Op::Letterbox { height: a[0] as u32, width: a[1] as u32 }
            }
            _ => return Ok(None),
        }))
    }
}

/// Where one sample's output comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    /// Crop box in source pixels; may reach outside the image (zero padding).
    pub top: f64,
    pub left: f64,
    pub height: f64,
    pub width: f64,
    pub out_height: u32,
    pub out_width: u32,
    pub flip: bool,
    pub vflip: bool,
}

/// Python's `round()`: half to even.
fn round(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// torchvision's `_compute_resized_output_size` for an int size: (height, width).
pub fn shorter_side(h: u32, w: u32, size: u32, max_size: Option<u32>) -> (u32, u32) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let (mut new_short, mut new_long) = (size, (size as f64 * long as f64 / short as f64) as u32);
    if let Some(max) = max_size {
        if new_long > max {
            new_short = (max as f64 * new_short as f64 / new_long as f64) as u32;
            new_long = max;
        }
    }
    let (nw, nh) = if w <= h { (new_short, new_long) } else { (new_long, new_short) };
    (nh.max(1), nw.max(1))
}

/// torchvision's `RandomResizedCrop.get_params`: (top, left, height, width).
pub fn random_resized_crop(h: u32, w: u32, scale: (f64, f64), ratio: (f64, f64), rng: &mut Stream) -> (i64, i64, i64, i64) {
    let (height, width) = (h as i64, w as i64);
    let area = (h as f64) * (w as f64);
    let log_ratio = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * rng.uniform_in(scale.0, scale.1);
        let aspect = rng.uniform_in(log_ratio.0, log_ratio.1).exp();
        let cw = round((target_area * aspect).sqrt());
        let ch = round((target_area / aspect).sqrt());
        if 0 < cw && cw <= width && 0 < ch && ch <= height {
            let i = rng.randint(0, height - ch + 1);
            let j = rng.randint(0, width - cw + 1);
            return (i, j, ch, cw);
        }
    }
    // Fallback to a central crop.
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < ratio.0.min(ratio.1) {
        (width, round(width as f64 / ratio.0.min(ratio.1)))
    } else if in_ratio > ratio.0.max(ratio.1) {
        (round(height as f64 * ratio.0.max(ratio.1)), height)
    } else {
        (width, height)
    };
    ((height - ch) / 2, (width - cw) / 2, ch, cw)
}

/// The size (height, width) of a `h` x `w` image scaled to fit in `height` x `width`.
pub fn letterbox_size(h: u32, w: u32, height: u32, width: u32) -> (u32, u32) {
    let scale = (height as f64 / h as f64).min(width as f64 / w as f64);
    let fit = |v: u32, limit: u32| ((v as f64 * scale).round() as u32).clamp(1, limit);
    (fit(h, height), fit(w, width))
}

/// albumentations' `BBoxSafeRandomCrop.get_params_dependent_on_data` for an `h` x `w`
/// image and its `boxes` in pixels: (top, left, height, width).
pub fn bbox_safe_crop(h: u32, w: u32, boxes: &[[f64; 4]], erosion: f64, rng: &mut Stream) -> (i64, i64, i64, i64) {
    let (hf, wf) = (h as f64, w as f64);
    let union = union_of_boxes(boxes, w, h, erosion);
    let Some([x_min, y_min, x_max, y_max]) = union else {
        // `_get_coords_no_bbox`: a crop of the image's aspect ratio, at least
        // (1 - erosion) of its height, placed at random.
        let erosive_h = (hf * (1.0 - erosion)) as i64;
        let ch = if erosive_h >= h as i64 { h as i64 } else { rng.randint(erosive_h, h as i64 + 1) };
        let cw = (ch as f64 * wf / hf) as i64;
        let (ch, cw) = (ch.min(h as i64).max(1), cw.min(w as i64).max(1));
        let (h_start, w_start) = (rng.uniform(), rng.uniform());
        let top = ((h as i64 - ch + 1) as f64 * h_start) as i64;
        let left = ((w as i64 - cw + 1) as f64 * w_start) as i64;
        return (top, left, ch, cw);
    };
    let x_min = x_min.clamp(0.0, 1.0);
    let y_min = y_min.clamp(0.0, 1.0);
    let x_max = x_max.clamp(x_min, 1.0);
    let y_max = y_max.clamp(y_min, 1.0);
    let left = (x_min * rng.uniform() * wf) as i64;
    let top = (y_min * rng.uniform() * hf) as i64;
    let right = ((x_max + (1.0 - x_max) * rng.uniform()) * wf) as i64;
    let bottom = ((y_max + (1.0 - y_max) * rng.uniform()) * hf) as i64;
    (top, left, (bottom - top).max(1), (right - left).max(1))
}

/// albumentations' `union_of_bboxes` on boxes normalized by the image size: None
/// without boxes, or when erosion leaves nothing.
fn union_of_boxes(boxes: &[[f64; 4]], w: u32, h: u32, erosion: f64) -> Option<[f64; 4]> {
    let (wf, hf) = (w as f64, h as f64);
    let norm = |b: &[f64; 4]| [b[0] / wf, b[1] / hf, b[2] / wf, b[3] / hf];
    match boxes {
        [] => None,
        _ if erosion == 1.0 => None,
        [one] => Some(norm(one)),
        _ => {
            let n: Vec<[f64; 4]> = boxes.iter().map(norm).collect();
            let mut u = [f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY];
            for b in &n {
                u = [u[0].min(b[0]), u[1].min(b[1]), u[2].max(b[2]), u[3].max(b[3])];
            }
            let (ex, ey) = ((u[2] - u[0]) * erosion * 0.5, (u[3] - u[1]) * erosion * 0.5);
            let u = [u[0] + ex, u[1] + ey, u[2] - ex, u[3] - ey];
            ((u[2] - u[0]).abs() >= 1e-6 && (u[3] - u[1]).abs() >= 1e-6).then_some(u)
        }
    }
}

/// torchvision v2's `RandomIoUCrop.make_params` on an `h` x `w` image with `boxes`
/// (x0, y0, x1, y1): (top, left, height, width, which boxes have their centre inside),
/// or None to leave the image as it is. torchvision loops until an option succeeds;
/// this stops after 1,000 options (with no box, none can).
#[allow(clippy::too_many_arguments)]
pub fn iou_crop(
    h: u32,
    w: u32,
    boxes: &[[f64; 4]],
    scale: (f64, f64),
    aspect: (f64, f64),
    options: &[f64],
    trials: u32,
    rng: &mut Stream,
) -> Option<(i64, i64, i64, i64, Vec<bool>)> {
    let (wf, hf) = (w as f64, h as f64);
    for _ in 0..1000 {
        let min_iou = *options.get(rng.randint(0, options.len() as i64) as usize)?;
        if min_iou >= 1.0 {
            return None;
        }
        for _ in 0..trials {
            let (r0, r1) = (rng.uniform(), rng.uniform());
            let new_w = (wf * (scale.0 + (scale.1 - scale.0) * r0)) as i64;
            let new_h = (hf * (scale.0 + (scale.1 - scale.0) * r1)) as i64;
            if new_h == 0 {
                continue;
            }
            let ratio = new_w as f64 / new_h as f64;
            if !(aspect.0 <= ratio && ratio <= aspect.1) {
                continue;
            }
            let (r0, r1) = (rng.uniform(), rng.uniform());
            let left = ((w as i64 - new_w) as f64 * r0) as i64;
            let top = ((h as i64 - new_h) as f64 * r1) as i64;
            let (right, bottom) = (left + new_w, top + new_h);
            if left == right || top == bottom {
                continue;
            }
            let (l, t, r, b) = (left as f64, top as f64, right as f64, bottom as f64);
            let within: Vec<bool> = boxes
                .iter()
                .map(|bx| {
                    let (cx, cy) = (0.5 * (bx[0] + bx[2]), 0.5 * (bx[1] + bx[3]));
                    l < cx && cx < r && t < cy && cy < b
                })
                .collect();
            if !within.iter().any(|&x| x) {
                continue;
            }
            let crop_area = (r - l) * (b - t);
            let best = boxes
                .iter()
                .zip(&within)
                .filter(|(_, &inside)| inside)
                .map(|(bx, _)| {
                    let iw = (bx[2].min(r) - bx[0].max(l)).max(0.0);
                    let ih = (bx[3].min(b) - bx[1].max(t)).max(0.0);
                    let inter = iw * ih;
                    inter / ((bx[2] - bx[0]) * (bx[3] - bx[1]) + crop_area - inter)
                })
                .fold(f64::NEG_INFINITY, f64::max);
            if best < min_iou {
                continue;
            }
            return Some((top, left, new_h, new_w, within));
        }
    }
    None
}

/// torchvision's `center_crop` offset along one axis, padding included.
pub fn center_offset(image: u32, crop: u32) -> i64 {
    if crop > image {
        -(((crop - image) / 2) as i64)
    } else {
        round((image - crop) as f64 / 2.0)
    }
}

/// The virtual image after each op: a box of the source shown at a size, maybe mirrored.
struct View {
    x0: f64,
    y0: f64,
    w: f64,
    h: f64,
    size_w: u32,
    size_h: u32,
    flip: bool,
    vflip: bool,
}

impl View {
    /// A source box (x0, y0, x1, y1) in the view's pixels, clamped to the view.
    fn to_view(&self, b: &[f64; 4]) -> [f64; 4] {
        let (fx, fy) = (self.size_w as f64 / self.w, self.size_h as f64 / self.h);
        let (sw, sh) = (self.size_w as f64, self.size_h as f64);
        let (mut x0, mut x1) = ((b[0] - self.x0) * fx, (b[2] - self.x0) * fx);
        let (mut y0, mut y1) = ((b[1] - self.y0) * fy, (b[3] - self.y0) * fy);
        if self.flip {
            (x0, x1) = (sw - x1, sw - x0);
        }
        if self.vflip {
            (y0, y1) = (sh - y1, sh - y0);
        }
        [x0.clamp(0.0, sw), y0.clamp(0.0, sh), x1.clamp(0.0, sw), y1.clamp(0.0, sh)]
    }

    /// Crop (top, left, height, width) in the view's own pixels.
    fn crop(&mut self, top: i64, left: i64, ch: i64, cw: i64) {
        let sx = self.w / self.size_w as f64;
        let sy = self.h / self.size_h as f64;
        // In a mirrored view, a box at `left` is at `size_w - left - cw` of the source.
        let left = if self.flip { self.size_w as i64 - left - cw } else { left };
        let top = if self.vflip { self.size_h as i64 - top - ch } else { top };
        self.x0 += left as f64 * sx;
        self.y0 += top as f64 * sy;
        self.w = cw as f64 * sx;
        self.h = ch as f64 * sy;
        self.size_w = cw as u32;
        self.size_h = ch as u32;
    }
}

/// The output size (height, width) when `ops` fix it whatever the image: the last op
/// that sets a size is `Resize((h, w))`, `CenterCrop` or `RandomResizedCrop`. `None`
/// when it depends on the image (no such op, or a shorter-side `Resize` after it).
pub fn fixed_size(ops: &[Op]) -> Option<(u32, u32)> {
    ops.iter().fold(None, |size, op| match *op {
        Op::Resize { height, width } | Op::CenterCrop { height, width } | Op::RandomResizedCrop { height, width, .. } => {
            Some((height, width))
        }
        Op::BBoxSafeCrop { height, width, .. } | Op::Letterbox { height, width } => Some((height, width)),
        Op::ResizeShorter { .. } | Op::IoUCrop { .. } => None,
        Op::HorizontalFlip { .. } | Op::VerticalFlip { .. } => size,
    })
}

/// Folds `ops` for a `src_w` x `src_h` image. `stream(i)` gives op i's random draws.
pub fn plan(ops: &[Op], src_w: u32, src_h: u32, stream: impl FnMut(usize) -> Stream) -> Plan {
    plan_with_boxes(ops, src_w, src_h, &[], &mut [], stream)
}

/// `plan`, for an image with `boxes` (x0, y0, x1, y1 in source pixels) for the ops that
/// choose their crop from them; `alive[i]` turns false where an op drops box i.
pub fn plan_with_boxes(ops: &[Op], src_w: u32, src_h: u32, boxes: &[[f64; 4]], alive: &mut [bool], mut stream: impl FnMut(usize) -> Stream) -> Plan {
    let mut v = View { x0: 0.0, y0: 0.0, w: src_w as f64, h: src_h as f64, size_w: src_w, size_h: src_h, flip: false, vflip: false };
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Resize { height, width } => {
                v.size_w = width;
                v.size_h = height;
            }
            Op::ResizeShorter { size, max_size } => {
                let (h, w) = shorter_side(v.size_h, v.size_w, size, max_size);
                v.size_h = h;
                v.size_w = w;
            }
            Op::CenterCrop { height, width } => {
                let top = center_offset(v.size_h, height);
                let left = center_offset(v.size_w, width);
                v.crop(top, left, height as i64, width as i64);
            }
            Op::RandomResizedCrop { height, width, scale, ratio } => {
                let (top, left, ch, cw) = random_resized_crop(v.size_h, v.size_w, scale, ratio, &mut stream(i));
                v.crop(top, left, ch, cw);
                v.size_h = height;
                v.size_w = width;
            }
            Op::HorizontalFlip { p } => {
                if stream(i).uniform() < p {
                    v.flip = !v.flip;
                }
            }
            Op::VerticalFlip { p } => {
                if stream(i).uniform() < p {
                    v.vflip = !v.vflip;
                }
            }
            Op::BBoxSafeCrop { height, width, erosion } => {
                let live: Vec<[f64; 4]> = boxes.iter().zip(alive.iter()).filter(|(_, &a)| a).map(|(b, _)| v.to_view(b)).collect();
                let (top, left, ch, cw) = bbox_safe_crop(v.size_h, v.size_w, &live, erosion, &mut stream(i));
                v.crop(top, left, ch, cw);
                v.size_h = height;
                v.size_w = width;
            }
            Op::IoUCrop { scale, aspect, ref options, trials } => {
                let live: Vec<usize> = (0..boxes.len()).filter(|&k| alive[k]).collect();
                let view: Vec<[f64; 4]> = live.iter().map(|&k| v.to_view(&boxes[k])).collect();
                if let Some((top, left, ch, cw, within)) = iou_crop(v.size_h, v.size_w, &view, scale, aspect, options, trials, &mut stream(i)) {
                    v.crop(top, left, ch, cw);
                    for (&k, inside) in live.iter().zip(within) {
                        alive[k] &= inside;
                    }
                }
            }
            Op::Letterbox { height, width } => {
                let (h, w) = letterbox_size(v.size_h, v.size_w, height, width);
                v.size_h = h;
                v.size_w = w;
                v.crop(center_offset(h, height), center_offset(w, width), height as i64, width as i64);
            }
        }
    }
    Plan { top: v.y0, left: v.x0, height: v.h, width: v.w, out_height: v.size_h, out_width: v.size_w, flip: v.flip, vflip: v.vflip }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(ops: &[Op], w: u32, h: u32) -> Plan {
        plan(ops, w, h, |i| Stream::new(0, 0, 0, i as u64))
    }

    #[test]
    fn resize_then_center_crop_is_a_central_box() {
        let p = fixed(&[Op::ResizeShorter { size: 256, max_size: None }, Op::CenterCrop { height: 224, width: 224 }], 500, 375);
        assert_eq!((p.out_height, p.out_width), (224, 224));
        // 375 -> 256, 500 -> int(256*500/375) = 341; crop top round(16) left round(58.5)=58.
        let s = 375.0 / 256.0;
        assert!((p.top - 16.0 * s).abs() < 1e-9);
        assert!((p.left - 58.0 * 500.0 / 341.0).abs() < 1e-9);
        assert!((p.height - 224.0 * s).abs() < 1e-9);
    }

    #[test]
    fn fixed_size_is_known_only_when_no_op_leaves_it_to_the_image() {
        let rrc = Op::RandomResizedCrop { height: 7, width: 9, scale: (0.1, 1.0), ratio: (0.75, 1.33) };
        let shorter = Op::ResizeShorter { size: 256, max_size: None };
        let flip = Op::HorizontalFlip { p: 0.5 };
        assert_eq!(fixed_size(&[]), None);
        assert_eq!(fixed_size(&[shorter.clone()]), None);
        assert_eq!(fixed_size(&[shorter.clone(), Op::CenterCrop { height: 4, width: 5 }, flip.clone()]), Some((4, 5)));
        assert_eq!(fixed_size(&[rrc.clone(), flip]), Some((7, 9)));
        assert_eq!(fixed_size(&[rrc, shorter]), None);
        for (w, h) in [(500, 375), (32, 32), (3, 900)] {
            let p = fixed(&[Op::Resize { height: 11, width: 13 }], w, h);
            assert_eq!((p.out_height, p.out_width), (11, 13));
        }
    }

    #[test]
    fn center_crop_larger_pads() {
        let p = fixed(&[Op::CenterCrop { height: 40, width: 30 }], 32, 32);
        assert_eq!((p.top, p.left, p.height, p.width), (-4.0, 1.0, 40.0, 30.0));
        let p = fixed(&[Op::CenterCrop { height: 33, width: 33 }], 32, 32);
        assert_eq!((p.top, p.left), (0.0, 0.0));
    }

    #[test]
    fn flip_before_crop_mirrors_the_box() {
        let crop = Op::CenterCrop { height: 10, width: 10 };
        let flip = Op::HorizontalFlip { p: 1.0 };
        let p = fixed(&[Op::Resize { height: 10, width: 20 }, flip.clone(), Op::RandomResizedCrop { height: 5, width: 5, scale: (0.1, 0.2), ratio: (1.0, 1.0) }], 20, 10);
        assert!(p.flip);
        let q = fixed(&[flip, crop], 20, 10);
        assert_eq!(q.left, 5.0);
    }

    #[test]
    fn vertical_flip_before_crop_mirrors_the_box() {
        let p = fixed(&[Op::VerticalFlip { p: 1.0 }, Op::CenterCrop { height: 4, width: 10 }], 10, 10);
        assert!(p.vflip && !p.flip);
        assert_eq!(p.top, 3.0);
        let q = fixed(&[Op::Resize { height: 10, width: 10 }, Op::VerticalFlip { p: 1.0 }, Op::RandomResizedCrop { height: 2, width: 2, scale: (0.04, 0.04), ratio: (1.0, 1.0) }], 10, 10);
        // The same draws for the crop (op 2), without the flip: the box mirrored top-bottom.
        let r = fixed(&[Op::Resize { height: 10, width: 10 }, Op::VerticalFlip { p: 0.0 }, Op::RandomResizedCrop { height: 2, width: 2, scale: (0.04, 0.04), ratio: (1.0, 1.0) }], 10, 10);
        assert_eq!(q.top, 10.0 - r.top - 2.0);
    }

    #[test]
    fn rrc_fallback_when_ratio_impossible() {
        // A 1000x10 strip can't hold a 3/4..4/3 crop of 8%+ area: central fallback.
        let mut s = Stream::new(0, 0, 0, 0);
        let (t, l, h, w) = random_resized_crop(10, 1000, (0.9, 1.0), (0.75, 1.333), &mut s);
        assert_eq!((h, w), (10, 13));
        assert_eq!((t, l), (0, (1000 - 13) / 2));
    }

    #[test]
    fn bbox_safe_crop_holds_every_box_without_erosion() {
        let boxes = [[10.0, 20.0, 30.0, 40.0], [50.0, 5.0, 70.0, 25.0]];
        for k in 0..200 {
            let mut s = Stream::new(1, 0, k, 0);
            let (top, left, h, w) = bbox_safe_crop(100, 120, &boxes, 0.0, &mut s);
            assert!(left <= 10 && top <= 5 && left + w >= 70 && top + h >= 40, "{k}: {top} {left} {h} {w}");
            assert!(left >= 0 && top >= 0 && left + w <= 120 && top + h <= 100);
        }
    }

    #[test]
    fn iou_crop_keeps_a_centre_or_leaves_the_image() {
        let boxes = [[10.0, 10.0, 40.0, 40.0], [60.0, 60.0, 90.0, 90.0]];
        let mut s = Stream::new(0, 0, 0, 0);
        assert!(iou_crop(100, 100, &boxes, (0.3, 1.0), (0.5, 2.0), &[1.0], 40, &mut s).is_none());
        let mut cropped = 0;
        for k in 0..100 {
            let mut s = Stream::new(0, 0, k, 0);
            if let Some((top, left, h, w, within)) = iou_crop(100, 100, &boxes, (0.3, 1.0), (0.5, 2.0), &[0.0, 0.5, 1.0], 40, &mut s) {
                cropped += 1;
                assert!(within.iter().any(|&x| x));
                for (b, inside) in boxes.iter().zip(within) {
                    let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
                    let is_in = (left as f64) < cx && cx < (left + w) as f64 && (top as f64) < cy && cy < (top + h) as f64;
                    assert_eq!(inside, is_in);
                }
            }
        }
        assert!(cropped > 20, "{cropped}");
        // No box: no crop can hold a centre, so the image stays as it is.
        let mut s = Stream::new(0, 0, 0, 0);
        assert!(iou_crop(100, 100, &[], (0.3, 1.0), (0.5, 2.0), &[0.0], 5, &mut s).is_none());
    }

    #[test]
    fn letterbox_fits_then_pads_centred() {
        let p = fixed(&[Op::Letterbox { height: 64, width: 64 }], 200, 100);
        assert_eq!((p.out_height, p.out_width), (64, 64));
        // 200x100 -> 64x32, padded by 16 rows above and below: the box reaches 50 source
        // rows (16 * 100/32) outside the image on each side.
        assert_eq!((p.left, p.width), (0.0, 200.0));
        assert!((p.top + 50.0).abs() < 1e-9 && (p.height - 200.0).abs() < 1e-9, "{p:?}");
    }
}
