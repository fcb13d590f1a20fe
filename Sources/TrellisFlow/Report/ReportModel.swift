import Foundation

/// What the run report shows, derived from a ``RunRecord`` alone (pure; no I/O).
public struct ReportModel: Sendable, Equatable {
    /// One attempt bar of the timeline.
    public struct Attempt: Sendable, Equatable {
        /// The step.
        public var step: String
        /// 1-based attempt number.
        public var attempt: Int
        /// 0 for the first run, n for the n-th resume.
        public var invocation: Int
        /// Replica it ran on.
        public var replica: Int
        /// Start (the runner took it up).
        public var start: Date
        /// End; `now` for an attempt still running.
        public var end: Date
        /// Whether it is still running.
        public var running: Bool
        /// When its process started, if known.
        public var processStart: Date?
        /// How long its process ran (so far).
        public var processSeconds: Double?
        /// Its moves.
        public var moves: [MoveRecord]
        /// Runner overhead, seconds.
        public var overhead: Double?
        /// Data-plane seconds.
        public var dataPlaneSeconds: Double?
        /// `running`, `succeeded`, `failed`, `cancelled`.
        public var outcome: String
        /// Exit code, signal, timeout, message.
        public var exitCode: Int32?
        /// Signal that ended it.
        public var signal: Int32?
        /// Whether it timed out.
        public var timedOut: Bool
        /// Why it failed.
        public var message: String?
        /// Seconds from start to end.
        public var seconds: Double { end.timeIntervalSince(start) }
    }

    /// One object of the flow (a declared output).
    public struct Object: Sendable, Equatable {
        /// Flow-level name.
        public var name: String
        /// Store type, if known.
        public var type: String?
        /// Size in bytes (nil: never produced).
        public var bytes: Int?
        /// The step producing it.
        public var producer: String
        /// The steps reading it.
        public var consumers: [String]
        /// Replicas it lived on: where it was written, then where it was moved.
        public var replicas: [Int]
        /// When it was in the store (its producer's successful attempt ended).
        public var created: Date?
        /// When it was deleted.
        public var freed: Date?
        /// Whether it is still in the store (produced, not freed).
        public var resident: Bool
        /// Bytes copied between replicas for its consumers.
        public var movedBytes: Int
    }

    /// A contiguous stretch of the timeline (one invocation, or overlapping ones).
    public struct Span: Sendable, Equatable {
        /// Start.
        public var start: Date
        /// End.
        public var end: Date
        /// The first invocation in it (0: the first run).
        public var invocation: Int
    }

    /// Run totals.
    public struct Totals: Sendable, Equatable {
        /// Wall time of the latest invocation (so far, when running).
        public var wallSeconds: Double
        /// Active wall time of all invocations together (sum of the spans).
        public var activeSeconds: Double
        /// put + get (reported by the steps) + moves, over the latest attempts.
        public var handoffSeconds: Double
        /// Seconds of moves, all attempts.
        public var moveSeconds: Double
        /// Bytes moved between replicas, all attempts.
        public var movedBytes: Int
        /// Bytes of the objects produced.
        public var producedBytes: Int
        /// Runner overhead, all attempts.
        public var overheadSeconds: Double
        /// Process seconds, all attempts.
        public var processSeconds: Double
        /// Peak arena use per replica (nil when not recorded).
        public var peakMemory: [ReplicaMemory]?
        /// Attempts in all.
        public var attempts: Int
        /// Steps per state.
        public var stepStates: [StepState: Int]
    }

    /// The record.
    public var record: RunRecord
    /// The run's state (``RunRecord/effectiveState`` when the caller could check the runner).
    public var state: RunOutcome
    /// When the report was made (the end of bars still running).
    public var now: Date
    /// Every attempt, by start.
    public var attempts: [Attempt]
    /// The objects, in spec order.
    public var objects: [Object]
    /// Stretches of activity, in order; long idle gaps between them (e.g. before a resume) are
    /// cut out of the timeline.
    public var spans: [Span]
    /// The totals.
    public var totals: Totals
    /// DAG edges: producer → consumer with the objects passed.
    public var edges: [Link]

    /// A DAG edge.
    public struct Link: Sendable, Equatable {
        /// Producer (or the step waited for).
        public var from: String
        /// Consumer.
        public var to: String
        /// Objects passed (empty for an `after` dependency).
        public var objects: [String]
    }

    /// Derives the model.
    public init(record: RunRecord, state: RunOutcome? = nil, now: Date = Date()) {
        self.record = record
        self.state = state ?? record.state
        self.now = now
        let running = (state ?? record.state) == .running
        let attempts = Self.attempts(record, now: now, runRunning: running)
        self.attempts = attempts
        self.spans = Self.spans(attempts)
        self.objects = Self.objects(record)
        self.edges = Self.edges(record.spec)
        var states: [StepState: Int] = [:]
        for s in record.steps { states[s.state, default: 0] += 1 }
        let latestHandoff = record.steps.reduce(0.0) { acc, s in
            acc + (s.metrics["put_seconds"] ?? 0) + (s.metrics["get_seconds"] ?? 0) + s.inputs.reduce(0) { $0 + $1.moveSeconds }
        }
        let end = record.finishedAt ?? (running ? now : attempts.map(\.end).max() ?? record.startedAt)
        totals = Totals(
            wallSeconds: max(0, end.timeIntervalSince(record.startedAt)),
            activeSeconds: spans.reduce(0) { $0 + $1.end.timeIntervalSince($1.start) },
            handoffSeconds: latestHandoff,
            moveSeconds: attempts.reduce(0) { $0 + $1.moves.reduce(0) { $0 + $1.seconds } },
            movedBytes: attempts.reduce(0) { $0 + $1.moves.reduce(0) { $0 + $1.bytes } },
            producedBytes: objects.reduce(0) { $0 + ($1.bytes ?? 0) },
            overheadSeconds: attempts.reduce(0) { $0 + ($1.overhead ?? 0) },
            processSeconds: attempts.reduce(0) { $0 + ($1.processSeconds ?? 0) },
            peakMemory: record.peakMemory,
            attempts: attempts.count,
            stepStates: states)
    }

    /// The attempts of the record: its history, or (records without one) the latest attempt
    /// of each step rebuilt from the step's fields.
    static func attempts(_ record: RunRecord, now: Date, runRunning: Bool) -> [Attempt] {
        var out: [Attempt] = []
        for s in record.steps {
            if let history = s.history, !history.isEmpty {
                for h in history {
                    let open = h.finishedAt == nil
                    // An attempt left open by a runner that died ends with the record.
                    let end = h.finishedAt ?? (runRunning ? now : record.finishedAt ?? max(h.startedAt, now))
                    var process = h.processSeconds
                    if open, let ps = h.processStartedAt { process = max(0, end.timeIntervalSince(ps)) }
                    out.append(
                        Attempt(
                            step: s.name, attempt: h.attempt, invocation: h.invocation, replica: h.replica, start: h.startedAt,
                            end: max(end, h.startedAt), running: open && runRunning, processStart: h.processStartedAt,
                            processSeconds: process, moves: h.moves, overhead: h.overhead, dataPlaneSeconds: h.dataPlaneSeconds,
                            outcome: open ? (runRunning ? "running" : "cancelled") : h.outcome, exitCode: h.exitCode,
                            signal: h.signal, timedOut: h.timedOut ?? false, message: h.message))
                }
            } else if let start = s.startedAt, let replica = s.replica, s.attempts > 0, !s.reused {
                let open = s.duration == nil
                let end = s.duration.map { start.addingTimeInterval($0) } ?? (runRunning ? now : record.finishedAt ?? now)
                let moves = s.inputs.filter { $0.movedBytes > 0 }.map {
                    MoveRecord(name: $0.name, from: $0.residentOn ?? replica, to: replica, bytes: $0.movedBytes, startedAt: start, seconds: $0.moveSeconds)
                }
                let outcome: String
                switch s.state {
                case .succeeded: outcome = "succeeded"
                case .failed: outcome = "failed"
                case .running: outcome = runRunning ? "running" : "cancelled"
                default: outcome = open ? "cancelled" : "failed"
                }
                out.append(
                    Attempt(
                        step: s.name, attempt: s.attempts, invocation: record.resumes, replica: replica, start: start,
                        end: max(end, start), running: open && runRunning, processStart: nil, processSeconds: s.processSeconds,
                        moves: moves, overhead: s.overhead, dataPlaneSeconds: s.dataPlaneSeconds, outcome: outcome,
                        exitCode: s.exitCode, signal: s.signal, timedOut: s.timedOut, message: s.message))
            }
        }
        return out.sorted { ($0.start, $0.step, $0.attempt) < ($1.start, $1.step, $1.attempt) }
    }

    /// Merges the attempts' intervals; a gap longer than 5 s and than a quarter of the active
    /// time between two stretches is left out of the timeline.
    static func spans(_ attempts: [Attempt]) -> [Span] {
        var raw: [Span] = []
        for a in attempts.sorted(by: { $0.start < $1.start }) {
            if var last = raw.last, a.start <= last.end {
                last.end = max(last.end, a.end)
                raw[raw.count - 1] = last
            } else {
                raw.append(Span(start: a.start, end: a.end, invocation: a.invocation))
            }
        }
        let active = raw.reduce(0) { $0 + $1.end.timeIntervalSince($1.start) }
        let cut = max(5, active / 4)
        var out: [Span] = []
        for s in raw {
            if var last = out.last, s.start.timeIntervalSince(last.end) <= cut {
                last.end = max(last.end, s.end)
                out[out.count - 1] = last
            } else {
                out.append(s)
            }
        }
        return out
    }

    /// The declared outputs with what the record knows of them.
    static func objects(_ record: RunRecord) -> [Object] {
        var out: [Object] = []
        for producer in record.spec.steps {
            let rec = record.step(producer.name)
            for name in producer.outputs {
                let written = rec?.outputs.first { $0.name == name }
                let consumers = record.spec.steps.filter { $0.inputs.contains(name) }.map(\.name)
                var replicas: [Int] = written.map { [$0.replica] } ?? []
                var moved = 0
                var bytes = written?.bytes
                for c in consumers {
                    guard let cr = record.step(c) else { continue }
                    let history = cr.history ?? []
                    if history.isEmpty {
                        for i in cr.inputs where i.name == name && i.movedBytes > 0 {
                            moved += i.movedBytes
                            if let r = cr.replica, !replicas.contains(r) { replicas.append(r) }
                        }
                    } else {
                        for h in history {
                            for m in h.moves where m.name == name {
                                moved += m.bytes
                                if !replicas.contains(m.to) { replicas.append(m.to) }
                            }
                        }
                    }
                    if bytes == nil, let i = cr.inputs.first(where: { $0.name == name }), i.bytes > 0 { bytes = i.bytes }
                }
                let created = written == nil ? nil : rec?.history?.last(where: { $0.outcome == "succeeded" })?.finishedAt
                    ?? rec?.startedAt.map { s in s.addingTimeInterval(rec?.duration ?? 0) }
                let freed = record.freedAt?[name]
                let freedEarly = record.freedEarly?.contains(name) == true
                let resident = written != nil && freed == nil && !freedEarly
                    && (record.objectsKept || record.state == .running)
                out.append(
                    Object(
                        name: name, type: record.objectTypes?[name], bytes: bytes, producer: producer.name, consumers: consumers,
                        replicas: replicas, created: created, freed: freed, resident: resident, movedBytes: moved))
            }
        }
        return out
    }

    /// Producer → consumer pairs with the objects passed (steps ordered as in the spec), plus
    /// `after` dependencies (no objects).
    static func edges(_ spec: FlowSpec) -> [Link] {
        var producer: [String: String] = [:]
        for s in spec.steps { for o in s.outputs where producer[o] == nil { producer[o] = s.name } }
        var out: [Link] = []
        for s in spec.steps {
            for i in s.inputs {
                guard let p = producer[i], p != s.name else { continue }
                if let k = out.firstIndex(where: { $0.from == p && $0.to == s.name }) {
                    if !out[k].objects.contains(i) { out[k].objects.append(i) }
                } else {
                    out.append(Link(from: p, to: s.name, objects: [i]))
                }
            }
            for a in s.after where !out.contains(where: { $0.from == a && $0.to == s.name }) && a != s.name {
                out.append(Link(from: a, to: s.name, objects: []))
            }
        }
        return out
    }

    /// The attempts of one step.
    public func attempts(of step: String) -> [Attempt] { attempts.filter { $0.step == step } }
}
