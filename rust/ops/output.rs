//! The batch as a training loop takes it: uint8 samples to float32, `x * scale - shift`
//! per channel (`scale = 1 / (255 std)`, `shift = mean / std`: torchvision's
//! `ToDtype(float32, scale=True)` then `Normalize(mean, std)`), planar (NCHW) or
//! interleaved (NHWC, which is NCHW in torch's channels_last). Done by the decode
//! threads, so a normalised batch needs no pass in Python or torch.

use rayon::prelude::*;

/// `pixels` holds `rows` images of `hw` pixels of `scale.len()` interleaved channels.
/// The result has the same rows, each planar when `planar`, else interleaved.
pub fn normalize(pixels: &[u8], rows: usize, hw: usize, scale: &[f32], shift: &[f32], planar: bool) -> Vec<f32> {
    let c = scale.len();
    let row = hw * c;
    let mut out = vec![0f32; rows * row];
    let convert = |(dst, src): (&mut [f32], &[u8])| {
        // Two roundings, as torch's `mul` then `sub_`: no fused multiply-add.
        if planar && c == 3 {
            // One pass over the pixels writing three planes: contiguous reads and writes
            // that the compiler vectorises, where a strided read per plane does not.
            let (r, rest) = dst.split_at_mut(hw);
            let (g, b) = rest.split_at_mut(hw);
            for (((px, r), g), b) in src.chunks_exact(3).zip(r).zip(g).zip(b) {
                *r = px[0] as f32 * scale[0] - shift[0];
                *g = px[1] as f32 * scale[1] - shift[1];
                *b = px[2] as f32 * scale[2] - shift[2];
            }
        } else if planar {
            for (k, plane) in dst.chunks_exact_mut(hw).enumerate() {
                let (s, t) = (scale[k], shift[k]);
                for (o, px) in plane.iter_mut().zip(src[k..].iter().step_by(c)) {
                    *o = *px as f32 * s - t;
                }
            }
        } else {
            for (o, px) in dst.chunks_exact_mut(c).zip(src.chunks_exact(c)) {
                for k in 0..c {
                    o[k] = px[k] as f32 * scale[k] - shift[k];
                }
            }
        }
    };
    if row > 0 {
        out.par_chunks_mut(row).zip(pixels.par_chunks(row)).for_each(convert);
    }
    out
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
}
