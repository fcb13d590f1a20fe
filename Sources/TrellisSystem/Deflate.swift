import CTrellisShim

/// zlib's deflate (zlib format: checksummed, naming its dictionary) with a preset
/// dictionary, one buffer at a time (the cluster's object
/// records: short JSON texts that share most of their keys with the dictionary).
public enum Deflate {
    /// `bytes` deflated with `dictionary`; nil when zlib fails (it does not on valid input).
    public static func compress(_ bytes: [UInt8], dictionary: [UInt8]) -> [UInt8]? {
        // zlib's compressBound, and a little: stored blocks never need more
        let capacity = bytes.count + bytes.count >> 12 + bytes.count >> 14 + bytes.count >> 25 + 64
        var out = [UInt8](repeating: 0, count: capacity)
        let n = bytes.withUnsafeBufferPointer { src in
            dictionary.withUnsafeBufferPointer { dict in
                out.withUnsafeMutableBufferPointer { dst in
                    trellis_deflate(src.baseAddress, src.count, dict.baseAddress, dict.count, dst.baseAddress, dst.count)
                }
            }
        }
        guard n >= 0 else { return nil }
        out.removeSubrange(n...)
        return out
    }

    /// `bytes` inflated with `dictionary`, exactly `size` bytes; nil when the input is corrupt
    /// (its checksum), incomplete, made with another dictionary, or inflates to any other
    /// size (at most `size` + 1 bytes are ever written).
    public static func decompress(_ bytes: [UInt8], size: Int, dictionary: [UInt8]) -> [UInt8]? {
        guard size >= 0, size <= Int(UInt32.max) else { return nil }
        // one byte more than announced: an input that inflates further is caught, not cut
        var out = [UInt8](repeating: 0, count: size + 1)
        let n = bytes.withUnsafeBufferPointer { src in
            dictionary.withUnsafeBufferPointer { dict in
                out.withUnsafeMutableBufferPointer { dst in
                    trellis_inflate(src.baseAddress, src.count, dict.baseAddress, dict.count, dst.baseAddress, dst.count)
                }
            }
        }
        guard n == size else { return nil }
        out.removeLast()
        return out
    }
}
