//! The batch as a training loop takes it: uint8 samples to float32, `x * scale - shift`
//! per channel (`scale = 1 / (255 std)`, `shift = mean / std`: torchvision's
//! `ToDtype(float32, scale=True)` then `Normalize(mean, std)`), planar (NCHW) or
//! interleaved (NHWC, which is NCHW in torch's channels_last). Done by the decode
//! threads, so a normalised batch needs no pass in Python or torch.

use rayon::prelude::*;

/// The float type of a normalised batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Float {
    F32,
    /// IEEE half precision, as bits.
    F16,
    /// bfloat16, as bits.
    BF16,
}

impl Float {
    pub fn from_code(code: u8) -> Result<Float, String> {
        match code {
            0 => Ok(Float::F32),
            1 => Ok(Float::F16),
            2 => Ok(Float::BF16),
            other => Err(format!("normalize dtype code {other} is not 0 (float32), 1 (float16) or 2 (bfloat16)")),
        }
    }
}

/// A float32 value as float16 bits, rounded to nearest even (what torch's `.to(float16)`
/// and numpy's `astype(float16)` do).
pub fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    let round = |v: u32, rem: u32, half: u32| v + u32::from(rem > half || (rem == half && v & 1 == 1));
    if e >= 1 {
        // Rounding may carry into the exponent, up to infinity (0x7c00): both right.
        let v = round(((e as u32) << 10) + (man >> 13), man & 0x1fff, 0x1000);
        return sign | v.min(0x7c00) as u16;
    }
    let shift = (14 - e) as u32;
    if shift > 24 {
        return sign;
    }
    let m = man | 0x80_0000;
    sign | round(m >> shift, m & ((1 << shift) - 1), 1 << (shift - 1)) as u16
}

/// A float32 value as bfloat16 bits, rounded to nearest even (torch's `.to(bfloat16)`).
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// `pixels` holds `rows` images of `hw` pixels of `scale.len()` interleaved channels.
/// The result has the same rows, each planar when `planar`, else interleaved.
pub fn normalize(pixels: &[u8], rows: usize, hw: usize, scale: &[f32], shift: &[f32], planar: bool) -> Vec<f32> {
    let mut out = vec![0f32; rows * hw * scale.len()];
    normalize_into(pixels, hw, scale, shift, planar, &mut out, |v| v);
    out
}

/// `normalize` into `out` (one value per sample), each value stored as `store` makes it
/// (float32 as is, or the bits of a narrower float).
pub fn normalize_into<T: Copy + Send + Sync>(pixels: &[u8], hw: usize, scale: &[f32], shift: &[f32], planar: bool, out: &mut [T], store: impl Fn(f32) -> T + Sync) {
    let c = scale.len();
    let row = hw * c;
    let convert = |(dst, src): (&mut [T], &[u8])| {
        // Two roundings, as torch's `mul` then `sub_`: no fused multiply-add.
        if planar && c == 3 {
            // One pass over the pixels writing three planes: contiguous reads and writes
            // that the compiler vectorises, where a strided read per plane does not.
            let (r, rest) = dst.split_at_mut(hw);
            let (g, b) = rest.split_at_mut(hw);
            for (((px, r), g), b) in src.chunks_exact(3).zip(r).zip(g).zip(b) {
                *r = store(px[0] as f32 * scale[0] - shift[0]);
                *g = store(px[1] as f32 * scale[1] - shift[1]);
                *b = store(px[2] as f32 * scale[2] - shift[2]);
            }
        } else if planar {
            for (k, plane) in dst.chunks_exact_mut(hw).enumerate() {
                let (s, t) = (scale[k], shift[k]);
                for (o, px) in plane.iter_mut().zip(src[k..].iter().step_by(c)) {
                    *o = store(*px as f32 * s - t);
                }
            }
        } else {
            for (o, px) in dst.chunks_exact_mut(c).zip(src.chunks_exact(c)) {
                for k in 0..c {
                    o[k] = store(px[k] as f32 * scale[k] - shift[k]);
                }
            }
        }
    };
    if row > 0 {
        out.par_chunks_mut(row).zip(pixels.par_chunks(row)).for_each(convert);
    }
}

/// Where a batch's normalised values go: float32, or the bits of float16/bfloat16.
pub enum FloatOut<'a> {
    F32(&'a mut [f32]),
    Bits(&'a mut [u16], Float),
}

/// `normalize_into` of a whole batch on lancefeed's pool of `threads` threads.
pub fn normalize_batch(pixels: &[u8], hw: usize, scale: &[f32], shift: &[f32], planar: bool, threads: usize, out: FloatOut) -> Result<(), String> {
    let pool = crate::pool::get(threads)?;
    match out {
        FloatOut::F32(buf) => pool.install(|| normalize_into(pixels, hw, scale, shift, planar, buf, |x| x)),
        FloatOut::Bits(buf, float) => {
            let store: fn(f32) -> u16 = if float == Float::F16 { f16_bits } else { bf16_bits };
            pool.install(|| normalize_into(pixels, hw, scale, shift, planar, buf, store))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn planar_and_interleaved() {
        let px = [0u8, 100, 255, 10, 20, 30]; // two RGB pixels
        let scale = [1.0f32, 2.0, 0.5];
        let shift = [0.0f32, 1.0, 2.0];
        let planar = super::normalize(&px, 1, 2, &scale, &shift, true);
        assert_eq!(planar, vec![0.0, 10.0, 199.0, 39.0, 125.5, 13.0]);
        let inter = super::normalize(&px, 1, 2, &scale, &shift, false);
        assert_eq!(inter, vec![0.0, 199.0, 125.5, 10.0, 39.0, 13.0]);
    }

    #[test]
    fn half_floats_round_to_nearest_even() {
        use super::{bf16_bits, f16_bits};
        assert_eq!(f16_bits(1.0), 0x3c00);
        assert_eq!(f16_bits(-2.0), 0xc000);
        assert_eq!(f16_bits(65504.0), 0x7bff);
        assert_eq!(f16_bits(65520.0), 0x7c00); // rounds up to infinity
        assert_eq!(f16_bits(1.0 + 1.0 / 2048.0), 0x3c00); // a tie: to even
        assert_eq!(f16_bits(1.0 + 3.0 / 2048.0), 0x3c02);
        assert_eq!(f16_bits(2f32.powi(-24)), 0x0001); // the smallest subnormal
        assert_eq!(f16_bits(2f32.powi(-25)), 0x0000); // half of it: a tie, to even (0)
        assert_eq!(f16_bits(1.5 * 2f32.powi(-24)), 0x0002);
        assert_eq!(f16_bits(f32::INFINITY), 0x7c00);
        assert_eq!(bf16_bits(1.0), 0x3f80);
        assert_eq!(bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80); // a tie: to even
        assert_eq!(bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
    }
}
