//! Format sniffing by magic bytes, header reading, and decoding to RGB or L.

pub mod color;
#[cfg(fast_huffman)]
pub mod huffman;
pub mod jpeg;
pub mod png;
pub mod restart;
pub mod webp;

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    Webp,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Webp => "webp",
        }
    }
}

/// Output pixel layout: the number of channels of the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channels {
    Rgb = 3,
    Gray = 1,
}

impl Channels {
    pub fn count(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub width: u32,
    pub height: u32,
    pub format: Format,
    /// A JPEG's header as its decode needs it, handed over rather than read again.
    pub jpeg: Option<jpeg::JpegHeader>,
}

impl Header {
    pub fn pixels(&self) -> u64 {
        self.width as u64 * self.height as u64
    }

    /// The header kept apart from the decoder that read it (a cache's copy): a decode
    /// handed it reads the blob's header again rather than trust the handle's state.
    pub fn detached(self) -> Header {
        Header { jpeg: self.jpeg.map(jpeg::JpegHeader::detached), ..self }
    }
}

/// A region of the source image, in source pixel coordinates (fractional).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rect {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

impl Rect {
    pub fn full(width: u32, height: u32) -> Rect {
        Rect { x0: 0.0, y0: 0.0, x1: width as f64, y1: height as f64 }
    }
    pub fn width(&self) -> f64 {
        self.x1 - self.x0
    }
    pub fn height(&self) -> f64 {
        self.y1 - self.y0
    }
}

/// What the caller needs decoded: `region` of the source, to be resized to at least
/// `min_width` x `min_height`. A codec may decode more than the region (MCU alignment)
/// or at a reduced DCT scale; `Decoded` says how its pixels map back to the source.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub region: Rect,
    pub min_width: u32,
    pub min_height: u32,
    /// Decode a JPEG at a reduced DCT scale where that still covers the output size.
    pub dct_scaling: bool,
    /// Decode only the region (JPEG cropping region and skipped scanlines).
    pub crop: bool,
    pub channels: Channels,
    /// Decode what a truncated image holds (the rest padded as Pillow pads it with
    /// `LOAD_TRUNCATED_IMAGES`) instead of failing.
    pub pad_truncated: bool,
}

/// Pixels of a decoded (possibly cropped and DCT-scaled) image in a caller's buffer:
/// decoded `x = source_x * scale_x - offset_x` (likewise for y).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decoded {
    pub width: u32,
    pub height: u32,
    pub scale_x: f64,
    pub scale_y: f64,
    pub offset_x: f64,
    pub offset_y: f64,
}

impl Decoded {
    pub fn unscaled(width: u32, height: u32) -> Decoded {
        Decoded { width, height, scale_x: 1.0, scale_y: 1.0, offset_x: 0.0, offset_y: 0.0 }
    }

    /// `rect` (source coordinates) in this buffer's coordinates, clamped to the buffer.
    pub fn map(&self, rect: &Rect) -> Rect {
        let cx = |v: f64| (v * self.scale_x - self.offset_x).clamp(0.0, self.width as f64);
        let cy = |v: f64| (v * self.scale_y - self.offset_y).clamp(0.0, self.height as f64);
        Rect { x0: cx(rect.x0), y0: cy(rect.y0), x1: cx(rect.x1), y1: cy(rect.y1) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for DecodeError {
    fn from(s: String) -> Self {
        DecodeError(s)
    }
}

impl From<&str> for DecodeError {
    fn from(s: &str) -> Self {
        DecodeError(s.to_string())
    }
}

pub type Result<T> = std::result::Result<T, DecodeError>;

pub fn sniff(data: &[u8]) -> Result<Format> {
    if data.is_empty() {
        return Err("empty image bytes".into());
    }
    if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(Format::Jpeg);
    }
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(Format::Png);
    }
    if data.len() >= 12 && &data[0..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        return Ok(Format::Webp);
    }
    let head = &data[..data.len().min(8)];
    Err(DecodeError(format!(
        "unknown image format (first bytes {}); expected JPEG, PNG or WebP",
        head.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
    )))
}

/// Which JPEG Huffman decoder this process uses: "x86-64-v3+tables", "x86-64-v3" or "portable".
/// With `select`, switches first; an unknown name or one this CPU cannot run is an error.
pub fn huffman_decoder(select: Option<&str>) -> std::result::Result<&'static str, String> {
    #[cfg(fast_huffman)]
    {
        if let Some(name) = select {
            let variant = huffman::Variant::from_name(name).ok_or_else(|| format!("unknown Huffman decoder {name:?}; expected 'x86-64-v3+tables', 'x86-64-v3' or 'portable'"))?;
            if !huffman::select(variant) {
                return Err(format!("this CPU cannot run the {name} Huffman decoder"));
            }
        }
        Ok(huffman::selected().name())
    }
    #[cfg(not(fast_huffman))]
    match select {
        None | Some("portable") => Ok("portable"),
        Some(name) => Err(format!("this build has no {name:?} Huffman decoder, only 'portable'")),
    }
}

/// Reads only the header: format and dimensions.
pub fn read_header(data: &[u8]) -> Result<Header> {
    let format = sniff(data)?;
    let mut jpeg_header = None;
    let (width, height) = match format {
        Format::Jpeg => {
            let h = jpeg::with_decoder(|d| d.header(data))?;
            jpeg_header = Some(h);
            (h.width, h.height)
        }
        Format::Png => png::dimensions(data)?,
        Format::Webp => webp::dimensions(data)?,
    };
    if width == 0 || height == 0 {
        return Err(DecodeError(format!("{} header says the image is {width}x{height}", format.name())));
    }
    Ok(Header { width, height, format, jpeg: jpeg_header })
}

/// Refuses an image over `max_pixels` from its header, before any large allocation.
pub fn check_pixels(header: &Header, max_pixels: u64) -> Result<()> {
    if header.pixels() > max_pixels {
        return Err(DecodeError(format!(
            "image is {}x{} = {} pixels, over the limit of {} (a decompression bomb?); raise max_pixels to allow it",
            header.width,
            header.height,
            header.pixels(),
            max_pixels
        )));
    }
    Ok(())
}

/// Decodes `req.region` (or more of the image) into `out`, tightly packed, with
/// `req.channels` channels. Returns how the buffer maps to source coordinates.
pub fn decode(data: &[u8], header: &Header, req: &Request, out: &mut Vec<u8>) -> Result<Decoded> {
    match header.jpeg {
        Some(h) => jpeg::with_decoder(|d| d.decode(data, &h, req, out)),
        None if header.format == Format::Jpeg => Err("JPEG header was not read".into()),
        None if header.format == Format::Png => png::decode(data, req.channels, req.pad_truncated, out),
        None => webp::decode(data, req.channels, out),
    }
}

/// Whether `decode(.., req)` decodes this image at its own size (no DCT scaling).
pub fn full_scale(header: &Header, req: &Request) -> bool {
    header.jpeg.is_none_or(|h| jpeg::scale_num(&h, req) == 8)
}

/// A JPEG at full size straight into `out` where TurboJPEG produces `channels`
/// itself; false where the caller must go through `decode` instead.
pub fn decode_jpeg_into(data: &[u8], header: &Header, out: &mut [u8], channels: Channels, pad_truncated: bool) -> Result<bool> {
    match header.jpeg {
        Some(h) => jpeg::with_decoder(|d| d.decode_full_into(data, &h, out, channels, pad_truncated)),
        None => Ok(false),
    }
}

/// Full decode at the image's own size into a new buffer.
pub fn decode_full(data: &[u8], channels: Channels, max_pixels: u64, pad_truncated: bool) -> Result<(Header, Vec<u8>)> {
    let header = read_header(data)?;
    check_pixels(&header, max_pixels)?;
    let req = Request {
        region: Rect::full(header.width, header.height),
        min_width: header.width,
        min_height: header.height,
        dct_scaling: false,
        crop: false,
        channels,
        pad_truncated,
    };
    let mut out = Vec::new();
    let decoded = decode(data, &header, &req, &mut out)?;
    debug_assert_eq!((decoded.width, decoded.height), (header.width, header.height));
    Ok((header, out))
}

/// A label mask's values, (width, height, one byte a pixel): a PNG's stored samples
/// (palette indices, gray values; see `png::decode_labels`), any other format decoded
/// to gray.
pub fn decode_mask(data: &[u8], max_pixels: u64) -> Result<(u32, u32, Vec<u8>)> {
    let header = read_header(data)?;
    check_pixels(&header, max_pixels)?;
    if header.format == Format::Png {
        return png::decode_labels(data);
    }
    let (h, pixels) = decode_full(data, Channels::Gray, max_pixels, false)?;
    Ok((h.width, h.height, pixels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_rejects_empty_and_unknown() {
        assert_eq!(sniff(b"").unwrap_err().0, "empty image bytes");
        let e = sniff(b"GIF89a....").unwrap_err().0;
        assert!(e.starts_with("unknown image format (first bytes 47 49 46 38"), "{e}");
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]).unwrap(), Format::Jpeg);
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 ").unwrap(), Format::Webp);
    }

    #[test]
    fn pixel_limit() {
        let h = Header { width: 20000, height: 20000, format: Format::Png, jpeg: None };
        assert!(check_pixels(&h, 178_956_970).unwrap_err().0.contains("decompression bomb"));
        assert!(check_pixels(&h, 400_000_000).is_ok());
    }
}
