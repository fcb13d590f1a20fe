import TrellisProtocol

#if canImport(Glibc)
import Glibc
#endif

/// The captured transcripts of the reference daemon and client (../shared/protocol/captured)
/// used as test vectors for the codec.
public enum Transcripts {
    public static var directory: String {
        // <repo>/Sources/TrellisTestSupport/Transcripts.swift → <repo>/Tests/Fixtures/captured
        // (copies of ../shared/protocol/captured, kept in the repository so that no suite
        // depends on what lies beside the checkout; TranscriptTests checks they are equal).
        repository + "/Tests/Fixtures/captured"
    }

    /// The repository's root.
    public static var repository: String {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        return parts.joined(separator: "/")
    }

    /// The shared originals, when ../shared is beside the repository.
    public static var sharedDirectory: String { repository + "/../shared/protocol/captured" }

    public static var available: Bool { access(directory + "/numpy_int64.jsonl", R_OK) == 0 }

    public static func files() -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var out: [String] = []
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if name.hasSuffix(".jsonl") { out.append(name) }
        }
        return out.sorted()
    }

    public static func records(_ file: String) throws -> [JSON] {
        guard let f = fopen(directory + "/" + file, "r") else { return [] }
        defer { fclose(f) }
        var out: [JSON] = []
        var line: UnsafeMutablePointer<CChar>?
        var cap = 0
        while getline(&line, &cap, f) > 0 {
            let text = String(cString: line!)
            if text.allSatisfy({ $0.isWhitespace }) { continue }
            out.append(try JSONParser.parse(text))
        }
        free(line)
        return out
    }
}

