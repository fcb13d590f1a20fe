import TrellisProtocol

/// An object's metadata tree: its fields, and its members as nested trees.
///
/// As in Vineyard, every nested JSON object is a member (an object or a blob, with a
/// string `"id"` once it exists); plain values are strings, numbers and booleans — a
/// structured value is stored as a JSON-encoded string (see ``PythonJSON``). Build one
/// with ``init(typename:)``, ``subscript(_:)`` and ``addMember(_:_:)``, then create it
/// with ``Client/createMetadata(_:)``; read one with ``Client/getMetadata(_:syncRemote:wait:)``.
public struct ObjectMeta: Sendable, Equatable, CustomStringConvertible {
    /// All fields, members included (as `.object` values).
    public private(set) var fields: [String: JSON]

    /// An empty tree for a new object of `typename` (`transient`, not `global`, `nbytes` 0
    /// until set — the defaults the Python client sends).
    public init(typename: String) {
        fields = ["typename": .string(typename), "transient": true, "global": false, "nbytes": 0]
    }

    /// Wraps a tree received from the daemon; it must be a JSON object with a string `typename`.
    public init(json: JSON) throws(ClientError) {
        guard let o = json.objectValue else { throw .invalidObject("metadata is not a JSON object") }
        guard o["typename"]?.stringValue != nil else { throw .invalidObject("metadata has no typename") }
        fields = o
    }

    init(unchecked fields: [String: JSON]) {
        self.fields = fields
    }

    /// The tree as JSON.
    public var json: JSON { .object(fields) }

    // MARK: Reserved fields

    /// The object's id; `nil` before the object is created.
    public var id: ObjectID? {
        fields["id"]?.stringValue.flatMap(ObjectID.init(string:))
    }

    /// The type, e.g. `vineyard::Tensor<int64>`.
    public var typename: String { fields["typename"]?.stringValue ?? "" }

    /// The instance the object lives on (`UInt64.max` for global objects spanning instances).
    public var instanceID: UInt64? { fields["instance_id"]?.uint64Value }

    /// The signature the daemon assigned (stable across migration).
    public var signature: UInt64? { fields["signature"]?.uint64Value }

    /// The size the writer declared (`nbytes`).
    public var nbytes: Int {
        get { fields["nbytes"]?.intValue ?? 0 }
        set { fields["nbytes"] = .number(newValue) }
    }

    /// Whether the object is local to its instance (`transient`); ``Client/persist(_:)`` clears it.
    public var isTransient: Bool { fields["transient"]?.boolValue ?? true }

    /// Whether the object may reference members on other instances.
    public var isGlobal: Bool {
        get { fields["global"]?.boolValue ?? false }
        set { fields["global"] = .bool(newValue) }
    }

    /// The name given with ``Client/putName(_:for:)`` (`__name`), if any.
    public var name: String? { fields["__name"]?.stringValue }

    /// Creation time in milliseconds since the epoch (`__timestamp`).
    public var timestamp: Int64? { fields["__timestamp"]?.int64Value }

    /// True for a blob's tree (`vineyard::Blob`).
    public var isBlob: Bool { typename == "vineyard::Blob" }

    // MARK: Values

    /// A field's value; members come back as `.object`. Setting an `.object` adds a
    /// member tree as is (prefer ``addMember(_:_:)``); setting `nil` removes the field.
    public subscript(key: String) -> JSON? {
        get { fields[key] }
        set { fields[key] = newValue }
    }

    /// A string field.
    public func string(_ key: String) -> String? { fields[key]?.stringValue }

    /// An integer field.
    public func int(_ key: String) -> Int? { fields[key]?.intValue }

    /// A field holding JSON text (how Python stores shapes, names and lists: `"[16]"`), decoded.
    public func decodedJSON(_ key: String) -> JSON? {
        guard let s = fields[key]?.stringValue else { return nil }
        return try? JSONParser.parse(s)
    }

    /// Stores `value` as JSON text, spelled as Python's `json.dumps` spells it.
    public mutating func setEncodedJSON(_ key: String, _ value: JSON) {
        fields[key] = .string(PythonJSON.dumps(value))
    }

    // MARK: Members

    /// The names of all members, sorted.
    public var memberNames: [String] {
        fields.compactMap { $0.value.objectValue != nil ? $0.key : nil }.sorted()
    }

    /// The member tree under `name`.
    public func member(_ name: String) -> ObjectMeta? {
        fields[name]?.objectValue.map(ObjectMeta.init(unchecked:))
    }

    /// Adds (or replaces) a member given by its full tree, as returned by
    /// ``Client/createMetadata(_:)`` or ``Client/getMetadata(_:syncRemote:wait:)``.
    public mutating func addMember(_ name: String, _ member: ObjectMeta) {
        fields[name] = member.json
    }

    /// Adds a blob member. Its `instance_id` is filled in by ``Client/createMetadata(_:)``.
    public mutating func addMember(_ name: String, _ blob: Blob) {
        fields[name] = .object(blob.memberFields(instanceID: nil))
    }

    /// Adds an existing non-blob object by id only (`{"id": "o…"}`); the daemon resolves it.
    public mutating func addMember(_ name: String, placeholder id: ObjectID) {
        fields[name] = ["id": .string(id.description)]
    }

    /// Every blob referenced by this tree or its members, with the instance it lives on
    /// (`nil` when the tree does not say), deduplicated, in id order.
    public var blobReferences: [(id: ObjectID, instanceID: UInt64?)] {
        var seen: [ObjectID: UInt64?] = [:]
        Self.collectBlobs(fields, into: &seen)
        return seen.map { ($0.key, $0.value) }.sorted { $0.id < $1.id }
    }

    private static func collectBlobs(_ o: [String: JSON], into seen: inout [ObjectID: UInt64?]) {
        for (_, v) in o {
            guard let m = v.objectValue else { continue }
            if m["typename"]?.stringValue == "vineyard::Blob" {
                if let id = m["id"]?.stringValue.flatMap(ObjectID.init(string:)) {
                    seen[id] = m["instance_id"]?.uint64Value
                }
            } else {
                collectBlobs(m, into: &seen)
            }
        }
    }

    /// True when some member is a bare `{"id": …}` placeholder.
    var hasPlaceholders: Bool { Self.hasPlaceholder(fields) }

    private static func hasPlaceholder(_ o: [String: JSON]) -> Bool {
        for (_, v) in o {
            guard let m = v.objectValue else { continue }
            if m.count == 1, m["id"] != nil { return true }
            if hasPlaceholder(m) { return true }
        }
        return false
    }

    /// Fills in `instance_id` wherever this tree or a member lacks one (what the Python
    /// client's `create_metadata` does with the client's instance id).
    mutating func stampInstanceID(_ instanceID: UInt64) {
        Self.stamp(&fields, instanceID)
    }

    private static func stamp(_ o: inout [String: JSON], _ instanceID: UInt64) {
        if o["instance_id"] == nil { o["instance_id"] = .number(instanceID) }
        for (k, v) in o {
            guard var m = v.objectValue, !(m.count == 1 && m["id"] != nil) else { continue }
            stamp(&m, instanceID)
            o[k] = .object(m)
        }
    }

    /// Compact JSON with sorted keys.
    public var description: String { json.description }
}
