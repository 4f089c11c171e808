//! Colour ops with OpenCV's arithmetic: `RGB2GRAY` and `RGB2HSV` in its integer form,
//! `HSV2RGB`, `addWeighted` and `sepFilter2D` in single precision as it computes them;
//! lookup tables computed by albumentations itself.

use super::geometry::{border_index, Border};
use super::{Img, Output};

/// `table` (256 values, or 256 per channel) applied to every pixel.
pub fn lut(mut img: Img, table: &[u8]) -> Result<Img, String> {
    let c = img.c;
    if table.len() == 256 {
        for v in img.data.iter_mut() {
            *v = table[*v as usize];
        }
    } else if table.len() == 256 * c {
        for (i, v) in img.data.iter_mut().enumerate() {
            *v = table[(i % c) * 256 + *v as usize];
        }
    } else {
        return Err(format!("a lookup table has 256 values or 256 per channel ({c}), got {}", table.len()));
    }
    Ok(img)
}

/// `cv2.cvtColor(RGB2GRAY)` on 8 bits: OpenCV 5's fixed-point weights (15 bits).
fn gray_of(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 9798 + g as u32 * 19235 + b as u32 * 3735 + (1 << 14)) >> 15) as u8
}

fn grays(img: &Img) -> Vec<u8> {
    if img.c == 1 {
        return img.data.clone();
    }
    img.data.chunks_exact(img.c).map(|p| gray_of(p[0], p[1], p[2])).collect()
}

pub fn gray(img: &Img, channels: usize) -> Img {
    let g = grays(img);
    let mut out = Img::new(img.h, img.w, channels);
    for (i, v) in g.iter().enumerate() {
        out.data[i * channels..(i + 1) * channels].fill(*v);
    }
    out
}

/// albumentations' `adjust_contrast_torchvision`: pivot on the mean grey level.
pub fn contrast(img: Img, factor: f64) -> Img {
    if factor == 1.0 {
        return img;
    }
    let g = grays(&img);
    // numpy's float64 mean of the grey image: its sum is exact in float64.
    let mean = g.iter().map(|v| *v as u64).sum::<u64>() as f64 / g.len().max(1) as f64;
    if factor == 0.0 {
        let level = (mean + 0.5) as u8;
        return Img { data: vec![level; img.data.len()], ..img };
    }
    // albucore's multiply_add LUT: float32 (arange * factor + value), clipped, truncated.
    let (f, add) = (factor as f32, (mean * (1.0 - factor)) as f32);
    let table: Vec<u8> = (0..256).map(|v| (v as f32 * f + add).clamp(0.0, 255.0) as u8).collect();
    let mut img = img;
    for v in img.data.iter_mut() {
        *v = table[*v as usize];
    }
    img
}

/// `addWeighted(img, f, gray, 1 - f, 0)` as OpenCV 5 computes it: `fma(x, f, g * (1 - f))`
/// in single precision, rounded half to even.
pub fn saturation(mut img: Img, factor: f64) -> Img {
    if factor == 1.0 || img.c == 1 {
        return img;
    }
    let (a, b) = (factor as f32, (1.0 - factor) as f32);
    let c = img.c;
    for p in img.data.chunks_exact_mut(c) {
        let g = gray_of(p[0], p[1], p[2]) as f32;
        for v in p.iter_mut().take(3) {
            *v = if factor == 0.0 { g as u8 } else { (*v as f32).mul_add(a, g * b).round_ties_even().clamp(0.0, 255.0) as u8 };
        }
    }
    img
}

const HSV_SHIFT: i32 = 12;

struct HsvTables {
    sdiv: [i32; 256],
    hdiv: [i32; 256],
}

fn hsv_tables() -> &'static HsvTables {
    static TABLES: std::sync::OnceLock<HsvTables> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let (mut sdiv, mut hdiv) = ([0i32; 256], [0i32; 256]);
        for i in 1..256 {
            sdiv[i] = ((255 << HSV_SHIFT) as f64 / i as f64).round_ties_even() as i32;
            hdiv[i] = ((180 << HSV_SHIFT) as f64 / (6.0 * i as f64)).round_ties_even() as i32;
        }
        HsvTables { sdiv, hdiv }
    })
}

/// OpenCV's `RGB2HSV` on 8 bits (H in 0..180).
fn rgb_to_hsv(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let t = hsv_tables();
    let (r, g, b) = (r as i32, g as i32, b as i32);
    let v = b.max(g).max(r);
    let vmin = b.min(g).min(r);
    let diff = v - vmin;
    let vr = if v == r { -1 } else { 0 };
    let vg = if v == g { -1 } else { 0 };
    let s = (diff * t.sdiv[v as usize] + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
    let mut h = (vr & (g - b)) + (!vr & ((vg & (b - r + 2 * diff)) + (!vg & (r - g + 4 * diff))));
    h = (h * t.hdiv[diff as usize] + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
    if h < 0 {
        h += 180;
    }
    (h.clamp(0, 255) as u8, s as u8, v as u8)
}

/// OpenCV 5's `HSV2RGB` on 8 bits, in single precision: its vector loop (64 pixels at a
/// time) uses fused multiply-adds and truncates; the row's last `w % 64` pixels go
/// through its scalar code, which rounds (`vector` says which).
fn hsv_to_rgb(h: u8, s: u8, v: u8, vector: bool) -> (u8, u8, u8) {
    const SECTORS: [[usize; 3]; 6] = [[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]];
    let inv255 = (1.0f64 / 255.0) as f32;
    let (s, v) = (s as f32 * inv255, v as f32 * inv255);
    let (b, g, r) = if s == 0.0 {
        (v, v, v)
    } else {
        let mut h = h as f32 * (6.0f64 / 180.0) as f32;
        h %= 6.0;
        if h < 0.0 {
            h += 6.0;
        }
        let mut sector = h.floor() as i32;
        h -= sector as f32;
        if !(0..6).contains(&sector) {
            sector = 0;
            h = 0.0;
        }
        let tab = if vector {
            [v, v * (1.0 - s), v * (-s).mul_add(h, 1.0), v * (-s).mul_add(1.0 - h, 1.0)]
        } else {
            [v, v * (1.0 - s), v * (1.0 - s * h), v * (1.0 - s * (1.0 - h))]
        };
        let sd = SECTORS[sector as usize];
        (tab[sd[0]], tab[sd[1]], tab[sd[2]])
    };
    let q = |x: f32| {
        let y = x * 255.0;
        (if vector { y.floor() } else { y.round_ties_even() }).clamp(0.0, 255.0) as u8
    };
    (q(r), q(g), q(b))
}

/// `RGB2HSV`, tables on H, S and V (S of a grey pixel kept at 0 with `keep_gray`), `HSV2RGB`.
pub fn hsv(mut img: Img, hue: &[u8], sat: &[u8], val: &[u8], keep_gray: bool) -> Result<Img, String> {
    if img.c != 3 {
        return Err(format!("hue and saturation need 3 channels, the image has {}", img.c));
    }
    let w = img.w;
    let vector_end = w - w % 64;
    for (i, p) in img.data.chunks_exact_mut(3).enumerate() {
        let (h, s, v) = rgb_to_hsv(p[0], p[1], p[2]);
        let s2 = if keep_gray && s == 0 { 0 } else { sat[s as usize] };
        let (r, g, b) = hsv_to_rgb(hue[h as usize], s2, val[v as usize], i % w < vector_end);
        p[0] = r;
        p[1] = g;
        p[2] = b;
    }
    Ok(img)
}

/// `cv2.sepFilter2D(img, -1, k, k)` with a reflect-101 border, in single precision
/// (OpenCV's own path for a kernel that is not whole in 1/256ths).
pub fn blur(img: &Img, kernel: &[f64]) -> Result<Img, String> {
    let n = kernel.len();
    if n == 0 || n.is_multiple_of(2) {
        return Err(format!("a blur kernel has an odd number of values, got {n}"));
    }
    let k: Vec<f32> = kernel.iter().map(|v| *v as f32).collect();
    let r = n / 2;
    let symmetric = (0..r).all(|j| k[j] == k[n - 1 - j]);
    let (h, w, c) = (img.h, img.w, img.c);
    // Sums from the centre out, pairing mirrored taps as OpenCV's symmetric filters do.
    let dot = |get: &dyn Fn(i64) -> f32| -> f32 {
        if symmetric {
            let mut s = k[r] * get(0);
            for j in 1..=r {
                s += k[r + j] * (get(-(j as i64)) + get(j as i64));
            }
            s
        } else {
            let mut s = 0.0;
            for (j, kj) in k.iter().enumerate() {
                s += kj * get(j as i64 - r as i64);
            }
            s
        }
    };
    let xs: Vec<Vec<usize>> = (0..w).map(|x| (0..n).map(|j| border_index(x as i64 + j as i64 - r as i64, w, Border::Reflect101).unwrap()).collect()).collect();
    let mut rows = vec![0f32; h * w * c];
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                let idx = &xs[x];
                rows[(y * w + x) * c + ch] = dot(&|o| img.data[(y * w + idx[(o + r as i64) as usize]) * c + ch] as f32);
            }
        }
    }
    let mut out = Img::new(h, w, c);
    for y in 0..h {
        let ys: Vec<usize> = (0..n).map(|j| border_index(y as i64 + j as i64 - r as i64, h, Border::Reflect101).unwrap()).collect();
        for x in 0..w {
            for ch in 0..c {
                let v = dot(&|o| rows[(ys[(o + r as i64) as usize] * w + x) * c + ch]);
                out.data[(y * w + x) * c + ch] = v.round_ties_even().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(out)
}

/// Rectangles `[x0, y0, x1, y1)` (clipped to the image, as numpy slices are) set to `fill`.
pub fn holes(mut img: Img, rects: &[[usize; 4]], fill: &[f64; 4]) -> Img {
    let (w, c) = (img.w, img.c);
    let value: Vec<u8> = (0..c).map(|k| fill[k.min(3)].clamp(0.0, 255.0) as u8).collect();
    for &[x0, y0, x1, y1] in rects {
        let (x1, y1) = (x1.min(w), y1.min(img.h));
        for y in y0.min(y1)..y1 {
            for x in x0.min(x1)..x1 {
                img.data[(y * w + x) * c..(y * w + x + 1) * c].copy_from_slice(&value);
            }
        }
    }
    img
}

/// A float32 table of 256 values per channel: the normalised image.
pub fn normalize(img: &Img, table: &[f32]) -> Result<Output, String> {
    let c = img.c;
    if table.len() != 256 * c {
        return Err(format!("Normalize's table has 256 values per channel ({c}), got {}", table.len()));
    }
    let data = img.data.iter().enumerate().map(|(i, v)| table[(i % c) * 256 + *v as usize]).collect();
    Ok(Output::F32 { h: img.h, w: img.w, c, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gray_and_hsv_of_known_colours() {
        assert_eq!(gray_of(255, 255, 255), 255);
        assert_eq!(gray_of(255, 0, 0), 76); // OpenCV: 0.299 * 255
        assert_eq!(gray_of(0, 255, 0), 150);
        assert_eq!(rgb_to_hsv(255, 0, 0), (0, 255, 255));
        assert_eq!(rgb_to_hsv(0, 255, 0), (60, 255, 255));
        assert_eq!(rgb_to_hsv(0, 0, 255), (120, 255, 255));
        assert_eq!(hsv_to_rgb(60, 255, 255, true), (0, 255, 0));
        assert_eq!(hsv_to_rgb(0, 0, 128, false), (128, 128, 128));
    }

    #[test]
    fn hsv_round_trip_of_identity_tables_changes_little() {
        let id: Vec<u8> = (0..=255).collect();
        let img = Img { h: 1, w: 4, c: 3, data: vec![10, 200, 30, 255, 255, 0, 0, 0, 0, 90, 90, 91] };
        let out = hsv(img.clone(), &id, &id, &id, false).unwrap();
        for (a, b) in img.data.iter().zip(&out.data) {
            assert!((*a as i32 - *b as i32).abs() <= 3, "{a} {b}");
        }
    }

    #[test]
    fn holes_are_clipped_like_numpy_slices() {
        let img = Img::new(3, 3, 1);
        let out = holes(img, &[[2, 2, 9, 9]], &[5.0; 4]);
        assert_eq!(out.data, vec![0, 0, 0, 0, 0, 0, 0, 0, 5]);
    }

    #[test]
    fn a_unit_kernel_blurs_nothing() {
        let img = Img { h: 2, w: 3, c: 1, data: vec![1, 2, 3, 4, 5, 6] };
        assert_eq!(blur(&img, &[0.0, 1.0, 0.0]).unwrap(), img);
    }
}
