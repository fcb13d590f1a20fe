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

    @Test("8 measured waits of which half woke for nothing: poll first for 4,096 receives, then measure again")
    func wokenForNothingSwitchesToPoll() {
        var w = ReceiveWait()
        // alternating clean (1 sleep) and woken-for-nothing (2 sleeps) waits: 4 of 8
        var measured = 0
        var i = 0
        while !w.polling {
            let p = w.next()
            i += 1
            if p == .measuredReceive {
                w.record(sleeps: measured % 2 == 0 ? 1 : 2)
                measured += 1
            }
            #expect(i <= 16 * 8, "never switched")
            if i > 16 * 8 { return }
        }
        #expect(measured == 8)
        let polled = Self.plans(&w, 4096, sleeps: 2)
        #expect(polled.allSatisfy { $0 == .pollFirst })
        // measuring again: a new verdict needs 8 new samples, one in 16 receives
        let again = Self.plans(&w, 16 * 8, sleeps: 2)
        #expect(!again.contains(.pollFirst))
        #expect(again.filter { $0 == .measuredReceive }.count == 8)
        #expect(w.polling)
    }

    @Test("fewer than half woken for nothing keeps recv; receives that did not sleep are no evidence")
    func minorityAndNoSleepAreNoEvidence() {
        var w = ReceiveWait()
        var measured = 0
        for _ in 0..<(16 * 64) {
            if w.next() == .measuredReceive {
                // 3 of every 8 sleeping waits woke for nothing; every other measured receive found bytes waiting
                let sleeps = measured % 2 == 1 ? 0 : ([2, 2, 2, 1, 1, 1, 1, 1][(measured / 2) % 8])
                w.record(sleeps: sleeps)
                measured += 1
            }
            #expect(!w.polling)
        }
        var z = ReceiveWait()
        for _ in 0..<(16 * 64) where z.next() == .measuredReceive { z.record(sleeps: 0) }
        #expect(!z.polling)
    }
}
