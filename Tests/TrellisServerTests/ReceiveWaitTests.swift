import Testing
@testable import TrellisServer
import TrellisTestSupport

@Suite("Waiting for the next request", .onBlockingPool)
struct ReceiveWaitTests {
    /// The plans for the next `n` receives, recording `sleeps` for each measured one.
    static func plans(_ w: inout ReceiveWait, _ n: Int, sleeps: Int) -> [ReceiveWait.Plan] {
        (0..<n).map { _ in
            let p = w.next()
            if p == .measuredReceive { w.record(sleeps: sleeps) }
            return p
        }
    }

    @Test("waits in recv and measures one receive in 16 while the waits are clean")
    func cleanWaitsStayInReceive() {
        var w = ReceiveWait()
        let plans = Self.plans(&w, 16 * 100, sleeps: 1)
        #expect(!plans.contains(.pollFirst))
        #expect(plans.filter { $0 == .measuredReceive }.count == 100)
        #expect(plans[15] == .measuredReceive && plans[0..<15].allSatisfy { $0 == .receive })
    }

    @Test("32 measured receives of which 1 in 8 woke for nothing: poll first for 4,096 receives, then measure again")
    func wokenForNothingSwitchesToPoll() {
        var w = ReceiveWait()
        // 32 measured receives: clean waits and bytes waiting, then the 4th needless wake-up last
        let pattern = [0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 2, 0, 2, 1, 2, 1, 2]
        var measured = 0
        var i = 0
        while !w.polling {
            let p = w.next()
            i += 1
            if p == .measuredReceive {
                w.record(sleeps: pattern[measured])
                measured += 1
            }
            #expect(i <= 16 * 32, "never switched")
            if i > 16 * 32 { return }
        }
        #expect(measured == 32)  // (the 4th needless wake-up is the last sample)
        let polled = Self.plans(&w, 4096, sleeps: 2)
        #expect(polled.allSatisfy { $0 == .pollFirst })
        // measuring again, one in 16 receives: every one woken for nothing, so poll again
        // after 4 of them
        let again = Self.plans(&w, 16 * 4, sleeps: 2)
        #expect(!again.contains(.pollFirst))
        #expect(again.filter { $0 == .measuredReceive }.count == 4)
        #expect(w.polling)
    }

    @Test("needless wake-ups in a row: poll first at the 4th, without waiting for 32 samples")
    func aRunOfNeedlessWakesSwitchesAtOnce() {
        var w = ReceiveWait()
        var measured = 0
        while !w.polling && measured < 32 {
            if w.next() == .measuredReceive {
                w.record(sleeps: 2)
                measured += 1
            }
        }
        #expect(w.polling && measured == 4)
    }

    @Test("fewer than 1 in 8 receives woken for nothing keeps recv, however many of the waits that slept were")
    func aRareNeedlessWakeKeepsReceive() {
        var w = ReceiveWait()
        var measured = 0
        for _ in 0..<(16 * 32 * 8) {
            if w.next() == .measuredReceive {
                // 3 of every 32 receives woken for nothing, the other 29 found bytes waiting:
                // every wait that slept was a needless one, yet they are rare
                w.record(sleeps: measured % 32 < 3 ? 2 : 0)
                measured += 1
            }
            #expect(!w.polling)
        }
        var z = ReceiveWait()
        for _ in 0..<(16 * 64) where z.next() == .measuredReceive { z.record(sleeps: 0) }
        #expect(!z.polling)
    }
}
