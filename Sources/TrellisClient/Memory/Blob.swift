import TrellisProtocol

/// A sealed blob: a read-only, zero-copy view of bytes in the daemon's shared memory
/// (or, over RPC, of the copy that arrived on the socket).
///
/// Reading never copies: ``withBytes(_:)`` and ``withUnsafeBytes(_:)`` lend the mapped
/// memory for the duration of a closure, so the view cannot escape it. The mapping stays
/// alive while the connection or any `Blob` still refers to it — a `Blob` kept after
/// ``Client/close()`` remains valid (the daemon may have freed the blob by then, but
/// the memory stays mapped; its contents are only guaranteed while the object exists).
public struct Blob: Sendable, CustomStringConvertible {
    /// The blob's id (bit 63 set); ``ObjectID/emptyBlob`` for the empty blob.
    public let id: ObjectID
    /// The blob's size in bytes.
    public let count: Int
    let region: MemoryRegion?
    let offset: Int

    init(id: ObjectID, region: MemoryRegion?, offset: Int, count: Int) {
        self.id = id
        self.region = region
        self.offset = offset
        self.count = count
    }

    /// The empty blob (`o8000000000000000`): no memory, no daemon round trip.
    public static let empty = Blob(id: .emptyBlob, region: nil, offset: 0, count: 0)

    /// True for a blob of zero bytes.
    public var isEmpty: Bool { count == 0 }

    /// True when the bytes live in a daemon arena mapped into this process (IPC),
    /// false for an RPC copy or the empty blob.
    public var isSharedMemory: Bool { region?.isArena ?? false }

    /// The address of the first byte in this process (informational: use it to check
    /// zero-copy placement, not to read — use ``withUnsafeBytes(_:)`` for that).
    public var address: UInt { region.map { UInt(bitPattern: $0.base + offset) } ?? 0 }

    /// The bounds of the mapping the blob lies in: `(base address, length)`.
    public var mappingBounds: (base: UInt, length: Int)? {
        region.map { (UInt(bitPattern: $0.base), $0.length) }
    }

    /// Lends the bytes as a `RawSpan`.
    public func withBytes<R, E: Error>(_ body: (RawSpan) throws(E) -> R) throws(E) -> R {
        try withUnsafeBytes { (buffer) throws(E) -> R in try body(buffer.bytes) }
    }

    /// Lends the bytes as an `UnsafeRawBufferPointer`, valid only inside `body`.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        guard let region else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return try withExtendedLifetime(region) { () throws(E) -> R in
            try body(UnsafeRawBufferPointer(start: region.base + offset, count: count))
        }
    }

    /// A copy of the bytes (for small blobs and tests; large reads should use the views).
    public func copyBytes() -> [UInt8] {
        withUnsafeBytes { Array($0) }
    }

    /// The member tree that references this blob from a parent's metadata, as the
    /// Python client writes it.
    public func memberMeta(instanceID: UInt64) -> ObjectMeta {
        ObjectMeta(unchecked: memberFields(instanceID: instanceID))
    }

    /// The member tree's fields; without `instance_id` when `instanceID` is nil (the
    /// client fills it in when the parent is created).
    func memberFields(instanceID: UInt64?) -> [String: JSON] {
        var fields: [String: JSON] = [
            "id": .string(id.description), "length": .number(count), "nbytes": .number(count), "transient": true,
            "typename": "vineyard::Blob",
        ]
        // What Python's create_empty_blob() contributes (captured pyarrow_table 12).
        if id == .emptyBlob { fields["signature"] = .number(ObjectID.emptyBlob.rawValue) }
        if let instanceID { fields["instance_id"] = .number(instanceID) }
        return fields
    }

    public var description: String { "Blob(\(id), \(count) bytes)" }

    /// Blobs by id (duplicates, such as several empty blobs, collapse).
    static func map(_ blobs: [Blob]) -> [ObjectID: Blob] {
        Dictionary(blobs.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
    }
}

/// An unsealed blob being written: a mutable view of its memory.
///
/// Fill it through ``withMutableBytes(_:)`` / ``withUnsafeMutableBytes(_:)``, then
/// ``Client/seal(_:)`` it; a sealed blob is immutable by contract (other clients may
/// be reading it), so do not write through a writer after sealing it.
public struct BlobWriter: Sendable, CustomStringConvertible {
    /// The blob's id. Over RPC the daemon assigns the id when the bytes are sent, so
    /// there this is ``ObjectID/invalid`` until ``Client/seal(_:)`` returns the ``Blob``.
    public let id: ObjectID
    /// The blob's size in bytes.
    public let count: Int
    let region: MemoryRegion?
    let offset: Int

    init(id: ObjectID, region: MemoryRegion?, offset: Int, count: Int) {
        self.id = id
        self.region = region
        self.offset = offset
        self.count = count
    }

    /// Lends the memory as a `MutableRawSpan`.
    public func withMutableBytes<R, E: Error>(_ body: (inout MutableRawSpan) throws(E) -> R) throws(E) -> R {
        try withUnsafeMutableBytes { (buffer) throws(E) -> R in
            var span = buffer.mutableBytes
            return try body(&span)
        }
    }

    /// Lends the memory as an `UnsafeMutableRawBufferPointer`, valid only inside `body`.
    public func withUnsafeMutableBytes<R, E: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        guard let region else { return try body(UnsafeMutableRawBufferPointer(start: nil, count: 0)) }
        return try withExtendedLifetime(region) { () throws(E) -> R in
            try body(UnsafeMutableRawBufferPointer(start: region.base + offset, count: count))
        }
    }

    /// Copies `bytes` into the blob at `offset` (they must fit).
    public func copy(_ bytes: UnsafeRawBufferPointer, at offset: Int = 0) {
        precondition(offset >= 0 && offset + bytes.count <= count, "copy out of the blob's bounds")
        guard bytes.count > 0 else { return }
        withUnsafeMutableBytes { $0.baseAddress!.advanced(by: offset).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
    }

    /// The read view of the same bytes, for the blob once it is sealed.
    var sealedView: Blob { Blob(id: id, region: region, offset: offset, count: count) }

    public var description: String { "BlobWriter(\(id), \(count) bytes)" }
}
