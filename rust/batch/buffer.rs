//! A batch's output buffer: the caller's, or one allocated for the batch whose slots
//! each worker zeroes as it takes them.

use std::mem::MaybeUninit;

use super::{BatchError, Outcome};

/// Where the pixels go: a caller's buffer of `rows` slots of `height` x `width`, or a
/// new buffer sized by the batch.
pub enum Target<'a> {
    Caller { buf: &'a mut [u8], rows: usize, height: u32, width: u32, channels: usize },
    Owned,
}

/// A batch's output: the caller's buffer (checked against `rows` x `height` x `width`),
/// or one allocated for the batch. An allocated buffer is not zeroed as a whole on the
/// calling thread, where a batch of 256 CIFAR-10 rows spent a fifth of that thread's
/// time in memset while the workers waited: each slot is zeroed by the worker that
/// takes it, just before its decode writes it (see `Slot`).
pub(super) struct Buffer<'a> {
    caller: Option<&'a mut [u8]>,
    owned: Vec<u8>,
    len: usize,
    pub slot_len: usize,
    /// Whether `slots()` handed out every slot of `owned` (each is written before it
    /// is dropped, so `owned[..len]` is then initialized).
    handed_out: bool,
}

impl<'a> Buffer<'a> {
    pub(super) fn new(target: Target<'a>, rows: usize, height: u32, width: u32, ch: usize) -> Result<Self, BatchError> {
        let slot_len = height as usize * width as usize * ch;
        let len = rows * slot_len;
        match target {
            Target::Caller { buf, rows: have, height: th, width: tw, channels: tc } => {
                if (th, tw, tc) != (height, width, ch) || have < rows {
                    return Err(BatchError::Invalid(format!(
                        "out has shape ({have}, {th}, {tw}, {tc}) but this batch needs ({rows}, {height}, {width}, {ch}) or more rows"
                    )));
                }
                Ok(Buffer { caller: Some(&mut buf[..len]), owned: Vec::new(), len, slot_len, handed_out: true })
            }
            Target::Owned => Ok(Buffer { caller: None, owned: Vec::with_capacity(len), len, slot_len, handed_out: false }),
        }
    }

    /// One slot per row, in row order (none when rows are zero bytes).
    pub(super) fn slots(&mut self) -> Vec<Slot<'_>> {
        if self.slot_len == 0 {
            return Vec::new();
        }
        let zero = self.caller.is_none();
        let mem: &mut [MaybeUninit<u8>] = match &mut self.caller {
            // SAFETY: the same bytes seen as possibly uninitialized; only initialized
            // values (zeros, pixels) are ever written through it.
            Some(buf) => unsafe { &mut *(&mut **buf as *mut [u8] as *mut [MaybeUninit<u8>]) },
            None => &mut self.owned.spare_capacity_mut()[..self.len],
        };
        self.handed_out = true;
        mem.chunks_mut(self.slot_len).map(|mem| Slot { mem, zero }).collect()
    }

    /// The whole buffer, every slot written: after `slots()` (whose slots are all gone
    /// by now, as they borrow `self`), or zeroed here.
    pub(super) fn filled(&mut self) -> &mut [u8] {
        if let Some(buf) = &mut self.caller {
            return buf;
        }
        if self.owned.len() < self.len {
            if self.handed_out {
                // SAFETY: every slot was written (zeroed or decoded) before it was
                // consumed or dropped, and the slots cover `owned[..len]`.
                unsafe { self.owned.set_len(self.len) };
            } else {
                self.owned.resize(self.len, 0);
            }
        }
        &mut self.owned[..]
    }

    /// The allocated pixels, cut to the first `kept` rows (None for a caller's buffer).
    fn into_pixels(mut self, kept: usize) -> Option<Vec<u8>> {
        if self.caller.is_some() {
            return None;
        }
        self.filled();
        self.owned.truncate(kept * self.slot_len);
        Some(self.owned)
    }
}

/// One row's slot of a `Buffer`. An allocated slot is zeroed when its worker takes it
/// (`bytes`), or when it is dropped untaken, so no byte of the buffer is ever read
/// unwritten: a failed decode may have written part of its slot, and a row of another
/// size none of it.
pub(super) struct Slot<'a> {
    mem: &'a mut [MaybeUninit<u8>],
    zero: bool,
}

impl<'a> Slot<'a> {
    /// No slot: for rows decoded into images of their own (`decode_each`, targets).
    pub(super) fn none() -> Self {
        Slot { mem: &mut [], zero: false }
    }

    pub(super) fn bytes(mut self) -> &'a mut [u8] {
        let mem = std::mem::take(&mut self.mem);
        if self.zero {
            // SAFETY: `mem` is valid for writes of its length.
            unsafe { std::ptr::write_bytes(mem.as_mut_ptr(), 0, mem.len()) };
        }
        // SAFETY: every byte is initialized: the caller's were, an allocated slot's
        // were just zeroed.
        unsafe { &mut *(mem as *mut [MaybeUninit<u8>] as *mut [u8]) }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.zero {
            // SAFETY: as in `bytes`; empty once `bytes` took it.
            unsafe { std::ptr::write_bytes(self.mem.as_mut_ptr(), 0, self.mem.len()) };
        }
    }
}

/// Hands a buffer the batch allocated over to the outcome, cut to the kept rows.
pub(super) fn with_pixels(mut out: Outcome, buf: Buffer) -> Outcome {
    out.pixels = buf.into_pixels(out.kept.len());
    out
}

