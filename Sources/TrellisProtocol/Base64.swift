/// Minimal standard base64 (RFC 4648 §4, with padding), as the etcd JSON gateway
/// encodes keys and values.
package enum Base64 {
    private static let alphabet: [UInt8] = Array(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    private static let reverse: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (index, char) in alphabet.enumerated() { table[Int(char)] = UInt8(index) }
        // Tolerate the URL-safe alphabet too.
        table[Int(UInt8(ascii: "-"))] = 62
        table[Int(UInt8(ascii: "_"))] = 63
        return table
    }()

    package static func encode(_ bytes: some Collection<UInt8>) -> String {
        let input = Array(bytes)
        var out = [UInt8]()
        out.reserveCapacity((input.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= input.count {
            let n = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(alphabet[Int(n >> 6 & 63)])
            out.append(alphabet[Int(n & 63)])
            i += 3
        }
        let rest = input.count - i
        if rest == 1 {
            let n = UInt32(input[i]) << 16
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(UInt8(ascii: "="))
            out.append(UInt8(ascii: "="))
        } else if rest == 2 {
            let n = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(alphabet[Int(n >> 6 & 63)])
            out.append(UInt8(ascii: "="))
        }
        return String(decoding: out, as: UTF8.self)
    }

    package static func encode(_ string: String) -> String { encode(string.utf8) }

    /// Decodes base64 text exactly as ``encode(_:)-(some Collection<UInt8>)`` writes it:
    /// standard alphabet, padded to a multiple of 4, no line breaks, and no bits set past
    /// the last byte; `nil` for anything else. For bytes a peer asks to store, where a
    /// lenient decoder would store fewer bytes than were meant.
    package static func decodeStrict(_ text: String) -> [UInt8]? {
        text.utf8.withContiguousStorageIfAvailable { decodeStrict($0) } 
            ?? decodeStrict(Array(text.utf8))
    }

    private static func decodeStrict(_ input: some RandomAccessCollection<UInt8>) -> [UInt8]? {
        let n = input.count
        guard n % 4 == 0 else { return nil }
        if n == 0 { return [] }
        var padding = 0
        var i = input.index(input.endIndex, offsetBy: -1)
        while padding < 2, input[i] == UInt8(ascii: "=") {
            padding += 1
            i = input.index(before: i)
        }
        var out = [UInt8]()
        out.reserveCapacity(n / 4 * 3 - padding)
        var accumulator: UInt32 = 0
        var count = 0
        let table = reverse  // (once: a static's accessor per character cost more than the decoding)
        for char in input.prefix(n - padding) {
            let value = table[Int(char)]
            // (the reverse table also takes the URL-safe alphabet: not here)
            guard value != 0xFF, char != UInt8(ascii: "-"), char != UInt8(ascii: "_") else { return nil }
            accumulator = accumulator << 6 | UInt32(value)
            count += 1
            if count == 4 {
                out.append(UInt8(truncatingIfNeeded: accumulator >> 16))
                out.append(UInt8(truncatingIfNeeded: accumulator >> 8))
                out.append(UInt8(truncatingIfNeeded: accumulator))
                accumulator = 0
                count = 0
            }
        }
        switch count {
        case 0: break
        case 2:  // one byte: 12 bits, the low 4 must be zero
            guard accumulator & 0xF == 0 else { return nil }
            out.append(UInt8(truncatingIfNeeded: accumulator >> 4))
        case 3:  // two bytes: 18 bits, the low 2 must be zero
            guard accumulator & 0x3 == 0 else { return nil }
            out.append(UInt8(truncatingIfNeeded: accumulator >> 10))
            out.append(UInt8(truncatingIfNeeded: accumulator >> 2))
        default: return nil
        }
        return out
    }

    /// Decodes base64 text; `nil` when it contains characters outside the alphabet.
    package static func decode(_ text: String) -> [UInt8]? {
        var out = [UInt8]()
        out.reserveCapacity(text.utf8.count / 4 * 3)
        var accumulator: UInt32 = 0
        var bits = 0
        for char in text.utf8 {
            if char == UInt8(ascii: "=") { break }
            if char == UInt8(ascii: "\n") || char == UInt8(ascii: "\r") { continue }
            let value = reverse[Int(char)]
            if value == 0xFF { return nil }
            accumulator = accumulator << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        return out
    }
}
