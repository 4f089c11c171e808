//! WebP (lossy, lossless, alpha; the first frame of an animation) through `image-webp`.

use std::io::Cursor;

use image_webp::WebPDecoder;

use super::color;
use super::{Channels, DecodeError, Decoded, Result};

fn err(e: image_webp::DecodingError) -> DecodeError {
    DecodeError(format!("corrupt WebP: {e}"))
}

pub fn dimensions(data: &[u8]) -> Result<(u32, u32)> {
    let decoder = WebPDecoder::new(Cursor::new(data)).map_err(err)?;
    Ok(decoder.dimensions())
}

pub fn decode(data: &[u8], channels: Channels, out: &mut Vec<u8>) -> Result<Decoded> {
    let mut decoder = WebPDecoder::new(Cursor::new(data)).map_err(err)?;
    let (w, h) = decoder.dimensions();
    let src_channels = if decoder.has_alpha() { 4 } else { 3 };
    let size = decoder.output_buffer_size().ok_or_else(|| DecodeError("WebP too large".into()))?;
    let mut raw = vec![0u8; size];
    decoder.read_image(&mut raw).map_err(err)?;
    let want = channels.count();
    if src_channels == want {
        *out = raw;
    } else {
        out.clear();
        out.resize(w as usize * h as usize * want, 0);
        color::convert(&raw, src_channels, out, want);
    }
    Ok(Decoded::unscaled(w, h))
}
