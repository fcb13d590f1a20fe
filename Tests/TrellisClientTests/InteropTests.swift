import Testing
import TrellisProtocol

@testable import TrellisClient

#if canImport(Glibc)
import Glibc
import TrellisTestSupport
#endif

/// The values both sides write, computed the same way as `pattern()` in tests/interop/peer.py.
enum Pattern {
    static let count = 24
    static let seedRows = 600_000
    static let seedColumns = 46

    /// Little-endian bytes of `count` elements of `dtype`.
    static func bytes(_ dtype: DType, count n: Int = count) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(n * dtype.size)
        func append<T: BitwiseCopyable>(_ v: T) { withUnsafeBytes(of: v) { out.append(contentsOf: $0) } }
        for i in 0..<n {
            let signed = (i * 37) % 101 - 50
            let unsigned = (i * 37) % 101
            let real = Double(i) * 0.25 - 3.0
            switch dtype {
            case .bool: append(i % 3 == 0)
            case .int8: append(Int8(signed))
            case .int16: append(Int16(signed))
            case .int32: append(Int32(signed))
            case .int64: append(Int64(signed))
            case .uint8: append(UInt8(unsigned))
            case .uint16: append(UInt16(unsigned))
            case .uint32: append(UInt32(unsigned))
            case .uint64: append(UInt64(unsigned))
            case .float16: append(Float16(real))
            case .float32: append(Float(real))
            case .float64: append(real)
            }
        }
        return out
    }

    /// `c<j>[i] = (i * 46 + j) % 1000003`: the seed-sized frame Swift writes.
    static func seedValue(row i: Int, column j: Int) -> Int64 { Int64((i * seedColumns + j) % 1_000_003) }
}

/// Runs tests/interop/peer.py with the upstream Python client against `socket`.
func runPeer(_ mode: String, socket: String) throws -> ProcessResult {
    try Subprocess.run([Paths.python, Paths.interop + "/peer.py", mode, socket], environment: ["VINEYARD_IPC_SKIP_RETRY": "1"])
}

/// Whether `blob` lies inside the arena mapping it came from (a zero-copy view).
func isInsideArena(_ blob: Blob) -> Bool {
    guard blob.isSharedMemory, let b = blob.mappingBounds else { return false }
    return blob.address >= b.base && blob.address + UInt(blob.count) <= b.base + UInt(b.length)
}

@Suite(
    "Interoperability with the upstream Python client", .serialized,
    .enabled(if: Paths.hasPython, "the Python venv (.venv/bin/python with vineyard 0.24.2) is missing"), .onBlockingPool)
struct InteropTests {
    @Test("Swift puts tensors, data frames, a series and a table; Python gets equal numpy/pandas/pyarrow values")
    func swiftToPython() throws {
        try DaemonProcess.with(size: "1Gi") { d in
            let c = try d.connect()
            defer { c.close() }
            func share(_ name: String, _ id: ObjectID) throws { try c.publish(id, as: name) }

            for dtype in DType.allCases {
                let bytes = Pattern.bytes(dtype)
                let t = try c.createTensor(dtype: dtype, shape: [Pattern.count]) { dst in
                    bytes.withUnsafeBytes { dst.copyMemory(from: $0) }
                }
                try share("swift_t_\(dtype)", t.id)
            }
            let grid = try c.putTensor((0..<24).map { Int64(($0 * 37) % 101 - 50) }, shape: [4, 6])
            try share("swift_t_2d", grid.id)
            let fortran = try c.createTensor(Double.self, shape: [2, 3], order: .fortran) { b in
                for i in 0..<6 { b[i] = Double(i) }
            }
            try share("swift_t_fortran", fortran.id)
            try share("swift_t_empty", try c.putTensor([Double]()).id)

            let rows = 0..<5
            let frame = try c.createDataFrame(columns: [
                (name: "a", values: try c.putTensor(rows.map { Int64($0 * 10) }).base),
                (name: "b", values: try c.putTensor(rows.map { Double($0) * 0.5 }).base),
                (name: "c", values: try c.putTensor(rows.map { $0 % 2 == 0 }).base),
                (name: "d", values: try c.putTensor(rows.map { Int32(-$0) }).base),
            ])
            try share("swift_df", frame.id)
            let labels = try c.createIndex(try c.putTensor([10, 20, 30] as [Int64]).base, name: "k")
            let indexed = try c.createDataFrame(
                columns: [
                    (name: JSON.int(0), values: try c.putTensor([1.0, 2.0, 3.0]).base),
                    (name: JSON.string("x"), values: try c.putTensor([7, 8, 9] as [Int64]).base),
                ], index: labels)
            try share("swift_df_idx", indexed.id)
            try share("swift_series", try c.createSeries(try c.putTensor([1.5, 2.5, -3.0]).base, name: "s").id)
            let table = try c.createTable(columns: [
                (name: "x", array: try c.createArrowArray([1, 2, 3] as [Int64])),
                (name: "y", array: try c.createArrowArray([0.5, 1.5, 2.5])),
                (name: "s", array: try c.createStringArray(["a", "bb", nil])),
                (name: "f", array: try c.createArrowArray([true, false, true])),
            ])
            try share("swift_table", table.id)

            var columns: [(name: String, values: AnyTensor)] = []
            for j in 0..<Pattern.seedColumns {
                let col = try c.createTensor(Int64.self, shape: [Pattern.seedRows]) { b in
                    for i in 0..<b.count { b[i] = Pattern.seedValue(row: i, column: j) }
                }
                columns.append((name: "c\(j)", values: col.base))
            }
            try share("swift_seed", try c.createDataFrame(columns: columns).id)

            let result = try runPeer("check", socket: d.socketPath)
            let failures = result.stdout.split(separator: "\n").filter { !$0.hasPrefix("ok ") }
            #expect(result.status == 0, "peer.py check failed:\n\(result.stdout)\n\(result.stderr)")
            #expect(failures.isEmpty, "\(failures)")
            // Every object was checked: 12 dtypes + 2d + fortran + empty + 2 frames + series + table + seed.
            #expect(result.stdout.split(separator: "\n").count { $0.hasPrefix("ok ") } == 20)
        }
    }

    @Test("Python puts numpy, pandas and pyarrow values (the seed frame too); Swift reads them zero-copy")
    func pythonToSwift() throws {
        try DaemonProcess.with(size: "1Gi") { d in
            let result = try runPeer("put", socket: d.socketPath)
            try #require(result.status == 0, "peer.py put failed:\n\(result.stderr)")
            let line = try #require(result.stdout.split(separator: "\n").last.map(String.init))
            let expected = try JSONParser.parse(line)
            let c = try d.connect()
            defer { c.close() }

            for dtype in DType.allCases {
                let t = try c.get(AnyTensor.self, name: "py_t_\(dtype)")
                #expect(t.dtype == dtype)
                #expect(t.shape == [Pattern.count])
                #expect(t.withUnsafeBytes { Array($0) } == Pattern.bytes(dtype), "values of py_t_\(dtype)")
                #expect(isInsideArena(t.blob), "py_t_\(dtype) is not a view into the arena")
            }
            let grid = try c.get(Tensor<Int64>.self, name: "py_t_2d")
            #expect(grid.shape == [4, 6])
            #expect(Array(grid) == (0..<24).map(Int64.init))
            let fortran = try c.get(Tensor<Double>.self, name: "py_t_fortran")
            #expect(fortran.order == .fortran)
            #expect(fortran.shape == [2, 3])
            #expect(Array(fortran) == [0, 1, 2, 3, 4, 5])
            let empty = try c.get(AnyTensor.self, name: "py_t_empty")
            #expect(empty.shape == [0] && empty.blob.isEmpty && empty.dtype == .float64)

            let frame = try c.get(DataFrame.self, name: "py_df")
            #expect(frame.columns.map(\.title) == ["a", "b", "c", "d"])
            #expect(frame.columns.map(\.values.dtype) == [.int64, .float64, .bool, .int32])
            #expect(Array(try #require(frame["a"]).typed(Int64.self)) == [0, 10, 20, 30, 40])
            #expect(Array(try #require(frame["b"]).typed(Double.self)) == [0, 0.5, 1, 1.5, 2])
            #expect(Array(try #require(frame["c"]).typed(Bool.self)) == [true, false, true, false, true])
            #expect(Array(try #require(frame["d"]).typed(Int32.self)) == [0, -1, -2, -3, -4])
            #expect(frame.index?.isDefaultRange == true)
            #expect(frame.rowCount == 5)
            for col in frame.columns { #expect(isInsideArena(col.values.blob)) }

            let indexed = try c.get(DataFrame.self, name: "py_df_idx")
            #expect(indexed.columns.map(\.name) == [.int(0), .string("x")])
            #expect(indexed.index?.name == .string("k"))
            #expect(Array(try #require(indexed.index).values.typed(Int64.self)) == [10, 20, 30])

            let series = try c.get(Series.self, name: "py_series")
            #expect(series.name == .string("s"))
            #expect(Array(try series.values.typed(Double.self)) == [1.5, 2.5, -3.0])
            #expect(series.index.isDefaultRange)

            let table = try c.get(ArrowTable.self, name: "py_table")
            #expect(table.schema.fields.map(\.name) == ["x", "y", "s", "f"])
            #expect(table.schema.fields.map(\.type) == [.numeric(.int64), .numeric(.float64), .largeUTF8, .bool])
            #expect(table.rowCount == 3)
            let batch = try #require(table.batches.first)
            #expect((0..<3).map { batch["x"]?.value($0, as: Int64.self) } == [1, 2, 3])
            #expect((0..<3).map { batch["y"]?.value($0, as: Double.self) } == [0.5, 1.5, 2.5])
            #expect((0..<3).map { batch["s"]?.string($0) } == ["a", "bb", nil])
            #expect((0..<3).map { batch["f"]?.bool($0) } == [true, false, true])
            #expect(batch["x"].map { isInsideArena($0.values) } == true)

            let seed = try c.get(DataFrame.self, name: "py_seed")
            #expect(seed.columns.count == Pattern.seedColumns)
            #expect(seed.rowCount == Pattern.seedRows)
            let sums = seed.columns.map { col in
                (try? col.values.typed(Int64.self))?.withUnsafeBufferPointer { $0.reduce(0, &+) } ?? -1
            }
            #expect(sums == expected["py_seed_sums"]?.arrayValue?.compactMap(\.int64Value))
            let first = seed.columns.map { (try? $0.values.typed(Int64.self))?.first ?? -1 }
            let last = seed.columns.map { (try? $0.values.typed(Int64.self))?.last ?? -1 }
            #expect(first == expected["py_seed_first"]?.arrayValue?.compactMap(\.int64Value))
            #expect(last == expected["py_seed_last"]?.arrayValue?.compactMap(\.int64Value))
            #expect(seed.columns.allSatisfy { isInsideArena($0.values.blob) })
        }
    }

    @Test("reading a 1 GiB tensor maps it; no buffer of that size is allocated")
    func gigabyteZeroCopy() throws {
        try DaemonProcess.with(size: "1200Mi") { d in
            let writer = try d.connect()
            let count = (1 << 30) / 8
            let t = try writer.createTensor(Int64.self, shape: [count]) { b in
                b[0] = 17
                b[count - 1] = 42
            }
            let small = try writer.putBlob([1])
            writer.close()

            let reader = try d.connect()
            defer { reader.close() }
            _ = try reader.getBlob(small.id)  // maps the arena, so that only the read is measured
            let before = try largeAnonymousMappings()
            let got = try reader.get(Tensor<Int64>.self, t.id)
            let added = try largeAnonymousMappings().subtracting(before)
            // A buffer of 1 GiB (malloc'd or mapped) would be a new anonymous mapping of that
            // size. (Not the process's VmSize: suites running beside this one map arenas and
            // start threads meanwhile.)
            #expect(added.isEmpty, "anonymous mappings of 512 MiB or more appeared while reading a 1 GiB tensor: \(added)")
            #expect(got.count == count)
            #expect(got.first == 17 && got.last == 42)
            #expect(isInsideArena(got.blob))
        }
    }
}

/// The address ranges of this process's anonymous mappings (no file, no memfd) of at least
/// `bytes`, from /proc/self/maps (`start-end perms offset dev inode [path]`).
func largeAnonymousMappings(atLeast bytes: UInt = 512 << 20) throws -> Set<String> {
    let maps = try #require(readTextFile("/proc/self/maps"))
    return anonymousMappings(in: maps, atLeast: bytes)
}

func anonymousMappings(in maps: String, atLeast bytes: UInt) -> Set<String> {
    var found = Set<String>()
    for line in maps.split(separator: "\n") {
        let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard fields.count >= 5, fields.count == 5 || fields[5].hasPrefix("[") && fields[5] != "[stack]" else { continue }
        let range = fields[0].split(separator: "-")
        guard range.count == 2, let lo = UInt(range[0], radix: 16), let hi = UInt(range[1], radix: 16), hi - lo >= bytes
        else { continue }
        found.insert(String(fields[0]))
    }
    return found
}

@Suite("reading /proc/self/maps")
struct ProcMapsTests {
    @Test("anonymous mappings of the size asked are found; file and memfd mappings are not")
    func anonymousOnly() {
        let maps = """
            7f0000000000-7f0040000000 rw-p 00000000 00:00 0
            7f1000000000-7f1040000000 rw-s 00000000 00:01 1234                       /memfd:trellis-arena (deleted)
            7f2000000000-7f2040000000 r--p 00000000 08:01 42                         /usr/lib/big.so
            7f3000000000-7f3000100000 rw-p 00000000 00:00 0
            7f4000000000-7f4040000000 rw-p 00000000 00:00 0                          [heap]
            """
        #expect(anonymousMappings(in: maps, atLeast: 512 << 20) == ["7f0000000000-7f0040000000", "7f4000000000-7f4040000000"])
        #expect(anonymousMappings(in: maps, atLeast: 1 << 20).count == 3)
    }
}
