//! Crop, flip, `copyMakeBorder`, `resize` and `warpAffine` as OpenCV computes them on 8-bit
//! images: the same coordinate maps, the same fixed-point weights and rounding.

use super::{Img, Interp};

/// OpenCV's border modes (`cv2.BORDER_*`; `BORDER_TRANSPARENT` is not fused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Border {
    Constant,
    Replicate,
    Reflect,
    Wrap,
    Reflect101,
}

impl Border {
    pub fn from_cv(v: i64) -> Result<Border, String> {
        Ok(match v {
            0 => Border::Constant,
            1 => Border::Replicate,
            2 => Border::Reflect,
            3 => Border::Wrap,
            4 => Border::Reflect101,
            other => return Err(format!("border mode {other} is not fused")),
        })
    }
}

/// OpenCV's `borderInterpolate`: the index inside `0..len` that `p` reads, or None for a
/// constant border outside.
pub fn border_index(p: i64, len: usize, border: Border) -> Option<usize> {
    let n = len as i64;
    if (0..n).contains(&p) {
        return Some(p as usize);
    }
    let q = match border {
        Border::Constant => return None,
        Border::Replicate => {
            if p < 0 {
                0
            } else {
                n - 1
            }
        }
        Border::Reflect | Border::Reflect101 => {
            if n == 1 {
                return Some(0);
            }
            let delta = (border == Border::Reflect101) as i64;
            let mut q = p;
            loop {
                if q < 0 {
                    q = -q - 1 + delta;
                } else {
                    q = n - 1 - (q - n) - delta;
                }
                if (0..n).contains(&q) {
                    break q;
                }
            }
        }
        Border::Wrap => {
            let mut q = p;
            if q < 0 {
                q -= ((q - n + 1) / n) * n;
            }
            if q >= n {
                q %= n;
            }
            q
        }
    };
    Some(q as usize)
}

/// `saturate_cast<uchar>(v)`: rounded half to even, clamped.
fn to_u8(v: f64) -> u8 {
    v.round_ties_even().clamp(0.0, 255.0) as u8
}

fn fill_bytes(fill: &[f64; 4], c: usize) -> Vec<u8> {
    (0..c).map(|k| to_u8(fill[k.min(3)])).collect()
}

pub fn crop(img: &Img, x0: usize, y0: usize, x1: usize, y1: usize) -> Result<Img, String> {
    if x1 <= x0 || y1 <= y0 || x1 > img.w || y1 > img.h {
        return Err(format!("crop ({x0}, {y0}, {x1}, {y1}) is not inside a {}x{} image", img.w, img.h));
    }
    let (w, c) = (x1 - x0, img.c);
    let mut out = Img::new(y1 - y0, w, c);
    for y in y0..y1 {
        let src = &img.data[(y * img.w + x0) * c..(y * img.w + x1) * c];
        out.data[(y - y0) * w * c..(y - y0 + 1) * w * c].copy_from_slice(src);
    }
    Ok(out)
}

pub fn flip(mut img: Img, horizontal: bool) -> Img {
    let (w, c) = (img.w, img.c);
    let row = w * c;
    if horizontal {
        for line in img.data.chunks_exact_mut(row) {
            for x in 0..w / 2 {
                for k in 0..c {
                    line.swap(x * c + k, (w - 1 - x) * c + k);
                }
            }
        }
    } else {
        let h = img.h;
        for y in 0..h / 2 {
            let (top, bottom) = img.data.split_at_mut((h - 1 - y) * row);
            top[y * row..(y + 1) * row].swap_with_slice(&mut bottom[..row]);
        }
    }
    img
}

pub fn pad(img: &Img, top: usize, bottom: usize, left: usize, right: usize, border: Border, fill: &[f64; 4]) -> Img {
    let (h, w, c) = (img.h + top + bottom, img.w + left + right, img.c);
    let value = fill_bytes(fill, c);
    let mut out = Img::new(h, w, c);
    let cols: Vec<Option<usize>> = (0..w).map(|x| border_index(x as i64 - left as i64, img.w, border)).collect();
    for y in 0..h {
        let sy = border_index(y as i64 - top as i64, img.h, border);
        for (x, sx) in cols.iter().enumerate() {
            let dst = &mut out.data[(y * w + x) * c..(y * w + x + 1) * c];
            match (sy, sx) {
                (Some(sy), Some(sx)) => dst.copy_from_slice(&img.data[(sy * img.w + sx) * c..(sy * img.w + sx + 1) * c]),
                _ => dst.copy_from_slice(&value),
            }
        }
    }
    out
}

const COEF_SCALE: f32 = 2048.0;

/// `saturate_cast<short>(v)` of a float.
fn to_i16(v: f32) -> i32 {
    (v.round_ties_even() as i32).clamp(i16::MIN as i32, i16::MAX as i32)
}

/// The two source indices and their fixed-point weights for each output index along one
/// axis (OpenCV's `resizeGeneric` setup for `INTER_LINEAR`). Across a row, a tap outside
/// the image becomes the edge pixel at full weight; down the columns OpenCV keeps the
/// weights and clamps each row instead, which rounds differently: `clamp_weights` says which.
fn linear_taps(src: usize, dst: usize, clamp_weights: bool) -> Vec<(usize, usize, i32, i32)> {
    let scale = src as f64 / dst as f64;
    let last = src as i64 - 1;
    (0..dst)
        .map(|d| {
            let mut f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            f -= s as f32;
            if clamp_weights {
                if s < 0 {
                    f = 0.0;
                    s = 0;
                }
                if s >= last {
                    f = 0.0;
                    s = last;
                }
            }
            let (s0, s1) = (s.clamp(0, last) as usize, (s + 1).clamp(0, last) as usize);
            (s0, s1, to_i16((1.0 - f) * COEF_SCALE), to_i16(f * COEF_SCALE))
        })
        .collect()
}

pub fn resize(img: &Img, h: usize, w: usize, interp: Interp) -> Result<Img, String> {
    if h == 0 || w == 0 || img.h == 0 || img.w == 0 {
        return Err(format!("cannot resize a {}x{} image to {w}x{h}", img.w, img.h));
    }
    if (h, w) == (img.h, img.w) {
        return Ok(img.clone()); // albumentations returns the image as it is
    }
    Ok(match interp {
        Interp::Nearest => resize_nearest(img, h, w),
        // OpenCV takes INTER_AREA's path for an exact halving: the same as linear up to rounding.
        Interp::Linear if img.h == 2 * h && img.w == 2 * w => halve(img, h, w),
        Interp::Linear => resize_linear(img, h, w),
    })
}

fn resize_nearest(img: &Img, h: usize, w: usize) -> Img {
    let c = img.c;
    let (fx, fy) = (img.w as f64 / w as f64, img.h as f64 / h as f64);
    let xs: Vec<usize> = (0..w).map(|x| ((x as f64 * fx).floor() as usize).min(img.w - 1)).collect();
    let mut out = Img::new(h, w, c);
    for y in 0..h {
        let sy = ((y as f64 * fy).floor() as usize).min(img.h - 1);
        for (x, sx) in xs.iter().enumerate() {
            let s = (sy * img.w + sx) * c;
            out.data[(y * w + x) * c..(y * w + x + 1) * c].copy_from_slice(&img.data[s..s + c]);
        }
    }
    out
}

fn halve(img: &Img, h: usize, w: usize) -> Img {
    let c = img.c;
    let mut out = Img::new(h, w, c);
    let row = img.w * c;
    for y in 0..h {
        for x in 0..w {
            for k in 0..c {
                let s = (2 * y) * row + (2 * x) * c + k;
                let sum = img.data[s] as u32 + img.data[s + c] as u32 + img.data[s + row] as u32 + img.data[s + row + c] as u32;
                out.data[(y * w + x) * c + k] = ((sum + 2) >> 2) as u8;
            }
        }
    }
    out
}

fn resize_linear(img: &Img, h: usize, w: usize) -> Img {
    let c = img.c;
    let xt = linear_taps(img.w, w, true);
    let yt = linear_taps(img.h, h, false);
    let row = w * c;
    // The horizontal taps of every output value of a row (each channel its own entry).
    let taps: Vec<(u32, u32, i32, i32)> = xt
        .iter()
        .flat_map(|&(s0, s1, a0, a1)| (0..c).map(move |k| ((s0 * c + k) as u32, (s1 * c + k) as u32, a0, a1)))
        .collect();
    let hpass = |sy: usize, d: &mut [i32]| {
        let src = &img.data[sy * img.w * c..(sy + 1) * img.w * c];
        for (o, &(i0, i1, a0, a1)) in d.iter_mut().zip(&taps) {
            *o = src[i0 as usize] as i32 * a0 + src[i1 as usize] as i32 * a1;
        }
    };
    let mut out = Img::new(h, w, c);
    // The horizontal pass of two source rows, kept while the next output rows need them.
    let mut held = [usize::MAX; 2];
    let mut bufs = [vec![0i32; row], vec![0i32; row]];
    for (dst, &(sy, ny, b0, b1)) in out.data.chunks_exact_mut(row).zip(&yt) {
        for r in [sy, ny] {
            if !held.contains(&r) {
                let slot = if held[0] == sy || held[0] == ny { 1 } else { 0 };
                hpass(r, &mut bufs[slot]);
                held[slot] = r;
            }
        }
        let (s0, s1) = (&bufs[(held[1] == sy) as usize], &bufs[(held[1] == ny) as usize]);
        for ((d, &a), &b) in dst.iter_mut().zip(s0.iter()).zip(s1.iter()) {
            // OpenCV's vector form: 16-bit high products of the sums shifted by 4, then
            // a rounding shift by 2 (not the scalar (s0 * b0 + s1 * b1 + 2^21) >> 22).
            let m0 = ((a >> 4) * b0) >> 16;
            let m1 = ((b >> 4) * b1) >> 16;
            *d = ((m0 + m1 + 2) >> 2).clamp(0, 255) as u8;
        }
    }
    out
}

/// OpenCV's `invertAffineTransform` (warpAffine without WARP_INVERSE_MAP).
fn invert(m: &[f64; 6]) -> [f64; 6] {
    let d = m[0] * m[4] - m[1] * m[3];
    let d = if d != 0.0 { 1.0 / d } else { 0.0 };
    let (a11, a22, a12, a21) = (m[4] * d, m[0] * d, -m[1] * d, -m[3] * d);
    let b1 = -a11 * m[2] - a12 * m[5];
    let b2 = -a21 * m[2] - a22 * m[5];
    [a11, a12, b1, a21, a22, b2]
}

/// `x.floor()` for the warp's coordinates (|x| <= 1e9), without the libm call that
/// `floor` is on CPUs the build does not assume SSE4.1 for.
#[inline]
fn floor(x: f64) -> i64 {
    let t = x as i64;
    t - ((t as f64) > x) as i64
}

/// `v.round_ties_even()` for |v| < 2^22 (a blend of bytes): adding and taking away
/// 1.5 * 2^23 leaves the float rounded to an integer in the default rounding mode, ties
/// to even, with no libm call.
#[inline]
fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// `cv2.warpAffine` as OpenCV 5 computes it: each output pixel's source point in double
/// precision, the nearest pixel (rounded half to even) or a bilinear blend of four in
/// single precision, rounded; taps outside the image follow the border mode.
pub fn warp_affine(img: &Img, m: &[f64; 6], h: usize, w: usize, interp: Interp, border: Border, fill: &[f64; 4]) -> Result<Img, String> {
    if img.h == 0 || img.w == 0 {
        return Err("cannot warp an empty image".into());
    }
    let c = img.c;
    let m = invert(m);
    let cval: Vec<f32> = fill_bytes(fill, c).iter().map(|v| *v as f32).collect();
    let (iw, ih) = (img.w as i64, img.h as i64);
    let row = img.w * c;
    // A tap outside the image: its border rule, or the fill.
    let at = |x: i64, y: i64, k: usize| -> f32 {
        match (border_index(x, img.w, border), border_index(y, img.h, border)) {
            (Some(x), Some(y)) => img.data[y * row + x * c + k] as f32,
            _ => cval[k],
        }
    };
    let mut out = Img::new(h, w, c);
    for (y, line) in out.data.chunks_exact_mut(w * c).enumerate() {
        for (x, dst) in line.chunks_exact_mut(c).enumerate() {
            let sx = m[0] * x as f64 + m[1] * y as f64 + m[2];
            let sy = m[3] * x as f64 + m[4] * y as f64 + m[5];
            if !(sx.is_finite() && sy.is_finite()) || sx.abs() > 1e9 || sy.abs() > 1e9 {
                for (k, d) in dst.iter_mut().enumerate() {
                    *d = at(-1, -1, k) as u8;
                }
                continue;
            }
            if interp == Interp::Nearest {
                let (ix, iy) = (sx.round_ties_even() as i64, sy.round_ties_even() as i64);
                if ix >= 0 && iy >= 0 && ix < iw && iy < ih {
                    let o = iy as usize * row + ix as usize * c;
                    dst.copy_from_slice(&img.data[o..o + c]);
                } else {
                    for (k, d) in dst.iter_mut().enumerate() {
                        *d = at(ix, iy, k) as u8;
                    }
                }
                continue;
            }
            let (ix, iy) = (floor(sx), floor(sy));
            let (a, b) = ((sx - ix as f64) as f32, (sy - iy as f64) as f32);
            let blend = |p00: f32, p01: f32, p10: f32, p11: f32| -> u8 {
                let v0 = p00 + a * (p01 - p00);
                let v1 = p10 + a * (p11 - p10);
                round_even(v0 + b * (v1 - v0)).clamp(0.0, 255.0) as u8
            };
            if ix >= 0 && iy >= 0 && ix + 1 < iw && iy + 1 < ih {
                // All four taps inside: straight reads, no border rule.
                let o = iy as usize * row + ix as usize * c;
                let (top, bottom) = (&img.data[o..o + 2 * c], &img.data[o + row..o + row + 2 * c]);
                for (k, d) in dst.iter_mut().enumerate() {
                    *d = blend(top[k] as f32, top[c + k] as f32, bottom[k] as f32, bottom[c + k] as f32);
                }
            } else {
                for (k, d) in dst.iter_mut().enumerate() {
                    *d = blend(at(ix, iy, k), at(ix + 1, iy, k), at(ix, iy + 1, k), at(ix + 1, iy + 1, k));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_floor_and_rounding_equal_std() {
        for i in -40_000..40_000 {
            let x = i as f64 * 0.0371 - 0.5;
            assert_eq!(floor(x), x.floor() as i64, "{x}");
            let v = (i as f32 * 0.00797).abs() % 300.0 - 10.0;
            assert_eq!(round_even(v), v.round_ties_even(), "{v}");
        }
        for v in [0.5f32, 1.5, 2.5, 254.5, 255.5, -0.5, 0.49999997, 127.50001] {
            assert_eq!(round_even(v), v.round_ties_even(), "{v}");
        }
        assert_eq!((floor(-1e9), floor(1e9 - 0.5)), (-1_000_000_000, 999_999_999));
    }

    #[test]
    fn border_rules_are_opencvs() {
        // OpenCV's documented examples for a row "abcdefgh" (len 8).
        let idx = |p, b| border_index(p, 8, b);
        assert_eq!((idx(-1, Border::Replicate), idx(9, Border::Replicate)), (Some(0), Some(7)));
        assert_eq!((idx(-1, Border::Reflect), idx(-2, Border::Reflect), idx(8, Border::Reflect)), (Some(0), Some(1), Some(7)));
        assert_eq!((idx(-1, Border::Reflect101), idx(8, Border::Reflect101)), (Some(1), Some(6)));
        assert_eq!((idx(-1, Border::Wrap), idx(8, Border::Wrap), idx(-9, Border::Wrap)), (Some(7), Some(0), Some(7)));
        assert_eq!(idx(-1, Border::Constant), None);
    }

    #[test]
    fn identity_warp_and_same_size_resize_keep_the_image() {
        let img = Img { h: 3, w: 4, c: 1, data: (0..12).map(|v| v as u8 * 20).collect() };
        let same = warp_affine(&img, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 3, 4, Interp::Linear, Border::Constant, &[0.0; 4]).unwrap();
        assert_eq!(same, img);
        assert_eq!(resize(&img, 3, 4, Interp::Linear).unwrap(), img);
    }

    #[test]
    fn a_whole_pixel_shift_moves_pixels_and_fills_the_rest() {
        let img = Img { h: 2, w: 3, c: 1, data: vec![10, 20, 30, 40, 50, 60] };
        let out = warp_affine(&img, &[1.0, 0.0, 1.0, 0.0, 1.0, 0.0], 2, 3, Interp::Linear, Border::Constant, &[7.0; 4]).unwrap();
        assert_eq!(out.data, vec![7, 10, 20, 7, 40, 50]);
    }

    #[test]
    fn vertical_flip_reverses_rows() {
        let img = Img { h: 3, w: 1, c: 2, data: vec![1, 2, 3, 4, 5, 6] };
        assert_eq!(flip(img, false).data, vec![5, 6, 3, 4, 1, 2]);
    }
}
