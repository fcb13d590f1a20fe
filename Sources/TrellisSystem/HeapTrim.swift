import CTrellisShim

/// Returns the free pages of the process's heap to the OS (glibc's `malloc_trim(0)`, all
/// arenas): freed memory otherwise stays with the thread arena that freed it.
public func trimHeap() {
    trellis_malloc_trim()
}
