import TrellisProtocol

/// JSON text spelled exactly as Python's `json.dumps(value)` with default arguments spells
/// it (`", "` and `": "` separators, `ensure_ascii`), which is how the Python client
/// encodes shapes, column lists and names inside metadata (`"[16]"`, `"[\"a\", \"b\"]"`).
///
/// Object keys come out sorted (a ``JSON`` object has no order of its own).
public enum PythonJSON {
    /// Encodes `value` like `json.dumps(value)`.
    public static func dumps(_ value: JSON) -> String {
        var out = ""
        write(value, to: &out)
        return out
    }

    private static func write(_ value: JSON, to out: inout String) {
        switch value {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .uint(let u): out += String(u)
        case .double(let d): out += float(d)
        case .string(let s): string(s, to: &out)
        case .array(let a):
            out += "["
            for (i, e) in a.enumerated() {
                if i > 0 { out += ", " }
                write(e, to: &out)
            }
            out += "]"
        case .object(let o):
            out += "{"
            for (i, k) in o.keys.sorted().enumerated() {
                if i > 0 { out += ", " }
                string(k, to: &out)
                out += ": "
                write(o[k]!, to: &out)
            }
            out += "}"
        }
    }

    /// Python's `float.__repr__`: shortest round-trip digits, `1.0` for whole numbers,
    /// exponent form from 1e16 up and below 1e-4.
    static func float(_ d: Double) -> String {
        if d.isNaN { return "NaN" }
        if d.isInfinite { return d < 0 ? "-Infinity" : "Infinity" }
        let s = "\(d)"
        // Swift spells exponents as Python does ("1e-05", "1e+16") but already switches to
        // exponent form at 2^53; Python only at 1e16.
        guard abs(d) < 1e16, let e = s.firstIndex(of: "e"), let exponent = Int(s[s.index(after: e)...]), exponent > 0
        else { return s }
        let negative = s.hasPrefix("-")
        let mantissa = s[s.index(s.startIndex, offsetBy: negative ? 1 : 0)..<e]
        let digits = mantissa.filter { $0 != "." }
        let integerDigits = (mantissa.firstIndex(of: ".").map { mantissa.distance(from: mantissa.startIndex, to: $0) } ?? mantissa.count) + exponent
        let padded = digits + String(repeating: "0", count: max(0, integerDigits - digits.count))
        let whole = padded.prefix(integerDigits)
        var fraction = String(padded.dropFirst(integerDigits))
        if fraction.isEmpty { fraction = "0" }
        return (negative ? "-" : "") + whole + "." + fraction
    }

    private static func string(_ s: String, to out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if scalar.value >= 0x20 && scalar.value < 0x7F {
                    out.unicodeScalars.append(scalar)
                } else if scalar.value < 0x10000 {
                    out += hex4(scalar.value)
                } else {
                    let v = scalar.value - 0x10000
                    out += hex4(0xD800 + (v >> 10))
                    out += hex4(0xDC00 + (v & 0x3FF))
                }
            }
        }
        out += "\""
    }

    private static func hex4(_ v: UInt32) -> String {
        let digits = Array("0123456789abcdef")
        var s = "\\u"
        for shift in stride(from: 12, through: 0, by: -4) { s.append(digits[Int((v >> UInt32(shift)) & 0xF)]) }
        return s
    }
}
