import Testing
import TrellisSystem

/// Runs a test (or every test of a suite) with ``Blocking/executor`` as its task executor.
///
/// Swift Testing runs test bodies on the cooperative pool, which has one thread per core.
/// A test that blocks — a synchronous client call waiting for a daemon, a `waitpid` — holds
/// one of them; on a 2-core machine two such tests running in parallel leave none for the
/// async work of everyone else (an etcd lease keepalive, the flow runner), which then
/// misses its deadlines. On the blocking pool a blocked test holds a thread of its own.
public struct OnBlockingPool: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        try await withTaskExecutorPreference(Blocking.executor) { try await function() }
    }
}

extension Trait where Self == OnBlockingPool {
    /// See ``OnBlockingPool``.
    public static var onBlockingPool: Self { OnBlockingPool() }
}

extension Task where Failure == any Error {
    /// An unstructured task whose jobs run on the blocking pool. A test's executor
    /// preference passes to its child tasks, not to a `Task { … }` it starts, which would
    /// run on the cooperative pool — behind the CPU-bound tests running in parallel (a lease
    /// keepalive could wait seconds there).
    @discardableResult
    public static func onBlockingPool(_ operation: @escaping @Sendable () async throws -> Success) -> Task<Success, Failure> {
        Task(executorPreference: Blocking.executor, operation: operation)
    }
}
