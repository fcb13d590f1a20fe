import Foundation

/// The run report: one self-contained HTML page (inline CSS and SVG; no scripts, no external
/// resources) showing a run's DAG (steps coloured by replica, marked by state), a timeline of
/// every attempt (moves, process, runner overhead), the objects, the failures with their log
/// tails, and the run's totals. Pure: a record (and log tails) in, text out — `trellis flow
/// report` and the dashboard both call it.
///
/// Elements carry data attributes for tests and tools: `g.step[data-step][data-state]
/// [data-replica]`, `g.edge[data-from][data-to]`, `g.attempt[data-step][data-attempt]
/// [data-outcome][data-replica]`, `div.failure[data-step]` with `pre.log-tail`,
/// `tr.object[data-object]`.
public enum FlowReport {
    /// The end of a step's logs.
    public struct LogTail: Sendable, Equatable {
        /// Last lines of standard output.
        public var stdout: String
        /// Last lines of standard error (with the runner's per-attempt header lines).
        public var stderr: String
        /// Creates a tail.
        public init(stdout: String = "", stderr: String = "") {
            self.stdout = stdout
            self.stderr = stderr
        }
    }

    /// The whole report page.
    ///
    /// - Parameters:
    ///   - record: the run.
    ///   - logTails: step name → the end of its logs (shown for failed steps and failed attempts).
    ///   - state: the run's state when the caller knows better than the record (e.g.
    ///     ``RunRecord/effectiveState``: a runner that died); default the record's.
    ///   - now: when the report is made; bars of attempts still running end here.
    public static func html(
        for record: RunRecord, logTails: [String: LogTail] = [:], state: RunOutcome? = nil, now: Date = Date()
    ) -> String {
        let m = ReportModel(record: record, state: state, now: now)
        var o = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        o += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        o += "<title>Trellis run \(h(record.runID)) — \(h(m.state.rawValue))</title>\n<style>\(css)</style>\n</head>\n<body>\n"
        o += header(m)
        o += totals(m)
        o += "<section id=\"dag\"><h2>Steps: where each ran, and the data between them</h2>\n"
        o += "<p class=\"hint\">Each box is a step, coloured by the replica (node) it ran on; arrows carry the objects a step wrote to the steps reading them. A dashed arrow means the data was moved to another replica first.</p>\n"
        o += "<div class=\"figure\">" + dagSVG(m) + "</div></section>\n"
        o += failures(m, logTails: logTails)
        o += "<section id=\"timeline\"><h2>Timeline: every attempt</h2>\n"
        o += "<p class=\"hint\">One bar per attempt, on its step's row: the solid part is the step's process, hatching is inputs being moved to its replica, the pale rest is the runner (placement, data-plane calls, checking outputs). Hover a bar for its numbers.</p>\n"
        o += "<div class=\"figure\">" + timelineSVG(m) + "</div></section>\n"
        o += objectsTable(m)
        o += stepsTable(m)
        o += "<footer>Written by <code>trellis flow report</code> at \(h(stamp(now))) from the run record"
            + (m.state == .running ? " while the run was still going; write it again to see more" : "")
            + ". This file needs nothing else to be read.</footer>\n"
        o += "</body>\n</html>\n"
        return o
    }

    /// The DAG and the timeline alone, as one standalone SVG document (`--format svg`).
    public static func svg(for record: RunRecord, state: RunOutcome? = nil, now: Date = Date()) -> String {
        let m = ReportModel(record: record, state: state, now: now)
        let dag = dagSVG(m, inner: true)
        let tl = timelineSVG(m, inner: true)
        let title = "run \(record.runID) (flow \(record.spec.name)): \(m.state.rawValue)"
        let width = max(dag.width, tl.width)
        let height = 36 + dag.height + 16 + tl.height
        var o = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        o += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(n(width))\" height=\"\(n(height))\" viewBox=\"0 0 \(n(width)) \(n(height))\" font-family=\"\(fontFamily)\">\n"
        o += "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n"
        o += "<text x=\"16\" y=\"24\" font-size=\"16\" font-weight=\"600\" fill=\"#111\">\(h(title))</text>\n"
        o += "<g transform=\"translate(0,36)\">\(dag.body)</g>\n"
        o += "<g transform=\"translate(0,\(n(36 + dag.height + 16)))\">\(tl.body)</g>\n"
        o += "</svg>\n"
        return o
    }

    /// The size of the standalone SVG (for rasterising it).
    public static func svgSize(for record: RunRecord, state: RunOutcome? = nil, now: Date = Date()) -> (width: Int, height: Int) {
        let m = ReportModel(record: record, state: state, now: now)
        let dag = dagSVG(m, inner: true)
        let tl = timelineSVG(m, inner: true)
        return (Int(max(dag.width, tl.width).rounded(.up)), Int((36 + dag.height + 16 + tl.height).rounded(.up)))
    }

    // MARK: - Escaping and formatting

    /// Text made safe for HTML and SVG/XML text and attribute values: `& < > " '` as entities,
    /// ANSI colour sequences dropped, other control characters (not tab, newline) as U+FFFD.
    public static func h(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        var scalars = s.unicodeScalars.makeIterator()
        while let c = scalars.next() {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            case "\n", "\t": out.unicodeScalars.append(c)
            case "\r": break
            case "\u{1b}":
                // CSI sequences (colours, cursor moves): ESC [ params final-byte.
                if let next = scalars.next(), next == "[" {
                    while let p = scalars.next(), !(0x40...0x7e).contains(p.value) {}
                }
            default:
                if c.value < 0x20 || c.value == 0x7f || (0x80..<0xa0).contains(c.value) || c.value == 0xfffe
                    || c.value == 0xffff
                {
                    out += "\u{fffd}"
                } else {
                    out.unicodeScalars.append(c)
                }
            }
        }
        return out
    }

    static let fontFamily = "system-ui, -apple-system, &quot;Segoe UI&quot;, Roboto, &quot;DejaVu Sans&quot;, sans-serif"

    /// A number for SVG coordinates.
    static func n(_ v: Double) -> String { formatFixed(v, digits: 1) }

    /// Seconds for people: `85 ms`, `2.31 s`, `3m 05s`, `2h 03m`.
    public static func seconds(_ s: Double) -> String {
        if s < 0.001 { return "0 s" }
        if s < 1 { return "\(Int((s * 1000).rounded())) ms" }
        if s < 60 { return formatFixed(s, digits: s < 10 ? 2 : 1) + " s" }
        let t = Int(s.rounded())
        if t < 3600 { return "\(t / 60)m \(pad2(t % 60))s" }
        return "\(t / 3600)h \(pad2((t % 3600) / 60))m"
    }

    static func pad2(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }

    static func stamp(_ d: Date) -> String {
        d.formatted(Date.ISO8601FormatStyle(dateSeparator: .dash, dateTimeSeparator: .space, timeSeparator: .colon))
    }

    static func clip(_ s: String, _ max: Int) -> String {
        s.count <= max ? s : String(s.prefix(max - 1)) + "…"
    }

    // MARK: - Colours

    /// Replica colours (no red: red marks failures).
    static let palette = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7"]
    static let failRed = "#d62728"

    static func color(_ replica: Int?) -> String {
        guard let r = replica, r >= 0 else { return "#9aa0a6" }
        return palette[r % palette.count]
    }

    /// `hex` mixed with white (`amount` of white).
    static func tint(_ hex: String, _ amount: Double = 0.75) -> String {
        let v = Int(hex.dropFirst(), radix: 16) ?? 0x999999
        let parts = [(v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff].map { c -> Int in
            Int((Double(c) + (255 - Double(c)) * amount).rounded())
        }
        return "#" + parts.map { p in (p < 16 ? "0" : "") + String(p, radix: 16) }.joined()
    }

    static func replicaLabel(_ r: Int, _ record: RunRecord) -> String {
        if let node = record.replicas.first(where: { $0.index == r })?.node { return "r\(r) · \(node)" }
        return "r\(r)"
    }

    static func symbol(_ s: StepState) -> String { RunFormatter.symbol(s) }

    static func stateColor(_ s: StepState) -> String {
        switch s {
        case .succeeded: return "#1b7f3b"
        case .failed: return failRed
        case .running: return "#1f5fbf"
        case .upstreamFailed, .cancelled: return "#6b6b6b"
        case .pending: return "#8a8a8a"
        }
    }

    static func runStateColor(_ s: RunOutcome) -> String {
        switch s {
        case .succeeded: return "#1b7f3b"
        case .failed: return failRed
        case .running: return "#1f5fbf"
        case .cancelled: return "#6b6b6b"
        }
    }

    /// How an attempt or step ended, in words.
    static func ending(exitCode: Int32?, signal: Int32?, timedOut: Bool) -> String? {
        if timedOut { return "timed out" }
        if let s = signal { return "killed by signal \(s)" + (signalName(s).map { " (\($0))" } ?? "") }
        if let c = exitCode, c != 0 { return "exit \(c)" }
        return nil
    }

    static func signalName(_ s: Int32) -> String? {
        [1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL",
         11: "SIGSEGV", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM"][s]
    }

    // MARK: - Sections

    static func header(_ m: ReportModel) -> String {
        let r = m.record
        var o = "<header>\n<h1>Run <code>\(h(r.runID))</code> <span class=\"badge\" id=\"run-state\" data-state=\"\(m.state.rawValue)\" style=\"background:\(runStateColor(m.state))\">\(h(m.state.rawValue))</span></h1>\n"
        var facts = ["flow <b>\(h(r.spec.name))</b>", "\(r.steps.count) step\(r.steps.count == 1 ? "" : "s") on \(r.replicas.count) replica\(r.replicas.count == 1 ? "" : "s")"]
        facts.append("started \(h(stamp(r.startedAt)))")
        if let f = r.finishedAt { facts.append("finished \(h(stamp(f)))") } else if m.state == .running { facts.append("still running") }
        if r.resumes > 0 { facts.append("resumed \(r.resumes)× (first run \(h(stamp(r.createdAt))))") }
        o += "<p class=\"sub\">" + facts.joined(separator: " · ") + "</p>\n"
        if !r.replicas.isEmpty {
            o += "<p class=\"sub replicas\">"
            o += r.replicas.map { rep in
                "<span class=\"swatch\" style=\"background:\(color(rep.index))\"></span>replica \(rep.index)"
                    + (rep.node.map { " on node <b>\(h($0))</b>" + (rep.host.map { " (\(h($0)))" } ?? "") } ?? "")
            }.joined(separator: " &nbsp; ")
            o += "</p>\n"
        }
        if let msg = r.message, !msg.isEmpty {
            o += "<pre class=\"message\" data-state=\"\(m.state.rawValue)\">\(h(msg))</pre>\n"
        }
        o += "</header>\n"
        return o
    }

    static func totals(_ m: ReportModel) -> String {
        let t = m.totals
        var cards: [(String, String, String)] = []  // id, label, value html
        var wall = seconds(t.wallSeconds)
        if m.record.resumes > 0 { wall += "<small>this invocation; \(h(seconds(t.activeSeconds))) active over all</small>" }
        if m.state == .running { wall += "<small>so far</small>" }
        cards.append(("wall", "Wall time", wall))
        let stateParts = StepState.allCases.compactMap { s in
            t.stepStates[s].map { "<span style=\"color:\(stateColor(s))\">\(symbol(s)) \($0) \(s.rawValue)</span>" }
        }
        cards.append(("steps", "Steps", stateParts.joined(separator: "<br>")))
        cards.append(("attempts", "Attempts", "\(t.attempts)"))
        cards.append((
            "handoff", "Handoff time",
            seconds(t.handoffSeconds) + "<small>put + get in the steps + moves between replicas</small>"))
        cards.append((
            "moved", "Bytes moved",
            ByteSize.format(t.movedBytes) + "<small>between replicas, in \(h(seconds(t.moveSeconds)))</small>"))
        cards.append(("produced", "Data produced", ByteSize.format(t.producedBytes) + "<small>\(m.objects.count) object\(m.objects.count == 1 ? "" : "s")</small>"))
        cards.append((
            "overhead", "Runner overhead",
            seconds(t.overheadSeconds) + "<small>outside the steps' processes (\(h(seconds(t.processSeconds))) in them)</small>"))
        if let peaks = t.peakMemory, !peaks.isEmpty {
            let rows = peaks.map { p in
                "<span class=\"swatch\" style=\"background:\(color(p.replica))\"></span>\(h(replicaLabel(p.replica, m.record))): "
                    + ByteSize.format(p.usedBytes) + (p.limitBytes > 0 ? " of \(ByteSize.format(p.limitBytes))" : "")
            }
            cards.append(("peak", "Peak memory per replica", rows.joined(separator: "<br>") + "<small>arena in use, seen when steps ended</small>"))
        } else {
            cards.append(("peak", "Peak memory per replica", "—<small>not recorded for this run</small>"))
        }
        var o = "<section id=\"totals\" class=\"cards\">\n"
        for (id, label, value) in cards {
            o += "<div class=\"card\" id=\"total-\(id)\"><div class=\"label\">\(label)</div><div class=\"value\">\(value)</div></div>\n"
        }
        return o + "</section>\n"
    }

    static func failures(_ m: ReportModel, logTails: [String: LogTail]) -> String {
        let failedSteps = m.record.steps.filter { s in
            s.state == .failed || m.attempts(of: s.name).contains { $0.outcome == "failed" }
        }
        let notRun = m.record.steps.filter { $0.state == .upstreamFailed }
        guard !failedSteps.isEmpty || !notRun.isEmpty else { return "" }
        var o = "<section id=\"failures\"><h2>Failures</h2>\n"
        for s in failedSteps {
            let finalFail = s.state == .failed
            o += "<div class=\"failure\" data-step=\"\(h(s.name))\" data-final=\"\(finalFail)\">\n"
            o += "<h3><span style=\"color:\(finalFail ? failRed : stateColor(s.state))\">\(symbol(s.state))</span> <code>\(h(s.name))</code> — "
                + (finalFail ? "failed" : "\(h(s.state.rawValue)) after failed attempts") + "</h3>\n<ul>\n"
            for a in m.attempts(of: s.name) {
                var parts: [String] = ["attempt \(a.attempt)", "replica \(h(replicaLabel(a.replica, m.record)))"]
                if a.invocation > 0 { parts.append("resume \(a.invocation)") }
                parts.append(a.outcome)
                if let e = ending(exitCode: a.exitCode, signal: a.signal, timedOut: a.timedOut) { parts.append("<b>\(h(e))</b>") }
                parts.append("after \(h(seconds(a.seconds)))")
                let said = ending(exitCode: a.exitCode, signal: a.signal, timedOut: a.timedOut)
                // The runner's message often is just the exit status, already said.
                let plain = [said, a.exitCode.map { "exit \($0)" }, a.signal.map { "signal \($0)" }].compactMap { $0 }
                let message = a.message.flatMap { plain.contains($0) ? nil : $0 }
                o += "<li data-attempt=\"\(a.attempt)\" data-outcome=\"\(h(a.outcome))\">" + parts.joined(separator: " · ")
                    + (message.map { ": \(h($0))" } ?? "") + "</li>\n"
            }
            o += "</ul>\n"
            if let tail = logTails[s.name], !(tail.stderr.isEmpty && tail.stdout.isEmpty) {
                if !tail.stderr.isEmpty {
                    o += "<div class=\"log-label\">end of its log (stderr)</div><pre class=\"log-tail\" data-step=\"\(h(s.name))\" data-stream=\"stderr\">\(h(tail.stderr))</pre>\n"
                }
                if !tail.stdout.isEmpty {
                    o += "<div class=\"log-label\">end of its output (stdout)</div><pre class=\"log-tail\" data-step=\"\(h(s.name))\" data-stream=\"stdout\">\(h(tail.stdout))</pre>\n"
                }
            } else {
                o += "<p class=\"hint\">No log output.</p>\n"
            }
            o += "<p class=\"hint\">Full logs: <code>trellis flow logs \(h(m.record.runID)) \(h(s.name))</code></p>\n</div>\n"
        }
        if !notRun.isEmpty {
            o += "<p class=\"not-run\">Not run because a step they need failed: "
                + notRun.map { "<code>\(h($0.name))</code>" }.joined(separator: ", ") + "</p>\n"
        }
        return o + "</section>\n"
    }

    static func objectsTable(_ m: ReportModel) -> String {
        guard !m.objects.isEmpty else { return "" }
        let origin = m.record.createdAt
        func rel(_ d: Date?) -> String {
            guard let d else { return "—" }
            return "<span title=\"\(h(stamp(d)))\">+\(h(seconds(d.timeIntervalSince(origin))))</span>"
        }
        var o = "<section id=\"objects\"><h2>Objects</h2>\n"
        o += "<p class=\"hint\">What the steps handed each other. Times are from the run's start (\(h(stamp(origin)))); hover for the clock time.</p>\n"
        o += "<table><thead><tr><th>object</th><th>type</th><th class=\"num\">size</th><th>producer</th><th>consumers</th><th>lived on</th><th>created</th><th>freed</th><th class=\"num\">moved</th></tr></thead><tbody>\n"
        for ob in m.objects {
            let lived = ob.replicas.map { r in
                "<span class=\"swatch\" style=\"background:\(color(r))\"></span>\(h(replicaLabel(r, m.record)))"
            }.joined(separator: ", ")
            let freed: String
            if let f = ob.freed {
                freed = rel(f)
            } else if ob.resident {
                freed = "<i>still in the store</i>"
            } else if ob.bytes == nil && ob.created == nil {
                freed = "—"
            } else if m.record.freedEarly?.contains(ob.name) == true {
                freed = "after its last consumer"
            } else {
                freed = "—"
            }
            let consumers = ob.consumers.map { c -> String in
                let st = m.record.step(c)?.state ?? .pending
                return "<span style=\"color:\(stateColor(st))\" title=\"\(h(st.rawValue))\">\(symbol(st))</span> \(h(c))"
            }.joined(separator: ", ")
            o += "<tr class=\"object\" data-object=\"\(h(ob.name))\"><td><code>\(h(ob.name))</code></td><td>\(h(ob.type ?? "—"))</td>"
            o += "<td class=\"num\">\(ob.bytes.map { ByteSize.format($0) } ?? "not produced")</td><td>\(h(ob.producer))</td>"
            o += "<td>\(consumers.isEmpty ? "—" : consumers)</td><td>\(lived.isEmpty ? "—" : lived)</td>"
            o += "<td>\(rel(ob.created))</td><td>\(freed)</td><td class=\"num\">\(ob.movedBytes > 0 ? ByteSize.format(ob.movedBytes) : "—")</td></tr>\n"
        }
        return o + "</tbody></table></section>\n"
    }

    static func stepsTable(_ m: ReportModel) -> String {
        var o = "<section id=\"steps\"><h2>Steps</h2>\n<table><thead><tr><th>step</th><th>state</th><th>replica</th><th>why there</th>"
        o += "<th class=\"num\">attempts</th><th class=\"num\">duration</th><th class=\"num\">process</th><th class=\"num\">moves</th>"
        o += "<th class=\"num\">runner</th><th class=\"num\">put / get</th><th class=\"num\">input local / moved</th><th class=\"num\">output</th></tr></thead><tbody>\n"
        for s in m.record.steps {
            let local = s.inputs.reduce(0) { $0 + $1.localBytes }
            let moved = s.inputs.reduce(0) { $0 + $1.movedBytes }
            let out = s.outputs.reduce(0) { $0 + $1.bytes }
            let put = s.metrics["put_seconds"]
            let get = s.metrics["get_seconds"]
            let rep = s.replica.map { "<span class=\"swatch\" style=\"background:\(color($0))\"></span>\(h(replicaLabel($0, m.record)))" } ?? "—"
            var state = "<span style=\"color:\(stateColor(s.state))\">\(symbol(s.state)) \(h(s.state.rawValue))</span>"
            if s.reused { state += " <small>(reused)</small>" }
            o += "<tr class=\"step-row\" data-step=\"\(h(s.name))\"><td><code>\(h(s.name))</code></td><td>\(state)</td><td>\(rep)</td>"
            o += "<td>\(h(s.placementReason?.rawValue ?? "—"))</td><td class=\"num\">\(s.attempts)</td>"
            o += "<td class=\"num\">\(s.duration.map { h(seconds($0)) } ?? "—")</td><td class=\"num\">\(s.processSeconds.map { h(seconds($0)) } ?? "—")</td>"
            o += "<td class=\"num\">\(s.inputs.contains { $0.movedBytes > 0 } ? h(seconds(s.inputs.reduce(0) { $0 + $1.moveSeconds })) : "—")</td>"
            o += "<td class=\"num\">\(s.overhead.map { h(seconds($0)) } ?? "—")</td>"
            o += "<td class=\"num\">\(put == nil && get == nil ? "—" : "\(h(seconds(put ?? 0))) / \(h(seconds(get ?? 0)))")</td>"
            o += "<td class=\"num\">\(s.inputs.isEmpty ? "—" : "\(ByteSize.format(local)) / \(ByteSize.format(moved))")</td>"
            o += "<td class=\"num\">\(s.outputs.isEmpty ? "—" : ByteSize.format(out))</td></tr>\n"
        }
        return o + "</tbody></table></section>\n"
    }

    // MARK: - The DAG

    static func dagSVG(_ m: ReportModel) -> String {
        let d = dagSVG(m, inner: true)
        return "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"dag\" width=\"\(n(d.width))\" height=\"\(n(d.height))\" viewBox=\"0 0 \(n(d.width)) \(n(d.height))\" font-family=\"\(fontFamily)\" role=\"img\" aria-label=\"the flow's steps and their data\">\(d.body)</svg>"
    }

    static func dagSVG(_ m: ReportModel, inner: Bool) -> (body: String, width: Double, height: Double) {
        let layout = DAGLayout(nodes: m.record.steps.map(\.name), edges: m.edges.map { ($0.from, $0.to) })
        let mt = layout.metrics
        var o = "<defs><marker id=\"dag-arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>\n"
        // Edges first, under the boxes.
        for e in m.edges {
            guard let le = layout.edges.first(where: { $0.from == e.from && $0.to == e.to }) else { continue }
            let consumer = m.record.step(e.to)
            let movedBytes = consumer?.inputs.filter { e.objects.contains($0.name) }.reduce(0) { $0 + $1.movedBytes } ?? 0
            var pts: [DAGLayout.Point] = [le.points[0]]
            for p in le.points.dropFirst().dropLast() {  // through a layer: along where a box would be
                pts.append(DAGLayout.Point(x: p.x - mt.nodeWidth / 2, y: p.y))
                pts.append(DAGLayout.Point(x: p.x + mt.nodeWidth / 2, y: p.y))
            }
            pts.append(le.points[le.points.count - 1])
            var path = "M\(n(pts[0].x)),\(n(pts[0].y))"
            for i in 1..<pts.count {
                let a = pts[i - 1]
                let b = pts[i]
                if i % 2 == 0 && pts.count > 2 && a.y == b.y {
                    path += " L\(n(b.x)),\(n(b.y))"
                } else {
                    let dx = (b.x - a.x) / 2
                    path += " C\(n(a.x + dx)),\(n(a.y)) \(n(b.x - dx)),\(n(b.y)) \(n(b.x)),\(n(b.y))"
                }
            }
            let movedStyle = movedBytes > 0 ? " stroke-dasharray=\"7 5\" stroke=\"#333\"" : " stroke=\"#888\""
            o += "<g class=\"edge\" data-from=\"\(h(e.from))\" data-to=\"\(h(e.to))\" data-moved-bytes=\"\(movedBytes)\">"
            o += "<title>\(h(e.from)) → \(h(e.to))" + (e.objects.isEmpty ? " (runs after)" : ": \(h(e.objects.joined(separator: ", ")))")
                + (movedBytes > 0 ? "; \(ByteSize.format(movedBytes)) moved to replica \(consumer?.replica.map(String.init) ?? "?")" : "") + "</title>"
            o += "<path d=\"\(path)\" fill=\"none\" stroke-width=\"1.8\"\(movedStyle) marker-end=\"url(#dag-arrow)\"/>"
            // Label: on a direct edge, 40% along its curve (edges converging on one step part
            // there); on a long one, in the middle of its middle stretch.
            let k = (pts.count - 1) / 2
            var lx = (pts[k].x + pts[k + 1].x) / 2
            var ly = (pts[k].y + pts[k + 1].y) / 2
            if pts.count == 2 {
                let t = 0.4
                lx = pts[0].x + (pts[1].x - pts[0].x) * (1.5 * t * (1 - t) + t * t * t)
                ly = pts[0].y + (pts[1].y - pts[0].y) * (3 * t * t - 2 * t * t * t)
            }
            var lines: [String] = []
            if !e.objects.isEmpty { lines.append(clip(e.objects.joined(separator: ", "), 22)) }
            let bytes = e.objects.compactMap { name in m.objects.first { $0.name == name }?.bytes }.reduce(0, +)
            if bytes > 0 { lines.append(ByteSize.format(bytes)) }
            if movedBytes > 0 { lines.append("moved \(ByteSize.format(movedBytes))") }
            for (i, line) in lines.enumerated() {
                let y = ly - Double(lines.count) * 6.5 + 10 + Double(i) * 13
                o += "<text x=\"\(n(lx))\" y=\"\(n(y))\" text-anchor=\"middle\" font-size=\"11\" fill=\"\(i == 2 || line.hasPrefix("moved") ? "#333" : "#444")\" stroke=\"#fff\" stroke-width=\"4\" paint-order=\"stroke\">\(h(line))</text>"
            }
            o += "</g>\n"
        }
        for s in m.record.steps {
            guard let node = layout.node(s.name) else { continue }
            let x = node.x - mt.nodeWidth / 2
            let y = node.y - mt.nodeHeight / 2
            let base = color(s.replica)
            let fill = s.replica == nil ? "#f1f3f4" : tint(base, 0.78)
            var stroke = s.replica == nil ? "#9aa0a6" : base
            var width = 1.5
            var dash = ""
            switch s.state {
            case .failed:
                stroke = failRed
                width = 3.5
            case .running:
                stroke = "#1f5fbf"
                width = 3
                dash = " stroke-dasharray=\"6 3\""
            case .upstreamFailed, .cancelled, .pending:
                dash = " stroke-dasharray=\"5 4\""
            case .succeeded: break
            }
            var detail = symbol(s.state) + " "
            switch s.state {
            case .succeeded: detail += s.duration.map { seconds($0) } ?? "succeeded"
            case .failed: detail += "failed" + (ending(exitCode: s.exitCode, signal: s.signal, timedOut: s.timedOut).map { " · \($0)" } ?? "")
            case .running: detail += "running" + (s.startedAt.map { " " + seconds(m.now.timeIntervalSince($0)) } ?? "")
            case .upstreamFailed: detail += "not run (upstream failed)"
            case .cancelled: detail += "cancelled"
            case .pending: detail += "pending"
            }
            if s.reused { detail = symbol(s.state) + " reused from before" }
            if s.attempts > 1 { detail += " · \(s.attempts) attempts" }
            let tip = "\(s.name): \(s.state.rawValue)" + (s.replica.map { " on \(replicaLabel($0, m.record))" } ?? "")
                + (s.placementReason.map { " (\($0.rawValue))" } ?? "") + (s.message.map { "\n\($0)" } ?? "")
            o += "<g class=\"step\" data-step=\"\(h(s.name))\" data-state=\"\(s.state.rawValue)\" data-replica=\"\(s.replica.map(String.init) ?? "")\">"
            o += "<title>\(h(tip))</title>"
            o += "<rect x=\"\(n(x))\" y=\"\(n(y))\" width=\"\(n(mt.nodeWidth))\" height=\"\(n(mt.nodeHeight))\" rx=\"8\" fill=\"\(fill)\" stroke=\"\(stroke)\" stroke-width=\"\(n(width))\"\(dash)/>"
            if let r = s.replica {
                let label = "r\(r)"
                let w = 8 + Double(label.count) * 7
                o += "<rect x=\"\(n(x + mt.nodeWidth - w - 6))\" y=\"\(n(y + 6))\" width=\"\(n(w))\" height=\"16\" rx=\"8\" fill=\"\(base)\"/>"
                o += "<text x=\"\(n(x + mt.nodeWidth - w / 2 - 6))\" y=\"\(n(y + 18))\" text-anchor=\"middle\" font-size=\"11\" font-weight=\"600\" fill=\"#fff\">\(label)</text>"
            }
            o += "<text class=\"step-name\" x=\"\(n(x + 10))\" y=\"\(n(y + 22))\" font-size=\"14\" font-weight=\"600\" fill=\"#111\">\(h(clip(s.name, s.replica == nil ? 22 : 18)))</text>"
            o += "<text class=\"step-detail\" x=\"\(n(x + 10))\" y=\"\(n(y + 42))\" font-size=\"12\" fill=\"\(stateColor(s.state))\">\(h(clip(detail, 27)))</text>"
            o += "</g>\n"
        }
        // Legend under the graph.
        let ly = layout.height + 8
        var lx = 12.0
        var legend = "<g class=\"legend\" font-size=\"12\" fill=\"#333\">"
        for rep in m.record.replicas {
            let label = "replica " + replicaLabel(rep.index, m.record).dropFirst()
            legend += "<rect x=\"\(n(lx))\" y=\"\(n(ly))\" width=\"14\" height=\"14\" rx=\"3\" fill=\"\(tint(color(rep.index), 0.78))\" stroke=\"\(color(rep.index))\" stroke-width=\"1.5\"/>"
            legend += "<text x=\"\(n(lx + 20))\" y=\"\(n(ly + 12))\">\(h(label))</text>"
            lx += 34 + Double(label.count) * 7
        }
        legend += "<rect x=\"\(n(lx))\" y=\"\(n(ly))\" width=\"14\" height=\"14\" rx=\"3\" fill=\"#fff\" stroke=\"\(failRed)\" stroke-width=\"3\"/>"
        legend += "<text x=\"\(n(lx + 20))\" y=\"\(n(ly + 12))\">failed</text>"
        lx += 80
        legend += "<rect x=\"\(n(lx))\" y=\"\(n(ly))\" width=\"14\" height=\"14\" rx=\"3\" fill=\"#f1f3f4\" stroke=\"#9aa0a6\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"/>"
        legend += "<text x=\"\(n(lx + 20))\" y=\"\(n(ly + 12))\">not run</text>"
        lx += 90
        legend += "<path d=\"M\(n(lx)),\(n(ly + 7)) h26\" stroke=\"#333\" stroke-width=\"1.8\" stroke-dasharray=\"7 5\"/>"
        legend += "<text x=\"\(n(lx + 32))\" y=\"\(n(ly + 12))\">data moved between replicas</text>"
        lx += 32 + 28 * 6.6
        legend += "</g>\n"
        o += legend
        return (o, max(layout.width, lx + 12), layout.height + 32)
    }

    // MARK: - The timeline

    static func timelineSVG(_ m: ReportModel) -> String {
        let t = timelineSVG(m, inner: true)
        return "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" width=\"\(n(t.width))\" height=\"\(n(t.height))\" viewBox=\"0 0 \(n(t.width)) \(n(t.height))\" font-family=\"\(fontFamily)\" role=\"img\" aria-label=\"timeline of every attempt\">\(t.body)</svg>"
    }

    /// Maps times to x over the spans, idle gaps between spans cut to `gap` pixels.
    struct TimeAxis {
        var spans: [ReportModel.Span]
        var left: Double
        var scale: Double
        var gap: Double
        var offsets: [Double]

        init(spans: [ReportModel.Span], left: Double, width: Double, gap: Double = 40) {
            self.spans = spans
            self.left = left
            self.gap = gap
            let active = spans.reduce(0) { $0 + max(0, $1.end.timeIntervalSince($1.start)) }
            let usable = max(50, width - gap * Double(max(0, spans.count - 1)))
            scale = active > 0 ? usable / active : 1
            var off: [Double] = []
            var x = left
            for s in spans {
                off.append(x)
                x += max(0, s.end.timeIntervalSince(s.start)) * scale + gap
            }
            offsets = off
        }

        func x(_ t: Date) -> Double {
            guard !spans.isEmpty else { return left }
            var k = 0
            for (i, s) in spans.enumerated() where t >= s.start { k = i }
            let s = spans[k]
            let dt = min(max(0, t.timeIntervalSince(s.start)), max(0, s.end.timeIntervalSince(s.start)))
            return offsets[k] + dt * scale
        }

        func width(of k: Int) -> Double { max(0, spans[k].end.timeIntervalSince(spans[k].start)) * scale }
    }

    /// A tick step of 1, 2 or 5 × 10ⁿ seconds giving at most `maxTicks` ticks over `seconds`.
    static func tickStep(_ seconds: Double, maxTicks: Int) -> Double {
        guard seconds > 0, maxTicks > 0 else { return 1 }
        let raw = seconds / Double(maxTicks)
        var p = 1e-3
        while p * 10 <= raw { p *= 10 }
        for f in [1.0, 2, 5, 10] where p * f >= raw { return p * f }
        return p * 10
    }

    static func timelineSVG(_ m: ReportModel, inner: Bool) -> (body: String, width: Double, height: Double) {
        let labelWidth = 190.0
        let plot = 880.0
        let rowH = 30.0
        let top = 44.0
        let width = labelWidth + plot + 90
        let steps = m.record.steps
        let axis = TimeAxis(spans: m.spans, left: labelWidth, width: plot)
        let rowsHeight = Double(max(1, steps.count)) * rowH
        var o = "<defs><pattern id=\"tl-hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#fff\"/><rect width=\"3\" height=\"6\" fill=\"#333\"/></pattern></defs>\n"
        // Span headings, gridlines and ticks.
        let origin = m.record.createdAt
        for (k, s) in m.spans.enumerated() {
            let x0 = axis.offsets[k]
            let w = axis.width(of: k)
            var heading = s.invocation == 0 ? "run" : "resume \(s.invocation)"
            if k > 0 { heading += " (+\(seconds(s.start.timeIntervalSince(origin))) after the first start)" }
            if m.spans.count > 1 {
                o += "<text x=\"\(n(x0))\" y=\"14\" font-size=\"12\" font-weight=\"600\" fill=\"#333\">\(h(clip(heading, max(8, Int(w / 6.5)))))</text>"
            }
            let span = s.end.timeIntervalSince(s.start)
            let step = tickStep(span, maxTicks: max(1, Int(w / 90)))
            var v = 0.0
            while v <= span + 1e-9 {
                let x = x0 + v * axis.scale
                o += "<line x1=\"\(n(x))\" y1=\"\(n(top - 6))\" x2=\"\(n(x))\" y2=\"\(n(top + rowsHeight))\" stroke=\"#e3e3e3\"/>"
                o += "<text x=\"\(n(x))\" y=\"\(n(top - 10))\" font-size=\"11\" fill=\"#666\" text-anchor=\"middle\">\(h(tickLabel(v, step)))</text>"
                v += step
            }
            if k > 0 {
                let gx = x0 - axis.gap / 2
                o += "<text x=\"\(n(gx))\" y=\"\(n(top + rowsHeight / 2))\" font-size=\"16\" fill=\"#999\" text-anchor=\"middle\">⋯</text>"
                o += "<line x1=\"\(n(gx))\" y1=\"\(n(top - 6))\" x2=\"\(n(gx))\" y2=\"\(n(top + rowsHeight))\" stroke=\"#bbb\" stroke-dasharray=\"2 3\"/>"
            }
        }
        // Where each resume began, when it is not the start of a span of its own.
        for inv in 1..<max(1, m.record.resumes + 1) {
            guard let first = m.attempts.filter({ $0.invocation == inv }).map(\.start).min(),
                !m.spans.contains(where: { $0.start == first })
            else { continue }
            let x = axis.x(first) - 2
            o += "<line class=\"resume-mark\" x1=\"\(n(x))\" y1=\"\(n(top - 4))\" x2=\"\(n(x))\" y2=\"\(n(top + rowsHeight))\" stroke=\"#1f5fbf\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"/>"
            o += "<text x=\"\(n(x + 4))\" y=\"\(n(top + rowsHeight + 12))\" font-size=\"11\" fill=\"#1f5fbf\">resume \(inv)</text>"
        }
        // Rows.
        for (i, s) in steps.enumerated() {
            let y = top + Double(i) * rowH
            if i % 2 == 0 {
                o += "<rect x=\"0\" y=\"\(n(y))\" width=\"\(n(width))\" height=\"\(n(rowH))\" fill=\"#000\" fill-opacity=\"0.025\"/>"
            }
            o += "<text class=\"row-label\" x=\"8\" y=\"\(n(y + rowH / 2 + 4))\" font-size=\"13\" fill=\"#111\"><tspan fill=\"\(stateColor(s.state))\">\(symbol(s.state))</tspan> \(h(clip(s.name, 22)))</text>"
            let attempts = m.attempts(of: s.name)
            if attempts.isEmpty {
                let why: String
                switch s.state {
                case .upstreamFailed: why = "not run: upstream failed"
                case .cancelled: why = "not run: cancelled"
                case .succeeded: why = s.reused ? "reused from an earlier invocation" : "no attempt recorded"
                default: why = "not started"
                }
                o += "<text x=\"\(n(labelWidth + 4))\" y=\"\(n(y + rowH / 2 + 4))\" font-size=\"11\" fill=\"#888\" font-style=\"italic\">\(h(why))</text>"
            }
            for a in attempts {
                o += attemptBar(a, axis: axis, y: y + 5, height: rowH - 10, record: m.record, limit: width - 4) + "\n"
            }
        }
        if m.spans.isEmpty {
            o += "<text x=\"\(n(labelWidth))\" y=\"\(n(top - 10))\" font-size=\"12\" fill=\"#888\">no attempt has started yet</text>"
        }
        // Legend.
        let ly = top + rowsHeight + (m.record.resumes > 0 ? 22 : 14)
        var lx = 8.0
        let sample = color(m.record.replicas.first?.index ?? 0)
        var lg = "<g class=\"legend\" font-size=\"12\" fill=\"#333\">"
        lg += "<rect x=\"\(n(lx))\" y=\"\(n(ly))\" width=\"22\" height=\"12\" fill=\"\(sample)\"/><text x=\"\(n(lx + 28))\" y=\"\(n(ly + 11))\">process (colour: replica)</text>"
        lx += 200
        lg += "<rect x=\"\(n(lx))\" y=\"\(n(ly))\" width=\"22\" height=\"12\" fill=\"url(#tl-hatch)\" stroke=\"#333\" stroke-width=\"0.5\"/><text x=\"\(n(lx + 28))\" y=\"\(n(ly + 11))\">moving inputs</text>"
        lx += 130
        lg += "<rect x=\"\(n(lx))\" y=\"\(n(ly))\" width=\"22\" height=\"12\" fill=\"\(tint(sample, 0.78))\" stroke=\"\(sample)\"/><text x=\"\(n(lx + 28))\" y=\"\(n(ly + 11))\">runner overhead, data-plane calls</text>"
        lx += 250
        lg += "<rect x=\"\(n(lx))\" y=\"\(n(ly))\" width=\"22\" height=\"12\" fill=\"#fff\" stroke=\"\(failRed)\" stroke-width=\"2.5\"/><text x=\"\(n(lx + 28))\" y=\"\(n(ly + 11))\">failed attempt</text>"
        lg += "</g>\n"
        o += lg
        return (o, width, ly + 24)
    }

    static func tickLabel(_ v: Double, _ step: Double) -> String {
        if v == 0 { return "0" }
        if step < 1 { return formatFixed(v, digits: step < 0.01 ? 3 : step < 0.1 ? 2 : 1) + "s" }
        if step < 60 || v < 60 { return "\(Int(v.rounded()))s" }
        let t = Int(v.rounded())
        return t % 60 == 0 ? "\(t / 60)m" : "\(t / 60)m\(pad2(t % 60))s"
    }

    static func attemptBar(
        _ a: ReportModel.Attempt, axis: TimeAxis, y: Double, height: Double, record: RunRecord, limit: Double
    ) -> String {
        let x0 = axis.x(a.start)
        let x1 = max(axis.x(a.end), x0 + 2)
        let c = color(a.replica)
        let failed = a.outcome == "failed"
        let cancelled = a.outcome == "cancelled"
        var tip = "\(a.step) — attempt \(a.attempt) on \(replicaLabel(a.replica, record))"
        if a.invocation > 0 { tip += " (resume \(a.invocation))" }
        tip += ": \(a.outcome), \(seconds(a.seconds))"
        var parts: [String] = []
        if !a.moves.isEmpty {
            parts.append(
                "moves " + a.moves.map { "\($0.name) \(ByteSize.format($0.bytes)) r\($0.from)→r\($0.to) in \(seconds($0.seconds))" }
                    .joined(separator: ", "))
        }
        if let p = a.processSeconds { parts.append("process \(seconds(p))") }
        if let ov = a.overhead { parts.append("runner \(seconds(ov))") }
        if let d = a.dataPlaneSeconds { parts.append("data plane \(seconds(d))") }
        if let e = ending(exitCode: a.exitCode, signal: a.signal, timedOut: a.timedOut) { parts.append(e) }
        if !parts.isEmpty { tip += "\n" + parts.joined(separator: "\n") }
        if let msg = a.message { tip += "\n" + msg }
        var o = "<g class=\"attempt\" data-step=\"\(h(a.step))\" data-attempt=\"\(a.attempt)\" data-outcome=\"\(h(a.outcome))\" data-replica=\"\(a.replica)\" data-invocation=\"\(a.invocation)\">"
        o += "<title>\(h(tip))</title>"
        o += "<rect class=\"bar\" x=\"\(n(x0))\" y=\"\(n(y))\" width=\"\(n(x1 - x0))\" height=\"\(n(height))\" rx=\"2\" fill=\"\(tint(c, 0.78))\" stroke=\"\(failed ? failRed : c)\" stroke-width=\"\(failed ? "2.5" : "1")\"\(cancelled ? " stroke-dasharray=\"3 2\"" : "")/>"
        for mv in a.moves {
            let mx0 = axis.x(mv.startedAt)
            let mx1 = max(axis.x(mv.startedAt.addingTimeInterval(mv.seconds)), mx0 + 1.5)
            o += "<rect class=\"move\" x=\"\(n(mx0))\" y=\"\(n(y + 2))\" width=\"\(n(mx1 - mx0))\" height=\"\(n(height - 4))\" fill=\"url(#tl-hatch)\"/>"
        }
        if let p = a.processSeconds, p > 0 {
            let start = a.processStart ?? a.start.addingTimeInterval(a.moves.reduce(0) { $0 + $1.seconds })
            let px0 = axis.x(start)
            let px1 = max(min(axis.x(start.addingTimeInterval(p)), x1), px0 + 1.5)
            o += "<rect class=\"process\" x=\"\(n(px0))\" y=\"\(n(y + 2))\" width=\"\(n(px1 - px0))\" height=\"\(n(height - 4))\" fill=\"\(c)\"/>"
        }
        var label = seconds(a.seconds)
        if failed { label = "✗ " + (ending(exitCode: a.exitCode, signal: a.signal, timedOut: a.timedOut) ?? "failed") + " · " + label }
        if a.running { label = "▶ " + label }
        if a.attempt > 1 { label = "#\(a.attempt) " + label }
        let labelWidth = Double(label.count) * 6.4
        let right = x1 + 5 + labelWidth <= limit || x0 - 5 - labelWidth < axis.left
        o += "<text x=\"\(n(right ? x1 + 5 : x0 - 5))\" y=\"\(n(y + height / 2 + 4))\" font-size=\"11\"\(right ? "" : " text-anchor=\"end\"") fill=\"\(failed ? failRed : "#333")\">\(h(label))</text>"
        return o + "</g>"
    }

    // MARK: - Style

    static let css = """
        body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px 32px;color:#1a1a1a;background:#fff;line-height:1.4}
        h1{font-size:24px;margin:0 0 6px}h1 code{font-size:22px}
        h2{font-size:18px;margin:28px 0 6px;border-bottom:1px solid #e5e5e5;padding-bottom:4px}
        h3{font-size:15px;margin:8px 0 4px}
        code{font-family:ui-monospace,"DejaVu Sans Mono",monospace}
        .badge{display:inline-block;color:#fff;border-radius:12px;padding:2px 12px;font-size:14px;vertical-align:middle}
        .sub{color:#444;margin:2px 0}
        .hint{color:#666;font-size:13px;margin:4px 0 8px}
        .swatch{display:inline-block;width:11px;height:11px;border-radius:3px;margin-right:4px;vertical-align:baseline}
        pre.message{background:#fafafa;border-left:4px solid #bbb;padding:8px 12px;white-space:pre-wrap;font-size:13px}
        pre.message[data-state=failed]{border-left-color:#d62728;background:#fff5f5}
        .cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:16px}
        .card{border:1px solid #e3e3e3;border-radius:8px;padding:8px 14px;min-width:150px}
        .card .label{font-size:12px;color:#666;text-transform:uppercase;letter-spacing:.04em}
        .card .value{font-size:20px;font-weight:600}
        .card .value small{display:block;font-size:11px;font-weight:400;color:#777}
        #total-steps .value,#total-peak .value{font-size:14px}
        .figure{overflow-x:auto}
        .failure{border:1px solid #f1c0c0;border-left:5px solid #d62728;border-radius:6px;padding:6px 14px;margin:10px 0;background:#fffafa}
        .failure[data-final=false]{border-color:#e3d3a8;border-left-color:#c98e00;background:#fffdf5}
        .failure ul{margin:4px 0;padding-left:20px;font-size:13px}
        .log-label{font-size:12px;color:#666;margin-top:6px}
        pre.log-tail{background:#1e1e1e;color:#eee;padding:8px 12px;border-radius:4px;font-size:12px;max-height:320px;overflow:auto;white-space:pre-wrap;word-break:break-all}
        table{border-collapse:collapse;font-size:13px;margin-top:6px}
        th,td{border-bottom:1px solid #eee;padding:4px 10px;text-align:left;vertical-align:top}
        th{background:#f6f6f6;font-weight:600}
        td.num,th.num{text-align:right;white-space:nowrap}
        footer{margin-top:32px;color:#888;font-size:12px}
        """
}
