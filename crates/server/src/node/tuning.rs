//! Tuning of the process: resident memory close to what the state needs,
//! and background work that yields to serving.
//!
//! glibc's malloc raises its mmap threshold each time a large block is
//! freed, so the next snapshot's buffers (tens of MiB) come from the heap
//! and stay resident after they are freed. A fixed threshold keeps large
//! blocks in their own mappings, returned to the kernel on free, and a trim
//! after each snapshot hands back the heap pages the snapshot's smaller
//! allocations left free.

/// Blocks at least this large get their own mapping.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: libc::c_int = 1 << 20;

/// Heaps (arenas) the allocator may keep: enough for each of the
/// process's threads (main, two runtime workers, the driver, the background
/// thread) to have its own. With two, the driver's long-lived store shared
/// a heap with the request buffers the workers allocate and free by the
/// thousand, whose holes kept the leader 10-15 MiB above its followers:
/// after the comparison's put runs the largest member's RSS was 127-128
/// MiB with 2 arenas and 120-123 with 8, and 256 clients ran 27,000
/// against 28,500-29,800 puts/s (docs/BENCHMARKS.md, ninth round).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS_MAX: libc::c_int = 8;

/// Fixes the allocator's mmap threshold and arena count; call once at
/// start.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is safe to
    // call at any time, from any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_ARENA_MAX, ARENAS_MAX);
    }
}

/// Returns free heap memory to the kernel; call after a snapshot.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Lowers the calling thread's CPU priority (nice 10), so that snapshot
/// encoding and segment zero-filling run on what serving leaves over.
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take and return plain integers; on
    // Linux the nice value of a thread id applies to that thread alone.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}
