//! The augmentation policies' tables, as torchvision lists them: TrivialAugmentWide's,
//! RandAugment's and AutoAugment's op spaces and magnitude bins, and AutoAugment's
//! ImageNet, CIFAR-10 and SVHN sub-policies.

/// `torch.linspace(start, end, steps)` in float32, as torch computes it: from both
/// ends (the last value is `end` exactly), each a fused multiply-add.
pub(super) fn linspace(start: f32, end: f32, steps: usize) -> Vec<f64> {
    if steps == 1 {
        return vec![start as f64];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| if i < half { step.mul_add(i as f32, start) } else { (-step).mul_add((steps - i - 1) as f32, end) } as f64)
        .collect()
}

/// `(top - (torch.arange(bins) / ((bins - 1) / div))).round().int()`.
pub(super) fn posterize_bits(top: f32, div: f32, bins: usize) -> Vec<f64> {
    let d = (bins as f32 - 1.0) / div;
    (0..bins).map(|i| (top - i as f32 / d).round_ties_even() as f64).collect()
}

pub(super) type Magnitudes = Option<fn(usize, usize, usize) -> Vec<f64>>;
pub(super) type Space = Vec<(&'static str, Magnitudes, bool)>;

/// TrivialAugmentWide's space, in torchvision's order.
pub(super) fn wide_space() -> Space {
    vec![
        ("Identity", None, false),
        ("ShearX", Some(|n, _, _| linspace(0.0, 0.99, n)), true),
        ("ShearY", Some(|n, _, _| linspace(0.0, 0.99, n)), true),
        ("TranslateX", Some(|n, _, _| linspace(0.0, 32.0, n)), true),
        ("TranslateY", Some(|n, _, _| linspace(0.0, 32.0, n)), true),
        ("Rotate", Some(|n, _, _| linspace(0.0, 135.0, n)), true),
        ("Brightness", Some(|n, _, _| linspace(0.0, 0.99, n)), true),
        ("Color", Some(|n, _, _| linspace(0.0, 0.99, n)), true),
        ("Contrast", Some(|n, _, _| linspace(0.0, 0.99, n)), true),
        ("Sharpness", Some(|n, _, _| linspace(0.0, 0.99, n)), true),
        ("Posterize", Some(|n, _, _| posterize_bits(8.0, 6.0, n)), false),
        ("Solarize", Some(|n, _, _| linspace(1.0, 0.0, n)), false),
        ("AutoContrast", None, false),
        ("Equalize", None, false),
    ]
}

/// RandAugment's space, in torchvision's order.
pub(super) fn rand_space() -> Space {
    vec![
        ("Identity", None, false),
        ("ShearX", Some(|n, _, _| linspace(0.0, 0.3, n)), true),
        ("ShearY", Some(|n, _, _| linspace(0.0, 0.3, n)), true),
        ("TranslateX", Some(|n, _, w| linspace(0.0, (150.0 / 331.0 * w as f64) as f32, n)), true),
        ("TranslateY", Some(|n, h, _| linspace(0.0, (150.0 / 331.0 * h as f64) as f32, n)), true),
        ("Rotate", Some(|n, _, _| linspace(0.0, 30.0, n)), true),
        ("Brightness", Some(|n, _, _| linspace(0.0, 0.9, n)), true),
        ("Color", Some(|n, _, _| linspace(0.0, 0.9, n)), true),
        ("Contrast", Some(|n, _, _| linspace(0.0, 0.9, n)), true),
        ("Sharpness", Some(|n, _, _| linspace(0.0, 0.9, n)), true),
        ("Posterize", Some(|n, _, _| posterize_bits(8.0, 4.0, n)), false),
        ("Solarize", Some(|n, _, _| linspace(1.0, 0.0, n)), false),
        ("AutoContrast", None, false),
        ("Equalize", None, false),
    ]
}

/// AutoAugment's space (the ops its policies name).
pub(super) fn auto_space() -> Space {
    let mut s = rand_space();
    s.retain(|o| o.0 != "Identity");
    s.push(("Invert", None, false));
    s
}

pub(super) type SubPolicy = [(&'static str, f64, Option<usize>); 2];

/// AutoAugmentPolicy.IMAGENET, as torchvision lists it.
pub(super) const IMAGENET_POLICY: [SubPolicy; 25] = [
    [("Posterize", 0.4, Some(8)), ("Rotate", 0.6, Some(9))],
    [("Solarize", 0.6, Some(5)), ("AutoContrast", 0.6, None)],
    [("Equalize", 0.8, None), ("Equalize", 0.6, None)],
    [("Posterize", 0.6, Some(7)), ("Posterize", 0.6, Some(6))],
    [("Equalize", 0.4, None), ("Solarize", 0.2, Some(4))],
    [("Equalize", 0.4, None), ("Rotate", 0.8, Some(8))],
    [("Solarize", 0.6, Some(3)), ("Equalize", 0.6, None)],
    [("Posterize", 0.8, Some(5)), ("Equalize", 1.0, None)],
    [("Rotate", 0.2, Some(3)), ("Solarize", 0.6, Some(8))],
    [("Equalize", 0.6, None), ("Posterize", 0.4, Some(6))],
    [("Rotate", 0.8, Some(8)), ("Color", 0.4, Some(0))],
    [("Rotate", 0.4, Some(9)), ("Equalize", 0.6, None)],
    [("Equalize", 0.0, None), ("Equalize", 0.8, None)],
    [("Invert", 0.6, None), ("Equalize", 1.0, None)],
    [("Color", 0.6, Some(4)), ("Contrast", 1.0, Some(8))],
    [("Rotate", 0.8, Some(8)), ("Color", 1.0, Some(2))],
    [("Color", 0.8, Some(8)), ("Solarize", 0.8, Some(7))],
    [("Sharpness", 0.4, Some(7)), ("Invert", 0.6, None)],
    [("ShearX", 0.6, Some(5)), ("Equalize", 1.0, None)],
    [("Color", 0.4, Some(0)), ("Equalize", 0.6, None)],
    [("Equalize", 0.4, None), ("Solarize", 0.2, Some(4))],
    [("Solarize", 0.6, Some(5)), ("AutoContrast", 0.6, None)],
    [("Invert", 0.6, None), ("Equalize", 1.0, None)],
    [("Color", 0.6, Some(4)), ("Contrast", 1.0, Some(8))],
    [("Equalize", 0.8, None), ("Equalize", 0.6, None)],
];

/// AutoAugmentPolicy.CIFAR10, as torchvision lists it.
pub(super) const CIFAR10_POLICY: [SubPolicy; 25] = [
    [("Invert", 0.1, None), ("Contrast", 0.2, Some(6))],
    [("Rotate", 0.7, Some(2)), ("TranslateX", 0.3, Some(9))],
    [("Sharpness", 0.8, Some(1)), ("Sharpness", 0.9, Some(3))],
    [("ShearY", 0.5, Some(8)), ("TranslateY", 0.7, Some(9))],
    [("AutoContrast", 0.5, None), ("Equalize", 0.9, None)],
    [("ShearY", 0.2, Some(7)), ("Posterize", 0.3, Some(7))],
    [("Color", 0.4, Some(3)), ("Brightness", 0.6, Some(7))],
    [("Sharpness", 0.3, Some(9)), ("Brightness", 0.7, Some(9))],
    [("Equalize", 0.6, None), ("Equalize", 0.5, None)],
    [("Contrast", 0.6, Some(7)), ("Sharpness", 0.6, Some(5))],
    [("Color", 0.7, Some(7)), ("TranslateX", 0.5, Some(8))],
    [("Equalize", 0.3, None), ("AutoContrast", 0.4, None)],
    [("TranslateY", 0.4, Some(3)), ("Sharpness", 0.2, Some(6))],
    [("Brightness", 0.9, Some(6)), ("Color", 0.2, Some(8))],
    [("Solarize", 0.5, Some(2)), ("Invert", 0.0, None)],
    [("Equalize", 0.2, None), ("AutoContrast", 0.6, None)],
    [("Equalize", 0.2, None), ("Equalize", 0.6, None)],
    [("Color", 0.9, Some(9)), ("Equalize", 0.6, None)],
    [("AutoContrast", 0.8, None), ("Solarize", 0.2, Some(8))],
    [("Brightness", 0.1, Some(3)), ("Color", 0.7, Some(0))],
    [("Solarize", 0.4, Some(5)), ("AutoContrast", 0.9, None)],
    [("TranslateY", 0.9, Some(9)), ("TranslateY", 0.7, Some(9))],
    [("AutoContrast", 0.9, None), ("Solarize", 0.8, Some(3))],
    [("Equalize", 0.8, None), ("Invert", 0.1, None)],
    [("TranslateY", 0.7, Some(9)), ("AutoContrast", 0.9, None)],
];

/// AutoAugmentPolicy.SVHN, as torchvision lists it.
pub(super) const SVHN_POLICY: [SubPolicy; 25] = [
    [("ShearX", 0.9, Some(4)), ("Invert", 0.2, None)],
    [("ShearY", 0.9, Some(8)), ("Invert", 0.7, None)],
    [("Equalize", 0.6, None), ("Solarize", 0.6, Some(6))],
    [("Invert", 0.9, None), ("Equalize", 0.6, None)],
    [("Equalize", 0.6, None), ("Rotate", 0.9, Some(3))],
    [("ShearX", 0.9, Some(4)), ("AutoContrast", 0.8, None)],
    [("ShearY", 0.9, Some(8)), ("Invert", 0.4, None)],
    [("ShearY", 0.9, Some(5)), ("Solarize", 0.2, Some(6))],
    [("Invert", 0.9, None), ("AutoContrast", 0.8, None)],
    [("Equalize", 0.6, None), ("Rotate", 0.9, Some(3))],
    [("ShearX", 0.9, Some(4)), ("Solarize", 0.3, Some(3))],
    [("ShearY", 0.8, Some(8)), ("Invert", 0.7, None)],
    [("Equalize", 0.9, None), ("TranslateY", 0.6, Some(6))],
    [("Invert", 0.9, None), ("Equalize", 0.6, None)],
    [("Contrast", 0.3, Some(3)), ("Rotate", 0.8, Some(4))],
    [("Invert", 0.8, None), ("TranslateY", 0.0, Some(2))],
    [("ShearY", 0.7, Some(6)), ("Solarize", 0.4, Some(8))],
    [("Invert", 0.6, None), ("Rotate", 0.8, Some(4))],
    [("ShearY", 0.3, Some(7)), ("TranslateX", 0.9, Some(3))],
    [("ShearX", 0.1, Some(6)), ("Invert", 0.6, None)],
    [("Solarize", 0.7, Some(2)), ("TranslateY", 0.6, Some(7))],
    [("ShearY", 0.8, Some(4)), ("Invert", 0.8, None)],
    [("ShearX", 0.7, Some(9)), ("TranslateY", 0.8, Some(3))],
    [("ShearY", 0.8, Some(5)), ("AutoContrast", 0.7, None)],
    [("ShearX", 0.7, Some(2)), ("Invert", 0.1, None)],
];
