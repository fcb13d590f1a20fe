import Testing
import TrellisProtocol

@testable import TrellisClient
import TrellisTestSupport

/// `putDataFrame`: the batched write (one `create_buffers`, the seals and one nested
/// `create_data` sent together) writes the very tree the tensor-by-tensor path writes, and
/// steps back to that path on upstream vineyardd.
@Suite("Batched data frame writes", .serialized, .onBlockingPool)
struct BatchedTests {
    static let rows = 5_000
    static let columns: [(name: JSON, dtype: DType)] = [
        (.string("i"), .int64), (.string("x"), .float64), (.int(7), .int32), (.string("flag"), .bool),
    ]

    /// Column `c`'s bytes: a pattern that differs per column and row.
    static func fill(_ c: Int, _ raw: UnsafeMutableRawBufferPointer) {
        for i in 0..<raw.count { raw[i] = UInt8(truncatingIfNeeded: (i &* 31) &+ c &* 7) & (c == 3 ? 1 : 0xFF) }
    }

    static func expected(_ c: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: rows * columns[c].dtype.size)
        out.withUnsafeMutableBytes { fill(c, $0) }
        return out
    }

    /// The tree without what differs between two writes of one value.
    static func normal(_ j: JSON) -> JSON {
        guard let o = j.objectValue else { return j }
        var out: [String: JSON] = [:]
        for (k, v) in o where !["id", "signature", "__timestamp"].contains(k) { out[k] = normal(v) }
        return .object(out)
    }

    func tensorByTensor(_ c: Client) throws -> DataFrame {
        var stored: [(name: JSON, values: AnyTensor)] = []
        for (i, col) in Self.columns.enumerated() {
            stored.append((col.name, try c.createTensor(dtype: col.dtype, shape: [Self.rows]) { Self.fill(i, $0) }))
        }
        return try c.createDataFrame(columns: stored)
    }

    func check(_ d: DaemonProcess, batchedPath: Bool) throws {
        let c = try d.connect()
        defer { c.close() }
        #expect(c.server.extensions.contains("split_buffer") == batchedPath)
        let count = { () throws -> Int in try c.listMetadata(pattern: "*", limit: 1000).count }
        let before = try count()
        let batched = try c.putDataFrame(rows: Self.rows, columns: Self.columns, fill: Self.fill)
        let middle = try count()
        let plain = try tensorByTensor(c)
        #expect(Self.normal(try c.getMetadata(batched.id).json) == Self.normal(try c.getMetadata(plain.id).json))
        // as many objects listed either way (the frame, its index, their tensors)
        let after = try count()
        #expect(middle > before && middle - before == after - middle)
        let reader = try d.connect()
        defer { reader.close() }
        let back = try reader.get(DataFrame.self, batched.id)
        #expect(back.rowCount == Self.rows && back.columns.map(\.name) == Self.columns.map(\.name))
        for (i, col) in back.columns.enumerated() {
            #expect(col.values.dtype == Self.columns[i].dtype)
            #expect(col.values.withUnsafeBytes { Array($0) } == Self.expected(i))
        }
        let labels = try #require(back.index).values.withUnsafeBytes { Array($0.bindMemory(to: Int64.self)) }
        #expect(labels == (0..<Int64(Self.rows)).map { $0 })
        // an empty frame too
        let empty = try c.putDataFrame(rows: 0, columns: Self.columns, fill: Self.fill)
        #expect(try reader.get(DataFrame.self, empty.id).rowCount == 0)
    }

    @Test("on Trellis: the batched write's tree is the tensor-by-tensor tree, its values read back")
    func trellis() throws {
        try DaemonProcess.with { d in try check(d, batchedPath: true) }
    }

    @Test("on upstream vineyardd (no extensions advertised): tensor by tensor, the same object",
          .enabled(if: Paths.vineyardd != nil, "vineyardd (vineyard-bdist in .venv) is not installed"))
    func upstream() throws {
        try DaemonProcess.with(upstream: true) { d in try check(d, batchedPath: false) }
    }

    @Test("a batch the arena cannot hold fails with NotEnoughMemory and leaves nothing")
    func tooLarge() throws {
        try DaemonProcess.with { d in
            let c = try d.connect()
            defer { c.close() }
            let used = try c.instanceStatus().memoryUsage
            #expect(throws: ClientError.self) {
                _ = try c.putDataFrame(rows: 1 << 22, columns: Array(repeating: (name: JSON.string("c"), dtype: DType.int64), count: 16)) { _, _ in }
            }
            #expect(try c.instanceStatus().memoryUsage == used)
            #expect(try c.listMetadata(pattern: "*", limit: 10).isEmpty)
        }
    }
}
