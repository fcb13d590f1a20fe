/// Framing shared by IPC and RPC: an 8-byte little-endian length, then that many
/// bytes of UTF-8 JSON. Nothing else: no terminator, no padding.
public enum Frame {
    public static let headerSize = 8
    /// Default limit on one message: 64 MiB (upstream's daemon takes up to 256 MiB).
    public static let defaultMaxMessageSize = 64 << 20

    /// The header announcing a body of `length` bytes.
    @inline(__always)
    public static func header(length: Int) -> UInt64 { UInt64(length).littleEndian }

    /// Decodes a header read off the wire.
    @inline(__always)
    public static func length(fromHeader raw: UInt64) -> UInt64 { UInt64(littleEndian: raw) }

    /// A complete frame (header + body) for `message`.
    public static func encode(_ message: JSON) -> [UInt8] {
        var w = JSONWriter(capacity: 256)
        w.bytes.append(contentsOf: [0, 0, 0, 0, 0, 0, 0, 0])
        w.write(message)
        var bytes = w.bytes
        let n = UInt64(bytes.count - headerSize)
        withUnsafeBytes(of: n.littleEndian) { h in
            for i in 0..<headerSize { bytes[i] = h[i] }
        }
        return bytes
    }
}

/// Incremental frame decoder for byte streams that arrive in pieces (used by tests
/// and by any non-blocking reader). Enforces the message limit before buffering.
public struct FrameDecoder: Sendable {
    public enum Output: Equatable, Sendable {
        case frame([UInt8])
        case tooLarge(announced: UInt64)
    }

    public let maxMessageSize: Int
    private var buffer: [UInt8] = []

    public init(maxMessageSize: Int = Frame.defaultMaxMessageSize) {
        self.maxMessageSize = maxMessageSize
    }

    public mutating func feed(_ bytes: some Sequence<UInt8>) {
        buffer.append(contentsOf: bytes)
    }

    /// Next complete frame, `nil` when more bytes are needed.
    public mutating func next() -> Output? {
        guard buffer.count >= Frame.headerSize else { return nil }
        var raw: UInt64 = 0
        withUnsafeMutableBytes(of: &raw) { r in
            for i in 0..<Frame.headerSize { r[i] = buffer[i] }
        }
        let n = Frame.length(fromHeader: raw)
        if n > UInt64(maxMessageSize) { return .tooLarge(announced: n) }
        let total = Frame.headerSize + Int(n)
        guard buffer.count >= total else { return nil }
        let body = Array(buffer[Frame.headerSize..<total])
        buffer.removeFirst(total)
        return .frame(body)
    }

    public var bufferedByteCount: Int { buffer.count }
}
