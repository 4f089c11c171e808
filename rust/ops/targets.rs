//! Targets that follow an image through its transforms: bounding boxes and label masks.
//!
//! Every geometric change to an image is either the fused decode (a crop box of the
//! source shown at the output size, maybe mirrored: `Plan`) or an op that `augment.rs`
//! records with its parameters; a sample's targets replay exactly those, so they cannot
//! drift from the pixels.
//!
//! Boxes follow torchvision's `transforms.v2.functional` box kernels: corners mapped by
//! the forward affine map (the enclosing box of the four), clamped to the canvas after
//! every crop, pad and affine map, not after flips and resizes. Beside the clamped box a
//! never-clamped one is carried along, so that a box's visibility is its clamped area
//! over its whole transformed area (albumentations' `min_visibility`).
//!
//! Masks hold labels, not intensities: they are resampled nearest-neighbour (at pixel
//! centres) and never blended, and whatever the image gets as padding or fill the mask
//! gets as `fill` (an "ignore" label, say).

use super::{warp, Image};
use crate::plan::Plan;

/// Boxes as (x0, y0, x1, y1) in pixels of the current canvas.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Boxes {
    /// Clamped to the canvas as torchvision clamps them: what a sample hands out.
    pub clipped: Vec<[f64; 4]>,
    /// Never clamped: the denominator of visibility.
    pub whole: Vec<[f64; 4]>,
    /// False once a transform dropped the box (`RandomIoUCrop`'s boxes outside its crop).
    pub alive: Vec<bool>,
}

/// A sample's boxes and mask, on a canvas of `width` x `height` pixels.
#[derive(Clone, Debug)]
pub struct Targets {
    pub boxes: Option<Boxes>,
    pub mask: Option<Image>,
    pub mask_fill: u8,
    pub width: usize,
    pub height: usize,
}

/// What survives `Targets::finish`'s filter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Filter {
    /// Smallest area in output pixels (torchvision's `SanitizeBoundingBoxes(min_area=)`).
    pub min_area: f64,
    /// Smallest width and height (its `min_size`).
    pub min_size: f64,
    /// Smallest clamped area over whole area (albumentations' `min_visibility`).
    pub min_visibility: f64,
}

fn clamp_box(b: [f64; 4], w: usize, h: usize) -> [f64; 4] {
    let (w, h) = (w as f64, h as f64);
    [b[0].clamp(0.0, w), b[1].clamp(0.0, h), b[2].clamp(0.0, w), b[3].clamp(0.0, h)]
}

fn area(b: &[f64; 4]) -> f64 {
    (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
}

/// torchvision's `_get_inverse_affine_matrix(..., inverted=False)`: the forward map
/// [a, b, c, d, e, f] (x' = a x + b y + c) about `center` in pixels.
pub fn forward_affine_matrix(center: [f64; 2], angle: f64, translate: [f64; 2], scale: f64, shear: [f64; 2]) -> [f64; 6] {
    let rot = angle.to_radians();
    let (sx, sy) = (shear[0].to_radians(), shear[1].to_radians());
    let [cx, cy] = center;
    let a = (rot - sy).cos() / sy.cos();
    let b = -(rot - sy).cos() * sx.tan() / sy.cos() - rot.sin();
    let c = (rot - sy).sin() / sy.cos();
    let d = -(rot - sy).sin() * sx.tan() / sy.cos() + rot.cos();
    let mut m = [a * scale, b * scale, 0.0, c * scale, d * scale, 0.0];
    m[2] += m[0] * -cx + m[1] * -cy;
    m[5] += m[3] * -cx + m[4] * -cy;
    m[2] += cx + translate[0];
    m[5] += cy + translate[1];
    m
}

/// The box enclosing `b`'s four corners mapped by `m`, shifted by `-shift`.
fn map_box(b: &[f64; 4], m: &[f64; 6], shift: [f64; 2]) -> [f64; 4] {
    let corners = [(b[0], b[1]), (b[2], b[1]), (b[2], b[3]), (b[0], b[3])];
    let mut out = [f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY];
    for (x, y) in corners {
        let (u, v) = (m[0] * x + m[1] * y + m[2] - shift[0], m[3] * x + m[4] * y + m[5] - shift[1]);
        out = [out[0].min(u), out[1].min(v), out[2].max(u), out[3].max(v)];
    }
    out
}

impl Boxes {
    pub fn new(boxes: &[[f64; 4]]) -> Boxes {
        Boxes { clipped: boxes.to_vec(), whole: boxes.to_vec(), alive: vec![true; boxes.len()] }
    }

    fn each(&mut self, f: impl Fn(&[f64; 4]) -> [f64; 4]) {
        for b in self.clipped.iter_mut().chain(self.whole.iter_mut()) {
            *b = f(b);
        }
    }

    /// Clamps the boxes handed out (not the whole ones) to a `w` x `h` canvas.
    fn clamp(&mut self, w: usize, h: usize) {
        for b in &mut self.clipped {
            *b = clamp_box(*b, w, h);
        }
    }
}

impl Targets {
    /// Targets of a `width` x `height` source image. A mask must have the image's size.
    pub fn new(boxes: Option<&[[f64; 4]]>, mask: Option<Image>, mask_fill: u8, width: usize, height: usize) -> Result<Targets, String> {
        if let Some(m) = &mask {
            if (m.width, m.height) != (width, height) {
                return Err(format!("mask is {}x{} but its image is {width}x{height}", m.width, m.height));
            }
        }
        Ok(Targets { boxes: boxes.map(Boxes::new), mask, mask_fill, width, height })
    }

    /// Through the fused decode: the source box `plan` names, shown at its output size,
    /// then its flips.
    pub fn fused(&mut self, plan: &Plan) {
        let (ow, oh) = (plan.out_width as usize, plan.out_height as usize);
        let (sx, sy) = (ow as f64 / plan.width, oh as f64 / plan.height);
        if let Some(b) = &mut self.boxes {
            b.each(|b| [(b[0] - plan.left) * sx, (b[1] - plan.top) * sy, (b[2] - plan.left) * sx, (b[3] - plan.top) * sy]);
            b.clamp(ow, oh);
            if plan.flip {
                b.each(|b| [ow as f64 - b[2], b[1], ow as f64 - b[0], b[3]]);
            }
            if plan.vflip {
                b.each(|b| [b[0], oh as f64 - b[3], b[2], oh as f64 - b[1]]);
            }
        }
        if let Some(m) = &mut self.mask {
            let mut out = sample_nearest(m, plan.left, plan.top, plan.width, plan.height, ow, oh, self.mask_fill);
            if plan.flip {
                let _ = warp::apply("hflip", &[], &mut out);
            }
            if plan.vflip {
                let _ = warp::apply("vflip", &[], &mut out);
            }
            *m = out;
        }
        self.width = ow;
        self.height = oh;
    }

    /// Follows the image op `name` with `params` (as `ops::apply` takes them and
    /// `augment.rs` records them); ops that only change values leave the targets be.
    pub fn follow(&mut self, name: &str, params: &[f64]) -> Result<(), String> {
        let (w, h) = (self.width, self.height);
        let (nw, nh) = match name {
            "resize" => {
                let (nh, nw) = (params[0] as usize, params[1] as usize);
                let (fx, fy) = (nw as f64 / w as f64, nh as f64 / h as f64);
                self.each_box(|b| [b[0] * fx, b[1] * fy, b[2] * fx, b[3] * fy]);
                self.each_mask(|m, fill| sample_nearest(m, 0.0, 0.0, w as f64, h as f64, nw, nh, fill));
                (nw, nh)
            }
            "crop" => {
                let [top, left, ch, cw] = [params[0], params[1], params[2], params[3]];
                self.each_box(|b| [b[0] - left, b[1] - top, b[2] - left, b[3] - top]);
                let (cw, ch) = (cw as usize, ch as usize);
                self.clamp(cw, ch);
                self.each_mask(|m, fill| sample_nearest(m, left, top, cw as f64, ch as f64, cw, ch, fill));
                (cw, ch)
            }
            "hflip" => {
                self.each_box(|b| [w as f64 - b[2], b[1], w as f64 - b[0], b[3]]);
                self.mask_op("hflip", &[])?;
                (w, h)
            }
            "vflip" => {
                self.each_box(|b| [b[0], h as f64 - b[3], b[2], h as f64 - b[1]]);
                self.mask_op("vflip", &[])?;
                (w, h)
            }
            "pad" => {
                let [left, top, right, bottom] = [params[0], params[1], params[2], params[3]];
                self.each_box(|b| [b[0] + left, b[1] + top, b[2] + left, b[3] + top]);
                let (nw, nh) = ((w as f64 + left + right) as usize, (h as f64 + top + bottom) as usize);
                self.clamp(nw, nh);
                let fill = self.mask_fill as f64;
                self.mask_op("pad", &[left, top, right, bottom, params[4], fill])?;
                (nw, nh)
            }
            "rotate" => {
                let (angle, expand) = (params[0], params[2] != 0.0);
                let m = forward_affine_matrix([w as f64 * 0.5, h as f64 * 0.5], -angle, [0.0, 0.0], 1.0, [0.0, 0.0]);
                let (size, shift) = if expand {
                    let inverse = warp::inverse_affine_matrix([0.0, 0.0], -angle, [0.0, 0.0], 1.0, [0.0, 0.0]);
                    let canvas = map_box(&[0.0, 0.0, w as f64, h as f64], &m, [0.0, 0.0]);
                    (warp::expanded_size(&inverse, w, h), [canvas[0], canvas[1]])
                } else {
                    ((w, h), [0.0, 0.0])
                };
                self.each_box(|b| map_box(b, &m, shift));
                self.clamp(size.0, size.1);
                let fill = self.mask_fill as f64;
                self.mask_op("rotate", &[angle, 0.0, params[2], fill])?;
                size
            }
            "affine" => {
                let center = if params.len() == 12 { [params[10], params[11]] } else { [w as f64 * 0.5, h as f64 * 0.5] };
                let m = forward_affine_matrix(center, params[0], [params[1], params[2]], params[3], [params[4], params[5]]);
                self.each_box(|b| map_box(b, &m, [0.0, 0.0]));
                self.clamp(w, h);
                let fill = self.mask_fill as f64;
                let mut p = params[..6].to_vec();
                p.extend([0.0, fill, fill, fill]);
                p.extend_from_slice(&params.get(10..).filter(|_| params.len() == 12).unwrap_or(&[]));
                self.mask_op("affine", &p)?;
                (w, h)
            }
            _ => (w, h),
        };
        self.width = nw;
        self.height = nh;
        Ok(())
    }

    fn each_box(&mut self, f: impl Fn(&[f64; 4]) -> [f64; 4]) {
        if let Some(b) = &mut self.boxes {
            b.each(f);
        }
    }

    fn clamp(&mut self, w: usize, h: usize) {
        if let Some(b) = &mut self.boxes {
            b.clamp(w, h);
        }
    }

    fn each_mask(&mut self, f: impl Fn(&Image, u8) -> Image) {
        if let Some(m) = &mut self.mask {
            *m = f(m, self.mask_fill);
        }
    }

    fn mask_op(&mut self, name: &str, params: &[f64]) -> Result<(), String> {
        match &mut self.mask {
            Some(m) => warp::apply(name, params, m).unwrap_or_else(|| Err(format!("unknown mask op {name:?}"))),
            None => Ok(()),
        }
    }

    /// The boxes handed out (clamped, alive) as they are now, for transforms that
    /// choose their parameters from them.
    pub fn live_boxes(&self) -> Vec<[f64; 4]> {
        self.boxes.as_ref().map_or_else(Vec::new, |b| b.clipped.iter().zip(&b.alive).filter(|(_, &a)| a).map(|(b, _)| *b).collect())
    }

    /// Marks the live boxes for which `keep` is false as dropped (`keep` has one entry
    /// per live box, in order).
    pub fn drop_live(&mut self, keep: &[bool]) {
        if let Some(b) = &mut self.boxes {
            let mut k = keep.iter();
            for alive in b.alive.iter_mut().filter(|a| **a) {
                if !k.next().copied().unwrap_or(true) {
                    *alive = false;
                }
            }
        }
    }

    /// The boxes that pass `filter`, as float32 xyxy, and their indices in the input.
    pub fn finish(&self, filter: &Filter) -> (Vec<[f32; 4]>, Vec<u32>) {
        let Some(b) = &self.boxes else { return (Vec::new(), Vec::new()) };
        let mut out = (Vec::new(), Vec::new());
        for (i, ((c, whole), &alive)) in b.clipped.iter().zip(&b.whole).zip(&b.alive).enumerate() {
            let (bw, bh) = (c[2] - c[0], c[3] - c[1]);
            let a = bw * bh;
            let whole_area = area(whole);
            let visible = if whole_area > 0.0 { a / whole_area } else { 0.0 };
            if alive && bw > 0.0 && bh > 0.0 && bw >= filter.min_size && bh >= filter.min_size && a >= filter.min_area && visible >= filter.min_visibility {
                out.0.push(c.map(|v| v as f32));
                out.1.push(i as u32);
            }
        }
        out
    }
}

/// `(ow, oh)` labels of the box (left, top, width, height) of `m`, each output pixel
/// the label under its centre; outside `m`, `fill`.
#[allow(clippy::too_many_arguments)]
pub fn sample_nearest(m: &Image, left: f64, top: f64, width: f64, height: f64, ow: usize, oh: usize, fill: u8) -> Image {
    let mut out = Image::new(ow, oh, 1);
    out.data.fill(fill);
    if ow == 0 || oh == 0 {
        return out;
    }
    let (fx, fy) = (width / ow as f64, height / oh as f64);
    let cols: Vec<Option<usize>> = (0..ow)
        .map(|j| {
            let x = (left + (j as f64 + 0.5) * fx).floor();
            (x >= 0.0 && x < m.width as f64).then_some(x as usize)
        })
        .collect();
    for (i, row) in out.data.chunks_exact_mut(ow).enumerate() {
        let y = (top + (i as f64 + 0.5) * fy).floor();
        if y < 0.0 || y >= m.height as f64 {
            continue;
        }
        let src = &m.data[y as usize * m.width..(y as usize + 1) * m.width];
        for (px, col) in row.iter_mut().zip(&cols) {
            if let Some(x) = col {
                *px = src[*x];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(boxes: &[[f64; 4]], w: usize, h: usize) -> Targets {
        Targets::new(Some(boxes), None, 0, w, h).unwrap()
    }

    #[test]
    fn crop_shifts_and_clamps_but_keeps_the_whole_box() {
        let mut t = targets(&[[10.0, 10.0, 30.0, 20.0]], 100, 50);
        t.follow("crop", &[5.0, 20.0, 30.0, 40.0]).unwrap();
        let b = t.boxes.as_ref().unwrap();
        assert_eq!(b.clipped[0], [0.0, 5.0, 10.0, 15.0]);
        assert_eq!(b.whole[0], [-10.0, 5.0, 10.0, 15.0]);
        let (out, idx) = t.finish(&Filter { min_area: 1.0, min_size: 1.0, min_visibility: 0.6 });
        assert!(out.is_empty() && idx.is_empty(), "half visible < 0.6");
        let (out, idx) = t.finish(&Filter { min_area: 1.0, min_size: 1.0, min_visibility: 0.5 });
        assert_eq!((out, idx), (vec![[0.0, 5.0, 10.0, 15.0]], vec![0]));
    }

    #[test]
    fn flips_mirror_and_a_quarter_turn_maps_corners() {
        let mut t = targets(&[[10.0, 0.0, 30.0, 20.0]], 100, 50);
        t.follow("hflip", &[]).unwrap();
        assert_eq!(t.boxes.as_ref().unwrap().clipped[0], [70.0, 0.0, 90.0, 20.0]);
        t.follow("vflip", &[]).unwrap();
        assert_eq!(t.boxes.as_ref().unwrap().clipped[0], [70.0, 30.0, 90.0, 50.0]);
        // 90 degrees counter-clockwise with expand: (x, y) -> (y, W - x) on a 50x100 canvas.
        let mut t = targets(&[[10.0, 0.0, 30.0, 20.0]], 100, 50);
        t.follow("rotate", &[90.0, 0.0, 1.0]).unwrap();
        assert_eq!((t.width, t.height), (50, 100));
        let b = t.boxes.as_ref().unwrap().clipped[0];
        for (got, want) in b.iter().zip([0.0, 70.0, 20.0, 90.0]) {
            assert!((got - want).abs() < 1e-9, "{b:?}");
        }
    }

    #[test]
    fn masks_take_the_label_under_each_pixel_centre() {
        let m = Image::from_vec(vec![1, 2, 3, 4], 2, 2, 1).unwrap();
        assert_eq!(sample_nearest(&m, 0.0, 0.0, 2.0, 2.0, 4, 4, 9).data, vec![1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
        assert_eq!(sample_nearest(&m, -1.0, 0.0, 3.0, 1.0, 3, 1, 9).data, vec![9, 1, 2]);
    }
}
