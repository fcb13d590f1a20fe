import TrellisProtocol

/// One Arrow array as vineyard stores it, read zero-copy: `vineyard::NumericArray<T>`,
/// `vineyard::BooleanArray`, or `vineyard::BaseBinaryArray<arrow::LargeStringArray>` /
/// `<arrow::LargeBinaryArray>`.
public struct ArrowArray: StoredValue {
    /// The array's metadata.
    public let meta: ObjectMeta
    /// The column type.
    public let type: ArrowType
    /// The number of values (`length_`).
    public let length: Int
    /// The number of nulls (`null_count_`).
    public let nullCount: Int
    /// The index of the first value in the buffers (`offset_`).
    public let offset: Int
    /// The values (`buffer_`), or for strings the bytes (`buffer_data_`).
    public let values: Blob
    /// For strings: the int64 offsets (`buffer_offsets_`).
    public let valueOffsets: Blob?
    /// The validity bitmap (`null_bitmap_`), `nil` when there is none (no nulls).
    public let validity: Blob?

    /// Reads an Arrow array object; zero-copy.
    public init(_ object: StoredObject) throws(ClientError) {
        let meta = object.meta
        let typename = meta.typename
        if typename.hasPrefix("vineyard::NumericArray<") {
            let t = String(typename.dropFirst("vineyard::NumericArray<".count).dropLast())
            guard let d = DType(name: t) else { throw .invalidObject("\(typename): unknown value type \(t)") }
            type = .numeric(d)
            values = try object.blob("buffer_")
            valueOffsets = nil
        } else if typename == "vineyard::BooleanArray" {
            type = .bool
            values = try object.blob("buffer_")
            valueOffsets = nil
        } else if typename == "vineyard::BaseBinaryArray<arrow::LargeStringArray>" || typename == "vineyard::LargeStringArray"
            || typename == "vineyard::BaseBinaryArray<arrow::LargeBinaryArray>" || typename == "vineyard::LargeBinaryArray"
        {
            type = typename.contains("String") ? .largeUTF8 : .largeBinary
            values = try object.blob("buffer_data_")
            valueOffsets = try object.blob("buffer_offsets_")
        } else {
            throw .invalidObject("\(typename) \(object.id) is not an Arrow array of a supported type")
        }
        self.meta = meta
        length = meta.int("length_") ?? 0
        nullCount = meta.int("null_count_") ?? 0
        offset = meta.int("offset_") ?? 0
        let bitmap = meta.member("null_bitmap_") == nil ? Blob.empty : try object.blob("null_bitmap_")
        validity = bitmap.isEmpty ? nil : bitmap
        let needed: Int
        switch type {
        case .numeric(let d): needed = (offset + length) * d.size
        case .bool: needed = (offset + length + 7) / 8
        default: needed = 0
        }
        guard values.count >= needed else {
            throw .invalidObject("\(typename) \(object.id): \(values.count) value bytes for \(length) values")
        }
        if let v = validity, v.count < (offset + length + 7) / 8 {
            throw .invalidObject("\(typename) \(object.id): validity bitmap too short")
        }
        if let o = valueOffsets, length > 0, o.count < (offset + length + 1) * 8 {
            throw .invalidObject("\(typename) \(object.id): offsets buffer too short")
        }
    }

    /// The blobs the array's buffers live in.
    var blobs: [Blob] { [values, valueOffsets, validity].compactMap { $0 } }

    /// Whether value `i` is null.
    public func isNull(_ i: Int) -> Bool {
        guard let validity else { return false }
        let bit = offset + i
        return validity.withUnsafeBytes { $0[bit >> 3] & (1 << UInt8(bit & 7)) == 0 }
    }

    /// Lends the values of a numeric array as a `Span` (offset applied; null slots hold
    /// unspecified values), for the duration of `body`.
    public func withValues<T: TensorElement, R, E: Error>(
        _: T.Type, _ body: (Span<T>) throws(E) -> R
    ) throws(E) -> R? {
        guard case .numeric(let d) = type, d == T.dtype else { return nil }
        return try values.withUnsafeBytes { (raw) throws(E) -> R in
            let p = raw.baseAddress.map { ($0 + offset * d.size).assumingMemoryBound(to: T.self) }
            return try body(UnsafeBufferPointer(start: p, count: length).span)
        }
    }

    /// Value `i` of a numeric array of `T` (nil when null or of another type).
    public func value<T: TensorElement>(_ i: Int, as: T.Type = T.self) -> T? {
        guard case .numeric(let d) = type, d == T.dtype, !isNull(i) else { return nil }
        return values.withUnsafeBytes { $0.load(fromByteOffset: (offset + i) * d.size, as: T.self) }
    }

    /// Value `i` of a boolean array (nil when null or of another type).
    public func bool(_ i: Int) -> Bool? {
        guard type == .bool, !isNull(i) else { return nil }
        let bit = offset + i
        return values.withUnsafeBytes { $0[bit >> 3] & (1 << UInt8(bit & 7)) != 0 }
    }

    /// Value `i` of a string or binary array, as bytes (nil when null or of another type).
    public func bytes(_ i: Int) -> [UInt8]? {
        guard let valueOffsets, !isNull(i) else { return nil }
        let (start, end) = valueOffsets.withUnsafeBytes {
            (Int($0.load(fromByteOffset: (offset + i) * 8, as: Int64.self)),
             Int($0.load(fromByteOffset: (offset + i + 1) * 8, as: Int64.self)))
        }
        guard start >= 0, end >= start, end <= values.count else { return nil }
        return values.withUnsafeBytes { Array($0[start..<end]) }
    }

    /// Value `i` of a string array (nil when null or of another type).
    public func string(_ i: Int) -> String? {
        bytes(i).map { String(decoding: $0, as: UTF8.self) }
    }
}

/// An Arrow record batch (`vineyard::RecordBatch`): a schema and equally long columns.
public struct RecordBatch: StoredValue {
    /// The batch's metadata.
    public let meta: ObjectMeta
    /// The batch's schema (`schema_`).
    public let schema: ArrowSchema
    /// The number of rows (`row_num_`).
    public let rowCount: Int
    /// The columns, in schema order.
    public let columns: [ArrowArray]

    /// Reads a `vineyard::RecordBatch`; zero-copy.
    public init(_ object: StoredObject) throws(ClientError) {
        try object.require("vineyard::RecordBatch")
        meta = object.meta
        schema = try Self.schema(of: try object.member("schema_"))
        rowCount = meta.int("row_num_") ?? 0
        let n = meta.int("__columns_-size") ?? 0
        var columns: [ArrowArray] = []
        for i in 0..<n { columns.append(try ArrowArray(try object.member("__columns_-\(i)"))) }
        self.columns = columns
    }

    static func schema(of proxy: StoredObject) throws(ClientError) -> ArrowSchema {
        try proxy.require("vineyard::SchemaProxy")
        if let b = proxy.meta.member("buffer_"), b.isBlob {
            return try ArrowSchema(ipcMessage: try proxy.blob("buffer_").copyBytes())
        }
        guard let list = proxy.meta.decodedJSON("schema_binary_")?["bytes"]?.arrayValue else {
            throw .invalidObject("schema \(proxy.id) has no schema_binary_")
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(list.count)
        for v in list {
            guard let b = v.intValue, (0...255).contains(b) else { throw .invalidObject("schema \(proxy.id): bad byte") }
            bytes.append(UInt8(b))
        }
        return try ArrowSchema(ipcMessage: bytes)
    }

    /// The column named `name`.
    public subscript(name: String) -> ArrowArray? {
        schema.fields.firstIndex { $0.name == name }.map { columns[$0] }
    }
}

/// A pyarrow Table (`vineyard::Table`): a schema and record batches.
public struct ArrowTable: StoredValue {
    /// The table's metadata.
    public let meta: ObjectMeta
    /// The table's schema (`schema_`, else the first batch's).
    public let schema: ArrowSchema
    /// The batches (`partitions_-N`).
    public let batches: [RecordBatch]

    /// Reads a `vineyard::Table`; zero-copy.
    public init(_ object: StoredObject) throws(ClientError) {
        try object.require("vineyard::Table")
        meta = object.meta
        let n = meta.int("batch_num_") ?? meta.int("partitions_-size") ?? 0
        var batches: [RecordBatch] = []
        for i in 0..<n { batches.append(try RecordBatch(try object.member("partitions_-\(i)"))) }
        self.batches = batches
        if meta.member("schema_") != nil {
            schema = try RecordBatch.schema(of: try object.member("schema_"))
        } else {
            schema = batches.first?.schema ?? ArrowSchema(fields: [])
        }
    }

    /// The number of rows (`num_rows_`).
    public var rowCount: Int { meta.int("num_rows_") ?? batches.reduce(0) { $0 + $1.rowCount } }
}

// MARK: - Writing

extension Client {
    /// Creates a numeric Arrow array (`vineyard::NumericArray<T>`), or a boolean one
    /// (`vineyard::BooleanArray`, bit-packed) for `Bool`. `validity[i] == false` marks a null.
    public func createArrowArray<T: TensorElement>(_ values: [T], validity: [Bool]? = nil) throws(ClientError) -> ArrowArray {
        if let validity, validity.count != values.count {
            throw ClientError(.invalidArgument, "validity has \(validity.count) entries for \(values.count) values")
        }
        let blob: Blob
        let typename: String
        if let bools = values as? [Bool] {
            typename = "vineyard::BooleanArray"
            blob = try putBitmap(bools)
        } else {
            typename = "vineyard::NumericArray<\(T.dtype.arrowName)>"
            blob = try putBlob(contentsOf: values)
        }
        let bitmap = try validity.map { (v) throws(ClientError) -> Blob in try putBitmap(v) } ?? .empty
        let nulls = validity.map { $0.count { !$0 } } ?? 0
        var meta = ObjectMeta(typename: typename)
        meta["length_"] = .number(values.count)
        meta["null_count_"] = .number(nulls)
        meta["offset_"] = 0
        meta.addMember("buffer_", blob)
        meta.addMember("null_bitmap_", bitmap)
        meta.nbytes = blob.count + bitmap.count
        return try ArrowArray(StoredObject(meta: try createMetadata(meta), blobs: Blob.map([blob, bitmap])))
    }

    /// Creates a string array (`vineyard::BaseBinaryArray<arrow::LargeStringArray>`); `nil` is a null.
    public func createStringArray(_ values: [String?]) throws(ClientError) -> ArrowArray {
        var data: [UInt8] = []
        var offsets: [Int64] = [0]
        for v in values {
            if let v { data.append(contentsOf: v.utf8) }
            offsets.append(Int64(data.count))
        }
        let hasNulls = values.contains { $0 == nil }
        let dataBlob = try putBlob(data)
        let offsetsBlob = try putBlob(contentsOf: offsets)
        let bitmap = hasNulls ? try putBitmap(values.map { $0 != nil }) : .empty
        var meta = ObjectMeta(typename: "vineyard::BaseBinaryArray<arrow::LargeStringArray>")
        meta["length_"] = .number(values.count)
        meta["null_count_"] = .number(values.count { $0 == nil })
        meta["offset_"] = 0
        meta.addMember("buffer_data_", dataBlob)
        meta.addMember("buffer_offsets_", offsetsBlob)
        meta.addMember("null_bitmap_", bitmap)
        meta.nbytes = dataBlob.count + offsetsBlob.count + bitmap.count
        return try ArrowArray(
            StoredObject(
                meta: try createMetadata(meta),
                blobs: Blob.map([dataBlob, offsetsBlob, bitmap])))
    }

    /// Creates a record batch from named arrays of equal length.
    public func createRecordBatch(columns: [(name: String, array: ArrowArray)]) throws(ClientError) -> RecordBatch {
        let rows = columns.first?.array.length ?? 0
        for c in columns where c.array.length != rows {
            throw ClientError(.invalidArgument, "column \(c.name) has \(c.array.length) values, the batch \(rows) rows")
        }
        let schema = ArrowSchema(fields: columns.map { ArrowField(name: $0.name, type: $0.array.type) })
        var meta = ObjectMeta(typename: "vineyard::RecordBatch")
        meta["row_num_"] = .number(rows)
        meta["column_num_"] = .number(columns.count)
        meta["__columns_-size"] = .number(columns.count)
        meta.addMember("schema_", try createSchemaProxy(schema))
        var nbytes = 0
        for (i, c) in columns.enumerated() {
            meta.addMember("__columns_-\(i)", c.array.meta)
            nbytes += c.array.meta.nbytes
        }
        let blobs = Blob.map(columns.flatMap(\.array.blobs))
        meta.nbytes = nbytes
        return try RecordBatch(StoredObject(meta: try createMetadata(meta), blobs: blobs))
    }

    /// Creates a table from record batches sharing one schema (the first batch's).
    public func createTable(batches: [RecordBatch]) throws(ClientError) -> ArrowTable {
        let schema = batches.first?.schema ?? ArrowSchema(fields: [])
        for b in batches where b.schema != schema {
            throw ClientError(.invalidArgument, "record batches of a table must share one schema")
        }
        var meta = ObjectMeta(typename: "vineyard::Table")
        meta["num_rows_"] = .number(batches.reduce(0) { $0 + $1.rowCount })
        meta["num_columns_"] = .number(schema.fields.count)
        meta["batch_num_"] = .number(batches.count)
        meta["partitions_-size"] = .number(batches.count)
        meta.addMember("schema_", try createSchemaProxy(schema))
        for (i, b) in batches.enumerated() { meta.addMember("partitions_-\(i)", b.meta) }
        let blobs = Blob.map(batches.flatMap { $0.columns.flatMap(\.blobs) })
        meta.nbytes = batches.reduce(0) { $0 + $1.meta.nbytes }
        return try ArrowTable(StoredObject(meta: try createMetadata(meta), blobs: blobs))
    }

    /// Creates a one-batch table from named arrays.
    public func createTable(columns: [(name: String, array: ArrowArray)]) throws(ClientError) -> ArrowTable {
        try createTable(batches: [try createRecordBatch(columns: columns)])
    }

    private func createSchemaProxy(_ schema: ArrowSchema) throws(ClientError) -> ObjectMeta {
        let bytes = try schema.ipcMessage()
        var meta = ObjectMeta(typename: "vineyard::SchemaProxy")
        meta.setEncodedJSON("schema_binary_", ["bytes": .array(bytes.map { .number(Int($0)) })])
        meta.nbytes = bytes.count
        return try createMetadata(meta)
    }

    /// Stores bits LSB-first, as Arrow bitmaps are laid out.
    private func putBitmap(_ bits: [Bool]) throws(ClientError) -> Blob {
        var bytes = [UInt8](repeating: 0, count: (bits.count + 7) / 8)
        for (i, b) in bits.enumerated() where b { bytes[i >> 3] |= 1 << UInt8(i & 7) }
        return try putBlob(bytes)
    }
}
