/// Where a blob's bytes live: `(store_fd, map_size, data_offset, data_size)`.
///
/// `storeFD` is the daemon's descriptor number of the arena's shared-memory file and
/// serves the client only as a key; `mapSize` is the whole file's mapping size (the
/// client maps `mapSize − 8`), constant per `storeFD`.
public struct Payload: Sendable, Equatable {
    public var objectID: ObjectID
    public var storeFD: Int32
    public var dataOffset: Int
    public var dataSize: Int
    public var mapSize: Int
    public var pointer: UInt64
    public var isSealed: Bool
    public var isOwner: Bool

    public init(
        objectID: ObjectID, storeFD: Int32, dataOffset: Int, dataSize: Int, mapSize: Int,
        pointer: UInt64, isSealed: Bool, isOwner: Bool = true
    ) {
        self.objectID = objectID
        self.storeFD = storeFD
        self.dataOffset = dataOffset
        self.dataSize = dataSize
        self.mapSize = mapSize
        self.pointer = pointer
        self.isSealed = isSealed
        self.isOwner = isOwner
    }

    /// The payload of the empty blob, exactly as upstream reports it.
    public static let empty = Payload(
        objectID: .emptyBlob, storeFD: -1, dataOffset: 0, dataSize: 0, mapSize: 0, pointer: 0, isSealed: false)

    public var json: JSON {
        .object([
            "data_offset": .number(dataOffset),
            "data_size": .number(dataSize),
            "is_gpu": .bool(false),
            "is_owner": .bool(isOwner),
            "is_sealed": .bool(isSealed),
            "map_size": .number(mapSize),
            "object_id": .number(objectID.rawValue),
            "pointer": .number(pointer),
            "store_fd": .int(Int64(storeFD)),
        ])
    }

    public init(json: JSON) throws(VineyardError) {
        let r = FieldReader(json, command: "payload")
        self.init(
            objectID: ObjectID(try r.uint("object_id")),
            storeFD: Int32(truncatingIfNeeded: try r.int("store_fd")),
            // Sizes come from a peer: negative ones are refused, ones beyond Int saturate
            // (every consumer bounds them by its arena), neither traps.
            dataOffset: try r.size("data_offset"),
            dataSize: try r.size("data_size"),
            mapSize: try r.size("map_size"),
            pointer: try r.optionalUInt("pointer") ?? 0,
            isSealed: try r.optionalBool("is_sealed") ?? false,
            isOwner: try r.optionalBool("is_owner") ?? true)
    }
}
