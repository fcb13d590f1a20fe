#if canImport(Glibc)
import Glibc
#endif

/// Owns one file descriptor and closes it exactly once, when it goes away.
///
/// Non-copyable, so a descriptor has a single owner; hand it on with `consume`,
/// or give up ownership with ``release()``.
public struct OwnedFD: ~Copyable, Sendable {
    public let raw: Int32

    public init(adopting raw: Int32) {
        self.raw = raw
    }

    /// Gives up ownership without closing and returns the raw descriptor.
    public consuming func release() -> Int32 {
        let fd = raw
        discard self
        return fd
    }

    deinit {
        if raw >= 0 { _ = Glibc.close(raw) }
    }
}
