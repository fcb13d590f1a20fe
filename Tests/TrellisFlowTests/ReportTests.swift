import Foundation
import Testing
@testable import TrellisFlow
import TrellisTestSupport

#if canImport(FoundationXML)
import FoundationXML
#endif

/// The run report: layout, escaping, the model derived from records, and the record fields the
/// runner now keeps for it (attempt history, moves, free times, peak memory).
@Suite struct ReportLayoutTests {
    @Test func housePricesLayersAndALongEdgeRoutedAroundTheMiddleStep() {
        let l = DAGLayout(
            nodes: ["generate", "preprocess", "train", "test"],
            edges: [("generate", "preprocess"), ("preprocess", "train"), ("preprocess", "test"), ("train", "test")])
        #expect(l.nodes.map(\.layer) == [0, 1, 2, 3])
        let long = try! #require(l.edges.first { $0.from == "preprocess" && $0.to == "test" })
        #expect(long.points.count == 3)  // source, one dummy in train's layer, target
        let train = l.node("train")!
        #expect(long.points[1].x == train.x)
        #expect(abs(long.points[1].y - train.y) >= l.metrics.rowGap - 0.001)  // another row: not through train's box
        #expect(l.crossings == 0)
        // Edges run left to right, from a box's right side to the next box's left side.
        for e in l.edges {
            for (a, b) in zip(e.points, e.points.dropFirst()) { #expect(a.x < b.x) }
        }
        let g = l.node("generate")!
        #expect(l.edges[0].points[0].x == g.x + l.metrics.nodeWidth / 2)
        #expect(l.width >= l.node("test")!.x + l.metrics.nodeWidth / 2)
        #expect(l.height >= 2 * l.metrics.nodeHeight)
    }

    @Test func orderingRemovesAvoidableCrossings() {
        // Input order crosses: a→d, b→c with layer 1 as [c, d].
        let l = DAGLayout(nodes: ["a", "b", "c", "d"], edges: [("a", "d"), ("b", "c")])
        #expect(l.crossings == 0)
        #expect((l.node("a")!.y < l.node("b")!.y) == (l.node("d")!.y < l.node("c")!.y))
        // A wider one: two sources fanning out in the wrong order.
        let w = DAGLayout(
            nodes: ["s1", "s2", "s3", "x3", "x2", "x1"], edges: [("s1", "x1"), ("s2", "x2"), ("s3", "x3")])
        #expect(w.crossings == 0)
        #expect(DAGLayout.crossings([[0, 1, 2], [5, 4, 3]], succ: [[3], [4], [5], [], [], []]) == 3)
    }

    @Test func everyNodeGetsADistinctPlaceAndCyclesDoNotHang() {
        let l = DAGLayout(
            nodes: ["a", "b", "c", "d", "e"], edges: [("a", "b"), ("a", "c"), ("a", "d"), ("b", "e"), ("c", "e"), ("d", "e")])
        let places = Set(l.nodes.map { "\($0.x),\($0.y)" })
        #expect(places.count == 5)
        #expect(l.node("e")!.layer == 2)
        let cyc = DAGLayout(nodes: ["x", "y", "z"], edges: [("x", "y"), ("y", "z"), ("z", "y"), ("q", "x"), ("x", "x")])
        #expect(cyc.nodes.count == 3)
        #expect(cyc.edges.count == 3)  // unknown node and self-loop dropped
        #expect(DAGLayout(nodes: [], edges: []).nodes.isEmpty)
    }

    @Test func tickSteps() {
        #expect(FlowReport.tickStep(10, maxTicks: 10) == 1)
        #expect(FlowReport.tickStep(10, maxTicks: 4) == 5)
        #expect(FlowReport.tickStep(0.9, maxTicks: 9) == 0.1)
        #expect(FlowReport.tickStep(3600, maxTicks: 8) == 500)
        #expect(FlowReport.seconds(0.085) == "85 ms")
        #expect(FlowReport.seconds(2.314) == "2.31 s")
        #expect(FlowReport.seconds(185) == "3m 05s")
    }
}

/// Records built by hand, as the runner writes them.
enum ReportFixtures {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    static func at(_ s: Double) -> Date { t0.addingTimeInterval(s) }

    /// produce (r0) → consume (r1, `x` moved; attempt 1 exits 3, attempt 2 succeeds) → last (upstream-failed in a failed variant).
    static func record(flowName: String = "demo", objectName: String = "x", failLast: Bool = true) -> RunRecord {
        let spec = FlowSpec(name: flowName, steps: [
            Sh.step("produce", "true", outputs: [objectName]),
            Sh.step("consume", "true", inputs: [objectName], outputs: ["y"], retries: 1),
            Sh.step("last", "true", inputs: ["y"]),
            Sh.step("after-last", "true", after: ["last"]),
        ])
        var r = RunRecord(
            runID: "run-1", spec: spec, state: failLast ? .failed : .succeeded, createdAt: at(0), startedAt: at(0),
            replicas: [Replica(index: 0, socket: "/s0"), Replica(index: 1, socket: "/s1")],
            steps: spec.steps.map { StepRecord(name: $0.name, stdoutPath: "/o", stderrPath: "/e") })
        r.finishedAt = at(10)
        // produce
        r.steps[0].state = .succeeded
        r.steps[0].replica = 0
        r.steps[0].attempts = 1
        r.steps[0].startedAt = at(0)
        r.steps[0].duration = 2
        r.steps[0].outputs = [OutputRecord(name: objectName, storeName: "run-1/\(objectName)", bytes: 4096, replica: 0)]
        var a = AttemptRecord(attempt: 1, invocation: 0, replica: 0, startedAt: at(0))
        a.processStartedAt = at(0.1)
        a.processSeconds = 1.8
        a.finishedAt = at(2)
        a.outcome = "succeeded"
        a.exitCode = 0
        r.steps[0].history = [a]
        // consume: two attempts
        r.steps[1].state = .succeeded
        r.steps[1].replica = 1
        r.steps[1].attempts = 2
        r.steps[1].inputs = [
            InputRecord(name: objectName, bytes: 4096, residentOn: 0, localBytes: 0, movedBytes: 4096, moveSeconds: 0.5)
        ]
        r.steps[1].outputs = [OutputRecord(name: "y", storeName: "run-1/y", bytes: 100, replica: 1)]
        var b1 = AttemptRecord(attempt: 1, invocation: 0, replica: 1, startedAt: at(2))
        b1.moves = [MoveRecord(name: objectName, from: 0, to: 1, bytes: 4096, startedAt: at(2.1), seconds: 0.5)]
        b1.processStartedAt = at(2.7)
        b1.processSeconds = 0.3
        b1.finishedAt = at(3.1)
        b1.outcome = "failed"
        b1.exitCode = 3
        b1.message = "exit 3"
        var b2 = AttemptRecord(attempt: 2, invocation: 0, replica: 1, startedAt: at(3.2))
        b2.processStartedAt = at(3.3)
        b2.processSeconds = 1
        b2.finishedAt = at(4.4)
        b2.outcome = "succeeded"
        r.steps[1].history = [b1, b2]
        // last
        r.steps[2].replica = 1
        r.steps[2].attempts = 1
        var c = AttemptRecord(attempt: 1, invocation: 0, replica: 1, startedAt: at(4.5))
        c.processStartedAt = at(4.6)
        c.processSeconds = 0.2
        c.finishedAt = at(5)
        if failLast {
            r.steps[2].state = .failed
            r.steps[2].exitCode = 3
            r.steps[2].message = "exit 3"
            c.outcome = "failed"
            c.exitCode = 3
            r.steps[3].state = .upstreamFailed
            r.steps[3].message = "not run: upstream step 'last' failed"
            r.objectsKept = true
            r.freedEarly = [objectName]
            r.freedAt = [objectName: at(4.45)]
        } else {
            r.steps[2].state = .succeeded
            c.outcome = "succeeded"
            r.steps[3].state = .succeeded
            r.steps[3].replica = 0
            r.steps[3].attempts = 1
            var d = AttemptRecord(attempt: 1, invocation: 0, replica: 0, startedAt: at(5))
            d.finishedAt = at(6)
            d.outcome = "succeeded"
            r.steps[3].history = [d]
            r.freedAt = [objectName: at(4.45), "y": at(6)]
        }
        r.steps[2].history = [c]
        r.objectTypes = [objectName: "vineyard::DataFrame"]
        r.peakMemory = [
            ReplicaMemory(replica: 0, usedBytes: 4096, limitBytes: 1 << 30, at: at(2)),
            ReplicaMemory(replica: 1, usedBytes: 8192, limitBytes: 1 << 30, at: at(4.4)),
        ]
        return r
    }
}

@Suite struct ReportModelTests {
    @Test func attemptsObjectsAndTotals() {
        let r = ReportFixtures.record()
        let m = ReportModel(record: r, now: ReportFixtures.at(100))
        #expect(m.attempts.count == 4)
        #expect(m.attempts(of: "consume").map(\.outcome) == ["failed", "succeeded"])
        #expect(m.attempts(of: "after-last").isEmpty)
        #expect(m.spans.count == 1)
        let x = m.objects.first { $0.name == "x" }!
        #expect(x.type == "vineyard::DataFrame")
        #expect(x.bytes == 4096)
        #expect(x.producer == "produce")
        #expect(x.consumers == ["consume"])
        #expect(x.replicas == [0, 1])
        #expect(x.movedBytes == 4096)
        #expect(x.created == ReportFixtures.at(2))
        #expect(x.freed == ReportFixtures.at(4.45))
        #expect(!x.resident)
        let y = m.objects.first { $0.name == "y" }!
        #expect(y.resident)  // failed run: kept
        #expect(m.totals.movedBytes == 4096)
        #expect(m.totals.attempts == 4)
        #expect(m.totals.stepStates[.failed] == 1 && m.totals.stepStates[.upstreamFailed] == 1)
        #expect(m.totals.wallSeconds == 10)
        #expect(m.edges.map { "\($0.from)>\($0.to):\($0.objects.joined())" } == ["produce>consume:x", "consume>last:y", "last>after-last:"])
    }

    @Test func aResumeLongAfterTheRunIsItsOwnSpan() {
        var r = ReportFixtures.record()
        var late = AttemptRecord(attempt: 2, invocation: 1, replica: 1, startedAt: ReportFixtures.at(3600))
        late.finishedAt = ReportFixtures.at(3602)
        late.outcome = "succeeded"
        r.steps[2].history!.append(late)
        r.resumes = 1
        let m = ReportModel(record: r, now: ReportFixtures.at(4000))
        #expect(m.spans.count == 2)
        #expect(m.spans[1].invocation == 1)
        let axis = FlowReport.TimeAxis(spans: m.spans, left: 100, width: 800)
        // The idle hour is cut: both spans share the width by their active time.
        #expect(axis.x(ReportFixtures.at(3602)) <= 900.001)
        #expect(axis.x(ReportFixtures.at(3600)) - axis.x(ReportFixtures.at(10)) <= axis.gap + 0.001)
    }

    @Test func aRunningRunsOpenAttemptEndsNow() {
        var r = ReportFixtures.record()
        r.state = .running
        r.finishedAt = nil
        r.steps[2].state = .running
        r.steps[2].history![0].finishedAt = nil
        r.steps[2].history![0].outcome = "running"
        let m = ReportModel(record: r, now: ReportFixtures.at(7))
        let open = m.attempts(of: "last")[0]
        #expect(open.running)
        #expect(open.end == ReportFixtures.at(7))
        #expect(abs((open.processSeconds ?? 0) - 2.4) < 1e-6)
        #expect(m.totals.wallSeconds == 7)
        let html = FlowReport.html(for: r, now: ReportFixtures.at(7))
        #expect(html.contains("data-state=\"running\""))
    }

    @Test func aRecordWithoutHistoryStillDrawsItsLatestAttempts() throws {
        var r = ReportFixtures.record()
        for i in r.steps.indices { r.steps[i].history = nil }
        r.steps[0].startedAt = ReportFixtures.at(0)
        r.steps[1].startedAt = ReportFixtures.at(3.2)
        r.steps[1].duration = 1.2
        r.steps[2].startedAt = ReportFixtures.at(4.5)
        r.steps[2].duration = 0.5
        r.freedAt = nil
        r.objectTypes = nil
        r.peakMemory = nil
        // As written before these fields existed: they are absent from the JSON and decode as nil.
        let json = String(decoding: try RunRecord.encoder().encode(r), as: UTF8.self)
        for key in ["history", "freedAt", "objectTypes", "peakMemory"] { #expect(!json.contains("\"\(key)\"")) }
        let decoded = try RunRecord.decoder().decode(RunRecord.self, from: Data(json.utf8))
        let m = ReportModel(record: decoded, now: ReportFixtures.at(100))
        #expect(m.attempts.map(\.step) == ["produce", "consume", "last"])
        #expect(m.attempts(of: "consume")[0].moves.map(\.bytes) == [4096])
        let html = FlowReport.html(for: decoded)
        #expect(html.contains("not recorded for this run"))
    }
}

@Suite struct ReportHTMLTests {
    static let hostile = "<script>alert('x')</script>&\"q\""

    @Test func elementsForEveryStepEdgeAndAttempt() {
        let r = ReportFixtures.record()
        let tails = ["last": FlowReport.LogTail(stdout: "partial\n", stderr: "--- trellis: attempt 1 ---\nboom: bad input\n")]
        let html = FlowReport.html(for: r, logTails: tails, now: ReportFixtures.at(100))
        #expect(count(html, "<g class=\"step\"") == 4)
        #expect(count(html, "<g class=\"edge\"") == 3)
        #expect(count(html, "<g class=\"attempt\"") == 4)
        #expect(html.contains("<g class=\"step\" data-step=\"last\" data-state=\"failed\" data-replica=\"1\">"))
        #expect(html.contains("<g class=\"step\" data-step=\"after-last\" data-state=\"upstream-failed\" data-replica=\"\">"))
        #expect(html.contains("data-step=\"consume\" data-attempt=\"1\" data-outcome=\"failed\""))
        #expect(html.contains("<div class=\"failure\" data-step=\"last\" data-final=\"true\">"))
        #expect(html.contains("<div class=\"failure\" data-step=\"consume\" data-final=\"false\">"))  // retried
        #expect(html.contains("boom: bad input"))
        #expect(html.contains("data-moved-bytes=\"4096\""))
        #expect(html.contains("vineyard::DataFrame"))
        // Self-contained: nothing fetched (the SVG namespace URI is a name, not a fetch).
        #expect(!html.contains("src=") && !html.contains("<link") && !html.contains("@import") && !html.contains("url(http"))
        #expect(!html.contains("<script"))
    }

    @Test func hostileNamesAndLogsAreEscaped() throws {
        let r = ReportFixtures.record(flowName: Self.hostile, objectName: "o<b>j&\"'")
        var rec = r
        rec.message = "failed: " + Self.hostile
        let tail = FlowReport.LogTail(stderr: "\u{1b}[31mred\u{1b}[0m \(Self.hostile) \u{7}bell\u{0}nul </pre><img src=x onerror=alert(1)>")
        let html = FlowReport.html(for: rec, logTails: ["last": tail], now: ReportFixtures.at(100))
        #expect(!html.contains("<script"))
        #expect(!html.contains("<img"))
        #expect(!html.contains("o<b>j"))
        #expect(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;q&quot;"))
        #expect(html.contains("o&lt;b&gt;j&amp;&quot;&#39;"))
        #expect(html.contains("red"))
        #expect(!html.contains("\u{1b}") && !html.contains("\u{7}") && !html.contains("\u{0}"))
        #expect(html.contains("\u{fffd}bell"))
        // Attribute values cannot be broken out of: every data-object value is fully escaped.
        #expect(html.contains("data-object=\"o&lt;b&gt;j&amp;&quot;&#39;\""))
        // The SVG alone is well-formed XML.
        let svg = FlowReport.svg(for: rec, now: ReportFixtures.at(100))
        #expect(!svg.contains("<script"))
        #if canImport(FoundationXML)
        let parser = XMLParser(data: Data(svg.utf8))
        #expect(parser.parse(), "\(parser.parserError.map { "\($0)" } ?? "")")
        #endif
        #expect(count(svg, "<g class=\"step\"") == 4)
        #expect(count(svg, "<g class=\"attempt\"") == 4)
    }

    @Test func escapeFunction() {
        #expect(FlowReport.h("a<b>&\"'") == "a&lt;b&gt;&amp;&quot;&#39;")
        #expect(FlowReport.h("x\u{1b}[1;31my\u{1b}[0mz") == "xyz")
        #expect(FlowReport.h("tab\tnl\ncr\r") == "tab\tnl\ncr")
        #expect(FlowReport.h("\u{0}\u{8}\u{7f}\u{85}") == "\u{fffd}\u{fffd}\u{fffd}\u{fffd}")
        #expect(FlowReport.h("naïve — 名前") == "naïve — 名前")
    }

    func count(_ s: String, _ needle: String) -> Int { s.components(separatedBy: needle).count - 1 }
}

/// The record fields the report needs, written by the real runner (processes, a directory store).
@Suite(.serialized, .onBlockingPool) struct ReportRecordTests {
    @Test func historyMovesFreeTimesTypesAndPeaks() async throws {
        let dir = TempDir("trrep")
        defer { dir.cleanup() }
        let plane = DirectoryDataPlane(root: dir.sub("store"), count: 2)
        let runner = FlowRunner(dataPlane: plane, replicas: plane.replicas, store: RunStore(root: dir.sub("runs")))
        let marker = dir.sub("flaky-once")
        let spec = FlowSpec(name: "rep", steps: [
            Sh.step("a", Sh.put("big", bytes: 50_000), outputs: ["big"]),
            Sh.step("b", Sh.put("small", bytes: 3_000), outputs: ["small"]),
            Sh.step(
                "join", "if [ ! -e \(marker) ]; then touch \(marker); echo first-try-fails >&2; exit 3; fi; "
                    + Sh.getLocal("big") + " && " + Sh.getLocal("small") + " && " + Sh.put("out", bytes: 10),
                inputs: ["big", "small"], outputs: ["out"], retries: 1),
            Sh.step("end", Sh.getLocal("out"), inputs: ["out"]),
        ])
        let r = try await runner.run(spec: spec, options: FlowRunOptions(runID: "rep1", killGrace: 0.5))
        #expect(r.state == .succeeded, "\(r.message ?? "")")
        let join = try #require(r.step("join"))
        let h = try #require(join.history)
        #expect(h.map(\.attempt) == [1, 2])
        #expect(h.map(\.outcome) == ["failed", "succeeded"])
        #expect(h[0].exitCode == 3)
        #expect(h.allSatisfy { $0.invocation == 0 && $0.replica == join.replica })
        for a in h {
            let end = try #require(a.finishedAt)
            let ps = try #require(a.processStartedAt)
            #expect(a.startedAt <= ps && ps <= end)
            #expect((a.processSeconds ?? -1) >= 0 && (a.overhead ?? -1) >= 0)
        }
        #expect(h[0].finishedAt! <= h[1].startedAt)
        // The first attempt moved the smaller input; the second found it local already.
        #expect(h[0].moves.map(\.name) == ["small"] && h[0].moves[0].bytes == 3_000)
        #expect(h[0].moves[0].to == join.replica && h[0].moves[0].from != join.replica)
        #expect(h[1].moves.isEmpty)
        for s in r.steps { #expect(s.history?.count == s.attempts) }
        // Freed: early (inputs of join after join; out after end) or at the end of the run.
        let freed = try #require(r.freedAt)
        #expect(Set(freed.keys) == ["big", "small", "out"])
        #expect(freed["big"]! <= r.finishedAt! && freed["big"]! >= h[1].finishedAt!)
        // Types and peaks, from the data plane.
        #expect(r.objectTypes?["big"] == "file")
        let peaks = try #require(r.peakMemory)
        #expect(peaks.map(\.replica) == [0, 1])
        #expect(peaks.contains { $0.usedBytes >= 50_000 })
        // The report of it.
        let html = FlowReport.html(for: r)
        #expect(html.components(separatedBy: "<g class=\"attempt\"").count - 1 == 5)
    }
}
