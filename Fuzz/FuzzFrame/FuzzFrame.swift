// libFuzzer harness: the daemon's frame reader on a real socket pair, and the incremental
// FrameDecoder fed in pieces. Invariants: no crash; both see the same frames; a header
// beyond the limit is reported as too large, never buffered.
import TrellisProtocol
import TrellisSystem
@testable import TrellisServer

#if canImport(Glibc)
import Glibc
#endif

let limit = 4096

func fuzzOne(_ input: UnsafeBufferPointer<UInt8>) {
    // Frames seen by the decoder, fed in pieces whose sizes come from the input itself.
    var decoder = FrameDecoder(maxMessageSize: limit)
    var decoded: [[UInt8]] = []
    var decoderTooLarge = false
    var i = 0
    var step = 1
    outer: while i < input.count {
        let n = min(step, input.count - i)
        decoder.feed(input[i..<(i + n)])
        i += n
        step = Int(input[i - 1] % 17) + 1
        while let out = decoder.next() {
            switch out {
            case .frame(let body): decoded.append(body)
            case .tooLarge: decoderTooLarge = true; break outer
            }
        }
    }

    // The same bytes through the daemon's reader on a socket pair.
    var fds: [Int32] = [0, 0]
    guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { fatalError("socketpair") }
    defer { close(fds[0]) }
    var sent = 0
    while sent < input.count {
        let n = send(fds[1], input.baseAddress! + sent, input.count - sent, Int32(MSG_NOSIGNAL))
        if n <= 0 { fatalError("send: the input is larger than the socket buffer") }
        sent += n
    }
    close(fds[1])
    var reader = FrameReader(socket: Descriptor(fds[0]), maxMessageSize: limit, capacity: 64)
    var read: [[UInt8]] = []
    var readerTooLarge = false
    loop: while true {
        do {
            switch try reader.next() {
            case .frame(let body): read.append(Array(body))
            case .tooLarge: readerTooLarge = true; break loop
            case .end: break loop
            }
        } catch {
            break loop  // a frame cut short by EOF
        }
        if reader.capacity > max(64, limit + Frame.headerSize) { fatalError("buffer of \(reader.capacity) bytes for frames of at most \(limit)") }
    }
    if read != decoded { fatalError("the reader saw \(read.count) frames, the decoder \(decoded.count)") }
    if readerTooLarge != decoderTooLarge { fatalError("the reader and the decoder disagree about an oversized frame") }
}

#if TRELLIS_FUZZING
import CFuzzDriver

@main struct Fuzz {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
            if size > 65536 { return 0 }  // stay inside one socket buffer
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
