import TrellisProtocol
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// One connection's socket and what it received so far: the blocking I/O half of the
/// client. Not thread-safe on its own — ``Client`` owns it behind a lock, so exactly one
/// request is in flight per connection, as the protocol requires.
package final class Channel {
    /// The socket, borrowed; its owner (the ``Client``'s ``StreamSocket``) closes it.
    package let socket: Descriptor
    /// Arenas mapped on this connection, keyed by the daemon's `store_fd` (§3.2):
    /// each fd is received once and mapped once, for the connection's lifetime.
    private(set) var arenas: [Int32: MemoryRegion] = [:]
    /// Reused receive buffer for reply bodies.
    private var scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
    /// The largest reply accepted.
    let maxReplySize: Int

    package init(socket: Descriptor, maxReplySize: Int) {
        self.socket = socket
        self.maxReplySize = maxReplySize
    }

    // MARK: Frames

    /// Writes one request frame.
    package func send(_ request: Request) throws(ClientError) {
        try send(request.encode())
    }

    /// Writes one request frame from a request body.
    func send(_ message: JSON) throws(ClientError) {
        let frame = Frame.encode(message)
        do {
            try socket.writeAll(frame)
        } catch {
            throw .lost("sending \(message["type"]?.stringValue ?? "a request")", error)
        }
    }

    /// Writes raw bytes (RPC blob contents).
    func sendRaw(_ bytes: UnsafeRawBufferPointer) throws(ClientError) {
        do { try socket.writeAll(bytes) } catch { throw .lost("sending blob bytes", error) }
    }

    /// Reads one reply frame and parses it.
    package func receive() throws(ClientError) -> JSON {
        var header: UInt64 = 0
        let open: Bool
        do {
            open = try withUnsafeMutableBytes(of: &header) { (h) throws(SystemError) -> Bool in
                try socket.readExact(into: h.baseAddress!, count: Frame.headerSize)
            }
        } catch {
            throw .lost("waiting for a reply", error)
        }
        guard open else { throw ClientError(.connectionLost, "the daemon closed the connection") }
        let length = Frame.length(fromHeader: header)
        guard length <= UInt64(maxReplySize) else {
            throw .badReply("reply of \(length) bytes exceeds the limit of \(maxReplySize)")
        }
        let n = Int(length)
        if scratch.count < n {
            scratch.deallocate()
            scratch = .allocate(byteCount: n, alignment: 8)
        }
        let complete: Bool
        do {
            complete = try socket.readExact(into: scratch.baseAddress!, count: n)
        } catch {
            throw .lost("reading a reply", error)
        }
        if !complete && n > 0 { throw ClientError(.connectionLost, "the daemon closed the connection mid-reply") }
        do {
            return try JSONParser.parse(UnsafeBufferPointer(start: scratch.baseAddress!.assumingMemoryBound(to: UInt8.self), count: n))
        } catch {
            throw .badReply("reply is not JSON: \(error)")
        }
    }

    /// Reads exactly `count` raw bytes (RPC blob contents).
    package func receiveRaw(into buffer: UnsafeMutableRawPointer, count: Int) throws(ClientError) {
        guard count > 0 else { return }
        do throws(SystemError) {
            if try !socket.readExact(into: buffer, count: count) {
                throw SystemError("recv", errno: ECONNRESET)
            }
        } catch {
            throw .lost("reading blob bytes", error)
        }
    }

    deinit {
        scratch.deallocate()
    }

    // MARK: Arenas

    /// The store fds among `payloads` this connection has not received yet: distinct, in
    /// order of first appearance (or sorted, for `create_buffers`), counting only
    /// payloads with data — the list the daemon must have announced.
    func unknownStoreFDs(in payloads: [Payload], sorted: Bool) -> [Int32] {
        Self.unknownStoreFDs(in: payloads, known: arenas.keys, sorted: sorted)
    }

    static func unknownStoreFDs(in payloads: [Payload], known: some Collection<Int32>, sorted: Bool) -> [Int32] {
        var out: [Int32] = []
        for p in payloads where p.dataSize > 0 && !known.contains(p.storeFD) && !out.contains(p.storeFD) {
            out.append(p.storeFD)
        }
        return sorted ? out.sorted() : out
    }

    /// Receives the fd carriers that follow a reply, after checking that the daemon
    /// announced exactly the fds this connection expects, and maps each arena once.
    func adoptArenas(announced: [Int32], payloads: [Payload], sorted: Bool) throws(ClientError) {
        let expected = unknownStoreFDs(in: payloads, sorted: sorted)
        guard announced == expected else {
            throw .badReply("fd is not matched between client and server: announced \(announced), expected \(expected)")
        }
        for storeFD in expected {
            let received: OwnedFD
            do { received = try socket.receiveFD() } catch { throw .lost("receiving an arena fd", error) }
            let mapSize = payloads.first { $0.storeFD == storeFD }!.mapSize
            do {
                arenas[storeFD] = try MemoryRegion(arenaFD: received, storeFD: storeFD, length: max(0, mapSize - 8))
            } catch {
                throw ClientError(.protocolViolation, code: .ioError, "cannot map arena fd \(storeFD)", systemError: error)
            }
        }
    }

    /// The region a payload's bytes lie in, checked against the mapping's bounds.
    func region(for payload: Payload) throws(ClientError) -> MemoryRegion? {
        guard payload.dataSize > 0 else { return nil }
        guard let region = arenas[payload.storeFD] else {
            throw .badReply("payload of \(payload.objectID) refers to store_fd \(payload.storeFD), never received")
        }
        guard payload.dataOffset >= 0, payload.dataOffset + payload.dataSize <= region.length else {
            throw .badReply("payload of \(payload.objectID) lies outside its arena mapping")
        }
        return region
    }
}
