import Testing
@testable import TrellisServer
import TrellisTestSupport

@Suite("Yielding at split frames", .onBlockingPool)
struct SplitFrameYieldTests {
    let ms: UInt64 = 1_000_000

    @Test("keeps yielding while yields bring the rest of the frame quickly")
    func hits() {
        var p = SplitFrameYield()
        var now: UInt64 = 10 * ms
        for _ in 0..<1000 {
            let y = p.shouldYield(now: now)
            #expect(y)
            p.record(gotMore: true, start: now, end: now + 5_000)
            now += ms
        }
    }

    @Test("a yield that brings nothing backs off 16, 32, … up to 4,096 partial frames; a hit resets it")
    func backoff() {
        var p = SplitFrameYield()
        let now: UInt64 = 10 * ms
        var skipped: [Int] = []
        for _ in 0..<10 {
            let y = p.shouldYield(now: now)
            #expect(y)
            p.record(gotMore: false, start: now, end: now + 1_000)
            var n = 0
            while !p.shouldYield(now: now) { n += 1 }
            skipped.append(n)
        }
        #expect(skipped == [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 4096])
        p.record(gotMore: true, start: now, end: now + 1_000)
        p.record(gotMore: false, start: now, end: now + 1_000)
        #expect(p.skip == 16)
    }

    @Test("a slow yield stops yielding for 1 s, then 2 s, … up to 64 s, whatever it brought")
    func slow() {
        var p = SplitFrameYield()
        var now: UInt64 = 10 * ms
        var pauses: [UInt64] = []
        for _ in 0..<9 {
            let y = p.shouldYield(now: now)
            #expect(y)
            let end = now + 3 * ms
            p.record(gotMore: true, start: now, end: end)
            let atEnd = p.shouldYield(now: end)
            #expect(!atEnd)
            pauses.append(p.pausedUntil - end)
            now = p.pausedUntil - 1
            let justBefore = p.shouldYield(now: now)
            #expect(!justBefore)
            now += 1
        }
        #expect(pauses.map { $0 / 1_000_000_000 } == [1, 2, 4, 8, 16, 32, 64, 64, 64])
        // Quick yields after the pause do not shorten the next one.
        p.record(gotMore: true, start: now, end: now + 1_000)
        let y = p.shouldYield(now: now + 2_000)
            #expect(y)
    }

    @Test("a yield stalled for a few hundred microseconds (a virtual CPU's hiccup) is still quick")
    func stalledButQuick() {
        var p = SplitFrameYield()
        let now: UInt64 = 10 * ms
        p.record(gotMore: true, start: now, end: now + 400_000)
        #expect(p.pausedUntil == 0 && p.shouldYield(now: now + 400_001))
        p.record(gotMore: true, start: now, end: now + 600_000)
        #expect(p.pausedUntil == now + 600_000 + 1_000_000_000)
    }
}
