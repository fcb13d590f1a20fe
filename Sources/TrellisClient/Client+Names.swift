import TrellisProtocol

/// A name and the object it refers to.
public struct NamedObject: Sendable, Equatable {
    /// The name.
    public var name: String
    /// The object it refers to.
    public var id: ObjectID

    /// Makes a pair.
    public init(name: String, id: ObjectID) {
        self.name = name
        self.id = id
    }
}

extension Client {
    // MARK: Names

    /// Names a persistent object (overwriting an existing name).
    ///
    /// - Throws: ``StatusCode/invalid`` for transient objects and blobs,
    ///   ``StatusCode/objectNotExists`` for missing ones.
    public func putName(_ name: String, for id: ObjectID) throws(ClientError) {
        try Replies.done(try call(.putName(id, name: name)), .putName)
    }

    /// The object `name` refers to; with `wait`, blocks (holding this connection) until the name appears.
    ///
    /// - Throws: ``StatusCode/objectNotExists`` when there is no such name and `wait` is false.
    public func getName(_ name: String, wait: Bool = false) throws(ClientError) -> ObjectID {
        try Replies.getName(try call(.getName(name, wait: wait)))
    }

    /// Names matching `pattern` (glob, or regular expression with `regex`), at most `limit`
    /// (Python's default is 5), sorted by name.
    public func listNames(pattern: String = "*", regex: Bool = false, limit: Int = 5) throws(ClientError) -> [NamedObject] {
        try Replies.names(try call(.listName(pattern: pattern, regex: regex, limit: limit))).map {
            NamedObject(name: $0.name, id: $0.id)
        }
    }

    /// Removes a name (a missing name is not an error).
    public func dropName(_ name: String) throws(ClientError) {
        try Replies.done(try call(.dropName(name)), .dropName)
    }

    /// Resolves `text` as an object id (`o…` hex) if it parses as one and exists, else as a name.
    public func resolve(_ text: String) throws(ClientError) -> ObjectID {
        if text.hasPrefix("o"), text.count == 17, let id = ObjectID(string: text), try exists(id) {
            return id
        }
        return try getName(text)
    }

    // MARK: Status

    /// The daemon's `instance_status`: memory, connections, and Trellis's arena figures.
    public func instanceStatus() throws(ClientError) -> InstanceStatus {
        try Replies.instanceStatus(try call(.instanceStatus))
    }

    /// The instances of the cluster (`cluster_meta`), in instance order.
    public func clusterMeta() throws(ClientError) -> [ClusterInstance] {
        try Replies.clusterMeta(try call(.clusterMeta))
    }
}
