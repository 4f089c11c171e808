//! Restart-indexed JPEGs: cheaper random crops by design.
//!
//! A crop that starts far down an image still pays for the rows above it: libjpeg
//! skips their scanlines, but must entropy-decode every block of them to find where
//! the next row's bits start (the DC coefficients are coded as differences along the
//! whole scan). Restart markers end that chain: after each one the entropy decoder
//! starts afresh, DC predictions reset. `add_restart_index` rewrites a JPEG losslessly
//! (TurboJPEG's transform: the same DCT coefficients, so the same pixels) with a
//! restart marker after every MCU, and records where each MCU row's bytes start in an
//! APP15 segment right after SOI:
//!
//! ```text
//! FF EF <len> "LFRSTIDX" 0 <version 2> <MCU height: u16> <MCU width: u16>
//!       <MCUs per row: u16> <rows: u32> <row offset: u32>...
//! ```
//!
//! (offsets from the first byte of entropy-coded data, big endian). Every other decoder
//! ignores an APP15 segment, so the file stays an ordinary JPEG. A crop of such a file
//! (`slice`) decodes a smaller JPEG instead: the same headers with the frame cut to the
//! MCU rows and columns the crop needs, and the entropy data of just those MCUs (one
//! MCU row of context above and below: chroma upsampling reads it in the whole image;
//! none at the sides, where a cropped decode treats the region's edge as the image's),
//! its restart markers renumbered from 0. The MCUs of a row between two row offsets are
//! found by their markers, so the index stays a few bytes per row.
//!
//! Version 1 (written before, still read) had a marker every MCU row only, and its
//! offsets are those rows: those files are cut by rows alone.

use turbojpeg::raw;

use super::Result;

const SIGNATURE: &[u8; 9] = b"LFRSTIDX\0";
const VERSION: u8 = 2;
/// Zero bytes after a slice's EOI: huffman_tables.c's LF_PAD.
const EOI_PAD: usize = 8;

/// Where each MCU row's entropy-coded bytes start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartIndex {
    /// Luma pixel rows per MCU row.
    pub interval_rows: u32,
    /// Offsets of each MCU row from the first entropy-coded byte; the first is 0.
    pub offsets: Vec<u32>,
    /// Version 2: a marker after every MCU, `(MCU width in pixels, MCUs per row)`;
    /// None for version 1 (a marker after every row only).
    pub columns: Option<(u32, u32)>,
}

/// Where a crop's MCUs are: `rows` and `cols` are MCU indices (end exclusive).
/// `context` says whether the crop's first and last pixel rows need the MCU row above
/// and below as context (see `needs_context`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct McuRange {
    pub rows: (u32, u32),
    pub cols: (u32, u32),
    pub context: (bool, bool),
}

impl McuRange {
    /// The MCUs that hold pixel rows `y0..y1` and columns `x0..x1` (in the decode's
    /// scale) of an image whose MCUs are `mcu_w` x `mcu_h` there.
    pub fn covering(x0: u32, x1: u32, y0: u32, y1: u32, mcu_w: u32, mcu_h: u32) -> McuRange {
        McuRange {
            rows: (y0 / mcu_h, y1.div_ceil(mcu_h)),
            cols: (x0 / mcu_w, x1.div_ceil(mcu_w)),
            context: (needs_context(y0, mcu_h), needs_context(y1, mcu_h)),
        }
    }
}

/// Whether a crop edge at pixel row `y` (the first row, or one past the last) needs
/// the MCU row on the other side of it. libjpeg's vertical chroma upsampling (the
/// triangle filter of 4:2:0) makes each output row from its own chroma row and the
/// nearest one above (an even row) or below (an odd row): only the first row of an MCU
/// row reads the chroma row above it, and only the last one the chroma row below. An
/// edge inside an MCU row needs neither, so that row of context is left out (3% of a
/// 224-pixel crop's entropy decoding, measured: most of it the row above, which libjpeg
/// decodes to skip it); the rows the crop keeps come out the same (the context only
/// changes the rows it borders, which the crop drops).
fn needs_context(y: u32, mcu_h: u32) -> bool {
    y % mcu_h == 0
}

/// A cut-down JPEG and the MCU rows and columns it leaves out at the top and left.
pub struct Slice {
    pub data: Vec<u8>,
    pub skipped_rows: u32,
    pub skipped_cols: u32,
}

/// The markers before the entropy-coded data: where SOF's height field is, where the
/// data starts.
struct Layout {
    height_at: usize,
    data_start: usize,
}

fn be16(b: &[u8], at: usize) -> usize {
    ((b[at] as usize) << 8) | b[at + 1] as usize
}

/// Walks the marker segments from SOI to the first SOS.
fn layout(data: &[u8]) -> Result<Layout> {
    if data.len() < 4 || data[0] != 0xFF || data[1] != 0xD8 {
        return Err("not a JPEG (no SOI marker)".into());
    }
    let mut at = 2;
    let mut height_at = None;
    loop {
        while at < data.len() && data[at] == 0xFF && data.get(at + 1) == Some(&0xFF) {
            at += 1; // fill bytes
        }
        if at + 4 > data.len() || data[at] != 0xFF {
            return Err("corrupt JPEG header: no SOS marker".into());
        }
        let marker = data[at + 1];
        let len = be16(data, at + 2);
        let end = at + 2 + len;
        if len < 2 || end > data.len() {
            return Err("corrupt JPEG header: a marker segment runs past the data".into());
        }
        match marker {
            // Baseline and extended sequential Huffman frames only: a progressive or
            // arithmetic-coded scan cannot be cut at restart intervals this way.
            0xC0 | 0xC1 => height_at = Some(at + 5),
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(format!("JPEG frame type SOF{} has no restart index (baseline Huffman only)", marker - 0xC0).into())
            }
            0xDA => {
                let height_at = height_at.ok_or("corrupt JPEG header: SOS before SOF")?;
                return Ok(Layout { height_at, data_start: end });
            }
            _ => {}
        }
        at = end;
    }
}

/// The restart markers (RST0..RST7) in the entropy-coded data from `start`: the offset
/// after each, relative to `start`, up to EOI or the next non-RST marker.
fn restart_offsets(data: &[u8], start: usize) -> Vec<u32> {
    let mut offsets = vec![0u32];
    let mut i = start;
    while i + 1 < data.len() {
        if data[i] == 0xFF {
            let m = data[i + 1];
            if (0xD0..=0xD7).contains(&m) {
                offsets.push((i + 2 - start) as u32);
                i += 2;
                continue;
            }
            if m != 0x00 && m != 0xFF {
                break; // EOI, or the next scan: the end of this one
            }
        }
        i += 1;
    }
    offsets
}

/// TurboJPEG's tjMCUHeight and tjMCUWidth, by TJSAMP (444, 422, 420, GRAY, 440, 411, 441).
const MCU_HEIGHT: [u32; 7] = [8, 8, 16, 8, 16, 8, 32];
const MCU_WIDTH: [u32; 7] = [8, 16, 16, 8, 8, 32, 8];

/// `data` rewritten losslessly with a restart marker after every MCU and the index of
/// the MCU rows in an APP15 segment (see the module docs). Progressive and
/// arithmetic-coded JPEGs come out baseline Huffman (the same coefficients); lossless
/// JPEG is refused. Huffman tables are optimised for the image, which usually makes up
/// for the markers' bytes.
pub fn add_restart_index(data: &[u8]) -> Result<Vec<u8>> {
    let handle = unsafe { raw::tj3Init(raw::TJINIT_TJINIT_TRANSFORM as i32) };
    if handle.is_null() {
        return Err("could not create a TurboJPEG transformer".into());
    }
    struct Handle(raw::tjhandle);
    impl Drop for Handle {
        fn drop(&mut self) {
            unsafe { raw::tj3Destroy(self.0) };
        }
    }
    let handle = Handle(handle);
    let message = |h: raw::tjhandle| unsafe { std::ffi::CStr::from_ptr(raw::tj3GetErrorStr(h)).to_string_lossy().into_owned() };
    let mut out_ptr: *mut u8 = std::ptr::null_mut();
    let mut out_len: raw::size_t = 0;
    let transform = raw::tjtransform {
        r: raw::tjregion { x: 0, y: 0, w: 0, h: 0 },
        op: raw::TJXOP_TJXOP_NONE as i32,
        options: 0,
        data: std::ptr::null_mut(),
        customFilter: None,
    };
    let (rc, subsamp, lossless, width, height) = unsafe {
        raw::tj3Set(handle.0, raw::TJPARAM_TJPARAM_RESTARTBLOCKS as i32, 1);
        raw::tj3Set(handle.0, raw::TJPARAM_TJPARAM_OPTIMIZE as i32, 1);
        let rc = raw::tj3DecompressHeader(handle.0, data.as_ptr(), data.len() as _);
        let lossless = raw::tj3Get(handle.0, raw::TJPARAM_TJPARAM_LOSSLESS as i32) == 1;
        let subsamp = raw::tj3Get(handle.0, raw::TJPARAM_TJPARAM_SUBSAMP as i32);
        let width = raw::tj3Get(handle.0, raw::TJPARAM_TJPARAM_JPEGWIDTH as i32).max(0) as u32;
        let height = raw::tj3Get(handle.0, raw::TJPARAM_TJPARAM_JPEGHEIGHT as i32).max(0) as u32;
        (rc, subsamp, lossless, width, height)
    };
    if rc != 0 {
        return Err(format!("corrupt JPEG header: {}", message(handle.0)).into());
    }
    if lossless {
        return Err("lossless JPEG (SOF3) has no restart index (baseline Huffman only)".into());
    }
    // Reading the header set these from the source (a progressive or arithmetic-coded
    // JPEG), and the transform would write that mode again: ask for baseline Huffman.
    unsafe {
        raw::tj3Set(handle.0, raw::TJPARAM_TJPARAM_PROGRESSIVE as i32, 0);
        raw::tj3Set(handle.0, raw::TJPARAM_TJPARAM_ARITHMETIC as i32, 0);
    }
    let rc = unsafe { raw::tj3Transform(handle.0, data.as_ptr(), data.len() as _, 1, &mut out_ptr, &mut out_len, &transform) };
    if rc != 0 || out_ptr.is_null() {
        if !out_ptr.is_null() {
            unsafe { raw::tj3Free(out_ptr.cast()) };
        }
        return Err(format!("JPEG transform: {}", message(handle.0)).into());
    }
    let coded = unsafe { std::slice::from_raw_parts(out_ptr, out_len as usize) }.to_vec();
    unsafe { raw::tj3Free(out_ptr.cast()) };

    let sub = subsamp as usize;
    let (mcu_h, mcu_w) = match (MCU_HEIGHT.get(sub), MCU_WIDTH.get(sub)) {
        (Some(&h), Some(&w)) => (h, w),
        _ => return Err(format!("JPEG subsampling {subsamp} is not one TurboJPEG knows").into()),
    };
    let (per_row, rows) = (width.div_ceil(mcu_w), height.div_ceil(mcu_h));
    let at = layout(&coded)?;
    let offsets = restart_offsets(&coded, at.data_start);
    if offsets.len() as u64 != per_row as u64 * rows as u64 || per_row > 0xFFFF {
        return Err(format!("the rewrite has {} restart intervals, not one per MCU ({per_row} x {rows})", offsets.len()).into());
    }
    let row_offsets: Vec<u32> = offsets.iter().step_by(per_row as usize).copied().collect();
    let len = 2 + SIGNATURE.len() + 1 + 6 + 4 + 4 * row_offsets.len();
    if len > 0xFFFF {
        return Err(format!("{rows} MCU rows do not fit in one APP15 segment").into());
    }
    let mut segment = Vec::with_capacity(2 + len);
    segment.extend_from_slice(&[0xFF, 0xEF]);
    segment.extend_from_slice(&(len as u16).to_be_bytes());
    segment.extend_from_slice(SIGNATURE);
    segment.push(VERSION);
    segment.extend_from_slice(&(mcu_h as u16).to_be_bytes());
    segment.extend_from_slice(&(mcu_w as u16).to_be_bytes());
    segment.extend_from_slice(&(per_row as u16).to_be_bytes());
    segment.extend_from_slice(&(row_offsets.len() as u32).to_be_bytes());
    for o in &row_offsets {
        segment.extend_from_slice(&o.to_be_bytes());
    }
    let mut out = Vec::with_capacity(coded.len() + segment.len());
    out.extend_from_slice(&coded[..2]);
    out.extend_from_slice(&segment);
    out.extend_from_slice(&coded[2..]);
    Ok(out)
}

/// The index of a JPEG that `add_restart_index` wrote, or None (any other JPEG, or a
/// segment that does not parse).
pub fn read_index(data: &[u8]) -> Option<RestartIndex> {
    let head = data.get(..4 + SIGNATURE.len() + 7)?;
    if head[..4] != [0xFF, 0xD8, 0xFF, 0xEF] || &head[6..6 + SIGNATURE.len()] != SIGNATURE {
        return None;
    }
    let len = be16(data, 4);
    let body = data.get(6..4 + len)?;
    let rest = body.get(SIGNATURE.len()..).filter(|r| r.len() >= 7)?;
    let (interval_rows, columns, table) = match rest[0] {
        1 => (be16(rest, 1) as u32, None, rest.get(3..)?),
        2 => {
            let (mcu_w, per_row) = (be16(rest, 3) as u32, be16(rest, 5) as u32);
            if mcu_w == 0 || per_row == 0 {
                return None;
            }
            (be16(rest, 1) as u32, Some((mcu_w, per_row)), rest.get(7..)?)
        }
        _ => return None,
    };
    let count = u32::from_be_bytes(table.get(..4)?.try_into().ok()?) as usize;
    let table = table.get(4..4 + 4 * count)?;
    let offsets = table.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect();
    (interval_rows > 0).then_some(RestartIndex { interval_rows, offsets, columns })
}

/// A cut-down JPEG's start: SOI and the marker segments up to the entropy-coded data,
/// without the index (it would not describe the cut), the frame's height (and width)
/// set to the cut's; room for `capacity` bytes.
fn headers(data: &[u8], at: &Layout, height: u32, width: Option<u32>, capacity: usize) -> Vec<u8> {
    let app_end = 4 + be16(data, 4);
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(&data[..2]);
    out.extend_from_slice(&data[app_end..at.data_start]);
    let height_at = at.height_at - (app_end - 2);
    out[height_at..height_at + 2].copy_from_slice(&(height as u16).to_be_bytes());
    if let Some(w) = width {
        out[height_at + 2..height_at + 4].copy_from_slice(&(w as u16).to_be_bytes());
    }
    out
}

/// Whether a restart marker ends at `m` (the byte after RSTn), within `data`.
fn marker_before(data: &[u8], m: usize) -> bool {
    m >= 2 && m <= data.len() && data[m - 2] == 0xFF && (0xD0..=0xD7).contains(&data[m - 1])
}

/// A smaller JPEG holding the MCUs of `range` (and one MCU row of context above and
/// below where the image has one and `range.context` asks for it), with the MCU rows
/// and columns it leaves out; None where the index does not help (nothing to leave
/// out) or does not match the data. `width` and `height` are the frame's, in pixels. A version 1 index cuts rows only,
/// from the row above the first to the end.
pub fn slice(data: &[u8], index: &RestartIndex, width: u32, height: u32, range: McuRange) -> Option<Slice> {
    let Some((mcu_w, per_row)) = index.columns else {
        let first_row = range.rows.0 * index.interval_rows;
        return slice_for_rows(data, index, height, first_row).map(|(data, skipped)| Slice {
            data,
            skipped_rows: skipped / index.interval_rows,
            skipped_cols: 0,
        });
    };
    let mcu_h = index.interval_rows;
    let rows = index.offsets.len() as u32;
    if rows != height.div_ceil(mcu_h) || per_row != width.div_ceil(mcu_w) {
        return None;
    }
    let r0 = if range.context.0 { range.rows.0.saturating_sub(1) } else { range.rows.0 };
    let r1 = if range.context.1 { range.rows.1.saturating_add(1) } else { range.rows.1 }.min(rows);
    let (c0, c1) = (range.cols.0, range.cols.1.min(per_row));
    if r0 >= r1 || c0 >= c1 || (r0, r1, c0, c1) == (0, rows, 0, per_row) {
        return None;
    }
    let at = layout(data).ok()?;
    let ds = at.data_start;
    // Every row after the first must start right after a restart marker.
    if index.offsets.first() != Some(&0) || !index.offsets[1..].iter().all(|&o| marker_before(data, ds + o as usize)) {
        return None;
    }
    let new_w = (c1 * mcu_w).min(width) - c0 * mcu_w;
    let new_h = (r1 * mcu_h).min(height) - r0 * mcu_h;
    let mut out = headers(data, &at, new_h, Some(new_w), data.len() / 2);
    let mut rst = 0u8;
    let mut marks: Vec<usize> = Vec::with_capacity(per_row as usize);
    for r in r0..r1 {
        let last_row = r + 1 == rows;
        let row = ds + index.offsets[r as usize] as usize;
        // A row ends at the marker before the next row's offset, the last at EOI.
        let row_end = if last_row { data.len() } else { ds + index.offsets[r as usize + 1] as usize - 2 };
        if row > row_end {
            return None;
        }
        // The markers that end each MCU of the row but the last: all of them are
        // found (and counted), so an index that points into the wrong MCU is refused.
        marks.clear();
        let mut from = row;
        let mut scan_end = None;
        while let Some(q) = data.get(from..row_end).and_then(|rest| memchr::memchr(0xFF, rest)) {
            let p = from + q;
            let m = *data.get(p + 1)?;
            from = p + 1;
            match m {
                0x00 | 0xFF => continue, // a stuffed 0xFF data byte, or fill before a marker
                0xD0..=0xD7 => marks.push(p),
                _ if last_row => {
                    scan_end = Some(p); // EOI (or the next scan)
                    break;
                }
                _ => return None,
            }
            from = p + 2;
        }
        if marks.len() + 1 != per_row as usize {
            return None;
        }
        let start = if c0 == 0 { row } else { marks[c0 as usize - 1] + 2 };
        let end = if c1 == per_row { if last_row { scan_end? } else { row_end } } else { marks[c1 as usize - 1] };
        if r > r0 {
            out.extend_from_slice(&[0xFF, 0xD0 + rst]);
            rst = (rst + 1) % 8;
        }
        let base = out.len();
        out.extend_from_slice(&data[start..end]);
        // Renumber the markers between the MCUs copied, in order.
        for &p in &marks[c0 as usize..c1 as usize - 1] {
            out[base + p + 1 - start] = 0xD0 + rst;
            rst = (rst + 1) % 8;
        }
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    // Zeros after EOI, which decoders never read: with them the table decoder keeps its
    // fast path to the last MCU (lf_ends_with_padded_marker in huffman_tables.c).
    out.extend_from_slice(&[0; EOI_PAD]);
    Some(Slice { data: out, skipped_rows: r0, skipped_cols: c0 })
}

/// A smaller JPEG holding the rows from `first_row` down (`first_row` rounded down to
/// an interval, less one interval of context), and the number of source rows it
/// leaves out at the top; None where the index does not help (the crop starts in the
/// first two intervals) or does not match the data. For version 1 indexes.
fn slice_for_rows(data: &[u8], index: &RestartIndex, height: u32, first_row: u32) -> Option<(Vec<u8>, u32)> {
    let k = (first_row / index.interval_rows).checked_sub(1)? as usize;
    if k == 0 || k >= index.offsets.len() {
        return None;
    }
    let at = layout(data).ok()?;
    let start = at.data_start + index.offsets[k] as usize;
    // Every interval after the first must start right after a restart marker.
    if !index.offsets[1..].iter().all(|&o| marker_before(data, at.data_start + o as usize)) {
        return None;
    }
    let skipped = k as u32 * index.interval_rows;
    let new_height = height.checked_sub(skipped).filter(|&h| h > 0)?;
    let mut out = headers(data, &at, new_height, None, data.len() - start + at.data_start);
    let base = out.len();
    out.extend_from_slice(&data[start..]);
    for (j, &o) in index.offsets.iter().enumerate().skip(k + 1) {
        let m = base + (at.data_start + o as usize - start) - 1;
        out[m] = 0xD0 + ((j - k - 1) % 8) as u8;
    }
    Some((out, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_skip_stuffed_bytes_and_stop_at_eoi() {
        let data = [0xAA, 0xFF, 0x00, 0xBB, 0xFF, 0xD0, 0xCC, 0xFF, 0xD1, 0xDD, 0xFF, 0xD9, 0xFF, 0xD2];
        assert_eq!(restart_offsets(&data, 0), vec![0, 6, 9]);
    }

    #[test]
    fn a_foreign_app15_is_no_index() {
        assert_eq!(read_index(&[0xFF, 0xD8, 0xFF, 0xEF, 0x00, 0x10, b'A', b'd', b'o', b'b', b'e', 0, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(read_index(&[0xFF, 0xD8]), None);
    }
}
