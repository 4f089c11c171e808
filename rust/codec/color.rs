//! Pixel-format conversions to RGB or L, with Pillow's integer formulas so that
//! results match `Image.convert()` exactly.

/// Pillow's ITU-R 601-2 luma (`L24` in Convert.c).
#[inline]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// Converts `src` pixels of `src_channels` (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) into
/// `dst` of `dst_channels` (1 or 3). Alpha is dropped, not composited, as Pillow does.
pub fn convert(src: &[u8], src_channels: usize, dst: &mut [u8], dst_channels: usize) {
    match (src_channels, dst_channels) {
        (s, d) if s == d => dst.copy_from_slice(&src[..dst.len()]),
        (1, 3) => {
            for (o, &v) in dst.chunks_exact_mut(3).zip(src) {
                o.fill(v);
            }
        }
        (2, 3) => {
            for (o, i) in dst.chunks_exact_mut(3).zip(src.chunks_exact(2)) {
                o.fill(i[0]);
            }
        }
        (2, 1) => {
            for (o, i) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = i[0];
            }
        }
        (4, 3) => {
            for (o, i) in dst.chunks_exact_mut(3).zip(src.chunks_exact(4)) {
                o.copy_from_slice(&i[..3]);
            }
        }
        (s @ (3 | 4), 1) => {
            for (o, i) in dst.iter_mut().zip(src.chunks_exact(s)) {
                *o = luma(i[0], i[1], i[2]);
            }
        }
        (s, d) => unreachable!("no conversion from {s} to {d} channels"),
    }
}

/// In-place RGB -> L on a packed buffer; returns the new length.
pub fn rgb_to_luma_in_place(buf: &mut [u8]) -> usize {
    let n = buf.len() / 3;
    for i in 0..n {
        buf[i] = luma(buf[3 * i], buf[3 * i + 1], buf[3 * i + 2]);
    }
    n
}

#[inline]
fn muldiv255(a: u32, b: u32) -> u32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

/// Adobe-inverted CMYK (as libjpeg returns it from Photoshop-style files, and as
/// Pillow reads every CMYK JPEG: rawmode "CMYK;I") to RGB with Pillow's `cmyk2rgb`.
pub fn inverted_cmyk_to_rgb(src: &[u8], dst: &mut [u8]) {
    for (o, i) in dst.chunks_exact_mut(3).zip(src.chunks_exact(4)) {
        let (c, m, y, k) = (255 - i[0] as u32, 255 - i[1] as u32, 255 - i[2] as u32, 255 - i[3] as u32);
        let nk = 255 - k;
        o[0] = (nk - muldiv255(c, nk)) as u8;
        o[1] = (nk - muldiv255(m, nk)) as u8;
        o[2] = (nk - muldiv255(y, nk)) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_matches_pillow_corners() {
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(0, 0, 0), 0);
        assert_eq!(luma(255, 0, 0), 76);
        assert_eq!(luma(0, 255, 0), 150);
        assert_eq!(luma(0, 0, 255), 29);
    }

    #[test]
    fn gray_alpha_to_rgb_drops_alpha() {
        let mut out = [0u8; 6];
        convert(&[10, 0, 200, 255], 2, &mut out, 3);
        assert_eq!(out, [10, 10, 10, 200, 200, 200]);
    }

    #[test]
    fn cmyk_white_and_black() {
        let mut out = [0u8; 6];
        // Inverted storage: 255 means no ink.
        inverted_cmyk_to_rgb(&[255, 255, 255, 255, 255, 255, 255, 0], &mut out);
        assert_eq!(out, [255, 255, 255, 0, 0, 0]);
    }
}
