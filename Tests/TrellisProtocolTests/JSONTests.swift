import Testing
import TrellisProtocol

@Suite("JSON codec")
struct JSONTests {
    @Test("64-bit unsigned integers survive a round trip exactly")
    func unsignedExtremes() throws {
        for v: UInt64 in [0, 1, UInt64(Int64.max), UInt64(Int64.max) + 1, 16_754_640_366_094_778_368, UInt64.max] {
            let text = "{\"object_id\":\(v)}"
            let parsed = try JSONParser.parse(text)
            #expect(parsed["object_id"]?.uint64Value == v)
            #expect(parsed.description == text)
        }
    }

    @Test("negative integers and floats keep their form")
    func numbers() throws {
        let parsed = try JSONParser.parse("[-1,-9223372036854775808,1.2345000505447388,1e-05,0.5,3.0]")
        #expect(parsed == .array([.int(-1), .int(Int64.min), .double(1.2345000505447388), .double(1e-05), .double(0.5), .double(3.0)]))
        #expect(try JSONParser.parse(parsed.description) == parsed)
        #expect(JSON.double(1.2345000505447388).description == "1.2345000505447388")
    }

    @Test("keys are written sorted and compact, strings escaped")
    func writer() {
        let v: JSON = ["b": 1, "a": ["z": nil, "y": true], "s": "q\"\\\n\t\u{1}é"]
        #expect(v.description == #"{"a":{"y":true,"z":null},"b":1,"s":"q\"\\\n\t\u0001é"}"#)
    }

    @Test("escapes and surrogate pairs decode")
    func stringEscapes() throws {
        let parsed = try JSONParser.parse(#"["\u00e9\ud83d\ude00\/\b\f"]"#)
        #expect(parsed == .array([.string("é😀/\u{8}\u{c}")]))
    }

    @Test("malformed input is rejected with a position", arguments: [
        "", "{", "{\"type\": \"register_request\", ", "[1,]", "{\"a\" 1}", "01", "1.", "-", "\"abc", "tru",
        "{\"a\":1}x", "\"\u{1}\"", "\"\\ud800\"", "[1e]",
    ])
    func malformed(text: String) {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(text) }
    }

    @Test("nesting is bounded")
    func depthLimit() throws {
        let deep = String(repeating: "[", count: 600) + String(repeating: "]", count: 600)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(deep) }
        let ok = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        _ = try JSONParser.parse(ok)
    }

    @Test("integers beyond 64 bits become doubles instead of wrapping")
    func hugeIntegers() throws {
        let parsed = try JSONParser.parse("18446744073709551616")
        #expect(parsed == .double(18446744073709551616.0))
    }
}

@Suite("Ids and frames")
struct IDAndFrameTests {
    @Test("object id text form")
    func idText() {
        #expect(ObjectID(0x6884_7442_bc80_0002).description == "o68847442bc800002")
        #expect(ObjectID(string: "o68847442bc800002") == ObjectID(0x6884_7442_bc80_0002))
        #expect(ObjectID(string: "o0000000000000123")?.rawValue == 291)
        #expect(ObjectID.emptyBlob.description == "o8000000000000000")
        #expect(ObjectID(string: "ozz") == nil)
        #expect(ObjectID(1 << 63 | 5).isBlob)
        #expect(!ObjectID(5).isBlob)
    }

    @Test("generator: layout, blob bit, uniqueness when the clock stands still or goes back")
    func generator() {
        var g = ObjectIDGenerator(instance: 3)
        let a = g.next(blob: false, nowMillis: 1_795_595_242_226)
        #expect(a.rawValue >> 22 == 1_795_595_242_226 & ((1 << 41) - 1))
        #expect((a.rawValue >> 12) & 0x3FF == 3)
        let b = g.next(blob: true, nowMillis: 1_795_595_242_226)
        #expect(b.isBlob && (b.rawValue >> 12) & 0x3FF == 0)
        var seen = Set<UInt64>()
        for i in 0..<10_000 { seen.insert(g.next(blob: false, nowMillis: i % 2 == 0 ? 1_000 : 999).rawValue) }
        #expect(seen.count == 10_000)
    }

    @Test("decoder handles every split of a stream and enforces the limit")
    func frameDecoder() throws {
        let frames = [Frame.encode(["type": "exit_request"]), Frame.encode(["type": "seal_request", "object_id": .uint(UInt64.max)])]
        let stream = frames.flatMap { $0 }
        for split in 0...stream.count {
            var d = FrameDecoder()
            d.feed(stream[..<split])
            var got: [[UInt8]] = []
            while case .frame(let f)? = d.next() { got.append(f) }
            d.feed(stream[split...])
            while case .frame(let f)? = d.next() { got.append(f) }
            #expect(got == frames.map { Array($0.dropFirst(8)) })
        }
        var small = FrameDecoder(maxMessageSize: 10)
        small.feed(Frame.encode(["type": "a long enough message"]))
        #expect(small.next() == .tooLarge(announced: UInt64(#"{"type":"a long enough message"}"#.utf8.count)))
    }
}
