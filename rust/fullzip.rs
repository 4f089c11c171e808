//! Values of a Lance "full-zip" page read straight from its data file.
//!
//! Lance (file format 2.1 and later) stores a column of large binary values as full-zip
//! pages: for each value, its length (4 or 8 bytes, little-endian) and then its stored
//! bytes, back to back, with an index of where each value's entry starts. The stored
//! bytes are the value itself, or (Lance's default for values over 32 KiB) the value
//! compressed on its own: an 8-byte uncompressed length and one zstd frame. An encoded
//! image rarely compresses, and zstd then stores it in "raw" blocks: the image's bytes,
//! cut into blocks of at most 128 KiB, each after a 3-byte header. Such a value is read
//! here without Lance: its raw blocks are moved together in place (a 110 KB JPEG in two
//! blocks costs a move of the second one). A frame with a compressed block is left to
//! Lance's reader.
//!
//! Every entry is checked against what the page's index says of it: its length prefix
//! against the entry's size, the frame's sizes against the prefix and the frame's end
//! against the entry's end. An entry that disagrees is a misread (a layout this reader
//! does not know, or a file that changed), never passed on as an image.
//!
//! Reads are positional (`pread`), never a memory map: a data file truncated or failing
//! under the reader gives an error, not a SIGBUS.

use std::io;
use std::ops::Range;

/// How a full-zip entry's stored bytes hold the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// The value's bytes as they are.
    Raw,
    /// Lance's per-value zstd: an 8-byte uncompressed length then a zstd frame, or a
    /// bare frame (older writers), told apart as Lance's reader does.
    Zstd,
}

/// What one entry holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The value's bytes, at this range of the entry's buffer.
    Value(Range<usize>),
    /// Stored compressed: only Lance's reader gives its bytes.
    Compressed,
}

const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// Skippable frames' magic numbers are 0x184D2A50 to 0x184D2A5F.
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;
/// The largest block a zstd frame holds (RFC 8878, Block_Maximum_Size).
const ZSTD_MAX_BLOCK: usize = 128 << 10;

/// One entry's value: `entry` is the whole entry (length prefix included) and may be
/// rewritten, a frame's raw blocks moved together. `Err` names what disagrees.
pub fn unframe(entry: &mut [u8], prefix: usize, framing: Framing) -> Result<Entry, String> {
    if prefix != 4 && prefix != 8 {
        return Err(format!("a length prefix of {prefix} bytes"));
    }
    if entry.len() < prefix {
        return Err(format!("an entry of {} bytes, shorter than its {prefix}-byte length prefix", entry.len()));
    }
    let mut word = [0u8; 8];
    word[..prefix].copy_from_slice(&entry[..prefix]);
    let stored = u64::from_le_bytes(word);
    let size = (entry.len() - prefix) as u64;
    if stored != size {
        return Err(format!("a length prefix of {stored} in an entry of {size} bytes"));
    }
    let body = prefix..entry.len();
    match framing {
        Framing::Raw => Ok(Entry::Value(body)),
        Framing::Zstd => zstd_value(entry, body),
    }
}

/// The value inside Lance's per-value zstd bytes at `body` of `entry`.
fn zstd_value(entry: &mut [u8], body: Range<usize>) -> Result<Entry, String> {
    if body.is_empty() {
        return Ok(Entry::Value(body)); // Lance stores an empty value as nothing at all
    }
    let bytes = &entry[body.clone()];
    // Lance's rule (ZstdBufferCompressor::is_raw_stream_format): a bare frame starts
    // with the magic number and a clear reserved bit; anything else has the length first.
    let bare = bytes.len() < 8 || (le32(bytes, 0) == Some(ZSTD_MAGIC) && bytes[4] & 0x08 == 0);
    let (frame_at, expected) = if bare {
        (body.start, None)
    } else {
        (body.start + 8, Some(u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))))
    };
    let Some(blocks) = raw_blocks(&entry[frame_at..body.end])? else {
        return Ok(Entry::Compressed);
    };
    let total: usize = blocks.iter().map(|b| b.len()).sum();
    if let Some(n) = expected {
        if n != total as u64 {
            return Err(format!("a zstd frame of {total} raw bytes for a value of {n}"));
        }
    }
    // Move the raw blocks together, in place, behind the first one.
    let start = frame_at + blocks.first().map_or(0, |b| b.start);
    let mut at = start;
    for b in &blocks {
        let from = frame_at + b.start;
        if from != at {
            entry.copy_within(from..frame_at + b.end, at);
        }
        at += b.len();
    }
    Ok(Entry::Value(start..at))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The payload ranges of a zstd frame made only of raw blocks (RFC 8878), None when it
/// holds a compressed or RLE block, a dictionary, or more than one frame (Lance's
/// reader then decompresses it); `Err` when it is not a well-formed frame that ends at
/// the end of `frame`.
fn raw_blocks(frame: &[u8]) -> Result<Option<Vec<Range<usize>>>, String> {
    let bad = |what: &str| Err(format!("{what} in a zstd frame of {} bytes", frame.len()));
    if le32(frame, 0) != Some(ZSTD_MAGIC) {
        return bad("no magic number");
    }
    let Some(&fhd) = frame.get(4) else { return bad("no frame header") };
    if fhd & 0x08 != 0 {
        return bad("a reserved bit set");
    }
    let single_segment = fhd & 0x20 != 0;
    if fhd & 0x03 != 0 {
        return Ok(None); // a dictionary: not what Lance writes
    }
    let fcs_bytes = match fhd >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let mut at = 5 + usize::from(!single_segment);
    let content = match frame.get(at..at + fcs_bytes) {
        Some(b) => {
            let mut word = [0u8; 8];
            word[..fcs_bytes].copy_from_slice(b);
            let v = u64::from_le_bytes(word);
            (fcs_bytes > 0).then_some(if fcs_bytes == 2 { v + 256 } else { v })
        }
        None => return bad("a cut frame header"),
    };
    at += fcs_bytes;
    let mut blocks = Vec::new();
    loop {
        let Some(h) = frame.get(at..at + 3) else { return bad("a cut block header") };
        let header = u32::from(h[0]) | u32::from(h[1]) << 8 | u32::from(h[2]) << 16;
        let (last, kind, size) = (header & 1 == 1, (header >> 1) & 3, (header >> 3) as usize);
        at += 3;
        match kind {
            0 => {
                if size > ZSTD_MAX_BLOCK || at + size > frame.len() {
                    return bad("a raw block past its end");
                }
                blocks.push(at..at + size);
                at += size;
            }
            1 | 2 => return Ok(None),
            _ => return bad("a reserved block type"),
        }
        if last {
            break;
        }
    }
    if fhd & 0x04 != 0 {
        at += 4; // the content checksum
    }
    if at != frame.len() {
        // Bytes after the frame: another frame (Lance's reader decodes them all), or a misread.
        let next = if at < frame.len() { le32(frame, at) } else { None };
        return match next {
            Some(m) if m == ZSTD_MAGIC || m & 0xFFFF_FFF0 == SKIPPABLE_MAGIC => Ok(None),
            _ => bad("a frame that does not end where its entry does"),
        };
    }
    let total: usize = blocks.iter().map(|b| b.len()).sum();
    if let Some(n) = content {
        if n != total as u64 {
            return bad(&format!("a content size of {n} for {total} raw bytes"));
        }
    }
    Ok(Some(blocks))
}

/// Entries read from one data file, each made its value (see [`unframe`]).
pub struct Values {
    /// Every entry's bytes, in the order asked for.
    pub buf: Vec<u8>,
    /// Entry i's value: its range of `buf`, or None where Lance must read it.
    pub values: Vec<Option<Range<usize>>>,
}

/// How entry i is stored: `kinds[i]`'s bit 0 set for an 8-byte length prefix (else
/// 4 bytes), bit 1 for Lance's per-value zstd (else raw).
pub fn kind_of(code: u8) -> (usize, Framing) {
    (if code & 1 != 0 { 8 } else { 4 }, if code & 2 != 0 { Framing::Zstd } else { Framing::Raw })
}

/// The entries at byte ranges `spans` of the file open at `fd`, read with one
/// positional read for each run of adjacent entries, and unframed (entry i stored as
/// `kinds[i]` says, see [`kind_of`]). `spans` must be in ascending order and must not
/// overlap. `Ok(Err((i, reason)))` names an entry that disagrees with the layout;
/// `Err` is the file's I/O error (a short read included).
pub fn read_values(fd: i32, spans: &[(u64, u64)], kinds: &[u8]) -> io::Result<Result<Values, (usize, String)>> {
    if kinds.len() != spans.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} kinds for {} spans", kinds.len(), spans.len())));
    }
    let mut total = 0usize;
    for (i, &(start, end)) in spans.iter().enumerate() {
        if end < start || (i > 0 && start < spans[i - 1].1) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("span {i} ({start}..{end}) is out of order")));
        }
        total += (end - start) as usize;
    }
    // Runs of entries that follow each other in the file, of at most RUN_BYTES (more
    // when one entry is): one read each, (file offset, length, offset in buf).
    let mut runs: Vec<(u64, usize, usize)> = Vec::new();
    let mut at = 0usize;
    let mut i = 0;
    while i < spans.len() {
        let mut j = i + 1;
        while j < spans.len() && spans[j].0 == spans[j - 1].1 && spans[j].1 - spans[i].0 <= RUN_BYTES {
            j += 1;
        }
        let (from, to) = (spans[i].0, spans[j - 1].1);
        runs.push((from, (to - from) as usize, at));
        at += (to - from) as usize;
        i = j;
    }
    let mut buf = read_runs(fd, &runs, total)?;
    let mut values = Vec::with_capacity(spans.len());
    let mut at = 0usize;
    for (i, &(start, end)) in spans.iter().enumerate() {
        let len = (end - start) as usize;
        let (prefix, framing) = kind_of(kinds[i]);
        match unframe(&mut buf[at..at + len], prefix, framing) {
            Ok(Entry::Value(r)) => values.push(Some(at + r.start..at + r.end)),
            Ok(Entry::Compressed) => values.push(None),
            Err(reason) => return Ok(Err((i, reason))),
        }
        at += len;
    }
    Ok(Ok(Values { buf, values }))
}

/// Reads beyond this many bytes are split over threads (each run whole): a whole small
/// column read before the first batch (CIFAR-10's 44 MB), while nothing else runs.
const PARALLEL_BYTES: usize = 16 << 20;
/// The longest run of adjacent entries one read takes (so that a long one can be shared).
const RUN_BYTES: u64 = 8 << 20;

/// `runs` (file offset, length, offset in the result) read into one new buffer of
/// `total` bytes that they fill; never zeroed first, every byte is read.
fn read_runs(fd: i32, runs: &[(u64, usize, usize)], total: usize) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(total);
    let base = buf.as_mut_ptr() as usize;
    huge_pages(base, total);
    let read = |part: &[(u64, usize, usize)]| -> io::Result<()> {
        for &(from, len, at) in part {
            // SAFETY: the runs are disjoint ranges of the buffer's capacity.
            let dst = unsafe { std::slice::from_raw_parts_mut((base as *mut u8).add(at), len) };
            pread_exact(fd, dst, from)?;
        }
        Ok(())
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(total / PARALLEL_BYTES).max(1);
    if threads <= 1 || runs.len() < 2 {
        read(runs)?;
    } else {
        // Runs split by bytes, a share for each thread.
        let share = total.div_ceil(threads);
        let mut parts: Vec<&[(u64, usize, usize)]> = Vec::new();
        let mut start = 0;
        for (k, run) in runs.iter().enumerate() {
            if run.2 + run.1 >= share * (parts.len() + 1) || k + 1 == runs.len() {
                parts.push(&runs[start..=k]);
                start = k + 1;
            }
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = parts.iter().map(|part| scope.spawn(|| read(part))).collect();
            handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("a read thread panicked"))))
        })?;
    }
    // SAFETY: every byte of 0..total was written by the reads above.
    unsafe { buf.set_len(total) };
    Ok(buf)
}

/// Asks for transparent huge pages over the 2 MiB-aligned part of a new buffer of
/// `len` bytes at `addr`: a whole column read in (44 MB for CIFAR-10) otherwise takes
/// a page fault and a page clear every 4 KiB, a fifth of the read's time. Advice only.
fn huge_pages(addr: usize, len: usize) {
    const HUGE: usize = 2 << 20;
    let start = addr.next_multiple_of(HUGE);
    let end = (addr + len) / HUGE * HUGE;
    if end > start {
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

/// `pread` until `dst` is full: a short read goes on from where it stopped; the end of
/// the file before that is an error naming the bytes.
fn pread_exact(fd: i32, dst: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0usize;
    while done < dst.len() {
        let at = offset + done as u64;
        let n = unsafe { libc::pread(fd, dst[done..].as_mut_ptr().cast(), dst.len() - done, at as libc::off_t) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io::Error::new(e.kind(), format!("reading bytes {offset}..{}: {e}", offset + dst.len() as u64)));
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("reading bytes {offset}..{}: the file ends before it (truncated?)", offset + dst.len() as u64),
            ));
        }
        done += n as usize;
    }
    Ok(())
}

/// Binary views (Arrow's 16-byte layout as four little-endian i32: length, then the
/// first 4 bytes, buffer index and offset, or up to 12 bytes inline) of `ranges` of
/// `data`, addressed through buffers that start every `window` bytes of `data` (an
/// offset is an i32). A range of None gets an empty view (the caller fills that row).
pub fn binary_views(data: &[u8], ranges: &[Option<Range<usize>>], window: usize) -> Option<Vec<[i32; 4]>> {
    if window == 0 || window > i32::MAX as usize + 1 {
        return None;
    }
    let mut views = Vec::with_capacity(ranges.len());
    for r in ranges {
        let Some(r) = r else {
            views.push([0; 4]);
            continue;
        };
        let value = data.get(r.clone())?;
        let len = i32::try_from(value.len()).ok()?;
        let mut view = [len, 0, 0, 0];
        if value.len() <= 12 {
            let mut inline = [0u8; 12];
            inline[..value.len()].copy_from_slice(value);
            for (k, word) in inline.chunks_exact(4).enumerate() {
                view[1 + k] = i32::from_le_bytes(word.try_into().ok()?);
            }
        } else {
            view[1] = i32::from_le_bytes(value[..4].try_into().ok()?);
            view[2] = (r.start / window) as i32;
            view[3] = (r.start % window) as i32;
        }
        views.push(view);
    }
    Some(views)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::io::AsRawFd;

    fn entry(prefix: usize, stored: &[u8]) -> Vec<u8> {
        let mut e = (stored.len() as u64).to_le_bytes()[..prefix].to_vec();
        e.extend_from_slice(stored);
        e
    }

    /// A zstd frame of raw blocks holding `value`, as libzstd writes an incompressible
    /// input: single segment, content size in 4 bytes, no checksum.
    fn raw_frame(value: &[u8], block: usize) -> Vec<u8> {
        let mut f = ZSTD_MAGIC.to_le_bytes().to_vec();
        f.push(0b1010_0000); // FCS 4 bytes, single segment
        f.extend_from_slice(&(value.len() as u32).to_le_bytes());
        let chunks: Vec<&[u8]> = value.chunks(block).collect();
        for (k, c) in chunks.iter().enumerate() {
            let last = u32::from(k + 1 == chunks.len());
            let h = last | (c.len() as u32) << 3;
            f.extend_from_slice(&h.to_le_bytes()[..3]);
            f.extend_from_slice(c);
        }
        f
    }

    fn prefixed(value: &[u8], block: usize) -> Vec<u8> {
        let mut s = (value.len() as u64).to_le_bytes().to_vec();
        s.extend(raw_frame(value, block));
        s
    }

    fn value_of(e: &mut Vec<u8>, prefix: usize, framing: Framing) -> Vec<u8> {
        match unframe(e, prefix, framing).unwrap() {
            Entry::Value(r) => e[r].to_vec(),
            Entry::Compressed => panic!("compressed"),
        }
    }

    #[test]
    fn raw_entries_with_either_prefix() {
        for prefix in [4, 8] {
            let mut e = entry(prefix, b"jpeg bytes");
            assert_eq!(value_of(&mut e, prefix, Framing::Raw), b"jpeg bytes");
        }
    }

    #[test]
    fn a_prefix_that_disagrees_is_a_misread() {
        let mut e = entry(4, b"abcdef");
        e[0] = 9;
        assert!(unframe(&mut e, 4, Framing::Raw).unwrap_err().contains("length prefix of 9"));
        // An 8-byte prefix read as 4 bytes: the entry's size disagrees.
        let mut e = entry(8, b"abcdef");
        assert!(unframe(&mut e, 4, Framing::Raw).is_err());
    }

    #[test]
    fn raw_blocks_are_moved_together() {
        let value: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for block in [ZSTD_MAX_BLOCK, 1000] {
            let mut e = entry(4, &prefixed(&value, block));
            assert_eq!(value_of(&mut e, 4, Framing::Zstd), value);
        }
        // A bare frame (no 8-byte length first), as older writers left it.
        let mut e = entry(4, &raw_frame(b"0123456789abcdef", 64));
        assert_eq!(value_of(&mut e, 4, Framing::Zstd), b"0123456789abcdef");
        let mut e = entry(4, b"");
        assert_eq!(value_of(&mut e, 4, Framing::Zstd), b"");
    }

    #[test]
    fn compressed_blocks_are_left_to_lance() {
        let mut stored = prefixed(b"0123456789abcdef", 64);
        stored[8 + 9] |= 0b100; // the block's type: compressed
        assert_eq!(unframe(&mut entry(4, &stored), 4, Framing::Zstd).unwrap(), Entry::Compressed);
    }

    #[test]
    fn frames_that_disagree_are_misreads() {
        let good = prefixed(b"0123456789abcdef", 64);
        let mut short = good.clone();
        short[0] = 15; // the uncompressed length
        assert!(unframe(&mut entry(4, &short), 4, Framing::Zstd).unwrap_err().contains("for a value of 15"));
        let mut fcs = good.clone();
        fcs[8 + 5] = 17; // the frame's content size
        assert!(unframe(&mut entry(4, &fcs), 4, Framing::Zstd).unwrap_err().contains("content size"));
        let mut past = good.clone();
        past.push(0); // a byte after the frame
        assert!(unframe(&mut entry(4, &past), 4, Framing::Zstd).is_err());
        let mut cut = good.clone();
        cut.pop();
        assert!(unframe(&mut entry(4, &cut), 4, Framing::Zstd).is_err());
    }

    #[test]
    fn reads_runs_and_reports_truncation() {
        let values: [&[u8]; 3] = [b"first value", b"second", b"third one!"];
        let mut file_bytes = b"header".to_vec();
        let mut spans = Vec::new();
        for v in values {
            let e = entry(4, v);
            spans.push((file_bytes.len() as u64, (file_bytes.len() + e.len()) as u64));
            file_bytes.extend(e);
        }
        let path = std::env::temp_dir().join(format!("lancefeed-fullzip-{}", std::process::id()));
        std::fs::File::create(&path).unwrap().write_all(&file_bytes).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let got = read_values(f.as_raw_fd(), &[spans[2], spans[0]], &[0, 0]);
        assert!(got.is_err(), "out of order");
        let got = read_values(f.as_raw_fd(), &[spans[0], spans[2]], &[0, 0]).unwrap().unwrap();
        let read: Vec<&[u8]> = got.values.iter().map(|r| &got.buf[r.clone().unwrap()]).collect();
        assert_eq!(read, vec![values[0], values[2]]);
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(spans[2].0 + 3).unwrap();
        let err = read_values(f.as_raw_fd(), &spans, &[0, 0, 0]).err().unwrap();
        assert!(err.to_string().contains("truncated"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn views_inline_and_addressed() {
        let data = b"..ab....0123456789abcdef";
        let views = binary_views(data, &[Some(2..4), Some(8..24), None], 8).unwrap();
        assert_eq!(views[0], [2, i32::from_le_bytes(*b"ab\0\0"), 0, 0]);
        assert_eq!(views[1], [16, i32::from_le_bytes(*b"0123"), 1, 0]);
        assert_eq!(views[2], [0; 4]);
    }
}
