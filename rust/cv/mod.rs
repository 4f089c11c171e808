//! Pixel ops with OpenCV's semantics, each with its parameters decided beforehand: what
//! albumentations' transforms do to an image (and its mask) once albumentations has
//! drawn their parameters. The Python side (`lancefeed.transforms.albumentations`) draws
//! them with albumentations' own code and hands over a list of these ops per sample;
//! pointwise colour maps arrive as lookup tables computed by albumentations itself.
//!
//! Arithmetic follows OpenCV's where it is integer (`cv2.resize` and `cv2.warpAffine`'s
//! fixed point, `RGB2GRAY`, `RGB2HSV`, `copyMakeBorder`'s border rules); where OpenCV
//! computes in floating point (`HSV2RGB`, `addWeighted`, `sepFilter2D`) the result may
//! differ from its by one level (see the README's albumentations section for the bounds
//! the tests measure).

mod color;
mod decode;
mod geometry;

pub use decode::{decode_batch, decode_mask_run, decode_run, Decoded, Failure, Sample};
pub use geometry::{border_index, Border};

/// An 8-bit image, rows of `w * c` values.
#[derive(Clone, Debug, PartialEq)]
pub struct Img {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<u8>,
}

impl Img {
    pub fn new(h: usize, w: usize, c: usize) -> Img {
        Img { h, w, c, data: vec![0; h * w * c] }
    }
}

/// What a run gives: an 8-bit image, or a float32 one after `Normalize`.
#[derive(Debug, PartialEq)]
pub enum Output {
    U8(Img),
    F32 { h: usize, w: usize, c: usize, data: Vec<f32> },
}

/// OpenCV's `INTER_NEAREST` and `INTER_LINEAR` (others are not fused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interp {
    Nearest,
    Linear,
}

/// One op, its parameters decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `img[y0:y1, x0:x1]`.
    Crop { x0: usize, y0: usize, x1: usize, y1: usize },
    /// `cv2.resize(img, (w, h), interpolation)`.
    Resize { h: usize, w: usize, interp: Interp },
    /// `cv2.copyMakeBorder`.
    Pad { top: usize, bottom: usize, left: usize, right: usize, border: Border, fill: [f64; 4] },
    /// `cv2.flip(img, 1)` (horizontal) or `cv2.flip(img, 0)`.
    Flip { horizontal: bool },
    /// `cv2.warpAffine(img, m, (w, h), flags=interp, borderMode=border, borderValue=fill)`: `m`
    /// the forward matrix, as albumentations passes it (OpenCV inverts it).
    Warp { m: [f64; 6], h: usize, w: usize, interp: Interp, border: Border, fill: [f64; 4] },
    /// A table of 256 values per channel (pointwise ops, computed by albumentations).
    Lut { table: Vec<u8> },
    /// albumentations' `adjust_contrast_torchvision`: the mean of `RGB2GRAY` as the pivot.
    Contrast { factor: f64 },
    /// `adjust_saturation_torchvision`: `addWeighted(img, f, gray, 1 - f, 0)`.
    Saturation { factor: f64 },
    /// `RGB2HSV`, a table on each of H, S and V, `HSV2RGB`; with `keep_gray`, a pixel of
    /// saturation 0 keeps it (albumentations' `shift_hsv`).
    Hsv { hue: Vec<u8>, sat: Vec<u8>, val: Vec<u8>, keep_gray: bool },
    /// `RGB2GRAY`, as `channels` copies.
    Gray { channels: usize },
    /// `cv2.sepFilter2D(img, -1, k, k)` (reflect-101 border).
    Blur { kernel: Vec<f64> },
    /// Rectangles `[x0, y0, x1, y1)` set to `fill`.
    Holes { rects: Vec<[usize; 4]>, fill: [f64; 4] },
    /// A float32 table of 256 values per channel: the image becomes float (the last op).
    Normalize { table: Vec<f32> },
}

/// Runs `ops` on `img` in order.
pub fn run(mut img: Img, ops: &[Op]) -> Result<Output, String> {
    for (i, op) in ops.iter().enumerate() {
        if let Op::Normalize { table } = op {
            if i + 1 != ops.len() {
                return Err("Normalize must be the last op".into());
            }
            return color::normalize(&img, table);
        }
        img = apply(img, op)?;
    }
    Ok(Output::U8(img))
}

fn apply(img: Img, op: &Op) -> Result<Img, String> {
    Ok(match op {
        Op::Crop { x0, y0, x1, y1 } => geometry::crop(&img, *x0, *y0, *x1, *y1)?,
        Op::Resize { h, w, interp } => geometry::resize(&img, *h, *w, *interp)?,
        Op::Pad { top, bottom, left, right, border, fill } => geometry::pad(&img, *top, *bottom, *left, *right, *border, fill),
        Op::Flip { horizontal } => geometry::flip(img, *horizontal),
        Op::Warp { m, h, w, interp, border, fill } => geometry::warp_affine(&img, m, *h, *w, *interp, *border, fill)?,
        Op::Lut { table } => color::lut(img, table)?,
        Op::Contrast { factor } => color::contrast(img, *factor),
        Op::Saturation { factor } => color::saturation(img, *factor),
        Op::Hsv { hue, sat, val, keep_gray } => color::hsv(img, hue, sat, val, *keep_gray)?,
        Op::Gray { channels } => color::gray(&img, *channels),
        Op::Blur { kernel } => color::blur(&img, kernel)?,
        Op::Holes { rects, fill } => color::holes(img, rects, fill),
        Op::Normalize { .. } => unreachable!("handled by run"),
    })
}

fn int(v: f64, what: &str) -> Result<usize, String> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= u32::MAX as f64 {
        Ok(v as usize)
    } else {
        Err(format!("{what} must be a non-negative integer, got {v}"))
    }
}

fn interp(v: f64) -> Result<Interp, String> {
    match v as i64 {
        0 => Ok(Interp::Nearest),
        1 => Ok(Interp::Linear),
        other => Err(format!("interpolation {other} is not fused (0: nearest, 1: linear)")),
    }
}

fn fill(p: &[f64]) -> [f64; 4] {
    let mut f = [0.0; 4];
    for (i, v) in p.iter().take(4).enumerate() {
        f[i] = *v;
    }
    if p.len() == 1 {
        f = [p[0]; 4];
    }
    f
}

fn bytes(p: &[f64], what: &str) -> Result<Vec<u8>, String> {
    p.iter()
        .map(|v| if (0.0..=255.0).contains(v) && v.fract() == 0.0 { Ok(*v as u8) } else { Err(format!("{what}: {v} is not a byte")) })
        .collect()
}

/// An op from its name and numbers (the form the Python side sends).
pub fn parse(name: &str, p: &[f64]) -> Result<Op, String> {
    let need = |n: usize| if p.len() >= n { Ok(()) } else { Err(format!("{name} takes {n} parameters, got {}", p.len())) };
    Ok(match name {
        "crop" => {
            need(4)?;
            Op::Crop { x0: int(p[0], "crop x0")?, y0: int(p[1], "crop y0")?, x1: int(p[2], "crop x1")?, y1: int(p[3], "crop y1")? }
        }
        "resize" => {
            need(3)?;
            Op::Resize { h: int(p[0], "resize height")?, w: int(p[1], "resize width")?, interp: interp(p[2])? }
        }
        "pad" => {
            need(5)?;
            Op::Pad {
                top: int(p[0], "pad")?,
                bottom: int(p[1], "pad")?,
                left: int(p[2], "pad")?,
                right: int(p[3], "pad")?,
                border: Border::from_cv(p[4] as i64)?,
                fill: fill(&p[5..]),
            }
        }
        "hflip" => Op::Flip { horizontal: true },
        "vflip" => Op::Flip { horizontal: false },
        "warp" => {
            need(10)?;
            Op::Warp {
                m: [p[0], p[1], p[2], p[3], p[4], p[5]],
                h: int(p[6], "warp height")?,
                w: int(p[7], "warp width")?,
                interp: interp(p[8])?,
                border: Border::from_cv(p[9] as i64)?,
                fill: fill(&p[10..]),
            }
        }
        "lut" => Op::Lut { table: bytes(p, "lut")? },
        "contrast" => {
            need(1)?;
            Op::Contrast { factor: p[0] }
        }
        "saturation" => {
            need(1)?;
            Op::Saturation { factor: p[0] }
        }
        "hsv" => {
            need(769)?;
            Op::Hsv { hue: bytes(&p[0..256], "hue")?, sat: bytes(&p[256..512], "sat")?, val: bytes(&p[512..768], "val")?, keep_gray: p[768] != 0.0 }
        }
        "gray" => {
            need(1)?;
            Op::Gray { channels: int(p[0], "gray channels")? }
        }
        "blur" => Op::Blur { kernel: p.to_vec() },
        "holes" => {
            need(1)?;
            let n = int(p[0], "holes")?;
            need(1 + 4 * n)?;
            let rects = (0..n)
                .map(|i| {
                    let r = &p[1 + 4 * i..5 + 4 * i];
                    Ok([int(r[0], "hole")?, int(r[1], "hole")?, int(r[2], "hole")?, int(r[3], "hole")?])
                })
                .collect::<Result<Vec<_>, String>>()?;
            Op::Holes { rects, fill: fill(&p[1 + 4 * n..]) }
        }
        "normalize" => Op::Normalize { table: p.iter().map(|v| *v as f32).collect() },
        other => return Err(format!("unknown op {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: usize, w: usize, c: usize) -> Img {
        let data = (0..h * w * c).map(|i| (i * 7 % 251) as u8).collect();
        Img { h, w, c, data }
    }

    #[test]
    fn crop_then_flip_is_the_slice_reversed() {
        let img = ramp(5, 6, 3);
        let out = run(img.clone(), &[parse("crop", &[1.0, 2.0, 4.0, 5.0]).unwrap(), parse("hflip", &[]).unwrap()]).unwrap();
        let Output::U8(out) = out else { panic!() };
        assert_eq!((out.h, out.w), (3, 3));
        for y in 0..3 {
            for x in 0..3 {
                for ch in 0..3 {
                    let src = img.data[((y + 2) * 6 + (1 + 2 - x)) * 3 + ch];
                    assert_eq!(out.data[(y * 3 + x) * 3 + ch], src);
                }
            }
        }
    }

    #[test]
    fn normalize_must_come_last() {
        let n = parse("normalize", &vec![0.0; 768]).unwrap();
        assert!(run(ramp(2, 2, 3), &[n.clone(), Op::Flip { horizontal: true }]).is_err());
        let Output::F32 { data, .. } = run(ramp(2, 2, 3), &[n]).unwrap() else { panic!() };
        assert_eq!(data.len(), 12);
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(parse("crop", &[1.0, 2.0]).is_err());
        assert!(parse("resize", &[4.0, 4.0, 3.0]).is_err()); // INTER_AREA is not fused
        assert!(parse("lut", &[300.0]).is_err());
        assert!(parse("nope", &[]).is_err());
        assert!(run(ramp(4, 4, 3), &[parse("crop", &[0.0, 0.0, 5.0, 2.0]).unwrap()]).is_err());
    }
}
