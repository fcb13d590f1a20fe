/// Writes compact JSON (no spaces, keys sorted bytewise) as upstream's nlohmann/std::map does.
public struct JSONWriter {
    public var bytes: [UInt8]

    public init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Encodes `value` into a fresh byte array.
    public static func encode(_ value: JSON) -> [UInt8] {
        var w = JSONWriter()
        w.write(value)
        return w.bytes
    }

    public mutating func write(_ value: JSON) {
        switch value {
        case .null: append("null")
        case .bool(let b): append(b ? "true" : "false")
        case .int(let i): writeInteger(i)
        case .uint(let u): writeUnsigned(u)
        case .double(let d): writeDouble(d)
        case .string(let s): writeString(s)
        case .array(let a):
            bytes.append(UInt8(ascii: "["))
            var first = true
            for e in a {
                if !first { bytes.append(UInt8(ascii: ",")) }
                first = false
                write(e)
            }
            bytes.append(UInt8(ascii: "]"))
        case .object(let o): writeObject(o)
        }
    }

    public mutating func writeObject(_ o: [String: JSON]) {
        bytes.append(UInt8(ascii: "{"))
        if o.count == 1, let (key, value) = o.first {
            writeString(key)
            bytes.append(UInt8(ascii: ":"))
            write(value)
        } else if o.count > 1 {
            // Sorted by each key's first 16 bytes packed big-endian into two integers, so
            // the sort moves plain values instead of (String, JSON) pairs (whose copies are
            // reference-count traffic) and compares two words; only keys that agree in all
            // 16 bytes are compared in full.
            let entries = ContiguousArray(o)
            var order = ContiguousArray<SortKey>()
            order.reserveCapacity(entries.count)
            for i in entries.indices { order.append(SortKey(entries[i].key, index: i)) }
            order.sort { a, b in
                if a.high != b.high { return a.high < b.high }
                if a.low != b.low { return a.low < b.low }
                return Self.utf8Less(entries[a.index].key, entries[b.index].key)
            }
            var first = true
            for k in order {
                if !first { bytes.append(UInt8(ascii: ",")) }
                first = false
                writeString(entries[k.index].key)
                bytes.append(UInt8(ascii: ":"))
                write(entries[k.index].value)
            }
        }
        bytes.append(UInt8(ascii: "}"))
    }

    /// A key's first 16 UTF-8 bytes as two big-endian words (zero-padded), and where it is.
    struct SortKey {
        var high: UInt64
        var low: UInt64
        var index: Int

        init(_ key: String, index: Int) {
            var key = key
            (high, low) = key.withUTF8 { u in
                var h: UInt64 = 0
                var l: UInt64 = 0
                let n = min(u.count, 16)
                var i = 0
                while i < n {
                    if i < 8 {
                        h |= UInt64(u[i]) << (56 - 8 * UInt64(i))
                    } else {
                        l |= UInt64(u[i]) << (56 - 8 * UInt64(i - 8))
                    }
                    i += 1
                }
                return (h, l)
            }
            self.index = index
        }
    }

    static func utf8Less(_ a: String, _ b: String) -> Bool {
        // std::map<std::string> orders by bytes (Swift's String < is by canonical
        // equivalence, which does not); UTF-8 byte order is also Unicode scalar order.
        // Compared over the contiguous bytes: the generic `utf8.lexicographicallyPrecedes`
        // walks an iterator per byte.
        var a = a
        var b = b
        return a.withUTF8 { x in
            b.withUTF8 { y in
                let n = min(x.count, y.count)
                var i = 0
                while i < n {
                    if x[i] != y[i] { return x[i] < y[i] }
                    i += 1
                }
                return x.count < y.count
            }
        }
    }

    @inline(__always)
    mutating func append(_ s: StaticString) {
        s.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    mutating func writeUnsigned(_ value: UInt64) {
        if value < 10 {
            bytes.append(UInt8(ascii: "0") &+ UInt8(value))
            return
        }
        var tmp: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of scratch, enough for 20 digits
        withUnsafeMutableBytes(of: &tmp) { buf in
            var v = value
            var i = buf.count
            while v > 0 {
                i -= 1
                buf[i] = UInt8(ascii: "0") &+ UInt8(v % 10)
                v /= 10
            }
            bytes.append(contentsOf: buf[i...])
        }
    }

    mutating func writeInteger(_ value: Int64) {
        if value < 0 {
            bytes.append(UInt8(ascii: "-"))
            writeUnsigned(value.magnitude)
        } else {
            writeUnsigned(UInt64(value))
        }
    }

    mutating func writeDouble(_ d: Double) {
        guard d.isFinite else {
            append("null")  // JSON has no NaN/Infinity; nlohmann writes null too
            return
        }
        // Swift's description is the shortest text that round-trips, like %.17g trimmed.
        bytes.append(contentsOf: d.description.utf8)
    }

    mutating func writeString(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { utf8 in
            var start = 0
            for i in 0..<utf8.count {
                let c = utf8[i]
                if c >= 0x20 && c != UInt8(ascii: "\"") && c != UInt8(ascii: "\\") { continue }
                if start < i { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<i])) }
                start = i + 1
                switch c {
                case UInt8(ascii: "\""): append("\\\"")
                case UInt8(ascii: "\\"): append("\\\\")
                case 0x0A: append("\\n")
                case 0x0D: append("\\r")
                case 0x09: append("\\t")
                case 0x08: append("\\b")
                case 0x0C: append("\\f")
                default:
                    append("\\u00")
                    let hex: [UInt8] = Array("0123456789abcdef".utf8)
                    bytes.append(hex[Int(c >> 4)])
                    bytes.append(hex[Int(c & 0xF)])
                }
            }
            if start < utf8.count { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start...])) }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}
