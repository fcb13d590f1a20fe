import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where Trellis keeps its state: `$TRELLIS_HOME`, else `~/.trellis`.
public struct TrellisHome: Sendable, Equatable {
    /// The directory.
    public var path: String

    /// A home at an explicit path.
    public init(path: String) { self.path = path }

    /// `$TRELLIS_HOME`, else `$HOME/.trellis`.
    public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) -> TrellisHome {
        if let h = env["TRELLIS_HOME"], !h.isEmpty { return TrellisHome(path: h) }
        let home = env["HOME"] ?? NSHomeDirectory()
        return TrellisHome(path: (home as NSString).appendingPathComponent(".trellis"))
    }

    /// Run records: `<home>/runs`.
    public var runsDirectory: String { (path as NSString).appendingPathComponent("runs") }
    /// The shared runtime's state: `<home>/runtime`.
    public var runtimeDirectory: String { (path as NSString).appendingPathComponent("runtime") }
}

/// Who may read run records, step logs and runtime state: `TRELLIS_RUN_PERMISSIONS` =
/// `private` (default: directories 0700, files 0600, since logs and records can hold
/// data and secrets a step printed), `group` (0750/0640) or `world` (0755/0644).
public struct RunPermissions: Sendable, Equatable {
    /// Mode of run directories.
    public var directory: mode_t
    /// Mode of records and logs.
    public var file: mode_t

    /// Owner only.
    public static let `private` = RunPermissions(directory: 0o700, file: 0o600)
    /// Owner, and the owner's group may read.
    public static let group = RunPermissions(directory: 0o750, file: 0o640)
    /// Everybody may read.
    public static let world = RunPermissions(directory: 0o755, file: 0o644)

    /// The setting named `value` (`private`, `group`, `world`; empty or nil: `private`); nil if unknown.
    public static func named(_ value: String?) -> RunPermissions? {
        switch value?.lowercased() ?? "" {
        case "", "private": return .private
        case "group": return .group
        case "world": return .world
        default: return nil
        }
    }

    /// This process's setting (an unknown value falls back to `private`, the safe side).
    public static let current: RunPermissions =
        named(ProcessInfo.processInfo.environment["TRELLIS_RUN_PERMISSIONS"]) ?? .private

    /// Creates `path` and its missing parents, giving the directories this creates and
    /// `path` itself this setting's mode.
    public func makeDirectory(_ path: String) throws {
        try FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: Int(directory)])
        if chmod(path, directory) != 0 { throw RunStoreError("cannot set the mode of \(path): \(errnoText(errno))") }
    }
}

/// An error about stored runs.
public struct RunStoreError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What went wrong.
    public var message: String
    /// Creates an error.
    public init(_ message: String) { self.message = message }
    /// The message.
    public var description: String { message }
}

/// A one-line view of a run for `trellis flow ls`.
public struct RunSummary: Codable, Sendable, Equatable {
    /// Run id.
    public var runID: String
    /// Flow name.
    public var flow: String
    /// Overall state.
    public var state: RunOutcome
    /// When it was created.
    public var createdAt: Date
    /// Duration of the latest invocation, if finished.
    public var duration: Double?
    /// Steps per state (keys are ``StepState`` raw values).
    public var counts: [String: Int]
    /// Whether its objects are still in the store.
    public var objectsKept: Bool
}

/// Which log of a step.
public enum LogStream: String, Sendable, CaseIterable {
    /// Standard output.
    case stdout
    /// Standard error (also carries the runner's per-attempt header lines).
    case stderr
}

/// Run records and step logs on disk: `<runs>/<run-id>/record.json`, `spec.yaml`,
/// `logs/<step>.stdout.log`, `logs/<step>.stderr.log`, `lib/trellis_step.py`.
///
/// These are the read side of the CLI: `flow ls` → ``list()``, `flow status RUN [--json]` →
/// ``load(_:)`` (+ ``RunFormatter``), `flow logs RUN STEP [--follow]` → ``logs(run:step:)`` /
/// ``follow(run:step:pollInterval:)``.
public struct RunStore: Sendable {
    /// The directory holding one subdirectory per run.
    public let root: String

    /// A store rooted at `root`.
    public init(root: String) { self.root = root }

    /// The store of a Trellis home (`<home>/runs`).
    public init(home: TrellisHome = .fromEnvironment()) { self.root = home.runsDirectory }

    /// Directory of a run.
    public func directory(of runID: String) -> String { (root as NSString).appendingPathComponent(runID) }
    /// Record file of a run.
    public func recordPath(of runID: String) -> String { (directory(of: runID) as NSString).appendingPathComponent("record.json") }
    /// Log file of a step.
    public func logPath(run runID: String, step: String, stream: LogStream) -> String {
        "\(directory(of: runID))/logs/\(step).\(stream.rawValue).log"
    }
    /// Directory with the Python bootstrap (put on steps' `PYTHONPATH`).
    public func libDirectory(of runID: String) -> String { "\(directory(of: runID))/lib" }

    /// Whether a run exists.
    public func exists(_ runID: String) -> Bool { FileManager.default.fileExists(atPath: recordPath(of: runID)) }

    /// Creates the run's directories; fails if the run exists.
    func create(_ runID: String) throws {
        guard RunStore.isValidRunID(runID) else {
            throw RunStoreError("run id '\(runID)' may use letters, digits, '.', '_' and '-' only (max 100)")
        }
        if exists(runID) {
            throw RunStoreError("run '\(runID)' already exists; use 'trellis flow resume \(runID)' or another --run-id")
        }
        let permissions = RunPermissions.current
        try permissions.makeDirectory(directory(of: runID))
        try permissions.makeDirectory(directory(of: runID) + "/logs")
        try permissions.makeDirectory(libDirectory(of: runID))
    }

    /// Writes the record atomically (temp file + rename).
    public func save(_ record: RunRecord) throws {
        let data = try RunRecord.encoder().encode(record)
        let path = recordPath(of: record.runID)
        let tmp = path + ".tmp.\(getpid())"
        guard FileManager.default.createFile(atPath: tmp, contents: data, attributes: [.posixPermissions: Int(RunPermissions.current.file)]) else {
            throw RunStoreError("cannot write \(tmp)")
        }
        guard rename(tmp, path) == 0 else { throw RunStoreError("cannot rename \(tmp): \(errnoText(errno))") }
    }

    /// Reads a run's record.
    public func load(_ runID: String) throws -> RunRecord {
        guard let data = FileManager.default.contents(atPath: recordPath(of: runID)) else {
            throw RunStoreError("no run '\(runID)' in \(root)")
        }
        do {
            return try RunRecord.decoder().decode(RunRecord.self, from: data)
        } catch {
            throw RunStoreError("run '\(runID)': unreadable record: \(error)")
        }
    }

    /// All runs, newest first.
    public func list() -> [RunSummary] {
        let ids = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        var out: [RunSummary] = []
        for id in ids {
            guard let r = try? load(id) else { continue }
            var counts: [String: Int] = [:]
            for s in r.steps { counts[s.state.rawValue, default: 0] += 1 }
            out.append(
                RunSummary(
                    runID: r.runID, flow: r.spec.name, state: r.effectiveState, createdAt: r.createdAt,
                    duration: r.duration, counts: counts, objectsKept: r.objectsKept))
        }
        return out.sorted { $0.createdAt > $1.createdAt }
    }

    /// The logs of a step (stdout, stderr), all attempts.
    public func logs(run runID: String, step: String) throws -> (stdout: String, stderr: String) {
        let record = try load(runID)
        guard record.step(step) != nil else {
            throw RunStoreError("run '\(runID)' has no step '\(step)' (steps: \(record.steps.map(\.name).joined(separator: ", ")))")
        }
        func read(_ s: LogStream) -> String {
            FileManager.default.contents(atPath: logPath(run: runID, step: step, stream: s))
                .map { String(decoding: $0, as: UTF8.self) } ?? ""
        }
        return (read(.stdout), read(.stderr))
    }

    /// The last `lines` lines (at most the last 64 KiB) of a step's stdout and stderr logs;
    /// empty strings for logs that do not exist.
    public func logTail(run runID: String, step: String, lines: Int = 40) -> (stdout: String, stderr: String) {
        func tail(_ stream: LogStream) -> String {
            guard let h = FileHandle(forReadingAtPath: logPath(run: runID, step: step, stream: stream)) else { return "" }
            defer { try? h.close() }
            let size = (try? h.seekToEnd()) ?? 0
            let window: UInt64 = 64 * 1024
            try? h.seek(toOffset: size > window ? size - window : 0)
            let data = (try? h.readToEnd()) ?? Data()
            var text = String(decoding: data, as: UTF8.self)
            if size > window, let nl = text.firstIndex(of: "\n") { text = String(text[text.index(after: nl)...]) }
            var parts = text.split(separator: "\n", omittingEmptySubsequences: false)
            if parts.last == "" { parts.removeLast() }
            return parts.suffix(max(0, lines)).joined(separator: "\n")
        }
        return (tail(.stdout), tail(.stderr))
    }

    /// Follows a step's logs: yields new output of both streams as it is written, and ends once
    /// the step is in a final state (or the run's runner is gone) and everything was read.
    public func follow(run runID: String, step: String, pollInterval: Duration = .milliseconds(200))
        -> AsyncThrowingStream<(LogStream, String), any Error>
    {
        let store = self
        return AsyncThrowingStream { continuation in
            let task = Task {
                var offsets: [LogStream: UInt64] = [.stdout: 0, .stderr: 0]
                do {
                    let first = try store.load(runID)
                    guard first.step(step) != nil else {
                        throw RunStoreError("run '\(runID)' has no step '\(step)'")
                    }
                    while !Task.isCancelled {
                        let record = try? store.load(runID)
                        var wrote = false
                        for s in LogStream.allCases {
                            let path = store.logPath(run: runID, step: step, stream: s)
                            guard let h = FileHandle(forReadingAtPath: path) else { continue }
                            try? h.seek(toOffset: offsets[s]!)
                            if let data = try? h.readToEnd(), !data.isEmpty {
                                offsets[s]! += UInt64(data.count)
                                continuation.yield((s, String(decoding: data, as: UTF8.self)))
                                wrote = true
                            }
                            try? h.close()
                        }
                        let done: Bool
                        if let r = record, let st = r.step(step) {
                            done = st.state.isTerminal || r.effectiveState != .running
                        } else {
                            done = true
                        }
                        if done && !wrote { break }
                        if !wrote { try await Task.sleep(for: pollInterval) }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Run ids: letters, digits, `.`, `_`, `-`; not starting with `.`; at most 100 characters.
    public static func isValidRunID(_ id: String) -> Bool {
        !id.isEmpty && id.count <= 100 && !id.hasPrefix(".")
            && id.unicodeScalars.allSatisfy { $0.isASCII && (FlowSpec.isAlnum($0) || $0 == "." || $0 == "_" || $0 == "-") }
    }

    /// A fresh run id: `<flow>-<yyyyMMdd-HHmmss>-<4 hex>`.
    public static func generateRunID(flow: String, now: Date = Date()) -> String {
        var safe = String(flow.unicodeScalars.map { FlowSpec.isAlnum($0) || $0 == "-" || $0 == "_" ? Character($0) : "-" })
        if safe.isEmpty { safe = "flow" }
        if safe.count > 40 { safe = String(safe.prefix(40)) }
        var t = time_t(now.timeIntervalSince1970)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        let stamp = String(
            format: "%04d%02d%02d-%02d%02d%02d", Int(tmv.tm_year) + 1900, Int(tmv.tm_mon) + 1, Int(tmv.tm_mday),
            Int(tmv.tm_hour), Int(tmv.tm_min), Int(tmv.tm_sec))
        let rand = String(UInt16.random(in: 0...UInt16.max), radix: 16)
        return "\(safe)-\(stamp)-\(String(repeating: "0", count: 4 - rand.count))\(rand)"
    }
}

extension RunRecord {
    /// The state, corrected for a runner that died without finishing: a record still saying
    /// `running` whose runner pid is gone reads as `failed`.
    public var effectiveState: RunOutcome {
        guard state == .running, let pid = runnerPID else { return state }
        if kill(pid, 0) == 0 || errno == EPERM { return .running }
        return .failed
    }
}
