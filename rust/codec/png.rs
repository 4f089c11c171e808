//! PNG through the `png` crate: palette, tRNS and low bit depths expanded to 8 bits,
//! 16-bit samples reduced to their high byte, interlacing undone, alpha dropped.

use std::io::Cursor;

use png::{ColorType, Transformations};

use super::color;
use super::{Channels, DecodeError, Decoded, Result};

/// Width and height from the IHDR chunk, which must come first.
pub fn dimensions(data: &[u8]) -> Result<(u32, u32)> {
    if data.len() < 24 || &data[12..16] != b"IHDR" {
        return Err("truncated or corrupt PNG header (no IHDR chunk)".into());
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Ok((be(&data[16..20]), be(&data[20..24])))
}

fn err(e: png::DecodingError) -> DecodeError {
    match e {
        e if truncated(&e) => DecodeError("truncated PNG (unexpected end of data)".into()),
        other => DecodeError(format!("corrupt PNG: {other}")),
    }
}

fn truncated(e: &png::DecodingError) -> bool {
    matches!(e, png::DecodingError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof)
}

/// Decodes row by row; where the data ends early, the rows (or, interlaced, the pass
/// pixels) read so far stay and the rest is black: what Pillow gives with
/// `LOAD_TRUNCATED_IMAGES`. `raw` is zeroed and `bpp` bytes a pixel.
fn read_rows<R: std::io::BufRead + std::io::Seek>(reader: &mut png::Reader<R>, raw: &mut [u8], width: u32, bpp: usize) -> Result<()> {
    let stride = width as usize * bpp;
    let mut y = 0;
    loop {
        match reader.next_interlaced_row() {
            Ok(Some(row)) => match row.interlace() {
                png::InterlaceInfo::Null(_) => {
                    raw[y * stride..(y + 1) * stride].copy_from_slice(&row.data()[..stride]);
                    y += 1;
                }
                png::InterlaceInfo::Adam7(info) => png::expand_interlaced_row(raw, stride, row.data(), info, (bpp * 8) as u8),
            },
            Ok(None) => return Ok(()),
            Err(e) if truncated(&e) => return Ok(()),
            Err(e) => return Err(err(e)),
        }
    }
}

pub fn decode(data: &[u8], channels: Channels, pad_truncated: bool, out: &mut Vec<u8>) -> Result<Decoded> {
    let mut decoder = png::Decoder::new(Cursor::new(data));
    decoder.set_transformations(Transformations::EXPAND | Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(err)?;
    let (color_type, _) = reader.output_color_type();
    let src_channels = match color_type {
        ColorType::Grayscale => 1,
        ColorType::GrayscaleAlpha => 2,
        ColorType::Rgb => 3,
        ColorType::Rgba => 4,
        ColorType::Indexed => return Err("PNG palette was not expanded".into()),
    };
    let size = reader.output_buffer_size().ok_or_else(|| DecodeError("PNG too large".into()))?;
    let mut raw = vec![0u8; size];
    let (w, h) = (reader.info().width, reader.info().height);
    let pixels = w as usize * h as usize;
    if pad_truncated {
        raw.resize(pixels * src_channels, 0);
        read_rows(&mut reader, &mut raw, w, src_channels)?;
    } else {
        let info = reader.next_frame(&mut raw).map_err(err)?;
        // Rows may be padded to `line_size`; pack them.
        let line = info.line_size;
        let packed_line = w as usize * src_channels;
        if line != packed_line {
            for y in 0..h as usize {
                raw.copy_within(y * line..y * line + packed_line, y * packed_line);
            }
        }
    }
    raw.truncate(pixels * src_channels);
    let want = channels.count();
    if src_channels == want {
        *out = raw;
    } else {
        out.clear();
        out.resize(pixels * want, 0);
        color::convert(&raw, src_channels, out, want);
    }
    Ok(Decoded::unscaled(w, h))
}

/// The samples of a one-channel PNG as they are stored, for label masks: a palette
/// image's indices (not its colours), a gray image's values; bit depths under 8
/// unpacked, 16-bit values kept when they fit in 8 bits. (width, height, labels).
pub fn decode_labels(data: &[u8]) -> Result<(u32, u32, Vec<u8>)> {
    let mut decoder = png::Decoder::new(Cursor::new(data));
    decoder.set_transformations(Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(err)?;
    let (color_type, depth) = reader.output_color_type();
    let samples = match color_type {
        ColorType::Grayscale | ColorType::Indexed => 1,
        ColorType::GrayscaleAlpha => 2,
        other => return Err(DecodeError(format!("a mask needs one channel (gray or palette), this PNG is {other:?}"))),
    };
    let bits = depth as usize;
    let size = reader.output_buffer_size().ok_or_else(|| DecodeError("PNG too large".into()))?;
    let mut raw = vec![0u8; size];
    let info = reader.next_frame(&mut raw).map_err(err)?;
    let (w, h, line) = (info.width as usize, info.height as usize, info.line_size);
    let mut out = vec![0u8; w * h];
    for (y, row) in out.chunks_exact_mut(w.max(1)).enumerate().take(h) {
        let src = &raw[y * line..(y + 1) * line];
        for (x, px) in row.iter_mut().enumerate() {
            *px = match bits {
                8 => src[x * samples],
                16 => {
                    let v = u16::from_be_bytes([src[x * samples * 2], src[x * samples * 2 + 1]]);
                    u8::try_from(v).map_err(|_| DecodeError(format!("mask label {v} does not fit in 8 bits")))?
                }
                _ => {
                    let bit = x * bits;
                    (src[bit / 8] >> (8 - bits - bit % 8)) & ((1u8 << bits) - 1)
                }
            };
        }
    }
    Ok((w as u32, h as u32, out))
}
