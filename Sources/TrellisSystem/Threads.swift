import CTrellisShim
#if canImport(Glibc)
import Glibc
#endif

/// This host's identifier as the daemon reports it (`hostid` in `cluster_meta` and in
/// the cluster metadata): `gethostid()`'s 32 bits, unsigned. The one place it is computed.
public func hostIdentifier() -> UInt64 {
    UInt64(UInt32(truncatingIfNeeded: gethostid()))
}

/// CLOCK_MONOTONIC in nanoseconds.
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// How many times the calling thread has given up the CPU by sleeping
/// (`getrusage(RUSAGE_THREAD)`'s `ru_nvcsw`); nil if the kernel does not say.
public func currentThreadVoluntarySwitches() -> Int? {
    let n = trellis_thread_voluntary_switches()
    return n >= 0 ? n : nil
}

/// Gives the calling thread the lowest CPU priority (nice 19).
public func lowerCurrentThreadPriority() {
    trellis_lower_thread_priority()
}

/// Starts a detached OS thread running `body`.
///
/// The daemon serves each connection on its own thread with blocking I/O: the
/// protocol is strictly request → reply per connection, replies carry descriptors
/// via `sendmsg`, and `get_name(wait)` parks a connection; a thread per connection
/// keeps all of that straight-line code and costs no hops between threads.
public func spawnThread(name: String, stackSize: Int = 512 << 10, _ body: @escaping @Sendable () -> Void) throws(SystemError) {
    final class Box: @unchecked Sendable {
        // Sendable: handed to exactly one new thread, which takes it back once.
        let body: @Sendable () -> Void
        let name: String
        init(_ body: @escaping @Sendable () -> Void, _ name: String) {
            self.body = body
            self.name = name
        }
    }
    let box = Unmanaged.passRetained(Box(body, name)).toOpaque()
    var attr = pthread_attr_t()
    pthread_attr_init(&attr)
    defer { pthread_attr_destroy(&attr) }
    pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
    pthread_attr_setstacksize(&attr, stackSize)
    var tid = pthread_t()
    let rc = pthread_create(&tid, &attr, { raw in
        let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
        trellis_set_thread_name(box.name)
        box.body()
        return nil
    }, box)
    if rc != 0 {
        Unmanaged<Box>.fromOpaque(box).release()
        throw SystemError("pthread_create", errno: rc)
    }
}
