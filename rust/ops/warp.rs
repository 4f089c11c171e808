//! Geometric ops that resample a uint8 image (rotation, affine maps, padding, flips), as
//! torchvision.transforms.v2.functional computes them on uint8 tensors.
//!
//! The affine maps follow torchvision's arithmetic step by step, so that the source
//! coordinate of each output pixel is the very float torch computes and nearest and
//! bilinear sampling pick the same pixels and weights:
//!
//! * `_get_inverse_affine_matrix` in f64, as Python evaluates it;
//! * `_affine_grid` in f32: the matrix rounded to f32 and divided by half the input
//!   size, then `fma(y, b, x * a) + c` per output pixel: `x * a` rounded, `y * b` added
//!   to it in one fused multiply-add, then `c` (what torch 2.15's bmm, through MKL,
//!   gives bit for bit on an AVX-512 CPU; torch 2.13's rounded `y * b` on its own too,
//!   which moves a coordinate by an ulp now and then);
//! * `grid_sample(align_corners=False, padding_mode="zeros")` in f32 as ATen's
//!   vectorized CPU kernel runs once GCC has contracted it: the un-normalization
//!   `(g + 1) * size / 2 - 0.5` and the bilinear sum of the four corners are fused
//!   multiply-adds, nearest rounds half to even;
//! * `_apply_grid_transform`'s fill: a channel of ones is sampled alongside the image,
//!   then nearest takes the fill where that mask is below 0.5 and bilinear blends
//!   `(v - fill) * mask + fill`; the result is rounded half to even to uint8.
//!
//! The fused multiply-adds are what torch's AVX2 and AVX-512 kernels (every x86-64 CPU
//! of the last decade) compute. A torch that rounds differently (its pre-AVX2 kernel,
//! or a BLAS that fuses the grid's matmul) moves coordinates by an ulp or so: one level
//! now and then in bilinear output, another pixel at the rare nearest ties.

use super::Image;

/// The op `name` applied to `img`, or None when `name` is not one of these ops.
///
/// * `affine` [angle, translate_x, translate_y, scale, shear_x, shear_y, interpolation,
///   fill_0, fill_1, fill_2, (center_x, center_y)]: `F.affine` with
///   `interpolation` 0 nearest, anything else bilinear; the center, in pixels, is
///   optional (torchvision's default is the image center).
/// * `rotate` [angle, interpolation, expand, fill_0, fill_1, fill_2]: `F.rotate`
///   (counter-clockwise degrees), `expand` non-zero grows the output to hold the
///   whole rotated image.
/// * `pad` [left, top, right, bottom, mode, fill_0, fill_1, fill_2]: `F.pad`, mode 0
///   constant, 1 edge, 2 reflect, 3 symmetric; negative amounts crop.
/// * `hflip` [], `vflip` []: `F.horizontal_flip`, `F.vertical_flip`.
///
/// Fills are one per channel in [0, 255]; missing ones are 0, a single one applies
/// to every channel, and a 1-channel image uses `fill_0`.
pub fn apply(name: &str, params: &[f64], img: &mut Image) -> Option<Result<(), String>> {
    Some(match name {
        "affine" => affine_op(params, img),
        "rotate" => rotate_op(params, img),
        "pad" => pad_op(params, img),
        "hflip" => check(name, params, 0, 0).map(|()| hflip(img)),
        "vflip" => check(name, params, 0, 0).map(|()| vflip(img)),
        _ => return None,
    })
}

fn check(name: &str, params: &[f64], min: usize, max: usize) -> Result<(), String> {
    if params.len() < min || params.len() > max {
        let want = if min == max { format!("{min}") } else { format!("{min} to {max}") };
        return Err(format!("op {name:?} takes {want} parameters, got {}", params.len()));
    }
    match params.iter().find(|v| !v.is_finite()) {
        Some(v) => Err(format!("op {name:?}: parameter {v} is not a finite number")),
        None => Ok(()),
    }
}

/// The fill per channel from `params[from..]` (at most three given).
fn fills(name: &str, params: &[f64], from: usize) -> Result<[f64; 3], String> {
    let given = params.get(from..).unwrap_or(&[]);
    if let Some(v) = given.iter().find(|v| !(0.0..=255.0).contains(*v)) {
        return Err(format!("op {name:?}: fill {v} is outside [0, 255]"));
    }
    match *given {
        [] => Ok([0.0; 3]),
        [f] => Ok([f; 3]),
        [a, b, c] => Ok([a, b, c]),
        _ => Err(format!("op {name:?} takes 0, 1 or 3 fill values, got {}", given.len())),
    }
}

fn affine_op(params: &[f64], img: &mut Image) -> Result<(), String> {
    let name = "affine";
    check(name, params, 7, 12)?;
    let (fill_end, center) = match params.len() {
        12 => (10, Some([params[10], params[11]])),
        11 => return Err("op \"affine\" takes 7 to 10 parameters, or 12 with a center".into()),
        n => (n, None),
    };
    let [angle, tx, ty, scale, shear_x, shear_y, interpolation] = params[..7] else { unreachable!() };
    if scale <= 0.0 {
        return Err(format!("op \"affine\": scale must be positive, got {scale}"));
    }
    let fill = fills(name, &params[..fill_end], 7)?;
    let (w, h) = (img.width, img.height);
    // `affine_image` turns a center in pixels into one relative to the image center.
    let center_f = center.map_or([0.0, 0.0], |[cx, cy]| [cx - w as f64 * 0.5, cy - h as f64 * 0.5]);
    let matrix = inverse_affine_matrix(center_f, angle, [tx, ty], scale, [shear_x, shear_y]);
    if img.data.is_empty() {
        return Ok(());
    }
    img.data = warp(img, &matrix, w, h, interpolation != 0.0, &fill);
    Ok(())
}

fn rotate_op(params: &[f64], img: &mut Image) -> Result<(), String> {
    let name = "rotate";
    check(name, params, 3, 6)?;
    let fill = fills(name, params, 3)?;
    let (angle, bilinear, expand) = (py_mod(params[0], 360.0), params[1] != 0.0, params[2] != 0.0);
    let (w, h) = (img.width, img.height);
    // `rotate_image`'s exact paths, taken before any resampling.
    if angle == 0.0 {
        return Ok(());
    }
    if angle == 180.0 {
        rotate_quarters(img, 2);
        return Ok(());
    }
    if expand || w == h {
        if angle == 90.0 {
            rotate_quarters(img, 1);
            return Ok(());
        }
        if angle == 270.0 {
            rotate_quarters(img, 3);
            return Ok(());
        }
    }
    // rotate is counter-clockwise where affine is clockwise, hence -angle.
    let matrix = inverse_affine_matrix([0.0, 0.0], -angle, [0.0, 0.0], 1.0, [0.0, 0.0]);
    let (ow, oh) = if expand { expanded_size(&matrix, w, h) } else { (w, h) };
    if img.data.is_empty() {
        // torch reshapes the empty input to the output size, which only works if empty.
        if ow * oh != 0 {
            return Err(format!("op \"rotate\": cannot expand an empty {w}x{h} image to {ow}x{oh}"));
        }
    } else {
        img.data = warp(img, &matrix, ow, oh, bilinear, &fill);
    }
    img.width = ow;
    img.height = oh;
    Ok(())
}

/// Python's `a % b` for floats: the sign of `b`.
fn py_mod(a: f64, b: f64) -> f64 {
    let m = a % b;
    if m == 0.0 {
        0.0f64.copysign(b)
    } else if (m < 0.0) != (b < 0.0) {
        m + b
    } else {
        m
    }
}

/// `math.radians`: CPython multiplies by a rounded pi / 180.
fn radians(degrees: f64) -> f64 {
    degrees * (std::f64::consts::PI / 180.0)
}

/// torchvision's `_get_inverse_affine_matrix(center, angle, translate, scale, shear)`:
/// the map from output pixel to source pixel, both relative to the image center, as
/// [a, b, c, d, e, f] with x' = a x + b y + c, y' = d x + e y + f. Same operations in
/// the same order as the Python, so the same f64 results.
pub fn inverse_affine_matrix(center: [f64; 2], angle: f64, translate: [f64; 2], scale: f64, shear: [f64; 2]) -> [f64; 6] {
    let rot = radians(angle);
    let sx = radians(shear[0]);
    let sy = radians(shear[1]);
    let [cx, cy] = center;
    let [tx, ty] = translate;
    let cos_sy = sy.cos();
    let tan_sx = sx.tan();
    let rot_minus_sy = rot - sy;
    let cx_plus_tx = cx + tx;
    let cy_plus_ty = cy + ty;
    let a = rot_minus_sy.cos() / cos_sy;
    let b = -(a * tan_sx + rot.sin());
    let c = rot_minus_sy.sin() / cos_sy;
    let d = rot.cos() - c * tan_sx;
    let mut m = [d / scale, -b / scale, 0.0, -c / scale, a / scale, 0.0];
    m[2] += cx - m[0] * cx_plus_tx - m[1] * cy_plus_ty;
    m[5] += cy - m[3] * cx_plus_tx - m[4] * cy_plus_ty;
    m
}

/// `_compute_affine_output_size` (its tensor version, what eager torch runs): the
/// (width, height) that holds the input's corners mapped by `m`, in f32, with the
/// corner coordinates cut to 1e-4 before rounding outwards.
pub fn expanded_size(m: &[f64; 6], w: usize, h: usize) -> (usize, usize) {
    let t = m.map(|v| v as f32);
    let (half_w, half_h) = ((0.5 * w as f64) as f32, (0.5 * h as f64) as f32);
    let corners = [(-half_w, -half_h), (-half_w, half_h), (half_w, half_h), (half_w, -half_h)];
    let (inv_tol, tol) = (10000.0f32, 1e-4f64 as f32);
    let mut size = [0usize; 2];
    for (k, half) in [(0, half_w), (1, half_h)] {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for &(x, y) in &corners {
            let v = (x * t[3 * k] + y * t[3 * k + 1]) + t[3 * k + 2];
            lo = lo.min(v);
            hi = hi.max(v);
        }
        let cmax = (((hi + half) * inv_tol).trunc() * tol).ceil();
        let cmin = (((lo + half) * inv_tol).trunc() * tol).floor();
        size[k] = (cmax - cmin) as usize;
    }
    (size[0], size[1])
}

/// The f32 sampling grid of `_affine_grid(theta, w, h, ow, oh)`, kept as the terms of
/// its sums: source x (normalized to [-1, 1]) of output pixel (i, j) is
/// `(col_x[j] + row term) + c_x`, and likewise for y.
struct Grid {
    col_x: Vec<f32>,
    col_y: Vec<f32>,
    /// Factors of the row coordinate, then the constant terms.
    b_x: f32,
    b_y: f32,
    c_x: f32,
    c_y: f32,
    /// grid_sample's un-normalization, `size / 2` of the input.
    half_w: f32,
    half_h: f32,
    /// The output height: row i's coordinate is `i - (oh - 1) / 2`.
    oh: usize,
}

impl Grid {
    fn new(m: &[f64; 6], w: usize, h: usize, ow: usize, oh: usize) -> Grid {
        let t = m.map(|v| v as f32);
        // torch.tensor([0.5 * w, 0.5 * h], dtype=float32): exact below 2^24.
        let (sw, sh) = ((0.5 * w as f64) as f32, (0.5 * h as f64) as f32);
        let r = [t[0] / sw, t[1] / sw, t[2] / sw, t[3] / sh, t[4] / sh, t[5] / sh];
        // linspace((1 - ow) / 2, (ow - 1) / 2, ow) has step 1: exact half-integers.
        let xs = (0..ow).map(|j| (j as f64 - (ow as f64 - 1.0) * 0.5) as f32);
        Grid {
            col_x: xs.clone().map(|x| x * r[0]).collect(),
            col_y: xs.map(|x| x * r[3]).collect(),
            b_x: r[1],
            b_y: r[4],
            c_x: r[2],
            c_y: r[5],
            half_w: w as f32 / 2.0,
            half_h: h as f32 / 2.0,
            oh,
        }
    }

    fn row_y(&self, i: usize) -> f32 {
        (i as f64 - (self.oh as f64 - 1.0) * 0.5) as f32
    }
}

/// The input `src` resampled through `m` onto `ow` x `oh` pixels: torchvision's
/// `_affine_grid` then `_apply_grid_transform` (see the module comment).
fn warp(src: &Image, m: &[f64; 6], ow: usize, oh: usize, bilinear: bool, fill: &[f64; 3]) -> Vec<u8> {
    let grid = Grid::new(m, src.width, src.height, ow, oh);
    // torch.tensor(fill, dtype=float32), kept in f32 for the bilinear blend.
    let fill = fill.map(|f| f as f32);
    let mut out = vec![0u8; ow * oh * src.channels];
    match (src.channels, bilinear) {
        (1, false) => sample::<1, false>(&grid, src, &fill, &mut out),
        (1, true) => sample::<1, true>(&grid, src, &fill, &mut out),
        (_, false) => sample::<3, false>(&grid, src, &fill, &mut out),
        (_, true) => sample::<3, true>(&grid, src, &fill, &mut out),
    }
    out
}

fn sample<const C: usize, const BILINEAR: bool>(grid: &Grid, src: &Image, fill: &[f32; 3], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { sample_fma::<C, BILINEAR>(grid, src, fill, out) };
        }
    }
    // Elsewhere mul_add is a libm call (still exact) unless FMA is in the baseline.
    sample_rows::<C, BILINEAR>(grid, src, fill, out)
}

/// The same loop compiled with hardware FMA and SSE4.1 rounding inline: `mul_add`,
/// `floor` and `round_ties_even` are then single instructions instead of libm calls.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sample_fma<const C: usize, const BILINEAR: bool>(grid: &Grid, src: &Image, fill: &[f32; 3], out: &mut [u8]) {
    sample_rows::<C, BILINEAR>(grid, src, fill, out)
}

#[inline(always)]
fn sample_rows<const C: usize, const BILINEAR: bool>(grid: &Grid, src: &Image, fill: &[f32; 3], out: &mut [u8]) {
    let ow = grid.col_x.len();
    if ow == 0 {
        return;
    }
    let (w, h) = (src.width, src.height);
    let (wf, hf) = (w as f32, h as f32);
    let px = &src.data[..];
    // Where the mask is 0 (nearest) the output is the fill, rounded like any value.
    let fill_u8: [u8; C] = std::array::from_fn(|c| to_u8(fill[c]));
    for (i, row) in out.chunks_exact_mut(ow * C).enumerate() {
        // The grid is not accumulated along the row: torch computes every pixel's
        // coordinate from scratch, and a running sum would drift from it by a few ulps,
        // enough to flip nearest ties and bilinear roundings. The row's terms are
        // hoisted instead, leaving an add and two fused multiply-adds per coordinate.
        let y = grid.row_y(i);
        for ((dst, &ax), &ay) in row.chunks_exact_mut(C).zip(&grid.col_x).zip(&grid.col_y) {
            let gx = y.mul_add(grid.b_x, ax) + grid.c_x;
            let gy = y.mul_add(grid.b_y, ay) + grid.c_y;
            let ix = (gx + 1.0).mul_add(grid.half_w, -0.5);
            let iy = (gy + 1.0).mul_add(grid.half_h, -0.5);
            if !BILINEAR {
                let (xr, yr) = (ix.round_ties_even(), iy.round_ties_even());
                // Float comparisons: false for NaN, and for coordinates past i32 that
                // torch's int conversion sends out of bounds.
                if xr >= 0.0 && xr < wf && yr >= 0.0 && yr < hf {
                    let o = (yr as usize * w + xr as usize) * C;
                    dst.copy_from_slice(&px[o..o + C]);
                } else {
                    dst.copy_from_slice(&fill_u8);
                }
                continue;
            }
            let (x0, y0) = (ix.floor(), iy.floor());
            let wx = ix - x0;
            let e = 1.0 - wx;
            let n = iy - y0;
            let s = 1.0 - n;
            let (nw, ne, sw, se) = (s * e, s * wx, n * e, n * wx);
            let (w_in, e_in) = (x0 >= 0.0 && x0 < wf, x0 >= -1.0 && x0 < wf - 1.0);
            let (n_in, s_in) = (y0 >= 0.0 && y0 < hf, y0 >= -1.0 && y0 < hf - 1.0);
            let mut acc = [0f32; C];
            // The sampled ones channel: not quite 1 inside the image either, since the
            // four rounded weights need not sum to exactly 1.
            let mask;
            if w_in && e_in && n_in && s_in {
                let o = (y0 as usize * w + x0 as usize) * C;
                let (top, bottom) = (&px[o..o + 2 * C], &px[o + w * C..o + w * C + 2 * C]);
                for c in 0..C {
                    let a = top[c] as f32 * nw;
                    let a = (top[C + c] as f32).mul_add(ne, a);
                    let a = (bottom[c] as f32).mul_add(sw, a);
                    acc[c] = (bottom[C + c] as f32).mul_add(se, a);
                }
                mask = ((nw + ne) + sw) + se;
            } else {
                // torch gathers 0 for a corner outside: the product is +0 and the
                // multiply-add leaves the sum as it was, so such corners are skipped.
                let mut m = 0f32;
                let corners = [(n_in && w_in, 0, 0, nw), (n_in && e_in, 0, 1, ne), (s_in && w_in, 1, 0, sw), (s_in && e_in, 1, 1, se)];
                for (inside, dy, dx, weight) in corners {
                    if inside {
                        let o = ((y0 as isize + dy) as usize * w + (x0 as isize + dx) as usize) * C;
                        for c in 0..C {
                            acc[c] = (px[o + c] as f32).mul_add(weight, acc[c]);
                        }
                        m += weight;
                    }
                }
                mask = m;
            }
            for c in 0..C {
                dst[c] = to_u8((acc[c] - fill[c]) * mask + fill[c]);
            }
        }
    }
}

/// `round_().to(uint8)`: half to even; the clamp only guards values torch never makes.
#[inline(always)]
fn to_u8(v: f32) -> u8 {
    v.round_ties_even().clamp(0.0, 255.0) as u8
}

/// `torch.rot90(img, k, dims=(-2, -1))`: `k` quarter turns counter-clockwise.
fn rotate_quarters(img: &mut Image, k: u32) {
    let (w, h, c) = (img.width, img.height, img.channels);
    let src = &img.data;
    let mut out = vec![0u8; src.len()];
    let (ow, oh) = if k % 2 == 1 { (h, w) } else { (w, h) };
    for i in 0..oh {
        for j in 0..ow {
            let (sy, sx) = match k {
                1 => (j, w - 1 - i),
                2 => (h - 1 - i, w - 1 - j),
                _ => (h - 1 - j, i),
            };
            let (o, s) = ((i * ow + j) * c, (sy * w + sx) * c);
            out[o..o + c].copy_from_slice(&src[s..s + c]);
        }
    }
    img.data = out;
    img.width = ow;
    img.height = oh;
}

fn hflip(img: &mut Image) {
    let (w, c) = (img.width, img.channels);
    if w == 0 {
        return;
    }
    for row in img.data.chunks_exact_mut(w * c) {
        for j in 0..w / 2 {
            for k in 0..c {
                row.swap(j * c + k, (w - 1 - j) * c + k);
            }
        }
    }
}

fn vflip(img: &mut Image) {
    let (stride, h) = (img.width * img.channels, img.height);
    for i in 0..h / 2 {
        let (top, bottom) = img.data.split_at_mut((h - 1 - i) * stride);
        top[i * stride..(i + 1) * stride].swap_with_slice(&mut bottom[..stride]);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PadMode {
    Constant,
    Edge,
    Reflect,
    Symmetric,
}

fn pad_op(params: &[f64], img: &mut Image) -> Result<(), String> {
    let name = "pad";
    check(name, params, 5, 8)?;
    if let Some(v) = params[..5].iter().find(|v| v.fract() != 0.0 || v.abs() > i32::MAX as f64) {
        return Err(format!("op \"pad\": amounts and mode must be integers, got {v}"));
    }
    let mode = match params[4] as i64 {
        0 => PadMode::Constant,
        1 => PadMode::Edge,
        2 => PadMode::Reflect,
        3 => PadMode::Symmetric,
        m => return Err(format!("op \"pad\": mode must be 0 (constant), 1 (edge), 2 (reflect) or 3 (symmetric), got {m}")),
    };
    let fill = fills(name, params, 5)?;
    let fill: [u8; 3] = if img.channels == 1 || params.len() <= 6 {
        // A single fill goes to torch_pad as a Python float and is truncated...
        [fill[0] as u8; 3]
    } else {
        // ...a list becomes a float32 tensor first, then truncated.
        fill.map(|f| f as f32 as u8)
    };
    let [left, top, right, bottom] = [0, 1, 2, 3].map(|k| params[k] as i64);
    let cols = PadAxis::new(img.width, left, right, mode).map_err(|e| format!("op \"pad\": width {e}"))?;
    let rows = PadAxis::new(img.height, top, bottom, mode).map_err(|e| format!("op \"pad\": height {e}"))?;
    *img = pad(img, &cols, &rows, &fill[..img.channels]);
    Ok(())
}

/// One axis of a pad: where each output index reads from.
struct PadAxis {
    /// The source index of each output index, None for the fill.
    map: Vec<Option<usize>>,
    /// Output indices `[start, end)` read the source contiguously from `src_start`.
    start: usize,
    end: usize,
    src_start: usize,
}

impl PadAxis {
    /// The axis of `size` padded by `before` and `after` (negative: cropped), refused
    /// where torch refuses it.
    fn new(size: usize, before: i64, after: i64, mode: PadMode) -> Result<PadAxis, String> {
        let n = size as i64;
        let out = n + before + after;
        // What survives the crops: source indices [lo, hi).
        let (lo, hi) = (before.min(0).abs(), n - after.min(0).abs());
        match mode {
            // torch_pad narrows the crops off first.
            PadMode::Constant if hi < lo => return Err(format!("{n} cannot be cropped by {} and {}", -before, -after)),
            PadMode::Edge | PadMode::Reflect if out < 1 => return Err(format!("{n} padded by {before} and {after} leaves nothing")),
            PadMode::Reflect if before >= n || after >= n => {
                return Err(format!("{n} can only be reflect-padded by less than {n}, got {before} and {after}"))
            }
            // torchvision's _pad_symmetric crops, then indexes at most the whole rest.
            PadMode::Symmetric if hi - lo < 1 || before > hi - lo || after > hi - lo => {
                return Err(format!("{n} cropped to {} can only be symmetric-padded by up to that, got {before} and {after}", (hi - lo).max(0)))
            }
            _ => {}
        }
        let map = (0..out.max(0))
            .map(|j| {
                // The output index in source coordinates.
                let u = j - before;
                let v = match mode {
                    PadMode::Constant => return (0..n).contains(&u).then_some(u as usize),
                    PadMode::Edge => u.clamp(0, n - 1),
                    PadMode::Reflect if u < 0 => -u,
                    PadMode::Reflect if u >= n => 2 * (n - 1) - u,
                    PadMode::Symmetric if u < lo => 2 * lo - 1 - u,
                    PadMode::Symmetric if u >= hi => 2 * hi - 1 - u,
                    _ => u,
                };
                Some(v as usize)
            })
            .collect();
        // Clamped: when the crops overlap (edge and reflect allow it) nothing is copied
        // straight and the map does all.
        let start = (lo + before).clamp(0, out.max(0));
        let end = (hi + before).clamp(start, out.max(0));
        Ok(PadAxis { map, start: start as usize, end: end as usize, src_start: (start - before) as usize })
    }
}

fn pad(img: &Image, cols: &PadAxis, rows: &PadAxis, fill: &[u8]) -> Image {
    let c = img.channels;
    let (ow, oh) = (cols.map.len(), rows.map.len());
    let mut out = Image::new(ow, oh, c);
    if ow == 0 {
        return out;
    }
    let stride = img.width * c;
    for (row, src_y) in out.data.chunks_exact_mut(ow * c).zip(&rows.map) {
        let Some(sy) = *src_y else {
            row.chunks_exact_mut(c).for_each(|px| px.copy_from_slice(fill));
            continue;
        };
        let src = &img.data[sy * stride..(sy + 1) * stride];
        if cols.end > cols.start {
            let (span, from) = (cols.start * c..cols.end * c, cols.src_start * c);
            row[span.clone()].copy_from_slice(&src[from..from + span.len()]);
        }
        for j in (0..cols.start).chain(cols.end..ow) {
            let dst = &mut row[j * c..(j + 1) * c];
            match cols.map[j] {
                Some(sx) => dst.copy_from_slice(&src[sx * c..(sx + 1) * c]),
                None => dst.copy_from_slice(fill),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: usize, h: usize, c: usize) -> Image {
        let data = (0..w * h * c).map(|k| (k * 37 % 251) as u8).collect();
        Image::from_vec(data, w, h, c).unwrap()
    }

    fn run(name: &str, params: &[f64], img: &Image) -> Image {
        let mut out = img.clone();
        apply(name, params, &mut out).expect("known op").expect("valid parameters");
        out
    }

    /// `torch.rot90(k=1)` on an interleaved image.
    fn rot90(img: &Image) -> Image {
        let (w, h, c) = (img.width, img.height, img.channels);
        let mut out = Image::new(h, w, c);
        for i in 0..w {
            for j in 0..h {
                let (o, s) = ((i * h + j) * c, (j * w + (w - 1 - i)) * c);
                out.data[o..o + c].copy_from_slice(&img.data[s..s + c]);
            }
        }
        out
    }

    #[test]
    fn unknown_names_are_left_to_others() {
        assert!(apply("brightness", &[1.0], &mut image(2, 2, 1)).is_none());
    }

    #[test]
    fn identity_affine_is_the_identity() {
        for (w, h, c) in [(1, 1, 1), (7, 5, 3), (37, 29, 1), (64, 48, 3), (255, 3, 3)] {
            let img = image(w, h, c);
            for interp in [0.0, 1.0] {
                for fill in [0.0, 255.0] {
                    let p = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, interp, fill, fill, fill];
                    assert_eq!(run("affine", &p, &img), img, "{w}x{h}x{c} interpolation {interp} fill {fill}");
                }
            }
        }
    }

    #[test]
    fn integer_translation_shifts_and_fills() {
        let img = image(6, 4, 3);
        for interp in [0.0, 1.0] {
            let out = run("affine", &[0.0, 2.0, -1.0, 1.0, 0.0, 0.0, interp, 1.0, 2.0, 3.0], &img);
            for y in 0..4 {
                for x in 0..6 {
                    let o = (y * 6 + x) * 3;
                    let want = if x >= 2 && y + 1 < 4 { img.data[((y + 1) * 6 + x - 2) * 3..][..3].to_vec() } else { vec![1, 2, 3] };
                    assert_eq!(out.data[o..o + 3], want[..], "({x}, {y}) interpolation {interp}");
                }
            }
        }
    }

    #[test]
    fn quarter_turns_are_exact() {
        // rotate_image's own paths: 180 always, 90 and 270 when square or expanding.
        for (w, h, c) in [(5, 3, 3), (4, 4, 1), (1, 6, 3), (37, 29, 1)] {
            let img = image(w, h, c);
            for interp in [0.0, 1.0] {
                let r90 = rot90(&img);
                assert_eq!(run("rotate", &[90.0, interp, 1.0, 7.0, 7.0, 7.0], &img), r90);
                assert_eq!(run("rotate", &[-270.0, interp, 1.0], &img), r90);
                assert_eq!(run("rotate", &[180.0, interp, 0.0], &img), rot90(&r90));
                assert_eq!(run("rotate", &[-180.0, interp, 1.0], &img), rot90(&r90));
                assert_eq!(run("rotate", &[270.0, interp, 1.0], &img), rot90(&rot90(&r90)));
                assert_eq!(run("rotate", &[720.0, interp, 1.0], &img), img);
            }
        }
    }

    #[test]
    fn quarter_turns_through_the_grid() {
        // affine has no shortcut, but on a square image its 90 and 180 degree grids land
        // within float noise of pixel centers, so both interpolations are exact there.
        for (n, c) in [(5, 3), (6, 1), (31, 3)] {
            let img = image(n, n, c);
            for interp in [0.0, 1.0] {
                let p = |angle: f64| [angle, 0.0, 0.0, 1.0, 0.0, 0.0, interp, 9.0, 9.0, 9.0];
                let r90 = rot90(&img);
                assert_eq!(run("affine", &p(-90.0), &img), r90, "{n} {interp}");
                assert_eq!(run("affine", &p(180.0), &img), rot90(&r90), "{n} {interp}");
                assert_eq!(run("affine", &p(90.0), &img), rot90(&rot90(&r90)), "{n} {interp}");
            }
        }
    }

    #[test]
    fn quarter_turn_of_a_non_square_image_keeps_torchvisions_ties() {
        // rotate(90, expand=False) of a 5x4 image resamples: the source columns fall on
        // half-pixels and round half to even, so columns repeat. Values from
        // torchvision 0.29 (F.rotate on arange(20).reshape(1, 4, 5), fill 9).
        let img = Image::from_vec((0..20).collect(), 5, 4, 1).unwrap();
        let nearest = run("rotate", &[90.0, 0.0, 0.0, 9.0], &img);
        assert_eq!(nearest.data, [4, 4, 14, 14, 9, 2, 2, 12, 12, 9, 2, 2, 12, 12, 9, 0, 0, 10, 10, 9]);
        let bilinear = run("rotate", &[90.0, 1.0, 0.0, 9.0], &img);
        assert_eq!(bilinear.data, [5, 6, 11, 16, 9, 5, 5, 10, 15, 9, 5, 4, 9, 14, 9, 5, 3, 8, 13, 8]);
    }

    #[test]
    fn expand_sizes_match_torchvision() {
        // (h, w) -> angle and (h, w) out, from F.rotate(..., expand=True) in torchvision 0.29.
        type Sizes = &'static [(f64, (usize, usize))];
        let cases: &[((usize, usize), Sizes)] = &[
            ((48, 64), &[(10.0, (60, 72)), (30.0, (74, 80)), (45.0, (80, 80)), (60.0, (80, 74)), (89.9, (66, 50)), (135.0, (80, 80)), (200.0, (68, 78)), (-20.5, (68, 78)), (359.99, (50, 66)), (1e-9, (48, 64))]),
            ((29, 37), &[(10.0, (35, 43)), (30.0, (45, 47)), (45.0, (47, 47)), (89.9, (39, 31)), (-20.5, (41, 45)), (359.99, (31, 39))]),
            ((1, 1), &[(10.0, (3, 3)), (45.0, (3, 3)), (359.99, (1, 1))]),
            ((3, 2), &[(10.0, (5, 4)), (89.9, (3, 4)), (359.99, (5, 4))]),
            ((100, 1), &[(10.0, (100, 19)), (30.0, (88, 51)), (45.0, (72, 73)), (89.9, (2, 101)), (200.0, (96, 37)), (359.99, (100, 3))]),
        ];
        for &((h, w), angles) in cases {
            for &(angle, (oh, ow)) in angles {
                let out = run("rotate", &[angle, 0.0, 1.0], &image(w, h, 1));
                assert_eq!((out.height, out.width), (oh, ow), "{h}x{w} by {angle}");
                assert_eq!(out.data.len(), oh * ow);
            }
        }
        // The quarter turns swap the sides; without expand nothing changes size.
        let out = run("rotate", &[90.0, 1.0, 1.0], &image(64, 48, 3));
        assert_eq!((out.height, out.width), (64, 48));
        let out = run("rotate", &[30.0, 1.0, 0.0], &image(64, 48, 3));
        assert_eq!((out.height, out.width), (48, 64));
    }

    #[test]
    fn pad_every_mode_on_three_by_two() {
        // A 3-wide, 2-high image: rows [10 11 12], [13 14 15]; torchvision's results.
        let img = Image::from_vec(vec![10, 11, 12, 13, 14, 15], 3, 2, 1).unwrap();
        let pad = |p: [f64; 4], mode: f64| run("pad", &[p[0], p[1], p[2], p[3], mode, 7.0], &img);
        let check = |out: Image, w: usize, h: usize, data: &[u8]| {
            assert_eq!((out.width, out.height), (w, h));
            assert_eq!(out.data, data);
        };
        check(pad([1.0, 1.0, 1.0, 1.0], 0.0), 5, 4, &[7, 7, 7, 7, 7, 7, 10, 11, 12, 7, 7, 13, 14, 15, 7, 7, 7, 7, 7, 7]);
        check(pad([1.0, 1.0, 1.0, 1.0], 1.0), 5, 4, &[10, 10, 11, 12, 12, 10, 10, 11, 12, 12, 13, 13, 14, 15, 15, 13, 13, 14, 15, 15]);
        check(pad([1.0, 1.0, 1.0, 1.0], 2.0), 5, 4, &[14, 13, 14, 15, 14, 11, 10, 11, 12, 11, 14, 13, 14, 15, 14, 11, 10, 11, 12, 11]);
        check(pad([1.0, 1.0, 1.0, 1.0], 3.0), 5, 4, &[10, 10, 11, 12, 12, 10, 10, 11, 12, 12, 13, 13, 14, 15, 15, 13, 13, 14, 15, 15]);
        check(pad([2.0, 0.0, 0.0, 1.0], 2.0), 5, 3, &[12, 11, 10, 11, 12, 15, 14, 13, 14, 15, 12, 11, 10, 11, 12]);
        check(pad([3.0, 0.0, 0.0, 0.0], 3.0), 6, 2, &[12, 11, 10, 10, 11, 12, 15, 14, 13, 13, 14, 15]);
        check(pad([0.0, 2.0, 0.0, 0.0], 3.0), 3, 4, &[13, 14, 15, 10, 11, 12, 10, 11, 12, 13, 14, 15]);
        // Negative amounts crop: torch_pad reflects about the uncropped edge, symmetric
        // crops first.
        check(pad([-1.0, -1.0, 2.0, 0.0], 0.0), 4, 1, &[14, 15, 7, 7]);
        check(pad([-1.0, -1.0, 2.0, 0.0], 1.0), 4, 1, &[14, 15, 15, 15]);
        check(pad([-1.0, -1.0, 2.0, 0.0], 2.0), 4, 1, &[14, 15, 14, 13]);
        check(pad([-1.0, -1.0, 2.0, 0.0], 3.0), 4, 1, &[14, 15, 15, 14]);
        check(pad([5.0, -1.0, 0.0, 0.0], 1.0), 8, 1, &[13, 13, 13, 13, 13, 13, 14, 15]);
        check(pad([-3.0, 0.0, 0.0, 0.0], 0.0), 0, 2, &[]);
        // And where torch refuses.
        for (p, mode) in [([-4.0, 0.0, 1.0, 0.0], 0.0), ([-3.0, 0.0, 0.0, 0.0], 1.0), ([3.0, 0.0, 0.0, 0.0], 2.0), ([0.0, 0.0, 0.0, 2.0], 2.0), ([4.0, 0.0, 0.0, 0.0], 3.0), ([0.0, 0.0, 0.0, 3.0], 3.0), ([5.0, -1.0, 0.0, 0.0], 2.0), ([0.0, -2.0, 0.0, 0.0], 3.0)] {
            let mut out = img.clone();
            assert!(apply("pad", &[p[0], p[1], p[2], p[3], mode], &mut out).unwrap().is_err(), "{p:?} mode {mode}");
        }
    }

    #[test]
    fn pad_fills_per_channel_and_truncates() {
        let img = Image::from_vec(vec![1, 2, 3], 1, 1, 3).unwrap();
        let out = run("pad", &[1.0, 0.0, 0.0, 0.0, 0.0, 254.9, 3.7, 0.2], &img);
        assert_eq!(out.data, [254, 3, 0, 1, 2, 3]);
        let gray = Image::from_vec(vec![1], 1, 1, 1).unwrap();
        assert_eq!(run("pad", &[0.0, 0.0, 1.0, 0.0, 0.0, 254.99999999], &gray).data, [1, 254]);
        // A float32 tensor of the list rounds this one up before truncating.
        assert_eq!(run("pad", &[0.0, 0.0, 1.0, 0.0, 0.0, 254.99999999, 0.0, 0.0], &img).data, [1, 2, 3, 255, 0, 0]);
    }

    #[test]
    fn flips() {
        let img = image(3, 2, 3);
        let h = run("hflip", &[], &img);
        let v = run("vflip", &[], &img);
        for y in 0..2 {
            for x in 0..3 {
                let px = |im: &Image, x: usize, y: usize| im.data[(y * 3 + x) * 3..][..3].to_vec();
                assert_eq!(px(&h, x, y), px(&img, 2 - x, y));
                assert_eq!(px(&v, x, y), px(&img, x, 1 - y));
            }
        }
        assert_eq!(run("hflip", &[], &h), img);
        assert_eq!(run("vflip", &[], &image(4, 3, 1)).data[..4], image(4, 3, 1).data[8..]);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let img = image(4, 4, 3);
        for (name, p) in [
            ("affine", vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
            ("affine", vec![0.0, 0.0, 0.0, 1.0, 0.0, 0.0]),
            ("affine", vec![f64::NAN, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]),
            ("affine", vec![0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 256.0]),
            ("affine", vec![0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 2.0]),
            ("rotate", vec![10.0, 0.0]),
            ("rotate", vec![10.0, 0.0, 0.0, -1.0]),
            ("pad", vec![1.5, 0.0, 0.0, 0.0, 0.0]),
            ("pad", vec![1.0, 0.0, 0.0, 0.0, 4.0]),
            ("hflip", vec![1.0]),
        ] {
            let mut out = img.clone();
            assert!(apply(name, &p, &mut out).unwrap().is_err(), "{name} {p:?}");
        }
    }

    #[test]
    fn portable_loop_matches_the_dispatched_one() {
        // Without hardware FMA the loop calls libm's fmaf: slower, same results.
        for (w, h, c) in [(37, 29, 3), (16, 9, 1)] {
            let img = image(w, h, c);
            let m = inverse_affine_matrix([0.0, 0.0], 23.5, [1.25, -3.0], 1.2, [8.0, -3.0]);
            let grid = Grid::new(&m, w, h, w + 5, h + 2);
            let fill = [3.0, 100.5, 250.0];
            for bilinear in [false, true] {
                let (mut a, mut b) = (vec![0u8; (w + 5) * (h + 2) * c], vec![0u8; (w + 5) * (h + 2) * c]);
                match (c, bilinear) {
                    (1, false) => (sample::<1, false>(&grid, &img, &fill, &mut a), sample_rows::<1, false>(&grid, &img, &fill, &mut b)),
                    (1, true) => (sample::<1, true>(&grid, &img, &fill, &mut a), sample_rows::<1, true>(&grid, &img, &fill, &mut b)),
                    (_, false) => (sample::<3, false>(&grid, &img, &fill, &mut a), sample_rows::<3, false>(&grid, &img, &fill, &mut b)),
                    (_, true) => (sample::<3, true>(&grid, &img, &fill, &mut a), sample_rows::<3, true>(&grid, &img, &fill, &mut b)),
                };
                assert_eq!(a, b, "{w}x{h}x{c} bilinear {bilinear}");
            }
        }
    }

    #[test]
    fn python_float_modulo() {
        assert_eq!(py_mod(-90.0, 360.0), 270.0);
        assert_eq!(py_mod(450.0, 360.0), 90.0);
        assert_eq!(py_mod(-0.0, 360.0), 0.0);
        assert_eq!(py_mod(-1e-20, 360.0), 360.0);
    }
}
