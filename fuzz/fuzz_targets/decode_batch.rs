//! `batch::decode_batch` with one row: planning (random crops from the header), the
//! JPEG cropping region and DCT scaling, the scratch buffer, resize and flip.
//!
//! Input: an option byte (bit 0: gray, 1: pad_truncated, 2: dct_scaling, 3: decode_crop,
//! 4-6: the transform, 7: skip_errors), a byte for the random seed, then the image.
#![no_main]

use _core::batch::{decode_batch, Config, Target};
use _core::codec::Channels;
use _core::plan::Op;
use libfuzzer_sys::fuzz_target;

mod common;

fn ops(choice: u8) -> Vec<Op> {
    let rrc = |height, width, scale, ratio| Op::RandomResizedCrop { height, width, scale, ratio };
    match choice {
        // torchvision's training default, at a small size.
        0 => vec![rrc(24, 24, (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)), Op::HorizontalFlip { p: 0.5 }],
        // Tiny, thin crops: DCT scaling down to 1/8 and crops narrower than an MCU.
        1 => vec![rrc(7, 33, (0.01, 1.0), (0.2, 5.0)), Op::HorizontalFlip { p: 1.0 }],
        2 => vec![Op::ResizeShorter { size: 20, max_size: None }, Op::CenterCrop { height: 16, width: 16 }],
        // Larger than most seeds: zero padding around the image.
        3 => vec![Op::CenterCrop { height: 40, width: 40 }],
        // Native size: a JPEG goes straight into the batch's slot.
        4 => vec![],
        5 => vec![Op::Resize { height: 5, width: 3 }],
        // Output size from the image (no fixed size): the planned path.
        6 => vec![Op::ResizeShorter { size: 8, max_size: Some(9) }],
        _ => vec![rrc(32, 16, (0.5, 1.0), (0.5, 2.0)), Op::HorizontalFlip { p: 0.5 }],
    }
}

fuzz_target!(|input: &[u8]| {
    let [options, seed, data @ ..] = input else { return };
    let cfg = Config {
        ops: ops((options >> 4) & 7),
        steps: vec![],
        channels: if options & 1 != 0 { Channels::Gray } else { Channels::Rgb },
        seed: *seed as u64,
        epoch: 0,
        max_pixels: common::MAX_PIXELS,
        skip_errors: options & 0x80 != 0,
        dct_scaling: options & 4 != 0,
        decode_crop: options & 8 != 0,
        pad_truncated: options & 2 != 0,
        threads: 1,
        pixel_cache: None,
    };
    common::check_history(data, |bytes| {
        let out = decode_batch(&[Some(bytes)], &[7], &cfg, Target::Owned).map_err(|e| format!("{e:?}"))?;
        let pixels = out.pixels.unwrap_or_default();
        let slot = out.height as usize * out.width as usize * cfg.channels.count();
        assert_eq!(pixels.len(), out.kept.len() * slot, "wrong buffer size");
        let boxes: Vec<[u32; 4]> = out.boxes.iter().map(|b| b.map(f32::to_bits)).collect();
        let what = format!(
            "{}x{} kept {:?} errors {:?} boxes {boxes:?} flips {:?}",
            out.height, out.width, out.kept, out.errors, out.flips
        );
        Ok((what, pixels))
    });
});
