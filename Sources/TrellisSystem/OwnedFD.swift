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

    /// The descriptor, borrowed for I/O (it must not outlive this owner).
    public var descriptor: Descriptor { Descriptor(raw) }

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

/// Hands an ``OwnedFD`` to another thread: whoever takes it owns it; if nobody does (the
/// thread never started), it closes with the box.
public final class FDHandOff: @unchecked Sendable {
    // Sendable: the Mutex-free handoff is taken exactly once, by the one thread given the box.
    private var fd: OwnedFD?

    public init(_ fd: consuming OwnedFD) { self.fd = consume fd }

    public func take() -> OwnedFD? {
        let taken = fd.take()
        return taken
    }
}
