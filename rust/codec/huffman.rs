//! Chooses the JPEG Huffman decoder per CPU (see build.rs and huffman_tables.c):
//! where the CPU has every feature of x86-64-v3, libjpeg-turbo's decoder with
//! lancefeed's combined code-and-coefficient tables in front ("x86-64-v3+tables");
//! elsewhere libjpeg-turbo's own ("portable"). `LANCEFEED_HUFFMAN` names another
//! ("baseline" is "portable"), and `select` switches for decompressors started after.
//! All decode to the same coefficients; only the speed differs.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU8, Ordering};

extern "C" {
    fn __real_jinit_huff_decoder(cinfo: *mut c_void);
    fn lancefeed_v3_jinit_huff_decoder(cinfo: *mut c_void);
    fn lancefeed_v3_jinit_table_huff_decoder(cinfo: *mut c_void);
}

/// Every libjpeg decompressor calls this in place of `jinit_huff_decoder` (the link
/// wraps it). It holds nothing that needs dropping, so a libjpeg error that longjmps
/// through it skips no destructor.
#[no_mangle]
pub unsafe extern "C" fn __wrap_jinit_huff_decoder(cinfo: *mut c_void) {
    match selected() {
        Variant::Tables => lancefeed_v3_jinit_table_huff_decoder(cinfo),
        Variant::V3 => lancefeed_v3_jinit_huff_decoder(cinfo),
        Variant::Baseline => __real_jinit_huff_decoder(cinfo),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Baseline = 1,
    V3 = 2,
    Tables = 3,
}

impl Variant {
    pub fn from_name(name: &str) -> Option<Variant> {
        [Variant::Baseline, Variant::V3, Variant::Tables].into_iter().find(|v| v.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Variant::Baseline => "portable",
            Variant::V3 => "x86-64-v3",
            Variant::Tables => "x86-64-v3+tables",
        }
    }
}

static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);
const UNDECIDED: u8 = 0;

/// The decoder that decompressors started from now on use: the CPU's best unless
/// `LANCEFEED_HUFFMAN` or `select` said otherwise.
pub fn selected() -> Variant {
    match CHOICE.load(Ordering::Relaxed) {
        1 => Variant::Baseline,
        2 => Variant::V3,
        3 => Variant::Tables,
        _ => {
            let v = match std::env::var("LANCEFEED_HUFFMAN").ok().as_deref() {
                Some("baseline") | Some("portable") => Variant::Baseline,
                Some(name) if v3() => Variant::from_name(name).unwrap_or(Variant::Tables),
                _ if v3() => Variant::Tables,
                _ => Variant::Baseline,
            };
            CHOICE.store(v as u8, Ordering::Relaxed);
            v
        }
    }
}

/// Switches copies (for benchmarks that compare them in one process); false where
/// this CPU cannot run the v3 copy.
pub fn select(variant: Variant) -> bool {
    if variant != Variant::Baseline && !v3() {
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
