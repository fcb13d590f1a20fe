import Testing
import TrellisProtocol

@testable import TrellisClient

#if canImport(Glibc)
import Glibc
import TrellisTestSupport
#endif

/// The client against a real `trellis serve` child process.
@Suite("Client against a daemon", .serialized, .onBlockingPool)
struct ClientTests {
    @Test("registers and reports the daemon's instance, version and status")
    func register() throws {
        try DaemonProcess.with { d in
            let c = try d.connect()
            defer { c.close() }
            #expect(c.server.instanceID == 0)
            #expect(c.server.version == "0.24.2")
            #expect(c.server.ipcSocket == d.socketPath)
            let status = try c.instanceStatus()
            #expect(status.memoryLimit == 256 << 20)
            #expect(status.ipcConnections >= 1)
            #expect(status.freeBytes != nil)
            #expect(status.objects == 0)
            let cluster = try c.clusterMeta()
            #expect(cluster.map(\.instanceID) == [0])
            #expect(cluster.first?.ipcSocket == d.socketPath)
        }
    }

    @Test("connecting where no daemon listens fails with ConnectionFailed")
    func noDaemon() {
        let error = failure { () throws(ClientError) in _ = try Client(socket: "/tmp/trellis-no-such-daemon.sock") }
        #expect(error?.kind == .connectionFailed)
        #expect(error?.code == .connectionFailed)
        #expect(error?.description.contains("/tmp/trellis-no-such-daemon.sock") == true)
    }

    @Test("blobs: create, write, seal, read back zero-copy from one mapping per arena")
    func blobs() throws {
        try DaemonProcess.with { d in
            let c = try d.connect()
            let w = try c.createBlob(size: 1000)
            #expect(w.id.isBlob)
            w.withUnsafeMutableBytes { b in for i in 0..<b.count { b[i] = UInt8(truncatingIfNeeded: i * 7) } }
            let sealed = try c.seal(w)
            #expect(sealed.count == 1000)

            let other = try d.connect()
            let got = try other.getBlob(w.id)
            #expect(got.count == 1000)
            #expect(got.isSharedMemory)
            #expect(got.copyBytes() == (0..<1000).map { UInt8(truncatingIfNeeded: $0 * 7) })
            let bounds = try #require(got.mappingBounds)
            #expect(got.address >= bounds.base && got.address + UInt(got.count) <= bounds.base + UInt(bounds.length))

            // A second blob comes from the same arena: the same mapping, no new fd.
            let second = try c.putBlob([1, 2, 3])
            let both = try other.getBlobs([w.id, second.id])
            #expect(both[second.id]?.copyBytes() == [1, 2, 3])
            #expect(both[second.id]?.mappingBounds?.base == bounds.base)
            try other.withChannel { (ch) throws(ClientError) in #expect(ch.arenas.count == 1) }

            // create_buffers: several at once.
            let many = try c.createBlobs(sizes: [8, 0, 16])
            #expect(many.map(\.count) == [8, 0, 16])
            #expect(many[1].id == .emptyBlob)
            for m in many { try c.seal(m) }

            // Unknown ids are left out; a missing single blob is ObjectNotExists.
            let missing = ObjectID(1 << 63 | 12345)
            #expect(try other.getBlobs([missing]).isEmpty)
            #expect(failure { () throws(ClientError) in _ = try other.getBlob(missing) }?.code == .objectNotExists)

            // Unsealed blobs are refused unless unsafe.
            let open = try c.createBlob(size: 4)
            let unsealed = failure { () throws(ClientError) in _ = try other.getBlob(open.id) }
            #expect(unsealed?.kind == .daemon)
            #expect(unsealed?.code == .objectNotSealed)
            #expect(try other.getBlob(open.id, unsafe: true).count == 4)
            try c.dropBlob(open.id)
            #expect(try !c.exists(open.id))

            // The empty blob never needs the daemon.
            #expect(try c.getBlob(.emptyBlob).isEmpty)
            c.close()
            other.close()
            // Views stay readable after the connection closed: the mapping lives with them.
            #expect(got.copyBytes().count == 1000)
            #expect(throws: ClientError.self) { try other.exists(w.id) }
        }
    }

    @Test("metadata: create, get, list, persist, delete")
    func metadata() throws {
        try DaemonProcess.with { d in
            let c = try d.connect()
            defer { c.close() }
            let blob = try c.putBlob([9, 8, 7, 6])
            var meta = ObjectMeta(typename: "trellis::Test")
            meta["answer"] = 42
            meta["label"] = "hello"
            meta.addMember("payload", blob)
            let created = try c.createMetadata(meta)
            let id = try #require(created.id)
            #expect(!id.isBlob)
            #expect(created.instanceID == 0)
            #expect(created.signature != nil)

            let back = try c.getMetadata(id)
            #expect(back.typename == "trellis::Test")
            #expect(back["answer"] == 42)
            #expect(back.string("label") == "hello")
            #expect(back.isTransient)
            #expect(back.member("payload")?.id == blob.id)
            #expect(back.blobReferences.map(\.id) == [blob.id])

            let object = try c.getObject(id)
            #expect(try object.blob("payload").copyBytes() == [9, 8, 7, 6])

            let listed = try c.listMetadata(pattern: "trellis::*", limit: 10)
            #expect(listed.compactMap(\.id) == [id])
            #expect(try c.listMetadata(pattern: "nothing::*").isEmpty)

            #expect(try !c.isPersistent(id))
            try c.persist(id)
            #expect(try c.isPersistent(id))
            #expect(try !c.getMetadata(id).isTransient)

            // A placeholder member is resolved by the daemon and read back in full.
            var parent = ObjectMeta(typename: "trellis::Parent")
            parent.addMember("child", placeholder: id)
            let p = try c.createMetadata(parent)
            #expect(p.member("child")?.typename == "trellis::Test")

            #expect(try c.exists(id))
            try c.delete(try #require(p.id), force: true)
            try c.delete(id, force: true)
            #expect(try !c.exists(id))
            #expect(try !c.exists(blob.id))
            #expect(failure { () throws(ClientError) in _ = try c.getMetadata(id) }?.isNotFound == true)
            // Invalid metadata is the daemon's error, and the connection survives it.
            let reserved = failure { () throws(ClientError) in _ = try c.createMetadata(ObjectMeta(typename: "vineyard::Blob")) }
            #expect(reserved?.kind == .daemon)
            #expect(reserved?.code == .assertionFailed)
            #expect(!c.isClosed)
        }
    }

    @Test("names: put, get, wait, list, drop")
    func names() async throws {
        let d = try DaemonProcess()
        defer { d.stop() }
        let c = try d.connect()
        defer { c.close() }
        let t = try c.putTensor([1, 2, 3] as [Int64])
        #expect(failure { () throws(ClientError) in try c.putName("n", for: t.id) }?.code == .invalid)
        #expect(c.server.extensions.contains("persist_name"))  // publish: one request
        try c.publish(t.id, as: "first")
        #expect(try c.getName("first") == t.id)
        #expect(try c.isPersistent(t.id))
        #expect(try c.resolve("first") == t.id)
        #expect(try c.resolve(t.id.description) == t.id)
        let absent = failure { () throws(ClientError) in _ = try c.getName("absent") }
        #expect(absent?.code == .objectNotExists)
        #expect(absent?.isNotFound == true)

        // A waiting get_name is answered once another connection puts the name.
        let waiter = AsyncClient(try d.connect())
        async let waited = waiter.getName("later", wait: true)
        try await Task.sleep(for: .milliseconds(200))
        try c.putName("later", for: t.id)
        #expect(try await waited == t.id)

        let names = try c.listNames(limit: 100)
        #expect(names == [NamedObject(name: "first", id: t.id), NamedObject(name: "later", id: t.id)])
        #expect(try c.listNames(pattern: "f*", limit: 100).map(\.name) == ["first"])
        try c.dropName("first")
        try c.dropName("first")  // missing is fine
        #expect(try c.listNames(limit: 100).map(\.name) == ["later"])
        await waiter.close()
    }

    @Test("a cancelled wait breaks its connection instead of hanging")
    func cancelledWait() async throws {
        let d = try DaemonProcess()
        defer { d.stop() }
        let waiter = AsyncClient(try d.connect())
        let task = Task.onBlockingPool { try await waiter.getName("never", wait: true) }
        try await Task.sleep(for: .milliseconds(100))
        task.cancel()
        let result = await task.result
        #expect(throws: ClientError.self) { try result.get() }
        #expect(waiter.client.isClosed)
    }

    @Test("many tasks share one client; requests are serialised")
    func concurrentTasks() async throws {
        let d = try DaemonProcess()
        defer { d.stop() }
        let client = AsyncClient(try d.connect())
        let ids = try await withThrowingTaskGroup(of: (Int, ObjectID).self) { group in
            for i in 0..<16 {
                group.addTask {
                    let t = try await client.putTensor([Int64](repeating: Int64(i), count: 100))
                    return (i, t.id)
                }
            }
            var out: [Int: ObjectID] = [:]
            for try await (i, id) in group { out[i] = id }
            return out
        }
        #expect(ids.count == 16)
        for (i, id) in ids {
            let t = try await client.get(Tensor<Int64>.self, id)
            #expect(t.allSatisfy { $0 == Int64(i) })
        }
        await client.close()
    }

    @Test("RPC transport: blob bytes travel inline; objects written over RPC read over IPC and back")
    func rpc() throws {
        try DaemonProcess.with(rpc: true) { d in
            let remote = try d.connectRPC()
            defer { remote.close() }
            #expect(remote.isRPC)
            let ipc = try d.connect()
            defer { ipc.close() }

            // Written over TCP, read from shared memory.
            let t = try remote.putTensor((0..<1000).map { Double($0) / 8 }, shape: [10, 100])
            #expect(!t.blob.isSharedMemory)
            let back = try ipc.get(Tensor<Double>.self, t.id)
            #expect(back.shape == [10, 100])
            #expect(Array(back) == (0..<1000).map { Double($0) / 8 })
            #expect(back.blob.isSharedMemory)

            // Written to shared memory, read over TCP (get_remote_buffers).
            let frame = try ipc.createDataFrame(columns: [(name: "n", values: try ipc.putTensor([1, 2, 3] as [Int64]).base)])
            let copy = try remote.get(DataFrame.self, frame.id)
            #expect(Array(try #require(copy["n"]).typed(Int64.self)) == [1, 2, 3])
            #expect(copy.index?.isDefaultRange == true)
            #expect(try #require(copy["n"]).blob.isSharedMemory == false)
            let empty = try remote.get(AnyTensor.self, try ipc.putTensor([Double]()).id)
            #expect(empty.count == 0 && empty.blob.isEmpty)

            // Several blobs in one create/get, including an empty one.
            let writers = try remote.createBlobs(sizes: [3, 0, 5])
            writers[0].withUnsafeMutableBytes { b in for i in 0..<3 { b[i] = UInt8(i + 1) } }
            var sealed: [Blob] = []
            for w in writers { sealed.append(try remote.seal(w)) }
            #expect(sealed[1].id == .emptyBlob)
            let fetched = try remote.getBlobs(sealed.map(\.id))
            #expect(fetched[sealed[0].id]?.copyBytes() == [1, 2, 3])
            #expect(fetched[sealed[2].id]?.count == 5)
            #expect(try ipc.getBlob(sealed[2].id).copyBytes() == [0, 0, 0, 0, 0])
        }
    }
}
