/// Per-client limits: how many connections and parked waits one client process may hold.
///
/// A client is the peer process of a UNIX-socket connection (its pid from SO_PEERCRED);
/// RPC (TCP) connections are not identified and not limited here. Pure bookkeeping: the
/// connection loop and the request handler ask before they admit, and tell when done.
public struct ClientLimits: Sendable, Equatable {
    /// Connections one client process may have open at once.
    public var connections: Int
    /// Requests (`get_name`/`get_data` with `wait`) one client process may have parked.
    public var waits: Int

    public init(connections: Int = 1024, waits: Int = 256) {
        self.connections = connections
        self.waits = waits
    }
}

/// What each client holds now.
struct ClientUsage: Sendable {
    private(set) var connections: [Int32: Int] = [:]
    private(set) var waits: [Int32: Int] = [:]

    /// Counts a new connection of `peer` unless it is at the limit; false: refuse it.
    mutating func admitConnection(_ peer: Int32, limits: ClientLimits) -> Bool {
        Self.admit(peer, &connections, limit: limits.connections)
    }

    mutating func releaseConnection(_ peer: Int32) { Self.release(peer, &connections) }

    /// Counts a parked wait of `peer` unless it is at the limit; false: refuse it.
    mutating func admitWait(_ peer: Int32, limits: ClientLimits) -> Bool {
        Self.admit(peer, &waits, limit: limits.waits)
    }

    mutating func releaseWait(_ peer: Int32) { Self.release(peer, &waits) }

    private static func admit(_ peer: Int32, _ table: inout [Int32: Int], limit: Int) -> Bool {
        let n = table[peer, default: 0]
        guard n < limit else { return false }
        table[peer] = n + 1
        return true
    }

    private static func release(_ peer: Int32, _ table: inout [Int32: Int]) {
        guard let n = table[peer] else { return }
        table[peer] = n > 1 ? n - 1 : nil
    }
}
