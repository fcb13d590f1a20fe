import Foundation
import TrellisMeta

/// Reads the cluster metadata (etcd v3 JSON gateway) over a ``KubeTransport``: directly
/// (`pathPrefix` empty; the launcher runs in the cluster or etcd is otherwise reachable) or
/// through the API server's service proxy
/// (`/api/v1/namespaces/<ns>/services/<service>:<port>/proxy`).
public struct EtcdGateway: Sendable {
    /// Sends the requests.
    public var transport: any KubeTransport
    /// Put in front of `/v3/kv/range`.
    public var pathPrefix: String
    /// The daemons' `--etcd_prefix` (Fluid passes `/vineyard`).
    public var keyPrefix: String

    public init(transport: any KubeTransport, pathPrefix: String = "", keyPrefix: String = "/vineyard") {
        self.transport = transport
        var p = pathPrefix
        while p.hasSuffix("/") { p.removeLast() }
        self.pathPrefix = p
        var k = keyPrefix
        while k.hasSuffix("/") { k.removeLast() }
        self.keyPrefix = k
    }

    /// The service-proxy path of an etcd Service (`NAME:PORT`) in `namespace`.
    public static func proxyPath(namespace: String, service: String) -> String {
        "/api/v1/namespaces/\(namespace)/services/\(service)/proxy"
    }

    /// The range request of one key, or of every key under a prefix (`range_end` = the prefix
    /// with its last byte incremented).
    public static func rangeRequest(key: String, prefix: Bool, pathPrefix: String) -> KubeRequest {
        var body: [(String, KubeValue)] = [("key", .string(Data(key.utf8).base64EncodedString()))]
        if prefix {
            var end = Array(key.utf8)
            while let last = end.last, last == 0xff { end.removeLast() }
            if !end.isEmpty { end[end.count - 1] += 1 }
            body.append(("range_end", .string(Data(end.isEmpty ? [0] : end).base64EncodedString())))
        }
        return KubeRequest(
            method: "POST", path: pathPrefix + "/v3/kv/range", contentType: "application/json", body: KubeValue.object(body).json())
    }

    /// The keys and values (decoded) of a range.
    public func range(_ key: String, prefix: Bool = false) async throws -> [(key: String, value: String)] {
        let request = Self.rangeRequest(key: key, prefix: prefix, pathPrefix: pathPrefix)
        let response = try await transport.send(request)
        guard response.status == 200 else {
            throw DataPlaneError(
                "cluster metadata: \(request.method) \(request.path) answered \(response.status): "
                    + String(decoding: response.body.prefix(300), as: UTF8.self))
        }
        guard let json = try? JSONSerialization.jsonObject(with: response.body) as? [String: Any] else {
            throw DataPlaneError("cluster metadata: the etcd gateway's answer is not JSON")
        }
        let kvs = json["kvs"] as? [[String: Any]] ?? []
        return kvs.compactMap { kv in
            guard let k = (kv["key"] as? String).flatMap({ Data(base64Encoded: $0) }) else { return nil }
            let v = (kv["value"] as? String).flatMap { Data(base64Encoded: $0) } ?? Data()
            return (String(decoding: k, as: UTF8.self), String(decoding: v, as: UTF8.self))
        }
    }
}

/// One daemon as its instance record in the cluster metadata describes it.
public struct MetadataInstance: Sendable, Equatable {
    public var id: UInt64
    /// `MY_NODE_NAME` of the worker pod (the field upstream vineyardd calls `nodename`).
    public var nodename: String
    public var hostname: String
    public var rpcEndpoint: String

    /// Parses a record `{"instance_id":…, "nodename":…, "hostname":…, "rpc_endpoint":…}`.
    public init?(json text: String) {
        guard let o = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any],
            let id = (o["instance_id"] as? NSNumber)?.uint64Value
        else { return nil }
        self.id = id
        self.hostname = o["hostname"] as? String ?? ""
        self.nodename = (o["nodename"] as? String).flatMap { $0.isEmpty ? nil : $0 } ?? self.hostname
        self.rpcEndpoint = o["rpc_endpoint"] as? String ?? ""
    }

    public init(id: UInt64, nodename: String, hostname: String = "", rpcEndpoint: String = "") {
        self.id = id
        self.nodename = nodename
        self.hostname = hostname
        self.rpcEndpoint = rpcEndpoint
    }

    /// As a ``Replica`` at `index`, whose socket is `podSocket` (its path inside step pods).
    public func replica(index: Int, podSocket: String) -> Replica {
        var host: String?
        var port: Int?
        if let colon = rpcEndpoint.lastIndex(of: ":") {
            host = String(rpcEndpoint[..<colon])
            port = Int(rpcEndpoint[rpcEndpoint.index(after: colon)...])
        }
        return Replica(index: index, socket: podSocket, rpcPort: port, host: host, node: nodename)
    }
}

/// Residency from the cluster metadata: bytes of an object's blobs per instance.
public enum MetadataResidency {
    /// Sum of the sizes of the distinct blobs of a metadata tree whose `instance_id` is `instance`;
    /// `nil` if the tree is not JSON.
    public static func bytes(ofTree text: String, on instance: UInt64) -> Int? {
        guard let tree = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else { return nil }
        var blobs: [String: (UInt64?, Int)] = [:]
        collect(tree, into: &blobs)
        return blobs.values.reduce(0) { $0 + ($1.0 == instance ? $1.1 : 0) }
    }

    static func collect(_ o: [String: Any], into blobs: inout [String: (UInt64?, Int)]) {
        if o["typename"] as? String == "vineyard::Blob" {
            blobs[o["id"] as? String ?? "\(blobs.count)"] = ((o["instance_id"] as? NSNumber)?.uint64Value, blobSize(o))
            return
        }
        // vineyardd publishes blob members with length and nbytes 0 (so does Trellis, which
        // follows it): then the object holding them tells their size by its own `nbytes`.
        var unsized: [(id: String, instance: UInt64?)] = []
        for (_, v) in o {
            guard let m = v as? [String: Any] else { continue }
            if m["typename"] as? String == "vineyard::Blob" {
                let id = m["id"] as? String ?? "\(blobs.count)"
                let instance = (m["instance_id"] as? NSNumber)?.uint64Value
                let size = blobSize(m)
                if size > 0 || m["id"] as? String == "o8000000000000000" {
                    blobs[id] = (instance, size)
                } else if blobs[id] == nil {
                    unsized.append((id, instance))
                }
            } else {
                collect(m, into: &blobs)
            }
        }
        guard !unsized.isEmpty else { return }
        let total = max(0, (o["nbytes"] as? NSNumber)?.intValue ?? 0)
        for (k, b) in unsized.enumerated() {
            blobs[b.id] = (b.instance, total / unsized.count + (k == 0 ? total % unsized.count : 0))
        }
    }

    private static func blobSize(_ o: [String: Any]) -> Int {
        (o["nbytes"] as? NSNumber)?.intValue ?? (o["length"] as? NSNumber)?.intValue ?? 0
    }

    /// The object key of an id: `<prefix>/objects/<16 hex digits>`.
    public static func objectKey(_ id: UInt64, prefix: String) -> String {
        let hex = String(id, radix: 16)
        return prefix + "/objects/" + String(repeating: "0", count: 16 - hex.count) + hex
    }
}

/// The data plane of a Kubernetes run, from outside the cluster.
///
/// - Residency: read from the cluster metadata (names → object id → the object's tree →
///   its blobs' `instance_id` and sizes), where every daemon publishes its objects, its names
///   and its instance record (with `nodename`). A replica's local copy (`<name>@r<index>`) is
///   looked up first, as the step bootstrap does.
/// - Move: not done from the launcher (it cannot reach the daemons' sockets): step pods get
///   `TRELLIS_FETCH=1`, so the step's own `get` migrates a remote input into its node's daemon.
///   Returns 0 bytes.
/// - Delete: objects belong to the daemon that holds them, so this runs a small cleanup Job on
///   the replica's node (``KubeStepObjects/cleanupJob(runID:node:names:settings:)``), only
///   when the metadata shows any of the names there, and waits for it.
public struct EtcdMetadataDataPlane: DataPlane {
    /// The metadata source.
    public var etcd: EtcdGateway
    /// Instance id of each replica index.
    public var instances: [Int: UInt64]
    /// Runs the cleanup Jobs (nil: deletes are refused with an error).
    public var cleaner: KubeObjectCleaner?
    /// When set, objects owned by other instances (a node that is gone, whose metadata
    /// outlives it) count as absent: their bytes cannot be read any more.
    public var liveInstances: Set<UInt64>?

    public init(etcd: EtcdGateway, instances: [Int: UInt64], cleaner: KubeObjectCleaner?) {
        self.etcd = etcd
        self.instances = instances
        self.cleaner = cleaner
    }

    /// The daemons registered in the metadata, in instance-id order.
    public static func discover(_ etcd: EtcdGateway) async throws -> [MetadataInstance] {
        try await etcd.range(etcd.keyPrefix + "/instances/", prefix: true)
            .compactMap { MetadataInstance(json: $0.value) }
            .sorted { $0.id < $1.id }
    }

    /// The replicas of a run: one per registered daemon, with its node.
    public static func replicas(of instances: [MetadataInstance], podSocket: String) -> [Replica] {
        instances.enumerated().map { $0.element.replica(index: $0.offset, podSocket: podSocket) }
    }

    /// The object id bound to a name, nil when unbound.
    func objectID(_ name: String) async throws -> UInt64? {
        guard let v = try await etcd.range(etcd.keyPrefix + "/names/" + name).first?.value else { return nil }
        return UInt64(v.trimmingCharacters(in: .whitespaces))
    }

    /// The metadata tree text of an object, nil when unknown.
    func tree(_ id: UInt64) async throws -> String? {
        guard let v = try await etcd.range(MetadataResidency.objectKey(id, prefix: etcd.keyPrefix)).first?.value
        else { return nil }
        return PersistedObject(objectID: id, storedText: v)?.metadata  // (either form: plain or deflated)
    }

    public func residentBytes(of names: [String], on replica: Replica) async throws -> [String: Int] {
        guard let instance = instances[replica.index] else { return [:] }
        var out: [String: Int] = [:]
        for name in names {
            for candidate in [ClientDataPlane.localName(name, replica: replica.index), name] {
                guard let id = try await objectID(candidate), let tree = try await tree(id) else { continue }
                if let live = liveInstances, let owner = Self.owner(tree), !live.contains(owner) { continue }
                out[name] = MetadataResidency.bytes(ofTree: tree, on: instance) ?? 0
                break
            }
        }
        return out
    }

    public func move(_ name: String, from: Replica, to: Replica) async throws -> Int { 0 }

    public func delete(_ names: [String], on replica: Replica) async throws {
        guard let instance = instances[replica.index] else { return }
        var here: [String] = []
        for name in names {
            for candidate in [ClientDataPlane.localName(name, replica: replica.index), name] {
                guard let id = try await objectID(candidate), let tree = try await tree(id) else { continue }
                if (MetadataResidency.bytes(ofTree: tree, on: instance) ?? 0) > 0 || Self.owner(tree) == instance {
                    here.append(candidate)
                }
            }
        }
        guard !here.isEmpty else { return }
        guard let cleaner, let node = replica.node else {
            throw DataPlaneError("cannot delete \(here.joined(separator: ", ")) on replica \(replica.index): no cleanup runner")
        }
        let runID = here[0].split(separator: "/", maxSplits: 1).first.map(String.init) ?? "trellis"
        try await cleaner.delete(here, runID: runID, node: node)
    }

    static func owner(_ tree: String) -> UInt64? {
        ((try? JSONSerialization.jsonObject(with: Data(tree.utf8))) as? [String: Any])
            .flatMap { ($0["instance_id"] as? NSNumber)?.uint64Value }
    }
}

/// Deletes objects on a node through a short Job there, and waits for it.
public struct KubeObjectCleaner: Sendable {
    public var client: KubeClient
    public var settings: KubeRunSettings
    /// Pause bounds between status reads, and the longest wait.
    public var pollInterval: (first: Double, max: Double)
    public var timeout: Double

    public init(client: KubeClient, settings: KubeRunSettings, pollInterval: (first: Double, max: Double) = (0.25, 2), timeout: Double = 600) {
        self.client = client
        self.settings = settings
        self.pollInterval = pollInterval
        self.timeout = timeout
    }

    /// Runs the cleanup Job for `names` on `node` to its end (in a task of its own, so a
    /// cancelled run still cleans up what it was asked to).
    public func delete(_ names: [String], runID: String, node: String) async throws {
        let job = KubeStepObjects.cleanupJob(runID: runID, node: node, names: names, settings: settings)
        let name = job[path: "metadata", "name"]?.string ?? "?"
        try await Task {
            do {
                try await client.create(job)
            } catch let e as KubeAPIError where e.status == 409 {
                try await client.deleteJob(name)
                try await Task.sleep(for: .seconds(1))
                try await client.create(job)
            }
            let start = ContinuousClock.now
            var interval = pollInterval.first
            while (ContinuousClock.now - start).seconds < timeout {
                try await Task.sleep(for: .seconds(interval))
                interval = min(pollInterval.max, interval * 2)
                guard let pod = try? await client.pods(ofJob: name).first else { continue }
                switch PodCondition.of(pod: pod, container: KubeStepObjects.container) {
                case .succeeded:
                    try? await client.deleteJob(name)
                    return
                case .failed(let status, let reason):
                    let log = (try? await client.log(pod: pod[path: "metadata", "name"]?.string ?? "", container: KubeStepObjects.container)) ?? ""
                    try? await client.deleteJob(name)
                    throw DataPlaneError("cleanup Job \(name) on node \(node) failed (\(status)\(reason.map { ", \($0)" } ?? "")): \(log.suffix(300))")
                default: continue
                }
            }
            try? await client.deleteJob(name)
            throw DataPlaneError("cleanup Job \(name) on node \(node) did not finish within \(Int(timeout))s")
        }.value
    }
}
