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

/// The blobs of rows `order[i]` of the arrays' rows end to end (a chunked array's), in
/// that order; only the rows picked are looked at. `Err` says why: an index out of
/// range (`OutOfRange`), or an array that is not a binary one.
///
/// # Safety
/// Each pair must be valid, unreleased C Data Interface structs whose buffers outlive `'a`.
pub unsafe fn pick<'a>(arrays: &[(*const ArrowSchema, *const ArrowArray)], order: &[u64]) -> Result<Vec<Option<&'a [u8]>>, PickError> {
    let other = PickError::Other;
    if let [(s, a)] = arrays[..] {
        let mut blobs = Vec::new();
        binary_values(s, a, &mut blobs, Some(order)).map_err(|e| if e.starts_with("order holds") { PickError::OutOfRange(e) } else { other(e) })?;
        return Ok(blobs);
    }
    // starts[c]: the first row of chunk c, counted over all chunks.
    let mut starts = Vec::with_capacity(arrays.len());
    let mut total = 0u64;
    for &(_, a) in arrays {
        starts.push(total);
        total += array_length(a).map_err(other)? as u64;
    }
    // Each chunk's rows picked (its own indices) and the output rows they go to.
    let mut picks: Vec<(Vec<u64>, Vec<usize>)> = vec![(Vec::new(), Vec::new()); arrays.len()];
    for (k, &j) in order.iter().enumerate() {
        if j >= total {
            return Err(PickError::OutOfRange(format!("order holds {j}, out of range for {total} images")));
        }
        let c = starts.partition_point(|&s| s <= j) - 1;
        picks[c].0.push(j - starts[c]);
        picks[c].1.push(k);
    }
    let mut blobs = vec![None; order.len()];
    let mut got = Vec::new();
    for (&(s, a), (rows, to)) in arrays.iter().zip(&picks) {
        if rows.is_empty() {
            continue;
        }
        got.clear();
        binary_values(s, a, &mut got, Some(rows)).map_err(other)?;
        for (&k, &blob) in to.iter().zip(&got) {
            blobs[k] = blob;
        }
    }
    Ok(blobs)
}

/// Why `pick` failed.
#[derive(Debug)]
pub enum PickError {
    OutOfRange(String),
    Other(String),
}
