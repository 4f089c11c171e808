//! A cache of whole decoded images, keyed by a row's position, for datasets of small
//! images read for many epochs. A 32x32 JPEG costs ~10 us to decode and ~2 us to crop
//! and resize from its pixels, so after the epoch that fills it an epoch mostly skips
//! the JPEG decoder (its Huffman decoding, IDCT, upsampling and per-image set-up).
//!
//! An entry is filled once (the first decode of its row) and never changes, so the
//! decode threads read entries without a lock; the byte budget is counted with an
//! atomic, and a row over it is decoded every time instead of cached.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::codec::{Channels, Header};

#[derive(Debug)]
pub struct Entry {
    /// The row's header, detached from the decoder that read it (see `Header::detached`).
    pub header: Header,
    /// The whole image at its own size, `header.width` x `header.height` x channels.
    pub pixels: Box<[u8]>,
}

pub struct PixelCache {
    entries: Vec<OnceLock<Box<Entry>>>,
    pub channels: Channels,
    max_bytes: usize,
    used: AtomicUsize,
    filled: AtomicUsize,
}

impl PixelCache {
    pub fn new(rows: usize, channels: Channels, max_bytes: usize) -> PixelCache {
        PixelCache { entries: (0..rows).map(|_| OnceLock::new()).collect(), channels, max_bytes, used: AtomicUsize::new(0), filled: AtomicUsize::new(0) }
    }

    pub fn rows(&self) -> usize {
        self.entries.len()
    }

    /// Pixel bytes held.
    pub fn bytes(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Rows held.
    pub fn filled(&self) -> usize {
        self.filled.load(Ordering::Relaxed)
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    pub fn get(&self, key: u64) -> Option<&Entry> {
        self.entries.get(usize::try_from(key).ok()?)?.get().map(|b| &**b)
    }

    /// Keeps `pixels` as row `key`'s image where the budget has room (and the key is
    /// in range); otherwise hands them back. A row filled meanwhile by another thread
    /// keeps the first image (both are the same decode).
    pub fn insert(&self, key: u64, header: Header, pixels: Vec<u8>) -> Result<&Entry, Vec<u8>> {
        let Some(cell) = usize::try_from(key).ok().and_then(|k| self.entries.get(k)) else {
            return Err(pixels);
        };
        let n = pixels.len();
        if self.used.fetch_add(n, Ordering::Relaxed) + n > self.max_bytes {
            self.used.fetch_sub(n, Ordering::Relaxed);
            return Err(pixels);
        }
        let mut stored = false;
        let entry = cell.get_or_init(|| {
            stored = true;
            Box::new(Entry { header: header.detached(), pixels: pixels.into_boxed_slice() })
        });
        if stored {
            self.filled.fetch_add(1, Ordering::Relaxed);
        } else {
            self.used.fetch_sub(n, Ordering::Relaxed);
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Format;

    fn header(w: u32, h: u32) -> Header {
        Header { width: w, height: h, format: Format::Png, jpeg: None }
    }

    #[test]
    fn keeps_rows_within_the_budget() {
        let cache = PixelCache::new(4, Channels::Rgb, 100);
        assert!(cache.insert(0, header(2, 2), vec![1; 12]).is_ok());
        assert_eq!(cache.get(0).map(|e| e.pixels.len()), Some(12));
        // 12 + 96 > 100: handed back, nothing counted.
        assert_eq!(cache.insert(1, header(4, 8), vec![2; 96]).unwrap_err().len(), 96);
        assert!(cache.get(1).is_none());
        assert_eq!((cache.bytes(), cache.filled()), (12, 1));
        // Out of range: handed back.
        assert!(cache.insert(9, header(1, 1), vec![0; 3]).is_err());
    }

    #[test]
    fn a_filled_row_keeps_its_first_image() {
        let cache = PixelCache::new(1, Channels::Rgb, 100);
        cache.insert(0, header(1, 1), vec![1, 2, 3]).unwrap();
        let again = cache.insert(0, header(1, 1), vec![4, 5, 6]).unwrap();
        assert_eq!(&*again.pixels, &[1, 2, 3]);
        assert_eq!((cache.bytes(), cache.filled()), (3, 1));
    }
}
