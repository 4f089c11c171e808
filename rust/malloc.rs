//! glibc malloc settings for a process that frees and re-allocates buffers of several
//! megabytes per batch (Lance takes, decoded batches).
//!
//! By default glibc gives such buffers back to the kernel when they are freed (mmap
//! chunks are unmapped, arena tops are trimmed), so the next batch's buffer of the same
//! size is faulted in and zeroed page by page again: on the ImageNet sample that was
//! 550,000 page faults and half the CPU time of an epoch's takes. Keeping freed memory
//! for reuse removes them.

/// Serves allocations up to `mmap_threshold` bytes from malloc's arenas and keeps up
/// to `trim_threshold` bytes of freed memory at an arena's top instead of returning
/// it. Returns false where the C library is not glibc or refused a value.
pub fn keep_freed_memory(mmap_threshold: usize, trim_threshold: usize) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let clamp = |v: usize| v.min(i32::MAX as usize) as libc::c_int;
        // SAFETY: mallopt only records the parameters; it is safe to call at any time.
        let (mmap, trim) = unsafe {
            (libc::mallopt(libc::M_MMAP_THRESHOLD, clamp(mmap_threshold)), libc::mallopt(libc::M_TRIM_THRESHOLD, clamp(trim_threshold)))
        };
        mmap == 1 && trim == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = (mmap_threshold, trim_threshold);
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_settings() {
        assert!(super::keep_freed_memory(32 << 20, 128 << 20));
    }
}
