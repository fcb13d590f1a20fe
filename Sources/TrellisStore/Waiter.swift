import TrellisProtocol
import TrellisSystem

/// A thread parked until the store changes in a way it may care about: a ``Wakeup``
/// (an eventfd), polled together with the client's socket, so a parked request costs no
/// periodic wake-ups and ends at once when its client leaves.
typealias Waiter = Wakeup

/// What a parked request waits for: a write wakes only the waiters of the keys it touched.
public enum WaitKey: Hashable, Sendable {
    /// A name being bound (`put_name`, or an imported object carrying it).
    case name(String)
    /// An object created or imported, or a blob sealed.
    case object(ObjectID)
    /// A stream's chunks or state changed (a pull may find a chunk, a writer room).
    case stream(ObjectID)
}

/// Parked waiters by key (part of `StoreState`, so under the store's lock).
struct WaiterTable {
    private var byKey: [WaitKey: [UInt64: Waiter]] = [:]
    private var next: UInt64 = 0
    /// Keys written since the last `takeWoken()`.
    private var touched: [WaitKey] = []

    var count: Int { byKey.values.reduce(0) { $0 + $1.count } }

    mutating func add(_ waiter: Waiter, for keys: [WaitKey]) -> UInt64 {
        next += 1
        for k in keys { byKey[k, default: [:]][next] = waiter }
        return next
    }

    mutating func remove(_ token: UInt64, for keys: [WaitKey]) {
        for k in keys {
            byKey[k]?[token] = nil
            if byKey[k]?.isEmpty == true { byKey[k] = nil }
        }
    }

    /// Records a write to `key` (cheap when nobody waits for it).
    mutating func touch(_ key: WaitKey) {
        if byKey[key] != nil { touched.append(key) }
    }

    /// The waiters of every key touched since the last call, once each.
    mutating func takeWoken() -> [Waiter] {
        guard !touched.isEmpty else { return [] }
        var seen = Set<ObjectIdentifier>()
        var out: [Waiter] = []
        for k in touched {
            for w in byKey[k]?.values ?? [:].values where seen.insert(ObjectIdentifier(w)).inserted {
                out.append(w)
            }
        }
        touched.removeAll(keepingCapacity: true)
        return out
    }
}
