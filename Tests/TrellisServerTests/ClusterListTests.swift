import Logging
import Testing
import TrellisMeta
import TrellisProtocol
import TrellisTestSupport

/// `list_data` of two in-process daemons forming a cluster on one shared
/// ``LocalMetaStore`` (the same ``MetaCore`` code as with etcd; the etcd side of the
/// mirrored listing is tested in TrellisMetaTests): a persist through one daemon is in
/// the other's listing as soon as it returned, a delete leaves it, and a limit or a
/// pattern selects what it selected before the listing was mirrored — this daemon's
/// matches first, then the cluster's, smallest ids first.
@Suite("Cluster list_data", .onBlockingPool)
struct ClusterListTests {
    static func node(_ store: LocalMetaStore, _ tag: String) async throws -> (TestDaemon, MetaCore) {
        var logger = Logger(label: "test.meta")
        logger.logLevel = .critical
        let meta = MetaCore(local: store, prefix: "/list", logger: logger)
        let id = try await meta.allocateInstanceID()
        try await meta.register(
            InstanceInfo(
                id: id, hostname: tag, nodename: tag, rpcEndpoint: "127.0.0.1:1", ipcSocket: "/tmp/\(tag)", hostid: 1,
                timestamp: 1),
            republish: { _ in })
        return (try TestDaemon(meta: meta, instanceID: id), meta)
    }

    /// Two daemons of one cluster (`a`, `b`) and a registered client of each.
    static func pair() async throws -> (TestDaemon, TestDaemon, RawClient, RawClient) {
        let shared = LocalMetaStore()
        let (a, _) = try await node(shared, "a")
        do {
            let (b, _) = try await node(shared, "b")
            do {
                let ca = try a.connect()
                try ca.register()
                let cb = try b.connect()
                try cb.register()
                return (a, b, ca, cb)
            } catch {
                b.stop()
                throw error
            }
        } catch {
            a.stop()
            throw error
        }
    }

    static func create(_ c: RawClient, _ typename: String, persist: Bool) throws -> ObjectID {
        guard case .createData(let created) = try c.call(Request.createData(["typename": .string(typename), "instance_id": 0]))
        else { throw TestFailure("create_data refused") }
        if persist {
            guard try c.call(Request.persist(created.id)) == .done(.persist) else { throw TestFailure("persist refused") }
        }
        return created.id
    }

    static func listed(_ c: RawClient, _ pattern: String, regex: Bool = false, limit: Int) throws -> Set<ObjectID> {
        guard case .data(let content) = try c.call(Request.listData(pattern: pattern, regex: regex, limit: limit)) else {
            throw TestFailure("list_data refused")
        }
        return Set(content.keys.compactMap { ObjectID(string: $0) })
    }

    struct TestFailure: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    @Test func persistDeleteAndSelection() async throws {
        let (a, b, ca, cb) = try await Self.pair()
        defer { a.stop(); b.stop() }

        // persisted on A: in B's listing right away, every time
        var remote: [(ObjectID, String)] = []
        for i in 0..<24 {
            let typename = i % 3 == 0 ? "vineyard::DataFrame" : "vineyard::Tensor<int64>"
            let id = try Self.create(ca, typename, persist: true)
            remote.append((id, typename))
            #expect(try Self.listed(cb, "*", limit: 1000).contains(id), "persist \(i)")
        }
        // not persisted on A: never in B's listing
        let transient = try Self.create(ca, "vineyard::DataFrame", persist: false)
        #expect(!(try Self.listed(cb, "*", limit: 1000).contains(transient)))
        // B's own objects (persisted or not)
        var local: [(ObjectID, String)] = []
        for i in 0..<6 {
            let typename = i % 2 == 0 ? "vineyard::DataFrame" : "vineyard::Tensor<int64>"
            local.append((try Self.create(cb, typename, persist: i < 3), typename))
        }

        // what list_data selected before: B's matches in id order, then the others' in id order
        func expected(_ matches: (String) -> Bool, limit: Int) -> Set<ObjectID> {
            let mine = local.filter { matches($0.1) }.map(\.0).sorted()
            let theirs = remote.filter { matches($0.1) }.map(\.0).sorted()
            return Set((mine + theirs).prefix(limit))
        }
        for limit in [1, 3, 5, 8, 13, 100] {
            #expect(try Self.listed(cb, "vineyard::DataFrame", limit: limit) == expected({ $0 == "vineyard::DataFrame" }, limit: limit))
            #expect(try Self.listed(cb, "vineyard::Tensor*", limit: limit) == expected({ $0.hasPrefix("vineyard::Tensor") }, limit: limit))
            #expect(try Self.listed(cb, "vineyard::(DataFrame|Tensor<int64>)", regex: true, limit: limit) == expected({ _ in true }, limit: limit))
            #expect(try Self.listed(ca, "*", limit: limit).count == min(limit, 24 + 1 + 3))  // its own, then B's persisted
        }
        #expect(try Self.listed(cb, "nothing::*", limit: 10).isEmpty)

        // deleted on A: gone from B's listing right away
        for (id, _) in remote.prefix(5) {
            #expect(try ca.call(Request.delete([id], force: false, deep: true, memoryTrim: false)) == .done(.delData))
            #expect(!(try Self.listed(cb, "*", limit: 1000).contains(id)))
        }
        remote.removeFirst(5)
        #expect(try Self.listed(cb, "vineyard::DataFrame", limit: 6) == expected({ $0 == "vineyard::DataFrame" }, limit: 6))
    }

    /// `trellis_persist_request` in a cluster: the object's records and its name are
    /// there for the other daemon as soon as it returned; what cannot be served (a blob,
    /// an empty name, an object this daemon lacks) is refused before anything is written:
    /// the object stays transient and the name unbound.
    @Test func persistNamedPublishesTheRecordsAndTheNameTogether() async throws {
        let (a, b, ca, cb) = try await Self.pair()
        defer { a.stop(); b.stop() }

        let id = try Self.create(ca, "vineyard::DataFrame", persist: false)
        guard case .createBuffer(let blob, _) = try ca.call(Request.createBuffer(size: 8)) else {
            throw TestFailure("create_buffer refused")
        }
        #expect(try ca.call(Request.seal(blob.objectID)) == .done(.seal))
        let refused: [(Request, String)] = [
            (.persistNamed(blob.objectID, name: "frame"), "blobs cannot have name"),
            (.persistNamed(id, name: ""), "name"),
            (.persistNamed(ObjectID(rawValue: id.rawValue + 2), name: "frame"), ""),
        ]
        for (request, why) in refused {
            guard case .error(let e) = try ca.call(request) else { throw TestFailure("\(request) was served") }
            #expect(e.message.contains(why), "\(request): \(e.message)")
        }
        #expect(try cb.call(Request.getName("frame", wait: false)).errorCode == .objectNotExists)
        #expect(!(try Self.listed(cb, "*", limit: 100).contains(id)))

        #expect(try ca.call(Request.persistNamed(id, name: "frame")) == .done(.persist))
        #expect(try cb.call(Request.getName("frame", wait: false)) == .getName(id))
        #expect(try ca.call(Request.getName("frame", wait: false)) == .getName(id))
        #expect(try Self.listed(cb, "*", limit: 100).contains(id))
        // a second object under the name moves it, as put_name does
        let other = try Self.create(ca, "vineyard::Tensor<int64>", persist: false)
        #expect(try ca.call(Request.persistNamed(other, name: "frame")) == .done(.persist))
        #expect(try cb.call(Request.getName("frame", wait: false)) == .getName(other))
    }
}
