import Synchronization

/// A ``DataPlane`` that keeps object sizes in memory: for tests, dry runs and the examples of
/// this module's documentation. Nothing is stored but names and byte counts.
public final class InMemoryDataPlane: DataPlane {
    /// A recorded operation, for assertions.
    public enum Operation: Sendable, Equatable {
        /// An object was moved between replicas.
        case move(name: String, from: Int, to: Int, bytes: Int)
        /// Names were deleted on a replica.
        case delete(names: [String], replica: Int)
    }

    private struct State {
        var objects: [Int: [String: Int]] = [:]
        var log: [Operation] = []
        var failMoves = false
    }

    private let state = Mutex(State())

    /// Creates an empty store.
    public init() {}

    /// Puts (or replaces) an object of `bytes` bytes on replica `replica`.
    public func put(_ name: String, bytes: Int, on replica: Int) {
        state.withLock { $0.objects[replica, default: [:]][name] = bytes }
    }

    /// Objects on a replica (store name → bytes).
    public func objects(on replica: Int) -> [String: Int] {
        state.withLock { $0.objects[replica] ?? [:] }
    }

    /// Every move and delete so far.
    public var operations: [Operation] { state.withLock { $0.log } }

    /// Makes every later move fail (to test failure paths).
    public func failMoves(_ on: Bool) { state.withLock { $0.failMoves = on } }

    /// Sizes of the named objects present on the replica.
    public func residentBytes(of names: [String], on replica: Replica) async throws -> [String: Int] {
        state.withLock { s in
            var out: [String: Int] = [:]
            let here = s.objects[replica.index] ?? [:]
            for n in names { if let b = here[n] { out[n] = b } }
            return out
        }
    }

    /// Copies the size entry from one replica to the other.
    public func move(_ name: String, from: Replica, to: Replica) async throws -> Int {
        try state.withLock { s in
            if s.failMoves { throw DataPlaneError("move of '\(name)' failed (injected)") }
            guard let b = s.objects[from.index]?[name] else {
                throw DataPlaneError("'\(name)' is not on replica \(from.index)")
            }
            s.objects[to.index, default: [:]][name] = b
            s.log.append(.move(name: name, from: from.index, to: to.index, bytes: b))
            return b
        }
    }

    /// Removes the names from the replica.
    public func delete(_ names: [String], on replica: Replica) async throws {
        state.withLock { s in
            for n in names { s.objects[replica.index]?[n] = nil }
            s.log.append(.delete(names: names, replica: replica.index))
        }
    }

    /// The bytes of the objects on the replica (no arena limit: 0).
    public func memory(on replica: Replica) async throws -> ReplicaMemory? {
        state.withLock { s in
            ReplicaMemory(replica: replica.index, usedBytes: (s.objects[replica.index] ?? [:]).values.reduce(0, +), limitBytes: 0)
        }
    }
}
