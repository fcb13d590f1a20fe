import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Text views of a run record: the live progress view, `flow status`, `flow ls`.
public enum RunFormatter {
    /// One line per step: state, replica, attempts, duration, data moved, message.
    public static func stepLines(_ record: RunRecord, now: Date = Date()) -> [String] {
        let width = max(8, record.steps.map(\.name.count).max() ?? 8)
        return record.steps.map { s in
            var parts: [String] = []
            parts.append(symbol(s.state) + " " + s.name.padding(toLength: width, withPad: " ", startingAt: 0))
            parts.append(s.state.rawValue.padding(toLength: 15, withPad: " ", startingAt: 0))
            parts.append(s.replica.map { "r\($0)" } ?? "  ")
            var detail: [String] = []
            if s.state == .running, let start = s.startedAt {
                detail.append(formatFixed(now.timeIntervalSince(start), digits: 1) + "s")
            } else if let d = s.duration {
                detail.append(formatFixed(d, digits: 2) + "s")
            }
            if s.attempts > 1 { detail.append("attempt \(s.attempts)") }
            let local = s.inputs.reduce(0) { $0 + $1.localBytes }
            let moved = s.inputs.reduce(0) { $0 + $1.movedBytes }
            if !s.inputs.isEmpty {
                detail.append("in \(ByteSize.format(local)) local" + (moved > 0 ? ", \(ByteSize.format(moved)) moved" : ""))
            }
            let out = s.outputs.reduce(0) { $0 + $1.bytes }
            if !s.outputs.isEmpty { detail.append("out \(ByteSize.format(out))") }
            if s.reused { detail.append("reused") }
            if let m = s.message, s.state != .succeeded { detail.append(m) }
            parts.append(detail.joined(separator: ", "))
            return parts.joined(separator: "  ")
        }
    }

    /// `trellis flow status RUN`: a header, the steps, and the message.
    public static func status(_ record: RunRecord) -> String {
        var lines = [
            "run \(record.runID) (flow \(record.spec.name)): \(record.effectiveState.rawValue)"
                + (record.duration.map { " in \(formatFixed($0, digits: 2))s" } ?? "")
                + (record.resumes > 0 ? ", resumed \(record.resumes)x" : "")
        ]
        lines += stepLines(record)
        if let freed = record.freedEarly, !freed.isEmpty {
            lines.append("freed after their last use: " + freed.joined(separator: ", "))
        }
        if record.objectsKept { lines.append("objects kept in the store under '\(ObjectNaming.prefix(runID: record.runID))'") }
        if let m = record.message { lines.append(m) }
        return lines.joined(separator: "\n")
    }

    /// `trellis flow status RUN --json`: the record as JSON.
    public static func json(_ record: RunRecord) throws -> String {
        String(decoding: try RunRecord.encoder().encode(record), as: UTF8.self)
    }

    /// `trellis flow ls --json` (and the dashboard's `/api/runs`): the summaries, newest first.
    public static func json(_ runs: [RunSummary]) throws -> String {
        String(decoding: try RunRecord.encoder().encode(runs), as: UTF8.self)
    }

    /// `trellis flow ls`: one line per run.
    public static func list(_ runs: [RunSummary]) -> String {
        guard !runs.isEmpty else { return "no runs" }
        let w = max(6, runs.map(\.runID.count).max() ?? 6)
        return runs.map { r in
            let counts = StepState.allCases.compactMap { st in r.counts[st.rawValue].map { "\($0) \(st.rawValue)" } }
            return r.runID.padding(toLength: w, withPad: " ", startingAt: 0) + "  "
                + r.state.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0) + "  "
                + r.createdAt.formatted(Date.ISO8601FormatStyle()) + "  "
                + (r.duration.map { formatFixed($0, digits: 1) + "s" } ?? "-") + "  "
                + counts.joined(separator: ", ") + (r.objectsKept ? "  (objects kept)" : "")
        }.joined(separator: "\n")
    }

    static func symbol(_ s: StepState) -> String {
        switch s {
        case .pending: return "·"
        case .running: return "▶"
        case .succeeded: return "✓"
        case .failed: return "✗"
        case .upstreamFailed: return "⊘"
        case .cancelled: return "■"
        }
    }
}

/// Live progress for `flow run`/`flow resume`: on a terminal, redraws one line per step in place
/// (and ticks running steps' clocks); elsewhere prints one line per step change. Pass
/// ``observe(_:)`` as ``FlowRunOptions/observer``.
public final class ProgressRenderer: Sendable {
    private struct State {
        var drawnLines = 0
        var last: RunRecord?
        var printedStates: [String: String] = [:]
    }

    private let state = Mutex(State())
    private let fd: Int32
    private let interactive: Bool
    private let ticker: Mutex<Task<Void, Never>?> = Mutex(nil)

    /// Renders to file descriptor `fd` (default: standard error); `interactive` defaults to
    /// whether it is a terminal.
    public init(fd: Int32 = 2, interactive: Bool? = nil) {
        self.fd = fd
        self.interactive = interactive ?? (isatty(fd) == 1)
    }

    /// The observer to pass to the runner.
    public func observe(_ event: RunEvent) {
        if interactive {
            redraw(event.record)
            if case .runStarted = event.kind { startTicker() }
            if case .runFinished = event.kind { stopTicker() }
        } else {
            printChanges(event)
        }
    }

    private func startTicker() {
        let task = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(500))
                guard let self, let r = self.state.withLock({ $0.last }) else { return }
                self.redraw(r)
            }
        }
        ticker.withLock { $0 = task }
    }

    private func stopTicker() {
        ticker.withLock {
            $0?.cancel()
            $0 = nil
        }
    }

    private func redraw(_ record: RunRecord) {
        state.withLock { s in
            var text = ""
            if s.drawnLines > 0 { text += "\u{1b}[\(s.drawnLines)A" }
            let lines = ["run \(record.runID): \(record.state.rawValue)"] + RunFormatter.stepLines(record)
            for l in lines { text += "\u{1b}[2K" + l + "\n" }
            s.drawnLines = lines.count
            s.last = record
            emit(text)
        }
    }

    private func printChanges(_ event: RunEvent) {
        state.withLock { s in
            var text = ""
            switch event.kind {
            case .runStarted:
                text += "run \(event.record.runID): started (\(event.record.steps.count) steps, \(event.record.replicas.count) replica(s))\n"
            case .stepStarted(let name), .stepFinished(let name), .stepRetrying(let name, _):
                let lines = RunFormatter.stepLines(event.record)
                if let i = event.record.steps.firstIndex(where: { $0.name == name }) {
                    text += lines[i] + "\n"
                }
                // Steps that changed without their own event (upstream-failed, cancelled).
                for (j, st) in event.record.steps.enumerated() where st.name != name {
                    let key = st.state.rawValue
                    if s.printedStates[st.name] != key && (st.state == .upstreamFailed || st.state == .cancelled) {
                        text += lines[j] + "\n"
                    }
                }
            case .runFinished:
                text += "run \(event.record.runID): \(event.record.state.rawValue)"
                    + (event.record.duration.map { " in \(formatFixed($0, digits: 2))s" } ?? "") + "\n"
            }
            for st in event.record.steps { s.printedStates[st.name] = st.state.rawValue }
            emit(text)
        }
    }

    private func emit(_ text: String) {
        let bytes = Array(text.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            off += n
        }
    }
}

/// Ctrl-C handling for `flow run`/`flow resume`: the first SIGINT (or SIGTERM) cancels the
/// given task — the run stops its steps and records `cancelled` — a second one exits at once.
public enum InterruptHandler {
    /// Installs the handler for `task`. Keep the returned sources alive while the run lasts.
    public static func cancelOnInterrupt<T: Sendable>(_ task: Task<T, any Error>) -> [any DispatchSourceSignal] {
        let count = Mutex(0)
        return [SIGINT, SIGTERM].map { sig in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                let n = count.withLock { c -> Int in
                    c += 1
                    return c
                }
                if n == 1 {
                    FileHandle.standardError.write(Data("\ntrellis: cancelling the run (Ctrl-C again to quit now)\n".utf8))
                    task.cancel()
                } else {
                    exit(130)
                }
            }
            source.resume()
            return source
        }
    }
}
