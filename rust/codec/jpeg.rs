//! JPEG through libjpeg-turbo's TurboJPEG 3 API: errors are returned (never longjmp
//! across Rust frames), one decompressor per thread is reused, and a crop or a
//! downscale is pushed into the decoder (cropping region, skipped scanlines, DCT
//! scaling by n/8) so that pixels that are not needed are never produced.

use std::cell::RefCell;
use std::ffi::CStr;

use turbojpeg::raw;

use super::color;
use super::{Channels, DecodeError, Decoded, Request, Result};

/// TurboJPEG's TJUNCROPPED lives in its header only, so it is not linkable.
const UNCROPPED: raw::tjregion = raw::tjregion { x: 0, y: 0, w: 0, h: 0 };
/// TurboJPEG's tjMCUWidth, by TJSAMP (444, 422, 420, GRAY, 440, 411, 441); header-only too.
const MCU_WIDTH: [u32; 7] = [8, 16, 16, 8, 8, 32, 8];

/// What the header says, beyond the size.
#[derive(Clone, Copy, Debug)]
pub struct JpegHeader {
    pub width: u32,
    pub height: u32,
    subsamp: i32,
    colorspace: i32,
    lossless: bool,
}

pub struct Decompressor {
    handle: raw::tjhandle,
    /// The blob (address, length) whose header the handle has just read, and that
    /// header: the next decode of that very blob goes straight to the pixels instead of
    /// parsing the header (markers, tables) again. Any decode clears it.
    parsed: Option<(usize, usize, JpegHeader)>,
}

// The handle is only ever used by the thread that owns it (a thread-local).
unsafe impl Send for Decompressor {}

impl Drop for Decompressor {
    fn drop(&mut self) {
        unsafe { raw::tj3Destroy(self.handle) };
    }
}

thread_local! {
    static DECODER: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's decompressor, creating it on first use.
pub fn with_decoder<T>(f: impl FnOnce(&mut Decompressor) -> Result<T>) -> Result<T> {
    DECODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Decompressor::new()?);
        }
        f(slot.as_mut().expect("decompressor initialised above"))
    })
}

/// Smallest n in {1, 2, 4, 8} with `extent * n / 8 >= need` for both axes. libjpeg-turbo
/// has SIMD IDCTs for 1/8, 1/4, 1/2 and 1 only; its 3/8, 5/8, 3/4 and 7/8 IDCTs are scalar
/// C, and measured on the ImageNet sample a 5/8 decode was no faster than a full one.
fn dct_scale(region_w: f64, region_h: f64, need_w: u32, need_h: u32) -> i32 {
    [1, 2, 4, 8]
        .into_iter()
        .find(|&n| {
            let s = n as f64 / 8.0;
            region_w * s >= need_w as f64 - 1e-9 && region_h * s >= need_h as f64 - 1e-9
        })
        .unwrap_or(8)
}

/// num/8 in lowest terms: TurboJPEG only accepts its table's reduced fractions.
fn reduced(num: i32) -> raw::tjscalingfactor {
    let g = [8, 1, 2, 1, 4, 1, 2, 1][(num % 8) as usize];
    raw::tjscalingfactor { num: num / g, denom: 8 / g }
}

/// TJSCALED: the size libjpeg produces for a dimension at scale num/8.
fn scaled(dim: u32, num: i32) -> u32 {
    (dim as u64 * num as u64).div_ceil(8) as u32
}

impl Decompressor {
    pub fn new() -> Result<Self> {
        let handle = unsafe { raw::tj3Init(raw::TJINIT_TJINIT_DECOMPRESS as i32) };
        if handle.is_null() {
            return Err("could not create a TurboJPEG decompressor".into());
        }
        Ok(Decompressor { handle, parsed: None })
    }

    fn error(&self, what: &str) -> DecodeError {
        let msg = unsafe { CStr::from_ptr(raw::tj3GetErrorStr(self.handle)) };
        DecodeError(format!("{what}: {}", msg.to_string_lossy()))
    }

    fn get(&self, param: raw::TJPARAM) -> i32 {
        unsafe { raw::tj3Get(self.handle, param as i32) }
    }

    /// Reads the header of `data` (always: a blob at a reused address may be another).
    pub fn header(&mut self, data: &[u8]) -> Result<JpegHeader> {
        self.parsed = None;
        let h = self.read_header(data)?;
        self.parsed = Some((data.as_ptr() as usize, data.len(), h));
        Ok(h)
    }

    /// The header for a decode of `data`: the one just read when it is this blob's,
    /// else read now. Either way the handle is left ready to decompress `data`.
    fn header_for_decode(&mut self, data: &[u8]) -> Result<JpegHeader> {
        match self.parsed.take() {
            Some((ptr, len, h)) if (ptr, len) == (data.as_ptr() as usize, data.len()) => Ok(h),
            _ => self.read_header(data),
        }
    }

    fn read_header(&mut self, data: &[u8]) -> Result<JpegHeader> {
        if unsafe { raw::tj3DecompressHeader(self.handle, data.as_ptr(), data.len() as _) } != 0 {
            return Err(self.error("corrupt JPEG header"));
        }
        let width = self.get(raw::TJPARAM_TJPARAM_JPEGWIDTH);
        if width <= 0 {
            // A tables-only (abbreviated) stream parses, but holds no image.
            return Err("corrupt JPEG header: no image frame (SOF marker)".into());
        }
        Ok(JpegHeader {
            width: width as u32,
            height: self.get(raw::TJPARAM_TJPARAM_JPEGHEIGHT).max(0) as u32,
            subsamp: self.get(raw::TJPARAM_TJPARAM_SUBSAMP),
            colorspace: self.get(raw::TJPARAM_TJPARAM_COLORSPACE),
            lossless: self.get(raw::TJPARAM_TJPARAM_LOSSLESS) == 1,
        })
    }

    /// Decodes the part of the image `req` needs, at the smallest DCT scale that keeps
    /// that part at least `req.min_width` x `req.min_height`.
    pub fn decode(&mut self, data: &[u8], req: &Request, out: &mut Vec<u8>) -> Result<Decoded> {
        let h = self.header_for_decode(data)?;
        let region = req.region;
        let scalable = req.dct_scaling && !h.lossless;
        let num = if scalable { dct_scale(region.width(), region.height(), req.min_width, req.min_height) } else { 8 };
        let (sw, sh) = (scaled(h.width, num), scaled(h.height, num));
        let (kx, ky) = (sw as f64 / h.width as f64, sh as f64 / h.height as f64);

        // Crop region in scaled coordinates: x aligned down to the scaled iMCU width
        // (TurboJPEG's rule); y needs no alignment (skipped scanlines).
        let mcu_w = if (0..MCU_WIDTH.len() as i32).contains(&h.subsamp) && !h.lossless {
            Some((MCU_WIDTH[h.subsamp as usize] * num as u32 / 8).max(1))
        } else {
            None
        };
        let mut x0 = ((region.x0 * kx).floor().max(0.0) as u32).min(sw.saturating_sub(1));
        let x1 = ((region.x1 * kx).ceil() as u32).clamp(x0 + 1, sw);
        let y0 = ((region.y0 * ky).floor().max(0.0) as u32).min(sh.saturating_sub(1));
        let y1 = ((region.y1 * ky).ceil() as u32).clamp(y0 + 1, sh);
        let crop = match mcu_w {
            Some(m) if req.crop && (x0, y0, x1, y1) != (0, 0, sw, sh) => {
                x0 -= x0 % m;
                Some(raw::tjregion { x: x0 as i32, y: y0 as i32, w: (x1 - x0) as i32, h: (y1 - y0) as i32 })
            }
            _ => None,
        };
        let (ox, oy, dw, dh) = match crop {
            Some(r) => (r.x as u32, r.y as u32, r.w as u32, r.h as u32),
            None => (0, 0, sw, sh),
        };

        unsafe {
            if raw::tj3SetScalingFactor(self.handle, reduced(num)) != 0 {
                return Err(self.error("JPEG scaling"));
            }
            if raw::tj3SetCroppingRegion(self.handle, crop.unwrap_or(UNCROPPED)) != 0 {
                return Err(self.error("JPEG cropping"));
            }
        }

        let cmyk = h.colorspace == raw::TJCS_TJCS_CMYK as i32 || h.colorspace == raw::TJCS_TJCS_YCCK as i32;
        let gray_src = h.colorspace == raw::TJCS_TJCS_GRAY as i32;
        let (format, bpp) = if cmyk {
            (raw::TJPF_TJPF_CMYK, 4)
        } else if gray_src && req.channels == Channels::Gray {
            (raw::TJPF_TJPF_GRAY, 1)
        } else {
            (raw::TJPF_TJPF_RGB, 3)
        };
        let pixels = dw as usize * dh as usize;
        // The scratch buffer is reused across images: grow it, never re-zero it (the
        // decoder writes every byte of the region).
        if out.len() < pixels * bpp {
            out.resize(pixels * bpp, 0);
        }
        out.truncate(pixels * bpp);
        self.decompress_into(data, out, dw as usize * bpp, format)?;

        let want = req.channels.count();
        if cmyk {
            let mut rgb = vec![0u8; pixels * 3];
            color::inverted_cmyk_to_rgb(out, &mut rgb);
            *out = rgb;
        }
        if want == 1 && bpp != 1 {
            let n = color::rgb_to_luma_in_place(out);
            out.truncate(n);
        }
        Ok(Decoded {
            width: dw,
            height: dh,
            scale_x: kx,
            scale_y: ky,
            offset_x: ox as f64,
            offset_y: oy as f64,
        })
    }

    /// Full-size decode straight into a caller's buffer (a batch slot), no scratch.
    /// Only for RGB/gray sources whose size is the slot's.
    pub fn decode_full_into(&mut self, data: &[u8], out: &mut [u8], channels: Channels) -> Result<bool> {
        let h = self.header_for_decode(data)?;
        let cmyk = h.colorspace == raw::TJCS_TJCS_CMYK as i32 || h.colorspace == raw::TJCS_TJCS_YCCK as i32;
        let gray_src = h.colorspace == raw::TJCS_TJCS_GRAY as i32;
        if cmyk || (channels == Channels::Gray && !gray_src) {
            return Ok(false);
        }
        unsafe {
            raw::tj3SetScalingFactor(self.handle, raw::tjscalingfactor { num: 1, denom: 1 });
            raw::tj3SetCroppingRegion(self.handle, UNCROPPED);
        }
        let format = if channels == Channels::Gray { raw::TJPF_TJPF_GRAY } else { raw::TJPF_TJPF_RGB };
        self.decompress_into(data, out, h.width as usize * channels.count(), format)?;
        Ok(true)
    }

    fn decompress_into(&mut self, data: &[u8], out: &mut [u8], pitch: usize, format: raw::TJPF) -> Result<()> {
        let rc = unsafe {
            raw::tj3Decompress8(self.handle, data.as_ptr(), data.len() as _, out.as_mut_ptr(), pitch as i32, format)
        };
        if rc != 0 {
            let fatal = unsafe { raw::tj3GetErrorCode(self.handle) } != raw::TJERR_TJERR_WARNING as i32;
            let err = self.error("corrupt JPEG data");
            // libjpeg reports a truncated file as a warning and fills the rest with gray;
            // Pillow refuses such a file, and so do we. Other warnings (extraneous bytes
            // before a marker, say) leave a complete image, which Pillow accepts.
            if fatal || err.0.contains("Premature end") {
                return Err(if err.0.contains("Premature end") {
                    DecodeError(format!("truncated JPEG ({})", err.0))
                } else {
                    err
                });
            }
        }
        Ok(())
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dct_scale_picks_smallest_sufficient() {
        assert_eq!(dct_scale(500.0, 375.0, 224, 224), 8); // 375/2 = 187 < 224
        assert_eq!(dct_scale(1000.0, 750.0, 224, 224), 4);
        assert_eq!(dct_scale(448.0, 448.0, 224, 224), 4);
        assert_eq!(dct_scale(2000.0, 2000.0, 224, 224), 1);
        assert_eq!(dct_scale(100.0, 100.0, 224, 224), 8); // upscaling: full size
    }

    #[test]
    fn scale_factors_are_reduced() {
        let f = |n| { let r = reduced(n); (r.num, r.denom) };
        assert_eq!([f(1), f(2), f(4), f(6), f(8)], [(1, 8), (1, 4), (1, 2), (3, 4), (1, 1)]);
    }

    #[test]
    fn scaled_rounds_up() {
        assert_eq!(scaled(375, 5), 235);
        assert_eq!(scaled(500, 8), 500);
        assert_eq!(scaled(1, 1), 1);
    }

    #[test]
    fn garbage_after_magic_is_an_error() {
        let data = [0xFF, 0xD8, 0xFF, 0xE0, 0, 0, 0, 0];
        let e = with_decoder(|d| d.header(&data)).unwrap_err();
        assert!(e.0.starts_with("corrupt JPEG header"), "{e}");
    }
}
