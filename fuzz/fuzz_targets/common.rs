//! The history check shared by the fuzz targets: a decode's result depends only on its
//! bytes, not on what the thread decoded before (its TurboJPEG handle, scratch buffers).

/// What a decode produced: a description of the result (size, format, crop boxes...)
/// and its pixels, or the error message.
pub type Outcome = Result<(String, Vec<u8>), String>;

/// Refuses larger images from the header, so that the fuzzer neither runs out of
/// memory nor spends its time on a few huge decodes.
pub const MAX_PIXELS: u64 = 1 << 22;

/// Decoded before the first decode of the input: a valid baseline JPEG with the
/// standard Huffman tables.
const BEFORE_FIRST: &[&[u8]] = &[include_bytes!("../fixtures/history_a.jpg")];

/// Decoded before the second: a progressive JPEG with optimized tables, one cut
/// mid-scan (a warning or an error, per pad_truncated), and a tables-only stream whose
/// tables a reused handle must forget.
const BEFORE_SECOND: &[&[u8]] = &[
    include_bytes!("../fixtures/history_b_progressive.jpg"),
    include_bytes!("../fixtures/history_b_truncated.jpg"),
    include_bytes!("../fixtures/history_b_tables.jpg"),
];

/// Decodes `data` twice on this thread with other images in between (each through
/// `decode` too, so with the same options and the same thread-local state) and panics
/// if the two outcomes differ.
pub fn check_history(data: &[u8], decode: impl Fn(&[u8]) -> Outcome) {
    for image in BEFORE_FIRST {
        let _ = decode(image);
    }
    let first = decode(data);
    for image in BEFORE_SECOND {
        let _ = decode(image);
    }
    let second = decode(data);
    if first != second {
        panic!("history: the same bytes decoded differently after other images\n{}", describe(&first, &second));
    }
    // A panic inside a batch row is caught and turned into a row error.
    let (Ok((message, _)) | Err(message)) = &first;
    assert!(!message.contains("internal error"), "decode panicked: {message}");
}

fn describe(first: &Outcome, second: &Outcome) -> String {
    match (first, second) {
        (Ok((a, pa)), Ok((b, pb))) if a == b => {
            let differ = pa.iter().zip(pb).filter(|(x, y)| x != y).count();
            let at = pa.iter().zip(pb).position(|(x, y)| x != y);
            format!(
                "both {a}: {} and {} bytes, {differ} differ, the first at {at:?}",
                pa.len(),
                pb.len()
            )
        }
        _ => format!("first:  {}\nsecond: {}", short(first), short(second)),
    }
}

fn short(o: &Outcome) -> String {
    match o {
        Ok((what, pixels)) => format!("ok, {what}, {} bytes", pixels.len()),
        Err(message) => format!("error: {message}"),
    }
}
