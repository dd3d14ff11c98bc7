//! Process memory housekeeping with glibc's own calls: how many malloc arenas, and handing
//! free heap pages back after a large inventory load. No effect on other C libraries.
//!
//! Owns: the two `libc` calls. Must not touch anything else.

/// Hands the heap's free pages back to the system. Loading and syncing a large inventory
/// allocates several times what stays (rows read back from the store, sets compared); glibc
/// keeps those pages for reuse, so without this a daemon of a million displays would sit at
/// several hundred megabytes it no longer uses.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas and returns free pages; it touches no
    // memory that is in use and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Caps glibc at two malloc arenas. By default every thread that allocates may get its own
/// (up to eight per core), and each keeps the pages it freed: the receipts path allocates on
/// the runtime's workers and the database's threads in turn, which added about 40 MiB to a
/// rotating daemon of a million displays. Two is as many as this daemon's hot threads.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc tunable; called first thing in main, before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
