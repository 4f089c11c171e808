//! lancefeed's C next to the vendored libjpeg-turbo: rust/codec/jpeg_state.c (which
//! resets a reused TurboJPEG decompressor between images), and lancefeed's Huffman
//! decoder (rust/codec/huffman_tables.c) with a second copy of libjpeg-turbo's,
//! compiled for x86-64-v3.
//!
//! Huffman decoding is plain C and about 60% of a JPEG decode. huffman_tables.c
//! includes the vendored libjpeg-turbo's `jdhuff.c` whole, under other names, and adds
//! a faster path in front of it; it is compiled for x86-64-v3 (BMI2's flag-free
//! shifts, LZCNT), which a wheel for baseline x86-64 cannot assume. The link wraps
//! libjpeg's `jinit_huff_decoder` so that `rust/codec/huffman.rs` picks a decoder per
//! CPU at run time. Where any of this is unavailable (not Linux x86-64, a system
//! libjpeg-turbo) the build goes on with libjpeg-turbo's decoder only.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// libjpeg-turbo's globals in jdhuff.c, renamed in our copy.
const RENAMED: [&str; 4] = ["jinit_huff_decoder", "jpeg_make_d_derived_tbl", "jpeg_fill_bit_buffer", "jpeg_huff_decode"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=rust/codec/huffman_tables.c");
    println!("cargo:rerun-if-changed=rust/codec/jpeg_state.c");
    println!("cargo::rustc-check-cfg=cfg(fast_huffman)");
    println!("cargo::rustc-check-cfg=cfg(jpeg_state)");
    println!("cargo:rerun-if-env-changed=LANCEFEED_BASELINE_HUFFMAN");
    let Some((src, build)) = vendored_tree() else {
        println!("cargo:warning=libjpeg-turbo sources not found: a new TurboJPEG handle per JPEG, and the baseline Huffman decoder only");
        return;
    };
    let target = (env::var("CARGO_CFG_TARGET_OS").unwrap_or_default(), env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default());
    // Without it every JPEG gets a new TurboJPEG handle: as exact, slower.
    let mut state = cc::Build::new();
    state.file("rust/codec/jpeg_state.c").include(&build).include(&src).opt_level(2).warnings(false);
    // GNU ld's --wrap lets a header read stay on the handle for the decode (jpeg_state.c).
    if target.0 == "linux" {
        state.define("LF_KEEP_HEADER", None);
        println!("cargo:rustc-link-arg=-Wl,--wrap=jpeg_abort_decompress");
    }
    state.compile("lancefeed_jpeg_state");
    println!("cargo:rustc-cfg=jpeg_state");

    if target != ("linux".to_string(), "x86_64".to_string()) || env::var_os("LANCEFEED_BASELINE_HUFFMAN").is_some() {
        return;
    }
    let mut cc = cc::Build::new();
    cc.file("rust/codec/huffman_tables.c")
        .include(&build)
        .include(&src)
        .opt_level(3)
        .define("NDEBUG", None)
        .flag("-march=x86-64-v3")
        .warnings(false)
        .flag_if_supported("-w");
    for name in RENAMED {
        cc.define(name, Some(format!("lancefeed_v3_{name}").as_str()));
    }
    cc.compile("lancefeed_huffman_v3");
    println!("cargo:rustc-link-arg=-Wl,--wrap=jinit_huff_decoder");
    println!("cargo:rustc-cfg=fast_huffman");
}

/// (libjpeg-turbo's `src` folder, its CMake build folder with jconfig.h and
/// jconfigint.h), found from the include folder that turbojpeg-sys reports.
fn vendored_tree() -> Option<(PathBuf, PathBuf)> {
    let include = env::var("DEP_TURBOJPEG_INCLUDE").ok()?;
    let include = PathBuf::from(include.split(',').next()?);
    let build = include.parent()?.join("build");
    let cache = fs::read_to_string(build.join("CMakeCache.txt")).ok()?;
    let home = cache.lines().find_map(|l| l.strip_prefix("CMAKE_HOME_DIRECTORY:INTERNAL="))?;
    let src = Path::new(home.trim()).join("src");
    let complete = src.join("jdhuff.c").exists() && build.join("jconfigint.h").exists();
    complete.then_some((src, build))
}
