/// A Vineyard object, blob or signature id: 64 bits, bit 63 set for blobs.
///
/// In control fields ids travel as JSON unsigned integers; inside metadata trees as
/// `"o"` + 16 lowercase hex digits.
public struct ObjectID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64

    @inline(__always) public init(rawValue: UInt64) { self.rawValue = rawValue }
    @inline(__always) public init(_ raw: UInt64) { self.rawValue = raw }

    /// `0xFFFFFFFFFFFFFFFF`: "no object"; also the id upstream gives its placeholder blob.
    public static let invalid = ObjectID(UInt64.max)
    /// `0x8000000000000000`: the empty blob, which needs no memory.
    public static let emptyBlob = ObjectID(1 << 63)

    @inline(__always) public var isBlob: Bool { rawValue & (1 << 63) != 0 }

    public static func < (a: ObjectID, b: ObjectID) -> Bool { a.rawValue < b.rawValue }

    /// `"o%016x"`.
    public var description: String { Self.text(rawValue, prefix: "o") }

    public var signatureString: String { Self.text(rawValue, prefix: "s") }

    /// Parses `"o…"`/`"s…"` forms the way upstream does: skip the first character, read hex.
    public init?(string: String) {
        let utf8 = string.utf8
        guard utf8.count >= 2, utf8.count <= 17 else { return nil }
        var v: UInt64 = 0
        for c in utf8.dropFirst() {
            let d: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
            default: return nil
            }
            v = v << 4 | UInt64(d)
        }
        self.rawValue = v
    }

    public static func text(_ value: UInt64, prefix: Character) -> String {
        let first = prefix.asciiValue ?? UInt8(ascii: "o")
        // Written in place: no scratch arrays (this runs for every id of every tree served).
        return String(unsafeUninitializedCapacity: 17) { out in
            out[0] = first
            var v = value
            for i in stride(from: 16, to: 0, by: -1) {
                let d = UInt8(truncatingIfNeeded: v & 0xF)
                out[i] = d < 10 ? UInt8(ascii: "0") &+ d : UInt8(ascii: "a") &+ (d &- 10)
                v >>= 4
            }
            return 17
        }
    }
}

/// Instance ids with special meaning.
public enum InstanceID {
    /// The instance id of global objects whose members live on several instances.
    public static let unspecified: UInt64 = UInt64.max
    /// What a pure RPC client reports as its own instance id.
    public static let rpcClient: UInt64 = UInt64.max - 1
}

/// Makes ids the way upstream does, so they look alike in transcripts:
/// bit 63 blob flag, bits 62…22 milliseconds, bits 21…12 instance, bits 11…0 a counter.
///
/// Uniqueness within one process is guaranteed even when the clock stands still or
/// goes back: the generator never returns a value it returned before, because the
/// (time, counter) pair only ever moves forward.
public struct ObjectIDGenerator: Sendable {
    public let instance: UInt64
    private var lastMillis: UInt64 = 0
    private var counter: UInt64 = 0

    public init(instance: UInt64) {
        self.instance = instance & 0x3FF
    }

    /// Next id; `nowMillis` is injected so that tests control time.
    public mutating func next(blob: Bool, nowMillis: UInt64) -> ObjectID {
        var ms = nowMillis & ((1 << 41) - 1)
        if ms < lastMillis { ms = lastMillis }
        if ms == lastMillis {
            counter += 1
            if counter >= 4096 {
                // Counter exhausted for this millisecond: borrow the next one.
                ms += 1
                counter = 0
            }
        } else {
            counter = 0
        }
        lastMillis = ms
        let inst: UInt64 = blob ? 0 : instance
        let raw = (blob ? UInt64(1) << 63 : 0) | (ms << 22) | (inst << 12) | counter
        return ObjectID(raw)
    }
}
