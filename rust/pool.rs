//! lancefeed's own thread pools (never rayon's global one), one per size, created
//! lazily. A forked child (a torch DataLoader worker, say) inherits the pools but
//! not their threads, so it builds new ones and leaks the dead parent's.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rayon::{ThreadPool, ThreadPoolBuilder};

static POOLS: Mutex<Vec<(usize, Arc<ThreadPool>)>> = Mutex::new(Vec::new());
static OWNER_PID: AtomicU32 = AtomicU32::new(0);

/// (pid << 32) | cores, of the process that asked last.
static DEFAULT_THREADS: AtomicU64 = AtomicU64::new(0);

/// The machine's cores (as this process may use them): the default `num_threads`.
/// Read once per process: `available_parallelism` opens and parses the cgroup's files on
/// every call, tens of microseconds on the thread that starts each batch while the
/// workers wait. A forked child reads its own.
pub fn default_threads() -> usize {
    let pid = std::process::id() as u64;
    let cached = DEFAULT_THREADS.load(Ordering::Relaxed);
    if cached >> 32 == pid && cached & 0xffff_ffff != 0 {
        return (cached & 0xffff_ffff) as usize;
    }
    let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(u32::MAX as usize);
    DEFAULT_THREADS.store(pid << 32 | n as u64, Ordering::Relaxed);
    n
}

/// The pool of `threads` workers for this process.
pub fn get(threads: usize) -> Result<Arc<ThreadPool>, String> {
    let pid = std::process::id();
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if OWNER_PID.swap(pid, Ordering::SeqCst) != pid {
        // Dropping a pool whose threads vanished at fork could wait on them forever.
        for (_, dead) in pools.drain(..) {
            std::mem::forget(dead);
        }
    }
    if let Some((_, p)) = pools.iter().find(|(n, _)| *n == threads) {
        return Ok(p.clone());
    }
    let pool = ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("lancefeed-decode-{i}"))
        .build()
        .map_err(|e| format!("could not start {threads} decode threads: {e}"))?;
    let pool = Arc::new(pool);
    pools.push((threads, pool.clone()));
    Ok(pool)
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_threads_are_the_cores() {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        assert_eq!(super::default_threads(), cores);
        assert_eq!(super::default_threads(), cores); // cached
    }

    #[test]
    fn pools_are_reused_per_size() {
        let a = super::get(2).unwrap();
        let b = super::get(2).unwrap();
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        assert_eq!(a.current_num_threads(), 2);
    }
}
