import AsyncHTTPClient
import Logging

/// ``MetaKV`` on a real etcd through ``EtcdClient``; maps ``EtcdError`` to ``MetaError``.
struct EtcdKV: MetaKV {
    let client: EtcdClient
    let endpointDescription: String

    static func map(_ error: EtcdError) -> MetaError {
        if error.isLeaseNotFound { return .leaseLost }
        return .unavailable(error.description)
    }

    func ping(timeout: Duration) async throws -> String {
        var client = client
        client.requestTimeout = min(timeout, client.requestTimeout)
        do {
            return "etcd " + (try await client.status().version)
        } catch {
            throw Self.map(error)
        }
    }

    func get(_ key: String) async throws -> (entry: KVEntry?, revision: Int64) {
        do {
            let response = try await client.range(key)
            let entry = response.kvs.first.map { KVEntry(key: $0.key, value: $0.value, modRevision: $0.modRevision) }
            return (entry, response.header.revision)
        } catch {
            throw Self.map(error)
        }
    }

    func list(prefix: String) async throws -> (entries: [KVEntry], revision: Int64) {
        do {
            let response = try await client.range(prefix, prefix: true)
            return (response.kvs.map { KVEntry(key: $0.key, value: $0.value, modRevision: $0.modRevision) },
                response.header.revision)
        } catch {
            throw Self.map(error)
        }
    }

    func listPage(prefix: String, from start: String, limit: Int, revision: Int64) async throws
        -> (entries: [KVEntry], revision: Int64, more: Bool)
    {
        do {
            let (response, more) = try await client.rangePage(
                prefix: prefix, from: start, limit: Int64(limit), revision: revision)
            return (response.kvs.map { KVEntry(key: $0.key, value: $0.value, modRevision: $0.modRevision) },
                revision > 0 ? revision : response.header.revision, more)
        } catch {
            throw Self.map(error)
        }
    }

    func listKeys(prefix: String) async throws -> [(key: String, modRevision: Int64)] {
        do {
            return try await client.range(prefix, prefix: true, keysOnly: true).kvs.map { ($0.key, $0.modRevision) }
        } catch {
            throw Self.map(error)
        }
    }

    func put(_ key: String, _ value: String, lease: Int64) async throws {
        do {
            try await client.put(key, value: value, lease: lease)
        } catch {
            throw Self.map(error)
        }
    }

    /// etcd's default limits: 128 operations per transaction (`--max-txn-ops`) and
    /// 1.5 MiB per request; batches stay under both.
    static let maxOpsPerTxn = 128
    static let maxBytesPerTxn = 1 << 20

    func putAll(_ entries: [(key: String, value: String)], lease: Int64, marker: String?) async throws {
        var batch: [EtcdOperation] = []
        var bytes = 0
        let room = Self.maxOpsPerTxn - (marker == nil ? 0 : 1)
        func flush() async throws {
            guard !batch.isEmpty else { return }
            try await commit(batch[...], marker: marker)
            batch.removeAll(keepingCapacity: true)
            bytes = 0
        }
        for (key, value) in entries {
            let size = key.utf8.count + value.utf8.count
            if batch.count == room || (!batch.isEmpty && bytes + size > Self.maxBytesPerTxn) { try await flush() }
            batch.append(.put(key: key, value: value, lease: lease))
            bytes += size
        }
        try await flush()
    }

    /// One transaction (the marker's rewrite last); an etcd configured with lower limits
    /// (`--max-txn-ops`, `--max-request-bytes`) rejects it as too big, and then it goes in
    /// halves. Returns how many keys its deletes removed.
    @discardableResult
    private func commit(_ ops: ArraySlice<EtcdOperation>, marker: String?) async throws -> Int {
        do {
            let all = Array(ops) + (marker.map { [EtcdOperation.put(key: $0, value: "", lease: 0)] } ?? [])
            var deleted = 0
            for case .delete(let n) in try await client.txn(compare: [], success: all).responses { deleted += Int(n) }
            return deleted
        } catch {
            let text = error.description
            guard ops.count > 1, text.contains("too many operations") || text.contains("too large") else {
                throw Self.map(error)
            }
            let middle = ops.startIndex + ops.count / 2
            return try await commit(ops[..<middle], marker: marker) + commit(ops[middle...], marker: marker)
        }
    }

    func delete(_ key: String) async throws -> Bool {
        do {
            return try await client.delete(key) > 0
        } catch {
            throw Self.map(error)
        }
    }

    func delete(_ keys: [String], marker: String) async throws -> Int {
        var seen = Set<String>()  // (a key named twice is deleted once)
        let ops = keys.filter { seen.insert($0).inserted }.map { EtcdOperation.delete(key: $0, prefix: false) }
        guard !ops.isEmpty else { return try await commit([], marker: marker) }
        var deleted = 0
        var start = ops.startIndex
        while start < ops.endIndex {
            let end = min(start + Self.maxOpsPerTxn - 1, ops.endIndex)
            deleted += try await commit(ops[start..<end], marker: marker)
            start = end
        }
        return deleted
    }

    func swap(_ key: String, expectedModRevision: Int64, value: String) async throws -> Bool {
        let condition =
            expectedModRevision == 0
            ? EtcdCompare.absent(key) : EtcdCompare(key: key, .modRevision(expectedModRevision))
        do {
            return try await client.txn(compare: [condition], success: [.put(key: key, value: value, lease: 0)])
                .succeeded
        } catch {
            throw Self.map(error)
        }
    }

    static func epoch(_ header: EtcdResponseHeader) -> String {
        "\(header.clusterID)/\(header.memberID)/\(header.raftTerm)"
    }

    func grantLease(ttlSeconds: Int64) async throws -> (lease: Int64, epoch: String) {
        do {
            let lease = try await client.grantLease(ttl: ttlSeconds)
            return (lease.id, Self.epoch(lease.header))
        } catch {
            throw Self.map(error)
        }
    }

    func keepAlive(_ lease: Int64, timeout: Duration) async throws -> KVKeepAlive {
        var client = client
        client.requestTimeout = min(timeout, client.requestTimeout)
        do {
            let answer = try await client.keepAlive(lease: lease)
            return KVKeepAlive(alive: answer.ttl > 0, epoch: Self.epoch(answer.header))
        } catch {
            throw Self.map(error)
        }
    }

    func revoke(_ lease: Int64) async throws {
        do {
            try await client.revokeLease(lease)
        } catch {
            throw Self.map(error)
        }
    }

    func watch(_ key: String, prefix: Bool, fromRevision: Int64) -> any AsyncSequence<KVEvent, any Error> {
        Changes(watch: client.watch(key, prefix: prefix, fromRevision: fromRevision))
    }

    func watchDeletions(_ key: String, prefix: Bool, fromRevision: Int64) -> any AsyncSequence<KVEvent, any Error> {
        Changes(watch: client.watch(key, prefix: prefix, fromRevision: fromRevision, deletionsOnly: true))
    }

    /// An ``EtcdWatch`` as ``KVEvent``s.
    struct Changes: AsyncSequence {
        typealias Element = KVEvent
        typealias Failure = any Error
        let watch: EtcdWatch

        func makeAsyncIterator() -> Iterator { Iterator(inner: watch.makeAsyncIterator()) }

        struct Iterator: AsyncIteratorProtocol {
            var inner: EtcdWatch.Iterator

            mutating func next() async throws -> KVEvent? {
                do {
                    guard let event = try await inner.next() else { return nil }
                    switch event.kind {
                    case .put:
                        return KVEvent(change: .put(key: event.kv.key, value: event.kv.value), revision: event.kv.modRevision)
                    case .delete:
                        return KVEvent(change: .delete(key: event.kv.key), revision: event.kv.modRevision)
                    }
                } catch let error as EtcdError {
                    throw EtcdKV.map(error)
                }
            }
        }
    }
}

/// Where the cluster metadata lives in etcd (`--meta etcd`): daemons configured with the
/// same endpoint and prefix form one cluster.
public struct EtcdConfiguration: Sendable, Hashable {
    /// etcd client URL (`--etcd_endpoint`), e.g. `http://127.0.0.1:2379`.
    public var endpoint: String
    /// Key prefix shared by the cluster (`--etcd_prefix`).
    public var prefix: String
    /// Lease time to live of this instance's registration (rounded up to whole
    /// seconds, at least 1; etcd may raise very small values to its minimum).
    public var leaseTTL: Duration
    /// Connect timeout (`--meta_timeout`), also the deadline of each request.
    public var timeout: Duration

    public init(
        endpoint: String = "http://127.0.0.1:2379", prefix: String = "/vineyard",
        leaseTTL: Duration = .seconds(10), timeout: Duration = .seconds(5)
    ) {
        self.endpoint = endpoint
        self.prefix = prefix
        self.leaseTTL = leaseTTL
        self.timeout = timeout
    }
}
