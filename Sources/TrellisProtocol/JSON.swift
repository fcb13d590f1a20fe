/// A JSON value that keeps 64-bit unsigned integers exact.
///
/// Vineyard puts blob ids (≥ 2^63) and `UnspecifiedInstanceID` (2^64−1) into JSON
/// numbers, so integers never pass through `Double`: a non-negative integer that
/// fits `Int64` is `.int`, a larger one is `.uint`, and only numbers written with a
/// fraction or exponent become `.double`. Use ``JSON/number(_:)-(UInt64)`` to build
/// integers so that each value has exactly one representation.
public enum JSON: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case string(String)
    case array([JSON])
    case object([String: JSON])

    /// The canonical integer value: `.int` when it fits in `Int64`, else `.uint`.
    @inline(__always)
    public static func number(_ value: UInt64) -> JSON {
        value <= UInt64(Int64.max) ? .int(Int64(value)) : .uint(value)
    }

    @inline(__always)
    public static func number(_ value: Int) -> JSON { .int(Int64(value)) }

    // MARK: Accessors

    public subscript(key: String) -> JSON? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public var objectValue: [String: JSON]? {
        if case .object(let o) = self { return o }
        return nil
    }

    public var arrayValue: [JSON]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var boolValue: Bool? {
        switch self {
        case .bool(let b): return b
        default: return nil
        }
    }

    /// The value as an unsigned 64-bit integer: integers as they are, negative ones
    /// as their two's-complement bit pattern (upstream writes -1 for "none"), and
    /// floats only when they are whole numbers.
    public var uint64Value: UInt64? {
        switch self {
        case .int(let i): return UInt64(bitPattern: i)
        case .uint(let u): return u
        case .double(let d) where d >= 0 && d < 18_446_744_073_709_551_616.0 && d.rounded() == d:
            return UInt64(d)
        default: return nil
        }
    }

    public var int64Value: Int64? {
        switch self {
        case .int(let i): return i
        case .uint(let u): return Int64(bitPattern: u)
        case .double(let d) where d.rounded() == d && abs(d) < 9.2e18: return Int64(d)
        default: return nil
        }
    }

    public var intValue: Int? { int64Value.map { Int($0) } }

    public var doubleValue: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .uint(let u): return Double(u)
        case .double(let d): return d
        default: return nil
        }
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// A short name of the value's kind, for error messages.
    public var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .int, .uint, .double: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }
}

extension JSON: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByDictionaryLiteral, ExpressibleByArrayLiteral, ExpressibleByNilLiteral, ExpressibleByFloatLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(arrayLiteral elements: JSON...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSON)...) {
        var o: [String: JSON] = [:]
        o.reserveCapacity(elements.count)
        for (k, v) in elements { o[k] = v }
        self = .object(o)
    }
}

extension JSON: CustomStringConvertible {
    /// Compact JSON text with sorted keys.
    public var description: String { String(decoding: JSONWriter.encode(self), as: UTF8.self) }
}
