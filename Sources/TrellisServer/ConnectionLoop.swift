import CTrellisShim
import Logging
import TrellisProtocol
import TrellisStore
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// Serves one client connection on the calling thread: read a frame, decide, reply,
/// strictly in order, until the client leaves or the daemon stops.
struct ConnectionLoop {
    let socket: Descriptor
    /// The session served; an RPC register with another session id switches it.
    private(set) var handler: RequestHandler
    let maxMessageSize: Int
    let logger: Logger
    var state: ConnectionState
    /// The last reply was large: free heap goes back to the OS once the request is done.
    var largeReply = false
    /// The request being served, for its metrics: its wire type (nil: not parsed) and status.
    private var requestType: String?
    private var requestStatus: StatusCode = .ok

    init(socket: Descriptor, id: ConnectionID, isRPC: Bool, handler: RequestHandler, maxMessageSize: Int, logger: Logger) {
        self.socket = socket
        self.handler = handler
        self.maxMessageSize = maxMessageSize
        self.state = ConnectionState(id: id, isRPC: isRPC)
        state.socket = socket
        if !isRPC {
            state.peer = socket.peerProcess()
        }
        var l = logger
        l[metadataKey: "connection.id"] = "\(id)"
        self.logger = l
    }

    mutating func run() {
        if let peer = state.peer {
            guard handler.admitConnection(peer) else {
                // Answer the first request with the reason, then close.
                let limit = handler.config.clientLimits.connections
                logger.warning("client over its connection limit", metadata: ["peer.pid": "\(peer)", "limit": "\(limit)"])
                var reader = FrameReader(socket: socket, maxMessageSize: maxMessageSize)
                if case .frame? = try? reader.next() {
                    _ = try? send(.error(VineyardError(.invalid, "too many connections from this client (pid \(peer)): the limit is \(limit)")))
                }
                return
            }
        }
        defer { if let peer = state.peer { handler.releaseConnection(peer) } }
        var reader = FrameReader(socket: socket, maxMessageSize: maxMessageSize)
        do {
            while true {
                switch try reader.next() {
                case .end:
                    return
                case .tooLarge(let length):
                    // The stream cannot be resynchronised without reading the body: answer and close.
                    logger.warning("oversized frame", metadata: ["frame.length": "\(length)", "frame.limit": "\(maxMessageSize)"])
                    try send(.error(VineyardError(.invalid, "message of \(length) bytes exceeds the limit of \(maxMessageSize) bytes")))
                    return
                case .frame(let body):
                    let large = body.count >= Self.largeFrame
                    if try !process(body, &reader) { return }
                    // A large request or reply grew the reader's buffer and this thread's
                    // heap: once it is answered, hand the memory back, so that an idle
                    // connection keeps none of it.
                    if large || largeReply {
                        largeReply = false
                        reader.shrinkIfIdle()
                        trellis_malloc_trim()
                    }
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
    }

    /// Handles one request body; returns false when the connection must close. With
    /// metrics on, counts it by type and status and records its latency (frame to reply).
    private mutating func process(_ body: UnsafeBufferPointer<UInt8>, _ reader: inout FrameReader) throws(SystemError) -> Bool {
        guard let metrics = handler.config.metrics else { return try serve(body, &reader) }
        let start = Self.monotonicNanoseconds()
        requestType = nil
        requestStatus = .ok
        defer {
            metrics.recordRequest(type: requestType, status: requestStatus, nanoseconds: Self.monotonicNanoseconds() - start)
        }
        return try serve(body, &reader)
    }

    static func monotonicNanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    private mutating func serve(_ body: UnsafeBufferPointer<UInt8>, _ reader: inout FrameReader) throws(SystemError) -> Bool {
        let outcome: Outcome
        do throws(VineyardError) {
            let request: Request
            // A registered connection's hot requests skip the JSON tree (`Request.scan`);
            // anything else, and any error, goes the general way.
            if state.registered, let fast = Request.scan(body) {
                if handler.config.metrics != nil { requestType = fast.type }
                request = fast.request
            } else {
                request = try decodeGeneral(body)
            }
            let socket = socket
            outcome = try handler.handle(request, &state, cancelled: { socket.peerHasClosed() })
        } catch {
            requestStatus = error.code
            try send(.error(error))
            return true
        }
        switch outcome {
        case .reply(let reply, let sendFD):
            if try send(reply) {
                if sendFD { try socket.sendFD(handler.store.arena.fd.descriptor) }
            } else if sendFD {
                state.arenaFDSent = false  // the refused reply did not carry the descriptor
            }
        case .replyWithBlobBytes(let reply, let ranges):
            guard try send(reply) else { return true }
            for r in ranges where r.size > 0 {
                let bytes = UnsafeRawBufferPointer(start: handler.store.arena.address(r.offset), count: r.size)
                try socket.writeAll(bytes)
            }
        case .receiveBlobBytes(let reply, let blobs, let ranges):
            guard try send(reply) else { return false }  // the client would send bytes nobody reads
            for r in ranges where r.size > 0 {
                try reader.readRaw(into: handler.store.arena.address(r.offset), count: r.size)
            }
            for id in blobs where id != .emptyBlob { try? handler.store.seal(id, connection: state.id) }
            try send(reply)
        case .close:
            return false
        case .replyThenClose(let reply):
            try send(reply)
            return false
        case .none:
            break
        }
        return true
    }

    /// The general path: parse the JSON, decode it, and check the connection may send it.
    private mutating func decodeGeneral(_ body: UnsafeBufferPointer<UInt8>) throws(VineyardError) -> Request {
        let message: JSON
        do {
            message = try JSONParser.parse(body)
        } catch {
            throw VineyardError(.invalid, "Failed to parse the JSON message: \(error)")
        }
        if handler.config.metrics != nil { requestType = message["type"]?.stringValue }
        let request = try Request.decode(message)
        if !state.registered, case .register = request {} else if !state.registered {
            throw VineyardError(.invalid, "The connection is not registered yet, command is: \(try Request.type(of: message))")
        }
        if case .register(let r) = request, state.isRPC, r.sessionID != handler.config.sessionID {
            // RPC attaches the connection to the session it names (IPC: the socket decides)
            guard !state.registered else {
                throw VineyardError(.invalid, "register: a registered connection cannot move to another session")
            }
            guard let other = handler.sessions?.handler(r.sessionID) else {
                throw VineyardError(.invalid, "Session (sid = \(Sessions.label(r.sessionID))) not exit")
            }
            handler = other
        }
        return request
    }

    /// Frames at least this large are followed by returning free heap to the OS.
    static let largeFrame = 1 << 20

    /// Sends `reply`, or — when it is larger than the message limit, which binds replies
    /// as it binds requests — an Invalid error instead; false when it was refused.
    @discardableResult
    private mutating func send(_ reply: Reply) throws(SystemError) -> Bool {
        let frame = reply.frame()
        let length = frame.count - Frame.headerSize
        guard length <= maxMessageSize else {
            logger.warning("oversized reply refused", metadata: ["frame.length": "\(length)", "frame.limit": "\(maxMessageSize)"])
            let error = VineyardError(
                .invalid,
                "the reply of \(length) bytes exceeds the message limit of \(maxMessageSize) bytes: ask for less (a smaller limit, fewer ids)")
            largeReply = true
            requestStatus = .invalid
            try socket.writeAll(Reply.error(error).frame())
            return false
        }
        if length >= Self.largeFrame { largeReply = true }
        try socket.writeAll(frame)
        return true
    }
}
