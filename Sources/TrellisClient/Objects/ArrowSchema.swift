/// An Arrow column type, as far as Trellis reads and writes tables.
public enum ArrowType: Sendable, Equatable, CustomStringConvertible {
    case null
    case bool
    /// A fixed-width number (`int8`…`uint64`, `halffloat`, `float`, `double`).
    case numeric(DType)
    case utf8
    case largeUTF8
    case binary
    case largeBinary
    /// Any other Arrow type, by its `Type` union tag.
    case other(tag: UInt8)

    /// Arrow's spelling (`str(pa_type)`).
    public var description: String {
        switch self {
        case .null: return "null"
        case .bool: return "bool"
        case .numeric(let d): return d.arrowName
        case .utf8: return "string"
        case .largeUTF8: return "large_string"
        case .binary: return "binary"
        case .largeBinary: return "large_binary"
        case .other(let tag): return "arrow type #\(tag)"
        }
    }
}

/// One field of an Arrow schema.
public struct ArrowField: Sendable, Equatable {
    /// The column name.
    public var name: String
    /// The column type.
    public var type: ArrowType
    /// Whether the column may hold nulls.
    public var nullable: Bool

    /// Makes a field.
    public init(name: String, type: ArrowType, nullable: Bool = true) {
        self.name = name
        self.type = type
        self.nullable = nullable
    }
}

/// An Arrow schema, read from and written to the IPC schema message that
/// `vineyard::SchemaProxy` keeps in `schema_binary_` (what `pa.Schema.serialize()` produces).
public struct ArrowSchema: Sendable, Equatable {
    /// The fields, in column order.
    public var fields: [ArrowField]

    /// Makes a schema.
    public init(fields: [ArrowField]) {
        self.fields = fields
    }

    // Arrow's Type union tags (format/Schema.fbs).
    private enum Tag: UInt8 {
        case null = 1, int = 2, floatingPoint = 3, binary = 4, utf8 = 5, bool = 6
        case largeBinary = 19, largeUTF8 = 20
    }

    /// Parses an encapsulated IPC message holding a Schema (with or without the
    /// 0xFFFFFFFF continuation marker).
    public init(ipcMessage bytes: [UInt8]) throws(ClientError) {
        let parsed: [ArrowField]?
        do {
            parsed = try Self.parse(bytes)
        } catch {
            throw .invalidObject("bad Arrow schema message: \(error.reason)")
        }
        guard let parsed else { throw .invalidObject("the Arrow IPC message is not a Schema") }
        fields = parsed
    }

    private static func parse(_ bytes: [UInt8]) throws(FlatBuffers.ParseError) -> [ArrowField]? {
        var start = 4
        if try FlatBuffers.Table.u32(bytes, 0) == 0xFFFF_FFFF { start = 8 }
        let message = try FlatBuffers.Table.root(bytes, start: start)
        let headerType: UInt8 = try message.scalar(1, default: 0)
        guard headerType == 1, let schema = try message.table(2) else { return nil }
        var fields: [ArrowField] = []
        for f in try schema.tables(1) {
            let name = try f.string(0) ?? ""
            let nullable: UInt8 = try f.scalar(1, default: 0)
            let tag: UInt8 = try f.scalar(2, default: 0)
            fields.append(ArrowField(name: name, type: try type(tag: tag, f.table(3)), nullable: nullable != 0))
        }
        return fields
    }

    private static func type(tag: UInt8, _ t: FlatBuffers.Table?) throws(FlatBuffers.ParseError) -> ArrowType {
        switch Tag(rawValue: tag) {
        case .null: return .null
        case .bool: return .bool
        case .utf8: return .utf8
        case .largeUTF8: return .largeUTF8
        case .binary: return .binary
        case .largeBinary: return .largeBinary
        case .int:
            let bits: Int32 = try t?.scalar(0, default: 0) ?? 0
            let signed: UInt8 = try t?.scalar(1, default: 0) ?? 0
            let d: DType? =
                switch (bits, signed != 0) {
                case (8, true): .int8
                case (16, true): .int16
                case (32, true): .int32
                case (64, true): .int64
                case (8, false): .uint8
                case (16, false): .uint16
                case (32, false): .uint32
                case (64, false): .uint64
                default: nil
                }
            return d.map(ArrowType.numeric) ?? .other(tag: tag)
        case .floatingPoint:
            let precision: Int16 = try t?.scalar(0, default: 0) ?? 0
            return .numeric(precision == 0 ? .float16 : precision == 1 ? .float32 : .float64)
        case nil: return .other(tag: tag)
        }
    }

    /// The encapsulated IPC message (continuation marker, length, FlatBuffer `Message`
    /// with a `Schema` header, padded to 8 bytes) that `pa.ipc.read_schema` reads.
    public func ipcMessage() throws(ClientError) -> [UInt8] {
        var fieldTables: [[FlatBuffers.Value]] = []
        for f in fields {
            let (tag, type): (Tag, [FlatBuffers.Value])
            switch f.type {
            case .null: (tag, type) = (.null, [])
            case .bool: (tag, type) = (.bool, [])
            case .utf8: (tag, type) = (.utf8, [])
            case .largeUTF8: (tag, type) = (.largeUTF8, [])
            case .binary: (tag, type) = (.binary, [])
            case .largeBinary: (tag, type) = (.largeBinary, [])
            case .numeric(let d):
                switch d {
                case .float16: (tag, type) = (.floatingPoint, [.int16(0)])
                case .float32: (tag, type) = (.floatingPoint, [.int16(1)])
                case .float64: (tag, type) = (.floatingPoint, [.int16(2)])
                case .bool: (tag, type) = (.bool, [])
                case .int8, .int16, .int32, .int64:
                    (tag, type) = (.int, [.int32(Int32(d.size * 8)), .bool(true)])
                case .uint8, .uint16, .uint32, .uint64:
                    (tag, type) = (.int, [.int32(Int32(d.size * 8)), .bool(false)])
                }
            case .other:
                throw ClientError(.invalidArgument, "cannot write Arrow type \(f.type) into a schema")
            }
            // Field: name, nullable, type_type, type, dictionary, children (empty vector).
            fieldTables.append([.string(f.name), .bool(f.nullable), .uint8(tag.rawValue), .table(type), .absent, .tables([])])
        }
        // Schema: endianness (Little = 0), fields.  Message: version V5 = 4, header_type Schema = 1, header, bodyLength.
        let schema: [FlatBuffers.Value] = [.int16(0), .tables(fieldTables)]
        let message: [FlatBuffers.Value] = [.int16(4), .uint8(1), .table(schema), .int64(0)]
        var body = FlatBuffers.write(root: message)
        while (body.count + 8) % 8 != 0 { body.append(0) }
        var out: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF]
        withUnsafeBytes(of: UInt32(body.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: body)
        return out
    }
}
