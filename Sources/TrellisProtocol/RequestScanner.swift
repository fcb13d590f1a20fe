/// The daemon's fast decoder for the requests a small `put` and `get` send
/// (`create_buffer`, `seal`, `create_data`, `get_data`, `get_buffers`, `release`,
/// `del_data`, `persist`, `exists`, the names, …): one pass over the frame's bytes
/// that fills the typed ``Request`` directly, with no `[String: JSON]` dictionary for
/// the message and no `String` for its keys or its type.
///
/// It is an optimisation only, never a second dialect: it uses ``JSONParser``'s own
/// primitives for every value and ``FieldReader``'s conversions for every field, and
/// gives up (`nil`) on anything it does not treat exactly as the general path would —
/// another request type, an escaped key or type, a key given twice, a missing or
/// mistyped field, malformed JSON. The caller then runs ``JSONParser`` and
/// ``Request/decode(_:)``, which report the error (or decode the unusual spelling).
/// So for every input, `scan` either returns what the general path returns or nil.
extension Request {
    /// The request in `body` and its wire type when it is a hot request the scanner
    /// decodes; nil when the general path must decide (see ``RequestScanner``).
    public static func scan(_ body: UnsafeBufferPointer<UInt8>) -> (request: Request, type: String)? {
        var s = RequestScanner(body)
        return s.run()
    }
}

struct RequestScanner {
    /// The request types the scanner decodes, by wire name.
    enum Hot: CaseIterable {
        case createBuffer, seal, createData, getData, getBuffers, release, delData, delDataWithFeedbacks
        case persist, ifPersist, exists, getName, putName, dropName, increaseReferenceCount

        var wireType: String {
            switch self {
            case .createBuffer: return "create_buffer_request"
            case .seal: return "seal_request"
            case .createData: return "create_data_request"
            case .getData: return "get_data_request"
            case .getBuffers: return "get_buffers_request"
            case .release: return "release_request"
            case .delData: return "del_data_request"
            case .delDataWithFeedbacks: return "del_data_with_feedbacks_request"
            case .persist: return "persist_request"
            case .ifPersist: return "if_persist_request"
            case .exists: return "exists_request"
            case .getName: return "get_name_request"
            case .putName: return "put_name_request"
            case .dropName: return "drop_name_request"
            case .increaseReferenceCount: return "increase_reference_count_request"
            }
        }
    }

    /// The fields the hot requests read (keys: `field(_:)`); each may be given once.
    enum Field: Int {
        case size, objectID, content, id, ids, syncRemote, wait, num, unsafe, force, deep, memoryTrim, fastpath, name
    }

    private var parser: JSONParser
    private var hot: Hot?
    /// The fields' values by `Field.rawValue`, one slot per case (inline: no allocation per request).
    private var values = InlineArray<14, JSON?>(repeating: nil)
    /// Numbered keys by index: `numbered[i]` is the key `String(i)`.
    private var numbered = InlineArray<16, JSON?>(repeating: nil)

    init(_ body: UnsafeBufferPointer<UInt8>) {
        parser = JSONParser(buffer: body, maxDepth: JSONParser.defaultMaxDepth)
    }

    private var buf: UnsafeBufferPointer<UInt8> { parser.buf }

    mutating func run() -> (request: Request, type: String)? {
        guard scanObject(), let hot else { return nil }
        guard let request = build(hot) else { return nil }
        return (request, hot.wireType)
    }

    /// Walks the top-level object, keeping the fields above; false: leave it to the general path.
    private mutating func scanObject() -> Bool {
        parser.skipSpace()
        guard parser.pos < buf.count, buf[parser.pos] == UInt8(ascii: "{") else { return false }
        parser.pos += 1
        parser.skipSpace()
        if parser.pos < buf.count && buf[parser.pos] == UInt8(ascii: "}") { return false }  // no type
        while true {
            parser.skipSpace()
            guard let key = rawString() else { return false }
            parser.skipSpace()
            guard parser.pos < buf.count, buf[parser.pos] == UInt8(ascii: ":") else { return false }
            parser.pos += 1
            parser.skipSpace()
            guard field(key) else { return false }
            parser.skipSpace()
            guard parser.pos < buf.count else { return false }
            if buf[parser.pos] == UInt8(ascii: ",") {
                parser.pos += 1
                continue
            }
            guard buf[parser.pos] == UInt8(ascii: "}") else { return false }
            parser.pos += 1
            parser.skipSpace()
            return parser.pos == buf.count
        }
    }

    /// The bytes of a string with no escapes (nil: not a string, or one with escapes or
    /// control characters, which the general path decodes or refuses).
    private mutating func rawString() -> UnsafeBufferPointer<UInt8>? {
        guard parser.pos < buf.count, buf[parser.pos] == UInt8(ascii: "\"") else { return nil }
        let start = parser.pos + 1
        var i = start
        while i < buf.count {
            let c = buf[i]
            if c == UInt8(ascii: "\"") {
                parser.pos = i + 1
                return UnsafeBufferPointer(rebasing: buf[start..<i])
            }
            if c == UInt8(ascii: "\\") || c < 0x20 { return nil }
            i += 1
        }
        return nil
    }

    /// Reads the value of `key`: the type, a field, a numbered id, or anything else
    /// (parsed, so that it is validated as the general path does, and dropped).
    private mutating func field(_ key: UnsafeBufferPointer<UInt8>) -> Bool {
        if Self.equal(key, "type") {
            guard hot == nil, let t = rawString() else { return false }
            hot = Self.hotType(t)
            return hot != nil
        }
        if let f = Self.field(key) {
            guard case .none = values[f.rawValue], let v = value() else { return false }
            values[f.rawValue] = v
            return true
        }
        if let i = Self.index(key) {
            guard i < numbered.count else { return false }
            guard case .none = numbered[i], let v = value() else { return false }
            numbered[i] = v
            return true
        }
        return value() != nil
    }

    private mutating func value() -> JSON? {
        // The top-level object is depth 1, as in `JSONParser.parse`.
        try? parser.parseValue(depth: 1)
    }

    /// Builds the request as ``Request/decode(_:)`` does; nil when that would throw.
    private func build(_ hot: Hot) -> Request? {
        let t = hot.wireType
        func v(_ f: Field) -> JSON? { values[f.rawValue] }
        func id(_ f: Field) -> ObjectID? { (try? FieldReader.uint(v(f), "", t)).map(ObjectID.init(rawValue:)) }
        func ids(_ f: Field) -> [ObjectID]? { (try? FieldReader.uintArray(v(f), "", t))?.map(ObjectID.init(rawValue:)) }
        func bool(_ f: Field, _ def: Bool) -> Bool? { try? FieldReader.bool(v(f), "", t, default: def) }
        func string(_ f: Field) -> String? { try? FieldReader.string(v(f), "", t) }
        switch hot {
        case .createBuffer:
            guard let size = try? FieldReader.size(v(.size), "", t) else { return nil }
            return .createBuffer(size: size)
        case .seal: return id(.objectID).map(Request.seal)
        case .release: return id(.objectID).map(Request.release)
        case .persist: return id(.id).map(Request.persist)
        case .ifPersist: return id(.id).map(Request.ifPersist)
        case .exists: return id(.id).map(Request.exists)
        case .createData:
            guard case .object? = v(.content) else { return nil }
            return .createData(v(.content)!)
        case .getData:
            guard let ids = ids(.id), let sync = bool(.syncRemote, false), let wait = bool(.wait, false) else { return nil }
            return .getData(ids: ids, syncRemote: sync, wait: wait)
        case .getBuffers:
            guard let ids = numberedIDs(), ids.count <= Request.maxBlobsPerRequest, let unsafe = bool(.unsafe, false) else { return nil }
            return .getBuffers(ids: ids, unsafe: unsafe)
        case .delData, .delDataWithFeedbacks:
            guard let ids = ids(.id), let force = bool(.force, false), let deep = bool(.deep, true),
                let trim = bool(.memoryTrim, false), let fastpath = bool(.fastpath, false)
            else { return nil }
            return .delData(
                Request.DelData(ids: ids, force: force, deep: deep, memoryTrim: trim, fastpath: fastpath, wantsFeedback: hot == .delDataWithFeedbacks))
        case .getName:
            guard let name = string(.name), let wait = bool(.wait, false) else { return nil }
            return .getName(name, wait: wait)
        case .putName:
            guard let id = id(.objectID), let name = string(.name) else { return nil }
            return .putName(id, name: name)
        case .dropName: return string(.name).map(Request.dropName)
        case .increaseReferenceCount: return ids(.ids).map(Request.increaseReferenceCount)
        }
    }

    /// `FieldReader.numberedIDs`: `"ids": [...]` when there is no `num`, else `num` ids
    /// under the keys `"0"` … (all present; a missing one is the general path's error).
    private func numberedIDs() -> [ObjectID]? {
        if values[Field.num.rawValue] == nil, values[Field.ids.rawValue] != nil {
            return (try? FieldReader.uintArray(values[Field.ids.rawValue], "", ""))?.map(ObjectID.init(rawValue:))
        }
        guard let n = try? FieldReader.size(values[Field.num.rawValue], "", ""), n <= numbered.count else { return nil }
        var out: [ObjectID] = []
        out.reserveCapacity(n)
        for i in 0..<n {
            guard let u = try? FieldReader.uint(numbered[i], "", "") else { return nil }
            out.append(ObjectID(u))
        }
        return out
    }

    // MARK: Keys

    @inline(__always)
    static func equal(_ bytes: UnsafeBufferPointer<UInt8>, _ word: StaticString) -> Bool {
        let n = word.utf8CodeUnitCount
        guard bytes.count == n else { return false }
        let w = word.utf8Start
        for i in 0..<n where bytes[i] != w[i] { return false }
        return true
    }

    /// The field a key names (by length first: no loop over `allCases`, which would
    /// allocate an array per call).
    static func field(_ key: UnsafeBufferPointer<UInt8>) -> Field? {
        switch key.count {
        case 2: return equal(key, "id") ? .id : nil
        case 3: return equal(key, "ids") ? .ids : equal(key, "num") ? .num : nil
        case 4: return equal(key, "size") ? .size : equal(key, "wait") ? .wait : equal(key, "deep") ? .deep : equal(key, "name") ? .name : nil
        case 5: return equal(key, "force") ? .force : nil
        case 6: return equal(key, "unsafe") ? .unsafe : nil
        case 7: return equal(key, "content") ? .content : nil
        case 8: return equal(key, "fastpath") ? .fastpath : nil
        case 9: return equal(key, "object_id") ? .objectID : nil
        case 11: return equal(key, "sync_remote") ? .syncRemote : equal(key, "memory_trim") ? .memoryTrim : nil
        default: return nil
        }
    }

    /// The hot types' wire names as bytes, built once.
    static let hotTypes: [([UInt8], Hot)] = Hot.allCases.map { (Array($0.wireType.utf8), $0) }

    static func hotType(_ t: UnsafeBufferPointer<UInt8>) -> Hot? {
        for (name, hot) in hotTypes where name.count == t.count && name.elementsEqual(t) { return hot }
        return nil
    }

    /// The index a key names when it is how `String(i)` spells one (`"0"`, `"17"`: no
    /// sign, no leading zero); other digit strings are ordinary unknown keys.
    static func index(_ key: UnsafeBufferPointer<UInt8>) -> Int? {
        guard !key.isEmpty, key.count <= 4, key[0] != UInt8(ascii: "0") || key.count == 1 else { return nil }
        var v = 0
        for c in key {
            guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
            v = v * 10 + Int(c - UInt8(ascii: "0"))
        }
        return v
    }
}
