import Dispatch
import Synchronization
import Testing
@testable import TrellisStore
import TrellisSystem

#if canImport(Glibc)
import Glibc
import TrellisTestSupport
#endif

@Suite("The blocking pool and wake-ups", .onBlockingPool)
struct BlockingTests {
    /// A connected pair of UNIX stream sockets (raw: the caller adopts both).
    static func socketPair() -> [Int32] {
        var fds: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        return fds
    }

    @Test("blocked jobs never wait for each other: the pool grows past the cores")
    func poolGrows() async throws {
        // Each job blocks until all eight are running at once: a fixed pool of two (the
        // machine's cores) would deadlock, so the bounded wait would fail instead.
        let jobs = 8
        final class Barrier: Sendable {
            let arrived = Atomic<Int>(0)
            let allThere = DispatchSemaphore(value: 0)
        }
        let barrier = Barrier()
        let outcomes = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<jobs {
                group.addTask {
                    await Blocking.run { () -> Bool in
                        if barrier.arrived.add(1, ordering: .relaxed).newValue == jobs {
                            for _ in 0..<jobs { barrier.allThere.signal() }
                        }
                        return barrier.allThere.wait(timeout: .now() + .seconds(60)) == .success
                    }
                }
            }
            var all: [Bool] = []
            for try await ok in group { all.append(ok) }
            return all
        }
        #expect(outcomes == Array(repeating: true, count: jobs))
    }

    @Test("a job's captures are released outside the pool's lock: a deinit may use the pool", .timeLimit(.minutes(1)))
    func capturesReleasedOutsideTheLock() async throws {
        /// Its deinit runs more blocking work and waits for it (as a data plane's deinit
        /// waits for its helper process): under the pool's lock that would deadlock.
        final class Holder: Sendable {
            let done = Atomic<Int>(0)
            let counter: Counter
            init(_ counter: Counter) { self.counter = counter }
            deinit {
                let finished = DispatchSemaphore(value: 0)
                Task.detached { await Blocking.run { finished.signal() } }
                if finished.wait(timeout: .now() + .seconds(30)) == .success { counter.value.add(1, ordering: .relaxed) }
            }
        }
        final class Counter: Sendable { let value = Atomic<Int>(0) }
        let counter = Counter()
        // Enough jobs for the queue to be compacted several times.
        for _ in 0..<300 {
            let holder = Holder(counter)
            await Blocking.run { _ = holder.done.load(ordering: .relaxed) }
        }
        // The last holders' deinits finish on pool threads shortly after their jobs.
        let deadline = ContinuousClock.now + .seconds(30)
        while counter.value.load(ordering: .relaxed) < 300 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(counter.value.load(ordering: .relaxed) == 300)
    }

    @Test("a wake-up ends on signal, on the watched peer hanging up, or at its timeout — not on pending bytes")
    func wakeupEndings() throws {
        let w = try Wakeup()
        w.signal()
        #expect(w.wait() == .signalled)
        #expect(w.wait(timeout: .milliseconds(50)) == .timedOut)  // the signal was consumed
        let pair = Self.socketPair()
        let mine = OwnedFD(adopting: pair[0])
        let peer = OwnedFD(adopting: pair[1])
        try peer.descriptor.writeAll([1, 2, 3])
        #expect(w.wait(watching: mine.descriptor, timeout: .milliseconds(100)) == .timedOut)
        _ = consume peer  // closed: the client left
        #expect(w.wait(watching: mine.descriptor) == .hangUp)
    }

    @Test("a parked wait ends when its client hangs up, with no poll interval to sit out")
    func parkedWaitEndsOnHangUp() async throws {
        let store = try ObjectStore(capacity: 1 << 20)
        let pair = Self.socketPair()
        let mine = OwnedFD(adopting: pair[0])
        let client = mine.descriptor
        let box = FDHandOff(OwnedFD(adopting: pair[1]))
        // A poll interval far beyond the test: only watching the socket can end the wait.
        async let waited = Blocking.run {
            store.wait(for: [.name("never")], watching: client, pollMilliseconds: 600_000, cancelled: { false }) {
                store.getName("never")
            }
        }
        while store.parkedWaiters < 1 { try await Task.sleep(for: .milliseconds(5)) }
        _ = box.take()  // the client goes away
        #expect(await waited == nil)
        #expect(store.parkedWaiters == 0)
        _ = mine
    }
}
