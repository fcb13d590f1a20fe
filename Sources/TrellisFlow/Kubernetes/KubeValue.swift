import Foundation
import Yams

/// A Kubernetes object (or any part of one) as a tree with ordered keys: what the renderer
/// writes as YAML, the launcher sends to the API server as JSON, and both read back.
///
/// Keys keep the order they were built in, so rendered manifests read as people write them
/// (`apiVersion`, `kind`, `metadata`, `spec`) and re-render byte for byte.
public indirect enum KubeValue: Sendable, Equatable {
    case string(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    case null
    case array([KubeValue])
    case object([(String, KubeValue)])

    public static func == (a: KubeValue, b: KubeValue) -> Bool {
        switch (a, b) {
        case (.string(let x), .string(let y)): return x == y
        case (.int(let x), .int(let y)): return x == y
        case (.double(let x), .double(let y)): return x == y
        case (.bool(let x), .bool(let y)): return x == y
        case (.null, .null): return true
        case (.array(let x), .array(let y)): return x == y
        case (.object(let x), .object(let y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    /// The value at `key` of an object (first match), else nil.
    public subscript(key: String) -> KubeValue? {
        guard case .object(let pairs) = self else { return nil }
        return pairs.first { $0.0 == key }?.1
    }

    /// Follows a path of object keys: `value[path: "status", "phase"]`.
    public subscript(path keys: String...) -> KubeValue? {
        var v: KubeValue? = self
        for k in keys { v = v?[k] }
        return v
    }

    /// The string, when this is one.
    public var string: String? { if case .string(let s) = self { return s } else { return nil } }
    /// The integer, when this is one.
    public var int: Int? { if case .int(let i) = self { return i } else { return nil } }
    /// The elements, when this is an array.
    public var array: [KubeValue]? { if case .array(let a) = self { return a } else { return nil } }

    /// Sets (replaces or appends) `key` of an object; a no-op on other values.
    public mutating func set(_ key: String, _ value: KubeValue) {
        guard case .object(var pairs) = self else { return }
        if let i = pairs.firstIndex(where: { $0.0 == key }) { pairs[i].1 = value } else { pairs.append((key, value)) }
        self = .object(pairs)
    }

    /// Sets the value at a path of object keys, creating empty objects on the way.
    public mutating func set(path keys: [String], _ value: KubeValue) {
        guard let first = keys.first else {
            self = value
            return
        }
        guard case .object = self else { return }
        var child = self[first] ?? .object([])
        child.set(path: Array(keys.dropFirst()), value)
        set(first, child)
    }

    // MARK: - JSON

    /// Compact JSON (what the API server is sent).
    public func json() -> String {
        var out = ""
        writeJSON(into: &out)
        return out
    }

    private func writeJSON(into out: inout String) {
        switch self {
        case .string(let s): Self.quote(s, into: &out)
        case .int(let i): out += String(i)
        case .double(let d): out += d.isFinite ? String(d) : "null"
        case .bool(let b): out += b ? "true" : "false"
        case .null: out += "null"
        case .array(let a):
            out += "["
            for (i, v) in a.enumerated() {
                if i > 0 { out += "," }
                v.writeJSON(into: &out)
            }
            out += "]"
        case .object(let pairs):
            out += "{"
            for (i, (k, v)) in pairs.enumerated() {
                if i > 0 { out += "," }
                Self.quote(k, into: &out)
                out += ":"
                v.writeJSON(into: &out)
            }
            out += "}"
        }
    }

    private static func quote(_ s: String, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        out += "\""
    }

    /// Parses JSON (an API server's answer). Object key order is kept as written.
    public static func parse(json data: Data) throws -> KubeValue {
        // YAML 1.2 is a superset of JSON, and Yams keeps mapping order.
        guard let text = String(data: data, encoding: .utf8) else { throw KubeValueError("not UTF-8") }
        return try parse(yaml: text)
    }

    // MARK: - YAML

    /// Block-style YAML of this value (one document, no `---`), UTF-8 as written: text
    /// with non-ASCII characters (a step's code with an accent or a dash in a comment)
    /// stays a readable literal block instead of becoming one escaped, quoted line.
    public func yaml() throws -> String {
        try Yams.serialize(node: node(), allowUnicode: true, sortKeys: false)
    }

    /// Several documents joined with `---` lines, as `kubectl apply -f` reads them.
    public static func yamlDocuments(_ docs: [KubeValue]) throws -> String {
        try docs.map { try "---\n" + $0.yaml() }.joined()
    }

    /// Parses one YAML (or JSON) document.
    public static func parse(yaml text: String) throws -> KubeValue {
        guard let node = try Yams.compose(yaml: text) else { return .null }
        return try KubeValue(node: node)
    }

    /// Parses every document of a multi-document YAML stream (empty documents skipped).
    public static func parseDocuments(yaml text: String) throws -> [KubeValue] {
        try Yams.compose_all(yaml: text).map { try KubeValue(node: $0) }.filter { $0 != .null }
    }

    private func node() -> Node {
        switch self {
        case .string(let s):
            // Quote whatever a YAML reader would otherwise take for another type ("3.10", "true", "");
            // libyaml itself quotes what cannot be written plain (": ", a leading "-", …).
            if s.contains("\n") { return Node(s, Tag(.str), .literal) }
            let needsQuotes = s.isEmpty || !(Node(s).any is String)
            return Node(s, Tag(.str), needsQuotes ? .doubleQuoted : .plain)
        case .int(let i): return Node(String(i), Tag(.int))
        case .double(let d): return Node(String(d), Tag(.float))
        case .bool(let b): return Node(b ? "true" : "false", Tag(.bool))
        case .null: return Node("null", Tag(.null))
        case .array(let a): return Node(a.map { $0.node() })
        case .object(let pairs): return Node(pairs.map { (Node($0.0), $0.1.node()) })
        }
    }

    private init(node: Node) throws {
        switch node {
        case .scalar(let s):
            let resolved = node.any
            switch resolved {
            case let b as Bool: self = .bool(b)
            case let i as Int: self = .int(i)
            case let d as Double: self = .double(d)
            case is NSNull: self = .null
            default: self = .string(s.string)
            }
            if node.tag.description == Tag.Name.str.rawValue { self = .string(s.string) }
        case .mapping(let m):
            self = .object(try m.map { k, v in
                guard let key = k.string else { throw KubeValueError("a mapping key is not a string") }
                return (key, try KubeValue(node: v))
            })
        case .sequence(let seq):
            self = .array(try seq.map { try KubeValue(node: $0) })
        case .alias:
            throw KubeValueError("YAML aliases are not supported")
        }
    }
}

/// A malformed Kubernetes document.
public struct KubeValueError: Error, CustomStringConvertible, Sendable {
    /// What is wrong.
    public var description: String
    /// Creates an error.
    public init(_ description: String) { self.description = description }
}

extension KubeValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: KubeValue...) { self = .array(elements) }
    /// Keys in the order written.
    public init(dictionaryLiteral elements: (String, KubeValue)...) { self = .object(elements) }
}

// MARK: - Codable

/// Part of a flow file (a step's `kubernetes.volumes`): decoded from YAML or JSON as written.
/// A decoder hands mappings over without their order, so object keys come back sorted — the
/// same value renders the same manifest every time.
extension KubeValue: Codable {
    public init(from decoder: any Decoder) throws {
        if let keyed = try? decoder.container(keyedBy: AnyKey.self) {
            var pairs: [(String, KubeValue)] = []
            for key in keyed.allKeys.sorted(by: { $0.stringValue < $1.stringValue }) {
                pairs.append((key.stringValue, try keyed.decode(KubeValue.self, forKey: key)))
            }
            self = .object(pairs)
            return
        }
        if var list = try? decoder.unkeyedContainer() {
            var items: [KubeValue] = []
            while !list.isAtEnd { items.append(try list.decode(KubeValue.self)) }
            self = .array(items)
            return
        }
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int.self) {
            self = .int(i)
        } else if let d = try? c.decode(Double.self) {
            self = .double(d)
        } else {
            self = .string(try c.decode(String.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .object(let pairs):
            var c = encoder.container(keyedBy: AnyKey.self)
            for (k, v) in pairs { try c.encode(v, forKey: AnyKey(stringValue: k)) }
        case .array(let items):
            var c = encoder.unkeyedContainer()
            for v in items { try c.encode(v) }
        case .string(let s):
            var c = encoder.singleValueContainer()
            try c.encode(s)
        case .int(let i):
            var c = encoder.singleValueContainer()
            try c.encode(i)
        case .double(let d):
            var c = encoder.singleValueContainer()
            try c.encode(d)
        case .bool(let b):
            var c = encoder.singleValueContainer()
            try c.encode(b)
        case .null:
            var c = encoder.singleValueContainer()
            try c.encodeNil()
        }
    }
}
