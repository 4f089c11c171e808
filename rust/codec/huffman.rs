//! Chooses libjpeg-turbo's Huffman decoder per CPU (see build.rs): the copy compiled
//! for x86-64-v3 where the CPU has every feature that level implies, the baseline copy
//! elsewhere, where `LANCEFEED_HUFFMAN=baseline` is set, or after `select` asks for it.
//! Both decode identically; only the instructions differ.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU8, Ordering};

extern "C" {
    fn __real_jinit_huff_decoder(cinfo: *mut c_void);
    fn lancefeed_v3_jinit_huff_decoder(cinfo: *mut c_void);
}

/// Every libjpeg decompressor calls this in place of `jinit_huff_decoder` (the link
/// wraps it). It holds nothing that needs dropping, so a libjpeg error that longjmps
/// through it skips no destructor.
#[no_mangle]
pub unsafe extern "C" fn __wrap_jinit_huff_decoder(cinfo: *mut c_void) {
    if selected() == Variant::V3 {
        lancefeed_v3_jinit_huff_decoder(cinfo)
    } else {
        __real_jinit_huff_decoder(cinfo)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Baseline = 1,
    V3 = 2,
}

impl Variant {
    pub fn from_name(name: &str) -> Option<Variant> {
        [Variant::Baseline, Variant::V3].into_iter().find(|v| v.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Variant::Baseline => "portable",
            Variant::V3 => "x86-64-v3",
        }
    }
}

static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);
const UNDECIDED: u8 = 0;

/// The copy decompressors started from now on use: the CPU's best unless
/// `LANCEFEED_HUFFMAN=baseline` or `select` said otherwise.
pub fn selected() -> Variant {
    match CHOICE.load(Ordering::Relaxed) {
        1 => Variant::Baseline,
        2 => Variant::V3,
        _ => {
            let forced = std::env::var("LANCEFEED_HUFFMAN").is_ok_and(|v| v == "baseline");
            let v = if !forced && v3() { Variant::V3 } else { Variant::Baseline };
            CHOICE.store(v as u8, Ordering::Relaxed);
            v
        }
    }
}

/// Switches copies (for benchmarks that compare them in one process); false where
/// this CPU cannot run the v3 copy.
pub fn select(variant: Variant) -> bool {
    if variant == Variant::V3 && !v3() {
        return false;
    }
    CHOICE.store(variant as u8, Ordering::Relaxed);
    true
}

/// x86-64-v3 as the compiler understands -march=x86-64-v3.
fn v3() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("bmi1")
        && is_x86_feature_detected!("bmi2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
        && is_x86_feature_detected!("lzcnt")
        && is_x86_feature_detected!("movbe")
        && is_x86_feature_detected!("xsave")
}
