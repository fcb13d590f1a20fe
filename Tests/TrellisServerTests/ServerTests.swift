import Testing
import TrellisProtocol
import TrellisServer
import TrellisStore
import TrellisSystem

#if canImport(Glibc)
import Glibc
import TrellisTestSupport
#endif

@Suite("Daemon over real sockets", .onBlockingPool)
struct ServerTests {
    @Test("binding fails on a taken RPC port and leaves no IPC socket behind; a free one binds both")
    func rpcBoundBeforeIPC() throws {
        var template = Array("/tmp/trbXXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw SystemError("mkdtemp") }
        let directory = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { rmdir(directory) }
        let taken = try Listener.tcp(host: "127.0.0.1", port: 0)
        defer { taken.close() }
        var config = ServerConfig(socketPath: directory + "/d.sock")
        config.rpcPort = taken.port
        #expect(throws: SystemError.self) { _ = try Daemon.bind(config) }
        #expect(access(config.socketPath, F_OK) != 0)
        config.rpcPort = 0
        let bound = try Daemon.bind(config)
        defer { for l in bound.listeners { l.close() } ; unlink(config.socketPath) }
        #expect(bound.listeners.count == 2 && bound.config.rpcPort != 0)
        #expect(access(config.socketPath, F_OK) == 0)
    }

    @Test("an oversized header gets an error and a closed connection; others keep being served")
    func oversized() throws {
        let d = try TestDaemon(maxMessageSize: 1024)
        defer { d.stop() }
        let other = try d.connect()
        try other.register()
        let c = try d.connect()
        try c.register()
        try c.sendRaw(withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { Array($0) })
        let reply = try c.receive()
        #expect(reply?["code"] == 1)
        #expect(reply?["message"]?.stringValue?.contains("exceeds the limit of 1024") == true)
        #expect(c.isClosedByPeer())
        #expect(try other.call(Request.instanceStatus).type == "instance_status_reply")
    }

    @Test("bad JSON, unknown commands and wrong field types are answered and the connection stays")
    func badRequests() throws {
        let d = try TestDaemon()
        defer { d.stop() }
        let c = try d.connect()
        #expect(try c.call(["type": "exists_request", "id": 1])["message"] == "The connection is not registered yet, command is: exists_request")
        try c.register()
        let body = Array("{\"type\": ".utf8)
        try c.sendRaw(withUnsafeBytes(of: UInt64(body.count).littleEndian) { Array($0) } + body)
        #expect(try c.receive()?["code"] == 1)
        #expect(try c.call(["type": "no_such_request"])["message"] == "Got unexpected command: no_such_request")
        #expect(try c.call(["type": "create_buffer_request", "size": "abc"])["code"] == 1)
        #expect(try c.call(Request.seal(ObjectID(5))).errorCode == .objectNotExists)
        #expect(try c.call(Request.getData(ids: [ObjectID(291)], syncRemote: false, wait: false)) == .data([:]))
        #expect(try c.call(["type": "create_buffer_request", "size": .uint(1 << 40)])["code"] == 41)
        #expect(try c.call(["type": "make_arena_request", "size": 1])["code"] == 6)
        #expect(try c.call(Request.instanceStatus).type == "instance_status_reply")
    }

    @Test("a client that dies mid-frame or with unsealed blobs costs nothing")
    func diesMidWrite() throws {
        let d = try TestDaemon()
        defer { d.stop() }
        do {
            let c = try d.connect()
            try c.register()
            for _ in 0..<5 { try c.call(Request.createBuffer(size: 4096)) }
            #expect(d.store.status().memoryUsage == 5 * 4096)
            try c.sendRaw(withUnsafeBytes(of: UInt64(100).littleEndian) { Array($0) } + Array("{\"type\"".utf8))
        }  // closed here, mid-frame
        // The daemon notices the close when its connection thread runs: on a busy machine
        // that can take a while, so wait up to a generous bound.
        let deadline = ContinuousClock.now + .seconds(60)
        var usage = d.store.status().memoryUsage
        while usage != 0 && ContinuousClock.now < deadline {
            usleep(10_000)
            usage = d.store.status().memoryUsage
        }
        #expect(usage == 0)
        let c2 = try d.connect()
        try c2.register()
        #expect(try c2.call(Request.instanceStatus.encode())["meta"]?["ipc_connections"] == 1)
    }

    @Test("the arena fd is sent once per connection, after the reply")
    func fdOnce() throws {
        let d = try TestDaemon()
        defer { d.stop() }
        let c = try d.connect()
        try c.register()
        guard case .createBuffer(let p, let fd) = try c.call(Request.createBuffer(size: 64)) else {
            Issue.record("not a create_buffer_reply")
            return
        }
        #expect(fd == d.store.arena.fd.raw)
        guard case .createBuffer(_, let again) = try c.call(Request.createBuffer(size: 64)),
            case .createBuffer(let empty, _) = try c.call(Request.createBuffer(size: 0))
        else {
            Issue.record("not a create_buffer_reply")
            return
        }
        #expect(again == -1)
        #expect(empty.objectID == .emptyBlob)
        #expect(c.receivedFDs.count == 1)
        // The received descriptor maps the same memory the daemon wrote.
        d.store.arena.address(p.dataOffset).storeBytes(of: 0xC0FFEE, as: UInt64.self)
        let m = try MappedRegion(fd: c.receivedFDs[0], length: p.mapSize - 8, writable: false)
        #expect(m.base.load(fromByteOffset: p.dataOffset, as: UInt64.self) == 0xC0FFEE)
    }

    @Test("get_name with wait is released by a put from another connection, and by the waiter leaving")
    func waitForName() async throws {
        let d = try TestDaemon()
        defer { d.stop() }
        let waiter = try d.connect()
        try waiter.register()
        try waiter.send(Request.getName("later", wait: true).encode())
        let writer = try d.connect()
        try writer.register()
        guard case .createData(let created) = try writer.call(Request.createData(["typename": "x", "instance_id": 0])) else {
            Issue.record("not a create_data_reply")
            return
        }
        let id = created.id
        #expect(try writer.call(Request.persist(id)) == .done(.persist))
        // The waiter's request is parked once its connection thread has read it.
        var parked = 0
        let parkDeadline = ContinuousClock.now + .seconds(60)
        while parked != 1 && ContinuousClock.now < parkDeadline {
            parked = try writer.deferredRequests()
            if parked != 1 { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(parked == 1)
        #expect(try writer.call(Request.putName(id, name: "later")) == .done(.putName))
        #expect(try waiter.receive().map(Reply.decode) == .getName(id))

        do {
            let gone = try d.connect()
            try gone.register()
            try gone.send(Request.getName("never", wait: true).encode())
        }
        // The parked request watches its client's socket; the connection thread may still
        // take a while to run on a busy machine: allow a generous bound.
        var deferred = 1
        let goneDeadline = ContinuousClock.now + .seconds(60)
        while deferred != 0 && ContinuousClock.now < goneDeadline {
            try await Task.sleep(for: .milliseconds(20))
            deferred = try writer.deferredRequests()
        }
        #expect(deferred == 0)
    }

    @Test("many concurrent clients each see their own results")
    func concurrent() async throws {
        let d = try TestDaemon()
        defer { d.stop() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for n in 0..<8 {
                let path = d.config.socketPath
                group.addTask {
                    let c = try RawClient(unixPath: path)
                    try c.register()
                    for i in 0..<200 {
                        guard case .createData(let r) = try c.call(Request.createData(["typename": "t", "instance_id": 0, "v": .number(n * 1000 + i)])),
                            case .data(let got) = try c.call(Request.getData(ids: [r.id], syncRemote: false, wait: false))
                        else {
                            Issue.record("unexpected reply")
                            return
                        }
                        #expect(got.values.first?["v"] == .number(n * 1000 + i))
                        #expect(try c.call(Request.delete([r.id], force: false, deep: true, memoryTrim: false)) == .done(.delData))
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(d.store.status().objects == 0)
    }

    @Test("RPC: blobs are written and read inline on TCP")
    func rpcBlobs() throws {
        let d = try TestDaemon(rpc: true)
        defer { d.stop() }
        let c = try d.connectRPC()
        guard case .register(let reg) = try c.call(Request.register()) else {
            Issue.record("not a register_reply")
            return
        }
        #expect(reg.rpcEndpoint == "localhost:\(d.config.rpcPort!)")
        #expect(!reg.supportsRPCCompression)
        try c.send(Request.createRemoteBuffer(size: 16, compress: false).encode())
        guard case .createBuffer(let go, _) = try Reply.decode(try #require(try c.receive())) else {
            Issue.record("not a create_buffer_reply")
            return
        }
        try c.sendRaw(Array(0..<16))
        guard case .createBuffer(let sealed, _) = try Reply.decode(try #require(try c.receive())) else {
            Issue.record("not a create_buffer_reply")
            return
        }
        #expect(sealed.objectID == go.objectID)
        try c.send(Request.getRemoteBuffers(ids: [go.objectID], unsafe: false, compress: false).encode())
        guard case .getBuffers(let ps, let fds, _) = try Reply.decode(try #require(try c.receive())) else {
            Issue.record("not a get_buffers_reply")
            return
        }
        #expect(fds.isEmpty && ps.map(\.objectID) == [go.objectID])
        #expect(try c.receiveBytes(16) == Array(0..<16))
        guard case .error(let e) = try c.call(Request.createBuffer(size: 8)) else {  // fds need IPC
            Issue.record("create_buffer over RPC was not refused")
            return
        }
        #expect(e.code == .invalid)
    }
}

@Suite("vineyardd command line", .onBlockingPool)
struct OptionsTests {
    @Test("gflags spellings")
    func spellings() throws {
        let o = try DaemonOptions.parse([
            "--deployment", "local", "--size", "", "--socket", "/tmp/s", "--norpc", "-rpc_socket_port", "9601",
            "--meta=local", "--etcd_endpoint=http://127.0.0.1:2379", "--reserve_memory=true", "-v", "11", "--logtostderr",
        ])
        #expect(o.socket == "/tmp/s" && o.size == nil && !o.rpc && o.rpcPort == 9601 && o.reserveMemory)
        #expect(try DaemonOptions.parse(["--rpc=false"]).rpc == false)
        #expect(try DaemonOptions.parse(["--rpc"]).rpc == true)
        let trellisOwn = try DaemonOptions.parse(["--reserve_memory", "--reserve_in_background", "--notransparent_huge_pages"])
        #expect(trellisOwn.reserveMemory && trellisOwn.reserveInBackground && !trellisOwn.transparentHugePages)
        #expect(try DaemonOptions.parse([]).transparentHugePages)
        #expect(try DaemonOptions.parse(["--log-level", "debug"]).logLevel == "debug")
        #expect(throws: DaemonOptions.ParseError.self) { try DaemonOptions.parse(["--no_such_flag"]) }
        #expect(throws: DaemonOptions.ParseError.self) { try DaemonOptions.parse(["--meta", "redis"]) }
        #expect(throws: DaemonOptions.ParseError.self) { try DaemonOptions.parse(["--rpc_socket_port"]) }
    }

    @Test("metrics: --metrics_port, and vineyardd's --prometheus/--metrics")
    func metricsFlags() throws {
        #expect(try DaemonOptions.parse([]).metricsListen == nil)
        let explicit = try DaemonOptions.parse(["--metrics_port", "0"]).metricsListen
        #expect(explicit?.port == 0 && explicit?.required == true)
        let both = try DaemonOptions.parse(["--metrics", "--metrics-port=9200"]).metricsListen
        #expect(both?.port == 9200 && both?.required == true)
        for flag in ["--prometheus", "--metrics", "--metrics=true", "-prometheus"] {
            let compat = try DaemonOptions.parse([flag]).metricsListen
            #expect(compat?.port == DaemonOptions.defaultMetricsPort && compat?.required == false, "\(flag)")
        }
        #expect(try DaemonOptions.parse(["--nometrics"]).metricsListen == nil)
        #expect(try DaemonOptions.parse(["--prometheus=false"]).ignored.isEmpty)
        #expect(throws: DaemonOptions.ParseError.self) { try DaemonOptions.parse(["--metrics_port", "70000"]) }
        #expect(throws: DaemonOptions.ParseError.self) { try DaemonOptions.parse(["--metrics_port"]) }
    }

    @Test("sizes use binary suffixes", arguments: [
        ("4Gi", 4 << 30), ("512M", 512 << 20), ("1G", 1 << 30), ("1.5k", 1536), ("100", 100), ("2gigabytes", 2 << 30), ("1e3", 1000),
    ])
    func sizes(text: String, bytes: Int) throws {
        #expect(try DaemonOptions.parseSize(text) == bytes)
    }

    @Test("empty or non-positive sizes mean the default; junk is an error")
    func sizeDefaults() throws {
        #expect(try DaemonOptions.parseSize("") == nil)
        #expect(try DaemonOptions.parseSize("0") == nil)
        #expect(throws: DaemonOptions.ParseError.self) { try DaemonOptions.parseSize("lots") }
        #expect(throws: DaemonOptions.ParseError.self) { try DaemonOptions.parseSize("3x") }
    }

    @Test("socket path resolution")
    func socketPath() {
        var o = DaemonOptions()
        #expect(o.resolvedSocketPath(environment: ["VINEYARD_IPC_SOCKET": "/tmp/v.sock"]) == "/tmp/v.sock")
        o.socket = "/tmp/x.sock"
        #expect(o.resolvedSocketPath(environment: ["VINEYARD_IPC_SOCKET": "/tmp/v.sock"]) == "/tmp/x.sock")
    }
}
