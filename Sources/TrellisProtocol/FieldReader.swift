/// Typed access to the fields of a request or reply, turning a missing or mistyped
/// field into an Invalid (code 1) error that names the field and the command.
public struct FieldReader: Sendable {
    public let object: [String: JSON]
    public let command: String

    public init(_ value: JSON, command: String) {
        self.object = value.objectValue ?? [:]
        self.command = command
    }

    public init(object: [String: JSON], command: String) {
        self.object = object
        self.command = command
    }

    private func missing(_ key: String, _ kind: String) -> VineyardError {
        VineyardError(.invalid, "Invalid message: '\(command)' needs field '\(key)' (\(kind))")
    }

    private func wrong(_ key: String, _ kind: String, _ got: JSON) -> VineyardError {
        VineyardError(.invalid, "Invalid message: field '\(key)' of '\(command)' must be \(kind), got \(got.kindName)")
    }

    public func has(_ key: String) -> Bool { object[key] != nil }

    public func value(_ key: String) throws(VineyardError) -> JSON {
        guard let v = object[key] else { throw missing(key, "any") }
        return v
    }

    public func uint(_ key: String) throws(VineyardError) -> UInt64 {
        guard let v = object[key] else { throw missing(key, "an unsigned integer") }
        guard let u = v.uint64Value else { throw wrong(key, "an unsigned integer", v) }
        return u
    }

    public func optionalUInt(_ key: String) throws(VineyardError) -> UInt64? {
        guard let v = object[key], !v.isNull else { return nil }
        guard let u = v.uint64Value else { throw wrong(key, "an unsigned integer", v) }
        return u
    }

    /// A size: a non-negative integer that fits in `Int`.
    public func size(_ key: String) throws(VineyardError) -> Int {
        guard let v = object[key] else { throw missing(key, "a size") }
        switch v {
        case .int(let i) where i >= 0: return Int(i)
        case .uint(let u): return u > UInt64(Int.max) ? Int.max : Int(u)
        default: throw wrong(key, "a non-negative integer", v)
        }
    }

    public func int(_ key: String) throws(VineyardError) -> Int64 {
        guard let v = object[key] else { throw missing(key, "an integer") }
        guard let i = v.int64Value else { throw wrong(key, "an integer", v) }
        return i
    }

    public func bool(_ key: String, default def: Bool) throws(VineyardError) -> Bool {
        guard let v = object[key], !v.isNull else { return def }
        switch v {
        case .bool(let b): return b
        case .int(let i): return i != 0  // nlohmann converts numbers to bool
        default: throw wrong(key, "a boolean", v)
        }
    }

    public func optionalBool(_ key: String) throws(VineyardError) -> Bool? {
        guard let v = object[key], !v.isNull else { return nil }
        guard let b = v.boolValue else { throw wrong(key, "a boolean", v) }
        return b
    }

    public func string(_ key: String) throws(VineyardError) -> String {
        guard let v = object[key] else { throw missing(key, "a string") }
        guard let s = v.stringValue else { throw wrong(key, "a string", v) }
        return s
    }

    public func string(_ key: String, default def: String) throws(VineyardError) -> String {
        guard let v = object[key], !v.isNull else { return def }
        guard let s = v.stringValue else { throw wrong(key, "a string", v) }
        return s
    }

    public func uintArray(_ key: String) throws(VineyardError) -> [UInt64] {
        guard let v = object[key] else { throw missing(key, "an array of ids") }
        guard let a = v.arrayValue else { throw wrong(key, "an array of unsigned integers", v) }
        var out: [UInt64] = []
        out.reserveCapacity(a.count)
        for e in a {
            guard let u = e.uint64Value else { throw wrong(key, "an array of unsigned integers", e) }
            out.append(u)
        }
        return out
    }

    public func stringArray(_ key: String) throws(VineyardError) -> [String] {
        guard let v = object[key] else { throw missing(key, "an array of strings") }
        guard let a = v.arrayValue else { throw wrong(key, "an array of strings", v) }
        var out: [String] = []
        for e in a {
            guard let s = e.stringValue else { throw wrong(key, "an array of strings", e) }
            out.append(s)
        }
        return out
    }

    /// Ids listed as `"num": n, "0": id, "1": id, …` (the 0.24.2 client's form), or as `"ids": [...]`.
    public func numberedIDs() throws(VineyardError) -> [UInt64] {
        if object["num"] == nil, object["ids"] != nil { return try uintArray("ids") }
        let n = try size("num")
        guard n <= object.count else {
            throw VineyardError(.invalid, "Invalid message: '\(command)' announces \(n) ids but carries fewer")
        }
        var out: [UInt64] = []
        out.reserveCapacity(n)
        for i in 0..<n { out.append(try uint(String(i))) }
        return out
    }
}
