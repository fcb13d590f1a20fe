// libFuzzer harness: the etcd watch stream's scanner (JSONStreamScanner, which splits the
// gateway's stream of concatenated JSON objects). Invariants, for any bytes:
// - no crash, and every message it returns starts with `{`/`[` and ends with `}`/`]`;
// - the messages do not depend on how the stream was cut into chunks (the first byte of the
//   input picks the chunk size), as long as no message outgrows the limit;
// - with a small limit the buffer never holds more than the limit plus the last chunk.
@testable import TrellisMeta

func messages(_ bytes: ArraySlice<UInt8>, chunk: Int, limit: Int) -> [[UInt8]] {
    var scanner = JSONStreamScanner(limit: limit)
    var out: [[UInt8]] = []
    var i = bytes.startIndex
    while i < bytes.endIndex {
        let j = min(i + chunk, bytes.endIndex)
        scanner.append(bytes[i..<j])
        while let m = scanner.nextMessage() { out.append(m) }
        if scanner.bufferedBytes > limit + chunk {
            fatalError("the scanner holds \(scanner.bufferedBytes) bytes (limit \(limit), chunk \(chunk))")
        }
        i = j
    }
    return out
}

func fuzzOne(_ input: UnsafeBufferPointer<UInt8>) {
    guard let first = input.first else { return }
    let bytes = Array(input)[1...]
    let chunk = Int(first % 64) + 1
    let whole = messages(bytes, chunk: max(1, bytes.count), limit: 1 << 20)
    for m in whole {
        guard let a = m.first, let z = m.last, a == UInt8(ascii: "{") || a == UInt8(ascii: "["),
            z == UInt8(ascii: "}") || z == UInt8(ascii: "]")
        else { fatalError("a message that is not a JSON object or array: \(m)") }
    }
    if messages(bytes, chunk: chunk, limit: 1 << 20) != whole {
        fatalError("the messages depend on the chunking (chunk \(chunk))")
    }
    _ = messages(bytes, chunk: chunk, limit: 16)  // a limit most messages exceed: bounded, resynchronises
}

#if TRELLIS_FUZZING
#if canImport(Glibc)
import Glibc
#endif
import CFuzzDriver

@main struct Fuzz {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
            fuzzOne(UnsafeBufferPointer(start: data, count: size))
            return 0
        })
    }
}
#else
/// Without the fuzzer runtime: replays the files named on the command line (a crash reproducer).
@main struct Replay {
    static func main() { replayFiles(fuzzOne) }
}
#endif
