//! Geometric ops that resample a uint8 image (rotation, affine maps, padding), as
//! torchvision.transforms.v2.functional computes them on uint8 tensors.

use super::Image;

/// The op `name` applied to `img`, or None when `name` is not one of these ops.
pub fn apply(name: &str, params: &[f64], img: &mut Image) -> Option<Result<(), String>> {
    let _ = (params, img);
    match name {
        _ => None,
    }
}
