import Testing
import TrellisProtocol

@testable import TrellisClient
import TrellisTestSupport

/// The client against the reference daemon (vineyardd 0.24.2 from the vineyard wheel),
/// so that it speaks the protocol as upstream does and not only as Trellis understands it.
@Suite(
    "Client against upstream vineyardd", .serialized,
    .enabled(if: Paths.vineyardd != nil, "vineyardd (vineyard-bdist in .venv) is not installed"), .onBlockingPool)
struct UpstreamTests {
    @Test("blobs, metadata, names, status and every typed layout round-trip on vineyardd")
    func roundTrip() throws {
        try DaemonProcess.with(upstream: true) { d in
            let c = try d.connect()
            defer { c.close() }
            let reader = try d.connect()
            defer { reader.close() }
            #expect(c.server.version == "0.24.2")
            #expect(try c.instanceStatus().memoryLimit == 256 << 20)
            #expect(try c.clusterMeta().count == 1)

            let blob = try c.putBlob([5, 6, 7])
            let got = try reader.getBlob(blob.id)
            #expect(got.copyBytes() == [5, 6, 7])
            #expect(isInsideArena(got))
            let pair = try c.createBlobs(sizes: [16, 0, 8])
            for w in pair { try c.seal(w) }
            #expect(try reader.getBlobs(pair.map(\.id)).count == 3)

            for dtype in DType.allCases {
                let bytes = Pattern.bytes(dtype)
                let t = try c.createTensor(dtype: dtype, shape: [Pattern.count]) { dst in
                    bytes.withUnsafeBytes { dst.copyMemory(from: $0) }
                }
                let back = try reader.get(AnyTensor.self, t.id)
                #expect(back.dtype == dtype && back.withUnsafeBytes { Array($0) } == bytes)
            }
            let frame = try c.createDataFrame(columns: [
                (name: "a", values: try c.putTensor([1, 2, 3] as [Int64]).base),
                (name: "b", values: try c.putTensor([0.5, 1.5, 2.5]).base),
            ])
            let frameBack = try reader.get(DataFrame.self, frame.id)
            #expect(frameBack.columns.map(\.title) == ["a", "b"])
            #expect(Array(try #require(frameBack["b"]).typed(Double.self)) == [0.5, 1.5, 2.5])
            let series = try c.createSeries(try c.putTensor([true, false]).base, name: "flag")
            #expect(try reader.get(Series.self, series.id).name == "flag")
            let table = try c.createTable(columns: [
                (name: "x", array: try c.createArrowArray([1, 2] as [Int64], validity: [true, false])),
                (name: "s", array: try c.createStringArray(["p", nil])),
            ])
            let tableBack = try reader.get(ArrowTable.self, table.id)
            #expect(tableBack.batches.first?["x"]?.value(0, as: Int64.self) == 1)
            #expect(tableBack.batches.first?["x"]?.isNull(1) == true)
            #expect(tableBack.batches.first?["s"]?.string(0) == "p")

            try c.publish(frame.id, as: "frame")
            #expect(try reader.getName("frame") == frame.id)
            #expect(try reader.listNames(limit: 10).map(\.name) == ["frame"])
            #expect(try reader.listMetadata(pattern: "vineyard::DataFrame", limit: 10).compactMap(\.id) == [frame.id])
            try c.dropName("frame")
            #expect(failure { () throws(ClientError) in _ = try reader.getName("frame") }?.code == .objectNotExists)
            try c.delete(frame.id, force: true)
            #expect(try !reader.exists(frame.id))
            #expect(failure { () throws(ClientError) in _ = try reader.getMetadata(frame.id) }?.isNotFound == true)
        }
    }
}
