import Testing
import TrellisProtocol
import TrellisSystem
@testable import TrellisServer

#if canImport(Glibc)
import Glibc
import TrellisTestSupport
#endif

@Suite("Frame reader", .onBlockingPool)
struct FrameReaderTests {
    /// Writes `frames` (u64le length + body each) into one end of a socket pair from another
    /// thread and closes it; returns the other end.
    static func feed(_ frames: [[UInt8]]) throws -> OwnedFD {
        var fds: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        let writer = fds[1]
        try spawnThread(name: "feed") {
            let owned = OwnedFD(adopting: writer)  // closed when the frames are written
            for body in frames {
                var bytes = withUnsafeBytes(of: UInt64(body.count).littleEndian) { Array($0) }
                bytes += body
                guard (try? owned.descriptor.writeAll(bytes)) != nil else { break }
            }
        }
        return OwnedFD(adopting: fds[0])
    }

    @Test("the buffer grows for a large frame and shrinks back once it is consumed")
    func shrinksAfterALargeFrame() throws {
        let big = [UInt8](repeating: 0x41, count: 8 << 20)
        let fd = try Self.feed([Array("{}".utf8), big, Array("{\"a\":1}".utf8)])
        var reader = FrameReader(socket: fd.descriptor, maxMessageSize: 64 << 20)
        let initial = reader.capacity
        guard case .frame(let first) = try reader.next() else { Issue.record("no first frame"); return }
        #expect(first.count == 2)
        guard case .frame(let second) = try reader.next() else { Issue.record("no large frame"); return }
        #expect(second.count == big.count && second.allSatisfy { $0 == 0x41 })
        #expect(reader.capacity >= big.count)
        guard case .frame(let third) = try reader.next() else { Issue.record("no last frame"); return }
        #expect(String(decoding: third, as: UTF8.self) == "{\"a\":1}")
        #expect(reader.capacity == initial, "the buffer kept \(reader.capacity) bytes after the large frame")
        guard case .end = try reader.next() else { Issue.record("expected the end"); return }
    }

    /// Writes `bytes` into one end of a socket pair from another thread in pieces of `piece`
    /// bytes, pausing between them, then closes it; returns the other end.
    static func trickle(_ bytes: [UInt8], piece: Int) throws -> OwnedFD {
        var fds: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        let writer = fds[1]
        try spawnThread(name: "trickle") {
            let owned = OwnedFD(adopting: writer)
            var at = 0
            while at < bytes.count {
                let n = min(piece, bytes.count - at)
                guard (try? bytes[at..<(at + n)].withUnsafeBytes({ try owned.descriptor.writeAll($0) })) != nil else { break }
                at += n
                usleep(2_000)
            }
        }
        return OwnedFD(adopting: fds[0])
    }

    static func framed(_ bodies: [String]) -> [UInt8] {
        bodies.flatMap { body in withUnsafeBytes(of: UInt64(body.utf8.count).littleEndian) { Array($0) } + Array(body.utf8) }
    }

    @Test("waiting in poll reads the same frames, split anywhere, and the same end", arguments: [false, true])
    func pollFirstReadsTheSameFrames(polling: Bool) throws {
        let bodies = ["{}", "{\"type\":\"exists_request\",\"id\":\"o0001\"}", String(repeating: "x", count: 3000)]
        let fd = try Self.trickle(Self.framed(bodies), piece: 5)
        var reader = FrameReader(socket: fd.descriptor, maxMessageSize: 1 << 20, receiveWait: ReceiveWait(polling: polling))
        for body in bodies {
            guard case .frame(let got) = try reader.next() else { Issue.record("missing frame"); return }
            #expect(String(decoding: got, as: UTF8.self) == body)
        }
        guard case .end = try reader.next() else { Issue.record("expected the end"); return }
    }

    @Test("waiting in poll: a frame cut short by the peer's close is a reset, not a frame", arguments: [false, true])
    func pollFirstCutShort(polling: Bool) throws {
        let whole = Self.framed(["{\"a\":1}"])
        let fd = try Self.trickle(Array(whole.dropLast(3)), piece: 4)
        var reader = FrameReader(socket: fd.descriptor, maxMessageSize: 1 << 20, receiveWait: ReceiveWait(polling: polling))
        #expect(throws: SystemError.self) { _ = try reader.next() }
    }
}
