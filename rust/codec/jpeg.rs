//! JPEG through libjpeg-turbo's TurboJPEG 3 API: errors are returned (never longjmp
//! across Rust frames), one decompressor per thread is reused, and a crop or a
//! downscale is pushed into the decoder (cropping region, skipped scanlines, DCT
//! scaling by n/8) so that pixels that are not needed are never produced.

use std::cell::RefCell;
use std::ffi::CStr;

use turbojpeg::raw;

use super::color;
use super::restart;
use super::{Channels, DecodeError, Decoded, Request, Result};

/// TurboJPEG's TJUNCROPPED lives in its header only, so it is not linkable.
const UNCROPPED: raw::tjregion = raw::tjregion { x: 0, y: 0, w: 0, h: 0 };
/// TurboJPEG's tjMCUWidth, by TJSAMP (444, 422, 420, GRAY, 440, 411, 441); header-only too.
const MCU_WIDTH: [u32; 7] = [8, 16, 16, 8, 8, 32, 8];

#[cfg(jpeg_state)]
extern "C" {
    // rust/codec/jpeg_state.c
    fn lancefeed_tj_attach(handle: raw::tjhandle) -> std::ffi::c_int;
    fn lancefeed_tj_detach(handle: raw::tjhandle);
    fn lancefeed_tj_reset(handle: raw::tjhandle);
    fn lancefeed_tj_status(handle: raw::tjhandle) -> std::ffi::c_int;
    fn lancefeed_tj_header(handle: raw::tjhandle, buf: *const u8, size: usize) -> std::ffi::c_int;
}

/// What the header says, beyond the size. Read by planning and handed to the decode
/// of the same blob, so that the decode need not ask TurboJPEG for it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JpegHeader {
    pub width: u32,
    pub height: u32,
    subsamp: i32,
    colorspace: i32,
    lossless: bool,
    /// `Decompressor::reads` when the header was read.
    read: u64,
}

impl JpegHeader {
    /// This header with no decoder's read count: a decode given it reads the header again.
    pub fn detached(self) -> JpegHeader {
        JpegHeader { read: u64::MAX, ..self }
    }

    fn cmyk(&self) -> bool {
        self.colorspace == raw::TJCS_TJCS_CMYK as i32 || self.colorspace == raw::TJCS_TJCS_YCCK as i32
    }

    fn gray(&self) -> bool {
        self.colorspace == raw::TJCS_TJCS_GRAY as i32
    }
}

/// A thread's TurboJPEG decompressor. Before each blob it is put back to the state of
/// a new handle (see jpeg_state.c), so that no table, header or error state of one
/// blob reaches the next: a decode's result depends on its bytes alone.
pub struct Decompressor {
    handle: raw::tjhandle,
    /// jpeg_state.c hooks this handle. Without it (a build without the vendored
    /// sources, or a layout it does not recognise) every blob gets a new handle.
    tracked: bool,
    /// Blobs read so far: a header is current on the handle while `reads` is the
    /// count it was read at.
    reads: u64,
    /// Where the current header's blob is (address, length): a tracked handle keeps
    /// the header it read (jpeg_state.c), and its decode reads on in that buffer, so a
    /// decode of any other bytes must start over.
    blob: (usize, usize),
    /// Where small images land when their rows would start 32-byte aligned (see
    /// `lands_aligned`), reused.
    landing: Vec<u8>,
}

// The handle is only ever used by the thread that owns it (a thread-local).
unsafe impl Send for Decompressor {}

impl Drop for Decompressor {
    fn drop(&mut self) {
        unsafe {
            #[cfg(jpeg_state)]
            if self.tracked {
                lancefeed_tj_detach(self.handle);
            }
            raw::tj3Destroy(self.handle)
        };
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

/// The DCT scale (num/8) `Decompressor::decode` uses for `req`.
pub fn scale_num(h: &JpegHeader, req: &Request) -> i32 {
    if req.dct_scaling && !h.lossless {
        dct_scale(req.region.width(), req.region.height(), req.min_width, req.min_height)
    } else {
        8
    }
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
        Self::open(true)
    }

    /// `reset: false` gives the fallback (a new handle per blob) for tests.
    fn open(reset: bool) -> Result<Self> {
        let handle = new_handle()?;
        Ok(Decompressor { handle, tracked: reset && attach(handle), reads: 0, blob: (0, 0), landing: Vec::new() })
    }

    /// Swaps in a new handle (the old one failed, or cannot be reset).
    fn replace(&mut self) -> Result<()> {
        let handle = new_handle()?;
        let old = std::mem::replace(&mut self.handle, handle);
        unsafe {
            #[cfg(jpeg_state)]
            if self.tracked {
                lancefeed_tj_detach(old);
            }
            raw::tj3Destroy(old);
        }
        self.tracked = self.tracked && attach(handle);
        Ok(())
    }

    /// Makes the handle as good as new before it reads another blob.
    fn fresh(&mut self) -> Result<()> {
        self.reads += 1;
        #[cfg(jpeg_state)]
        if self.tracked {
            unsafe { lancefeed_tj_reset(self.handle) };
            return Ok(());
        }
        if self.reads > 1 {
            self.replace()?;
        }
        Ok(())
    }

    fn message(&self) -> String {
        unsafe { CStr::from_ptr(raw::tj3GetErrorStr(self.handle)) }.to_string_lossy().into_owned()
    }

    /// (a fatal error, the data ran out, an error only in the trailing markers after
    /// the image was whole) since the last `fresh`.
    fn status(&self, rc: i32) -> (bool, bool, bool) {
        #[cfg(jpeg_state)]
        if self.tracked {
            let s = unsafe { lancefeed_tj_status(self.handle) };
            return (rc != 0 && s & 1 != 0, s & 2 != 0, rc != 0 && s & 4 != 0);
        }
        // Without the hooks, TurboJPEG's own account: its code says "warning" if any
        // warning came, even before an error; its message is the first warning's, or
        // the error's, which overwrites it. So only libjpeg's corrupt-data warnings
        // and its end-of-file warning count as warnings here; anything else fails.
        if rc == 0 {
            return (false, false, false);
        }
        let msg = self.message();
        let warning = unsafe { raw::tj3GetErrorCode(self.handle) } == raw::TJERR_TJERR_WARNING as i32;
        let eof = msg == "Premature end of JPEG file";
        (!(warning && (eof || msg.starts_with("Corrupt JPEG data:"))), eof, false)
    }

    /// The outcome of a TurboJPEG call that returned `rc`. Warnings alone (extraneous
    /// bytes before a marker, a corrupt data segment) leave a complete image, which
    /// Pillow accepts too; data that ends early is an error unless `pad`, as in Pillow
    /// with and without `LOAD_TRUNCATED_IMAGES`; so is a damaged marker after the last
    /// scanline (the image is whole: Pillow refuses the file unless it loads truncated
    /// images, and then returns the whole image).
    fn check(&mut self, rc: i32, what: &str, pad: bool) -> Result<()> {
        let (early, ran_out, late) = self.status(rc);
        let fatal = early || late && !pad;
        if rc == 0 && !ran_out || !fatal && (!ran_out || pad) {
            if late {
                let _ = self.replace(); // libjpeg failed: nothing of it carries over
            }
            return Ok(());
        }
        let err = format!("{what}: {}", self.message());
        if fatal {
            // Reset would do; a new handle also rules out anything an error left behind.
            let _ = self.replace();
        }
        Err(DecodeError(if ran_out { format!("truncated JPEG ({err})") } else { err }))
    }

    /// Reads the header of `data` (always: a blob at a reused address may be another).
    pub fn header(&mut self, data: &[u8]) -> Result<JpegHeader> {
        self.fresh()?;
        self.blob = (data.as_ptr() as usize, data.len());
        #[cfg(jpeg_state)]
        let rc = if self.tracked {
            unsafe { lancefeed_tj_header(self.handle, data.as_ptr(), data.len()) }
        } else {
            unsafe { raw::tj3DecompressHeader(self.handle, data.as_ptr(), data.len() as _) }
        };
        #[cfg(not(jpeg_state))]
        let rc = unsafe { raw::tj3DecompressHeader(self.handle, data.as_ptr(), data.len() as _) };
        self.check(rc, "corrupt JPEG header", false)?;
        let width = self.get(raw::TJPARAM_TJPARAM_JPEGWIDTH);
        if width <= 0 {
            return Err(if self.status(rc).1 {
                "truncated JPEG (the data ends before the image frame)".into()
            } else {
                // A tables-only (abbreviated) stream parses, but holds no image.
                "corrupt JPEG header: no image frame (SOF marker)".into()
            });
        }
        Ok(JpegHeader {
            width: width as u32,
            height: self.get(raw::TJPARAM_TJPARAM_JPEGHEIGHT).max(0) as u32,
            subsamp: self.get(raw::TJPARAM_TJPARAM_SUBSAMP),
            colorspace: self.get(raw::TJPARAM_TJPARAM_COLORSPACE),
            lossless: self.get(raw::TJPARAM_TJPARAM_LOSSLESS) == 1,
            read: self.reads,
        })
    }

    fn get(&self, param: raw::TJPARAM) -> i32 {
        unsafe { raw::tj3Get(self.handle, param as i32) }
    }

    /// Readies the handle to decompress `data`, whose header is `h`. TurboJPEG checks a
    /// cropping region against the header its handle last read, so a crop needs this
    /// blob's header on the handle: still there if `h` was the handle's last read of
    /// these very bytes, else read again.
    fn start(&mut self, data: &[u8], h: &JpegHeader, crop: bool) -> Result<()> {
        if h.read == self.reads && self.blob == (data.as_ptr() as usize, data.len()) {
            return Ok(());
        }
        if crop {
            self.header(data)?;
        } else {
            self.fresh()?;
        }
        Ok(())
    }

    /// Decodes the part of the image `req` needs, at the smallest DCT scale that keeps
    /// that part at least `req.min_width` x `req.min_height`.
    pub fn decode(&mut self, data: &[u8], h: &JpegHeader, req: &Request, out: &mut Vec<u8>) -> Result<Decoded> {
        let region = req.region;
        let num = scale_num(h, req);
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

        // A restart-indexed JPEG decodes a JPEG of just the MCUs the crop needs
        // (restart.rs): the same MCUs, without entropy-decoding the rows above the crop
        // or the columns beside it. The crop shifts by whole scaled MCUs, so the pixels
        // and their mapping are those of the whole image's decode.
        let mut crop = crop;
        let sliced = match (crop.as_mut(), restart::read_index(data), mcu_w) {
            (Some(c), Some(index), Some(m)) if index.columns.is_none_or(|(w, _)| w * num as u32 / 8 == m) => {
                let mh = (index.interval_rows * num as u32 / 8).max(1);
                let (x, y, w, hh) = (c.x as u32, c.y as u32, c.w as u32, c.h as u32);
                let range = restart::McuRange::covering(x, x + w, y, y + hh, m, mh);
                restart::slice(data, &index, h.width, h.height, range).map(|s| {
                    c.y -= (s.skipped_rows * mh) as i32;
                    c.x -= (s.skipped_cols * m) as i32;
                    s.data
                })
            }
            _ => None,
        };
        let data = match &sliced {
            Some(sub) => {
                self.header(sub)?;
                &sub[..]
            }
            None => {
                self.start(data, h, crop.is_some())?;
                data
            }
        };
        unsafe {
            if raw::tj3SetScalingFactor(self.handle, reduced(num)) != 0 {
                return Err(DecodeError(format!("JPEG scaling: {}", self.message())));
            }
            if raw::tj3SetCroppingRegion(self.handle, crop.unwrap_or(UNCROPPED)) != 0 {
                return Err(DecodeError(format!("JPEG cropping: {}", self.message())));
            }
        }

        // Lossless JPEG has no color conversion in libjpeg-turbo: a gray one is decoded
        // as gray (Pillow's "L") and expanded here.
        let (format, bpp) = if h.cmyk() {
            (raw::TJPF_TJPF_CMYK, 4)
        } else if h.gray() && (req.channels == Channels::Gray || h.lossless) {
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
        self.decompress_into(data, out, dw as usize * bpp, format, req.pad_truncated)?;

        let want = req.channels.count();
        if h.cmyk() {
            let mut rgb = vec![0u8; pixels * 3];
            color::inverted_cmyk_to_rgb(out, &mut rgb);
            *out = rgb;
        }
        if want == 1 && bpp != 1 {
            let n = color::rgb_to_luma_in_place(out);
            out.truncate(n);
        } else if want == 3 && bpp == 1 {
            let mut rgb = vec![0u8; pixels * 3];
            color::convert(out, 1, &mut rgb, 3);
            *out = rgb;
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
    /// Only for sources that TurboJPEG turns into `channels` itself; false otherwise.
    pub fn decode_full_into(&mut self, data: &[u8], h: &JpegHeader, out: &mut [u8], channels: Channels, pad: bool) -> Result<bool> {
        let direct = match channels {
            Channels::Rgb => !h.cmyk() && !(h.lossless && h.gray()),
            Channels::Gray => h.gray(),
        };
        if !direct {
            return Ok(false);
        }
        self.start(data, h, false)?;
        unsafe {
            raw::tj3SetScalingFactor(self.handle, raw::tjscalingfactor { num: 1, denom: 1 });
            raw::tj3SetCroppingRegion(self.handle, UNCROPPED);
        }
        let format = if channels == Channels::Gray { raw::TJPF_TJPF_GRAY } else { raw::TJPF_TJPF_RGB };
        self.decompress_into(data, out, h.width as usize * channels.count(), format, pad)?;
        Ok(true)
    }

    fn decompress_into(&mut self, data: &[u8], out: &mut [u8], pitch: usize, format: raw::TJPF, pad: bool) -> Result<()> {
        let land = format == raw::TJPF_TJPF_RGB && out.len() <= MAX_LANDING && lands_aligned(out.as_ptr() as usize, pitch, out.len());
        // Where in the landing buffer no row starts aligned (none, for an odd pitch over 32 rows).
        let spot = land.then(|| {
            // Grown, never shrunk: outputs of alternating sizes would zero it again each time.
            if self.landing.len() < out.len() + 32 {
                self.landing.resize(out.len() + 32, 0);
            }
            let base = self.landing.as_ptr() as usize;
            (0..32).find(|&o| !lands_aligned(base + o, pitch, out.len()))
        });
        let rc = if let Some(Some(off)) = spot {
            // Decoded there, then copied (hot in the cache).
            let mut landing = std::mem::take(&mut self.landing);
            let dst = &mut landing[off..off + out.len()];
            let rc = unsafe { raw::tj3Decompress8(self.handle, data.as_ptr(), data.len() as _, dst.as_mut_ptr(), pitch as i32, format) };
            out.copy_from_slice(dst);
            self.landing = landing;
            rc
        } else {
            unsafe { raw::tj3Decompress8(self.handle, data.as_ptr(), data.len() as _, out.as_mut_ptr(), pitch as i32, format) }
        };
        // The handle's header is used up: the next decode reads one again.
        self.reads += 1;
        self.check(rc, "corrupt JPEG data", pad)
    }
}

/// Largest RGB output (bytes) decoded through `Decompressor::landing` when its rows
/// would start 32-byte aligned: a 128x128 image. Larger ones are not read back at once.
const MAX_LANDING: usize = 128 * 128 * 3;

/// Whether an RGB output at `base` (rows of `pitch` bytes, `len` bytes in all) has a
/// row that starts 32-byte aligned. libjpeg-turbo's AVX2 and SSE2 color conversion
/// writes such a row with non-temporal stores (`vmovntdq`, meant for outputs larger than
/// the cache): straight to memory, and read back from there by the resize, the pixel
/// cache or the training step. A 32x32 image into an aligned slot decoded ~25% slower
/// (130,000 against 167,000 img/s on one thread), and which processes were slow followed
/// where the heap put each thread's buffers.
fn lands_aligned(base: usize, pitch: usize, len: usize) -> bool {
    // Row starts repeat every 32 rows, modulo 32.
    let rows = len.checked_div(pitch).unwrap_or(0).min(32);
    (0..rows).any(|y| (base + y * pitch).is_multiple_of(32))
}

fn new_handle() -> Result<raw::tjhandle> {
    let handle = unsafe { raw::tj3Init(raw::TJINIT_TJINIT_DECOMPRESS as i32) };
    if handle.is_null() {
        return Err("could not create a TurboJPEG decompressor".into());
    }
    // Keep no marker: lancefeed ignores ICC profiles (Pillow's decode does not apply
    // them either), so a broken profile is no reason to refuse the image.
    unsafe { raw::tj3Set(handle, raw::TJPARAM_TJPARAM_SAVEMARKERS as i32, 0) };
    Ok(handle)
}

/// Whether this build resets a thread's decompressor between blobs (jpeg_state.c)
/// rather than making a new one per blob.
pub fn resets_handles() -> bool {
    with_decoder(|d| Ok(d.tracked)).unwrap_or(false)
}

/// Hooks jpeg_state.c into `handle`; false where that is not built or the handle's
/// layout is not the one it knows.
fn attach(handle: raw::tjhandle) -> bool {
    #[cfg(jpeg_state)]
    return unsafe { lancefeed_tj_attach(handle) } == 0;
    #[cfg(not(jpeg_state))]
    {
        let _ = handle;
        false
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
    #[cfg(jpeg_state)]
    fn the_state_reset_is_attached() {
        // Without it every JPEG would get a new handle: exact, but far slower.
        assert!(Decompressor::new().unwrap().tracked);
    }

    /// A 40x24 photo-like JPEG; `optimize` gives it tables of its own.
    fn encode(seed: u32, optimize: bool) -> Vec<u8> {
        let pixels: Vec<u8> = (0..40 * 24 * 3u32).map(|i| ((i * 7 + seed * 31) ^ (i / 97)) as u8).collect();
        let mut c = turbojpeg::Compressor::new().unwrap();
        c.set_quality(80).unwrap();
        c.set_optimize(optimize).unwrap();
        let image = turbojpeg::Image { pixels: &pixels[..], width: 40, pitch: 120, height: 24, format: turbojpeg::PixelFormat::RGB };
        c.compress_to_vec(image).unwrap()
    }

    /// The JPEG with its DHT segments left out, as in an MJPEG frame.
    fn without_dht(data: &[u8]) -> Vec<u8> {
        let mut out = data[..2].to_vec();
        let mut i = 2;
        while data[i + 1] != 0xDA {
            let len = u16::from_be_bytes([data[i + 2], data[i + 3]]) as usize;
            if data[i + 1] != 0xC4 {
                out.extend_from_slice(&data[i..i + 2 + len]);
            }
            i += 2 + len;
        }
        out.extend_from_slice(&data[i..]);
        out
    }

    fn full(d: &mut Decompressor, data: &[u8]) -> Result<Vec<u8>> {
        let h = d.header(data)?;
        let req = Request {
            region: super::super::Rect::full(h.width, h.height),
            min_width: h.width,
            min_height: h.height,
            dct_scaling: false,
            crop: false,
            channels: Channels::Rgb,
            pad_truncated: false,
        };
        let mut out = Vec::new();
        d.decode(data, &h, &req, &mut out)?;
        Ok(out)
    }

    #[test]
    fn a_decode_depends_on_its_bytes_alone_with_and_without_the_reset() {
        let frame = without_dht(&encode(1, false));
        let others = [encode(2, true), b"\xff\xd8\xff\xe0 junk".to_vec(), encode(3, true)[..300].to_vec(), encode(4, false)];
        // Both ways of keeping a thread's decoder clean: the reset, and (where it
        // cannot attach) a new handle per blob. Without the hooks a truncated header
        // is reported as a missing frame, so each is held to its own blobs alone.
        for tracked in [true, false] {
            let alone: Vec<_> = std::iter::once(&frame).chain(&others).map(|b| full(&mut Decompressor::open(tracked).unwrap(), b)).collect();
            assert!(alone[0].is_ok() && alone[1].is_ok() && alone[2].is_err() && alone[3].is_err());
            let mut d = Decompressor::open(tracked).unwrap();
            for round in 0..3 {
                for (k, blob) in std::iter::once(&frame).chain(&others).enumerate().cycle().skip(round).take(10) {
                    assert_eq!(full(&mut d, blob), alone[k], "tracked {tracked}, blob {k}");
                }
            }
        }
    }

    #[test]
    fn a_header_kept_on_the_handle_serves_only_its_own_bytes() {
        // The handle keeps the header it read for the decode that follows; a decode of
        // other bytes (another blob, or a copy of the same one elsewhere), a header read
        // and never decoded, and a crop all get the pixels of a decode on a new handle.
        let (a, b) = (encode(1, false), encode(5, true));
        let want_a = full(&mut Decompressor::new().unwrap(), &a).unwrap();
        let want_b = full(&mut Decompressor::new().unwrap(), &b).unwrap();
        assert_ne!(want_a, want_b);
        let mut d = Decompressor::new().unwrap();
        let req = |h: &JpegHeader, crop: bool| Request {
            region: if crop { super::super::Rect { x0: 16.0, y0: 8.0, x1: 40.0, y1: 24.0 } } else { super::super::Rect::full(h.width, h.height) },
            min_width: h.width,
            min_height: h.height,
            dct_scaling: false,
            crop,
            channels: Channels::Rgb,
            pad_truncated: false,
        };
        let decode = |d: &mut Decompressor, data: &[u8], h: &JpegHeader, crop: bool| {
            let mut out = Vec::new();
            d.decode(data, h, &req(h, crop), &mut out).map(|_| out)
        };
        for _ in 0..2 {
            let ha = d.header(&a).unwrap();
            assert_eq!(decode(&mut d, &b, &ha, false).unwrap(), want_b, "b decoded after a's header");
            let copy = a.clone();
            let ha = d.header(&a).unwrap();
            assert_eq!(decode(&mut d, &copy, &ha, false).unwrap(), want_a, "a's copy after a's header");
            d.header(&a).unwrap();
            assert_eq!(full(&mut d, &b).unwrap(), want_b, "b after a header of a never decoded");
            let hb = d.header(&b).unwrap();
            let cropped = decode(&mut d, &b, &hb, true).unwrap();
            let rows: Vec<u8> = want_b.chunks(40 * 3).skip(8).flat_map(|r| r[16 * 3..].to_vec()).collect();
            assert_eq!(cropped, rows, "crop of b after its header");
            assert_eq!(decode(&mut d, &a, &hb, false).unwrap(), want_a, "a decoded with b's header, after b's decode");
        }
    }

    #[test]
    fn rows_that_start_aligned_are_found() {
        assert!(lands_aligned(0, 96, 96 * 32));
        assert!(!lands_aligned(16, 96, 96 * 32));
        // 84-byte rows start 4 bytes apart modulo 32: from 2 never aligned, from 4 at row 3.
        assert!(!lands_aligned(2, 84, 84 * 32));
        assert!(lands_aligned(4, 84, 84 * 4) && !lands_aligned(4, 84, 84 * 3));
        // 3-byte rows reach every address modulo 32 within 32 rows.
        assert!(lands_aligned(1, 3, 3 * 32) && !lands_aligned(1, 3, 3 * 21));
        assert!(!lands_aligned(0, 96, 0) && !lands_aligned(0, 0, 96));
    }

    #[test]
    fn garbage_after_magic_is_an_error() {
        let data = [0xFF, 0xD8, 0xFF, 0xE0, 0, 0, 0, 0];
        let e = with_decoder(|d| d.header(&data)).unwrap_err();
        assert_eq!(e.0, "truncated JPEG (corrupt JPEG header: Premature end of JPEG file)");
    }
}
