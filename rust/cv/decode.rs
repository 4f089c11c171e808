//! An encoded image decoded and run through a sample's ops: where the first op is a
//! crop, only the part of a JPEG around the crop is decoded (TurboJPEG's cropping
//! region and skipped scanlines), which is most of the cost of an albumentations
//! pipeline that starts with a crop. The region is widened by a margin (see
//! `decode_run`) so that the crop itself holds exactly the whole decode's pixels (the
//! tests compare the two).

use super::{run, Img, Op, Output};
use crate::codec::{self, Channels, Rect, Request};

/// Why a sample failed: its bytes did not decode, or an op refused its parameters.
#[derive(Debug, PartialEq)]
pub enum Failure {
    Decode(String),
    Op(String),
}

impl From<codec::DecodeError> for Failure {
    fn from(e: codec::DecodeError) -> Self {
        Failure::Decode(e.0)
    }
}

/// `data` decoded with `channels` channels, then `ops`.
pub fn decode_run(data: &[u8], channels: Channels, max_pixels: u64, pad_truncated: bool, ops: &[Op]) -> Result<Output, Failure> {
    let header = codec::read_header(data)?;
    codec::check_pixels(&header, max_pixels)?;
    let (w, h) = (header.width as usize, header.height as usize);
    if let (Some(Op::Crop { x0, y0, x1, y1 }), Some(_)) = (ops.first(), header.jpeg) {
        let (x0, y0, x1, y1) = (*x0, *y0, *x1, *y1);
        if x0 < x1 && y0 < y1 && x1 <= w && y1 <= h && (x1 - x0, y1 - y0) != (w, h) {
            // A margin of one MCU (16 pixels at most) around the crop: at a cropping
            // region's edges TurboJPEG's chroma upsampling lacks its neighbours, and the
            // pixels there differ from the whole image's decode.
            let m = 16;
            let region = Rect {
                x0: x0.saturating_sub(m) as f64,
                y0: y0.saturating_sub(m) as f64,
                x1: (x1 + m).min(w) as f64,
                y1: (y1 + m).min(h) as f64,
            };
            let req = Request {
                region,
                min_width: header.width,
                min_height: header.height,
                dct_scaling: false,
                crop: true,
                channels,
                pad_truncated,
            };
            let mut out = Vec::new();
            let d = codec::decode(data, &header, &req, &mut out)?;
            let (ox, oy) = (d.offset_x, d.offset_y);
            if d.scale_x == 1.0 && d.scale_y == 1.0 && ox >= 0.0 && oy >= 0.0 && ox.fract() == 0.0 && oy.fract() == 0.0 {
                let (ox, oy) = (ox as usize, oy as usize);
                let img = Img { h: d.height as usize, w: d.width as usize, c: channels.count(), data: out };
                let mut shifted = Vec::with_capacity(ops.len());
                shifted.push(Op::Crop { x0: x0 - ox, y0: y0 - oy, x1: x1 - ox, y1: y1 - oy });
                shifted.extend_from_slice(&ops[1..]);
                return run(img, &shifted).map_err(Failure::Op);
            }
        }
    }
    let (_, pixels) = codec::decode_full(data, channels, max_pixels, pad_truncated)?;
    run(Img { h, w, c: channels.count(), data: pixels }, ops).map_err(Failure::Op)
}

/// A label mask (a PNG's stored samples: palette indices, gray values; any other
/// format decoded to gray), then `ops`.
pub fn decode_mask_run(data: &[u8], max_pixels: u64, ops: &[Op]) -> Result<Output, Failure> {
    let (w, h, values) = codec::decode_mask(data, max_pixels)?;
    run(Img { h: h as usize, w: w as usize, c: 1, data: values }, ops).map_err(Failure::Op)
}

/// One sample of a batch: its image and ops, its mask and the mask's ops.
pub struct Sample<'a> {
    pub image: &'a [u8],
    pub ops: Vec<Op>,
    pub mask: Option<&'a [u8]>,
    pub mask_ops: Vec<Op>,
}

/// A sample's result: the image and the mask, or why it failed (its image, or its mask).
pub type Decoded = Result<(Output, Option<Output>), (Failure, bool)>;

/// `samples` decoded and run on `threads` of lancefeed's decode threads, in order.
pub fn decode_batch(samples: &[Sample<'_>], channels: Channels, max_pixels: u64, pad_truncated: bool, threads: usize) -> Result<Vec<Decoded>, String> {
    use rayon::prelude::*;
    let one = |s: &Sample<'_>| -> Decoded {
        let image = decode_run(s.image, channels, max_pixels, pad_truncated, &s.ops).map_err(|e| (e, false))?;
        let mask = match s.mask {
            Some(m) => Some(decode_mask_run(m, max_pixels, &s.mask_ops).map_err(|e| (e, true))?),
            None => None,
        };
        Ok((image, mask))
    };
    if threads <= 1 || samples.len() < 2 {
        return Ok(samples.iter().map(one).collect());
    }
    let pool = crate::pool::get(threads)?;
    Ok(pool.install(|| samples.par_iter().with_max_len(1).map(one).collect()))
}
