import Synchronization
import TrellisProtocol
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// A connection to a Vineyard-protocol daemon (Trellis or upstream vineyardd 0.24.2),
/// with a blocking API.
///
/// Over IPC (a UNIX socket) blobs live in the daemon's shared memory: each arena fd the
/// daemon passes is mapped once per connection and blob views point straight into it.
/// Over RPC (TCP) blob bytes travel inline on the socket and views point into private copies.
///
/// A `Client` is `Sendable`: several threads or tasks may share it, and their requests
/// are serialised (one request in flight per connection, as the protocol requires).
/// For concurrency, open one client per task, or use ``AsyncClient`` to keep blocking
/// calls off the cooperative thread pool.
///
/// ```swift
/// let client = try Client()                       // $VINEYARD_IPC_SOCKET
/// let t = try client.putTensor([1, 2, 3] as [Int64])
/// let back = try client.get(Tensor<Int64>.self, t.id)
/// ```
public final class Client: Sendable {
    /// How a client reaches its daemon.
    public enum Transport: Sendable, Equatable, CustomStringConvertible {
        /// A UNIX-domain socket; blobs are shared memory.
        case ipc(socketPath: String)
        /// TCP to the daemon's RPC port; blob bytes travel on the socket.
        case rpc(host: String, port: Int)

        public var description: String {
            switch self {
            case .ipc(let path): return path
            case .rpc(let host, let port): return "\(host):\(port)"
            }
        }
    }

    /// Where this client is connected.
    public let transport: Transport
    /// What the daemon reported at registration.
    public let server: ServerInfo
    /// Owns the socket until the client goes away, so that its descriptor number stays
    /// ours and ``interrupt()`` can never hit a reused one.
    private let socket: StreamSocket
    private let channel: Mutex<Channel?>

    /// The socket used when none is given: `$VINEYARD_IPC_SOCKET`, else `/var/run/vineyard.sock`.
    public static var defaultSocketPath: String {
        if let p = getenv("VINEYARD_IPC_SOCKET"), p.pointee != 0 { return String(cString: p) }
        return "/var/run/vineyard.sock"
    }

    /// The user and password a client registers with (for a daemon run with `--htpasswd`):
    /// `$TRELLIS_USERNAME` and `$TRELLIS_PASSWORD`, else empty.
    public static var defaultCredentials: (username: String, password: String) {
        func env(_ name: String) -> String {
            guard let p = getenv(name) else { return "" }
            return String(cString: p)
        }
        return (env("TRELLIS_USERNAME"), env("TRELLIS_PASSWORD"))
    }

    /// Connects over IPC to `socketPath` (default ``defaultSocketPath``) and registers, with
    /// `credentials` (default ``defaultCredentials``) for a daemon that requires them.
    ///
    /// - Throws: ``ClientError/Kind/connectionFailed`` when no daemon answers there.
    public convenience init(
        socket socketPath: String? = nil, maxReplySize: Int = 256 << 20,
        credentials: (username: String, password: String) = Client.defaultCredentials
    ) throws(ClientError) {
        let path = socketPath ?? Self.defaultSocketPath
        let socket: StreamSocket
        do {
            socket = try StreamSocket.connect(unixPath: path)
        } catch {
            throw ClientError(.connectionFailed, "cannot connect to the daemon at \(path)", systemError: error)
        }
        try self.init(transport: .ipc(socketPath: path), socket: socket, maxReplySize: maxReplySize, credentials: credentials)
    }

    /// Connects over RPC (TCP) to `host:port` and registers with `session`.
    public convenience init(
        host: String, port: Int, session: UInt64 = 0, maxReplySize: Int = 256 << 20,
        credentials: (username: String, password: String) = Client.defaultCredentials
    ) throws(ClientError) {
        let socket: StreamSocket
        do {
            socket = try StreamSocket.connect(host: host, port: port)
        } catch {
            throw ClientError(.connectionFailed, "cannot connect to the daemon at \(host):\(port)", systemError: error)
        }
        try self.init(
            transport: .rpc(host: host, port: port), socket: socket, maxReplySize: maxReplySize, session: session,
            credentials: credentials)
    }

    private init(
        transport: Transport, socket: consuming StreamSocket, maxReplySize: Int, session: UInt64 = 0,
        credentials: (username: String, password: String)
    ) throws(ClientError) {
        let ch = Channel(socket: socket.descriptor, maxReplySize: maxReplySize)
        try ch.send(Request.register(sessionID: session, username: credentials.username, password: credentials.password))
        let info = try Replies.register(try ch.receive())
        self.transport = transport
        self.server = info
        self.socket = socket
        self.channel = Mutex(ch)
    }

    deinit {
        close()
    }

    /// True when blob bytes travel on the socket (TCP) rather than through shared memory.
    public var isRPC: Bool {
        if case .rpc = transport { return true }
        return false
    }

    /// The instance id written into metadata this client creates: the daemon's instance.
    public var instanceID: UInt64 { server.instanceID }

    /// Says goodbye (`exit_request`) and closes the socket. Blobs already obtained stay
    /// readable (see ``Blob``); further calls fail with ``ClientError/Kind/connectionLost``.
    public func close() {
        let ch = channel.withLock { (c: inout Channel?) -> sending Channel? in
            let old = c
            c = nil
            return old
        }
        guard let ch else { return }
        try? ch.send(Request.exit)
        ch.socket.shutdown()
    }

    /// Breaks the connection at once, without waiting for the request in flight (which
    /// then fails with ``ClientError/Kind/connectionLost``): how a blocked wait is cancelled.
    /// Safe from any thread, at any time.
    public func interrupt() {
        socket.descriptor.shutdown()
    }

    /// True once ``close()`` was called or the connection broke.
    public var isClosed: Bool { channel.withLock { $0 == nil } }

    // MARK: The one path to the socket

    /// Runs `body` with the connection to itself. A failure other than an error reply
    /// leaves the conversation out of step, so the connection is dropped.
    func withChannel<R: Sendable>(_ body: (Channel) throws(ClientError) -> R) throws(ClientError) -> R {
        try channel.withLock { (c: inout Channel?) throws(ClientError) -> sending R in
            guard let ch = c else { throw ClientError(.connectionLost, "the connection is closed") }
            do throws(ClientError) {
                return try body(ch)
            } catch {
                if error.kind != .daemon {
                    c = nil
                    ch.socket.shutdown()
                }
                throw error
            }
        }
    }

    /// Sends `request` and returns the raw reply (``Replies`` reads it).
    func call(_ request: Request) throws(ClientError) -> JSON {
        try call(request.encode())
    }

    /// Sends a request body and returns the raw reply.
    func call(_ request: JSON) throws(ClientError) -> JSON {
        try withChannel { (ch) throws(ClientError) -> JSON in
            try ch.send(request)
            return try ch.receive()
        }
    }

    /// Sends a raw request and returns the raw reply, for commands this API does not wrap.
    /// Error replies are thrown as ``ClientError/Kind/daemon``. Do not use it for commands
    /// that carry fds or blob bytes after the reply.
    public func request(_ message: JSON) throws(ClientError) -> JSON {
        let reply = try call(message)
        if case .error(let e)? = try? Reply.decode(reply) { throw ClientError(daemon: e) }
        return reply
    }
}
