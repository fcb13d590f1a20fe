import Testing
import TrellisProtocol
import TrellisTestSupport

/// The daemon's fast paths (`Request.scan`, `Reply.frame()`) against the general codec:
/// the scanner either decodes exactly what `JSONParser` + `Request.decode` decode, or
/// leaves the message to them (nil); `frame()` writes exactly `Frame.encode(encode())`.
@Suite("Fast request decoding and reply framing")
struct FastPathTests {
    /// What the general path makes of `text`: the request and its type, or its error.
    static func general(_ bytes: [UInt8]) -> Result<(Request, String), VineyardError> {
        let message: JSON
        do {
            message = try JSONParser.parse(bytes)
        } catch {
            return .failure(VineyardError(.invalid, "Failed to parse the JSON message: \(error)"))
        }
        do {
            return .success((try Request.decode(message), try Request.type(of: message)))
        } catch {
            return .failure(error)
        }
    }

    static func scan(_ bytes: [UInt8]) -> (request: Request, type: String)? {
        bytes.withUnsafeBufferPointer { Request.scan($0) }
    }

    /// The invariant: a scanned request is the general path's request, with its type.
    static func agree(_ bytes: [UInt8], _ comment: @autoclosure () -> String) {
        guard let fast = scan(bytes) else { return }
        switch general(bytes) {
        case .success(let (request, type)):
            #expect(fast.request == request, "\(comment())")
            #expect(fast.type == type, "\(comment())")
        case .failure(let e):
            Issue.record("the scanner decoded what the general path refuses (\(e)): \(comment())")
        }
    }

    /// The 0.24.2 client's spelling of every hot request (keys sorted, as nlohmann writes them).
    static let hot: [(String, Request)] = [
        (#"{"size":128,"type":"create_buffer_request"}"#, .createBuffer(size: 128)),
        (#"{"object_id":16754644343700062208,"type":"seal_request"}"#, .seal(ObjectID(16_754_644_343_700_062_208))),
        (
            #"{"content":{"buffer_":{"id":"oe8847442bc400000","typename":"vineyard::Blob"},"nbytes":128,"typename":"vineyard::Tensor<int64>"},"type":"create_data_request"}"#,
            .createData([
                "buffer_": ["id": "oe8847442bc400000", "typename": "vineyard::Blob"], "nbytes": 128, "typename": "vineyard::Tensor<int64>",
            ])
        ),
        (
            #"{"id":[7531272306849480706],"sync_remote":true,"type":"get_data_request","wait":false}"#,
            .getData(ids: [ObjectID(7_531_272_306_849_480_706)], syncRemote: true, wait: false)
        ),
        (
            #"{"0":16754644343700062208,"1":5,"num":2,"type":"get_buffers_request","unsafe":false}"#,
            .getBuffers(ids: [ObjectID(16_754_644_343_700_062_208), ObjectID(5)], unsafe: false)
        ),
        (#"{"object_id":9223372036854775809,"type":"release_request"}"#, .release(ObjectID(9_223_372_036_854_775_809))),
        (
            #"{"deep":true,"fastpath":false,"force":false,"id":[7],"memory_trim":false,"type":"del_data_request"}"#,
            .delData(Request.DelData(ids: [ObjectID(7)], force: false, deep: true, memoryTrim: false, fastpath: false, wantsFeedback: false))
        ),
        (
            #"{"deep":false,"fastpath":true,"force":true,"id":[7,8],"memory_trim":true,"type":"del_data_with_feedbacks_request"}"#,
            .delData(Request.DelData(ids: [ObjectID(7), ObjectID(8)], force: true, deep: false, memoryTrim: true, fastpath: true, wantsFeedback: true))
        ),
        (#"{"id":7,"type":"persist_request"}"#, .persist(ObjectID(7))),
        (#"{"id":7,"type":"if_persist_request"}"#, .ifPersist(ObjectID(7))),
        (#"{"id":7531272306849480706,"type":"exists_request"}"#, .exists(ObjectID(7_531_272_306_849_480_706))),
        (#"{"name":"bench-trivial","type":"get_name_request","wait":false}"#, .getName("bench-trivial", wait: false)),
        (#"{"name":"n","object_id":7,"type":"put_name_request"}"#, .putName(ObjectID(7), name: "n")),
        (#"{"name":"n","type":"drop_name_request"}"#, .dropName("n")),
        (#"{"ids":[1,2],"type":"increase_reference_count_request"}"#, .increaseReferenceCount([ObjectID(1), ObjectID(2)])),
    ]

    @Test("the client's spelling of every hot request takes the fast path and decodes as the general path does")
    func clientSpelling() throws {
        for (text, expected) in Self.hot {
            let bytes = Array(text.utf8)
            let fast = try #require(Self.scan(bytes), "not scanned: \(text)")
            #expect(fast.request == expected, "\(text)")
            Self.agree(bytes, text)
        }
    }

    @Test("other spellings: key order, whitespace, unknown fields, escaped values, defaults")
    func otherSpellings() throws {
        let cases: [(String, Request)] = [
            (#"{"type":"create_buffer_request","size":128}"#, .createBuffer(size: 128)),
            (" {\n\t\"type\" : \"create_buffer_request\" ,\r\n \"size\" : 0 } \n", .createBuffer(size: 0)),
            (
                #"{"type":"exists_request","extra":{"a":[1,2,{"b":null}],"c":"\u00e9\""},"id":5,"more":-1.5e3,"z":[]}"#,
                .exists(ObjectID(5))
            ),
            (#"{"type":"get_name_request","name":"a\"b\\c\u00e9\ud83d\ude00/\n"}"#, .getName("a\"b\\c\u{e9}\u{1F600}/\n", wait: false)),
            (#"{"type":"get_name_request","name":"x","wait":1}"#, .getName("x", wait: true)),
            (#"{"type":"get_name_request","name":"x","wait":null}"#, .getName("x", wait: false)),
            (
                #"{"type":"del_data_request","id":[1]}"#,
                .delData(Request.DelData(ids: [ObjectID(1)], force: false, deep: true, memoryTrim: false, fastpath: false, wantsFeedback: false))
            ),
            (#"{"type":"get_buffers_request","ids":[3,4]}"#, .getBuffers(ids: [ObjectID(3), ObjectID(4)], unsafe: false)),
            (#"{"type":"get_buffers_request","ids":[9],"num":1,"0":3}"#, .getBuffers(ids: [ObjectID(3)], unsafe: false)),
            (#"{"num":0,"type":"get_buffers_request","unsafe":true}"#, .getBuffers(ids: [], unsafe: true)),
            (#"{"type":"seal_request","object_id":-1}"#, .seal(.invalid)),  // upstream's "none", as a bit pattern
            (#"{"type":"seal_request","object_id":7.0}"#, .seal(ObjectID(7))),
            (#"{"type":"create_buffer_request","size":18446744073709551615}"#, .createBuffer(size: Int.max)),
            (#"{"type":"exists_request","id":5,"00":1,"01":2,"-1":3}"#, .exists(ObjectID(5))),  // not numbered keys
            (#"{"type":"get_data_request","id":[],"sync_remote":false,"wait":true}"#, .getData(ids: [], syncRemote: false, wait: true)),
        ]
        for (text, expected) in cases {
            let bytes = Array(text.utf8)
            let fast = try #require(Self.scan(bytes), "not scanned: \(text)")
            #expect(fast.request == expected, "\(text)")
            Self.agree(bytes, text)
        }
    }

    @Test("what the scanner leaves to the general path, which decodes it or reports the same clear error")
    func leftToTheGeneralPath() throws {
        let decodable: [(String, Request)] = [
            (#"{"\u0074ype":"exists_request","id":5}"#, .exists(ObjectID(5))),  // escaped key
            (#"{"type":"exists_\u0072equest","id":5}"#, .exists(ObjectID(5))),  // escaped type
            (#"{"type":"exists_request","\u0069d":5}"#, .exists(ObjectID(5))),
            (#"{"type":"exists_request","id":5,"id":6}"#, .exists(ObjectID(6))),  // a key twice: the last one counts
            (#"{"type":"list_data_request","pattern":"*"}"#, .listData(pattern: "*", regex: false, limit: Int.max)),  // not hot
            (#"{"type":"register_request","version":"0.24.2"}"#, .register(.init(version: "0.24.2", storeType: 1, sessionID: 0, username: "", password: ""))),
            (
                #"{"type":"get_buffers_request","num":1,"16":2,"0":3}"#,  // a numbered key past the scanner's slots
                .getBuffers(ids: [ObjectID(3)], unsafe: false)
            ),
        ]
        for (text, expected) in decodable {
            let bytes = Array(text.utf8)
            #expect(Self.scan(bytes) == nil, "scanned: \(text)")
            guard case .success(let (request, _)) = Self.general(bytes) else {
                Issue.record("the general path refused \(text)")
                continue
            }
            #expect(request == expected, "\(text)")
        }
        // Missing and mistyped fields, and malformed or hostile input: never scanned, and
        // the error is the general path's (the connection loop answers it as before).
        let refused: [(String, Int, String?)] = [
            (#"{"type":"create_buffer_request"}"#, 1, "Invalid message: 'create_buffer_request' needs field 'size' (a size)"),
            (#"{"type":"create_buffer_request","size":-1}"#, 1, "Invalid message: field 'size' of 'create_buffer_request' must be a non-negative integer, got number"),
            (#"{"type":"create_buffer_request","size":"1"}"#, 1, nil),
            (#"{"type":"seal_request"}"#, 1, "Invalid message: 'seal_request' needs field 'object_id' (an unsigned integer)"),
            (#"{"type":"seal_request","object_id":[1]}"#, 1, nil),
            (#"{"type":"release_request","object_id":true}"#, 1, nil),
            (#"{"type":"exists_request","id":"o1"}"#, 1, nil),
            (#"{"type":"persist_request"}"#, 1, nil),
            (#"{"type":"get_data_request","id":5}"#, 1, nil),
            (#"{"type":"get_data_request","id":[1,"x"]}"#, 1, nil),
            (#"{"type":"get_data_request","id":[1],"wait":"yes"}"#, 1, nil),
            (#"{"type":"get_buffers_request","num":4,"0":1}"#, 1, "Invalid message: 'get_buffers_request' announces 4 ids but carries fewer"),
            (#"{"type":"get_buffers_request","num":3,"0":1}"#, 1, "Invalid message: 'get_buffers_request' needs field '1' (an unsigned integer)"),
            (#"{"type":"get_buffers_request","num":2,"0":1,"x":1,"y":2}"#, 1, nil),
            (#"{"type":"get_buffers_request"}"#, 1, nil),
            (#"{"type":"del_data_request","id":[1],"deep":2.5}"#, 1, nil),
            (#"{"type":"get_name_request"}"#, 1, "Invalid message: 'get_name_request' needs field 'name' (a string)"),
            (#"{"type":"get_name_request","name":7}"#, 1, nil),
            (#"{"type":"put_name_request","name":"n"}"#, 1, nil),
            (#"{"type":"create_data_request","content":[]}"#, 21, "Invalid metadata: 'content' must be an object"),
            (#"{"type":"create_data_request"}"#, 1, nil),
            (#"{"type":"increase_reference_count_request","ids":{}}"#, 1, nil),
            (#"{"type":7,"id":5}"#, 1, "Invalid message: 'type' must be a string"),
            (#"{"id":5}"#, 1, "Invalid message: no 'type' field"),
            (#"{}"#, 1, "Invalid message: no 'type' field"),
            (#"[{"type":"exists_request","id":5}]"#, 1, "Invalid message: no 'type' field"),
            (#"{"type":"no_such_request","id":5}"#, 1, "Got unexpected command: no_such_request"),
            (#"{"type":"exists_request","id":5"#, 1, nil),
            (#"{"type":"exists_request","id":5}x"#, 1, nil),
            (#"{"type":"exists_request","id":05}"#, 1, nil),
            (#"{"type":"exists_request","id":5,}"#, 1, nil),
            (#"{"type":"exists_request" "id":5}"#, 1, nil),
            (#"{"type":"exists_request","id":5,"x":tru}"#, 1, nil),
            (#"{"type":"exists_request","id":5,"x":"\ud800"}"#, 1, nil),
            ("{\"type\":\"exists_request\",\"id\":5,\"x\":\"a\u{01}\"}", 1, nil),
            ("{\"type\":\"exists_request\",\"id\":5,\"x\u{01}\":1}", 1, nil),
            (#"{"type":"exists_request","id":5,"x":"#, 1, nil),
            ("", 1, nil),
            (" ", 1, nil),
            (#"{"type":"exists_request","id":5,"deep":"# + String(repeating: "[", count: 200) + String(repeating: "]", count: 200) + "}", 1, nil),
        ]
        for (text, code, message) in refused {
            let bytes = Array(text.utf8)
            #expect(Self.scan(bytes) == nil, "scanned: \(text)")
            guard case .failure(let e) = Self.general(bytes) else {
                Issue.record("the general path accepted \(text)")
                continue
            }
            #expect(e.code.rawValue == code, "\(text): \(e)")
            if let message { #expect(e.message == message, "\(text)") }
        }
        // Invalid UTF-8 inside a value is decoded (repaired) the same way on both paths.
        Self.agree(Array(#"{"type":"get_name_request","name":""#.utf8) + [0xFF, 0xC3] + Array(#""}"#.utf8), "invalid UTF-8")
    }

    @Test("every request in the captured transcripts: the scanner agrees with the general path", arguments: Transcripts.files())
    func transcripts(file: String) throws {
        for r in try Transcripts.records(file) where r["kind"]?.stringValue == "msg" && r["dir"]?.stringValue == "c2s" {
            guard let msg = r["msg"] else { continue }
            let bytes = JSONWriter.encode(msg)
            Self.agree(bytes, "\(file) seq \(r["seq"]?.intValue ?? -1)")
            // (a get_buffers of more than 16 blobs is left to the general path on purpose)
            if let t = msg["type"]?.stringValue, Self.hot.contains(where: { $0.0.contains("\"\(t)\"") }),
                (msg["num"]?.intValue ?? 0) <= 16, case .success = Self.general(bytes)
            {
                #expect(Self.scan(bytes) != nil, "\(file) seq \(r["seq"]?.intValue ?? -1): a hot request left to the general path")
            }
        }
    }

    @Test("mutated requests: whatever the scanner decodes, the general path decodes identically")
    func mutations() {
        var rng = SplitMix(seed: 14)
        let alphabet = Array(#"{}[]:,"\ 0123456789-+.eEtrufalsn_abcdiy"#.utf8)
        var scanned = 0
        for (text, _) in Self.hot {
            let base = Array(text.utf8)
            for _ in 0..<400 {
                var b = base
                for _ in 0..<(1 + Int(rng.next() % 3)) {
                    let i = Int(rng.next() % UInt64(b.count))
                    switch rng.next() % 3 {
                    case 0: b[i] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                    case 1: b.remove(at: i)
                    default: b.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: i)
                    }
                    if b.isEmpty { b = [0x7B] }
                }
                if Self.scan(b) != nil { scanned += 1 }
                Self.agree(b, String(decoding: b, as: UTF8.self))
            }
        }
        #expect(scanned > 0)  // some mutations stay valid (a digit for a digit) and are scanned
    }

    // MARK: Replies

    static let payload = Payload(
        objectID: ObjectID(16_754_644_343_700_062_208), storeFD: 9, dataOffset: 64, dataSize: 128, mapSize: 268_435_464,
        pointer: 139_935_009_366_080, isSealed: true)

    static var replies: [Reply] {
        var other = payload
        other.isOwner = false
        other.isSealed = false
        other.storeFD = -1
        let many = (0..<11).map { i -> Payload in
            var p = payload
            p.dataOffset = i * 4096
            return p
        }
        var out: [Reply] = [
            .createBuffer(payload, fd: 9), .createBuffer(other, fd: -1), .createBuffer(.empty, fd: -1),
            .getBuffers([payload], fds: [], compress: false), .getBuffers([payload, other], fds: [9], compress: true),
            .getBuffers([], fds: [], compress: false), .getBuffers(Array(many.prefix(10)), fds: [3, 4], compress: false),
            .getBuffers(many, fds: [], compress: false),
            .getBuffers((0..<120).map { i -> Payload in
                var p = payload
                p.dataOffset = i * 64
                return p
            }, fds: [5], compress: false),
            .createData(.init(id: ObjectID(7_531_272_306_849_480_706), signature: 7_531_272_306_849_480_705, instanceID: 0)),
            .createData(.init(id: .invalid, signature: UInt64.max, instanceID: UInt64.max)),
            .data([:]),
            .data(["o68847442bc800002": ["typename": "vineyard::Tensor<int64>", "b": ["z": 1, "a": [1, "x", nil, true, 1.5]], "é": "\u{1}\"\\"]]),
            .exists(true), .exists(false), .ifPersist(true), .ifPersist(false), .getName(ObjectID(5)), .getName(.invalid),
            .deletedBlobs([]), .deletedBlobs([ObjectID(1 << 63 | 5), ObjectID(2)]),
            .error(VineyardError(.invalid, "bad \"x\"\n\t\u{1}\\ é")), .error(VineyardError(.objectNotExists, "failed to find name: n")),
            .memoryTrim(trimmed: false), .listName(["a": ObjectID(1)]),
            .objects([:], payloads: [], fds: []),
            .objects(["o68847442bc800002": ["typename": "vineyard::Tensor<int64>", "b": ["z": 1]]], payloads: [payload, other], fds: [9]),
        ]
        out += Reply.Done.allCases.map { .done($0) }
        return out
    }

    @Test("every reply's frame is exactly Frame.encode(encode())")
    func replyFrames() {
        for reply in Self.replies {
            #expect(reply.frame() == Frame.encode(reply.encode()), "\(reply.type)")
        }
    }

    @Test("object keys are written in UTF-8 byte order, as std::map orders them")
    func keyOrder() throws {
        let keys = ["", "a", "ab", "b", "\u{e9}", "z", "\u{1F600}", "\u{FFFF}", "A", "_", "0", "10", "9", "aa", "a\u{0}"]
        var o: [String: JSON] = [:]
        for (i, k) in keys.enumerated() { o[k] = .number(i) }
        let text = JSON.object(o).description
        let expected = keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        let written = expected.map { k in JSON.string(k).description + ":" + String(keys.firstIndex(of: k)!) }
        #expect(text == "{" + written.joined(separator: ",") + "}")
    }

    @Test("keys that agree in their first 16 bytes or more, and random keys, sort by all their bytes")
    func keyOrderLongPrefixes() throws {
        var keys = ["partition_index_", "partition_index_row_", "partition_index_column_", "__values_-value-1",
                    "__values_-value-10", "__values_-value-2", "__values_-key-1", "0123456789abcdef",
                    "0123456789abcdef\u{0}", "0123456789abcdeg", "0123456789abcde", "0123456789abcdef\u{e9}",
                    "0123456789abcdef\u{7f}"]
        var rng = SplitMix(seed: 42)
        let alphabet = Array("ab_\u{0}\u{7f}\u{e9}\u{1F600}")
        for _ in 0..<300 {
            let n = Int(rng.next() % 24)
            keys.append(String((0..<n).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] }))
        }
        keys = Array(Set(keys))
        var o: [String: JSON] = [:]
        for (i, k) in keys.enumerated() { o[k] = .number(i) }
        let expected = keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        let written = expected.map { k in JSON.string(k).description + ":" + String(keys.firstIndex(of: k)!) }
        #expect(JSON.object(o).description == "{" + written.joined(separator: ",") + "}")
    }

    @Test("every reply in the captured transcripts frames as it encodes", arguments: Transcripts.files())
    func transcriptReplies(file: String) throws {
        for r in try Transcripts.records(file) where r["kind"]?.stringValue == "msg" && r["dir"]?.stringValue == "s2c" {
            guard let msg = r["msg"], let reply = try? Reply.decode(msg) else { continue }
            #expect(reply.frame() == Frame.encode(reply.encode()), "\(file) seq \(r["seq"]?.intValue ?? -1)")
        }
    }
}

/// A small deterministic generator, so that a failure reproduces.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
