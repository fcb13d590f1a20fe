import Logging
import TrellisClient
import TrellisMeta
import TrellisProtocol
import TrellisServer
import TrellisStore
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// An in-process daemon on a short, unique socket path (and optionally RPC on a free
/// loopback port), stopped when the test is done.
final class TestDaemon: @unchecked Sendable {
    // Sendable: immutable after init; `stop` is idempotent and called once by tests.
    let store: ObjectStore
    let daemon: Daemon
    let listeners: [Listener]
    let config: ServerConfig
    let directory: String

    init(
        capacity: Int = 64 << 20, rpc: Bool = false, maxMessageSize: Int = Frame.defaultMaxMessageSize,
        clientLimits: ClientLimits = ClientLimits(), meta: MetaCore? = nil, instanceID: UInt64 = 0
    ) throws {
        var template = Array("/tmp/trsXXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw SystemError("mkdtemp") }
        directory = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var cfg = ServerConfig(socketPath: directory + "/d.sock")
        cfg.maxMessageSize = maxMessageSize
        cfg.clientLimits = clientLimits
        if rpc { cfg.rpcPort = 0 }
        store = try ObjectStore(capacity: capacity, instanceID: instanceID)
        let bound = try Daemon.bind(cfg)
        listeners = bound.listeners
        config = bound.config
        var logger = Logger(label: "test.daemon")
        logger.logLevel = .critical
        daemon = Daemon(store: store, config: config, logger: logger, meta: meta)
        try daemon.run(listeners: listeners)
    }

    func stop() {
        daemon.stop(listeners)
        rmdir(directory)
    }

    func connect() throws -> RawClient { try RawClient(unixPath: config.socketPath) }
    func connectRPC() throws -> RawClient { try RawClient(host: "127.0.0.1", port: config.rpcPort!) }
}

/// A protocol client that writes frames by hand, for testing the daemon's replies
/// to exactly what is sent (including malformed input).
final class RawClient {
    let socket: StreamSocket
    /// Descriptors received, closed with the client.
    var receivedFDs: [Int32] = []

    deinit { for fd in receivedFDs { close(fd) } }

    init(unixPath: String) throws { socket = try StreamSocket.connect(unixPath: unixPath) }
    init(host: String, port: Int) throws { socket = try StreamSocket.connect(host: host, port: port) }

    func sendRaw(_ bytes: [UInt8]) throws { try socket.descriptor.writeAll(bytes) }

    func send(_ message: JSON) throws { try sendRaw(Frame.encode(message)) }

    /// The client's frame channel over this socket (the one frame reader clients use).
    lazy var channel = Channel(socket: socket.descriptor, maxReplySize: Frame.defaultMaxMessageSize)

    /// Reads one reply frame; nil once the daemon closed the connection.
    func receive() throws -> JSON? {
        do {
            return try channel.receive()
        } catch where error.kind == .connectionLost {
            return nil
        }
    }

    func receiveBytes(_ n: Int) throws -> [UInt8] {
        var body = [UInt8](repeating: 0, count: n)
        if n > 0 { _ = try body.withUnsafeMutableBytes { try socket.readExact(into: $0.baseAddress!, count: n) } }
        return body
    }

    func receiveFD() throws { receivedFDs.append(try socket.receiveFD().release()) }

    /// Sends a request and returns the reply, consuming the fd carriers it announces.
    @discardableResult
    func call(_ message: JSON) throws -> JSON {
        try send(message)
        guard let reply = try receive() else { throw SystemError("daemon closed the connection", errno: ECONNRESET) }
        let announced: Int
        if let fd = reply["fd"]?.int64Value { announced = fd >= 0 ? 1 : 0 } else { announced = reply["fds"]?.arrayValue?.count ?? 0 }
        for _ in 0..<announced { try receiveFD() }
        return reply
    }

    /// Sends a typed request and decodes the reply with TrellisProtocol's codec, consuming
    /// the fd carriers it announces. Error replies come back as `.error`.
    @discardableResult
    func call(_ request: Request) throws -> Reply {
        try Reply.decode(try call(request.encode()))
    }

    /// The daemon's count of parked requests (`instance_status`).
    func deferredRequests() throws -> Int {
        guard case .instanceStatus(let meta) = try call(Request.instanceStatus) else { return -1 }
        return meta["deferred_requests"]?.intValue ?? -1
    }

    func register() throws {
        guard case .register = try call(Request.register()) else { throw SystemError("register refused", errno: EPROTO) }
    }

    /// True once the daemon has closed this connection.
    func isClosedByPeer(waitMilliseconds: Int32 = 2000) -> Bool {
        var pfd = pollfd(fd: socket.raw, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, waitMilliseconds) > 0 else { return false }
        var b: UInt8 = 0
        return recv(socket.raw, &b, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) <= 0
    }
}

extension Reply {
    /// The status code of an error reply; nil for any other reply.
    var errorCode: StatusCode? {
        if case .error(let e) = self { return e.code }
        return nil
    }
}
