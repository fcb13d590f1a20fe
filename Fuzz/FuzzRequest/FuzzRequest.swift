// libFuzzer harness: request decoding and handling. The input is up to 16 newline-
// separated JSON messages (one connection's session); each is decoded into a Request and,
// when that succeeds, handled by a RequestHandler over a real 64 MiB store, and the reply
// is encoded. Invariants: no crash; every refusal is a VineyardError; requests and replies
// round-trip through TrellisProtocol's codec.
import TrellisProtocol
import TrellisStore
@testable import TrellisServer

let store = try! ObjectStore(capacity: 64 << 20)
let handler = RequestHandler(store: store, config: ServerConfig(socketPath: "/nonexistent/fuzz.sock"))
nonisolated(unsafe) var nextConnection: ConnectionID = 1
nonisolated(unsafe) var runs = 0

func fuzzOne(_ input: UnsafeBufferPointer<UInt8>) {
    let conn = nextConnection
    nextConnection += 1
    var state = ConnectionState(id: conn, isRPC: input.first.map { $0 & 1 == 1 } ?? false)
    state.registered = true
    var start = 0
    var messages = 0
    while start <= input.count && messages < 16 {
        var end = start
        while end < input.count && input[end] != 0x0A { end += 1 }
        let line = UnsafeBufferPointer(rebasing: input[start..<end])
        start = end + 1
        messages += 1
        guard let json = try? JSONParser.parse(line) else { continue }
        do throws(VineyardError) {
            let request = try Request.decode(json)
            // The codec is one type both ways: what decoded re-encodes and decodes the same.
            guard (try? Request.decode(request.encode())) == request else { fatalError("request does not round-trip: \(json)") }
            let outcome = try handler.handle(request, &state, cancelled: { true })
            switch outcome {
            case .reply(let reply, _), .replyWithBlobBytes(let reply, _), .receiveBlobBytes(let reply, _, _), .replyThenClose(let reply):
                let body = reply.encode()
                _ = Frame.encode(body)
                guard (try? Reply.decode(body)) == reply else { fatalError("reply does not round-trip: \(body)") }
            case .close, .none:
                break
            }
        } catch {
            _ = Frame.encode(error.reply)
        }
    }
    store.disconnect(conn)
    runs += 1
    if runs % 256 == 0 { _ = store.clear() }  // keep the store (and the fuzzer's memory) bounded
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
