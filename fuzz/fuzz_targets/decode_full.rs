//! `codec::decode_full` (JPEG, PNG and WebP by magic bytes) at the image's own size.
//!
//! Input: one option byte (bit 0: gray instead of RGB, bit 1: pad_truncated), then the
//! image.
#![no_main]

use _core::codec::{decode_full, Channels};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|input: &[u8]| {
    let Some((&options, data)) = input.split_first() else { return };
    let channels = if options & 1 != 0 { Channels::Gray } else { Channels::Rgb };
    let pad_truncated = options & 2 != 0;
    common::check_history(data, |bytes| {
        let (header, pixels) = decode_full(bytes, channels, common::MAX_PIXELS, pad_truncated).map_err(|e| e.0)?;
        let expected = header.pixels() as usize * channels.count();
        assert_eq!(pixels.len(), expected, "{header:?}: wrong buffer size");
        Ok((format!("{:?} {}x{}", header.format, header.width, header.height), pixels))
    });
});
