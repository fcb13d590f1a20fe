/// Writing a reply's frame. The replies of the hot requests (see ``RequestScanner``) are
/// written straight into the frame's bytes, keys already in upstream's sorted order,
/// without building a `JSON` tree and sorting its keys; every other reply goes through
/// ``encode()`` and ``JSONWriter``. Either way the bytes are exactly
/// `Frame.encode(reply.encode())` (the protocol tests compare the two for every case).
extension Reply {
    /// The complete frame: the 8-byte length header, then the JSON body.
    public func frame() -> [UInt8] {
        // 512 bytes hold the hot replies (a payload is ~190) without growing.
        var w = JSONWriter(capacity: 512)
        w.bytes.append(contentsOf: [0, 0, 0, 0, 0, 0, 0, 0])
        if !writeDirect(&w) { w.write(encode()) }
        let n = UInt64(w.bytes.count - Frame.headerSize)
        // The header written in place (a copy of `w.bytes` to patch would copy the frame).
        w.bytes.withUnsafeMutableBytes { $0.storeBytes(of: n.littleEndian, toByteOffset: 0, as: UInt64.self) }
        return w.bytes
    }

    /// Writes the body of a hot reply; false for the others.
    private func writeDirect(_ w: inout JSONWriter) -> Bool {
        switch self {
        case .createBuffer(let p, let fd):
            w.append("{\"created\":")
            p.write(&w)
            w.append(",\"fd\":")
            w.writeInteger(Int64(fd))
            w.append(",\"id\":")
            w.writeUnsigned(p.objectID.rawValue)
            w.append(",\"type\":\"create_buffer_reply\"}")
        case .getBuffers(let ps, let fds, let compress):
            // Keys: the payloads' positions "0", "1", "10", "11", …, "2", … (in byte order, as
            // std::map orders them: digits sort before letters), then "compress", "fds",
            // "num", "payloads", "type".
            w.append("{")
            for i in Self.positionsInKeyOrder(ps.count) {
                w.bytes.append(UInt8(ascii: "\""))
                w.writeUnsigned(UInt64(i))
                w.append("\":")
                ps[i].write(&w)
                w.append(",")
            }
            w.append(compress ? "\"compress\":true,\"fds\":[" : "\"compress\":false,\"fds\":[")
            for (i, fd) in fds.enumerated() {
                if i > 0 { w.append(",") }
                w.writeInteger(Int64(fd))
            }
            w.append("],\"num\":")
            w.writeUnsigned(UInt64(ps.count))
            w.append(",\"payloads\":[")
            for (i, p) in ps.enumerated() {
                if i > 0 { w.append(",") }
                p.write(&w)
            }
            w.append("],\"type\":\"get_buffers_reply\"}")
        case .createData(let c):
            w.append("{\"id\":")
            w.writeUnsigned(c.id.rawValue)
            w.append(",\"instance_id\":")
            w.writeUnsigned(c.instanceID)
            w.append(",\"signature\":")
            w.writeUnsigned(c.signature)
            w.append(",\"type\":\"create_data_reply\"}")
        case .data(let content):
            w.append("{\"content\":")
            if content.isEmpty { w.append("null") } else { w.writeObject(content) }
            w.append(",\"type\":\"get_data_reply\"}")
        case .objects(let content, let ps, let fds):
            w.append("{\"content\":")
            if content.isEmpty { w.append("null") } else { w.writeObject(content) }
            w.append(",\"fds\":[")
            for (i, fd) in fds.enumerated() {
                if i > 0 { w.append(",") }
                w.writeInteger(Int64(fd))
            }
            w.append("],\"payloads\":[")
            for (i, p) in ps.enumerated() {
                if i > 0 { w.append(",") }
                p.write(&w)
            }
            w.append("],\"type\":\"trellis_get_objects_reply\"}")
        case .exists(let b):
            w.append(b ? "{\"exists\":true,\"type\":\"exists_reply\"}" : "{\"exists\":false,\"type\":\"exists_reply\"}")
        case .ifPersist(let b):
            w.append(b ? "{\"persist\":true,\"type\":\"if_persist_reply\"}" : "{\"persist\":false,\"type\":\"if_persist_reply\"}")
        case .getName(let id):
            w.append("{\"object_id\":")
            w.writeUnsigned(id.rawValue)
            w.append(",\"type\":\"get_name_reply\"}")
        case .deletedBlobs(let list):
            w.append("{\"deleted_bids\":[")
            for (i, id) in list.enumerated() {
                if i > 0 { w.append(",") }
                w.writeUnsigned(id.rawValue)
            }
            w.append("],\"type\":\"del_data_with_feedbacks_reply\"}")
        case .done(let d):
            w.append("{\"type\":")
            w.writeString(d.rawValue)
            w.append("}")
        case .error(let e):
            w.append("{\"code\":")
            w.writeInteger(Int64(e.code.rawValue))
            w.append(",\"message\":")
            w.writeString(e.message)
            w.append("}")
        default:
            return false
        }
        return true
    }
}

extension Reply {
    /// 0..<n ordered as their decimal spellings sort bytewise.
    static func positionsInKeyOrder(_ n: Int) -> [Int] {
        if n <= 10 { return Array(0..<n) }
        let names = (0..<n).map { Array(String($0).utf8) }
        return (0..<n).sorted { names[$0].lexicographicallyPrecedes(names[$1]) }
    }
}

extension Payload {
    /// ``json``, written directly (its keys in sorted order).
    func write(_ w: inout JSONWriter) {
        w.append("{\"data_offset\":")
        w.writeInteger(Int64(dataOffset))
        w.append(",\"data_size\":")
        w.writeInteger(Int64(dataSize))
        w.append(isOwner ? ",\"is_gpu\":false,\"is_owner\":true,\"is_sealed\":" : ",\"is_gpu\":false,\"is_owner\":false,\"is_sealed\":")
        w.append(isSealed ? "true,\"map_size\":" : "false,\"map_size\":")
        w.writeInteger(Int64(mapSize))
        w.append(",\"object_id\":")
        w.writeUnsigned(objectID.rawValue)
        w.append(",\"pointer\":")
        w.writeUnsigned(pointer)
        w.append(",\"store_fd\":")
        w.writeInteger(Int64(storeFD))
        w.append("}")
    }
}
