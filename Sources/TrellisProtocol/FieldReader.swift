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

    static func missing(_ key: String, _ kind: String, _ command: String) -> VineyardError {
        VineyardError(.invalid, "Invalid message: '\(command)' needs field '\(key)' (\(kind))")
    }

    static func wrong(_ key: String, _ kind: String, _ got: JSON, _ command: String) -> VineyardError {
        VineyardError(.invalid, "Invalid message: field '\(key)' of '\(command)' must be \(kind), got \(got.kindName)")
    }

    public func has(_ key: String) -> Bool { object[key] != nil }

    public func value(_ key: String) throws(VineyardError) -> JSON {
        guard let v = object[key] else { throw Self.missing(key, "any", command) }
        return v
    }

    public func uint(_ key: String) throws(VineyardError) -> UInt64 { try Self.uint(object[key], key, command) }

    public func optionalUInt(_ key: String) throws(VineyardError) -> UInt64? { try Self.optionalUInt(object[key], key, command) }

    /// A size: a non-negative integer that fits in `Int`.
    public func size(_ key: String) throws(VineyardError) -> Int { try Self.size(object[key], key, command) }

    public func int(_ key: String) throws(VineyardError) -> Int64 {
        guard let v = object[key] else { throw Self.missing(key, "an integer", command) }
        guard let i = v.int64Value else { throw Self.wrong(key, "an integer", v, command) }
        return i
    }

    public func bool(_ key: String, default def: Bool) throws(VineyardError) -> Bool {
        try Self.bool(object[key], key, command, default: def)
    }

    public func optionalBool(_ key: String) throws(VineyardError) -> Bool? {
        guard let v = object[key], !v.isNull else { return nil }
        guard let b = v.boolValue else { throw Self.wrong(key, "a boolean", v, command) }
        return b
    }

    public func string(_ key: String) throws(VineyardError) -> String { try Self.string(object[key], key, command) }

    public func string(_ key: String, default def: String) throws(VineyardError) -> String {
        guard let v = object[key], !v.isNull else { return def }
        guard let s = v.stringValue else { throw Self.wrong(key, "a string", v, command) }
        return s
    }

    public func uintArray(_ key: String) throws(VineyardError) -> [UInt64] { try Self.uintArray(object[key], key, command) }

    // The conversions of one field's value (nil: absent), shared with `RequestScanner` so
    // that both decoders accept and refuse exactly the same values.

    static func uint(_ v: JSON?, _ key: String, _ command: String) throws(VineyardError) -> UInt64 {
        guard let v else { throw missing(key, "an unsigned integer", command) }
        guard let u = v.uint64Value else { throw wrong(key, "an unsigned integer", v, command) }
        return u
    }

    static func optionalUInt(_ v: JSON?, _ key: String, _ command: String) throws(VineyardError) -> UInt64? {
        guard let v, !v.isNull else { return nil }
        guard let u = v.uint64Value else { throw wrong(key, "an unsigned integer", v, command) }
        return u
    }

    static func size(_ v: JSON?, _ key: String, _ command: String) throws(VineyardError) -> Int {
        guard let v else { throw missing(key, "a size", command) }
        switch v {
        case .int(let i) where i >= 0: return Int(i)
        case .uint(let u): return u > UInt64(Int.max) ? Int.max : Int(u)
        default: throw wrong(key, "a non-negative integer", v, command)
        }
    }

    static func bool(_ v: JSON?, _ key: String, _ command: String, default def: Bool) throws(VineyardError) -> Bool {
        guard let v, !v.isNull else { return def }
        switch v {
        case .bool(let b): return b
        case .int(let i): return i != 0  // nlohmann converts numbers to bool
        default: throw wrong(key, "a boolean", v, command)
        }
    }

    static func string(_ v: JSON?, _ key: String, _ command: String) throws(VineyardError) -> String {
        guard let v else { throw missing(key, "a string", command) }
        guard let s = v.stringValue else { throw wrong(key, "a string", v, command) }
        return s
    }

    static func uintArray(_ v: JSON?, _ key: String, _ command: String) throws(VineyardError) -> [UInt64] {
        guard let v else { throw missing(key, "an array of ids", command) }
        guard let a = v.arrayValue else { throw wrong(key, "an array of unsigned integers", v, command) }
        var out: [UInt64] = []
        out.reserveCapacity(a.count)
        for e in a {
            guard let u = e.uint64Value else { throw wrong(key, "an array of unsigned integers", e, command) }
            out.append(u)
        }
        return out
    }

    public func stringArray(_ key: String) throws(VineyardError) -> [String] {
        guard let v = object[key] else { throw Self.missing(key, "an array of strings", command) }
        guard let a = v.arrayValue else { throw Self.wrong(key, "an array of strings", v, command) }
        var out: [String] = []
        for e in a {
            guard let s = e.stringValue else { throw Self.wrong(key, "an array of strings", e, command) }
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
