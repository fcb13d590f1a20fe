import Testing
import TrellisProtocol
@testable import TrellisServer

@Suite("Per-client limits", .onBlockingPool)
struct ClientLimitTests {
    @Test("bookkeeping: admits up to the limit per client, releases make room, clients are apart")
    func usage() {
        let limits = ClientLimits(connections: 2, waits: 1)
        var u = ClientUsage()
        var results: [Bool] = []
        results.append(u.admitConnection(7, limits: limits))
        results.append(u.admitConnection(7, limits: limits))
        results.append(u.admitConnection(7, limits: limits))  // the third: refused
        results.append(u.admitConnection(8, limits: limits))  // another client
        u.releaseConnection(7)
        results.append(u.admitConnection(7, limits: limits))
        results.append(u.admitWait(7, limits: limits))
        results.append(u.admitWait(7, limits: limits))  // refused
        u.releaseWait(7)
        u.releaseWait(7)  // an extra release does not go negative
        let waitsOf7 = u.waits[7]
        #expect(waitsOf7 == nil)
        results.append(u.admitWait(7, limits: limits))
        #expect(results == [true, true, false, true, true, true, false, true])
    }

    @Test("a client over its connection limit gets a clear error; closing one makes room")
    func connections() throws {
        let d = try TestDaemon(clientLimits: ClientLimits(connections: 2, waits: 8))
        defer { d.stop() }
        var open: [RawClient] = []
        for _ in 0..<2 {
            let c = try d.connect()
            try c.register()
            open.append(c)
        }
        let third = try d.connect()
        let refused = try third.call(["type": "register_request", "version": "0.24.2", "store_type": 1])
        #expect(refused["code"]?.intValue == 1)
        #expect(refused["message"]?.stringValue?.contains("too many connections") == true)
        #expect(third.isClosedByPeer(waitMilliseconds: 60_000))
        open.removeLast()  // closes it
        var admitted = false
        for _ in 0..<600 where !admitted {  // the daemon notices the close on its own thread
            let c = try d.connect()
            admitted = (try? c.call(["type": "register_request", "version": "0.24.2", "store_type": 1]))?["type"] == "register_reply"
            if !admitted { usleep(50_000) }
        }
        #expect(admitted)
    }

    @Test("a client over its limit of parked waits gets a clear error")
    func waits() throws {
        let d = try TestDaemon(clientLimits: ClientLimits(connections: 16, waits: 1))
        defer { d.stop() }
        let first = try d.connect()
        try first.register()
        try first.send(["type": "get_name_request", "name": "never", "wait": true])
        let status = try d.connect()
        try status.register()
        var parked = 0
        for _ in 0..<600 where parked != 1 {
            parked = try status.call(["type": "instance_status_request"])["meta"]?["deferred_requests"]?.intValue ?? -1
            if parked != 1 { usleep(50_000) }
        }
        #expect(parked == 1)
        let second = try d.connect()
        try second.register()
        let refused = try second.call(["type": "get_name_request", "name": "never", "wait": true])
        #expect(refused["code"]?.intValue == 1)
        #expect(refused["message"]?.stringValue?.contains("too many waiting requests") == true)
        #expect(try second.call(["type": "instance_status_request"])["type"] == "instance_status_reply")
    }
}

#if canImport(Glibc)
import Glibc
import TrellisTestSupport
#endif
