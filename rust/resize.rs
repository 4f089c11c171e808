//! Crop and resize in one SIMD pass (fast_image_resize, antialiased bilinear like
//! Pillow's `resize(..., BILINEAR, box=...)`), into a caller's slot. Small images take
//! `small`, Pillow's own two passes written out: fast_image_resize spends more on its
//! per-call set-up (coefficients, normalisation, buffers) than on the pixels of a
//! 32x32 crop.

use std::cell::RefCell;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::codec::{Decoded, Rect};

thread_local! {
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

fn pixel_type(channels: usize) -> PixelType {
    if channels == 1 {
        PixelType::U8
    } else {
        PixelType::U8x3
    }
}

/// Resizes `src_box` (coordinates of the decoded buffer `src`) to fill `dst`
/// (`dst_w` x `dst_h`, packed).
pub fn crop_resize(
    src: &[u8],
    decoded: &Decoded,
    src_box: &Rect,
    channels: usize,
    dst: &mut [u8],
    dst_w: u32,
    dst_h: u32,
) -> Result<(), String> {
    let whole = src_box.x0 == 0.0
        && src_box.y0 == 0.0
        && src_box.x1 == decoded.width as f64
        && src_box.y1 == decoded.height as f64;
    if whole && (decoded.width, decoded.height) == (dst_w, dst_h) {
        dst.copy_from_slice(&src[..dst.len()]);
        return Ok(());
    }
    if small::fits(src_box, dst_w, dst_h) {
        small::resize(src, decoded.width as usize, decoded.height as usize, channels, src_box, dst, dst_w as usize, dst_h as usize);
        return Ok(());
    }
    let pt = pixel_type(channels);
    let src_img = ImageRef::new(decoded.width, decoded.height, src, pt).map_err(|e| format!("resize source: {e}"))?;
    let mut dst_img = Image::from_slice_u8(dst_w, dst_h, dst, pt).map_err(|e| format!("resize target: {e}"))?;
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(src_box.x0, src_box.y0, src_box.width(), src_box.height());
    RESIZER.with(|r| r.borrow_mut().resize(&src_img, &mut dst_img, &options)).map_err(|e| format!("resize: {e}"))
}

/// Pillow's antialiased bilinear resample (`ImagingResample` in its `Resample.c`) for
/// small images: the same coefficients, the same 22-bit fixed point, the same two
/// passes in Pillow 13's order (see `passes`), so the pixels are Pillow's exactly.
/// Buffers are per thread and reused.
mod small {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use crate::codec::Rect;

    const PRECISION_BITS: u32 = 32 - 8 - 2;
    /// Largest output side and source box (pixels) taken here; above them the SIMD
    /// library's set-up is small next to its faster passes.
    const MAX_SIDE: u32 = 64;
    const MAX_BOX: f64 = 128.0 * 128.0;

    pub fn fits(b: &Rect, dst_w: u32, dst_h: u32) -> bool {
        dst_w <= MAX_SIDE && dst_h <= MAX_SIDE && b.width() * b.height() <= MAX_BOX
    }

    #[derive(Default, Clone)]
    struct Coeffs {
        /// `ksize` weights per output pixel.
        k: Vec<i32>,
        /// (first source pixel, count) per output pixel.
        bounds: Vec<(usize, usize)>,
        ksize: usize,
    }

    #[derive(Default)]
    struct Scratch {
        horiz: Coeffs,
        vert: Coeffs,
        weights: Vec<f64>,
        tmp: Vec<u8>,
        acc: Vec<i32>,
        /// Per output pixel, its three weights spread over 8 lanes (see `horizontal_rgb_k3_avx2`).
        lanes: Vec<[i32; 8]>,
    }

    thread_local! {
        static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
        /// Coefficients computed before on this thread, by (source size, box edges' bits,
        /// output size). A random crop of a small image has few distinct boxes (CIFAR-10's
        /// 32x32 at most a few hundred a side), and computing an axis's weights took as
        /// long as a third of its pass.
        static COEFFS: RefCell<HashMap<(usize, u32, u32, usize), Coeffs>> = RefCell::new(HashMap::new());
    }

    /// Entries in a thread's `COEFFS` (each a few KB at most) before it starts over.
    const MAX_CACHED: usize = 1024;

    /// `precompute`, from this thread's cache where it computed the same axis before.
    fn coefficients(c: &mut Coeffs, weights: &mut Vec<f64>, in_size: usize, in0: f32, in1: f32, out_size: usize) {
        let key = (in_size, in0.to_bits(), in1.to_bits(), out_size);
        COEFFS.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(hit) = cache.get(&key) {
                c.clone_from(hit);
                return;
            }
            precompute(c, weights, in_size, in0, in1, out_size);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(key, c.clone());
        })
    }

    fn bilinear(x: f64) -> f64 {
        let x = x.abs();
        if x < 1.0 {
            1.0 - x
        } else {
            0.0
        }
    }

    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` (box edges as C floats).
    fn precompute(c: &mut Coeffs, weights: &mut Vec<f64>, in_size: usize, in0: f32, in1: f32, out_size: usize) {
        let scale = (in1 - in0) as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale; // the bilinear filter's support is 1
        let ksize = support.ceil() as usize * 2 + 1;
        c.ksize = ksize;
        c.k.clear();
        c.k.resize(out_size * ksize, 0);
        c.bounds.clear();
        weights.clear();
        weights.resize(ksize, 0.0);
        let ss = 1.0 / filterscale;
        for xx in 0..out_size {
            let center = in0 as f64 + (xx as f64 + 0.5) * scale;
            // C's (int) truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(xmin as i64) as usize - xmin;
            let xmax = xmax.min(ksize);
            let mut ww = 0.0;
            for x in 0..xmax {
                let w = bilinear((x as f64 + xmin as f64 - center + 0.5) * ss);
                weights[x] = w;
                ww += w;
            }
            let row = &mut c.k[xx * ksize..(xx + 1) * ksize];
            for x in 0..xmax {
                let w = if ww != 0.0 { weights[x] / ww } else { weights[x] };
                let fixed = w * (1u32 << PRECISION_BITS) as f64;
                row[x] = if w < 0.0 { (-0.5 + fixed) as i32 } else { (0.5 + fixed) as i32 };
            }
            c.bounds.push((xmin, xmax));
        }
    }

    #[inline(always)]
    fn clip8(v: i32) -> u8 {
        (v >> PRECISION_BITS).clamp(0, 255) as u8
    }

    /// Output pixel `xx` of one row, from its taps: `K` of them when `K > 0` (the pixel's
    /// own, then zero weights on the row's last pixel: fixed-length loops the compiler
    /// unrolls), else its own count.
    #[inline(always)]
    fn pixel<const C: usize, const K: usize>(row: &[u8], c: &Coeffs, xx: usize, px: &mut [u8]) {
        let (xmin, n) = c.bounds[xx];
        let taps = if K > 0 { K } else { n };
        let k = &c.k[xx * c.ksize..xx * c.ksize + taps];
        let last = row.len() / C - 1;
        let mut acc = [1i32 << (PRECISION_BITS - 1); C];
        for (t, &w) in k.iter().enumerate() {
            let x = if t < n { xmin + t } else { last };
            for ch in 0..C {
                acc[ch] += row[x * C + ch] as i32 * w;
            }
        }
        for ch in 0..C {
            px[ch] = clip8(acc[ch]);
        }
    }

    #[inline(always)]
    fn horizontal_k<const C: usize, const K: usize>(src: &[u8], src_w: usize, rows: std::ops::Range<usize>, c: &Coeffs, out: &mut [u8], out_w: usize) {
        for (y, line) in rows.zip(out.chunks_exact_mut(out_w * C)) {
            let row = &src[y * src_w * C..(y + 1) * src_w * C];
            for (xx, px) in line.chunks_exact_mut(C).enumerate() {
                pixel::<C, K>(row, c, xx, px);
            }
        }
    }

    #[inline(always)]
    fn horizontal<const C: usize>(src: &[u8], src_w: usize, rows: std::ops::Range<usize>, c: &Coeffs, out: &mut [u8], out_w: usize) {
        match c.ksize {
            3 => horizontal_k::<C, 3>(src, src_w, rows, c, out, out_w),
            5 => horizontal_k::<C, 5>(src, src_w, rows, c, out, out_w),
            7 => horizontal_k::<C, 7>(src, src_w, rows, c, out, out_w),
            _ => horizontal_k::<C, 0>(src, src_w, rows, c, out, out_w),
        }
    }

    /// The vertical pass over bytes `col..col + width` of each row of `src` (rows of
    /// `stride` bytes) into `out` (rows of `width` bytes): written so that it
    /// vectorises, every byte of a row one lane.
    #[inline(always)]
    fn vertical(src: &[u8], stride: usize, col: usize, width: usize, c: &Coeffs, out: &mut [u8], acc: &mut Vec<i32>) {
        acc.resize(width, 0);
        for (yy, line) in out.chunks_exact_mut(width).enumerate() {
            let (ymin, n) = c.bounds[yy];
            acc.fill(1 << (PRECISION_BITS - 1));
            for (y, &w) in c.k[yy * c.ksize..yy * c.ksize + n].iter().enumerate() {
                let at = (ymin + y) * stride + col;
                for (a, &p) in acc.iter_mut().zip(&src[at..at + width]) {
                    *a += p as i32 * w;
                }
            }
            for (o, &a) in line.iter_mut().zip(acc.iter()) {
                *o = clip8(a);
            }
        }
    }

    /// Both passes, compiled for the CPU's vector width. The order is Pillow 13's:
    /// vertical first where the height shrinks by more than twice what the width does.
    #[inline(always)]
    fn passes<const AVX2: bool>(s: &mut Scratch, src: &[u8], (src_w, src_h): (usize, usize), ch: usize, need: (bool, bool), dst: &mut [u8], (dst_w, dst_h): (usize, usize)) {
        let (need_h, need_v) = need;
        let shrink_h = src_h as i64 - dst_h as i64;
        let horizontal_first = !(shrink_h > 0 && shrink_h > (src_w as i64 - dst_w as i64) * 2);
        let Scratch { horiz, vert, tmp, acc, lanes, .. } = s;
        let stride = dst_w * ch;
        let mut h_pass = |src: &[u8], src_w: usize, rows: std::ops::Range<usize>, c: &Coeffs, out: &mut [u8]| match ch {
            1 => horizontal::<1>(src, src_w, rows, c, out, dst_w),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 is only true when called from passes_avx2 (the CPU has it).
            3 if AVX2 && c.ksize == 3 => unsafe { horizontal_rgb_k3_avx2(src, src_w, rows, c, out, dst_w, lanes) },
            _ => horizontal::<3>(src, src_w, rows, c, out, dst_w),
        };
        match (need_h, need_v) {
            (true, true) if horizontal_first => {
                let first = vert.bounds[0].0;
                let last = vert.bounds.last().map_or(first, |&(m, n)| m + n);
                tmp.resize(last.saturating_sub(first) * stride, 0);
                h_pass(src, src_w, first..last, horiz, tmp);
                for bound in &mut vert.bounds {
                    bound.0 -= first;
                }
                vertical(tmp, stride, 0, stride, vert, dst, acc);
            }
            (true, true) => {
                // Only the columns the horizontal pass reads.
                let first = horiz.bounds.iter().map(|b| b.0).min().unwrap_or(0);
                let last = horiz.bounds.iter().map(|&(m, n)| m + n).max().unwrap_or(first);
                let cols = last.saturating_sub(first);
                tmp.resize(dst_h * cols * ch, 0);
                vertical(src, src_w * ch, first * ch, cols * ch, vert, tmp, acc);
                for bound in &mut horiz.bounds {
                    bound.0 -= first;
                }
                h_pass(tmp, cols, 0..dst_h, horiz, dst);
            }
            (true, false) => h_pass(src, src_w, 0..dst_h, horiz, dst),
            (false, true) => vertical(src, stride, 0, stride, vert, dst, acc),
            (false, false) => dst.copy_from_slice(&src[..dst.len()]),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn passes_avx2(s: &mut Scratch, src: &[u8], src_size: (usize, usize), ch: usize, need: (bool, bool), dst: &mut [u8], dst_size: (usize, usize)) {
        passes::<true>(s, src, src_size, ch, need, dst, dst_size)
    }

    /// `horizontal::<3>` for 3-tap kernels (bilinear up to 1x, the common small crop):
    /// an output pixel's 9 source bytes are contiguous, so one 8-byte load, one 8-lane
    /// multiply and a shuffle-add give its three sums. The same integers as the scalar
    /// loop, so the same pixels.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn horizontal_rgb_k3_avx2(src: &[u8], src_w: usize, rows: std::ops::Range<usize>, c: &Coeffs, out: &mut [u8], out_w: usize, lanes: &mut Vec<[i32; 8]>) {
        use std::arch::x86_64::*;
        lanes.clear();
        lanes.extend((0..out_w).map(|xx| {
            let k = &c.k[xx * 3..xx * 3 + 3];
            [k[0], k[0], k[0], k[1], k[1], k[1], k[2], k[2]]
        }));
        let round = _mm_set1_epi32(1 << (PRECISION_BITS - 1));
        for (y, line) in rows.zip(out.chunks_exact_mut(out_w * 3)) {
            let base = y * src_w * 3;
            for (xx, px) in line.chunks_exact_mut(3).enumerate() {
                let (xmin, n) = c.bounds[xx];
                let at = base + xmin * 3;
                if n == 0 || at + 9 > src.len() {
                    // The last pixels of the buffer: the scalar loop, which clamps.
                    pixel::<3, 3>(&src[base..base + src_w * 3], c, xx, px);
                    continue;
                }
                // Bytes past the taps in use (zero weights) may belong to the next row: read, never counted.
                let w = _mm256_loadu_si256(lanes[xx].as_ptr() as *const __m256i);
                let k2 = lanes[xx][7];
                let bytes = _mm_loadl_epi64(src.as_ptr().add(at) as *const __m128i);
                let m = _mm256_mullo_epi32(_mm256_cvtepu8_epi32(bytes), w);
                let (lo, hi) = (_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m));
                // [l0 l1 l2 l3] + [l3 l4 l5 l6] + [l6 l7 0 0]: lanes 0 and 1 are channels 0 and 1.
                let sum = _mm_add_epi32(_mm_add_epi32(lo, _mm_alignr_epi8::<12>(hi, lo)), _mm_srli_si128::<8>(hi));
                let last = src[at + 8] as i32 * k2;
                let sum = _mm_add_epi32(_mm_add_epi32(sum, round), _mm_setr_epi32(0, 0, last, 0));
                let v = _mm_srai_epi32::<{ PRECISION_BITS as i32 }>(sum);
                let packed = _mm_cvtsi128_si32(_mm_packus_epi16(_mm_packs_epi32(v, v), _mm_setzero_si128())) as u32;
                px.copy_from_slice(&packed.to_le_bytes()[..3]);
            }
        }
    }

    /// Whether to take the AVX2 passes: the CPU has AVX2, and
    /// `LANCEFEED_PORTABLE_RESIZE` is not set (the tests run the portable passes with it).
    #[cfg(target_arch = "x86_64")]
    fn use_avx2() -> bool {
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX2.get_or_init(|| std::is_x86_feature_detected!("avx2") && std::env::var_os("LANCEFEED_PORTABLE_RESIZE").is_none())
    }

    /// `b` of `src` (`src_w` x `src_h` x `ch`, packed) resized to `dst` (`dst_w` x
    /// `dst_h`); `ch` is 1 or 3 and the output at most `MAX_SIDE` pixels wide.
    pub fn resize(src: &[u8], src_w: usize, src_h: usize, ch: usize, b: &Rect, dst: &mut [u8], dst_w: usize, dst_h: usize) {
        if dst_w == 0 || dst_h == 0 {
            return;
        }
        let bx = [b.x0 as f32, b.y0 as f32, b.x1 as f32, b.y1 as f32];
        let need_h = dst_w != src_w || bx[0] != 0.0 || bx[2] != dst_w as f32;
        let need_v = dst_h != src_h || bx[1] != 0.0 || bx[3] != dst_h as f32;
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            coefficients(&mut s.horiz, &mut s.weights, src_w, bx[0], bx[2], dst_w);
            coefficients(&mut s.vert, &mut s.weights, src_h, bx[1], bx[3], dst_h);
            #[cfg(target_arch = "x86_64")]
            if use_avx2() {
                // SAFETY: the CPU has AVX2 (checked in use_avx2).
                return unsafe { passes_avx2(s, src, (src_w, src_h), ch, (need_h, need_v), dst, (dst_w, dst_h)) };
            }
            passes::<false>(s, src, (src_w, src_h), ch, (need_h, need_v), dst, (dst_w, dst_h))
        });
    }
}

/// Turns a packed image upside down in place.
pub fn flip_vertical(buf: &mut [u8], width: usize, channels: usize) {
    let row = width * channels;
    let rows = if row == 0 { 0 } else { buf.len() / row };
    for y in 0..rows / 2 {
        let (top, bottom) = buf.split_at_mut((rows - 1 - y) * row);
        top[y * row..(y + 1) * row].swap_with_slice(&mut bottom[..row]);
    }
}

/// Mirrors each row of a packed image in place.
pub fn flip_horizontal(buf: &mut [u8], width: usize, channels: usize) {
    #[cfg(target_arch = "x86_64")]
    if channels == 3 && std::is_x86_feature_detected!("ssse3") {
        // SAFETY: the CPU has SSSE3.
        return FLIP_ROW.with(|tmp| unsafe { flip_rgb_ssse3(buf, width, &mut tmp.borrow_mut()) });
    }
    flip_horizontal_portable(buf, width, channels)
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// `flip_rgb_ssse3`'s copy of a row, kept per thread: grown once, never re-zeroed
    /// (a fresh buffer per call cost more than a 32x32 image's flip).
    static FLIP_ROW: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The 3-channel flip five pixels at a time, one byte shuffle each: every training
/// batch flips half its images, and swapping 3-byte pixels one by one cost ~2
/// instructions a byte (3% of a 224-pixel crop's decode). Each row is copied aside
/// first, so the 16-byte stores (15 bytes of pixels, one byte the next store
/// overwrites) never clobber pixels not yet read.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn flip_rgb_ssse3(buf: &mut [u8], width: usize, tmp: &mut Vec<u8>) {
    use std::arch::x86_64::*;
    let row = width * 3;
    // tmp[0] is a spare byte, so the load for the leftmost source pixels (16 bytes
    // ending at their last byte) starts inside the buffer.
    if tmp.len() < row + 1 {
        tmp.resize(row + 1, 0);
    }
    // Output pixel p of a group of five is source pixel 4 - p, at bytes 1 + 3 * (4 - p).
    let mask = _mm_setr_epi8(13, 14, 15, 10, 11, 12, 7, 8, 9, 4, 5, 6, 1, 2, 3, -128);
    for line in buf.chunks_exact_mut(row) {
        tmp[1..1 + row].copy_from_slice(line);
        let mut p = 0;
        while p * 3 + 16 <= row {
            let from = (width - p - 5) * 3;
            let v = _mm_loadu_si128(tmp.as_ptr().add(from).cast());
            _mm_storeu_si128(line.as_mut_ptr().add(p * 3).cast(), _mm_shuffle_epi8(v, mask));
            p += 5;
        }
        for p in p..width {
            let q = 1 + (width - 1 - p) * 3;
            line[p * 3..p * 3 + 3].copy_from_slice(&tmp[q..q + 3]);
        }
    }
}

fn flip_horizontal_portable(buf: &mut [u8], width: usize, channels: usize) {
    let row = width * channels;
    match channels {
        // Whole pixels as array elements: `reverse` then swaps them without per-byte
        // index checks (a tenth of the time of a byte loop at 224x224).
        3 => buf.chunks_exact_mut(row).for_each(|line| pixels::<3>(line).reverse()),
        1 => buf.chunks_exact_mut(row).for_each(|line| line.reverse()),
        _ => {
            for line in buf.chunks_exact_mut(row) {
                let (mut a, mut b) = (0, width.saturating_sub(1));
                while a < b {
                    for c in 0..channels {
                        line.swap(a * channels + c, b * channels + c);
                    }
                    a += 1;
                    b -= 1;
                }
            }
        }
    }
}

/// A row of `N`-byte pixels as a slice of pixels.
fn pixels<const N: usize>(line: &mut [u8]) -> &mut [[u8; N]] {
    // SAFETY: [u8; N] has the size of N bytes and the alignment of u8, and the
    // length is rounded down to whole pixels.
    unsafe { std::slice::from_raw_parts_mut(line.as_mut_ptr().cast::<[u8; N]>(), line.len() / N) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_reverses_pixels_not_channels() {
        let mut px = vec![1, 2, 3, 4, 5, 6, 7, 8, 9];
        flip_horizontal(&mut px, 3, 3);
        assert_eq!(px, vec![7, 8, 9, 4, 5, 6, 1, 2, 3]);
        let mut two_rows = vec![1, 2, 3, 4, 5, 6];
        flip_horizontal(&mut two_rows, 3, 1);
        assert_eq!(two_rows, vec![3, 2, 1, 6, 5, 4]);
    }

    #[test]
    fn every_flip_path_mirrors_alike() {
        for width in (1..48).chain([223, 224, 225, 1000, 3000]) {
            let src: Vec<u8> = (0..width * 3 * 3).map(|i| (i * 7 % 251) as u8).collect();
            let mut want = src.clone();
            for line in want.chunks_exact_mut(width * 3) {
                let px: Vec<[u8; 3]> = line.chunks_exact(3).rev().map(|p| [p[0], p[1], p[2]]).collect();
                line.copy_from_slice(&px.concat());
            }
            let mut fast = src.clone();
            flip_horizontal(&mut fast, width, 3);
            assert_eq!(fast, want, "width {width}");
            let mut portable = src.clone();
            flip_horizontal_portable(&mut portable, width, 3);
            assert_eq!(portable, want, "width {width}");
        }
    }

    #[test]
    fn same_size_is_a_copy() {
        let src: Vec<u8> = (0..12).collect();
        let d = Decoded::unscaled(2, 2);
        let mut dst = vec![0; 12];
        crop_resize(&src, &d, &Rect::full(2, 2), 3, &mut dst, 2, 2).unwrap();
        assert_eq!(src, dst);
    }

    #[test]
    fn downscale_of_flat_image_stays_flat() {
        let src = vec![77u8; 8 * 8 * 3];
        let d = Decoded::unscaled(8, 8);
        let mut dst = vec![0; 3 * 3 * 3];
        crop_resize(&src, &d, &Rect { x0: 0.5, y0: 1.0, x1: 7.0, y1: 8.0 }, 3, &mut dst, 3, 3).unwrap();
        assert!(dst.iter().all(|&v| v == 77));
    }
}
