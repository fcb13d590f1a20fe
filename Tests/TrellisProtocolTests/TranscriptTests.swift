import Foundation
import Testing
import TrellisProtocol
import TrellisTestSupport

#if canImport(Glibc)
import Glibc
#endif

@Suite("Captured transcripts as codec vectors")
struct TranscriptTests {
    @Test("the repository's copies are the shared transcripts, all of them")
    func fixturesAreTheSharedCopies() throws {
        #expect(Transcripts.files().count >= 20, "Tests/Fixtures/captured is missing transcripts")
        guard access(Transcripts.sharedDirectory + "/numpy_int64.jsonl", R_OK) == 0 else { return }  // no ../shared here
        let shared = FileManager.default.enumerator(atPath: Transcripts.sharedDirectory)?
            .compactMap { $0 as? String }.filter { $0.hasSuffix(".jsonl") }.sorted() ?? []
        #expect(shared == Transcripts.files())
        for f in shared {
            let a = FileManager.default.contents(atPath: Transcripts.sharedDirectory + "/" + f)
            let b = FileManager.default.contents(atPath: Transcripts.directory + "/" + f)
            #expect(a != nil && a == b, "\(f) differs from ../shared/protocol/captured")
        }
    }

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
