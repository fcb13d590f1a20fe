import Testing
import TrellisProtocol

#if canImport(Glibc)
import Glibc
#endif

/// The captured transcripts of the reference daemon and client (../shared/protocol/captured)
/// used as test vectors for the codec.
enum Transcripts {
    static var directory: String {
        // <repo>/Tests/TrellisProtocolTests/TranscriptTests.swift → <repo>/../shared/protocol/captured
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        return parts.joined(separator: "/") + "/../shared/protocol/captured"
    }

    static var available: Bool { access(directory + "/numpy_int64.jsonl", R_OK) == 0 }

    static func files() -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var out: [String] = []
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if name.hasSuffix(".jsonl") { out.append(name) }
        }
        return out.sorted()
    }

    static func records(_ file: String) throws -> [JSON] {
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

@Suite("Captured transcripts as codec vectors", .enabled(if: Transcripts.available, "../shared/protocol/captured is not beside the repository"))
struct TranscriptTests {
    @Test("every captured frame re-encodes to exactly its captured length", arguments: Transcripts.files())
    func reencode(file: String) throws {
        var checked = 0
        for r in try Transcripts.records(file) where r["kind"]?.stringValue == "msg" {
            guard let msg = r["msg"], let len = r["len"]?.intValue else { continue }
            let encoded = JSONWriter.encode(msg)
            #expect(encoded.count == len, "\(file) seq \(r["seq"]?.intValue ?? -1): \(msg.description.prefix(200))")
            #expect(try JSONParser.parse(encoded) == msg)
            checked += 1
        }
        #expect(checked > 0)
    }

    @Test("every request the client sent decodes", arguments: Transcripts.files())
    func decodeRequests(file: String) throws {
        for r in try Transcripts.records(file) where r["kind"]?.stringValue == "msg" && r["dir"]?.stringValue == "c2s" {
            guard let msg = r["msg"] else { continue }
            do {
                _ = try Request.decode(msg)
            } catch {
                // raw_errors sends deliberately broken requests; they must fail with Invalid.
                #expect(file == "raw_errors.jsonl" && error.code == .invalid, "\(file) seq \(r["seq"]?.intValue ?? -1): \(error)")
            }
        }
    }

    @Test("payloads in replies decode and re-encode identically")
    func payloads() throws {
        var count = 0
        for file in Transcripts.files() {
            for r in try Transcripts.records(file) where r["dir"]?.stringValue == "s2c" {
                guard let created = r["msg"]?["created"] else { continue }
                let p = try Payload(json: created)
                #expect(p.json == created)
                count += 1
            }
        }
        #expect(count > 10)
    }
}
