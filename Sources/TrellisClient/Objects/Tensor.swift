import TrellisProtocol

/// A value read back from the daemon with a typed layout (tensors, data frames, tables).
public protocol StoredValue: Sendable {
    /// Reads the value from an object and its blobs; zero-copy.
    init(_ object: StoredObject) throws(ClientError)
    /// The object's metadata.
    var meta: ObjectMeta { get }
}

extension StoredValue {
    /// The object's id.
    public var id: ObjectID { meta.id ?? .invalid }
}

/// The memory order a tensor's reader should present (`order_`). The blob always holds
/// the elements in C (row-major) order, as the Python client writes them.
public enum TensorOrder: String, Sendable {
    case c = "C"
    case fortran = "F"
}

/// A numpy array of any numeric dtype or bool (`vineyard::Tensor<T>`), read zero-copy.
public struct AnyTensor: StoredValue {
    /// The tensor's metadata.
    public let meta: ObjectMeta
    /// The element type.
    public let dtype: DType
    /// The dimensions (`shape_`).
    public let shape: [Int]
    /// The order the writer's array had (`order_`); the bytes are C order either way.
    public let order: TensorOrder
    /// The blob holding the elements.
    public let blob: Blob

    /// Reads a `vineyard::Tensor<…>` object.
    public init(_ object: StoredObject) throws(ClientError) {
        let meta = object.meta
        try object.require("vineyard::Tensor", generic: true)
        let typeName = meta.string("value_type_") ?? String(meta.typename.dropFirst(17).dropLast())
        guard let dtype = DType(name: typeName) else {
            throw .invalidObject("tensor \(object.id) has value type \(typeName), which is not a numeric numpy dtype")
        }
        guard let shapeList = meta.decodedJSON("shape_")?.arrayValue else {
            throw .invalidObject("tensor \(object.id) has no shape_")
        }
        var shape: [Int] = []
        for d in shapeList {
            guard let n = d.intValue, n >= 0 else { throw .invalidObject("tensor \(object.id) has a bad shape_") }
            shape.append(n)
        }
        let order = meta.decodedJSON("order_")?.stringValue.flatMap(TensorOrder.init(rawValue:)) ?? .c
        let count = shape.reduce(1, *)
        let blob = count == 0 ? Blob.empty : try object.blob("buffer_")
        guard blob.count >= count * dtype.size else {
            throw .invalidObject("tensor \(object.id): blob of \(blob.count) bytes for \(count) × \(dtype.size)")
        }
        self.meta = meta
        self.dtype = dtype
        self.shape = shape
        self.order = order
        self.blob = blob
    }

    /// The number of elements.
    public var count: Int { shape.reduce(1, *) }

    /// Bytes of element data (`count × dtype.size`).
    public var byteCount: Int { count * dtype.size }

    /// The typed view, if `T` is the tensor's element type.
    public func typed<T: TensorElement>(_: T.Type = T.self) throws(ClientError) -> Tensor<T> {
        guard T.dtype == dtype else {
            throw ClientError(.invalidArgument, code: .typeError, "tensor \(id) holds \(dtype), not \(T.dtype)")
        }
        return Tensor(unchecked: self)
    }

    /// Lends the element bytes (C order) for the duration of `body`.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try blob.withUnsafeBytes { (b) throws(E) -> R in try body(UnsafeRawBufferPointer(rebasing: b.prefix(byteCount))) }
    }
}

/// A numpy array with element type `Element` (`vineyard::Tensor<T>`), read zero-copy:
/// indexing, iteration and ``withValues(_:)`` read the daemon's shared memory directly.
public struct Tensor<Element: TensorElement>: StoredValue, RandomAccessCollection {
    /// The untyped tensor.
    public let base: AnyTensor

    init(unchecked base: AnyTensor) {
        self.base = base
    }

    /// Reads a `vineyard::Tensor<…>` whose elements are `Element`.
    public init(_ object: StoredObject) throws(ClientError) {
        self = try AnyTensor(object).typed(Element.self)
    }

    /// The tensor's metadata.
    public var meta: ObjectMeta { base.meta }
    /// The dimensions.
    public var shape: [Int] { base.shape }
    /// The order the writer's array had; elements are in C order either way.
    public var order: TensorOrder { base.order }
    /// The blob holding the elements.
    public var blob: Blob { base.blob }

    /// Always 0.
    public var startIndex: Int { 0 }
    /// The number of elements.
    public var endIndex: Int { base.count }

    /// The element at flat (C-order) position `i`, read from shared memory.
    public subscript(position: Int) -> Element {
        precondition(position >= 0 && position < endIndex, "tensor index out of range")
        return base.blob.withUnsafeBytes { $0.load(fromByteOffset: position &* MemoryLayout<Element>.stride, as: Element.self) }
    }

    /// Lends the elements as a `Span` for the duration of `body`.
    public func withValues<R, E: Error>(_ body: (Span<Element>) throws(E) -> R) throws(E) -> R {
        try withUnsafeBufferPointer { (b) throws(E) -> R in try body(b.span) }
    }

    /// Lends the elements as an `UnsafeBufferPointer`, valid only inside `body`.
    public func withUnsafeBufferPointer<R, E: Error>(_ body: (UnsafeBufferPointer<Element>) throws(E) -> R) throws(E) -> R {
        try base.blob.withUnsafeBytes { (raw) throws(E) -> R in
            try body(UnsafeBufferPointer(start: raw.baseAddress?.assumingMemoryBound(to: Element.self), count: endIndex))
        }
    }

    /// The elements in place (they are always contiguous).
    public func withContiguousStorageIfAvailable<R>(_ body: (UnsafeBufferPointer<Element>) throws -> R) rethrows -> R? {
        try base.blob.withUnsafeBytes { raw in
            try body(UnsafeBufferPointer(start: raw.baseAddress?.assumingMemoryBound(to: Element.self), count: endIndex))
        }
    }
}

// MARK: - Writing

extension Client {
    /// Creates a tensor of `shape` whose elements `fill` writes straight into shared memory
    /// (no intermediate buffer), in C order.
    public func createTensor<T: TensorElement>(
        _: T.Type = T.self, shape: [Int], order: TensorOrder = .c, fill: (UnsafeMutableBufferPointer<T>) -> Void
    ) throws(ClientError) -> Tensor<T> {
        let any = try createTensor(dtype: T.dtype, shape: shape, order: order) { raw in
            fill(raw.bindMemory(to: T.self))
        }
        return Tensor(unchecked: any)
    }

    /// Creates a tensor holding a copy of `values`; `shape` defaults to `[values.count]`.
    public func putTensor<T: TensorElement>(_ values: [T], shape: [Int]? = nil) throws(ClientError) -> Tensor<T> {
        let shape = shape ?? [values.count]
        guard shape.reduce(1, *) == values.count else {
            throw ClientError(.invalidArgument, "shape \(shape) does not hold \(values.count) elements")
        }
        return try createTensor(T.self, shape: shape) { dst in
            guard !values.isEmpty else { return }
            _ = values.withUnsafeBufferPointer { src in dst.update(fromContentsOf: src) }
        }
    }

    /// Creates a tensor of `dtype` and `shape` whose C-order bytes `fill` writes into shared memory.
    public func createTensor(
        dtype: DType, shape: [Int], order: TensorOrder = .c, fill: (UnsafeMutableRawBufferPointer) -> Void
    ) throws(ClientError) -> AnyTensor {
        guard shape.allSatisfy({ $0 >= 0 }) else { throw ClientError(.invalidArgument, "negative dimension in \(shape)") }
        let count = shape.reduce(1, *)
        let (byteCount, overflow) = count.multipliedReportingOverflow(by: dtype.size)
        guard !overflow else { throw ClientError(.invalidArgument, "tensor of shape \(shape) is too large") }
        let writer = try createBlob(size: byteCount)
        writer.withUnsafeMutableBytes { fill($0) }
        let blob = try seal(writer)
        return try createTensor(dtype: dtype, shape: shape, order: order, blob: blob)
    }

    /// Creates the tensor metadata over an existing sealed blob (which must hold at least
    /// `shape.product × dtype.size` bytes in C order).
    public func createTensor(dtype: DType, shape: [Int], order: TensorOrder = .c, blob: Blob) throws(ClientError) -> AnyTensor {
        let count = shape.reduce(1, *)
        guard blob.count >= count * dtype.size else {
            throw ClientError(.invalidArgument, "blob of \(blob.count) bytes cannot hold \(count) × \(dtype)")
        }
        let created = try createMetadata(Self.tensorMeta(dtype: dtype, shape: shape, order: order, blob: blob))
        return try AnyTensor(StoredObject(meta: created, blobs: [blob.id: blob]))
    }

    /// A tensor's tree over `blob`, as Python's builder writes it (not yet created).
    static func tensorMeta(dtype: DType, shape: [Int], order: TensorOrder = .c, blob: Blob) -> ObjectMeta {
        let count = shape.reduce(1, *)
        var meta = ObjectMeta(typename: "vineyard::Tensor<\(dtype.cppName)>")
        meta.setEncodedJSON("shape_", .array(shape.map { .number($0) }))
        meta.setEncodedJSON("partition_index_", .array([]))
        meta.nbytes = count * dtype.size
        meta.setEncodedJSON("order_", .string(order.rawValue))
        meta["value_type_"] = .string(dtype.numpyName)
        meta["value_type_meta_"] = .string(dtype.typeString)
        meta.addMember("buffer_", count == 0 ? .empty : blob)
        return meta
    }
}
