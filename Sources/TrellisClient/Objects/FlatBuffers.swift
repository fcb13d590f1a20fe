/// The little of FlatBuffers that Arrow's IPC schema message needs: reading tables,
/// vectors and strings, and writing a tree of tables in one forward pass.
enum FlatBuffers {
    struct ParseError: Error {
        let reason: String
    }

    /// A read-only view of a table inside a buffer.
    struct Table {
        let bytes: [UInt8]
        let position: Int

        private func u16(_ p: Int) throws(ParseError) -> Int {
            guard p >= 0, p + 2 <= bytes.count else { throw ParseError(reason: "read past the end") }
            return Int(bytes[p]) | Int(bytes[p + 1]) << 8
        }

        static func u32(_ bytes: [UInt8], _ p: Int) throws(ParseError) -> UInt32 {
            guard p >= 0, p + 4 <= bytes.count else { throw ParseError(reason: "read past the end") }
            return UInt32(bytes[p]) | UInt32(bytes[p + 1]) << 8 | UInt32(bytes[p + 2]) << 16 | UInt32(bytes[p + 3]) << 24
        }

        /// The root table of a buffer starting at `start`.
        static func root(_ bytes: [UInt8], start: Int = 0) throws(ParseError) -> Table {
            Table(bytes: bytes, position: start + Int(try u32(bytes, start)))
        }

        /// Where field `index` lies, or nil when absent.
        private func fieldPosition(_ index: Int) throws(ParseError) -> Int? {
            let soffset = Int(Int32(bitPattern: try Self.u32(bytes, position)))
            let vtable = position - soffset
            let vtableSize = try u16(vtable)
            let slot = 4 + 2 * index
            guard slot + 2 <= vtableSize else { return nil }
            let off = try u16(vtable + slot)
            return off == 0 ? nil : position + off
        }

        func scalar<T: FixedWidthInteger>(_ index: Int, default value: T) throws(ParseError) -> T {
            guard let p = try fieldPosition(index) else { return value }
            guard p + MemoryLayout<T>.size <= bytes.count else { throw ParseError(reason: "read past the end") }
            var v: T = 0
            for i in 0..<MemoryLayout<T>.size { v |= T(truncatingIfNeeded: bytes[p + i]) << (8 * i) }
            return v
        }

        private func target(_ index: Int) throws(ParseError) -> Int? {
            guard let p = try fieldPosition(index) else { return nil }
            return p + Int(try Self.u32(bytes, p))
        }

        func table(_ index: Int) throws(ParseError) -> Table? {
            try target(index).map { Table(bytes: bytes, position: $0) }
        }

        func string(_ index: Int) throws(ParseError) -> String? {
            guard let p = try target(index) else { return nil }
            let n = Int(try Self.u32(bytes, p))
            guard p + 4 + n <= bytes.count else { throw ParseError(reason: "string past the end") }
            return String(decoding: bytes[(p + 4)..<(p + 4 + n)], as: UTF8.self)
        }

        func tables(_ index: Int) throws(ParseError) -> [Table] {
            guard let p = try target(index) else { return [] }
            let n = Int(try Self.u32(bytes, p))
            var out: [Table] = []
            for i in 0..<n {
                let e = p + 4 + 4 * i
                out.append(Table(bytes: bytes, position: e + Int(try Self.u32(bytes, e))))
            }
            return out
        }
    }

    /// A value to write.
    indirect enum Value {
        case absent
        case uint8(UInt8)
        case bool(Bool)
        case int16(Int16)
        case int32(Int32)
        case int64(Int64)
        case string(String)
        case table([Value])
        case tables([[Value]])

        var inlineSize: Int {
            switch self {
            case .absent: return 0
            case .uint8, .bool: return 1
            case .int16: return 2
            case .int32, .string, .table, .tables: return 4
            case .int64: return 8
            }
        }
    }

    /// Writes `root` (a table's fields by index) as a FlatBuffer: children always follow
    /// their parents, so every offset points forward, and every scalar is aligned to its size.
    static func write(root: [Value]) -> [UInt8] {
        var w = Writer()
        w.bytes = [0, 0, 0, 0]
        let at = w.table(root)
        w.patch(0, UInt32(at))
        return w.bytes
    }

    private struct Writer {
        var bytes: [UInt8] = []

        mutating func align(_ n: Int) {
            while bytes.count % n != 0 { bytes.append(0) }
        }

        mutating func put<T: FixedWidthInteger>(_ v: T) {
            withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
        }

        mutating func patch(_ p: Int, _ v: UInt32) {
            for i in 0..<4 { bytes[p + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) }
        }

        /// Writes vtable + table, then the children; returns the table's position.
        mutating func table(_ fields: [Value]) -> Int {
            // Inline layout: after the 4-byte soffset, fields by decreasing size, each
            // aligned; the table itself starts 8-aligned so that alignment is absolute.
            var offsets = [Int](repeating: 0, count: fields.count)
            var size = 4
            for width in [8, 4, 2, 1] {
                for (i, f) in fields.enumerated() where f.inlineSize == width {
                    size = (size + width - 1) / width * width
                    offsets[i] = size
                    size += width
                }
            }
            size = (size + 3) / 4 * 4
            align(2)
            let vtable = bytes.count
            put(UInt16(4 + 2 * fields.count))
            put(UInt16(size))
            for o in offsets { put(UInt16(o)) }
            align(8)
            let table = bytes.count
            put(Int32(table - vtable))
            bytes.append(contentsOf: [UInt8](repeating: 0, count: size - 4))
            for (i, f) in fields.enumerated() {
                let p = table + offsets[i]
                switch f {
                case .absent, .string, .table, .tables: break
                case .uint8(let v): bytes[p] = v
                case .bool(let v): bytes[p] = v ? 1 : 0
                case .int16(let v): for k in 0..<2 { bytes[p + k] = UInt8(truncatingIfNeeded: UInt16(bitPattern: v) >> (8 * k)) }
                case .int32(let v): patch(p, UInt32(bitPattern: v))
                case .int64(let v): for k in 0..<8 { bytes[p + k] = UInt8(truncatingIfNeeded: UInt64(bitPattern: v) >> (8 * k)) }
                }
            }
            for (i, f) in fields.enumerated() {
                let p = table + offsets[i]
                switch f {
                case .string(let s): patch(p, UInt32(string(s) - p))
                case .table(let t): patch(p, UInt32(self.table(t) - p))
                case .tables(let ts): patch(p, UInt32(vector(ts) - p))
                default: break
                }
            }
            return table
        }

        mutating func string(_ s: String) -> Int {
            align(4)
            let at = bytes.count
            let utf8 = Array(s.utf8)
            put(UInt32(utf8.count))
            bytes.append(contentsOf: utf8)
            bytes.append(0)
            return at
        }

        mutating func vector(_ tables: [[Value]]) -> Int {
            align(4)
            let at = bytes.count
            put(UInt32(tables.count))
            let slots = bytes.count
            bytes.append(contentsOf: [UInt8](repeating: 0, count: 4 * tables.count))
            for (i, t) in tables.enumerated() {
                let slot = slots + 4 * i
                patch(slot, UInt32(table(t) - slot))
            }
            return at
        }
    }
}
