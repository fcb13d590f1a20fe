import TrellisProtocol

/// A pandas index (`vineyard::Index`): its values as a tensor, and its name.
///
/// A `RangeIndex` is stored materialised, as an int64 tensor (what the Python client does).
public struct PandasIndex: StoredValue {
    /// The index's metadata.
    public let meta: ObjectMeta
    /// The index's name (`name`, JSON-decoded: usually `null` or a string).
    public let name: JSON
    /// numpy's name of the index dtype (`value_type_`).
    public let valueType: String
    /// The labels.
    public let values: AnyTensor

    /// Reads a `vineyard::Index`; zero-copy.
    public init(_ object: StoredObject) throws(ClientError) {
        try object.require("vineyard::Index")
        meta = object.meta
        name = object.meta.decodedJSON("name") ?? .null
        valueType = object.meta.string("value_type_") ?? ""
        values = try AnyTensor(try object.member("value_"))
    }

    /// The number of labels.
    public var count: Int { values.count }

    /// True when the labels are the int64 values `0, 1, …, count − 1` (what a pandas
    /// `RangeIndex` becomes in the store).
    public var isDefaultRange: Bool {
        guard let t = try? values.typed(Int64.self), t.shape.count == 1 else { return false }
        return t.withUnsafeBufferPointer { b in
            for i in 0..<b.count where b[i] != Int64(i) { return false }
            return true
        }
    }
}

/// A pandas DataFrame (`vineyard::DataFrame`): named columns of tensors and an index.
public struct DataFrame: StoredValue {
    /// One column: its name as pandas had it, and its values.
    public struct Column: Sendable {
        /// The column's name (`__values_-key-N`, JSON-decoded: a string, or a number for integer labels).
        public let name: JSON
        /// The values, zero-copy.
        public let values: AnyTensor

        /// The name as text: strings as they are, other labels in their JSON spelling.
        public var title: String { name.stringValue ?? PythonJSON.dumps(name) }
    }

    /// The frame's metadata.
    public let meta: ObjectMeta
    /// The columns, in order.
    public let columns: [Column]
    /// The index (`index_`); `nil` when the writer did not store one (a default range then).
    public let index: PandasIndex?

    /// Reads a `vineyard::DataFrame`; zero-copy.
    public init(_ object: StoredObject) throws(ClientError) {
        let meta = object.meta
        try object.require("vineyard::DataFrame")
        let n = meta.int("__values_-size") ?? meta.decodedJSON("columns_")?.arrayValue?.count ?? 0
        var columns: [Column] = []
        columns.reserveCapacity(n)
        for i in 0..<n {
            guard let name = meta.decodedJSON("__values_-key-\(i)") else {
                throw .invalidObject("data frame \(object.id) lacks __values_-key-\(i)")
            }
            columns.append(Column(name: name, values: try AnyTensor(try object.member("__values_-value-\(i)"))))
        }
        self.meta = meta
        self.columns = columns
        self.index = meta.member("index_") == nil ? nil : try PandasIndex(try object.member("index_"))
    }

    /// The number of rows.
    public var rowCount: Int { columns.first?.values.shape.first ?? index?.count ?? 0 }

    /// The first column whose ``Column/title`` is `title`.
    public subscript(title: String) -> AnyTensor? {
        columns.first { $0.title == title }?.values
    }
}

/// A pandas Series (`vineyard::Series`): values, index and name.
public struct Series: StoredValue {
    /// The series' metadata.
    public let meta: ObjectMeta
    /// The series' name (JSON-decoded; `null` when unnamed).
    public let name: JSON
    /// The index.
    public let index: PandasIndex
    /// The values, zero-copy.
    public let values: AnyTensor

    /// Reads a `vineyard::Series`; zero-copy.
    public init(_ object: StoredObject) throws(ClientError) {
        try object.require("vineyard::Series")
        meta = object.meta
        name = object.meta.decodedJSON("name") ?? .null
        index = try PandasIndex(try object.member("index_"))
        values = try AnyTensor(try object.member("value_"))
    }
}

// MARK: - Writing

extension Client {
    /// Creates an index over stored labels.
    public func createIndex(_ values: AnyTensor, name: JSON = .null) throws(ClientError) -> PandasIndex {
        let meta = Self.indexMeta(values: values.meta, dtype: values.dtype, name: name)
        return try PandasIndex(StoredObject(meta: try createMetadata(meta), blobs: values.blobMap))
    }

    /// Creates the index `0, 1, …, count − 1` (a pandas `RangeIndex`, materialised as int64).
    public func createRangeIndex(count: Int, name: JSON = .null) throws(ClientError) -> PandasIndex {
        let labels = try createTensor(Int64.self, shape: [count]) { b in
            for i in 0..<b.count { b[i] = Int64(i) }
        }
        return try createIndex(labels.base, name: name)
    }

    /// Creates a data frame from stored columns, laid out as Python's `client.put(df)` does.
    ///
    /// - Parameters:
    ///   - columns: names (strings, or integers as `.int`) and 1-D tensors of equal length.
    ///   - index: the row labels; `nil` stores a default range index, as pandas has.
    public func createDataFrame(columns: [(name: JSON, values: AnyTensor)], index: PandasIndex? = nil) throws(ClientError) -> DataFrame {
        let rows = columns.first?.values.shape.first ?? index?.count ?? 0
        for c in columns where c.values.shape.first != rows {
            throw ClientError(.invalidArgument, "column \(c.name) has shape \(c.values.shape), the frame has \(rows) rows")
        }
        let index = if let index { index } else { try createRangeIndex(count: rows) }
        let meta = Self.dataFrameMeta(index: index.meta, columns: columns.map { ($0.name, $0.values.meta) })
        var blobs = index.values.blobMap
        for c in columns { blobs[c.values.blob.id] = c.values.blob }
        return try DataFrame(StoredObject(meta: try createMetadata(meta), blobs: blobs))
    }

    /// A data frame's tree, as Python's builder writes it (members created or inline).
    static func dataFrameMeta(index: ObjectMeta, columns: [(name: JSON, values: ObjectMeta)]) -> ObjectMeta {
        var meta = ObjectMeta(typename: "vineyard::DataFrame")
        meta.setEncodedJSON("columns_", .array(columns.map(\.name)))
        meta.addMember("index_", index)
        for (i, c) in columns.enumerated() {
            meta.setEncodedJSON("__values_-key-\(i)", c.name)
            meta.addMember("__values_-value-\(i)", c.values)
        }
        meta["__values_-size"] = .number(columns.count)
        meta["partition_index_row_"] = -1
        meta["partition_index_column_"] = -1
        meta["row_batch_index_"] = 0
        return meta
    }

    /// An index's tree over a tensor (created or inline).
    static func indexMeta(values: ObjectMeta, dtype: DType, name: JSON = .null) -> ObjectMeta {
        var meta = ObjectMeta(typename: "vineyard::Index")
        meta.setEncodedJSON("name", name)
        meta["value_type_"] = .string(dtype.numpyName)
        meta.addMember("value_", values)
        return meta
    }

    /// Creates a data frame from stored columns with string names.
    public func createDataFrame(columns: [(name: String, values: AnyTensor)], index: PandasIndex? = nil) throws(ClientError) -> DataFrame {
        try createDataFrame(columns: columns.map { (name: JSON.string($0.name), values: $0.values) }, index: index)
    }

    /// Creates a series, laid out as Python's `client.put(series)` does; `index` defaults to a range.
    public func createSeries(_ values: AnyTensor, name: JSON = .null, index: PandasIndex? = nil) throws(ClientError) -> Series {
        let index = if let index { index } else { try createRangeIndex(count: values.shape.first ?? 0) }
        var meta = ObjectMeta(typename: "vineyard::Series")
        meta.setEncodedJSON("name", name)
        meta.addMember("index_", index.meta)
        meta.addMember("value_", values.meta)
        var blobs = index.values.blobMap
        blobs[values.blob.id] = values.blob
        return try Series(StoredObject(meta: try createMetadata(meta), blobs: blobs))
    }
}

extension AnyTensor {
    var blobMap: [ObjectID: Blob] { [blob.id: blob] }
}
