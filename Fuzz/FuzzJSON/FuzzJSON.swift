// libFuzzer harness: the JSON parser and writer (scripts/fuzz.sh builds it with
// -sanitize=fuzzer). Invariants: parsing never crashes; whatever parses re-encodes to
// text that parses back to an equal value, and the writer is a fixed point.
import TrellisProtocol

func fuzzOne(_ bytes: UnsafeBufferPointer<UInt8>) {
    guard let value = try? JSONParser.parse(bytes) else { return }
    var w = JSONWriter(capacity: 64)
    w.write(value)
    let text = w.bytes
    guard let again = try? JSONParser.parse(text) else {
        fatalError("re-encoded JSON does not parse: \(String(decoding: text, as: UTF8.self))")
    }
    if !sameValue(value, again) { fatalError("round trip changed the value: \(String(decoding: text, as: UTF8.self))") }
    var w2 = JSONWriter(capacity: 64)
    w2.write(again)
    if w2.bytes != text { fatalError("the writer is not a fixed point") }
}

/// Equality that treats NaN-free doubles by bit pattern after a round trip (the writer
/// prints doubles in shortest form, which parses back exactly).
func sameValue(_ a: JSON, _ b: JSON) -> Bool {
    if case .double(let x) = a, case .double(let y) = b { return x == y || (x.isNaN && y.isNaN) || x.bitPattern == y.bitPattern }
    switch (a, b) {
    case (.array(let x), .array(let y)): return x.count == y.count && zip(x, y).allSatisfy(sameValue)
    case (.object(let x), .object(let y)):
        return x.count == y.count && x.allSatisfy { k, v in y[k].map { sameValue(v, $0) } ?? false }
    default: return a == b || a.description == b.description
    }
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
