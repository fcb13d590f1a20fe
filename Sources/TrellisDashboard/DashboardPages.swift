import Foundation
import TrellisClient
import TrellisFlow

/// The dashboard's HTML pages, as pure functions of what ``DashboardSource`` read: no I/O,
/// no clock unless given, no JavaScript. Each escapes every string it did not write itself.
public enum DashboardPages {
    /// Seconds between reloads of a page that shows something still changing.
    public static let refreshSeconds = 3

    // MARK: - Index

    /// `/`: the runtime (replicas and their arenas) and the runs.
    public static func index(runtime: RuntimeView, runs: [RunSummary], home: String, now: Date = Date()) -> String {
        var body = "<h1>Trellis</h1>\n"
        body += "<p class=\"muted\">home <code>\(HTML.escape(home))</code> · updated "
            + HTML.escape(now.formatted(Date.ISO8601FormatStyle())) + " · every \(refreshSeconds * 2)s</p>\n"
        body += runtimeSection(runtime)
        body += runsSection(runs)
        return page(title: "Trellis dashboard", body: body, refresh: refreshSeconds * 2)
    }

    static func runtimeSection(_ view: RuntimeView) -> String {
        var h = "<section id=\"runtime\">\n<h2>Runtime</h2>\n"
        guard let s = view.status.state else {
            h += "<p class=\"empty\">No runtime is up (<code>trellis runtime up</code> starts one; "
                + "<code>trellis flow run</code> starts one for its run).</p>\n</section>\n"
            return h
        }
        let up = view.status.isUp
        h += "<p><strong>\(HTML.escape(s.id))</strong> " + badge(up ? "up" : "degraded")
            + " \(s.replicas.count) replica(s) of \(HTML.escape(s.spec.size)), medium \(HTML.escape(s.spec.medium.rawValue))"
            + (s.ephemeral ? ", started for a run" : "")
            + ", since " + HTML.escape(s.startedAt.formatted(Date.ISO8601FormatStyle())) + "</p>\n"
        var facts: [String] = []
        if let e = s.etcd {
            facts.append("etcd " + badge(view.status.etcdAlive == true ? "up" : "down") + " pid \(e.process.pid) <code>\(HTML.escape(e.endpoint))</code>")
        }
        if let z = s.zygote {
            facts.append("python zygote pid \(z.process.pid) <code>\(HTML.escape(z.interpreter))</code>")
        }
        if let n = s.netns {
            facts.append("network: bridge <code>\(HTML.escape(n.bridge))</code> \(HTML.escape(n.subnet)).0/24")
        }
        if !s.keptFor.isEmpty {
            facts.append("holding intermediates of " + s.keptFor.map { HTML.link(HTML.runURL($0), $0) }.joined(separator: ", "))
        }
        if !facts.isEmpty { h += "<ul class=\"facts\">" + facts.map { "<li>\($0)</li>" }.joined() + "</ul>\n" }
        h += """
            <table class="replicas">
            <thead><tr><th>replica</th><th>node · rpc</th><th>state</th><th>pid</th><th>arena</th><th>used</th><th>free</th>\
            <th>largest free block</th><th>fragmentation</th><th>spilled</th><th>objects</th><th>blobs</th><th>clients</th></tr></thead>
            <tbody>

            """
        for r in view.replicas { h += replicaRow(r) }
        h += "</tbody>\n</table>\n</section>\n"
        return h
    }

    static func replicaRow(_ r: ReplicaView) -> String {
        // A node's name (namespace nodes, Kubernetes), and where its RPC listens.
        let place = [r.replica.node, r.replica.rpcEndpoint].compactMap { $0 }.joined(separator: " · ")
        var h = "<tr data-replica=\"\(r.replica.index)\" class=\"\(r.isUp ? "up" : "down")\">"
        h += "<td title=\"\(HTML.escape(r.replica.socket))\">r\(r.replica.index)</td><td>\(place.isEmpty ? "–" : HTML.escape(place))</td>"
        guard let s = r.probe.status else {
            var why = ""
            if case .unreachable(let e) = r.probe { why = e }
            h += "<td>" + badge("down") + "</td><td>\(r.pid.map(String.init) ?? "–")</td>"
            h += "<td colspan=\"9\" class=\"error\" data-field=\"error\">\(HTML.escape(why))</td></tr>\n"
            return h
        }
        let free = s.freeBytes ?? max(0, s.memoryLimit - s.memoryUsage)
        let usedShare = s.memoryLimit > 0 ? Double(s.memoryUsage) / Double(s.memoryLimit) : 0
        h += "<td>" + badge(r.alive ? "up" : "degraded") + "</td><td>\(r.pid.map(String.init) ?? "–")</td>"
        h += bytesCell("memory_limit", s.memoryLimit, extra: s.pages.map { " <span class=\"muted\">\(HTML.escape($0))</span>" } ?? "")
        h += "<td data-field=\"memory_usage\" data-value=\"\(s.memoryUsage)\">\(ByteSize.format(s.memoryUsage))"
            + " <span class=\"muted\">\(percent(usedShare))</span>"
            + "<div class=\"bar\" role=\"img\" aria-label=\"\(percent(usedShare)) used\"><span style=\"width:\(String(format: "%.1f", usedShare * 100))%\"></span></div></td>"
        h += bytesCell("free_bytes", free)
        h += s.largestFreeBlock.map { bytesCell("largest_free_block", $0) } ?? "<td>–</td>"
        h += s.fragmentation.map { "<td data-field=\"fragmentation\" data-value=\"\($0)\">\(percent($0))</td>" } ?? "<td>–</td>"
        h += bytesCell("spilled_bytes", s.spilledBytes ?? 0)
        h += countCell("objects", s.objects) + countCell("blobs", s.blobs)
        h += "<td data-field=\"ipc_connections\" data-value=\"\(s.ipcConnections)\">\(s.ipcConnections) ipc, \(s.rpcConnections) rpc</td>"
        return h + "</tr>\n"
    }

    static func runsSection(_ runs: [RunSummary]) -> String {
        var h = "<section id=\"runs\">\n<h2>Runs</h2>\n"
        guard !runs.isEmpty else {
            return h + "<p class=\"empty\">No runs yet (<code>trellis flow run FLOW.yaml</code>).</p>\n</section>\n"
        }
        h += """
            <table class="runs">
            <thead><tr><th>run</th><th>flow</th><th>state</th><th>progress</th><th>created</th><th>duration</th><th>objects</th></tr></thead>
            <tbody>

            """
        for r in runs {
            let total = r.counts.values.reduce(0, +)
            let done = r.counts[StepState.succeeded.rawValue] ?? 0
            h += "<tr data-run=\"\(HTML.escape(r.runID))\" data-state=\"\(r.state.rawValue)\">"
            h += "<td>" + HTML.link(HTML.runURL(r.runID), r.runID) + "</td>"
            h += "<td>\(HTML.escape(r.flow))</td><td>" + badge(r.state.rawValue) + "</td>"
            h += "<td>" + progress(done: done, total: total) + " " + countsText(r.counts) + "</td>"
            h += "<td>" + HTML.escape(r.createdAt.formatted(Date.ISO8601FormatStyle())) + "</td>"
            h += "<td>" + (r.duration.map { seconds($0) } ?? "–") + "</td>"
            h += "<td>" + (r.objectsKept ? "kept" : "–") + "</td></tr>\n"
        }
        return h + "</tbody>\n</table>\n</section>\n"
    }

    // MARK: - Run

    /// `/runs/<id>`: a run's state, progress and steps, reloading while it runs.
    /// `hasReport`: link the full report page.
    public static func run(_ record: RunRecord, now: Date = Date(), hasReport: Bool = false) -> String {
        let state = record.effectiveState
        let live = state == .running
        let done = record.steps.filter { $0.state == .succeeded }.count
        var h = "<p class=\"crumbs\">" + HTML.link("/", "dashboard") + " / run</p>\n"
        h += "<h1>\(HTML.escape(record.runID)) " + badge(state.rawValue) + "</h1>\n"
        var facts = [
            "flow <strong>\(HTML.escape(record.spec.name))</strong>",
            "\(record.steps.count) step(s) on \(record.replicas.count) replica(s)",
            "created " + HTML.escape(record.createdAt.formatted(Date.ISO8601FormatStyle())),
        ]
        if let d = record.duration {
            facts.append("took " + seconds(d))
        } else if live {
            facts.append("running for " + seconds(now.timeIntervalSince(record.startedAt)))
        }
        if record.resumes > 0 { facts.append("resumed \(record.resumes)×") }
        if record.objectsKept { facts.append("objects kept in the store") }
        h += "<ul class=\"facts\">" + facts.map { "<li>\($0)</li>" }.joined() + "</ul>\n"
        h += "<p>" + progress(done: done, total: record.steps.count) + " \(done) of \(record.steps.count) steps succeeded</p>\n"
        if let m = record.message { h += "<p class=\"message\">\(HTML.escape(m))</p>\n" }
        var links = [HTML.link("/api" + HTML.runURL(record.runID), "JSON")]
        if hasReport { links.insert(HTML.link(HTML.runURL(record.runID) + "/report", "full report"), at: 0) }
        h += "<p class=\"links\">" + links.joined(separator: " · ") + "</p>\n"
        h += """
            <table class="steps">
            <thead><tr><th>step</th><th>state</th><th>replica</th><th>attempts</th><th>duration</th><th>inputs</th>\
            <th>outputs</th><th>exit</th><th>message</th><th>log</th></tr></thead>
            <tbody>

            """
        for s in record.steps {
            h += "<tr data-step=\"\(HTML.escape(s.name))\" data-state=\"\(s.state.rawValue)\">"
            h += "<td>\(HTML.escape(s.name))</td><td>" + badge(s.state.rawValue) + "</td>"
            h += "<td>" + (s.replica.map { "r\($0)" } ?? "–")
                + (s.placementReason.map { " <span class=\"muted\">\(HTML.escape($0.rawValue))</span>" } ?? "") + "</td>"
            h += "<td>\(s.attempts)</td>"
            if s.state == .running, let start = s.startedAt {
                h += "<td>" + seconds(now.timeIntervalSince(start)) + "…</td>"
            } else {
                h += "<td>" + (s.duration.map { seconds($0) } ?? "–") + "</td>"
            }
            let local = s.inputs.reduce(0) { $0 + $1.localBytes }, moved = s.inputs.reduce(0) { $0 + $1.movedBytes }
            h += "<td>" + (s.inputs.isEmpty ? "–" : ByteSize.format(local) + " local" + (moved > 0 ? ", " + ByteSize.format(moved) + " moved" : "")) + "</td>"
            h += "<td>" + (s.outputs.isEmpty ? "–" : s.outputs.map { HTML.escape($0.name) + " " + ByteSize.format($0.bytes) }.joined(separator: ", ")) + "</td>"
            h += "<td>" + exitText(s) + "</td>"
            h += "<td>" + (s.message.map(HTML.escape) ?? "") + "</td>"
            h += "<td>" + HTML.link(HTML.stepURL(record.runID, s.name), s.state == .running ? "follow" : "log") + "</td></tr>\n"
        }
        h += "</tbody>\n</table>\n"
        return page(title: "\(record.runID) · Trellis", body: h, refresh: live ? refreshSeconds : nil)
    }

    // MARK: - Step log

    /// `/runs/<id>/steps/<step>`: the step's output (the end of each log), reloading and
    /// scrolling to the end while the step can still write.
    public static func stepLog(_ record: RunRecord, step: StepRecord, stdout: LogExcerpt, stderr: LogExcerpt) -> String {
        let live = !step.state.isTerminal && record.effectiveState == .running
        var h = "<p class=\"crumbs\">" + HTML.link("/", "dashboard") + " / " + HTML.link(HTML.runURL(record.runID), record.runID)
            + " / step</p>\n"
        h += "<h1>\(HTML.escape(step.name)) " + badge(step.state.rawValue) + "</h1>\n"
        var facts = ["attempts \(step.attempts)"]
        if let r = step.replica { facts.append("replica r\(r)") }
        if step.exitCode != nil || step.signal != nil || step.timedOut { facts.append(exitText(step)) }
        if let d = step.duration { facts.append("took " + seconds(d)) }
        h += "<ul class=\"facts\">" + facts.map { "<li>\($0)</li>" }.joined() + "</ul>\n"
        if let m = step.message { h += "<p class=\"message\">\(HTML.escape(m))</p>\n" }
        if live {
            h += "<p class=\"muted\">following: this page reloads every \(refreshSeconds)s until the step ends · "
                + HTML.link("#end", "to the end") + " · "
                + HTML.link(HTML.logURL(record.runID, step.name, "stdout") + "?follow=1", "stdout as a live stream") + "</p>\n"
        }
        for (name, excerpt) in [("stdout", stdout), ("stderr", stderr)] {
            let url = HTML.logURL(record.runID, step.name, name)
            h += "<h2>\(name) <span class=\"muted\">" + HTML.link(url, "plain text") + "</span></h2>\n"
            if excerpt.omittedBytes > 0 {
                h += "<p class=\"muted\">the first \(ByteSize.format(excerpt.omittedBytes)) are not shown</p>\n"
            }
            h += excerpt.text.isEmpty
                ? "<p class=\"empty\" id=\"\(name)-empty\">(empty)</p>\n"
                : "<pre id=\"\(name)\">\(HTML.escape(excerpt.text))</pre>\n"
        }
        h += "<p id=\"end\"></p>\n"
        // A plain reload (the browser keeps the scroll position): a refresh to `…#end` would
        // be a same-document fragment navigation, which does not reload at all.
        return page(title: "\(step.name) · \(record.runID) · Trellis", body: h, refresh: live ? refreshSeconds : nil)
    }

    // MARK: - Errors

    /// A short page for 404 and 405.
    public static func problem(_ title: String, _ detail: String) -> String {
        page(title: title, body: "<p class=\"crumbs\">" + HTML.link("/", "dashboard") + "</p>\n<h1>\(HTML.escape(title))</h1>\n<p>\(HTML.escape(detail))</p>\n")
    }

    // MARK: - Pieces

    /// The page around `body` (which must already be escaped HTML).
    static func page(title: String, body: String, refresh: Int? = nil) -> String {
        var head = """
            <!doctype html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(HTML.escape(title))</title>
            <link rel="icon" href="data:,">

            """
        if let refresh { head += "<meta http-equiv=\"refresh\" content=\"\(refresh)\">\n" }
        head += "<style>\n\(style)</style>\n</head>\n<body>\n<main>\n"
        return head + body + "</main>\n</body>\n</html>\n"
    }

    static func badge(_ state: String) -> String {
        "<span class=\"badge \(HTML.escape(state))\">\(HTML.escape(state))</span>"
    }

    static func progress(done: Int, total: Int) -> String {
        let share = total > 0 ? Double(done) / Double(total) : 0
        return "<span class=\"bar wide\" role=\"img\" aria-label=\"\(done) of \(total) steps\">"
            + "<span style=\"width:\(String(format: "%.1f", share * 100))%\"></span></span>"
    }

    static func countsText(_ counts: [String: Int]) -> String {
        let parts = StepState.allCases.compactMap { st in counts[st.rawValue].map { "\($0) \(st.rawValue)" } }
        return "<span class=\"muted\">" + HTML.escape(parts.joined(separator: ", ")) + "</span>"
    }

    static func exitText(_ s: StepRecord) -> String {
        if s.timedOut { return "timed out" }
        if let sig = s.signal { return "signal \(sig)" }
        if let code = s.exitCode { return "exit \(code)" }
        return "–"
    }

    static func bytesCell(_ field: String, _ bytes: Int, extra: String = "") -> String {
        "<td data-field=\"\(field)\" data-value=\"\(bytes)\">\(ByteSize.format(bytes))\(extra)</td>"
    }

    static func countCell(_ field: String, _ n: Int?) -> String {
        guard let n else { return "<td>–</td>" }
        return "<td data-field=\"\(field)\" data-value=\"\(n)\">\(n)</td>"
    }

    static func percent(_ share: Double) -> String { String(format: "%.1f%%", share * 100) }

    static func seconds(_ s: Double) -> String { s < 10 ? String(format: "%.2fs", s) : String(format: "%.1fs", s) }

    static let style = """
        :root { color-scheme: light; --fg: #1d232b; --muted: #66707c; --line: #dde2e8; --bg: #f7f8fa; }
        body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
        main { max-width: 1200px; margin: 0 auto; padding: 16px 24px 40px; }
        h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 17px; margin: 24px 0 8px; }
        code, pre { font: 12.5px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; }
        pre { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px; overflow-x: auto; white-space: pre-wrap; }
        a { color: #1f5fbf; text-decoration: none; } a:hover { text-decoration: underline; }
        table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); border-radius: 6px; }
        th, td { text-align: left; padding: 6px 9px; border-bottom: 1px solid var(--line); vertical-align: top; }
        th { font-weight: 600; font-size: 12px; color: var(--muted); background: #fbfcfd; white-space: nowrap; }
        tr.down td { background: #fff4f4; }
        td[data-value], .replicas td:nth-child(-n+4) { white-space: nowrap; }
        td.error { white-space: normal; overflow-wrap: anywhere; }
        .muted { color: var(--muted); font-size: 12px; } .empty { color: var(--muted); font-style: italic; }
        .crumbs { color: var(--muted); margin: 0; }
        .facts { list-style: none; padding: 0; margin: 4px 0 10px; display: flex; flex-wrap: wrap; gap: 4px 18px; color: #3a434e; }
        .message { background: #fff8e6; border: 1px solid #f0d9a0; border-radius: 6px; padding: 8px 10px; white-space: pre-wrap; }
        .error { color: #a32020; }
        .badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; background: #e6e9ee; color: #3a434e; vertical-align: middle; }
        .badge.up, .badge.succeeded { background: #dff3e4; color: #17643a; }
        .badge.running { background: #e0ecfb; color: #1f4f99; }
        .badge.failed, .badge.down, .badge.upstream-failed { background: #fbe3e3; color: #9b1c1c; }
        .badge.degraded, .badge.cancelled { background: #fdf0d8; color: #8a5a00; }
        .bar { display: block; height: 5px; background: #e6e9ee; border-radius: 3px; margin-top: 3px; min-width: 60px; overflow: hidden; }
        .bar.wide { display: inline-block; width: 120px; vertical-align: middle; margin: 0; }
        .bar > span { display: block; height: 100%; background: #3f7fd9; }

        """
}
