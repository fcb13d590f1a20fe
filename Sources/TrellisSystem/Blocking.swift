import CTrellisShim
import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The one place where blocking work meets Swift concurrency, both ways.
///
/// - ``run(_:)``: async code that must block (a `waitpid`, a blocking client call, a
///   read from a helper process) hands the work to the blocking pool: OS threads of
///   their own, reused, one more started whenever all are busy (a blocked call never
///   waits for another), each ending after 30 s idle. The cooperative pool is never blocked.
/// - ``wait(timeout:_:)``: a thread that may block (a daemon connection thread) runs async
///   work and waits for its result, bounded.
///
/// The daemon's connection threads are not in the pool: each serves one client for
/// the life of its connection (see docs/ARCHITECTURE.md).
public enum Blocking {
    /// Runs `body` on a pool thread and returns its result.
    public static func run<T: Sendable, E: Error>(_ body: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
        let result: Result<T, E> = await withCheckedContinuation { continuation in
            pool.submit {
                continuation.resume(returning: Result { () throws(E) -> T in try body() })
            }
        }
        return try result.get()
    }

    /// Runs async `body` from a thread that may block and waits for it: its result, or
    /// nil if it did not finish within `timeout` (it is cancelled then).
    public static func wait<T: Sendable>(
        timeout: Duration, _ body: @escaping @Sendable () async throws -> T
    ) -> Result<T, any Error>? {
        let result = Mutex<Result<T, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let task = Task {
            let r: Result<T, any Error>
            do { r = .success(try await body()) } catch { r = .failure(error) }
            result.withLock { $0 = r }
            done.signal()
        }
        let (s, atto) = timeout.components
        let nanos = max(0, s) * 1_000_000_000 + atto / 1_000_000_000
        if done.wait(timeout: .now() + .nanoseconds(Int(min(nanos, Int64(Int.max))))) == .timedOut {
            task.cancel()
            return nil
        }
        return result.withLock { $0 }
    }

    /// A task executor on the blocking pool, for async code whose synchronous stretches may
    /// block for long (a test that drives a daemon over blocking sockets): inside
    /// `withTaskExecutorPreference(Blocking.executor) { … }` its jobs, and those of the
    /// tasks it starts, run on pool threads, which grow as they block, so the cooperative
    /// pool (one thread per core) is never the one held. Its threads are shared with ``run(_:)``.
    public static let executor = BlockingExecutor()

    static let pool = BlockingPool(idleSeconds: 30)
}

/// See ``Blocking/executor``.
public final class BlockingExecutor: TaskExecutor {
    fileprivate init() {}

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        Blocking.pool.submit { job.runSynchronously(on: executor) }
    }
}

/// Threads for blocking work (see ``Blocking``). Invariant: the workers waiting on
/// `ready` are `idle` (free to take a job) plus the signals sent but not yet taken.
final class BlockingPool: Sendable {
    typealias Job = @Sendable () -> Void
    private struct State {
        /// Queued jobs from `head` on; a taken slot is emptied at once, so that a job's
        /// closure (and whatever it captured, whose deinit may block) is released by the
        /// worker that ran it, never under this lock.
        var jobs: [Job?] = []
        var head = 0
        var idle = 0
        var threads = 0
    }
    private let state = Mutex(State())
    private let ready = DispatchSemaphore(value: 0)
    private let idleSeconds: Int

    init(idleSeconds: Int) { self.idleSeconds = idleSeconds }

    /// Threads alive (for tests).
    var threadCount: Int { state.withLock { $0.threads } }

    func submit(_ job: @escaping Job) {
        let startThread = state.withLock { s -> Bool in
            s.jobs.append(job)
            if s.idle > 0 {
                s.idle -= 1
                return false
            }
            s.threads += 1
            return true
        }
        guard startThread else {
            ready.signal()
            return
        }
        do {
            // A main thread's stack (8 MiB, reserved, touched only as used): a pool thread runs
            // whatever async code prefers ``Blocking/executor``, not only short blocking calls.
            try spawnThread(name: "trellis-blocking", stackSize: 8 << 20) { [self] in work() }
        } catch {
            // No thread to be had: run it here rather than never.
            state.withLock { $0.threads -= 1 }
            take()?()
        }
    }

    private func take() -> Job? {
        state.withLock { s -> Job? in
            guard s.head < s.jobs.count else { return nil }
            let job = s.jobs[s.head]
            s.jobs[s.head] = nil
            s.head += 1
            if s.head > 64 && s.head * 2 > s.jobs.count {
                s.jobs.removeFirst(s.head)
                s.head = 0
            }
            return job
        }
    }

    private func work() {
        while true {
            if let job = take() {
                job()
                continue
            }
            state.withLock { $0.idle += 1 }
            if ready.wait(timeout: .now() + .seconds(idleSeconds)) == .success { continue }
            // Timed out: leave if an idle slot is still ours; otherwise a submitter has just
            // claimed it and its signal is on the way: take it and serve.
            let leave = state.withLock { s -> Bool in
                guard s.idle > 0 else { return false }
                s.idle -= 1
                s.threads -= 1
                return true
            }
            if leave { return }
            ready.wait()
        }
    }
}

/// A thread parked until it is woken or its client hangs up: an eventfd and, optionally,
/// the client's socket, in one `poll` with no timeout — no periodic wake-ups.
public final class Wakeup: Sendable {
    private let event: OwnedFD

    public init() throws(SystemError) {
        let fd = trellis_eventfd()
        guard fd >= 0 else { throw SystemError("eventfd") }
        event = OwnedFD(adopting: fd)
    }

    /// Wakes the parked thread (or the next one to park, if none is).
    public func signal() {
        var one: UInt64 = 1
        _ = Glibc.write(event.raw, &one, 8)
    }

    /// How a park ended.
    public enum Ending: Sendable, Equatable {
        case signalled
        /// The watched socket's peer hung up (or the socket failed).
        case hangUp
        case timedOut
    }

    /// Parks until ``signal()``, the peer of `socket` hanging up (pending bytes do not
    /// count), or `timeout` (nil: none).
    public func wait(watching socket: Descriptor? = nil, timeout: Duration? = nil) -> Ending {
        var fds = [pollfd(fd: event.raw, events: Int16(POLLIN), revents: 0)]
        if let socket { fds.append(pollfd(fd: socket.raw, events: trellis_pollrdhup, revents: 0)) }
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while true {
            var ms: Int32 = -1
            if let deadline {
                let left = ContinuousClock.now.duration(to: deadline)
                if left <= .zero { return .timedOut }
                let (s, atto) = left.components
                ms = Int32(clamping: s * 1000 + atto / 1_000_000_000_000_000 + 1)
            }
            let rc = poll(&fds, nfds_t(fds.count), ms)
            if rc < 0 {
                if errno == EINTR { continue }
                return .hangUp  // cannot watch: treat as gone rather than park forever
            }
            if rc == 0 { continue }  // the deadline check above ends it
            if fds[0].revents & Int16(POLLIN) != 0 {
                var count: UInt64 = 0
                _ = Glibc.read(event.raw, &count, 8)
                return .signalled
            }
            if fds.count > 1, fds[1].revents & (trellis_pollrdhup | Int16(POLLHUP | POLLERR | POLLNVAL)) != 0 { return .hangUp }
        }
    }
}
