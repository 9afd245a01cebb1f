//! Keeping resident memory close to what the state needs.
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

/// Fixes the allocator's mmap threshold; call once at start.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is safe to
    // call at any time, from any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
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
