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
    let raw: Int32
    let handler: RequestHandler
    let maxMessageSize: Int
    let logger: Logger
    var state: ConnectionState

    init(raw: Int32, id: ConnectionID, isRPC: Bool, handler: RequestHandler, maxMessageSize: Int, logger: Logger) {
        self.raw = raw
        self.handler = handler
        self.maxMessageSize = maxMessageSize
        self.state = ConnectionState(id: id, isRPC: isRPC)
        var l = logger
        l[metadataKey: "connection.id"] = "\(id)"
        self.logger = l
    }

    mutating func run() {
        var reader = FrameReader(raw: raw, maxMessageSize: maxMessageSize)
        do {
            while true {
                switch try reader.next() {
                case .end:
                    return
                case .tooLarge(let length):
                    // The stream cannot be resynchronised without reading the body: answer and close.
                    logger.warning("oversized frame", metadata: ["frame.length": "\(length)", "frame.limit": "\(maxMessageSize)"])
                    try send(VineyardError(.invalid, "message of \(length) bytes exceeds the limit of \(maxMessageSize) bytes").reply)
                    return
                case .frame(let body):
                    if try !process(body, &reader) { return }
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
    }

    /// Handles one request body; returns false when the connection must close.
    private mutating func process(_ body: UnsafeBufferPointer<UInt8>, _ reader: inout FrameReader) throws(SystemError) -> Bool {
        let message: JSON
        do {
            message = try JSONParser.parse(body)
        } catch {
            try send(VineyardError(.invalid, "Failed to parse the JSON message: \(error)").reply)
            return true
        }
        let outcome: Outcome
        do throws(VineyardError) {
            let request = try Request.decode(message)
            if !state.registered, case .register = request {} else if !state.registered {
                throw VineyardError(.invalid, "The connection is not registered yet, command is: \(try Request.type(of: message))")
            }
            let fd = raw
            outcome = try handler.handle(request, &state, cancelled: { ConnectionLoop.peerClosed(fd) })
        } catch {
            try send(error.reply)
            return true
        }
        switch outcome {
        case .reply(let reply, let sendFD):
            try send(reply)
            if sendFD { try StreamSocket.sendFD(raw, handler.store.arena.fd.raw) }
        case .replyWithBlobBytes(let reply, let ranges):
            try send(reply)
            for r in ranges where r.size > 0 {
                let bytes = UnsafeRawBufferPointer(start: handler.store.arena.address(r.offset), count: r.size)
                try StreamSocket.writeAll(raw, bytes)
            }
        case .receiveBlobBytes(let reply, let blobs, let ranges):
            try send(reply)
            for r in ranges where r.size > 0 {
                try reader.readRaw(into: handler.store.arena.address(r.offset), count: r.size)
            }
            for id in blobs where id != .emptyBlob { try? handler.store.seal(id, connection: state.id) }
            try send(reply)
        case .close:
            return false
        case .none:
            break
        }
        return true
    }

    private func send(_ reply: JSON) throws(SystemError) {
        try StreamSocket.writeAll(raw, Frame.encode(reply))
    }

    /// True once the peer has hung up (EOF or error); pending request bytes do not count.
    static func peerClosed(_ fd: Int32) -> Bool {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, 0) > 0 else { return false }
        if pfd.revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 { return true }
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    }
}
