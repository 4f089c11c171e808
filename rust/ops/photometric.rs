//! Photometric ops on uint8 images, as torchvision.transforms.v2.functional computes
//! them on uint8 tensors.

use super::Image;

/// The op `name` applied to `img`, or None when `name` is not a photometric op.
pub fn apply(name: &str, params: &[f64], img: &mut Image) -> Option<Result<(), String>> {
    let _ = (params, img);
    match name {
        _ => None,
    }
}
