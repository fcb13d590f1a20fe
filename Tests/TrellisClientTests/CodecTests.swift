import Testing
import TrellisProtocol

@testable import TrellisClient

/// The messages of a captured transcript (Tests/Fixtures/captured/NAME.jsonl), in order.
func capturedMessages(_ name: String) throws -> [(dir: String, msg: JSON)] {
    let path = Paths.repository + "/Tests/Fixtures/captured/\(name).jsonl"
    let text = try #require(readTextFile(path), "missing transcript \(path)")
    var out: [(dir: String, msg: JSON)] = []
    for line in text.split(separator: "\n") {
        let record = try JSONParser.parse(String(line))
        if record["kind"]?.stringValue == "msg", let msg = record["msg"], let dir = record["dir"]?.stringValue {
            out.append((dir, msg))
        }
    }
    return out
}

/// The first captured request of `type` and the reply that follows it.
func capturedExchange(_ name: String, _ type: String) throws -> (request: JSON, reply: JSON) {
    let messages = try capturedMessages(name)
    let i = try #require(messages.firstIndex { $0.dir == "c2s" && $0.msg["type"]?.stringValue == type }, "\(type) in \(name)")
    let reply = i + 1 < messages.count && messages[i + 1].dir == "s2c" ? messages[i + 1].msg : JSON.null
    return (messages[i].msg, reply)
}

@Suite("Wire codec")
struct CodecTests {
    @Test("the client's requests are spelled as the 0.24.2 Python client spells them")
    func requestSpelling() throws {
        #expect(Request.register().encode() == (try capturedExchange("numpy_int64", "register_request").request))
        #expect(Request.createBuffer(size: 128).encode() == (try capturedExchange("numpy_int64", "create_buffer_request").request))
        let seal = try capturedExchange("numpy_int64", "seal_request").request
        #expect(Request.seal(ObjectID(try #require(seal["object_id"]?.uint64Value))).encode() == seal)
        let get = try capturedExchange("numpy_int64", "get_buffers_request").request
        #expect(Request.getBuffers(ids: [ObjectID(try #require(get["0"]?.uint64Value))], unsafe: false).encode() == get)
        let getData = try capturedExchange("numpy_int64", "get_data_request").request
        let rawIDs = try #require(getData["id"]?.arrayValue).compactMap(\.uint64Value)
        #expect(Request.getData(ids: rawIDs.map { ObjectID($0) }, syncRemote: true, wait: false).encode() == getData)
        let del = try capturedExchange("delete", "del_data_request").request
        let rawDelIDs = try #require(del["id"]?.arrayValue).compactMap(\.uint64Value)
        #expect(
            Request.delete(
                rawDelIDs.map { ObjectID($0) }, force: del["force"]?.boolValue ?? false, deep: del["deep"]?.boolValue ?? true,
                memoryTrim: del["memory_trim"]?.boolValue ?? false
            ).encode() == del)
        let putName = try capturedExchange("names", "put_name_request").request
        #expect(
            Request.putName(ObjectID(try #require(putName["object_id"]?.uint64Value)), name: try #require(putName["name"]?.stringValue))
                .encode() == putName)
        let listNames = try capturedExchange("names", "list_name_request").request
        #expect(
            Request.listName(
                pattern: try #require(listNames["pattern"]?.stringValue), regex: listNames["regex"]?.boolValue ?? false,
                limit: try #require(listNames["limit"]?.intValue)
            ).encode() == listNames)
        #expect(Request.instanceStatus.encode() == (try capturedExchange("connect", "instance_status_request").request))
        #expect(Request.clusterMeta.encode() == (try capturedExchange("connect", "cluster_meta").request))
        #expect(Request.exit.encode() == (try capturedExchange("numpy_int64", "exit_request").request))
    }

    @Test("the tensor layout equals what Python sends for np.arange(16)")
    func tensorLayout() throws {
        let captured = try #require(try capturedExchange("numpy_int64", "create_data_request").request["content"])
        let blobTree = try #require(captured["buffer_"])
        let blobID = try #require(blobTree["id"]?.stringValue.flatMap(ObjectID.init(string:)))
        // Build the same tree the way Client.createTensor does, before it is sent.
        var meta = ObjectMeta(typename: "vineyard::Tensor<\(DType.int64.cppName)>")
        meta.setEncodedJSON("shape_", [16])
        meta.setEncodedJSON("partition_index_", [])
        meta.nbytes = 128
        meta.setEncodedJSON("order_", "C")
        meta["value_type_"] = .string(DType.int64.numpyName)
        meta["value_type_meta_"] = .string(DType.int64.typeString)
        meta.addMember("buffer_", Blob(id: blobID, region: nil, offset: 0, count: 128))
        meta.stampInstanceID(0)
        #expect(meta.json == captured)
    }

    @Test("replies decode: register, create_buffer, get_buffers, create_data, get_data, status, cluster_meta, names")
    func replies() throws {
        let info = try Replies.register(try capturedExchange("connect", "register_request").reply)
        #expect(info.instanceID == 0 && info.version == "0.24.2" && info.rpcEndpoint == "localhost:19600")

        let created = try Replies.createBuffer(try capturedExchange("numpy_int64", "create_buffer_request").reply)
        #expect(created.fd == 9 && created.payload.dataSize == 128 && created.payload.mapSize == 268_435_464)

        let got = try Replies.getBuffers(try capturedExchange("numpy_int64", "get_buffers_request").reply)
        #expect(got.payloads.count == 1 && got.fds.isEmpty && got.payloads[0].isSealed)

        let data = try Replies.createData(try capturedExchange("numpy_int64", "create_data_request").reply)
        #expect(data.id.rawValue == 7_531_272_306_849_480_706 && data.signature == 7_531_272_306_849_480_705)

        let trees = try Replies.metadata(try capturedExchange("numpy_int64", "get_data_request").reply)
        #expect(trees.map(\.0) == [data.id])
        let tensorMeta = try ObjectMeta(json: trees[0].1)
        #expect(tensorMeta.typename == "vineyard::Tensor<int64>")
        #expect(tensorMeta.blobReferences.map(\.id) == [created.payload.objectID])

        let status = try Replies.instanceStatus(try capturedExchange("connect", "instance_status_request").reply)
        #expect(status.memoryLimit > 0 && status.freeBytes == nil)  // upstream has no Trellis extras
        let cluster = try Replies.clusterMeta(try capturedExchange("connect", "cluster_meta").reply)
        #expect(cluster.first?.rpcEndpoint == "localhost:19600")

        let names = try Replies.names(try capturedExchange("names", "list_name_request").reply)
        #expect(!names.isEmpty)
    }

    @Test("error replies carry the daemon's code and message; wrong reply types are protocol violations")
    func errors() throws {
        let missing: JSON = ["code": 12, "message": "failed to find name: nope"]
        do {
            _ = try Replies.getName(missing)
            Issue.record("no error")
        } catch {
            #expect(error.kind == .daemon && error.code == .objectNotExists && error.message == "failed to find name: nope")
            #expect(error.isNotFound)
        }
        #expect(try Replies.metadata(["type": "get_data_reply", "content": nil]).isEmpty)
        let wrong = failure { () throws(ClientError) in try Replies.done(["type": "seal_reply"], .persist) }
        #expect(wrong?.kind == .protocolViolation)
        let mismatch = failure { () throws(ClientError) in
            _ = try Replies.register(["type": "register_reply", "instance_id": 0, "store_match": false])
        }
        #expect(mismatch?.message == "Mismatched store type")
    }

    @Test("fds expected after a reply: new store_fds with data, first-appearance order (sorted for create_buffers)")
    func fdExpectations() {
        func payload(_ fd: Int32, size: Int = 8) -> Payload {
            Payload(objectID: ObjectID(1 << 63 | UInt64(fd)), storeFD: fd, dataOffset: 0, dataSize: size, mapSize: 1 << 20, pointer: 0, isSealed: true)
        }
        let ps = [payload(11), payload(9), payload(11), payload(7, size: 0), payload(5)]
        #expect(Channel.unknownStoreFDs(in: ps, known: [Int32](), sorted: false) == [11, 9, 5])
        #expect(Channel.unknownStoreFDs(in: ps, known: [Int32](), sorted: true) == [5, 9, 11])
        #expect(Channel.unknownStoreFDs(in: ps, known: [9], sorted: false) == [11, 5])
        #expect(Channel.unknownStoreFDs(in: [Payload.empty], known: [Int32](), sorted: false).isEmpty)
    }

    @Test("Python json.dumps spellings")
    func pythonJSON() {
        #expect(PythonJSON.dumps([16]) == "[16]")
        #expect(PythonJSON.dumps([3, 4]) == "[3, 4]")
        #expect(PythonJSON.dumps([]) == "[]")
        #expect(PythonJSON.dumps(["a", "b"]) == "[\"a\", \"b\"]")
        #expect(PythonJSON.dumps("C") == "\"C\"")
        #expect(PythonJSON.dumps(nil) == "null")
        #expect(PythonJSON.dumps(["k": 1, "a": [true, 1.5]]) == "{\"a\": [true, 1.5], \"k\": 1}")
        #expect(PythonJSON.dumps("é\n\u{1F600}") == "\"\\u00e9\\n\\ud83d\\ude00\"")
        #expect(PythonJSON.float(1.0) == "1.0")
        #expect(PythonJSON.float(1e16) == "1e+16")
        #expect(PythonJSON.float(9.5e15) == "9500000000000000.0")
        #expect(PythonJSON.float(-9.5e15) == "-9500000000000000.0")
        #expect(PythonJSON.float(1e-5) == "1e-05")
        #expect(PythonJSON.float(.nan) == "NaN")
    }

    @Test("dtype spellings: numpy names, C++ names, type strings, Arrow names")
    func dtypes() {
        #expect(DType.int32.cppName == "int" && DType.float64.cppName == "double" && DType.uint32.cppName == "uint32")
        #expect(DType.bool.typeString == "|b1" && DType.float16.typeString == "<f2")
        #expect(DType(name: "double") == .float64 && DType(name: "int") == .int32 && DType(name: "halffloat") == .float16)
        #expect(DType(typeString: "<i8") == .int64 && DType(typeString: "|u1") == .uint8 && DType(typeString: ">i8") == nil)
        for d in DType.allCases {
            #expect(DType(name: d.numpyName) == d)
            #expect(DType(name: d.cppName) == d)
            #expect(DType(typeString: d.typeString) == d)
        }
    }

    @Test("Arrow schema messages: the captured pyarrow schema parses; written schemas read back")
    func arrowSchema() throws {
        let content = try #require(try capturedExchange("pyarrow_table", "create_data_request").request["content"])
        let text = try #require(content["schema_binary_"]?.stringValue)
        let list = try #require(try JSONParser.parse(text)["bytes"]?.arrayValue)
        let bytes = list.compactMap { $0.intValue.map(UInt8.init) }
        let schema = try ArrowSchema(ipcMessage: bytes)
        #expect(schema.fields == [ArrowField(name: "x", type: .numeric(.int64)), ArrowField(name: "s", type: .largeUTF8)])

        let all = ArrowSchema(
            fields: DType.allCases.map { ArrowField(name: "c_\($0)", type: $0 == .bool ? .bool : .numeric($0)) }
                + [ArrowField(name: "s", type: .largeUTF8, nullable: false), ArrowField(name: "ü", type: .utf8)])
        let written = try all.ipcMessage()
        #expect(written.count % 8 == 0)
        #expect(Array(written.prefix(4)) == [0xFF, 0xFF, 0xFF, 0xFF])
        #expect(try ArrowSchema(ipcMessage: written) == all)
        #expect(failure { () throws(ClientError) in _ = try ArrowSchema(ipcMessage: [0xFF, 0xFF, 0xFF, 0xFF, 8, 0]) }?.kind == .invalidObject)
    }
}
