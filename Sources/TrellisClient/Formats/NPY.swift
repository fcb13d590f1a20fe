/// numpy's `.npy` format: a header describing dtype, order and shape, then the raw
/// elements. (Encoding and decoding of the header only; the elements are the tensor's
/// blob bytes, written or read without conversion.)
public enum NPY {
    /// The leading `\x93NUMPY` magic.
    public static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]

    /// A parsed header.
    public struct Header: Sendable, Equatable {
        /// The element type (`descr`).
        public var dtype: DType
        /// The dimensions.
        public var shape: [Int]
        /// Whether the elements that follow are in Fortran (column-major) order.
        public var fortranOrder: Bool
        /// Where the elements start in the file.
        public var dataOffset: Int

        /// The number of elements.
        public var count: Int { shape.reduce(1, *) }
        /// The number of bytes of elements.
        public var byteCount: Int { count * dtype.size }
    }

    /// A version 1.0 header for C-order data, padded with spaces so that the data starts
    /// at a multiple of 64 bytes, exactly as `numpy.save` writes it.
    public static func header(dtype: DType, shape: [Int], fortranOrder: Bool = false) -> [UInt8] {
        let dims: String
        switch shape.count {
        case 0: dims = "()"
        case 1: dims = "(\(shape[0]),)"
        default: dims = "(" + shape.map(String.init).joined(separator: ", ") + ")"
        }
        var dict = "{'descr': '\(dtype.typeString)', 'fortran_order': \(fortranOrder ? "True" : "False"), 'shape': \(dims), }"
        let unpadded = magic.count + 2 + 2 + dict.utf8.count + 1
        dict += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var out = magic + [1, 0]
        let n = UInt16(dict.utf8.count)
        out.append(UInt8(n & 0xFF))
        out.append(UInt8(n >> 8))
        out.append(contentsOf: dict.utf8)
        return out
    }

    /// Parses the header at the start of a `.npy` file (`prefix` must hold the whole header;
    /// the first 4 KiB are enough for every realistic file).
    public static func parseHeader(_ prefix: [UInt8]) throws(ClientError) -> Header {
        func bad(_ why: String) -> ClientError { ClientError(.invalidArgument, "not a .npy file: \(why)") }
        guard prefix.count >= 10, Array(prefix[0..<6]) == magic else { throw bad("no \\x93NUMPY magic") }
        let major = prefix[6]
        let length: Int
        let start: Int
        switch major {
        case 1:
            length = Int(prefix[8]) | Int(prefix[9]) << 8
            start = 10
        case 2, 3:
            guard prefix.count >= 12 else { throw bad("truncated header") }
            length = Int(prefix[8]) | Int(prefix[9]) << 8 | Int(prefix[10]) << 16 | Int(prefix[11]) << 24
            start = 12
        default:
            throw bad("unknown version \(major)")
        }
        guard prefix.count >= start + length else { throw bad("truncated header") }
        let text = String(decoding: prefix[start..<(start + length)], as: UTF8.self)

        func value(of key: String) -> Substring? {
            guard let k = text.firstRange(of: "'\(key)'") else { return nil }
            var rest = text[k.upperBound...].drop { $0 == " " || $0 == ":" }
            if rest.first == "(" {
                guard let close = rest.firstIndex(of: ")") else { return nil }
                return rest[rest.startIndex...close]
            }
            if rest.first == "'" {
                rest = rest.dropFirst()
                return rest.prefix { $0 != "'" }
            }
            return rest.prefix { $0 != "," && $0 != "}" }
        }
        guard let descr = value(of: "descr") else { throw bad("no descr") }
        guard let dtype = DType(typeString: String(descr)) else {
            throw ClientError(.invalidArgument, "unsupported .npy dtype \(descr) (numeric little-endian and bool only)")
        }
        let fortran = value(of: "fortran_order").map { $0.strippingSpaces() == "True" } ?? false
        guard let dims = value(of: "shape") else { throw bad("no shape") }
        var shape: [Int] = []
        for part in dims.dropFirst().dropLast().split(separator: ",") {
            let t = part.strippingSpaces()
            if t.isEmpty { continue }
            guard let n = Int(t), n >= 0 else { throw bad("bad shape \(dims)") }
            shape.append(n)
        }
        return Header(dtype: dtype, shape: shape, fortranOrder: fortran, dataOffset: start + length)
    }

    /// Rearranges Fortran-order elements into C order (`src` and `dst` hold `shape` elements of `size` bytes).
    public static func fortranToC(
        _ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer, shape: [Int], elementSize size: Int
    ) {
        let count = shape.reduce(1, *)
        guard count > 0 else { return }
        // Fortran strides (in elements): 1, d0, d0*d1, …
        var fStrides = [Int](repeating: 1, count: shape.count)
        for k in 1..<max(shape.count, 1) where k < shape.count { fStrides[k] = fStrides[k - 1] * shape[k - 1] }
        var index = [Int](repeating: 0, count: shape.count)
        for c in 0..<count {
            var f = 0
            for k in 0..<shape.count { f += index[k] * fStrides[k] }
            (dst.baseAddress! + c * size).copyMemory(from: src.baseAddress! + f * size, byteCount: size)
            // Advance the C-order (last dimension fastest) multi-index.
            var k = shape.count - 1
            while k >= 0 {
                index[k] += 1
                if index[k] < shape[k] { break }
                index[k] = 0
                k -= 1
            }
        }
    }
}

extension Substring {
    func strippingSpaces() -> String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
