//! The scheduling priority of the threads that answer requests: below the threads that keep the
//! node's standing (lease renewals, the tailer, the writer, the revoker's confirmations).
//!
//! On a host whose CPUs are all busy answering requests, a node on PostgreSQL could not renew
//! its lease in time: the renewal's thread waited for a CPU behind the request handlers, the
//! lease ran out, and the node answered 503 to allows it could have vouched for
//! (docs/performance.md, "All three nodes loaded at once"). The request threads (the runtime's
//! workers and its blocking pool) run a few nice levels lower, so under load the renewal, and the
//! writes and revocations it vouches for, get the CPU first; on an idle host nothing changes.
//! Raising niceness needs no privilege; it is per thread on Linux, and left alone elsewhere.

/// How many nice levels below the node's other threads the request threads run.
pub const REQUEST_THREADS_NICER_BY: i32 = 5;

/// The niceness the node's other threads run at: the thread's that called
/// [`remember_base_priority`].
static BASE: std::sync::OnceLock<i32> = std::sync::OnceLock::new();

/// Records the calling thread's niceness as the node's, before any request thread starts. Threads
/// inherit their creator's niceness and an unprivileged thread cannot lower its own, so the
/// threads that keep the node's standing must be started from a thread at this priority (the
/// start-up thread of `App::open`, started from the main thread), never from a request thread.
pub fn remember_base_priority() {
    #[cfg(target_os = "linux")]
    if let Ok(nice) = rustix::process::getpriority_process(Some(rustix::thread::gettid())) {
        let _ = BASE.set(nice);
    }
}

/// Sets the calling thread [`REQUEST_THREADS_NICER_BY`] levels below the base priority: for the
/// runtime's `on_thread_start`. Without a base, or if it fails, the thread is left as it was.
pub fn lower_this_request_thread() {
    #[cfg(target_os = "linux")]
    if let Some(base) = BASE.get() {
        let thread = Some(rustix::thread::gettid());
        if let Err(e) = rustix::process::setpriority_process(thread, base + REQUEST_THREADS_NICER_BY) {
            tracing::debug!(error = %e, "could not lower a request thread's priority");
        }
    }
}

/// Whether the calling thread runs below the base priority (a request thread, or one started by
/// a request thread).
pub fn lowered() -> bool {
    #[cfg(target_os = "linux")]
    if let (Some(base), Ok(nice)) = (BASE.get(), rustix::process::getpriority_process(Some(rustix::thread::gettid()))) {
        return nice > *base;
    }
    false
}

#[cfg(all(test, target_os = "linux"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_request_thread_runs_nicer_than_the_base_and_its_children_are_not_lowered_twice() {
        remember_base_priority();
        let base = *BASE.get().unwrap();
        let (lowered_nice, child_nice, lowered_says) = std::thread::spawn(|| {
            lower_this_request_thread();
            let own = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
            // A thread started by a request thread inherits its niceness; lowering it again
            // sets the same level, not a lower one.
            let child = std::thread::spawn(|| {
                lower_this_request_thread();
                rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
            })
            .join()
            .unwrap();
            (own, child, lowered())
        })
        .join()
        .unwrap();
        // Niceness tops out at 19.
        let expected = (base + REQUEST_THREADS_NICER_BY).min(19);
        assert_eq!((lowered_nice, child_nice), (expected, expected));
        assert_eq!(lowered_says, expected > base);
        let unchanged = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        assert_eq!(unchanged, base, "only the calling thread is lowered");
        assert!(!lowered());
    }
}
