import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How one supervised process ended.
struct SupervisedExit: Sendable {
    var status: ExitStatus
    var timedOut: Bool
    var cancelled: Bool
    var seconds: Double
}

/// Runs a child to completion under a timeout and task cancellation: either ends it by
/// SIGTERM to its process group, then SIGKILL after `grace` seconds. Whatever is left of the
/// group once the leader exited is killed too (a step is its process group).
func supervise(_ child: ChildProcess, timeout: Double?, grace: Double) async -> SupervisedExit {
    let reason = StopReason()
    let start = ContinuousClock.now
    let status = await withTaskCancellationHandler {
        await withTaskGroup(of: ExitStatus?.self) { group in
            group.addTask { await child.wait() }
            if let t = timeout {
                group.addTask {
                    do { try await Task.sleep(for: .seconds(t)) } catch { return nil }
                    reason.state.withLock { $0.timedOut = true }
                    terminate(child, grace: grace)
                    return nil
                }
            }
            var result = ExitStatus(code: nil, signal: SIGKILL)
            for await r in group {
                if let r {
                    result = r
                    group.cancelAll()
                }
            }
            return result
        }
    } onCancel: {
        reason.state.withLock { $0.cancelled = true }
        terminate(child, grace: grace)
    }
    // Stragglers (background children of the step) go with it.
    child.signalGroup(SIGKILL)
    let r = reason.state.withLock { $0 }
    return SupervisedExit(
        status: status, timedOut: r.timedOut && !r.cancelled, cancelled: r.cancelled,
        seconds: (ContinuousClock.now - start).seconds)
}

final class StopReason: Sendable {
    let state = Mutex<(timedOut: Bool, cancelled: Bool)>((false, false))
}

/// SIGTERM to the group now, SIGKILL after `grace` seconds if anything is left.
func terminate(_ child: ChildProcess, grace: Double) {
    child.signalGroup(SIGTERM)
    Task.detached {
        try? await Task.sleep(for: .seconds(grace))
        if child.groupAlive { child.signalGroup(SIGKILL) }
    }
}

extension Duration {
    /// The duration in seconds as a `Double`.
    var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) * 1e-18
    }
}

/// Reads what a step reported in `$TRELLIS_METRICS`: JSON-object lines or `key=value` lines;
/// numeric values of the same key are added up.
func readMetrics(at path: String) -> [String: Double] {
    guard let data = FileManager.default.contents(atPath: path) else { return [:] }
    var out: [String: Double] = [:]
    for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
        let text = line.trimmingCharacters(in: .whitespaces)
        if text.hasPrefix("{") {
            guard let obj = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { continue }
            for (k, v) in obj {
                if let d = v as? Double {
                    out[k, default: 0] += d
                } else if let i = v as? Int {
                    out[k, default: 0] += Double(i)
                }
            }
        } else if let eq = text.firstIndex(of: "=") {
            let k = String(text[..<eq]).trimmingCharacters(in: .whitespaces)
            if let v = Double(text[text.index(after: eq)...].trimmingCharacters(in: .whitespaces)), !k.isEmpty {
                out[k, default: 0] += v
            }
        }
    }
    return out
}
