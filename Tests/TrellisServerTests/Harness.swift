import Logging
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
        clientLimits: ClientLimits = ClientLimits()
    ) throws {
        var template = Array("/tmp/trsXXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw SystemError("mkdtemp") }
        directory = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var cfg = ServerConfig(socketPath: directory + "/d.sock")
        cfg.maxMessageSize = maxMessageSize
        cfg.clientLimits = clientLimits
        if rpc { cfg.rpcPort = 0 }
        store = try ObjectStore(capacity: capacity)
        let bound = try Daemon.bind(cfg)
        listeners = bound.listeners
        config = bound.config
        var logger = Logger(label: "test.daemon")
        logger.logLevel = .critical
        daemon = Daemon(store: store, config: config, logger: logger)
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

    func sendRaw(_ bytes: [UInt8]) throws { try StreamSocket.writeAll(socket.raw, bytes) }

    func send(_ message: JSON) throws { try sendRaw(Frame.encode(message)) }

    /// Reads one reply frame; nil on EOF.
    func receive() throws -> JSON? {
        var header: UInt64 = 0
        let more = try withUnsafeMutableBytes(of: &header) { try socket.readExact(into: $0.baseAddress!, count: 8) }
        guard more else { return nil }
        let n = Int(Frame.length(fromHeader: header))
        var body = [UInt8](repeating: 0, count: n)
        if n > 0 {
            guard try body.withUnsafeMutableBytes({ try socket.readExact(into: $0.baseAddress!, count: n) }) else { return nil }
        }
        return try JSONParser.parse(body)
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

    func register() throws {
        let r = try call(["type": "register_request", "version": "0.24.2", "store_type": 1, "session_id": 0, "username": "", "password": ""])
        precondition(r["type"] == "register_reply")
    }

    /// True once the daemon has closed this connection.
    func isClosedByPeer(waitMilliseconds: Int32 = 2000) -> Bool {
        var pfd = pollfd(fd: socket.raw, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, waitMilliseconds) > 0 else { return false }
        var b: UInt8 = 0
        return recv(socket.raw, &b, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) <= 0
    }
}
