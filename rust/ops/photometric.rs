//! Photometric ops on uint8 images, as torchvision.transforms.v2.functional computes
//! them on uint8 tensors.
//!
//! | name            | params                         | torchvision                              |
//! |-----------------|--------------------------------|------------------------------------------|
//! | `brightness`    | factor >= 0                    | `adjust_brightness`                      |
//! | `contrast`      | factor >= 0                    | `adjust_contrast`                        |
//! | `saturation`    | factor >= 0                    | `adjust_saturation` (1 channel: no-op)   |
//! | `hue`           | hue_factor in [-0.5, 0.5]      | `adjust_hue` (1 channel: no-op)          |
//! | `grayscale`     |                                | `rgb_to_grayscale(img, channels of img)` |
//! | `invert`        |                                | `invert`                                 |
//! | `posterize`     | bits, an integer in 0..=8      | `posterize`                              |
//! | `solarize`      | threshold <= 255               | `solarize`                               |
//! | `sharpness`     | factor >= 0                    | `adjust_sharpness`                       |
//! | `autocontrast`  |                                | `autocontrast`                           |
//! | `equalize`      |                                | `equalize`                               |
//! | `gaussian_blur` | kx, ky[, sigma_x, sigma_y]     | `gaussian_blur(img, [kx, ky], [sx, sy])` |
//! | `erase`         | i, j, h, w, v (1 or C values)  | `erase(img, i, j, h, w, v)`              |
//!
//! Every op follows torchvision's arithmetic: float32 where it computes in float32, in the
//! same order, with its truncation on the way back to uint8. Where ATen evaluates
//! `a + alpha * b` (`add_` with `alpha`, which its vectorised CPU kernels turn into one
//! fused multiply-add) the code here uses `f32::mul_add`, so that the rounding is the
//! same: the results are bit-exact with torchvision's, except `gaussian_blur`, which
//! rounds the other way on a few samples in 10^4 (see there).
//!
//! Parameters must be finite. Where torchvision raises for a parameter, so does `apply`;
//! where torchvision raises for an image (reflect padding wider than the image in
//! `gaussian_blur`), the op is extended instead (the reflection repeats).

use super::Image;
use std::ops::Range;

/// The op `name` applied to `img`, or None when `name` is not a photometric op.
pub fn apply(name: &str, params: &[f64], img: &mut Image) -> Option<Result<(), String>> {
    let r = match name {
        "brightness" => non_negative(name, params).map(|f| brightness(img, f)),
        "contrast" => non_negative(name, params).map(|f| contrast(img, f)),
        "saturation" => non_negative(name, params).map(|f| saturation(img, f)),
        "sharpness" => non_negative(name, params).map(|f| sharpness(img, f)),
        "hue" => fixed::<1>(name, params).and_then(|[h]| {
            if (-0.5..=0.5).contains(&h) {
                hue(img, h);
                Ok(())
            } else {
                Err(format!("hue: hue_factor ({h}) is not in [-0.5, 0.5]"))
            }
        }),
        "grayscale" => fixed::<0>(name, params).map(|_| grayscale(img)),
        "invert" => fixed::<0>(name, params).map(|_| invert(img)),
        "autocontrast" => fixed::<0>(name, params).map(|_| autocontrast(img)),
        "equalize" => fixed::<0>(name, params).map(|_| equalize(img)),
        "posterize" => fixed::<1>(name, params).and_then(|[b]| match integer(b) {
            Some(bits @ 0..=8) => {
                posterize(img, bits as u32);
                Ok(())
            }
            _ => Err(format!("posterize: bits must be an integer in [0, 8], got {b}")),
        }),
        "solarize" => fixed::<1>(name, params).and_then(|[t]| {
            if t > 255.0 {
                return Err(format!("solarize: the threshold ({t}) is above 255, the largest uint8 value"));
            }
            solarize(img, t);
            Ok(())
        }),
        "gaussian_blur" => blur_params(params).map(|(k, s)| gaussian_blur(img, k, s)),
        "erase" => erase_params(params, img.channels).map(|(i, j, h, w, v)| erase(img, i, j, h, w, &v)),
        _ => return None,
    };
    Some(r)
}

fn fixed<const N: usize>(name: &str, params: &[f64]) -> Result<[f64; N], String> {
    let p: [f64; N] = params.try_into().map_err(|_| format!("{name} takes {N} parameter(s), got {}", params.len()))?;
    finite(name, &p)?;
    Ok(p)
}

fn finite(name: &str, params: &[f64]) -> Result<(), String> {
    match params.iter().find(|p| !p.is_finite()) {
        Some(p) => Err(format!("{name}: parameter {p} is not a finite number")),
        None => Ok(()),
    }
}

fn non_negative(name: &str, params: &[f64]) -> Result<f64, String> {
    let [f] = fixed::<1>(name, params)?;
    if f < 0.0 {
        return Err(format!("{name}: the factor ({f}) is negative"));
    }
    Ok(f)
}

/// `x` as an integer, when it is one (and fits comfortably).
fn integer(x: f64) -> Option<i64> {
    (x.fract() == 0.0 && x.abs() < 1e15).then_some(x as i64)
}

fn blur_params(params: &[f64]) -> Result<([usize; 2], [f64; 2]), String> {
    finite("gaussian_blur", params)?;
    let (k, sigma) = match params {
        [kx, ky] => ([*kx, *ky], None),
        [kx, ky, sx, sy] => ([*kx, *ky], Some([*sx, *sy])),
        _ => return Err(format!("gaussian_blur takes 2 or 4 parameters, got {}", params.len())),
    };
    let mut size = [0usize; 2];
    for (s, k) in size.iter_mut().zip(k) {
        *s = match integer(k) {
            Some(v) if v > 0 && v % 2 == 1 && v < 1 << 20 => v as usize,
            _ => return Err(format!("gaussian_blur: kernel sizes must be odd positive integers, got {k}")),
        };
    }
    // torchvision's default sigma when none is given.
    let sigma = sigma.unwrap_or(size.map(|k| k as f64 * 0.15 + 0.35));
    if sigma.iter().any(|&s| s <= 0.0) {
        return Err(format!("gaussian_blur: sigma must be positive, got {sigma:?}"));
    }
    Ok((size, sigma))
}

type EraseParams = (i64, i64, i64, i64, Vec<u8>);

fn erase_params(params: &[f64], channels: usize) -> Result<EraseParams, String> {
    finite("erase", params)?;
    if params.len() < 5 {
        return Err(format!("erase takes i, j, h, w and 1 or {channels} values, got {} parameters", params.len()));
    }
    let mut ijhw = [0i64; 4];
    for (d, &p) in ijhw.iter_mut().zip(params) {
        *d = integer(p).ok_or_else(|| format!("erase: i, j, h and w must be integers, got {p}"))?;
    }
    let v = &params[4..];
    if v.len() != 1 && v.len() != channels {
        return Err(format!("erase: {} values for an image of {channels} channel(s)", v.len()));
    }
    if let Some(x) = v.iter().find(|x| !(0.0..=255.0).contains(*x)) {
        return Err(format!("erase: the value {x} is outside [0, 255]"));
    }
    // A float value goes into a uint8 tensor as a C cast does: truncated.
    let mut values: Vec<u8> = v.iter().map(|&x| x as u8).collect();
    if values.len() == 1 {
        values.resize(channels, values[0]);
    }
    let [i, j, h, w] = ijhw;
    Ok((i, j, h, w, values))
}

/// Runs `f` compiled for AVX2 and FMA where the CPU has them: `f32::mul_add` is then one
/// instruction and the loops vectorise. Elsewhere `mul_add` is libm's `fmaf`, slower but
/// rounded the same (it is exact by definition), so results never depend on the CPU.
/// `f` must be an `#[inline(always)]` closure, and everything it calls in its loops
/// `#[inline(always)]` too (plain loops, no iterator closures), to be compiled with them.
#[inline(always)]
fn fused<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2_fma<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { avx2_fma(f) };
        }
    }
    f()
}

/// Replaces every sample with `luts[channel][sample]`.
fn map_luts(img: &mut Image, luts: &[[u8; 256]]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vbmi")
        && matches!(luts.len(), 1 | 3)
    {
        // SAFETY: the CPU has the features the function is compiled for.
        unsafe { map_luts_vbmi(&mut img.data, luts) };
        return;
    }
    map_luts_scalar(img, luts)
}

/// `map_luts` 64 samples at a time: each table is 4 registers of 64 entries, looked up
/// with two 128-entry byte permutes chosen by the top bit of the sample; with 3 tables the
/// channel of each byte lane is a mask that repeats every 3 blocks (64 = 1 mod 3).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
#[allow(unused_unsafe)]
unsafe fn map_luts_vbmi(data: &mut [u8], luts: &[[u8; 256]]) {
    use std::arch::x86_64::*;
    let c = luts.len();
    let mut regs = [[_mm512_setzero_si512(); 4]; 3];
    for (r, t) in regs.iter_mut().zip(luts) {
        for (k, v) in r.iter_mut().enumerate() {
            // SAFETY: 64 bytes from 64 * k within the 256 of the table.
            *v = unsafe { _mm512_loadu_si512(t.as_ptr().add(64 * k).cast()) };
        }
    }
    #[inline(always)]
    unsafe fn look(t: &[__m512i; 4], x: __m512i) -> __m512i {
        let lo = _mm512_permutex2var_epi8(t[0], x, t[1]);
        let hi = _mm512_permutex2var_epi8(t[2], x, t[3]);
        _mm512_mask_blend_epi8(_mm512_movepi8_mask(x), lo, hi)
    }
    // masks[p][ch]: the lanes of channel ch in a block starting at a sample = p mod 3.
    let mut masks = [[0u64; 3]; 3];
    for (p, m) in masks.iter_mut().enumerate() {
        for i in 0..64 {
            m[(p + i) % 3] |= 1u64 << i;
        }
    }
    let mut blocks = data.chunks_exact_mut(64);
    let mut phase = 0;
    for blk in &mut blocks {
        // SAFETY: the block has 64 bytes.
        let x = unsafe { _mm512_loadu_si512(blk.as_ptr().cast()) };
        let r = if c == 1 {
            unsafe { look(&regs[0], x) }
        } else {
            let m = masks[phase];
            let r = unsafe { look(&regs[0], x) };
            let r = _mm512_mask_blend_epi8(m[1], r, unsafe { look(&regs[1], x) });
            _mm512_mask_blend_epi8(m[2], r, unsafe { look(&regs[2], x) })
        };
        unsafe { _mm512_storeu_si512(blk.as_mut_ptr().cast(), r) };
        phase = (phase + 1) % 3;
    }
    // The rest starts at a multiple of 64, phase samples past a multiple of 3.
    for (i, x) in blocks.into_remainder().iter_mut().enumerate() {
        let ch = if c == 1 { 0 } else { (phase + i) % 3 };
        *x = luts[ch][*x as usize];
    }
}

fn map_luts_scalar(img: &mut Image, luts: &[[u8; 256]]) {
    match luts {
        [lut] => img.data.iter_mut().for_each(|x| *x = lut[*x as usize]),
        [l0, l1, l2] => {
            for px in img.data.chunks_exact_mut(3) {
                px[0] = l0[px[0] as usize];
                px[1] = l1[px[1] as usize];
                px[2] = l2[px[2] as usize];
            }
        }
        _ => unreachable!("an image has 1 or 3 channels"),
    }
}

fn lut(f: impl Fn(u8) -> u8) -> [u8; 256] {
    std::array::from_fn(|x| f(x as u8))
}

/// `_rgb_to_grayscale_image` before the cast: `r.mul(0.2989).add_(g, alpha=0.587)
/// .add_(b, alpha=0.114)` in float32, each `add_` one fused multiply-add. The weights sum
/// to 0.9999, so a gray pixel of value v > 0 comes out just below v.
#[inline(always)]
fn gray_f32(r: u8, g: u8, b: u8) -> f32 {
    const WR: f32 = 0.2989;
    const WG: f32 = 0.587;
    const WB: f32 = 0.114;
    (b as f32).mul_add(WB, (g as f32).mul_add(WG, r as f32 * WR))
}

// Float to uint8 below is `as u8`: it truncates toward zero and saturates at 0 and 255,
// which is torchvision's `clamp_(0, 255)` followed by `.to(torch.uint8)`.

/// `image.mul(factor)`: a uint8 tensor times a Python float is computed in float32.
pub fn brightness(img: &mut Image, factor: f64) {
    let f = factor as f32;
    map_luts(img, &[lut(|x| (x as f32 * f) as u8)]);
}

/// `_blend(image, other, ratio)`: `image.mul(ratio).add_(other, alpha=1 - ratio)`, the
/// `1 - ratio` taken in double precision as Python does.
#[inline(always)]
fn blend_coefs(ratio: f64) -> (f32, f32) {
    (ratio as f32, (1.0 - ratio) as f32)
}

pub fn contrast(img: &mut Image, factor: f64) {
    if img.data.is_empty() {
        return;
    }
    // The mean of the (floored) grayscale image. Its samples are integers, so their sum is
    // exact in integers; torch sums in float32, exact too while the sum stays below 2^24
    // (about 65k pixels) and within an ulp or so of it above.
    let sum: u64 = if img.channels == 3 {
        fused(
            #[inline(always)]
            || {
                // Gray values are in [0, 255): `as i32` truncates them as `as u64` would.
                // Summed in u32 over blocks of 4096 pixels (at most 255 * 4096 each).
                let mut sum = 0u64;
                for blk in img.data.chunks(3 * 4096) {
                    let mut part = 0u32;
                    for p in blk.chunks_exact(3) {
                        // SAFETY: the gray value is in [0, 255), not NaN.
                        part += unsafe { gray_f32(p[0], p[1], p[2]).to_int_unchecked::<u32>() };
                    }
                    sum += part as u64;
                }
                sum
            },
        )
    } else {
        img.data.iter().map(|&x| x as u64).sum()
    };
    let n = (img.width * img.height) as f32;
    let mean = sum as f32 / n;
    let (ratio, alpha) = blend_coefs(factor);
    map_luts(img, &[lut(|x| mean.mul_add(alpha, x as f32 * ratio) as u8)]);
}

pub fn saturation(img: &mut Image, factor: f64) {
    if img.channels != 3 {
        return;
    }
    let (ratio, alpha) = blend_coefs(factor);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        done = unsafe { saturation_avx2(&mut img.data, ratio, alpha) };
    }
    let rest = &mut img.data[done..];
    if rest.len() >= 3 * 4096 {
        saturation_table(rest, ratio, alpha);
    } else {
        for px in rest.chunks_exact_mut(3) {
            // SAFETY: the gray value is in [0, 255), not NaN; truncation is its floor.
            let gray = unsafe { gray_f32(px[0], px[1], px[2]).to_int_unchecked::<u32>() } as f32;
            for x in px.iter_mut() {
                *x = to_u8(gray.mul_add(alpha, *x as f32 * ratio));
            }
        }
    }
}

/// `saturation` through a table of the 256 x 256 (gray, sample) results, for CPUs
/// without AVX2: one evaluation of the expression per entry, the same bytes.
fn saturation_table(data: &mut [u8], ratio: f32, alpha: f32) {
    fused(
        #[inline(always)]
        || {
            let mut table = vec![0u8; 256 * 256];
            for (g, trow) in table.chunks_exact_mut(256).enumerate() {
                let gray = g as f32;
                for (x, t) in trow.iter_mut().enumerate() {
                    *t = to_u8(gray.mul_add(alpha, x as u8 as f32 * ratio));
                }
            }
            for px in data.chunks_exact_mut(3) {
                // SAFETY: the gray value is in [0, 255), not NaN.
                let g = unsafe { gray_f32(px[0], px[1], px[2]).to_int_unchecked::<u32>() } as usize & 255;
                let trow: &[u8; 256] = table[g * 256..g * 256 + 256].try_into().unwrap();
                px[0] = trow[px[0] as usize];
                px[1] = trow[px[1] as usize];
                px[2] = trow[px[2] as usize];
            }
        },
    );
}

/// `saturation` eight pixels at a time: the channels pulled apart with byte shuffles,
/// gray and the blend in float32 with the scalar code's operations (one multiply, then
/// fused multiply-adds, truncation), packed and interleaved back. Returns the bytes
/// done (whole blocks of 8 pixels); the rest is left to the caller. 2-3x the table's
/// speed, whose 65,536 entries alone cost about what a 224 x 224 image does here.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unused_unsafe)]
unsafe fn saturation_avx2(data: &mut [u8], ratio: f32, alpha: f32) -> usize {
    use std::arch::x86_64::*;
    const Z: i8 = -1; // a shuffle index that writes 0
    // Channel c of pixels 0-5 (0-4 for G and B) from bytes 0-15, the rest from bytes 8-23.
    let lo = [
        _mm_setr_epi8(0, 3, 6, 9, 12, 15, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z),
        _mm_setr_epi8(1, 4, 7, 10, 13, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z),
        _mm_setr_epi8(2, 5, 8, 11, 14, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z),
    ];
    let hi = [
        _mm_setr_epi8(Z, Z, Z, Z, Z, Z, 10, 13, Z, Z, Z, Z, Z, Z, Z, Z),
        _mm_setr_epi8(Z, Z, Z, Z, Z, 8, 11, 14, Z, Z, Z, Z, Z, Z, Z, Z),
        _mm_setr_epi8(Z, Z, Z, Z, Z, 9, 12, 15, Z, Z, Z, Z, Z, Z, Z, Z),
    ];
    // Back: from [r0..r7 g0..g7] and [b0..b7]: output bytes 0-15, then 16-23.
    let out_rg = _mm_setr_epi8(0, 8, Z, 1, 9, Z, 2, 10, Z, 3, 11, Z, 4, 12, Z, 5);
    let out_b = _mm_setr_epi8(Z, Z, 0, Z, Z, 1, Z, Z, 2, Z, Z, 3, Z, Z, 4, Z);
    let out_rg2 = _mm_setr_epi8(13, Z, 6, 14, Z, 7, 15, Z, Z, Z, Z, Z, Z, Z, Z, Z);
    let out_b2 = _mm_setr_epi8(Z, 5, Z, Z, 6, Z, Z, 7, Z, Z, Z, Z, Z, Z, Z, Z);
    let (wr, wg, wb) = (_mm256_set1_ps(0.2989), _mm256_set1_ps(0.587), _mm256_set1_ps(0.114));
    let (vr, va) = (_mm256_set1_ps(ratio), _mm256_set1_ps(alpha));
    let (zero, top) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0));
    let bytes8 = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0);
    // i32 lanes (each in 0..=255) to their low bytes, in order, in the low 8 bytes.
    #[target_feature(enable = "avx2")]
    unsafe fn narrow(v: __m256i, bytes8: __m256i) -> __m128i {
        let w = _mm256_packus_epi32(v, v); // per 128-bit lane: 4 u16, twice
        let b = _mm256_packus_epi16(w, w); // per lane: 4 u8, four times
        _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(b, bytes8))
    }
    let blocks = data.len() / 24;
    let p = data.as_mut_ptr();
    for k in 0..blocks {
        let at = p.add(24 * k);
        // SAFETY: bytes 24k .. 24k + 24 are in the slice.
        let a = unsafe { _mm_loadu_si128(at.cast()) };
        let b = unsafe { _mm_loadu_si128(at.add(8).cast()) };
        // Macros, not closures: they expand inside this AVX2 function.
        macro_rules! chan {
            ($c:expr) => {
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_or_si128(_mm_shuffle_epi8(a, lo[$c]), _mm_shuffle_epi8(b, hi[$c]))))
            };
        }
        let (r, g, bl) = (chan!(0), chan!(1), chan!(2));
        let gray = _mm256_fmadd_ps(bl, wb, _mm256_fmadd_ps(g, wg, _mm256_mul_ps(r, wr)));
        let gray = _mm256_cvtepi32_ps(_mm256_cvttps_epi32(gray));
        macro_rules! blend {
            ($x:expr) => {
                narrow(_mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_fmadd_ps(gray, va, _mm256_mul_ps($x, vr)), zero), top)), bytes8)
            };
        }
        let (r8, g8, b8) = (blend!(r), blend!(g), blend!(bl));
        let rg = _mm_unpacklo_epi64(r8, g8);
        let first = _mm_or_si128(_mm_shuffle_epi8(rg, out_rg), _mm_shuffle_epi8(b8, out_b));
        let second = _mm_or_si128(_mm_shuffle_epi8(rg, out_rg2), _mm_shuffle_epi8(b8, out_b2));
        // SAFETY: as the loads.
        unsafe {
            _mm_storeu_si128(at.cast(), first);
            _mm_storel_epi64(at.add(16).cast(), second);
        }
    }
    blocks * 24
}

/// `adjust_hue`: to float32 in [0, 1], `_rgb_to_hsv`, the hue shifted and wrapped with
/// `remainder`, `_hsv_to_rgb`, back with `mul(255.999)` and truncation; each step in
/// float32 with torchvision's operations in its order.
pub fn hue(img: &mut Image, hue_factor: f64) {
    if img.channels != 3 {
        return;
    }
    let shift = hue_factor as f32;
    const INV255: f32 = (1.0f64 / 255.0) as f32;
    const INV6: f32 = (1.0f64 / 6.0) as f32;
    const TO_U8: f32 = 255.0 + 1.0 - 1e-3;
    // Nothing to fuse here: `fused` only makes `floor` one instruction and lets it vectorise.
    fused(
        #[inline(always)]
        || {
            for px in img.data.chunks_exact_mut(3) {
                let (r, g, b) = (px[0] as f32 * INV255, px[1] as f32 * INV255, px[2] as f32 * INV255);
                let maxc = r.max(g).max(b);
                let minc = r.min(g).min(b);
                let eqc = maxc == minc;
                let range = maxc - minc;
                let s = range / if eqc { 1.0 } else { maxc };
                let div = if eqc { 1.0 } else { range };
                let (rc, gc, bc) = ((maxc - r) / div, (maxc - g) / div, (maxc - b) / div);
                // torchvision sums the three candidates, masked by multiplying by 0 or 1.
                let (max_is_r, max_is_g) = (maxc == r, maxc == g);
                let hr = if max_is_r { bc - gc } else { 0.0 };
                let hg = if max_is_g && !max_is_r { rc + 2.0 - bc } else { 0.0 };
                let hb = if !max_is_g && !max_is_r { gc + 4.0 - rc } else { 0.0 };
                // h / 6 + 1 lies in (0, 2), where fmod(., 1) is this exact subtraction.
                let h = (hr + hg + hb) * INV6 + 1.0;
                let h = if h >= 1.0 { h - 1.0 } else { h };
                // remainder(h + shift, 1) with h + shift in (-1, 2): fmod, then + 1 if negative.
                let h = h + shift;
                let h = if h >= 1.0 {
                    h - 1.0
                } else if h < 0.0 {
                    h + 1.0
                } else {
                    h
                };

                let v = maxc;
                let h6 = h * 6.0;
                let i = h6.floor();
                let f = h6 - i;
                let sxf = s * f;
                let one_minus_s = 1.0 - s;
                let q = ((1.0 - sxf) * v).clamp(0.0, 1.0);
                let t = ((sxf + one_minus_s) * v).clamp(0.0, 1.0);
                let p = (one_minus_s * v).clamp(0.0, 1.0);
                // SAFETY: i is the floor of a finite number in [0, 6].
                let (r, g, b) = match unsafe { i.to_int_unchecked::<i32>() }.rem_euclid(6) {
                    0 => (v, t, p),
                    1 => (q, v, p),
                    2 => (p, v, t),
                    3 => (p, q, v),
                    4 => (t, p, v),
                    _ => (v, p, q),
                };
                // r, g and b are in [0, 1]: the products are in [0, 256), truncated as
                // `as u8` would. SAFETY: they are finite and in range.
                unsafe {
                    px[0] = (r * TO_U8).to_int_unchecked::<i32>() as u8;
                    px[1] = (g * TO_U8).to_int_unchecked::<i32>() as u8;
                    px[2] = (b * TO_U8).to_int_unchecked::<i32>() as u8;
                }
            }
        },
    );
}

/// Each pixel becomes its gray value, truncated, in every channel; a 1-channel image is
/// already gray.
pub fn grayscale(img: &mut Image) {
    if img.channels != 3 {
        return;
    }
    fused(
        #[inline(always)]
        || {
            for px in img.data.chunks_exact_mut(3) {
                let y = gray_f32(px[0], px[1], px[2]) as u8;
                px.fill(y);
            }
        },
    );
}

pub fn invert(img: &mut Image) {
    img.data.iter_mut().for_each(|x| *x = !*x);
}

/// Keeps the top `bits` (0..=8) bits of every sample.
pub fn posterize(img: &mut Image, bits: u32) {
    if bits >= 8 {
        return;
    }
    let mask = (0xffu32 << (8 - bits)) as u8;
    img.data.iter_mut().for_each(|x| *x &= mask);
}

/// Inverts the samples >= `threshold`, compared in float32 (torch promotes the uint8
/// tensor and the Python float to float32).
pub fn solarize(img: &mut Image, threshold: f64) {
    let t = threshold as f32;
    map_luts(img, &[lut(|x| if x as f32 >= t { !x } else { x })]);
}

/// `adjust_sharpness`: the blend of the image with its 3x3 smoothing (weights 1, centre 5,
/// over 13), rounded; the border rows and columns are kept, and images of 2 rows or
/// columns or fewer are returned as they are.
pub fn sharpness(img: &mut Image, factor: f64) {
    let (w, h, c) = (img.width, img.height, img.channels);
    if w <= 2 || h <= 2 {
        return;
    }
    // torch convolves in float32 and rounds half to even. The exact result is s / 13 for
    // an integer s, never within 1/26 of a half, far more than float32's error: so the
    // integer rounding below gives the same values, whatever order torch sums in.
    let alpha = (1.0 - factor) as f32;
    let row = w * c;
    let n = row - 2 * c;
    let src = img.data.clone();
    // vs[k]: the sum of the three samples above, at and below position k of the row.
    let mut vs = vec![0u32; row];
    fused(
        #[inline(always)]
        || {
            for y in 1..h - 1 {
                let (up, mid, down) =
                    (&src[(y - 1) * row..y * row], &src[y * row..(y + 1) * row], &src[(y + 1) * row..(y + 2) * row]);
                for (((v, &a), &b), &d) in vs.iter_mut().zip(up).zip(mid).zip(down) {
                    *v = a as u32 + b as u32 + d as u32;
                }
                let (l, m, r) = (&vs[..n], &vs[c..c + n], &vs[2 * c..2 * c + n]);
                let xs = &mid[c..c + n];
                let out = &mut img.data[y * row + c..(y + 1) * row - c];
                for ((((o, &x), &l), &m), &r) in out.iter_mut().zip(xs).zip(l).zip(m).zip(r) {
                    let s = l + m + r + 4 * x as u32;
                    // (s + 6) / 13, exact for s + 6 <= 3321 (s <= 13 * 255).
                    let blurred = (((s + 6) * 5042) >> 16) as f32;
                    let x = x as f32;
                    // output + (1 - factor) * (blurred - output), one `add_` with alpha.
                    *o = to_u8((blurred - x).mul_add(alpha, x));
                }
            }
        },
    );
}

/// `v as u8` (truncation, saturating at 0 and 255) for a number that is not NaN, in a
/// form that vectorises.
#[inline(always)]
fn to_u8(v: f32) -> u8 {
    let v = v.max(0.0).min(255.0);
    // SAFETY: v is in [0, 255], not NaN (`max` returns 0 for a NaN).
    unsafe { v.to_int_unchecked::<i32>() as u8 }
}

/// Stretches every channel to [0, 255]: `(x - min) / ((max - min) * (1 / 255))` in
/// float32, truncated; a constant channel is kept. float32(1 / 255) is a little above
/// 1 / 255, so the maximum often lands on 254, as in torchvision.
pub fn autocontrast(img: &mut Image) {
    if img.data.is_empty() {
        return;
    }
    let c = img.channels;
    // Minima and maxima by position in blocks of 48 samples (a multiple of 1 and 3
    // channels), folded by channel afterwards.
    const B: usize = 48;
    let mut lob = [255u8; B];
    let mut hib = [0u8; B];
    let blocks = img.data.chunks_exact(B);
    let rest = blocks.remainder();
    for blk in blocks {
        for k in 0..B {
            lob[k] = lob[k].min(blk[k]);
            hib[k] = hib[k].max(blk[k]);
        }
    }
    let mut lo = [255u8; 3];
    let mut hi = [0u8; 3];
    for k in 0..B {
        lo[k % c] = lo[k % c].min(lob[k]);
        hi[k % c] = hi[k % c].max(hib[k]);
    }
    for (k, &x) in rest.iter().enumerate() {
        lo[k % c] = lo[k % c].min(x);
        hi[k % c] = hi[k % c].max(x);
    }
    let luts: Vec<[u8; 256]> = (0..c)
        .map(|ch| {
            let (minimum, inv_scale) = if lo[ch] == hi[ch] {
                (0.0f32, 1.0f32)
            } else {
                (lo[ch] as f32, (hi[ch] as f32 - lo[ch] as f32) * (1.0f64 / 255.0) as f32)
            };
            lut(|x| ((x as f32 - minimum) / inv_scale) as u8)
        })
        .collect();
    map_luts(img, &luts);
}

/// Histogram equalisation of every channel with PIL's lookup table, as torchvision
/// computes it: `lut[k] = (cum[k - 1] + step / 2) / step` with `step` the count of pixels
/// not in the highest occupied bin over 255; a channel with `step == 0` is kept.
pub fn equalize(img: &mut Image) {
    if img.data.is_empty() {
        return;
    }
    let c = img.channels;
    let mut hist = vec![[0u64; 256]; c];
    if c == 1 {
        img.data.iter().for_each(|&x| hist[0][x as usize] += 1);
    } else {
        for px in img.data.chunks_exact(3) {
            hist[0][px[0] as usize] += 1;
            hist[1][px[1] as usize] += 1;
            hist[2][px[2] as usize] += 1;
        }
    }
    let n = (img.width * img.height) as u64;
    let luts: Vec<[u8; 256]> = hist
        .iter()
        .map(|h| {
            let top = h.iter().rposition(|&k| k != 0).unwrap_or(0);
            let step = (n - h[top]) / 255;
            if step == 0 {
                return lut(|x| x);
            }
            let mut table = [0u8; 256];
            let mut cum = 0u64;
            for k in 1..256 {
                cum += h[k - 1];
                table[k] = ((cum + step / 2) / step).min(255) as u8;
            }
            table
        })
        .collect();
    map_luts(img, &luts);
}

/// `_get_gaussian_kernel1d`: softmax of `-(x / sigma)^2` over `size` points x evenly
/// spread on `[-lim, lim]`, `lim = (size - 1) / (2 sqrt 2)`, i.e. the normalised
/// `exp(-d^2 / (2 sigma^2))` for the offsets d from the centre. Computed in double and
/// rounded once; torch's float32 softmax differs in the last bit or so.
fn gaussian_kernel(size: usize, sigma: f64) -> Vec<f32> {
    let r = (size / 2) as f64;
    let w: Vec<f64> = (0..size)
        .map(|i| {
            let x = (i as f64 - r) / std::f64::consts::SQRT_2 / sigma;
            (-x * x).exp()
        })
        .collect();
    let sum: f64 = w.iter().sum();
    w.iter().map(|v| (v / sum) as f32).collect()
}

/// torch's `reflect` padding (the edge sample not repeated), applied as many times as it
/// takes: torch itself refuses a padding as wide as the image.
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m >= n as isize { period - m } else { m }) as usize
}

/// `gaussian_blur`: the image reflect-padded, convolved with the outer product of two 1-D
/// gaussians in float32, rounded half to even.
///
/// Not bit-exact with torch: torch's conv2d sums the k_x * k_y products of the 2-D kernel
/// in oneDNN's order, this sums the two passes of the separable kernel (k_x + k_y terms).
/// Both are within a few float32 ulps of the exact value, so a sample differs (by 1) only
/// where the exact value is within about 1e-4 of a half.
pub fn gaussian_blur(img: &mut Image, ksize: [usize; 2], sigma: [f64; 2]) {
    if img.data.is_empty() {
        return;
    }
    let (w, h, c) = (img.width, img.height, img.channels);
    let (kx, ky) = (gaussian_kernel(ksize[0], sigma[0]), gaussian_kernel(ksize[1], sigma[1]));
    let (rx, ry) = ((ksize[0] / 2) as isize, (ksize[1] / 2) as isize);
    let row = w * c;
    let xs: Vec<usize> = (0..w as isize + 2 * rx).map(|p| reflect(p - rx, w)).collect();
    let mut padded = vec![0f32; xs.len() * c];
    let mut tmp = vec![0f32; h * row];
    let mut acc = vec![0f32; row];
    fused(
        #[inline(always)]
        || {
            for (src, out) in img.data.chunks_exact(row).zip(tmp.chunks_exact_mut(row)) {
                // The row itself in the middle, its reflections on both sides.
                let (left, rest) = padded.split_at_mut(rx as usize * c);
                let (mid, right) = rest.split_at_mut(row);
                for (d, &s) in mid.iter_mut().zip(src) {
                    *d = s as f32;
                }
                for (dst, &x) in left.chunks_exact_mut(c).zip(&xs) {
                    for (d, &s) in dst.iter_mut().zip(&src[x * c..x * c + c]) {
                        *d = s as f32;
                    }
                }
                for (dst, &x) in right.chunks_exact_mut(c).zip(&xs[rx as usize + w..]) {
                    for (d, &s) in dst.iter_mut().zip(&src[x * c..x * c + c]) {
                        *d = s as f32;
                    }
                }
                out.fill(0.0);
                for (k, &wk) in kx.iter().enumerate() {
                    for (o, &p) in out.iter_mut().zip(&padded[k * c..k * c + row]) {
                        *o = p.mul_add(wk, *o);
                    }
                }
            }
            for (y, out) in img.data.chunks_exact_mut(row).enumerate() {
                acc.fill(0.0);
                for (k, &wk) in ky.iter().enumerate() {
                    let sy = reflect(y as isize + k as isize - ry, h);
                    for (a, &t) in acc.iter_mut().zip(&tmp[sy * row..(sy + 1) * row]) {
                        *a = t.mul_add(wk, *a);
                    }
                }
                // Rounded half to even by adding and removing 1.5 * 2^23 (exact for
                // |a| < 2^22, in the default rounding mode); the compiler keeps both steps.
                const MAGIC: f32 = 12582912.0;
                for (o, &a) in out.iter_mut().zip(&acc) {
                    *o = to_u8((a + MAGIC) - MAGIC);
                }
            }
        },
    );
}

/// The rows (or columns) that Python's slice `[start:start + len]` selects in `n`:
/// negative ends count from the end, and everything is clipped to the image.
fn py_slice(start: i64, len: i64, n: usize) -> Range<usize> {
    let n = n as i64;
    let norm = |i: i64| if i < 0 { (i + n).max(0) } else { i.min(n) };
    let (a, b) = (norm(start), norm(start.saturating_add(len)));
    a as usize..b.max(a) as usize
}

/// `erase`: `image[..., i:i + h, j:j + w] = v`, with Python's slicing, one value per
/// channel.
pub fn erase(img: &mut Image, i: i64, j: i64, h: i64, w: i64, values: &[u8]) {
    let c = img.channels;
    let (rows, cols) = (py_slice(i, h, img.height), py_slice(j, w, img.width));
    if cols.is_empty() {
        return;
    }
    let row = img.width * c;
    for y in rows {
        let seg = &mut img.data[y * row + cols.start * c..y * row + cols.end * c];
        for px in seg.chunks_exact_mut(c) {
            px.copy_from_slice(values);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_saturation_path_gives_the_written_out_expression() {
        // Pseudo-random samples: 5,003 pixels (whole blocks of 8 and a remainder).
        let mut x = 12345u32;
        let data: Vec<u8> = (0..3 * 5003)
            .map(|_| {
                x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                (x >> 24) as u8
            })
            .collect();
        for factor in [0.0f64, 0.37, 1.0, 1.9, 7.5] {
            let (ratio, alpha) = ((factor as f32), (1.0 - factor) as f32);
            let want: Vec<u8> = data
                .chunks_exact(3)
                .flat_map(|p| {
                    let gray = ((p[2] as f32).mul_add(0.114, (p[1] as f32).mul_add(0.587, p[0] as f32 * 0.2989)) as u32) as f32;
                    p.iter().map(move |&v| gray.mul_add(alpha, v as f32 * ratio) as u8).collect::<Vec<_>>()
                })
                .collect();
            let mut table = data.clone();
            saturation_table(&mut table, ratio, alpha);
            assert_eq!(table, want, "table, factor {factor}");
            let mut image = Image::from_vec(data.clone(), 5003, 1, 3).unwrap();
            saturation(&mut image, factor);
            assert_eq!(image.data, want, "saturation, factor {factor}");
        }
    }

    fn img(w: usize, h: usize, c: usize, data: &[u8]) -> Image {
        Image::from_vec(data.to_vec(), w, h, c).unwrap()
    }

    fn run(name: &str, params: &[f64], image: &Image) -> Result<Image, String> {
        let mut out = image.clone();
        apply(name, params, &mut out).expect("a photometric op")?;
        Ok(out)
    }

    fn ramp(w: usize, h: usize, c: usize) -> Image {
        let data: Vec<u8> = (0..w * h * c).map(|k| (k * 37 % 256) as u8).collect();
        img(w, h, c, &data)
    }

    #[test]
    fn unknown_names_are_left_to_others() {
        let mut im = ramp(2, 2, 3);
        assert!(apply("rotate", &[], &mut im).is_none());
    }

    #[test]
    fn parameter_counts_and_values_are_checked() {
        let im = ramp(4, 3, 3);
        assert!(run("invert", &[1.0], &im).is_err());
        assert!(run("brightness", &[], &im).is_err());
        assert!(run("brightness", &[-0.1], &im).is_err());
        assert!(run("brightness", &[f64::NAN], &im).is_err());
        assert!(run("contrast", &[f64::INFINITY], &im).is_err());
        assert!(run("hue", &[0.51], &im).is_err());
        assert!(run("hue", &[-0.5], &im).is_ok());
        assert!(run("gaussian_blur", &[4.0, 3.0, 1.0, 1.0], &im).is_err());
        assert!(run("gaussian_blur", &[3.0, 3.0, 0.0, 1.0], &im).is_err());
        assert!(run("gaussian_blur", &[3.0], &im).is_err());
        assert!(run("gaussian_blur", &[3.0, 5.0], &im).is_ok());
    }

    #[test]
    fn invert_flips_every_bit() {
        let im = ramp(5, 3, 3);
        let out = run("invert", &[], &im).unwrap();
        assert!(out.data.iter().zip(&im.data).all(|(&o, &i)| o == 255 - i));
        assert_eq!(run("invert", &[], &img(1, 1, 1, &[7])).unwrap().data, [248]);
    }

    #[test]
    fn posterize_keeps_the_top_bits() {
        let im = img(4, 1, 1, &[0, 0x7f, 0x80, 0xff]);
        assert_eq!(run("posterize", &[8.0], &im).unwrap(), im);
        assert_eq!(run("posterize", &[0.0], &im).unwrap().data, [0, 0, 0, 0]);
        assert_eq!(run("posterize", &[1.0], &im).unwrap().data, [0, 0, 0x80, 0x80]);
        assert_eq!(run("posterize", &[3.0], &im).unwrap().data, [0, 0x60, 0x80, 0xe0]);
        assert!(run("posterize", &[9.0], &im).is_err());
        assert!(run("posterize", &[-1.0], &im).is_err());
        assert!(run("posterize", &[2.5], &im).is_err());
    }

    #[test]
    fn solarize_inverts_from_the_threshold_up() {
        let im = img(4, 1, 1, &[0, 127, 128, 255]);
        assert_eq!(run("solarize", &[128.0], &im).unwrap().data, [0, 127, 127, 0]);
        assert_eq!(run("solarize", &[127.5], &im).unwrap().data, [0, 127, 127, 0]);
        assert_eq!(run("solarize", &[0.0], &im).unwrap().data, [255, 128, 127, 0]);
        assert_eq!(run("solarize", &[-3.0], &im).unwrap().data, [255, 128, 127, 0]);
        assert_eq!(run("solarize", &[255.0], &im).unwrap().data, [0, 127, 128, 0]);
        // torchvision raises above the dtype's maximum.
        assert!(run("solarize", &[255.5], &im).is_err());
        assert!(run("solarize", &[256.0], &im).is_err());
    }

    #[test]
    fn brightness_scales_and_saturates() {
        let im = img(4, 1, 1, &[0, 1, 100, 200]);
        assert_eq!(run("brightness", &[1.0], &im).unwrap(), im);
        assert_eq!(run("brightness", &[0.0], &im).unwrap().data, [0, 0, 0, 0]);
        assert_eq!(run("brightness", &[2.0], &im).unwrap().data, [0, 2, 200, 255]);
        assert_eq!(run("brightness", &[0.5], &im).unwrap().data, [0, 0, 50, 100]);
    }

    #[test]
    fn grayscale_truncates_the_weighted_sum() {
        // The weights sum to 0.9999: a gray pixel loses one level (except 0).
        let im = img(3, 1, 3, &[0, 0, 0, 255, 255, 255, 255, 0, 0]);
        assert_eq!(run("grayscale", &[], &im).unwrap().data, [0, 0, 0, 254, 254, 254, 76, 76, 76]);
        let gray = ramp(5, 4, 1);
        assert_eq!(run("grayscale", &[], &gray).unwrap(), gray);
    }

    #[test]
    fn blends_with_factor_one_are_identities() {
        let im = ramp(7, 5, 3);
        for op in ["contrast", "saturation", "sharpness", "brightness"] {
            assert_eq!(run(op, &[1.0], &im).unwrap(), im, "{op}");
        }
        assert_eq!(
            run("hue", &[0.0], &img(2, 1, 3, &[9, 9, 9, 200, 200, 200])).unwrap().data,
            [9, 9, 9, 200, 200, 200]
        );
    }

    #[test]
    fn one_channel_saturation_and_hue_are_no_ops() {
        let im = ramp(6, 5, 1);
        assert_eq!(run("saturation", &[0.0], &im).unwrap(), im);
        assert_eq!(run("hue", &[0.3], &im).unwrap(), im);
    }

    #[test]
    fn contrast_zero_gives_the_mean() {
        // One channel: the mean of the samples, truncated: (10 + 20 + 30 + 41) / 4 = 25.25.
        let im = img(2, 2, 1, &[10, 20, 30, 41]);
        assert_eq!(run("contrast", &[0.0], &im).unwrap().data, [25; 4]);
        assert_eq!(run("contrast", &[0.0], &img(1, 1, 1, &[200])).unwrap().data, [200]);
    }

    #[test]
    fn hue_rotates_primaries() {
        let red = img(1, 1, 3, &[255, 0, 0]);
        // A third of a turn: red to green (255 * 255.999 / 255 truncates to 255).
        assert_eq!(run("hue", &[1.0 / 3.0], &red).unwrap().data, [0, 255, 0]);
        assert_eq!(run("hue", &[-1.0 / 3.0], &red).unwrap().data, [0, 0, 255]);
        assert_eq!(run("hue", &[0.5], &red).unwrap().data, [0, 255, 255]);
    }

    #[test]
    fn sharpness_keeps_borders_and_small_images() {
        let small = ramp(2, 9, 3);
        assert_eq!(run("sharpness", &[0.0], &small).unwrap(), small);
        assert_eq!(run("sharpness", &[2.0], &ramp(9, 2, 1)).unwrap(), ramp(9, 2, 1));
        let flat = img(4, 4, 1, &[77; 16]);
        assert_eq!(run("sharpness", &[5.0], &flat).unwrap(), flat);
        // A bright centre in a 3x3 image: blurred (8 * 0 + 5 * 130) / 13 = 50.
        let dot = img(3, 3, 1, &[0, 0, 0, 0, 130, 0, 0, 0, 0]);
        assert_eq!(run("sharpness", &[0.0], &dot).unwrap().data, [0, 0, 0, 0, 50, 0, 0, 0, 0]);
        assert_eq!(run("sharpness", &[0.5], &dot).unwrap().data, [0, 0, 0, 0, 90, 0, 0, 0, 0]);
        assert_eq!(run("sharpness", &[2.0], &dot).unwrap().data, [0, 0, 0, 0, 210, 0, 0, 0, 0]);
    }

    #[test]
    fn map_luts_matches_the_scalar_tables() {
        for c in [1usize, 3] {
            for w in [1usize, 5, 21, 22, 64, 65, 100] {
                let im = ramp(w, 7, c);
                let luts: Vec<[u8; 256]> =
                    (0..c).map(|k| std::array::from_fn(|x| (x * (7 + 2 * k) + 13 * k) as u8)).collect();
                let (mut a, mut b) = (im.clone(), im.clone());
                map_luts(&mut a, &luts);
                map_luts_scalar(&mut b, &luts);
                assert_eq!(a, b, "{c} {w}");
                // A single table on 3 channels too.
                let (mut a, mut b) = (im.clone(), im.clone());
                map_luts(&mut a, &luts[..1]);
                map_luts_scalar(&mut b, &luts[..1]);
                assert_eq!(a, b, "{c} {w} one table");
            }
        }
    }

    #[test]
    fn sharpness_division_by_13_is_exact() {
        for s in 0u32..=13 * 255 {
            assert_eq!(((s + 6) * 5042) >> 16, (s + 6) / 13, "{s}");
        }
        for v in [-1e9f32, -3.0, -0.9, 0.0, 0.5, 1.0, 254.99, 255.0, 255.5, 300.0, 1e9] {
            assert_eq!(to_u8(v), v as u8, "{v}");
        }
    }

    #[test]
    fn autocontrast_stretches_each_channel() {
        let im = img(2, 1, 3, &[10, 5, 7, 20, 5, 9]);
        // Channel 1 is constant and kept; the others span [0, 254]: torchvision divides by
        // (max - min) * float32(1 / 255), a little over (max - min) / 255.
        assert_eq!(run("autocontrast", &[], &im).unwrap().data, [0, 5, 0, 254, 5, 254]);
        let flat = img(3, 2, 1, &[42; 6]);
        assert_eq!(run("autocontrast", &[], &flat).unwrap(), flat);
        let one = img(1, 1, 3, &[1, 2, 3]);
        assert_eq!(run("autocontrast", &[], &one).unwrap(), one);
        // (100 - 50) / (200 / 255) = 63.75.
        let three = img(3, 1, 1, &[50, 100, 250]);
        assert_eq!(run("autocontrast", &[], &three).unwrap().data, [0, 63, 254]);
    }

    #[test]
    fn equalize_uses_pils_table() {
        let flat = img(4, 4, 3, &[99; 48]);
        assert_eq!(run("equalize", &[], &flat).unwrap(), flat);
        let one = img(1, 1, 1, &[5]);
        assert_eq!(run("equalize", &[], &one).unwrap(), one);
        // Fewer than 255 pixels outside the top bin: step 0, kept.
        let few = ramp(10, 10, 1);
        assert_eq!(run("equalize", &[], &few).unwrap(), few);
        // 510 pixels: 255 of value 0, 255 of value 1 and the top bin; step = 510 / 255 = 2.
        let mut data = vec![0u8; 255];
        data.extend([1u8; 255]);
        data.extend([200u8; 2]);
        let im = img(512, 1, 1, &data);
        let out = run("equalize", &[], &im).unwrap();
        // lut[0] = 0, lut[1] = (255 + 1) / 2 = 128, lut[200] = (510 + 1) / 2 = 255.
        assert_eq!(&out.data[254..256], [0, 128]);
        assert_eq!(&out.data[509..512], [128, 255, 255]);
    }

    #[test]
    fn gaussian_blur_of_flat_and_tiny_images() {
        let flat = img(5, 4, 3, &[123; 60]);
        assert_eq!(run("gaussian_blur", &[5.0, 3.0, 1.5, 0.7], &flat).unwrap(), flat);
        // Kernels wider than the image reflect again and again (torch would refuse).
        let one = img(1, 1, 3, &[1, 128, 255]);
        assert_eq!(run("gaussian_blur", &[23.0, 23.0, 4.0, 4.0], &one).unwrap(), one);
        let im = ramp(6, 5, 3);
        assert_eq!(run("gaussian_blur", &[1.0, 1.0, 1.0, 1.0], &im).unwrap(), im);
        assert_eq!(reflect(-1, 4), 1);
        assert_eq!(reflect(4, 4), 2);
        assert_eq!(reflect(-4, 4), 2);
        assert_eq!(reflect(7, 4), 1);
        assert_eq!(reflect(-3, 2), 1);
    }

    #[test]
    fn gaussian_kernel_is_normalised_and_symmetric() {
        for (k, s) in [(3, 0.5), (5, 1.0), (23, 4.0), (23, 0.1)] {
            let w = gaussian_kernel(k, s);
            assert!((w.iter().map(|&x| x as f64).sum::<f64>() - 1.0).abs() < 1e-6);
            assert!((0..k).all(|i| w[i] == w[k - 1 - i]));
        }
    }

    #[test]
    fn erase_fills_the_clipped_region() {
        let im = img(3, 2, 1, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(run("erase", &[0.0, 1.0, 5.0, 1.0, 9.0], &im).unwrap().data, [1, 9, 3, 4, 9, 6]);
        // Wholly outside, or empty: unchanged.
        assert_eq!(run("erase", &[2.0, 0.0, 4.0, 4.0, 9.0], &im).unwrap(), im);
        assert_eq!(run("erase", &[0.0, 5.0, 4.0, 4.0, 9.0], &im).unwrap(), im);
        assert_eq!(run("erase", &[0.0, 0.0, 0.0, 3.0, 9.0], &im).unwrap(), im);
        // Negative ends count from the end, as in Python: rows [-1:2], columns [-2:-1].
        assert_eq!(run("erase", &[-1.0, -2.0, 3.0, 1.0, 9.0], &im).unwrap().data, [1, 2, 3, 4, 9, 6]);
        // Rows [-1:0] and [-1:1] of 2 are empty.
        assert_eq!(run("erase", &[-1.0, 0.0, 1.0, 3.0, 9.0], &im).unwrap(), im);
        assert_eq!(run("erase", &[-1.0, 0.0, 2.0, 3.0, 9.0], &im).unwrap(), im);
        let rgb = img(2, 1, 3, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(run("erase", &[0.0, 1.0, 1.0, 1.0, 7.0, 8.9, 255.0], &rgb).unwrap().data, [1, 2, 3, 7, 8, 255]);
        assert_eq!(run("erase", &[0.0, 0.0, 1.0, 9.0, 0.0], &rgb).unwrap().data, [0; 6]);
        assert!(run("erase", &[0.0, 0.0, 1.0, 1.0, 1.0, 2.0], &rgb).is_err());
        assert!(run("erase", &[0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 3.0], &im).is_err());
        assert!(run("erase", &[0.0, 0.0, 1.0, 1.0, 256.0], &im).is_err());
        assert!(run("erase", &[0.5, 0.0, 1.0, 1.0, 0.0], &im).is_err());
        assert!(run("erase", &[0.0, 0.0, 1.0, 1.0], &im).is_err());
    }

    #[test]
    fn empty_images_pass_through() {
        let empty = Image::new(0, 0, 3);
        for (op, p) in [
            ("brightness", &[0.5][..]),
            ("contrast", &[0.5]),
            ("saturation", &[0.5]),
            ("hue", &[0.2]),
            ("grayscale", &[]),
            ("autocontrast", &[]),
            ("equalize", &[]),
            ("sharpness", &[2.0]),
            ("gaussian_blur", &[3.0, 3.0, 1.0, 1.0]),
            ("erase", &[0.0, 0.0, 1.0, 1.0, 0.0]),
        ] {
            assert_eq!(run(op, p, &empty).unwrap(), empty, "{op}");
        }
    }
}
