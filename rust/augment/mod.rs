//! The transforms after the decode-time geometry, one sample at a time: each draws its
//! random parameters as torchvision's `transforms.v2` classes do (on the counter-based
//! draws of `rng.rs`, so a sample's augmentation depends only on (seed, epoch, position))
//! and applies them with the pixel code of `ops/`.
//!
//! A transform is a name and its arguments as numbers, as the Python layer lists them
//! (`lancefeed.transforms`); `None` arguments are NaN.

mod policies;

use crate::codec::{Decoded, Rect};
use crate::ops::targets::Targets;
use crate::ops::{self, Image};
use crate::plan;
use crate::resize;
use crate::rng::Stream;
use policies::{auto_space, rand_space, wide_space, SubPolicy, CIFAR10_POLICY, IMAGENET_POLICY, SVHN_POLICY};

/// One transform and its constructor arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub name: String,
    pub args: Vec<f64>,
}

/// The op applied to a sample and its drawn parameters (what `ops::apply` got).
pub type Applied = (String, Vec<f64>);

/// The names `run` knows, for the Python layer's checks.
pub const NAMES: &[&str] = &[
    "resize",
    "resize_shorter",
    "center_crop",
    "random_resized_crop",
    "hflip",
    "vflip",
    "pad",
    "random_rotation",
    "random_affine",
    "color_jitter",
    "grayscale",
    "random_grayscale",
    "random_invert",
    "random_posterize",
    "random_solarize",
    "random_adjust_sharpness",
    "random_autocontrast",
    "random_equalize",
    "gaussian_blur",
    "random_erasing",
    "trivial_augment_wide",
    "rand_augment",
    "auto_augment",
    "bbox_safe_crop",
    "iou_crop",
    "letterbox",
    "random_apply",
];

fn arg(args: &[f64], i: usize, name: &str) -> Result<f64, String> {
    args.get(i).copied().ok_or_else(|| format!("transform {name:?} needs at least {} arguments, got {}", i + 1, args.len()))
}

/// The output (height, width) of `step` on an image of `size`, when it can be known
/// without the image's content and draws: None when it depends on them.
pub fn output_size(step: &Step, size: Option<(u32, u32)>) -> Option<(u32, u32)> {
    let a = &step.args;
    match step.name.as_str() {
        "resize" | "center_crop" | "random_resized_crop" | "bbox_safe_crop" | "letterbox" => Some((a[0] as u32, a[1] as u32)),
        "resize_shorter" | "iou_crop" => None,
        "pad" => size.map(|(h, w)| (h + a[1] as u32 + a[3] as u32, w + a[0] as u32 + a[2] as u32)),
        "random_rotation" if a.get(3).copied().unwrap_or(0.0) != 0.0 => None,
        _ => size,
    }
}

/// The output size of `steps` on an image of `size` (see `output_size`). The steps a
/// `random_apply` may skip count only where they keep the size.
pub fn steps_output_size(steps: &[(usize, Step)], size: Option<(u32, u32)>) -> Option<(u32, u32)> {
    let mut skippable = 0usize;
    steps.iter().fold(size, |size, (_, step)| {
        let inside = skippable > 0;
        skippable = skippable.saturating_sub(1);
        if step.name == "random_apply" {
            skippable = skippable.max(step.args.get(1).copied().unwrap_or(0.0) as usize);
        }
        let next = output_size(step, size);
        if inside && next != size {
            None
        } else {
            next
        }
    })
}

/// Runs `steps` (with their indices in the whole transform, which key their draws) on
/// `img` in order; `applied` gets what each did, and `targets` (boxes, a mask) follow
/// every op.
pub fn run(
    steps: &[(usize, Step)],
    img: &mut Image,
    stream: impl Fn(usize) -> Stream,
    applied: &mut Vec<Applied>,
    mut targets: Option<&mut Targets>,
) -> Result<(), String> {
    let mut skip = 0usize;
    for (index, step) in steps {
        if skip > 0 {
            skip -= 1;
            continue;
        }
        let mut rng = stream(*index);
        let start = applied.len();
        match step.name.as_str() {
            // torchvision's `RandomApply`: the next `args[1]` steps run when
            // `torch.rand(1) <= p`.
            "random_apply" => {
                let (p, count) = (arg(&step.args, 0, "random_apply")?, arg(&step.args, 1, "random_apply")?);
                if rng.uniform() > p {
                    skip = count as usize;
                }
            }
            "bbox_safe_crop" | "iou_crop" | "letterbox" => detection_crop(step, img, &mut rng, applied, targets.as_deref_mut())?,
            _ => apply_step(step, img, &mut rng, applied)?,
        }
        if let Some(t) = targets.as_deref_mut() {
            for (name, params) in &applied[start..] {
                t.follow(name, params)?;
            }
        }
    }
    Ok(())
}

/// The crops that choose their box from the sample's boxes, on the decoded image.
fn detection_crop(step: &Step, img: &mut Image, rng: &mut Stream, applied: &mut Vec<Applied>, targets: Option<&mut Targets>) -> Result<(), String> {
    let a = &step.args;
    let (h, w) = (img.height as u32, img.width as u32);
    let live = targets.as_ref().map_or_else(Vec::new, |t| t.live_boxes());
    match step.name.as_str() {
        "bbox_safe_crop" => {
            let (top, left, ch, cw) = plan::bbox_safe_crop(h, w, &live, arg(a, 2, "bbox_safe_crop")?, rng);
            crop(img, top, left, ch, cw, applied)?;
            resize_to(img, a[0] as u32, a[1] as u32, applied)
        }
        "iou_crop" => {
            if a.len() < 6 {
                return Err(format!("transform \"iou_crop\" needs at least 6 arguments, got {}", a.len()));
            }
            if let Some((top, left, ch, cw, within)) = plan::iou_crop(h, w, &live, (a[0], a[1]), (a[2], a[3]), &a[5..], a[4] as u32, rng) {
                if let Some(t) = targets {
                    t.drop_live(&within);
                }
                crop(img, top, left, ch, cw, applied)?;
            }
            Ok(())
        }
        _ => {
            let (height, width) = (arg(a, 0, "letterbox")? as u32, arg(a, 1, "letterbox")? as u32);
            let (fh, fw) = plan::letterbox_size(h, w, height, width);
            resize_to(img, fh, fw, applied)?;
            crop(img, plan::center_offset(fh, height), plan::center_offset(fw, width), height as i64, width as i64, applied)
        }
    }
}

fn op(name: &str, params: Vec<f64>, img: &mut Image, applied: &mut Vec<Applied>) -> Result<(), String> {
    ops::apply(name, &params, img)?;
    applied.push((name.to_string(), params));
    Ok(())
}

/// The fill arguments from `from` on: one per channel, 0 where absent or NaN (None).
fn fill(args: &[f64], from: usize) -> Vec<f64> {
    (0..3).map(|k| args.get(from + k).copied().filter(|v| !v.is_nan()).unwrap_or(0.0)).collect()
}

/// torch's `uniform_(lo, hi)` of one draw.
fn uniform(rng: &mut Stream, lo: f64, hi: f64) -> f64 {
    rng.uniform_in(lo, hi)
}

/// `_RandomApplyTransform`: the transform runs when `torch.rand(1) < p`.
fn chance(rng: &mut Stream, p: f64) -> bool {
    rng.uniform() < p
}

fn apply_step(step: &Step, img: &mut Image, rng: &mut Stream, applied: &mut Vec<Applied>) -> Result<(), String> {
    let a = &step.args;
    let name = step.name.as_str();
    let get = |i: usize| arg(a, i, name);
    match name {
        "resize" => resize_to(img, get(0)? as u32, get(1)? as u32, applied),
        "resize_shorter" => {
            let max = get(1)?;
            let (h, w) = plan::shorter_side(img.height as u32, img.width as u32, get(0)? as u32, (max > 0.0).then_some(max as u32));
            resize_to(img, h, w, applied)
        }
        "center_crop" => {
            let (ch, cw) = (get(0)? as u32, get(1)? as u32);
            let top = plan::center_offset(img.height as u32, ch);
            let left = plan::center_offset(img.width as u32, cw);
            crop(img, top, left, ch as i64, cw as i64, applied)
        }
        "random_resized_crop" => {
            let (h, w) = (get(0)? as u32, get(1)? as u32);
            let (top, left, ch, cw) = plan::random_resized_crop(img.height as u32, img.width as u32, (get(2)?, get(3)?), (get(4)?, get(5)?), rng);
            crop(img, top, left, ch, cw, applied)?;
            resize_to(img, h, w, applied)
        }
        "hflip" | "vflip" => {
            if chance(rng, get(0)?) {
                op(name, vec![], img, applied)?;
            }
            Ok(())
        }
        "pad" => op("pad", a.clone(), img, applied),
        "random_rotation" => {
            let angle = uniform(rng, get(0)?, get(1)?);
            op("rotate", [vec![angle, get(2)?, get(3)?], fill(a, 4)].concat(), img, applied)
        }
        "random_affine" => random_affine(a, img, rng, applied),
        "color_jitter" => color_jitter(a, img, rng, applied),
        "grayscale" => op("grayscale", vec![], img, applied),
        "random_grayscale" => {
            if chance(rng, get(0)?) {
                op("grayscale", vec![], img, applied)?;
            }
            Ok(())
        }
        "random_invert" | "random_autocontrast" | "random_equalize" => {
            if chance(rng, get(0)?) {
                op(&name["random_".len()..], vec![], img, applied)?;
            }
            Ok(())
        }
        "random_posterize" | "random_solarize" | "random_adjust_sharpness" => {
            if chance(rng, get(1)?) {
                let target = match name {
                    "random_posterize" => "posterize",
                    "random_solarize" => "solarize",
                    _ => "sharpness",
                };
                op(target, vec![get(0)?], img, applied)?;
            }
            Ok(())
        }
        "gaussian_blur" => {
            // v2.GaussianBlur draws one sigma for both axes.
            let sigma = uniform(rng, get(2)?, get(3)?);
            op("gaussian_blur", vec![get(0)?, get(1)?, sigma, sigma], img, applied)
        }
        "random_erasing" => random_erasing(a, img, rng, applied),
        "trivial_augment_wide" => {
            let (bins, interp) = (get(0)? as usize, get(1)?);
            let space = wide_space();
            let (id, magnitudes, signed) = space[rng.randint(0, space.len() as i64) as usize];
            let magnitude = match magnitudes {
                Some(m) => signed_magnitude(m(bins, img.height, img.width)[rng.randint(0, bins as i64) as usize], signed, rng),
                None => 0.0,
            };
            augment_op(id, magnitude, interp, &fill(a, 2), img, applied)
        }
        "rand_augment" => {
            let (num_ops, level, bins, interp) = (get(0)? as usize, get(1)? as usize, get(2)? as usize, get(3)?);
            let space = rand_space();
            for _ in 0..num_ops {
                let (id, magnitudes, signed) = space[rng.randint(0, space.len() as i64) as usize];
                let magnitude = match magnitudes {
                    Some(m) => {
                        let values = m(bins, img.height, img.width);
                        let v = *values.get(level).ok_or_else(|| format!("RandAugment magnitude {level} is not below num_magnitude_bins {bins}"))?;
                        signed_magnitude(v, signed, rng)
                    }
                    None => 0.0,
                };
                augment_op(id, magnitude, interp, &fill(a, 4), img, applied)?;
            }
            Ok(())
        }
        "auto_augment" => {
            let interp = get(1)?;
            // args[0]: the policy, 0 ImageNet, 1 CIFAR-10, 2 SVHN.
            let policies: &[SubPolicy] = match get(0)? as i64 {
                0 => &IMAGENET_POLICY,
                1 => &CIFAR10_POLICY,
                2 => &SVHN_POLICY,
                other => return Err(format!("AutoAugment policy {other} is not 0 (ImageNet), 1 (CIFAR-10) or 2 (SVHN)")),
            };
            let policy = policies[rng.randint(0, policies.len() as i64) as usize];
            let space = auto_space();
            for (id, p, level) in policy {
                if !(rng.uniform() <= p) {
                    continue;
                }
                let (_, magnitudes, signed) = *space.iter().find(|s| s.0 == id).expect("every policy op is in the space");
                let magnitude = match (magnitudes, level) {
                    (Some(m), Some(k)) => signed_magnitude(m(10, img.height, img.width)[k], signed, rng),
                    _ => 0.0,
                };
                augment_op(id, magnitude, interp, &fill(a, 2), img, applied)?;
            }
            Ok(())
        }
        other => Err(format!("unknown transform {other:?}")),
    }
}

/// `RandomAffine._get_params`: args are (degrees lo, hi, translate x, y (NaN: None),
/// scale lo, hi (NaN: None), shear x lo, hi, shear y lo, hi (NaN: None), interpolation,
/// fill...).
fn random_affine(a: &[f64], img: &mut Image, rng: &mut Stream, applied: &mut Vec<Applied>) -> Result<(), String> {
    if a.len() < 11 {
        return Err(format!("transform \"random_affine\" needs 11 arguments and a fill, got {}", a.len()));
    }
    let angle = uniform(rng, a[0], a[1]);
    let (mut tx, mut ty) = (0.0, 0.0);
    if !a[2].is_nan() {
        let (max_dx, max_dy) = (a[2] * img.width as f64, a[3] * img.height as f64);
        tx = uniform(rng, -max_dx, max_dx).round_ties_even();
        ty = uniform(rng, -max_dy, max_dy).round_ties_even();
    }
    let scale = if a[4].is_nan() { 1.0 } else { uniform(rng, a[4], a[5]) };
    let (mut shear_x, mut shear_y) = (0.0, 0.0);
    if !a[6].is_nan() {
        shear_x = uniform(rng, a[6], a[7]);
        if !a[8].is_nan() {
            shear_y = uniform(rng, a[8], a[9]);
        }
    }
    op("affine", [vec![angle, tx, ty, scale, shear_x, shear_y, a[10]], fill(a, 11)].concat(), img, applied)
}

/// `ColorJitter`: args are (lo, hi) for brightness, contrast, saturation and hue, NaN
/// where None. The order of the four is a random permutation (torch's `randperm(4)`,
/// here the ranks of four draws), then each present factor is drawn, in that order.
fn color_jitter(a: &[f64], img: &mut Image, rng: &mut Stream, applied: &mut Vec<Applied>) -> Result<(), String> {
    if a.len() < 8 {
        return Err(format!("transform \"color_jitter\" needs 8 arguments, got {}", a.len()));
    }
    let keys: Vec<f64> = (0..4).map(|_| rng.uniform()).collect();
    let mut order: Vec<usize> = (0..4).collect();
    order.sort_by(|&i, &j| keys[i].total_cmp(&keys[j]));
    let factors: Vec<Option<f64>> = (0..4).map(|k| (!a[2 * k].is_nan()).then(|| uniform(rng, a[2 * k], a[2 * k + 1]))).collect();
    for k in order {
        if let Some(f) = factors[k] {
            op(["brightness", "contrast", "saturation", "hue"][k], vec![f], img, applied)?;
        }
    }
    Ok(())
}

/// `RandomErasing`: args are (p, scale lo, hi, ratio lo, hi, value per channel...).
/// Ten tries for a box inside the image, else nothing is erased.
fn random_erasing(a: &[f64], img: &mut Image, rng: &mut Stream, applied: &mut Vec<Applied>) -> Result<(), String> {
    if a.len() < 6 {
        return Err(format!("transform \"random_erasing\" needs at least 6 arguments, got {}", a.len()));
    }
    if !chance(rng, a[0]) {
        return Ok(());
    }
    let (h_img, w_img) = (img.height as f64, img.width as f64);
    let area = h_img * w_img;
    let (lr0, lr1) = (a[3].ln(), a[4].ln());
    for _ in 0..10 {
        let erase_area = area * uniform(rng, a[1], a[2]);
        let aspect = uniform(rng, lr0, lr1).exp();
        let h = (erase_area * aspect).sqrt().round_ties_even();
        let w = (erase_area / aspect).sqrt().round_ties_even();
        if !(h < h_img && w < w_img) {
            continue;
        }
        let i = rng.randint(0, (h_img - h) as i64 + 1) as f64;
        let j = rng.randint(0, (w_img - w) as i64 + 1) as f64;
        return op("erase", [vec![i, j, h, w], a[5..].to_vec()].concat(), img, applied);
    }
    Ok(())
}

fn signed_magnitude(value: f64, signed: bool, rng: &mut Stream) -> f64 {
    if signed && rng.uniform() <= 0.5 {
        -value
    } else {
        value
    }
}

/// `_AutoAugmentBase._apply_image_or_video_transform`.
fn augment_op(id: &str, m: f64, interp: f64, fill: &[f64], img: &mut Image, applied: &mut Vec<Applied>) -> Result<(), String> {
    let affine = |params: [f64; 6], center: Option<[f64; 2]>| {
        let mut p = [params.to_vec(), vec![interp], fill.to_vec()].concat();
        if let Some(c) = center {
            p.extend_from_slice(&c);
        }
        p
    };
    match id {
        "Identity" => Ok(()),
        // Sheared about the top-left corner, as torchvision does here (center=[0, 0]).
        "ShearX" => op("affine", affine([0.0, 0.0, 0.0, 1.0, m.atan().to_degrees(), 0.0], Some([0.0, 0.0])), img, applied),
        "ShearY" => op("affine", affine([0.0, 0.0, 0.0, 1.0, 0.0, m.atan().to_degrees()], Some([0.0, 0.0])), img, applied),
        "TranslateX" => op("affine", affine([0.0, m.trunc(), 0.0, 1.0, 0.0, 0.0], None), img, applied),
        "TranslateY" => op("affine", affine([0.0, 0.0, m.trunc(), 1.0, 0.0, 0.0], None), img, applied),
        "Rotate" => op("rotate", [vec![m, interp, 0.0], fill.to_vec()].concat(), img, applied),
        "Brightness" => op("brightness", vec![1.0 + m], img, applied),
        "Color" => op("saturation", vec![1.0 + m], img, applied),
        "Contrast" => op("contrast", vec![1.0 + m], img, applied),
        "Sharpness" => op("sharpness", vec![1.0 + m], img, applied),
        "Posterize" => op("posterize", vec![m.trunc()], img, applied),
        "Solarize" => op("solarize", vec![255.0 * m], img, applied),
        "AutoContrast" => op("autocontrast", vec![], img, applied),
        "Equalize" => op("equalize", vec![], img, applied),
        "Invert" => op("invert", vec![], img, applied),
        other => Err(format!("no augmentation {other:?}")),
    }
}


/// Antialiased bilinear resize of the whole image (Pillow's, as the fused resize).
fn resize_to(img: &mut Image, h: u32, w: u32, applied: &mut Vec<Applied>) -> Result<(), String> {
    if (img.height, img.width) != (h as usize, w as usize) {
        let mut out = Image::new(w as usize, h as usize, img.channels);
        let src = Decoded::unscaled(img.width as u32, img.height as u32);
        resize::crop_resize(&img.data, &src, &Rect::full(img.width as u32, img.height as u32), img.channels, &mut out.data, w, h)?;
        *img = out;
    }
    applied.push(("resize".into(), vec![h as f64, w as f64]));
    Ok(())
}

/// Crop (top, left, height, width), zero outside the image (torchvision's crop pads).
fn crop(img: &mut Image, top: i64, left: i64, ch: i64, cw: i64, applied: &mut Vec<Applied>) -> Result<(), String> {
    let c = img.channels;
    let mut out = Image::new(cw.max(0) as usize, ch.max(0) as usize, c);
    for y in 0..ch {
        let sy = top + y;
        if sy < 0 || sy >= img.height as i64 {
            continue;
        }
        let x0 = left.max(0);
        let x1 = (left + cw).min(img.width as i64);
        if x0 >= x1 {
            continue;
        }
        let src = (sy as usize * img.width + x0 as usize) * c;
        let dst = (y as usize * cw as usize + (x0 - left) as usize) * c;
        let n = (x1 - x0) as usize * c;
        out.data[dst..dst + n].copy_from_slice(&img.data[src..src + n]);
    }
    *img = out;
    applied.push(("crop".into(), vec![top as f64, left as f64, ch as f64, cw as f64]));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::policies::{linspace, posterize_bits};
    use super::*;

    #[test]
    fn linspace_matches_torch_float32() {
        // torch.linspace(0.0, 0.99, 31).tolist()[7], [30]; linspace(1, 0, 31)[16]
        let v = linspace(0.0, 0.99, 31);
        assert_eq!(v[30], 0.99f32 as f64);
        assert_eq!(v[0], 0.0);
        assert_eq!(v[7], 0.033f32.mul_add(7.0, 0.0) as f64);
        assert_eq!(linspace(1.0, 0.0, 31)[30], 0.0);
    }

    #[test]
    fn posterize_bits_match_torch() {
        // (8 - (torch.arange(31) / (30 / 6))).round().int() -> 8, 8, 8, 7, ... , 2
        let b = posterize_bits(8.0, 6.0, 31);
        assert_eq!(b[0], 8.0);
        assert_eq!(b[30], 2.0);
        assert_eq!(b[3], 7.0); // 8 - 0.6 = 7.4
        assert_eq!(posterize_bits(8.0, 4.0, 10)[9], 4.0);
    }

    #[test]
    fn crop_pads_with_zeros() {
        let mut img = Image::from_vec((1..=6).collect(), 3, 2, 1).unwrap();
        crop(&mut img, -1, 1, 3, 3, &mut vec![]).unwrap();
        assert_eq!(img.data, vec![0, 0, 0, 2, 3, 0, 5, 6, 0]);
    }

    #[test]
    fn output_sizes() {
        let s = |name: &str, args: Vec<f64>| Step { name: name.into(), args };
        assert_eq!(output_size(&s("pad", vec![1.0, 2.0, 3.0, 4.0, 0.0]), Some((10, 20))), Some((16, 24)));
        assert_eq!(output_size(&s("random_rotation", vec![-10.0, 10.0, 0.0, 1.0]), Some((10, 20))), None);
        assert_eq!(output_size(&s("random_rotation", vec![-10.0, 10.0, 0.0, 0.0]), Some((10, 20))), Some((10, 20)));
        assert_eq!(output_size(&s("color_jitter", vec![]), Some((3, 4))), Some((3, 4)));
    }

    #[test]
    fn random_apply_keeps_a_size_only_when_its_ops_do() {
        let s = |name: &str, args: Vec<f64>| (0, Step { name: name.into(), args });
        let rotate = s("random_rotation", vec![-10.0, 10.0, 0.0, 0.0]);
        let pad = s("pad", vec![1.0, 1.0, 1.0, 1.0, 0.0]);
        let apply = |n: f64| s("random_apply", vec![0.5, n]);
        assert_eq!(steps_output_size(&[apply(1.0), rotate.clone()], Some((8, 8))), Some((8, 8)));
        assert_eq!(steps_output_size(&[apply(1.0), pad.clone()], Some((8, 8))), None);
        // The pad after the applied op always runs: its size is known.
        assert_eq!(steps_output_size(&[apply(1.0), rotate, pad], Some((8, 8))), Some((10, 10)));
        assert_eq!(steps_output_size(&[apply(1.0), s("resize", vec![4.0, 4.0])], Some((4, 4))), Some((4, 4)));
    }
}
