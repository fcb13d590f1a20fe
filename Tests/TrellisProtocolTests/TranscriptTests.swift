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

    /// Requests in the transcripts that the 0.24.2 client did not send as it always does:
    /// raw_errors' deliberately broken ones, and hand-written shorter spellings.
    static func clientSpelled(_ file: String, _ msg: JSON) -> Bool {
        if file == "raw_errors.jsonl" { return false }
        return (try? Request.decode(msg)) != nil
    }

    @Test("every request the client sent round-trips through Request byte for byte", arguments: Transcripts.files())
    func requestRoundTrip(file: String) throws {
        for r in try Transcripts.records(file) where r["kind"]?.stringValue == "msg" && r["dir"]?.stringValue == "c2s" {
            guard let msg = r["msg"], Self.clientSpelled(file, msg) else { continue }
            let request = try Request.decode(msg)
            if case .unsupported = request { continue }  // not served: only its type is kept
            let again = request.encode()
            #expect(again.description == msg.description, "\(file) seq \(r["seq"]?.intValue ?? -1)")
            #expect(try Request.decode(again) == request)
        }
    }

    /// Reply types of commands Trellis does not serve (none left).
    static let unservedReplies: Set<String> = []

    @Test("every reply vineyardd sent round-trips through Reply byte for byte", arguments: Transcripts.files())
    func replyRoundTrip(file: String) throws {
        var checked = 0
        for r in try Transcripts.records(file) where r["kind"]?.stringValue == "msg" && r["dir"]?.stringValue == "s2c" {
            guard let msg = r["msg"] else { continue }
            if let t = msg["type"]?.stringValue, Self.unservedReplies.contains(t) {
                #expect(throws: VineyardError.self) { try Reply.decode(msg) }
                continue
            }
            let reply = try Reply.decode(msg)
            #expect(reply.encode().description == msg.description, "\(file) seq \(r["seq"]?.intValue ?? -1)")
            #expect(try Reply.decode(reply.encode()) == reply)
            checked += 1
        }
        #expect(checked > 0)
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
