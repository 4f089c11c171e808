//! Operations on a decoded image, after the decode-time crop and resize: photometric
//! ops (photometric.rs) and geometric ones that resample (warp.rs). Each is a function
//! of the image and its parameters alone (the random draws are made by the caller),
//! with torchvision's `transforms.v2.functional` semantics on uint8 images.

pub mod output;
pub mod photometric;
pub mod targets;
pub mod warp;

/// An 8-bit image, rows of `width` pixels of `channels` (1 or 3) interleaved samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub data: Vec<u8>,
    pub width: usize,
    pub height: usize,
    pub channels: usize,
}

impl Image {
    pub fn new(width: usize, height: usize, channels: usize) -> Image {
        Image { data: vec![0; width * height * channels], width, height, channels }
    }

    /// `data` must hold `width * height * channels` samples.
    pub fn from_vec(data: Vec<u8>, width: usize, height: usize, channels: usize) -> Result<Image, String> {
        if data.len() != width * height * channels || !(channels == 1 || channels == 3) {
            return Err(format!("an image of {width}x{height}x{channels} cannot hold {} bytes", data.len()));
        }
        Ok(Image { data, width, height, channels })
    }
}

/// Applies the op called `name` with parameters `params` (its arguments in order, as
/// numbers) to `img`. The names and parameters are listed in each module's `apply`.
pub fn apply(name: &str, params: &[f64], img: &mut Image) -> Result<(), String> {
    if let Some(r) = photometric::apply(name, params, img) {
        return r;
    }
    if let Some(r) = warp::apply(name, params, img) {
        return r;
    }
    Err(format!("unknown image op {name:?}"))
}
