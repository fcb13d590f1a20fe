import Testing
import TrellisProtocol
import TrellisTestSupport

/// Replays the requests of captured reference sessions against Trellis and checks
/// each reply against the reference reply: the same error code, or the same reply
/// type with the same keys and value kinds, and the same fd carriers. Ids differ per
/// run, so ids seen in reference replies are mapped to ours and rewritten into later
/// requests.
@Suite("Replay of captured sessions", .onBlockingPool)
struct ReplayTests {
    /// Single-instance IPC sessions (RPC and multi-instance sessions are covered elsewhere).
    static let files = [
        "blobs.jsonl", "connect.jsonl", "delete.jsonl", "list_data.jsonl", "misc.jsonl", "names.jsonl",
        "numpy_int64.jsonl", "pandas_dataframe.jsonl", "pandas_dataframe_strings.jsonl", "pandas_series.jsonl",
        "persist.jsonl", "py_errors.jsonl", "pyarrow_table.jsonl", "python_values.jsonl", "raw_errors.jsonl", "stream.jsonl",
    ]

    final class IDMap {
        var map: [UInt64: UInt64] = [:]

        func learn(_ ref: JSON, _ ours: JSON) {
            switch (ref, ours) {
            case (.object(let a), .object(let b)):
                // Keys that are ids ("o…"): pair them in sorted order.
                let ak = a.keys.filter { ObjectID(string: $0) != nil && $0.hasPrefix("o") }.sorted()
                let bk = b.keys.filter { ObjectID(string: $0) != nil && $0.hasPrefix("o") }.sorted()
                if ak.count == bk.count {
                    for (x, y) in zip(ak, bk) {
                        add(ObjectID(string: x)!.rawValue, ObjectID(string: y)!.rawValue)
                        learn(a[x]!, b[y]!)
                    }
                }
                for (k, v) in a where b[k] != nil && !ak.contains(k) {
                    if ["id", "object_id", "signature", "target_id", "ids", "instance_id"].contains(k) || v.objectValue != nil || v.arrayValue != nil {
                        learn(v, b[k]!)
                    }
                }
            case (.array(let a), .array(let b)) where a.count == b.count:
                for (x, y) in zip(a, b) { learn(x, y) }
            case (.string(let x), .string(let y)):
                if let ix = ObjectID(string: x), let iy = ObjectID(string: y), x.hasPrefix("o") { add(ix.rawValue, iy.rawValue) }
            default:
                if let x = ref.uint64Value, let y = ours.uint64Value, x > 1 << 20 { add(x, y) }
            }
        }

        private func add(_ x: UInt64, _ y: UInt64) {
            if x != y && x != UInt64.max { map[x] = y }
        }

        func rewrite(_ v: JSON) -> JSON {
            switch v {
            case .object(let o):
                var out: [String: JSON] = [:]
                for (k, x) in o {
                    var key = k
                    if k.hasPrefix("o"), let id = ObjectID(string: k), let m = map[id.rawValue] { key = ObjectID(m).description }
                    out[key] = rewrite(x)
                }
                return .object(out)
            case .array(let a): return .array(a.map(rewrite))
            case .string(let s):
                if s.hasPrefix("o"), s.count == 17, let id = ObjectID(string: s), let m = map[id.rawValue] { return .string(ObjectID(m).description) }
                return v
            default:
                if let u = v.uint64Value, let m = map[u] { return .number(m) }
                return v
            }
        }
    }

    /// Compares structure: same keys (Trellis may add keys to instance_status, and advertises its
    /// extensions in the register reply), same value kinds.
    static func sameShape(_ ref: JSON, _ ours: JSON, path: String, _ problems: inout [String]) {
        switch (ref, ours) {
        case (.object(let a), .object(let b)):
            let ak = Set(a.keys.filter { !($0.hasPrefix("o") && $0.count == 17) })
            // `trellis_extensions` (the register reply's advertisement of Trellis' protocol
            // extensions) is Trellis' own key, which upstream clients ignore
            let bk = Set(b.keys.filter { !($0.hasPrefix("o") && $0.count == 17) && $0 != "trellis_extensions" })
            if !ak.isSubset(of: bk) { problems.append("\(path): missing keys \(ak.subtracting(bk).sorted())") }
            if path != "meta", path != "$.meta", !bk.isSubset(of: ak) { problems.append("\(path): extra keys \(bk.subtracting(ak).sorted())") }
            if a.keys.count(where: { $0.hasPrefix("o") && $0.count == 17 }) != b.keys.count(where: { $0.hasPrefix("o") && $0.count == 17 }) {
                problems.append("\(path): different number of objects")
            }
            for k in ak.intersection(bk) { sameShape(a[k]!, b[k]!, path: path + "." + k, &problems) }
        case (.array(let a), .array(let b)):
            if a.count != b.count { problems.append("\(path): \(a.count) elements, got \(b.count)") }
            for (i, (x, y)) in zip(a, b).enumerated() { sameShape(x, y, path: "\(path)[\(i)]", &problems) }
        default:
            if ref.kindName != ours.kindName { problems.append("\(path): \(ref.kindName), got \(ours.kindName)") }
        }
    }

    @Test("replies match the reference", arguments: files)
    func replay(file: String) throws {
        let daemon = try TestDaemon(capacity: 256 << 20)
        defer { daemon.stop() }
        let records = try Transcripts.records(file)
        let ids = IDMap()
        var clients: [Int: RawClient] = [:]
        var pending: [Int: JSON] = [:]  // our reply awaiting comparison, by connection
        var problems: [String] = []
        for r in records {
            guard let conn = r["conn"]?.intValue, let seq = r["seq"]?.intValue else { continue }
            let kind = r["kind"]?.stringValue
            let dir = r["dir"]?.stringValue
            if clients[conn] == nil { clients[conn] = try daemon.connect() }
            let client = clients[conn]!
            if dir == "c2s", kind == "msg" {
                if let rawText = r["raw"]?.stringValue {
                    // A body that is not JSON, framed as captured.
                    let body = Array(rawText.utf8)
                    let header = withUnsafeBytes(of: UInt64(body.count).littleEndian) { Array($0) }
                    try client.sendRaw(header + body)
                } else {
                    try client.send(ids.rewrite(r["msg"]!))
                }
                if r["msg"]?["type"] == "exit_request" { continue }
                pending[conn] = try client.receive() ?? .null
            } else if dir == "c2s", kind == "unparsed" {
                let hex = r["head_hex"]?.stringValue ?? ""
                var bytes: [UInt8] = []
                var i = hex.startIndex
                while i < hex.endIndex {
                    let j = hex.index(i, offsetBy: 2)
                    bytes.append(UInt8(hex[i..<j], radix: 16)!)
                    i = j
                }
                try client.sendRaw(bytes)
                // The reference drops the connection; Trellis answers with an error and closes.
                if let reply = try client.receive() {
                    if reply["code"] == nil { problems.append("\(file) #\(seq): oversized header got a non-error reply") }
                    #expect(client.isClosedByPeer())
                }
            } else if dir == "s2c", kind == "msg", let ref = r["msg"] {
                guard let ours = pending.removeValue(forKey: conn) else {
                    problems.append("\(file) #\(seq): no reply from Trellis")
                    continue
                }
                if let code = ref["code"] {
                    if ours["code"] != code { problems.append("\(file) #\(seq): expected error \(code), got \(ours.description.prefix(160))") }
                } else if ours["type"] != ref["type"] {
                    problems.append("\(file) #\(seq): expected \(ref["type"]?.description ?? "?"), got \(ours.description.prefix(200))")
                } else {
                    Self.sameShape(ref, ours, path: "$", &problems)
                    if !problems.isEmpty, problems.last!.hasPrefix("$") { problems[problems.count - 1] = "\(file) #\(seq) " + problems.last! }
                    ids.learn(ref, ours)
                }
            } else if dir == "s2c", kind == "fd" {
                do { try client.receiveFD() } catch { problems.append("\(file) #\(seq): expected an fd carrier: \(error)") }
            }
        }
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
    }
}
