import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import TrellisProtocol

/// An error reported by ``EtcdClient``.
public enum EtcdError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The request did not reach etcd or no complete answer came back (connection
    /// refused or reset, deadline exceeded, stream closed).
    case transport(String)
    /// etcd answered with an error: gRPC `code` (5 is NotFound, e.g. an unknown
    /// lease), its message and the HTTP status of the gateway answer.
    case server(code: Int, message: String, httpStatus: Int)
    /// The answer was not the JSON the etcd v3 gateway sends.
    case malformedResponse(String)
    /// The server canceled a watch, e.g. because `fromRevision` was compacted
    /// (`compactRevision` is then the oldest revision still available).
    case watchCanceled(reason: String, compactRevision: Int64)

    /// gRPC status code NotFound, used by etcd for unknown leases.
    public static let notFoundCode = 5

    /// Whether this is etcd saying that a lease does not exist (any more).
    public var isLeaseNotFound: Bool {
        if case .server(let code, let message, _) = self {
            return code == Self.notFoundCode || message.contains("lease not found")
        }
        return false
    }

    public var description: String {
        switch self {
        case .transport(let message): return "etcd unreachable: \(message)"
        case .server(let code, let message, let status): return "etcd error \(code) (HTTP \(status)): \(message)"
        case .malformedResponse(let message): return "malformed etcd response: \(message)"
        case .watchCanceled(let reason, let revision):
            return "etcd canceled the watch: \(reason) (compact revision \(revision))"
        }
    }
}

/// The header etcd attaches to every response.
public struct EtcdResponseHeader: Sendable, Hashable {
    /// The cluster's id; changes when etcd starts over with an empty data directory.
    public var clusterID: UInt64
    /// The answering member's id.
    public var memberID: UInt64
    /// The store revision when the request was served.
    public var revision: Int64
    /// The raft term; grows when a leader is (re)elected, e.g. after a restart.
    public var raftTerm: UInt64

    /// Creates a header.
    public init(clusterID: UInt64 = 0, memberID: UInt64 = 0, revision: Int64 = 0, raftTerm: UInt64 = 0) {
        self.clusterID = clusterID
        self.memberID = memberID
        self.revision = revision
        self.raftTerm = raftTerm
    }
}

/// One key with its value and revisions. Keys and values are UTF-8 text here.
public struct EtcdKeyValue: Sendable, Hashable {
    /// The key.
    public var key: String
    /// The value (empty in delete events).
    public var value: String
    /// Revision of the key's creation (0 for "does not exist" in comparisons).
    public var createRevision: Int64
    /// Revision of the key's last modification.
    public var modRevision: Int64
    /// Number of modifications since creation.
    public var version: Int64
    /// The lease attached to the key, 0 for none.
    public var lease: Int64

    /// Creates a key-value record.
    public init(
        key: String, value: String, createRevision: Int64 = 0, modRevision: Int64 = 0, version: Int64 = 0,
        lease: Int64 = 0
    ) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.lease = lease
    }
}

/// The answer to ``EtcdClient/range(_:prefix:limit:)``.
public struct EtcdRangeResponse: Sendable, Hashable {
    /// The response header; `revision` is the store revision the range was read at.
    public var header: EtcdResponseHeader
    /// Matching keys in key order.
    public var kvs: [EtcdKeyValue]
    /// Number of matching keys (may exceed `kvs.count` when a limit applied).
    public var count: Int64
}

/// A condition of ``EtcdClient/txn(compare:success:failure:)``.
public struct EtcdCompare: Sendable, Hashable {
    /// What is compared and the value it is compared with.
    public enum Target: Sendable, Hashable {
        /// The key's number of modifications (0: absent).
        case version(Int64)
        /// The revision that created the key (0: absent).
        case createRevision(Int64)
        /// The revision of the key's last modification.
        case modRevision(Int64)
        /// The key's value.
        case value(String)
        /// The lease attached to the key.
        case lease(Int64)
    }

    /// The comparison operator.
    public enum Result: String, Sendable, Hashable {
        case equal = "EQUAL"
        case greater = "GREATER"
        case less = "LESS"
        case notEqual = "NOT_EQUAL"
    }

    /// The key compared.
    public var key: String
    /// The operator.
    public var result: Result
    /// What is compared, with the value to compare with.
    public var target: Target

    /// Creates a comparison `key.target <result> value`.
    public init(key: String, _ target: Target, _ result: Result = .equal) {
        self.key = key
        self.target = target
        self.result = result
    }

    /// The condition "`key` does not exist".
    public static func absent(_ key: String) -> EtcdCompare { EtcdCompare(key: key, .createRevision(0)) }
}

/// One operation inside a transaction.
public enum EtcdOperation: Sendable, Hashable {
    /// Reads `key`, or all keys under it with `prefix`.
    case range(key: String, prefix: Bool)
    /// Writes `value` at `key`, attached to `lease` unless it is 0.
    case put(key: String, value: String, lease: Int64)
    /// Deletes `key`, or all keys under it with `prefix`.
    case delete(key: String, prefix: Bool)
}

/// The result of one ``EtcdOperation``.
public enum EtcdOperationResult: Sendable, Hashable {
    /// The keys read.
    case range([EtcdKeyValue])
    /// The write happened.
    case put
    /// The number of keys deleted.
    case delete(deleted: Int64)
}

/// The answer to ``EtcdClient/txn(compare:success:failure:)``.
public struct EtcdTxnResponse: Sendable, Hashable {
    /// The response header.
    public var header: EtcdResponseHeader
    /// Whether all comparisons held (then `success` ran, else `failure`).
    public var succeeded: Bool
    /// One result per operation of the branch that ran.
    public var responses: [EtcdOperationResult]
}

/// A granted lease.
public struct EtcdLease: Sendable, Hashable {
    /// The response header.
    public var header: EtcdResponseHeader
    /// The lease id.
    public var id: Int64
    /// Remaining time to live in seconds; 0 (after a keepalive) means the lease is gone.
    public var ttl: Int64
}

/// One change seen by ``EtcdClient/watch(_:prefix:fromRevision:prevKV:)``.
public struct EtcdEvent: Sendable, Hashable {
    /// What happened to the key.
    public enum Kind: Sendable, Hashable {
        /// Created or modified.
        case put
        /// Deleted (explicitly or by lease expiry).
        case delete
    }

    /// What happened.
    public var kind: Kind
    /// The key after the change (for deletes: key and `modRevision` only).
    public var kv: EtcdKeyValue
    /// The key before the change, when the watch asked for it.
    public var prevKV: EtcdKeyValue?
}

/// A small client for etcd's v3 HTTP/JSON gateway (`/v3/kv/*`, `/v3/lease/*`,
/// `/v3/watch`), built on AsyncHTTPClient.
///
/// Keys and values are UTF-8 text; they travel base64-encoded and 64-bit integers
/// travel as decimal strings, as the gateway expects. Every unary request is bounded
/// by ``requestTimeout``; watches are streams without a deadline that end when the
/// iterating task is cancelled. Watches use their own HTTP client: each open watch
/// holds a connection, and unary requests must never queue behind them.
public struct EtcdClient: Sendable {
    /// The etcd client URL, e.g. `http://127.0.0.1:2379` (no trailing slash).
    public let endpoint: String
    /// Deadline for each unary request (until its answer head arrives).
    public var requestTimeout: Duration
    let httpClient: HTTPClient
    let watchHTTPClient: HTTPClient
    let logger: Logger

    private static func makeHTTPClient(connectionsPerHost: Int) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(10), read: nil)
        configuration.decompression = .disabled
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = connectionsPerHost
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// The process-wide HTTP client for unary requests (never shut down); the
    /// default of ``init(endpoint:requestTimeout:httpClient:watchHTTPClient:logger:)``.
    public static let sharedHTTPClient: HTTPClient = makeHTTPClient(connectionsPerHost: 64)

    /// The process-wide HTTP client for watches: no read timeout (idle watches stay
    /// open) and practically no limit of connections per host, since every pending
    /// watch holds one (HTTP/1.1 through the gateway). Never shut down.
    public static let sharedWatchHTTPClient: HTTPClient = makeHTTPClient(connectionsPerHost: 1 << 20)

    /// The URL requests are sent to: `host:port` gains `http://`; a UNIX-socket endpoint,
    /// `unix:///path/to/socket` (or `unix:path`), becomes AsyncHTTPClient's
    /// `http+unix://<percent-encoded path>`; trailing slashes go.
    public static func normalizedEndpoint(_ text: String) -> String {
        var endpoint = text
        if endpoint.hasPrefix("unix:") {
            var path = String(endpoint.dropFirst("unix:".count))
            if path.hasPrefix("//") { path.removeFirst(2) }
            let unreserved = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~".utf8)
            var encoded = ""
            for byte in path.utf8 {
                if unreserved.contains(byte) {
                    encoded.unicodeScalars.append(Unicode.Scalar(byte))
                } else {
                    let hex = String(byte, radix: 16, uppercase: true)
                    encoded += "%" + (hex.count == 1 ? "0" + hex : hex)
                }
            }
            return "http+unix://" + encoded
        }
        while endpoint.hasSuffix("/") { endpoint.removeLast() }
        if !endpoint.contains("://") { endpoint = "http://" + endpoint }
        return endpoint
    }

    /// Creates a client for `endpoint` (e.g. `http://127.0.0.1:2379`, `unix:///run/etcd.sock`). Nothing is
    /// sent until the first request. Passed HTTP clients stay owned by the caller;
    /// `watchHTTPClient` needs no read timeout and room for one connection per watch.
    public init(
        endpoint: String, requestTimeout: Duration = .seconds(5), httpClient: HTTPClient = EtcdClient.sharedHTTPClient,
        watchHTTPClient: HTTPClient = EtcdClient.sharedWatchHTTPClient, logger: Logger
    ) {
        self.endpoint = Self.normalizedEndpoint(endpoint)
        self.requestTimeout = requestTimeout
        self.httpClient = httpClient
        self.watchHTTPClient = watchHTTPClient
        self.logger = logger
    }

    // MARK: KV

    /// Reads `key`, or with `prefix` all keys starting with it, in key order; `keysOnly`
    /// leaves the values out (they read as empty).
    public func range(
        _ key: String, prefix: Bool = false, limit: Int64 = 0, keysOnly: Bool = false
    ) async throws(EtcdError) -> EtcdRangeResponse {
        var body = Self.rangeBody(key: key, prefix: prefix)
        if limit > 0 { body["limit"] = .string(String(limit)) }
        if keysOnly { body["keys_only"] = .bool(true) }
        let reply = try await call("/v3/kv/range", .object(body))
        return EtcdRangeResponse(
            header: Self.header(reply), kvs: try Self.keyValues(reply["kvs"]), count: Self.int64(reply["count"]))
    }

    /// Reads at most `limit` keys in [`from`, end of `prefix`) at store revision `revision`
    /// (0: the current one), in key order: one page of a large prefix, all pages at one
    /// revision. `more` tells whether keys were left out.
    public func rangePage(
        prefix: String, from start: String, limit: Int64, revision: Int64
    ) async throws(EtcdError) -> (response: EtcdRangeResponse, more: Bool) {
        var body: [String: JSON] = [
            "key": .string(Base64.encode(start)),
            "range_end": .string(Base64.encode(Self.prefixEnd(Array(prefix.utf8)))),
            "limit": .string(String(limit)),
        ]
        if revision > 0 { body["revision"] = .string(String(revision)) }
        let reply = try await call("/v3/kv/range", .object(body))
        let response = EtcdRangeResponse(
            header: Self.header(reply), kvs: try Self.keyValues(reply["kvs"]), count: Self.int64(reply["count"]))
        return (response, reply["more"]?.boolValue ?? false)
    }

    /// Writes `value` at `key`, attached to `lease` unless it is 0.
    @discardableResult
    public func put(_ key: String, value: String, lease: Int64 = 0) async throws(EtcdError) -> EtcdResponseHeader {
        let reply = try await call("/v3/kv/put", .object(Self.putBody(key: key, value: value, lease: lease)))
        return Self.header(reply)
    }

    /// Deletes `key`, or with `prefix` every key starting with it; returns how many were deleted.
    @discardableResult
    public func delete(_ key: String, prefix: Bool = false) async throws(EtcdError) -> Int64 {
        let reply = try await call("/v3/kv/deleterange", .object(Self.rangeBody(key: key, prefix: prefix)))
        return Self.int64(reply["deleted"])
    }

    /// Runs `success` if every comparison holds, else `failure`, atomically.
    public func txn(compare: [EtcdCompare], success: [EtcdOperation], failure: [EtcdOperation] = [])
        async throws(EtcdError) -> EtcdTxnResponse
    {
        let body: JSON = [
            "compare": .array(compare.map(Self.compareJSON)),
            "success": .array(success.map(Self.operationJSON)),
            "failure": .array(failure.map(Self.operationJSON)),
        ]
        let reply = try await call("/v3/kv/txn", body)
        var results: [EtcdOperationResult] = []
        for response in reply["responses"]?.arrayValue ?? [] {
            if let range = response["response_range"] {
                results.append(.range(try Self.keyValues(range["kvs"])))
            } else if response["response_put"] != nil {
                results.append(.put)
            } else if let deleted = response["response_delete_range"] {
                results.append(.delete(deleted: Self.int64(deleted["deleted"])))
            } else {
                throw .malformedResponse("unexpected txn response \(response)")
            }
        }
        return EtcdTxnResponse(
            header: Self.header(reply), succeeded: reply["succeeded"]?.boolValue ?? false, responses: results)
    }

    /// Discards the store's history before `revision`: reads and watches from an older
    /// revision fail afterwards (etcd's `compaction`).
    public func compact(revision: Int64) async throws(EtcdError) {
        _ = try await call("/v3/kv/compaction", ["revision": .string(String(revision)), "physical": true])
    }

    // MARK: Leases

    /// Grants a lease of `ttl` seconds (etcd may round small values up).
    public func grantLease(ttl: Int64) async throws(EtcdError) -> EtcdLease {
        let reply = try await call("/v3/lease/grant", ["TTL": .string(String(ttl))])
        if let error = reply["error"]?.stringValue, !error.isEmpty {
            throw .server(code: 0, message: error, httpStatus: 200)
        }
        let id = Self.int64(reply["ID"])
        guard id != 0 else { throw .malformedResponse("lease grant without ID: \(reply)") }
        return EtcdLease(header: Self.header(reply), id: id, ttl: Self.int64(reply["TTL"]))
    }

    /// Refreshes lease `id` once. A returned `ttl` of 0 means the lease no longer exists.
    public func keepAlive(lease id: Int64) async throws(EtcdError) -> EtcdLease {
        let reply = try await call("/v3/lease/keepalive", ["ID": .string(String(id))])
        // Streaming RPC through the gateway: one message wrapped in "result".
        guard let result = reply["result"] else {
            throw .malformedResponse("keepalive answer without result: \(reply)")
        }
        return EtcdLease(header: Self.header(result), id: Self.int64(result["ID"]), ttl: Self.int64(result["TTL"]))
    }

    /// Revokes lease `id`, deleting every key attached to it. An unknown lease is not an error.
    public func revokeLease(_ id: Int64) async throws(EtcdError) {
        do {
            _ = try await call("/v3/lease/revoke", ["ID": .string(String(id))])
        } catch let error where error.isLeaseNotFound {
            return
        }
    }

    /// Cluster status of the answering member; used to check that etcd is reachable.
    public func status() async throws(EtcdError) -> (header: EtcdResponseHeader, version: String) {
        let reply = try await call("/v3/maintenance/status", .object([:]))
        return (Self.header(reply), reply["version"]?.stringValue ?? "")
    }

    // MARK: Watch

    /// Streams changes of `key` (or of every key under it with `prefix`), starting at
    /// `fromRevision` (0: from now on). The request is sent on the first `next()`;
    /// iteration throws when the stream breaks (etcd stopped, watch canceled) and
    /// ends when the iterating task is cancelled.
    public func watch(
        _ key: String, prefix: Bool = false, fromRevision: Int64 = 0, prevKV: Bool = false, deletionsOnly: Bool = false
    ) -> EtcdWatch {
        var create = Self.rangeBody(key: key, prefix: prefix)
        if fromRevision > 0 { create["start_revision"] = .string(String(fromRevision)) }
        if prevKV { create["prev_kv"] = true }
        // etcd then leaves puts out instead of encoding and sending each to this watcher
        if deletionsOnly { create["filters"] = .array([.string("NOPUT")]) }
        let body = JSONWriter.encode(["create_request": .object(create)])
        return EtcdWatch(client: self, requestBody: body)
    }

    // MARK: Transport

    func post(_ path: String, body: [UInt8], deadline: Duration?, watch: Bool = false) async throws(EtcdError)
        -> HTTPClientResponse
    {
        let httpClient = watch ? watchHTTPClient : self.httpClient
        let start = ContinuousClock.now
        var request = HTTPClientRequest(url: endpoint + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        // Over a UNIX socket AsyncHTTPClient sends no Host header, and etcd (Go's HTTP
        // server) drops an HTTP/1.1 request without one.
        if endpoint.hasPrefix("http+unix://") { request.headers.add(name: "Host", value: "localhost") }
        request.body = .bytes(body)
        do {
            let response: HTTPClientResponse
            if let deadline {
                response = try await httpClient.execute(request, timeout: Self.timeAmount(deadline), logger: logger)
            } else {
                response = try await httpClient.execute(request, deadline: .distantFuture, logger: logger)
            }
            // a watch's round trip is its opening (unary requests are counted by `call`)
            if watch { EtcdMetrics.record(path, since: start, failed: false) }
            return response
        } catch {
            if watch { EtcdMetrics.record(path, since: start, failed: true) }
            throw .transport("POST \(endpoint)\(path): \(error)")
        }
    }

    /// One unary request and its answer, counted in ``EtcdMetrics`` (round trip, failure, time).
    private func call(_ path: String, _ body: JSON) async throws(EtcdError) -> JSON {
        let start = ContinuousClock.now
        do {
            let json = try await exchange(path, body)
            EtcdMetrics.record(path, since: start, failed: false)
            return json
        } catch {
            EtcdMetrics.record(path, since: start, failed: true)
            throw error
        }
    }

    private func exchange(_ path: String, _ body: JSON) async throws(EtcdError) -> JSON {
        let response = try await post(path, body: JSONWriter.encode(body), deadline: requestTimeout)
        let buffer: ByteBuffer
        do {
            buffer = try await response.body.collect(upTo: 64 << 20)
        } catch {
            throw .transport("reading answer of \(path): \(error)")
        }
        let json: JSON
        do {
            json = try JSONParser.parse(Array(buffer.readableBytesView))
        } catch {
            throw .malformedResponse("\(path) (HTTP \(response.status.code)): \(error)")
        }
        if let error = Self.errorIn(json, httpStatus: Int(response.status.code)) { throw error }
        guard response.status.code == 200 else {
            throw .server(code: 0, message: "\(json)", httpStatus: Int(response.status.code))
        }
        return json
    }

    // MARK: Encoding helpers

    static func timeAmount(_ duration: Duration) -> TimeAmount {
        let (seconds, attoseconds) = duration.components
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    /// The exclusive end of the key range of all keys starting with `prefix`.
    static func prefixEnd(_ prefix: [UInt8]) -> [UInt8] {
        var end = prefix
        while let last = end.last {
            if last < 0xFF {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return [0]  // every key
    }

    static func rangeBody(key: String, prefix: Bool) -> [String: JSON] {
        var body: [String: JSON] = ["key": .string(Base64.encode(key))]
        if prefix { body["range_end"] = .string(Base64.encode(prefixEnd(Array(key.utf8)))) }
        return body
    }

    static func putBody(key: String, value: String, lease: Int64) -> [String: JSON] {
        var body: [String: JSON] = ["key": .string(Base64.encode(key)), "value": .string(Base64.encode(value))]
        if lease != 0 { body["lease"] = .string(String(lease)) }
        return body
    }

    static func compareJSON(_ compare: EtcdCompare) -> JSON {
        var body: [String: JSON] = ["key": .string(Base64.encode(compare.key)), "result": .string(compare.result.rawValue)]
        switch compare.target {
        case .version(let v):
            body["target"] = "VERSION"
            body["version"] = .string(String(v))
        case .createRevision(let v):
            body["target"] = "CREATE"
            body["create_revision"] = .string(String(v))
        case .modRevision(let v):
            body["target"] = "MOD"
            body["mod_revision"] = .string(String(v))
        case .value(let v):
            body["target"] = "VALUE"
            body["value"] = .string(Base64.encode(v))
        case .lease(let v):
            body["target"] = "LEASE"
            body["lease"] = .string(String(v))
        }
        return .object(body)
    }

    static func operationJSON(_ operation: EtcdOperation) -> JSON {
        switch operation {
        case .range(let key, let prefix):
            return ["request_range": .object(rangeBody(key: key, prefix: prefix))]
        case .put(let key, let value, let lease):
            return ["request_put": .object(putBody(key: key, value: value, lease: lease))]
        case .delete(let key, let prefix):
            return ["request_delete_range": .object(rangeBody(key: key, prefix: prefix))]
        }
    }

    // MARK: Decoding helpers

    /// An int64 the gateway wrote as a decimal string (or, leniently, a number); absent is 0.
    static func int64(_ value: JSON?) -> Int64 {
        guard let value else { return 0 }
        if let text = value.stringValue { return Int64(text) ?? Int64(bitPattern: UInt64(text) ?? 0) }
        return value.int64Value ?? 0
    }

    static func uint64(_ value: JSON?) -> UInt64 {
        guard let value else { return 0 }
        if let text = value.stringValue { return UInt64(text) ?? UInt64(bitPattern: Int64(text) ?? 0) }
        return value.uint64Value ?? 0
    }

    static func header(_ reply: JSON) -> EtcdResponseHeader {
        let h = reply["header"]
        return EtcdResponseHeader(
            clusterID: uint64(h?["cluster_id"]), memberID: uint64(h?["member_id"]),
            revision: int64(h?["revision"]), raftTerm: uint64(h?["raft_term"]))
    }

    static func text(_ value: JSON?) throws(EtcdError) -> String {
        guard let value else { return "" }
        guard let encoded = value.stringValue, let bytes = Base64.decode(encoded) else {
            throw .malformedResponse("expected base64 text, got \(value)")
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func keyValue(_ json: JSON) throws(EtcdError) -> EtcdKeyValue {
        EtcdKeyValue(
            key: try text(json["key"]), value: try text(json["value"]),
            createRevision: int64(json["create_revision"]), modRevision: int64(json["mod_revision"]),
            version: int64(json["version"]), lease: int64(json["lease"]))
    }

    static func keyValues(_ json: JSON?) throws(EtcdError) -> [EtcdKeyValue] {
        var result: [EtcdKeyValue] = []
        for item in json?.arrayValue ?? [] { result.append(try keyValue(item)) }
        return result
    }

    /// The error carried by a gateway answer: `{"error":"…","code":5,"message":"…"}`
    /// for unary calls, `{"error":{"grpc_code":…,"message":…}}` inside streams.
    static func errorIn(_ json: JSON, httpStatus: Int) -> EtcdError? {
        guard let error = json["error"] else { return nil }
        if let object = error.objectValue {
            let code = object["grpc_code"]?.intValue ?? object["code"]?.intValue ?? 0
            let message = object["message"]?.stringValue ?? "\(error)"
            return .server(code: code, message: message, httpStatus: object["http_code"]?.intValue ?? httpStatus)
        }
        if let text = error.stringValue, !text.isEmpty || json["code"] != nil {
            let message = json["message"]?.stringValue ?? text
            return .server(code: json["code"]?.intValue ?? 0, message: message, httpStatus: httpStatus)
        }
        return nil
    }
}

/// The changes streamed by ``EtcdClient/watch(_:prefix:fromRevision:prevKV:)``, one event at a time.
public struct EtcdWatch: AsyncSequence, Sendable {
    /// One change.
    public typealias Element = EtcdEvent
    /// Iteration throws ``EtcdError`` when the stream breaks.
    public typealias Failure = any Error

    let client: EtcdClient
    let requestBody: [UInt8]

    /// An iterator that opens the watch on its first `next()`.
    public func makeAsyncIterator() -> Iterator { Iterator(client: client, requestBody: requestBody) }

    /// Iterates a watch; sends the watch request on the first call of `next()`.
    public struct Iterator: AsyncIteratorProtocol {
        let client: EtcdClient
        let requestBody: [UInt8]
        var body: HTTPClientResponse.Body.AsyncIterator?
        var scanner = JSONStreamScanner()
        var pending: [EtcdEvent] = []
        var pendingIndex = 0

        init(client: EtcdClient, requestBody: [UInt8]) {
            self.client = client
            self.requestBody = requestBody
        }

        /// The next change; throws ``EtcdError`` when the stream breaks, returns
        /// `nil` once the iterating task is cancelled.
        public mutating func next() async throws -> EtcdEvent? {
            while true {
                if pendingIndex < pending.count {
                    defer { pendingIndex += 1 }
                    return pending[pendingIndex]
                }
                pending.removeAll(keepingCapacity: true)
                pendingIndex = 0
                if Task.isCancelled { return nil }
                if let message = scanner.nextMessage() {
                    try handle(message)
                    continue
                }
                if scanner.overflows > 0 {
                    throw EtcdError.malformedResponse("watch message larger than \(scanner.limit) bytes")
                }
                if body == nil {
                    // The head must come within the request timeout; the stream itself has none.
                    let response = try await client.post(
                        "/v3/watch", body: requestBody, deadline: client.requestTimeout, watch: true)
                    guard response.status.code == 200 else {
                        throw EtcdError.server(
                            code: 0, message: "watch refused", httpStatus: Int(response.status.code))
                    }
                    body = response.body.makeAsyncIterator()
                }
                let chunk: ByteBuffer?
                do {
                    chunk = try await body!.next()
                } catch {
                    if Task.isCancelled { return nil }
                    throw EtcdError.transport("watch stream: \(error)")
                }
                guard let chunk else {
                    if Task.isCancelled { return nil }
                    throw EtcdError.transport("watch stream closed by \(client.endpoint)")
                }
                scanner.append(chunk.readableBytesView)
            }
        }

        private mutating func handle(_ message: [UInt8]) throws {
            let json: JSON
            do {
                json = try JSONParser.parse(message)
            } catch {
                throw EtcdError.malformedResponse("watch message: \(error)")
            }
            if let error = EtcdClient.errorIn(json, httpStatus: 200) { throw error }
            guard let result = json["result"] else {
                throw EtcdError.malformedResponse("watch message without result: \(json)")
            }
            if result["canceled"]?.boolValue == true {
                throw EtcdError.watchCanceled(
                    reason: result["cancel_reason"]?.stringValue ?? "",
                    compactRevision: EtcdClient.int64(result["compact_revision"]))
            }
            for event in result["events"]?.arrayValue ?? [] {
                let kind: EtcdEvent.Kind = event["type"]?.stringValue == "DELETE" ? .delete : .put
                let kv = try EtcdClient.keyValue(event["kv"] ?? [:])
                let prev = try event["prev_kv"].map { (j: JSON) throws(EtcdError) in try EtcdClient.keyValue(j) }
                pending.append(EtcdEvent(kind: kind, kv: kv, prevKV: prev))
            }
        }
    }
}

/// Splits a byte stream of concatenated JSON objects (the gateway's streaming
/// format, newline-delimited or not) into whole messages.
///
/// Robust to any byte sequence: between messages only `{` or `[` starts one (stray
/// closers, quotes and other bytes are dropped), and a message that grows beyond
/// `limit` bytes is dropped with everything buffered, the scanner starting afresh
/// (``overflows`` counts these), so the buffer never holds more than `limit` bytes
/// plus the last appended chunk and the scanner always resynchronises.
struct JSONStreamScanner {
    private var buffer: [UInt8] = []
    private var start = 0
    private var position = 0
    private var depth = 0
    private var inString = false
    private var escaped = false
    /// Largest message kept, in bytes.
    let limit: Int
    /// Messages dropped for exceeding `limit`.
    private(set) var overflows = 0

    init(limit: Int = 64 << 20) {
        self.limit = max(2, limit)
    }

    /// Bytes held (consumed bytes are released on the next append).
    var bufferedBytes: Int { buffer.count }

    mutating func append(_ bytes: some Sequence<UInt8>) {
        if start > 0 {
            buffer.removeFirst(start)
            position -= start
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    private mutating func reset() {
        buffer.removeAll(keepingCapacity: false)
        start = 0
        position = 0
        depth = 0
        inString = false
        escaped = false
    }

    /// The next complete top-level JSON object or array, if the buffer holds one.
    mutating func nextMessage() -> [UInt8]? {
        while position < buffer.count {
            if depth > 0 && position - start >= limit {
                overflows += 1
                reset()
                return nil
            }
            let byte = buffer[position]
            position += 1
            if depth == 0 {
                // Between messages: only an opening bracket matters.
                if byte == UInt8(ascii: "{") || byte == UInt8(ascii: "[") {
                    start = position - 1
                    depth = 1
                } else {
                    start = position
                }
                continue
            }
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""):
                inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
                if depth == 0 {
                    let message = Array(buffer[start..<position])
                    start = position
                    if start == buffer.count {
                        buffer.removeAll(keepingCapacity: true)
                        start = 0
                        position = 0
                    }
                    return message
                }
            default:
                break
            }
        }
        if depth == 0 {
            // Nothing of a message is pending: drop what was scanned.
            buffer.removeAll(keepingCapacity: buffer.count <= 64 << 10)
            start = 0
            position = 0
        }
        return nil
    }
}
