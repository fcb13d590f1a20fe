import TrellisProtocol
import TrellisSystem

/// Reads frames off a blocking socket through one buffer, so that a request usually
/// costs one `recv` (header and body together) instead of two.
struct FrameReader: ~Copyable {
    enum Next {
        case frame(UnsafeBufferPointer<UInt8>)
        case tooLarge(UInt64)
        case end
    }

    let socket: Descriptor
    let maxMessageSize: Int
    /// The buffer's usual size; a larger frame grows it, and it shrinks back to this once
    /// that frame is consumed, so an idle connection never keeps a large frame's memory.
    let initialCapacity: Int
    private var buffer: UnsafeMutableRawBufferPointer
    private var start = 0
    private var end = 0
    private var splitYield = SplitFrameYield()
    private var receiveWait: ReceiveWait

    init(socket: Descriptor, maxMessageSize: Int, capacity: Int = 64 << 10, receiveWait: ReceiveWait = ReceiveWait()) {
        self.socket = socket
        self.receiveWait = receiveWait
        self.maxMessageSize = maxMessageSize
        self.initialCapacity = capacity
        buffer = .allocate(byteCount: capacity, alignment: 8)
    }

    /// Bytes the buffer holds now.
    var capacity: Int { buffer.count }

    /// Gives a grown buffer back once everything in it is consumed; true when it did.
    @discardableResult
    mutating func shrinkIfIdle() -> Bool {
        guard start == end, buffer.count > initialCapacity else { return false }
        start = 0
        end = 0
        buffer.deallocate()
        buffer = .allocate(byteCount: initialCapacity, alignment: 8)
        return true
    }

    deinit { buffer.deallocate() }

    /// Makes sure `count` bytes are buffered from `start`; false on EOF before any.
    private mutating func fill(_ count: Int) throws(SystemError) -> Bool {
        if end - start >= count { return true }
        if start + count > buffer.count {
            // Move what we have to the front, growing if one frame needs more room.
            let have = end - start
            if count > buffer.count {
                let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 8)
                if have > 0 { bigger.baseAddress!.copyMemory(from: buffer.baseAddress! + start, byteCount: have) }
                buffer.deallocate()
                buffer = bigger
            } else if have > 0 {
                buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + start, byteCount: have)
            }
            start = 0
            end = have
        }
        if end > start && end - start < count { yieldForRest() }
        while end - start < count {
            let n = try receive(into: buffer.baseAddress! + end, count: buffer.count - end)
            if n > 0 {
                end += n
            } else {
                if end == start { return false }
                throw SystemError("recv", errno: ECONNRESET)
            }
        }
        return true
    }

    /// One blocking receive, waiting the way ``ReceiveWait`` decides.
    private mutating func receive(into destination: UnsafeMutableRawPointer, count: Int) throws(SystemError) -> Int {
        switch receiveWait.next() {
        case .receive:
            return try socket.receiveSome(into: destination, count: count)
        case .pollFirst:
            return try socket.receiveSomeWhenReadable(into: destination, count: count)
        case .measuredReceive:
            let before = currentThreadVoluntarySwitches()
            let n = try socket.receiveSome(into: destination, count: count)
            if let before, let after = currentThreadVoluntarySwitches() {
                receiveWait.record(sleeps: after - before)
            }
            return n
        }
    }

    /// Part of a frame is buffered and the rest is on its way: give the CPU to the sender
    /// (see ``SplitFrameYield``), then take whatever has arrived without waiting.
    private mutating func yieldForRest() {
        let t0 = monotonicNanoseconds()
        guard splitYield.shouldYield(now: t0) else { return }
        sched_yield()
        let n = socket.receiveAvailable(into: buffer.baseAddress! + end, count: buffer.count - end)
        splitYield.record(gotMore: n > 0, start: t0, end: monotonicNanoseconds())
        // EOF and errors are seen again, and handled, by the blocking read that follows.
        if n > 0 { end += n }
    }

    /// The next frame's body, valid until the next call.
    mutating func next() throws(SystemError) -> Next {
        if start == end {
            start = 0
            end = 0
            shrinkIfIdle()
        }
        guard try fill(Frame.headerSize) else { return .end }
        let length = Frame.length(fromHeader: (buffer.baseAddress! + start).loadUnaligned(as: UInt64.self))
        if length > UInt64(maxMessageSize) { return .tooLarge(length) }
        let total = Frame.headerSize + Int(length)
        guard try fill(total) else { throw SystemError("recv", errno: ECONNRESET) }
        let body = UnsafeBufferPointer(
            start: (buffer.baseAddress! + start + Frame.headerSize).assumingMemoryBound(to: UInt8.self), count: Int(length))
        start += total
        return .frame(body)
    }

    /// Reads `count` raw bytes (RPC blob payloads) into `destination`, buffered bytes first.
    mutating func readRaw(into destination: UnsafeMutableRawPointer, count: Int) throws(SystemError) {
        let buffered = min(end - start, count)
        if buffered > 0 {
            destination.copyMemory(from: buffer.baseAddress! + start, byteCount: buffered)
            start += buffered
        }
        if count > buffered {
            guard try socket.readExact(into: destination + buffered, count: count - buffered) else {
                throw SystemError("recv", errno: ECONNRESET)
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
