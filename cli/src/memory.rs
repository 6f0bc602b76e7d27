//! Giving freed memory back to the system, for `weir serve`.
//!
//! glibc keeps memory a process freed for reuse: after a burst of load
//! (`weir bench load`) the server's RSS stayed near its peak although most
//! of it was free. A process-wide allocator policy, so it lives in the
//! binary rather than in the embeddable server.

use std::time::Duration;

/// How often the allocator is asked to return free pages. Trimming walks
/// the heap (milliseconds at a few hundred MB), so not more often.
const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Asks the allocator every [`TRIM_INTERVAL`] to return free memory.
pub fn spawn_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut ticks = tokio::time::interval(TRIM_INTERVAL);
        loop {
            ticks.tick().await;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    let started = std::time::Instant::now();
    // SAFETY: malloc_trim only releases free memory of glibc's own heaps;
    // it takes no pointers and is thread-safe.
    unsafe { libc::malloc_trim(0) };
    tracing::debug!(elapsed = ?started.elapsed(), "returned free memory to the system");
}
