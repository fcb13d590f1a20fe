import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
import TrellisClient
import TrellisDashboard
import TrellisFlow
import TrellisProtocol
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// A Trellis home in a fresh temporary directory, with helpers to write what the CLI writes.
struct Home {
    let path: String
    var home: TrellisHome { TrellisHome(path: path) }
    var store: RunStore { RunStore(home: home) }

    init() {
        path = NSTemporaryDirectory() + "trdash-" + UUID().uuidString.prefix(8)
        try? FileManager.default.createDirectory(atPath: path + "/runs", withIntermediateDirectories: true)
    }

    func cleanup() { try? FileManager.default.removeItem(atPath: path) }

    /// Saves `record` as the runner does, with its log directory.
    func save(_ record: RunRecord) throws {
        try FileManager.default.createDirectory(
            atPath: store.directory(of: record.runID) + "/logs", withIntermediateDirectories: true)
        try store.save(record)
    }

    func writeLog(_ runID: String, _ step: String, _ stream: LogStream, _ text: String, append: Bool = false) throws {
        let path = store.logPath(run: runID, step: step, stream: stream)
        if append, let h = FileHandle(forWritingAtPath: path) {
            try h.seekToEnd()
            try h.write(contentsOf: Data(text.utf8))
            try h.close()
        } else {
            try text.write(toFile: path, atomically: false, encoding: .utf8)
        }
    }
}

func record(_ id: String, flow: String = "demo", state: RunOutcome = .succeeded, steps: [StepRecord]) -> RunRecord {
    let start = Date(timeIntervalSince1970: 1_760_000_000)
    var r = RunRecord(
        runID: id, spec: FlowSpec(name: flow, steps: steps.map { StepSpec(name: $0.name, action: .command(["true"])) }),
        state: state, createdAt: start, startedAt: start, replicas: [Replica(index: 0, socket: "/tmp/r0.sock")],
        steps: steps)
    if state != .running { r.finishedAt = start.addingTimeInterval(4.25) }
    return r
}

func step(_ name: String, _ state: StepState, replica: Int? = 0, message: String? = nil) -> StepRecord {
    var s = StepRecord(name: name, stdoutPath: "", stderrPath: "")
    s.state = state
    s.replica = replica
    s.attempts = state == .pending ? 0 : 1
    s.duration = state.isTerminal ? 1.5 : nil
    s.exitCode = state == .failed ? 3 : (state == .succeeded ? 0 : nil)
    s.message = message
    return s
}

func instanceStatus(_ fields: [String: JSON]) throws -> InstanceStatus {
    var o: [String: JSON] = [
        "instance_id": .uint(7), "deployment": "local", "memory_usage": .int(3 << 20), "memory_limit": .int(64 << 20),
        "deferred_requests": .int(0), "ipc_connections": .int(2), "rpc_connections": .int(0),
    ]
    for (k, v) in fields { o[k] = v }
    return try InstanceStatus(json: .object(o))
}

let server = ServerInfo(
    instanceID: 7, version: "0.24.2", ipcSocket: "/tmp/r0.sock", rpcEndpoint: "127.0.0.1:9600", sessionID: 0,
    supportsRPCCompression: false)

@Suite struct PageTests {
    @Test func escapesEverythingItDidNotWrite() {
        #expect(HTML.escape(#"<a href="x">&'</a>"#) == "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;")
        #expect(HTML.pathSegment("a b/c?d") == "a%20b%2Fc%3Fd")
        let hostile = "<script>alert(1)</script>"
        var r = record("run-1", flow: hostile, state: .failed, steps: [step("s1", .failed, message: hostile)])
        r.message = hostile
        let page = DashboardPages.run(r)
        #expect(!page.contains("<script>"))
        #expect(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
        let log = DashboardPages.stepLog(
            r, step: r.steps[0], stdout: LogExcerpt(text: "1 < 2 & \"</pre><script>x</script>", omittedBytes: 0),
            stderr: LogExcerpt(text: "", omittedBytes: 0))
        #expect(!log.contains("<script>"))
        #expect(log.contains("<pre id=\"stdout\">1 &lt; 2 &amp; &quot;&lt;/pre&gt;&lt;script&gt;x&lt;/script&gt;</pre>"))
        #expect(log.contains("id=\"stderr-empty\""))
    }

    @Test func runtimeShowsArenaFiguresAndDownReplicas() throws {
        let s = try instanceStatus([
            "free_bytes": .int(61 << 20), "largest_free_block": .int(40 << 20), "fragmentation": .double(0.25),
            "objects": .int(12), "blobs": .int(9), "spilled_bytes": .int(5 << 20), "pages": "thp",
        ])
        let state = RuntimeState(
            id: "rt-1", spec: RuntimeSpec(replicas: 2, size: "64Mi"),
            replicas: [Replica(index: 0, socket: "/tmp/r0.sock", rpcPort: 9600), Replica(index: 1, socket: "/tmp/r1.sock")],
            processes: [RuntimeProcess(pid: 100, log: "r0.log"), RuntimeProcess(pid: 101, log: "r1.log")], etcd: nil,
            ephemeral: false, startedAt: Date(timeIntervalSince1970: 1_760_000_000), trellisBinary: "trellis")
        let view = RuntimeView(
            status: RuntimeStatus(state: state, replicasAlive: [true, false], etcdAlive: nil),
            replicas: [
                ReplicaView(replica: state.replicas[0], pid: 100, alive: true, probe: .answered(s, server)),
                ReplicaView(replica: state.replicas[1], pid: 101, alive: false, probe: .unreachable("cannot connect <here>")),
            ])
        let page = DashboardPages.index(runtime: view, runs: [], home: "/h")
        #expect(page.contains("<span class=\"badge degraded\">degraded</span>"))
        #expect(page.contains(#"data-field="memory_usage" data-value="\#(3 << 20)""#))
        #expect(page.contains(#"data-field="free_bytes" data-value="\#(61 << 20)">61.0 MiB"#))
        #expect(page.contains(#"data-field="largest_free_block" data-value="\#(40 << 20)""#))
        #expect(page.contains(#"data-field="fragmentation" data-value="0.25">25.0%"#))
        #expect(page.contains(#"data-field="spilled_bytes" data-value="\#(5 << 20)""#))
        #expect(page.contains(#"data-field="objects" data-value="12""#))
        #expect(page.contains(#"<tr data-replica="1" class="down">"#))
        #expect(page.contains("cannot connect &lt;here&gt;"))
        #expect(page.contains("No runs yet"))
        // The replicas' JSON: `trellis status --json` under "status", or the error.
        #expect(view.replicas[0].json["status"] == s.json(server: server))
        #expect(view.replicas[0].json["up"] == .bool(true))
        #expect(view.replicas[1].json["error"] == .string("cannot connect <here>"))
        #expect(view.replicas[1].json["up"] == .bool(false))
    }

    @Test func noRuntime() {
        let page = DashboardPages.index(
            runtime: RuntimeView(status: RuntimeStatus(state: nil, replicasAlive: [], etcdAlive: nil), replicas: []),
            runs: [], home: "/h")
        #expect(page.contains("No runtime is up"))
    }

    @Test func liveRunAndStepReloadFinishedOnesDoNot() {
        var r = record("run-2", state: .running, steps: [step("a", .succeeded), step("b", .running)])
        r.runnerPID = getpid()
        #expect(DashboardPages.run(r).contains("http-equiv=\"refresh\""))
        let live = DashboardPages.stepLog(r, step: r.steps[1], stdout: LogExcerpt(text: "x", omittedBytes: 0), stderr: LogExcerpt(text: "", omittedBytes: 0))
        #expect(live.contains(#"<meta http-equiv="refresh" content="3">"#))
        let finished = DashboardPages.stepLog(r, step: r.steps[0], stdout: LogExcerpt(text: "x", omittedBytes: 10), stderr: LogExcerpt(text: "", omittedBytes: 0))
        #expect(!finished.contains("http-equiv=\"refresh\""))
        #expect(finished.contains("the first 10 B are not shown"))
        r.state = .succeeded
        r.steps[1].state = .succeeded
        #expect(!DashboardPages.run(r).contains("http-equiv=\"refresh\""))
        #expect(DashboardPages.run(r).contains("2 of 2 steps succeeded"))
    }
}

@Suite(.serialized) struct RouteTests {
    func app(_ home: Home) -> some ApplicationProtocol {
        Application(router: Dashboard.router(source: DashboardSource(home: home.home, probeTimeout: .seconds(1))))
    }

    @Test func apiServesWhatTheCLIPrints() async throws {
        let home = Home()
        defer { home.cleanup() }
        let r1 = record("run-a", steps: [step("prep", .succeeded), step("train", .succeeded)])
        var r2 = record("run-b", flow: "other", state: .failed, steps: [step("x", .failed, message: "exit 3")])
        r2.createdAt = r1.createdAt.addingTimeInterval(60)
        try home.save(r1)
        try home.save(r2)
        try await app(home).test(.router) { client in
            try await client.execute(uri: "/api/runs", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/json; charset=utf-8")
                let cli = try RunFormatter.json(home.store.list())
                #expect(String(buffer: response.body) == cli + "\n")
            }
            try await client.execute(uri: "/api/runs/run-b", method: .get) { response in
                let cli = try RunFormatter.json(try home.store.load("run-b"))
                #expect(String(buffer: response.body) == cli + "\n")
            }
            try await client.execute(uri: "/api/runs/nope", method: .get) { response in
                #expect(response.status == .notFound)
            }
            try await client.execute(uri: "/api/runtimes", method: .get) { response in
                let cli = LocalRuntime(directory: home.home.runtimeDirectory, trellisBinary: "").status().json
                #expect(String(buffer: response.body) == cli + "\n")
                #expect(cli == #"{"up": false, "state": null}"#)
            }
            try await client.execute(uri: "/api/runtimes/replicas", method: .get) { response in
                #expect(String(buffer: response.body) == "[]\n")
            }
        }
    }

    @Test func pagesListRunsAndShowLogs() async throws {
        let home = Home()
        defer { home.cleanup() }
        let r = record("run-c", state: .failed, steps: [step("load", .succeeded), step("fit", .failed, message: "exit 3")])
        try home.save(r)
        try home.writeLog("run-c", "fit", .stdout, "epoch 1\n<b>loss</b> 0.5\n")
        try home.writeLog("run-c", "fit", .stderr, "Traceback: boom\n")
        try await app(home).test(.router) { client in
            try await client.execute(uri: "/", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "text/html; charset=utf-8")
                #expect(response.headers[.contentSecurityPolicy]?.contains("default-src 'none'") == true)
                let page = String(buffer: response.body)
                #expect(page.contains(#"<tr data-run="run-c" data-state="failed">"#))
                #expect(page.contains("No runtime is up"))
            }
            try await client.execute(uri: "/runs/run-c", method: .get) { response in
                let page = String(buffer: response.body)
                #expect(page.contains(#"<tr data-step="fit" data-state="failed">"#))
                #expect(page.contains(#"href="/runs/run-c/steps/fit""#))
                #expect(page.contains(#"href="/runs/run-c/report""#))
            }
            try await client.execute(uri: "/runs/run-c/report", method: .get) { response in
                // the page `trellis flow report` writes, failure log tail included
                #expect(response.status == .ok)
                let page = String(buffer: response.body)
                // (but for the moment it was written, in its footer)
                func body(_ p: String) -> Substring { p[..<(p.range(of: "<footer>")?.lowerBound ?? p.endIndex)] }
                let cli = home.store.reportHTML(for: try home.store.load("run-c"))
                #expect(body(page) == body(cli) && body(page).count > 1000)
                #expect(page.contains("Traceback: boom"))
            }
            try await client.execute(uri: "/runs/run-c/steps/fit", method: .get) { response in
                let page = String(buffer: response.body)
                #expect(page.contains("epoch 1\n&lt;b&gt;loss&lt;/b&gt; 0.5"))
                #expect(page.contains("Traceback: boom"))
            }
            try await client.execute(uri: "/api/runs/run-c/steps/fit/stdout", method: .get) { response in
                #expect(response.headers[.contentType] == "text/plain; charset=utf-8")
                let cli = try home.store.logs(run: "run-c", step: "fit").stdout
                #expect(String(buffer: response.body) == cli)
            }
            try await client.execute(uri: "/api/runs/run-c/steps/fit/stderr", method: .get) { response in
                #expect(String(buffer: response.body) == "Traceback: boom\n")
            }
            for uri in ["/runs/run-c/steps/nope", "/runs/..%2Fx", "/runs/nope/report", "/api/runs/run-c/steps/fit/other", "/nothing"] {
                try await client.execute(uri: uri, method: .get) { response in
                    #expect(response.status == .notFound, "\(uri)")
                }
            }
        }
    }

    @Test func readOnly() async throws {
        let home = Home()
        defer { home.cleanup() }
        try await app(home).test(.router) { client in
            for method in [HTTPRequest.Method.post, .put, .delete, .patch] {
                for uri in ["/", "/api/runs", "/nothing"] {
                    try await client.execute(uri: uri, method: method) { response in
                        #expect(response.status == .methodNotAllowed, "\(method) \(uri)")
                        #expect(response.headers[.allow] == "GET, HEAD")
                    }
                }
            }
            try await client.execute(uri: "/favicon.ico", method: .get) { response in
                #expect(response.status == .noContent)
            }
            try await client.execute(uri: "/api/runs", method: .head) { response in
                #expect(response.status == .ok)
                #expect(response.body.readableBytes == 0)
            }
        }
    }

    /// `?follow=1` streams a running step's log as it grows and ends when the step does.
    @Test func followStreamsUntilTheStepEnds() async throws {
        let home = Home()
        defer { home.cleanup() }
        var r = record("run-f", state: .running, steps: [step("slow", .running)])
        r.runnerPID = getpid()
        try home.save(r)
        try home.writeLog("run-f", "slow", .stdout, "first\n")
        try home.writeLog("run-f", "slow", .stderr, "not on stdout\n")
        let writer = Task {
            // Once the stream has certainly begun (the first line is there from the start),
            // the step writes more and finishes.
            try await Task.sleep(for: .milliseconds(300))
            try home.writeLog("run-f", "slow", .stdout, "second\n", append: true)
            try await Task.sleep(for: .milliseconds(300))
            r.steps[0].state = .succeeded
            r.state = .succeeded
            try home.save(r)
        }
        try await app(home).test(.router) { client in
            try await client.execute(uri: "/api/runs/run-f/steps/slow/stdout?follow=1", method: .get) { response in
                #expect(String(buffer: response.body) == "first\nsecond\n")
            }
        }
        try await writer.value
    }

    /// A socket nobody answers on, and one where nothing listens, both show as down, in time.
    @Test func silentAndAbsentReplicasAreDown() async throws {
        let home = Home()
        defer { home.cleanup() }
        let path = home.path + "/silent.sock"
        let listener = try Listener.unix(path: path)  // accepts into its backlog, never answers
        let source = DashboardSource(home: home.home, probeTimeout: .milliseconds(500))
        let start = ContinuousClock.now
        let silent = await source.probe(socket: path)
        #expect(ContinuousClock.now - start < .seconds(30))
        guard case .unreachable(let why) = silent else {
            Issue.record("a silent daemon answered: \(silent)")
            return
        }
        #expect(why.contains("no answer"))
        let absent = await source.probe(socket: home.path + "/absent.sock")
        guard case .unreachable(let why2) = absent else {
            Issue.record("an absent daemon answered")
            return
        }
        #expect(why2.contains("cannot connect"))
        _ = consume listener
    }
}
