import Metrics
import Synchronization

/// Round trips to etcd and their failures, by operation (the gateway path without `/v3/`:
/// `kv/range`, `kv/txn`, `lease/keepalive`, `watch`, …: a bounded set), through the
/// process's swift-metrics backend (none unless the executable bootstrapped one).
enum EtcdMetrics {
    static let roundTrips = "trellis_etcd_round_trips_total"
    static let failures = "trellis_etcd_failures_total"
    static let duration = "trellis_etcd_request_duration_seconds"

    struct Handles: Sendable {
        let roundTrips: Counter
        let failures: Counter
        let timer: Metrics.Timer
    }

    private static let cache = Mutex<[String: Handles]>([:])

    /// The `operation` label of a gateway path.
    static func operation(_ path: String) -> String {
        path.hasPrefix("/v3/") ? String(path.dropFirst(4)) : path
    }

    static func handles(_ path: String) -> Handles {
        let op = operation(path)
        return cache.withLock { c in
            if let h = c[op] { return h }
            let dims = [("operation", op)]
            let h = Handles(
                roundTrips: Counter(label: roundTrips, dimensions: dims), failures: Counter(label: failures, dimensions: dims),
                timer: Metrics.Timer(label: duration, dimensions: dims))
            c[op] = h
            return h
        }
    }

    /// Counts one round trip of `path` that took from `start` until now, failed or not.
    static func record(_ path: String, since start: ContinuousClock.Instant, failed: Bool) {
        let h = handles(path)
        h.roundTrips.increment()
        if failed { h.failures.increment() }
        h.timer.record(duration: ContinuousClock.now - start)
    }
}
