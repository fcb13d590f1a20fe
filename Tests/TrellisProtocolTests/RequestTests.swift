import Testing
import TrellisProtocol

@Suite("Request decoding")
struct RequestTests {
    func decode(_ text: String) throws -> Request {
        try Request.decode(try JSONParser.parse(text))
    }

    @Test("the 0.24.2 client's forms")
    func clientForms() throws {
        #expect(try decode(#"{"type":"create_buffer_request","size":128}"#) == .createBuffer(size: 128))
        #expect(
            try decode(#"{"type":"get_buffers_request","num":2,"0":9223372036854775809,"1":5,"unsafe":false}"#)
                == .getBuffers(ids: [ObjectID(9_223_372_036_854_775_809), ObjectID(5)], unsafe: false))
        #expect(try decode(#"{"type":"get_buffers_request","ids":[7],"unsafe":true}"#) == .getBuffers(ids: [ObjectID(7)], unsafe: true))
        guard case .register(let r) = try decode(#"{"type":"register_request","version":"0.0.1"}"#) else {
            Issue.record("not a register")
            return
        }
        #expect(r.storeType == 1 && r.version == "0.0.1")
        guard case .register(let p) = try decode(#"{"type":"register_request","store_type":"Plasma"}"#) else { return }
        #expect(p.storeType == 2)
        #expect(try decode(#"{"type":"list_data_request","pattern":"*","regex":false,"limit":5}"#) == .listData(pattern: "*", regex: false, limit: 5))
    }

    @Test("errors carry upstream's codes", arguments: [
        (#"{"hello":"world"}"#, 1, "Invalid message: no 'type' field"),
        (#"{"type":"no_such_request"}"#, 1, "Got unexpected command: no_such_request"),
        (#"{"type":"create_buffer_request"}"#, 1, nil),
        (#"{"type":"create_buffer_request","size":"abc"}"#, 1, nil),
        (#"{"type":"create_buffer_request","size":-1}"#, 1, nil),
        (#"{"type":"seal_request","object_id":[1]}"#, 1, nil),
        (#"{"type":"get_buffers_request","num":3,"0":1}"#, 1, nil),
        (#"{"type":"create_data_request","content":[]}"#, 21, nil),
    ] as [(String, Int, String?)])
    func errors(text: String, code: Int, message: String?) throws {
        do {
            _ = try decode(text)
            Issue.record("decoded \(text)")
        } catch let e as VineyardError {
            #expect(e.code.rawValue == code)
            if let message { #expect(e.message == message) }
        }
    }

    @Test("a peer's payload with hostile sizes is refused or saturated, never a trap")
    func hostilePayloadNumbers() throws {
        func payload(_ size: String) throws -> Payload {
            try Payload(json: try JSONParser.parse(
                #"{"object_id":1,"store_fd":-1,"data_offset":0,"map_size":0,"data_size":"# + size + "}"))
        }
        #expect(throws: VineyardError.self) { try payload("-1") }
        #expect(try payload("18446744073709551615").dataSize == Int.max)
        #expect(try payload("9223372036854775808").dataSize == Int.max)
        #expect(try payload("4611686018427387904").dataSize == 1 << 62)
        #expect(throws: VineyardError.self) { try payload("1.5") }
    }
}

@Suite("Trellis' protocol extensions")
struct ExtensionTests {
    @Test("split_buffer round-trips both ways; bad sizes are refused with upstream's Invalid")
    func splitBuffer() throws {
        let r = Request.splitBuffer(ObjectID(0x8000_0000_0000_0042), sizes: [4096, 4096, 100], seal: false)
        let text = String(decoding: JSONWriter.encode(r.encode()), as: UTF8.self)
        #expect(text.contains(#""type":"trellis_split_buffer_request""#) && text.contains(#""sizes":[4096,4096,100]"#))
        #expect(!text.contains("seal"))
        #expect(try Request.decode(try JSONParser.parse(text)) == r)
        let sealed = Request.splitBuffer(ObjectID(0x8000_0000_0000_0042), sizes: [64], seal: true)
        let sealedText = String(decoding: JSONWriter.encode(sealed.encode()), as: UTF8.self)
        #expect(sealedText.contains(#""seal":true"#))
        #expect(try Request.decode(try JSONParser.parse(sealedText)) == sealed)
        #expect(throws: VineyardError.self) {
            try Request.decode(try JSONParser.parse(#"{"type":"trellis_split_buffer_request","id":5,"sizes":[64],"seal":"yes"}"#))
        }
        for bad in [#"{"type":"trellis_split_buffer_request","id":5,"sizes":["64"]}"#,
                    #"{"type":"trellis_split_buffer_request","sizes":[64]}"#,
                    #"{"type":"trellis_split_buffer_request","id":5,"num":3,"sizes":[64]}"#] {
            #expect(throws: VineyardError.self) { try Request.decode(try JSONParser.parse(bad)) }
        }
        let reply = Reply.splitBuffer([ObjectID(0x8000_0000_0000_0001), ObjectID(0x8000_0000_0000_0002)])
        #expect(try Reply.decode(try JSONParser.parse(JSONWriter.encode(reply.encode()))) == reply)
    }

    @Test("persist_name round-trips; bad fields are refused")
    func persistNamed() throws {
        let r = Request.persistNamed(ObjectID(0x0123), name: "x_train")
        let text = String(decoding: JSONWriter.encode(r.encode()), as: UTF8.self)
        #expect(text == #"{"id":291,"name":"x_train","type":"trellis_persist_request"}"#)
        #expect(try Request.decode(try JSONParser.parse(text)) == r)
        for bad in [#"{"type":"trellis_persist_request","id":291}"#,
                    #"{"type":"trellis_persist_request","name":"n"}"#,
                    #"{"type":"trellis_persist_request","id":291,"name":7}"#,
                    #"{"type":"trellis_persist_request","id":"o0123","name":"n"}"#] {
            #expect(throws: VineyardError.self) { try Request.decode(try JSONParser.parse(bad)) }
        }
    }

    @Test("put_inline round-trips with its bytes; bad base64, bad fields and too many bytes are refused")
    func putInline() throws {
        let tree: JSON = ["typename": "vineyard::Tensor<int64>", "buffer_": [Request.inlineBlobKey: 0]]
        let r = Request.putInline(tree, blobs: [[1, 2, 3, 4, 5, 6, 7, 8], [], [0xFF]])
        let text = String(decoding: JSONWriter.encode(r.encode()), as: UTF8.self)
        #expect(text.contains(#""blobs":["AQIDBAUGBwg=","","/w=="]"#) && text.contains(#""type":"trellis_put_request""#))
        #expect(try Request.decode(try JSONParser.parse(text)) == r)
        let head = #"{"type":"trellis_put_request","content":{"typename":"t"},"blobs":"#
        for bad in [head + #"["AQI"]}"#,        // not padded
                    head + #"["AR=="]}"#,       // bits past the last byte
                    head + #"["-_8="]}"#,       // URL-safe alphabet
                    head + #"["AQ\nID"]}"#,     // a line break
                    head + #"["A=QI"]}"#,       // padding inside
                    head + #"[7]}"#,            // not a string
                    head + #""AQID"}"#,         // not an array
                    #"{"type":"trellis_put_request","content":{"typename":"t"}}"#,
                    #"{"type":"trellis_put_request","content":[1],"blobs":[]}"#] {
            #expect(throws: (any Error).self) { try Request.decode(try JSONParser.parse(bad)) }
        }
        // the limit: exactly maxInlineBytes passes, one byte more is refused before storing anything
        let limit = Request.maxInlineBytes
        let atLimit = Request.putInline(tree, blobs: [[UInt8](repeating: 7, count: limit - 1), [9]])
        #expect(try Request.decode(try JSONParser.parse(JSONWriter.encode(atLimit.encode()))) == atLimit)
        let over = Request.putInline(tree, blobs: [[UInt8](repeating: 7, count: limit), [9]])
        #expect(throws: VineyardError.self) { try Request.decode(try JSONParser.parse(JSONWriter.encode(over.encode()))) }
        // many padded blobs count as the bytes they decode to, not as their text's length
        let padded = Request.putInline(tree, blobs: [[UInt8]](repeating: [1], count: limit / 1024) + [[UInt8](repeating: 7, count: limit - limit / 1024)])
        #expect(try Request.decode(try JSONParser.parse(JSONWriter.encode(padded.encode()))) == padded)
    }

    @Test("strict base64: what encode writes, for every length and byte, and nothing else")
    func strictBase64() {
        for n in 0..<70 {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            #expect(Base64.decodeStrict(Base64.encode(bytes)) == bytes)
        }
        let all = (0...255).map(UInt8.init)
        #expect(Base64.decodeStrict(Base64.encode(all)) == all)
        for bad in ["A", "AB", "ABC", "AB=", "A===", "AB=C", "AR==", "AQJ=", "-_8=", "AQ\nI", "AQ I", "é==="] {
            #expect(Base64.decodeStrict(bad) == nil, "\(bad)")
        }
    }

    @Test("range_buffer round-trips; bad fields are refused")
    func rangeBuffer() throws {
        let r = Request.createRangeBuffer(start: -5, step: 3, count: 600_000)
        let text = String(decoding: JSONWriter.encode(r.encode()), as: UTF8.self)
        #expect(text.contains(#""type":"trellis_create_range_buffer_request""#) && text.contains(#""start":-5"#))
        #expect(try Request.decode(try JSONParser.parse(text)) == r)
        for bad in [#"{"type":"trellis_create_range_buffer_request","start":0,"step":1,"num":-1}"#,
                    #"{"type":"trellis_create_range_buffer_request","start":0,"step":1}"#,
                    #"{"type":"trellis_create_range_buffer_request","start":"0","step":1,"num":3}"#,
                    #"{"type":"trellis_create_range_buffer_request","start":0,"step":1.5,"num":3}"#] {
            #expect(throws: VineyardError.self) { try Request.decode(try JSONParser.parse(bad)) }
        }
    }

    @Test("get_objects round-trips both ways; bad ids are refused")
    func getObjects() throws {
        let named = Request.getObjects(ids: [], name: "seed", syncRemote: true)
        let namedText = String(decoding: JSONWriter.encode(named.encode()), as: UTF8.self)
        #expect(namedText.contains(#""name":"seed""#) && !namedText.contains("ids"))
        #expect(try Request.decode(try JSONParser.parse(namedText)) == named)
        #expect(throws: VineyardError.self) {
            try Request.decode(try JSONParser.parse(#"{"type":"trellis_get_objects_request","name":5}"#))
        }
        let r = Request.getObjects(ids: [ObjectID(0x0000_0000_0000_0042), ObjectID(7)], name: nil, syncRemote: true)
        let text = String(decoding: JSONWriter.encode(r.encode()), as: UTF8.self)
        #expect(text.contains(#""type":"trellis_get_objects_request""#) && text.contains(#""ids":[66,7]"#))
        #expect(try Request.decode(try JSONParser.parse(text)) == r)
        #expect(try Request.decode(try JSONParser.parse(#"{"type":"trellis_get_objects_request","ids":[5]}"#))
            == .getObjects(ids: [ObjectID(5)], name: nil, syncRemote: false))
        for bad in [#"{"type":"trellis_get_objects_request","ids":["5"]}"#,
                    #"{"type":"trellis_get_objects_request"}"#,
                    #"{"type":"trellis_get_objects_request","ids":[5],"sync_remote":"yes"}"#] {
            #expect(throws: VineyardError.self) { try Request.decode(try JSONParser.parse(bad)) }
        }
        var p = Payload.empty
        p.objectID = ObjectID(0x8000_0000_0000_0001)
        p.dataOffset = 4096
        p.dataSize = 64
        for reply in [Reply.objects(["o42": ["typename": "x", "n": 1]], payloads: [p], fds: [7]), .objects([:], payloads: [], fds: [])] {
            #expect(try Reply.decode(try JSONParser.parse(JSONWriter.encode(reply.encode()))) == reply)
        }
    }

    @Test("the register reply advertises extensions only when there are some (vineyardd's has none)")
    func advertised() throws {
        var reg = Reply.Register(
            instanceID: 1, ipcSocket: "/s", rpcEndpoint: "0.0.0.0:0", sessionID: 0, storeMatch: true,
            supportsRPCCompression: false, version: "0.24.2")
        #expect(!String(decoding: JSONWriter.encode(Reply.register(reg).encode()), as: UTF8.self).contains("trellis_extensions"))
        reg.extensions = ["split_buffer"]
        let text = String(decoding: JSONWriter.encode(Reply.register(reg).encode()), as: UTF8.self)
        #expect(text.contains(#""trellis_extensions":["split_buffer"]"#))
        #expect(try Reply.decode(try JSONParser.parse(text)) == .register(reg))
    }
}
