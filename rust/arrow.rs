//! Arrow C Data Interface import of binary arrays: the values are borrowed straight
//! from the producer's buffers (pyarrow, Lance), never copied.

use std::ffi::{c_char, c_void, CStr};

#[repr(C)]
pub struct ArrowSchema {
    format: *const c_char,
    name: *const c_char,
    metadata: *const c_char,
    flags: i64,
    n_children: i64,
    children: *mut *mut ArrowSchema,
    dictionary: *mut ArrowSchema,
    release: Option<unsafe extern "C" fn(*mut ArrowSchema)>,
    private_data: *mut c_void,
}

#[repr(C)]
pub struct ArrowArray {
    length: i64,
    null_count: i64,
    offset: i64,
    n_buffers: i64,
    n_children: i64,
    buffers: *mut *const c_void,
    children: *mut *mut ArrowArray,
    dictionary: *mut ArrowArray,
    release: Option<unsafe extern "C" fn(*mut ArrowArray)>,
    private_data: *mut c_void,
}

/// The number of rows of an exported array.
///
/// # Safety
/// `array` must be a valid, unreleased C Data Interface struct.
pub unsafe fn array_length(array: *const ArrowArray) -> Result<usize, String> {
    match array.as_ref() {
        Some(a) if a.release.is_some() => Ok(a.length as usize),
        _ => Err("the Arrow array was already released".into()),
    }
}

/// Appends one `Option<&[u8]>` per element (None for a null) to `out`; with `pick`,
/// only the elements it names, in its order (a gather from a large array then costs
/// what it picks, not the array's length).
///
/// # Safety
/// `schema` and `array` must be valid, unreleased C Data Interface structs whose
/// buffers outlive `'a` (the caller keeps the capsules that own them alive).
pub unsafe fn binary_values<'a>(
    schema: *const ArrowSchema,
    array: *const ArrowArray,
    out: &mut Vec<Option<&'a [u8]>>,
    pick: Option<&[u64]>,
) -> Result<(), String> {
    let (schema, array) = match (schema.as_ref(), array.as_ref()) {
        (Some(s), Some(a)) if a.release.is_some() => (s, a),
        _ => return Err("the Arrow array was already released".into()),
    };
    let format = CStr::from_ptr(schema.format).to_string_lossy().into_owned();
    let len = array.length as usize;
    let offset = array.offset as usize;
    let buffers = std::slice::from_raw_parts(array.buffers, array.n_buffers as usize);
    let validity = buffers.first().copied().unwrap_or(std::ptr::null()) as *const u8;
    let is_valid = |i: usize| -> bool {
        if validity.is_null() || array.null_count == 0 {
            return true;
        }
        let bit = offset + i;
        (*validity.add(bit / 8) >> (bit % 8)) & 1 == 1
    };
    if let Some(&bad) = pick.and_then(|p| p.iter().find(|&&j| j as usize >= len)) {
        return Err(format!("order holds {bad}, out of range for {len} images"));
    }
    let all: Vec<u64>;
    let rows: &[u64] = match pick {
        Some(p) => p,
        None => {
            all = (0..len as u64).collect();
            &all
        }
    };
    out.reserve(rows.len());
    match format.as_str() {
        "z" | "u" | "Z" | "U" => {
            if buffers.len() < 3 {
                return Err(format!("Arrow binary array with {} buffers", buffers.len()));
            }
            let data = buffers[2] as *const u8;
            let large = format == "Z" || format == "U";
            let bound = |i: usize| -> usize {
                if large {
                    *(buffers[1] as *const i64).add(offset + i) as usize
                } else {
                    *(buffers[1] as *const i32).add(offset + i) as usize
                }
            };
            for &i in rows {
                let i = i as usize;
                if !is_valid(i) {
                    out.push(None);
                    continue;
                }
                let (start, end) = (bound(i), bound(i + 1));
                out.push(Some(if end > start { std::slice::from_raw_parts(data.add(start), end - start) } else { &[] }));
            }
        }
        "vz" | "vu" => {
            // Binary view: 16-byte views, inline up to 12 bytes, else (buffer, offset).
            let views = buffers[1] as *const u8;
            for &i in rows {
                let i = i as usize;
                if !is_valid(i) {
                    out.push(None);
                    continue;
                }
                let view = views.add((offset + i) * 16);
                let size = (view as *const i32).read_unaligned() as usize;
                if size <= 12 {
                    out.push(Some(std::slice::from_raw_parts(view.add(4), size)));
                } else {
                    let index = (view.add(8) as *const i32).read_unaligned() as usize;
                    let start = (view.add(12) as *const i32).read_unaligned() as usize;
                    let data = buffers[2 + index] as *const u8;
                    out.push(Some(std::slice::from_raw_parts(data.add(start), size)));
                }
            }
        }
        other => {
            return Err(format!(
                "expected an Arrow binary or large_binary array of encoded images, got Arrow format '{other}'"
            ))
        }
    }
    Ok(())
}

/// Binary views (Arrow's 16-byte layout as four little-endian i32: length, then the
/// first 4 bytes and buffer index and offset, or up to 12 bytes inline) of the values of
/// a Lance full-zip page: `data` holds each value's length (u32, little-endian) then its
/// bytes, and value i's length prefix starts at `starts[i]` (`starts` has one entry more,
/// the end). Views address `data` through buffers that start every `window` bytes.
/// None when a length prefix disagrees with `starts`, or `starts` is not ascending by at
/// least 4 within `data`: the caller then reads the column through Lance.
pub fn full_zip_views(data: &[u8], starts: &[i64], window: u64) -> Option<Vec<[i32; 4]>> {
    let n = starts.len().checked_sub(1)?;
    if window == 0 || window > i32::MAX as u64 + 1 {
        return None;
    }
    let mut views = Vec::with_capacity(n);
    for pair in starts.windows(2) {
        let (at, end) = (u64::try_from(pair[0]).ok()?, u64::try_from(pair[1]).ok()?);
        if end < at.checked_add(4)? || end > data.len() as u64 {
            return None;
        }
        let (at, end) = (at as usize, end as usize);
        let len = end - at - 4;
        let prefix = u32::from_le_bytes(data[at..at + 4].try_into().ok()?);
        if prefix as usize != len || len > i32::MAX as usize {
            return None;
        }
        let value = &data[at + 4..end];
        let mut view = [len as i32, 0, 0, 0];
        if len <= 12 {
            let mut inline = [0u8; 12];
            inline[..len].copy_from_slice(value);
            for (k, word) in inline.chunks_exact(4).enumerate() {
                view[1 + k] = i32::from_le_bytes(word.try_into().ok()?);
            }
        } else {
            let begin = (at + 4) as u64;
            view[1] = i32::from_le_bytes(value[..4].try_into().ok()?);
            view[2] = (begin / window) as i32;
            view[3] = (begin % window) as i32;
        }
        views.push(view);
    }
    Some(views)
}

#[cfg(test)]
mod tests {
    use super::full_zip_views;

    fn page(values: &[&[u8]]) -> (Vec<u8>, Vec<i64>) {
        let (mut data, mut starts) = (Vec::new(), vec![0i64]);
        for v in values {
            data.extend_from_slice(&(v.len() as u32).to_le_bytes());
            data.extend_from_slice(v);
            starts.push(data.len() as i64);
        }
        (data, starts)
    }

    #[test]
    fn inline_and_addressed_values() {
        let long = b"0123456789abcdef";
        let (data, starts) = page(&[b"ab", long, b""]);
        let views = full_zip_views(&data, &starts, 8).unwrap();
        assert_eq!(views[0], [2, i32::from_le_bytes(*b"ab\0\0"), 0, 0]);
        // The long value starts at byte 10: buffer 1 (of 8-byte windows), offset 2.
        assert_eq!(views[1], [16, i32::from_le_bytes(*b"0123"), 1, 2]);
        assert_eq!(views[2], [0, 0, 0, 0]);
    }

    #[test]
    fn a_prefix_that_disagrees_is_refused() {
        let (mut data, starts) = page(&[b"abc", b"defgh"]);
        data[7] = 9; // the second value's length prefix
        assert!(full_zip_views(&data, &starts, 1 << 30).is_none());
        let (data, mut starts) = page(&[b"abc"]);
        starts[1] += 1; // past the data
        assert!(full_zip_views(&data, &starts, 1 << 30).is_none());
        assert!(full_zip_views(&data, &[], 1 << 30).is_none());
    }
}
