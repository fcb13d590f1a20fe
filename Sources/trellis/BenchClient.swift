import ArgumentParser
import TrellisClient
import TrellisProtocol
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// `trellis bench-client`: the Swift client's side of bench/client_bench.py (hidden).
///
/// Small objects: put+get pairs of 8 B and 1 KiB int64 tensors (`create_buffer`, `seal`,
/// `create_data`, then `get_data` + `get_buffers` — the same five round trips as Python's
/// `client.put(arr)` + `client.get(id)`), reporting p50/p99 of one pair and pairs per second.
/// Large objects: put throughput and get latency of uint8 tensors (default 1 MiB, 64 MiB,
/// 1 GiB), from a source array already in memory, as numpy's would be. Prints one JSON object.
struct BenchClient: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-client", abstract: "Benchmark the Swift client against a running daemon (JSON).",
        shouldDisplay: false)

    @Option(name: .long, help: "The daemon's IPC socket (default: $VINEYARD_IPC_SOCKET).")
    var socket: String?

    @Option(name: .long, help: "Put+get pairs per small size.")
    var iterations = 5000

    @Option(name: .long, help: "Untimed warm-up pairs per small size.")
    var warmup = 500

    @Option(name: .long, parsing: .upToNextOption, help: "Small tensor sizes in bytes.")
    var small: [Int] = [8, 1024]

    @Option(name: .long, parsing: .upToNextOption, help: "Large tensor sizes in bytes.")
    var large: [Int] = [1 << 20, 64 << 20, 1 << 30]

    @Option(name: .long, help: "Repetitions per large size (the median is reported).")
    var repeats = 3

    func run() throws {
        let client: Client
        do {
            client = try Client(socket: socket)
        } catch {
            printError("trellis bench-client: \(error)")
            throw ExitCode(1)
        }
        defer { client.close() }
        do {
            var smallResults: [JSON] = []
            for size in small { smallResults.append(try smallObjects(client, bytes: size)) }
            var largeResults: [JSON] = []
            for size in large { largeResults.append(try largeObjects(client, bytes: size)) }
            printOut(JSON.object(["client": "swift", "small": .array(smallResults), "large": .array(largeResults)]).description)
        } catch {
            printError("trellis bench-client: \(error)")
            throw ExitCode(1)
        }
    }

    private func smallObjects(_ client: Client, bytes: Int) throws(ClientError) -> JSON {
        let values = [Int64](repeating: 7, count: max(1, bytes / 8))
        var ids: [ObjectID] = []
        ids.reserveCapacity(iterations + warmup)
        for _ in 0..<warmup {
            let t = try client.putTensor(values)
            _ = try client.get(Tensor<Int64>.self, t.id)
            ids.append(t.id)
        }
        var latencies: [UInt64] = []
        latencies.reserveCapacity(iterations)
        let start = monotonicNanoseconds()
        for _ in 0..<iterations {
            let t0 = monotonicNanoseconds()
            let t = try client.putTensor(values)
            let got = try client.get(Tensor<Int64>.self, t.id)
            latencies.append(monotonicNanoseconds() - t0)
            precondition(got.count == values.count)
            ids.append(t.id)
        }
        let total = monotonicNanoseconds() - start
        for chunk in stride(from: 0, to: ids.count, by: 1000) {
            try client.delete(Array(ids[chunk..<min(chunk + 1000, ids.count)]))
        }
        latencies.sort()
        return [
            "bytes": .number(bytes), "iterations": .number(iterations),
            "p50_us": .double(Double(latencies[latencies.count / 2]) / 1000),
            "p99_us": .double(Double(latencies[min(latencies.count - 1, latencies.count * 99 / 100)]) / 1000),
            "ops_per_s": .double(Double(iterations) / (Double(total) / 1e9)),
        ]
    }

    private func largeObjects(_ client: Client, bytes: Int) throws(ClientError) -> JSON {
        // The source, like a numpy array the caller already has: allocated and touched.
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 64)
        defer { source.deallocate() }
        for i in stride(from: 0, to: bytes, by: 4096) { source[i] = UInt8(truncatingIfNeeded: i >> 12) }
        var puts: [UInt64] = []
        var gets: [UInt64] = []
        for _ in 0..<max(1, repeats) {
            let t0 = monotonicNanoseconds()
            let t = try client.createTensor(dtype: .uint8, shape: [bytes]) { dst in
                dst.copyMemory(from: UnsafeRawBufferPointer(source))
            }
            let t1 = monotonicNanoseconds()
            let got = try client.get(Tensor<UInt8>.self, t.id)
            let t2 = monotonicNanoseconds()
            precondition(got.count == bytes && got[4096 % bytes] == source[4096 % bytes])
            puts.append(t1 - t0)
            gets.append(t2 - t1)
            try client.delete(t.id)
        }
        puts.sort()
        gets.sort()
        let put = Double(puts[puts.count / 2]) / 1e9
        return [
            "bytes": .number(bytes), "repeats": .number(puts.count),
            "put_s": .double(put), "put_gbps": .double(Double(bytes) / put / 1e9),
            "get_us": .double(Double(gets[gets.count / 2]) / 1000),
        ]
    }
}
