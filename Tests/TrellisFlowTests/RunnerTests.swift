import Foundation
import Synchronization
import Testing
@testable import TrellisFlow

#if canImport(Glibc)
import Glibc
import TrellisTestSupport
#endif

/// Real processes, a directory-backed fake data plane, two replicas.
@Suite(.serialized, .onBlockingPool) struct RunnerTests {
    func fixture(_ replicas: Int = 2) -> (TempDir, DirectoryDataPlane, FlowRunner) {
        let dir = TempDir("trflow")
        let plane = DirectoryDataPlane(root: dir.sub("store"), count: replicas)
        let runner = FlowRunner(dataPlane: plane, replicas: plane.replicas, store: RunStore(root: dir.sub("runs")))
        return (dir, plane, runner)
    }

    func options(_ id: String, keep: Bool = false) -> FlowRunOptions {
        FlowRunOptions(runID: id, keepObjects: keep, killGrace: 0.5)
    }

    @Test func consumerRunsOnProducersReplicaAndReadsLocally() async throws {
        let (dir, plane, runner) = fixture()
        defer { dir.cleanup() }
        let spec = FlowSpec(name: "chain", steps: [
            Sh.step("noise", Sh.put("n", bytes: 10), outputs: ["n"]),
            Sh.step("produce", Sh.put("x", bytes: 4096), outputs: ["x"]),
            Sh.step("consume", Sh.getLocal("x") + " && " + Sh.put("y", bytes: 100), inputs: ["x"], outputs: ["y"]),
            Sh.step("last", Sh.getLocal("y") + " && " + Sh.getLocal("x"), inputs: ["x", "y"]),
        ])
        let record = try await runner.run(spec: spec, options: options("r1"))
        #expect(record.state == .succeeded, "\(record.message ?? "")")
        let produce = try #require(record.step("produce"))
        let consume = try #require(record.step("consume"))
        #expect(record.step("noise")?.replica != produce.replica)  // spread
        #expect(consume.replica == produce.replica)
        #expect(consume.placementReason == .dataAffinity)
        #expect(consume.inputs == [InputRecord(name: "x", bytes: 4096, residentOn: produce.replica, localBytes: 4096, movedBytes: 0, moveSeconds: 0)])
        #expect(produce.outputs == [OutputRecord(name: "x", storeName: "r1/x", bytes: 4096, replica: produce.replica!)])
        #expect(record.step("last")?.replica == produce.replica)
        #expect(record.affinityViolations.isEmpty)
        #expect(record.steps.allSatisfy { $0.attempts == 1 && $0.exitCode == 0 })
        // Succeeded without --keep: the run's objects are gone.
        #expect(plane.names(on: 0).isEmpty && plane.names(on: 1).isEmpty)
        #expect(!record.objectsKept)
        // The record on disk is the one returned.
        let loaded = try runner.store.load("r1")
        #expect(loaded.steps.map(\.state) == record.steps.map(\.state))
        #expect(loaded.steps.map(\.outputs) == record.steps.map(\.outputs))
        // Overhead is recorded for every step (its size is the benchmark's business, not a test's).
        for s in record.steps { #expect((s.overhead ?? -1) >= 0) }
    }

    @Test func inputOnTheOtherReplicaIsMovedFirst() async throws {
        let (dir, plane, runner) = fixture()
        defer { dir.cleanup() }
        // a and b spread over the two replicas; join reads both: placed with the bigger one,
        // the smaller is moved and reported.
        let spec = FlowSpec(name: "join", steps: [
            Sh.step("a", Sh.put("big", bytes: 50_000), outputs: ["big"]),
            Sh.step("b", Sh.put("small", bytes: 3_000), outputs: ["small"]),
            Sh.step("join", Sh.getLocal("big") + " && " + Sh.getLocal("small"), inputs: ["big", "small"]),
        ])
        let record = try await runner.run(spec: spec, options: options("r2", keep: true))
        #expect(record.state == .succeeded, "\(record.message ?? "")")
        let a = try #require(record.step("a")?.replica)
        let b = try #require(record.step("b")?.replica)
        #expect(a != b)
        let join = try #require(record.step("join"))
        #expect(join.replica == a)
        let small = try #require(join.inputs.first { $0.name == "small" })
        #expect(small.residentOn == b)
        #expect(small.movedBytes == 3_000)
        #expect(small.localBytes == 0)
        #expect(join.inputs.first { $0.name == "big" }?.movedBytes == 0)
        // --keep: still there, the moved copy included.
        #expect(record.objectsKept)
        #expect(plane.names(on: a).contains("r2/small"))
    }

    @Test func retriesUntilSuccess() async throws {
        let (dir, _, runner) = fixture(1)
        defer { dir.cleanup() }
        let counter = dir.sub("count")
        let script = "n=$(cat \(counter) 2>/dev/null || echo 0); n=$((n+1)); echo $n > \(counter); [ $n -ge 3 ] || { echo fail $n >&2; exit 7; }; " + Sh.put("x", bytes: 1)
        let spec = FlowSpec(steps: [Sh.step("flaky", script, outputs: ["x"], retries: 3, retryDelay: 0.05)])
        let events = Mutex<[RunEvent.Kind]>([])
        var opts = options("r3")
        opts.observer = { e in events.withLock { $0.append(e.kind) } }
        let record = try await runner.run(spec: spec, options: opts)
        #expect(record.state == .succeeded)
        #expect(record.step("flaky")?.attempts == 3)
        let kinds = events.withLock { $0 }
        #expect(kinds.filter { if case .stepRetrying = $0 { return true } else { return false } }.count == 2)
        #expect(kinds.first == .runStarted && kinds.last == .runFinished)
        let logs = try runner.store.logs(run: "r3", step: "flaky")
        #expect(logs.stderr.contains("fail 1") && logs.stderr.contains("fail 2"))
        #expect(logs.stderr.contains("attempt 3 on replica 0"))
    }

    @Test func intermediatesAreFreedWhenTheirLastConsumerSucceeds() async throws {
        let (dir, plane, runner) = fixture(1)
        defer { dir.cleanup() }
        func exists(_ name: String) -> String { #"test -f "$VINEYARD_IPC_SOCKET/${TRELLIS_NAME_PREFIX}\#(name)""# }
        func gone(_ name: String) -> String { #"test ! -e "$VINEYARD_IPC_SOCKET/${TRELLIS_NAME_PREFIX}\#(name)""# }
        let spec = FlowSpec(steps: [
            Sh.step("a", Sh.put("x", bytes: 64), outputs: ["x"]),
            Sh.step("b", Sh.put("y", bytes: 64), inputs: ["x"], outputs: ["y"]),
            Sh.step("c", exists("x"), inputs: ["y"]),  // d still needs x
            Sh.step("d", "true", inputs: ["x"], after: ["c"]),
            Sh.step("e", gone("x"), inputs: ["y"], after: ["d"]),  // x's consumers b, d are done
        ])
        let record = try await runner.run(spec: spec, options: options("free"))
        #expect(record.state == .succeeded, "\(record.message ?? "")")
        #expect(record.freedEarly == ["x", "y"])
        #expect(RunFormatter.status(record).contains("freed after their last use: x, y"))
        #expect(plane.names(on: 0).isEmpty)

        // --keep keeps everything to the end.
        let kept = try await runner.run(
            spec: FlowSpec(steps: [
                Sh.step("a", Sh.put("x", bytes: 64), outputs: ["x"]),
                Sh.step("b", "true", inputs: ["x"]),
                Sh.step("c", exists("x"), after: ["b"]),
            ]), options: options("keep", keep: true))
        #expect(kept.state == .succeeded && kept.freedEarly == nil)
    }

    @Test func timeoutKillsTheWholeProcessGroup() async throws {
        let (dir, _, runner) = fixture(1)
        defer { dir.cleanup() }
        let pidFile = dir.sub("bg.pid")
        let spec = FlowSpec(steps: [
            Sh.step("slow", "sleep 30 & echo $! > \(pidFile); sleep 30", timeout: 0.5),
            Sh.step("after", "true", after: ["slow"]),
        ])
        let start = ContinuousClock.now
        let record = try await runner.run(spec: spec, options: options("r4"))
        #expect(ContinuousClock.now - start < .seconds(25))  // killed at the timeout, not after sleep 30
        let slow = try #require(record.step("slow"))
        #expect(slow.state == .failed)
        #expect(slow.timedOut)
        #expect(slow.signal == SIGTERM)
        #expect(slow.message?.contains("timed out") == true)
        #expect(record.step("after")?.state == .upstreamFailed)
        let bg = try #require(Int32(readFile(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(await eventually { !processAlive(bg) })
    }

    @Test func termResistantStepIsKilled() async throws {
        let (dir, _, runner) = fixture(1)
        defer { dir.cleanup() }
        let spec = FlowSpec(steps: [Sh.step("stubborn", "trap '' TERM; sleep 30", timeout: 0.3)])
        let record = try await runner.run(spec: spec, options: options("r4b"))
        #expect(record.step("stubborn")?.timedOut == true)
        #expect(record.step("stubborn")?.signal == SIGKILL)
    }

    @Test func failureMarksDownstreamAndLetsUnrelatedStepsFinish() async throws {
        let (dir, plane, runner) = fixture()
        defer { dir.cleanup() }
        let spec = FlowSpec(steps: [
            Sh.step("gen", Sh.put("df", bytes: 100), outputs: ["df"]),
            Sh.step("prep", "echo boom >&2; exit 4", inputs: ["df"], outputs: ["x"]),
            Sh.step("train", "true", inputs: ["x"]),
            Sh.step("report", "true", after: ["train"]),
            Sh.step("side", "sleep 0.3; " + Sh.put("s", bytes: 5), outputs: ["s"]),
        ])
        let record = try await runner.run(spec: spec, options: options("r5"))
        #expect(record.state == .failed)
        #expect(record.step("prep")?.state == .failed)
        #expect(record.step("prep")?.exitCode == 4)
        #expect(record.step("train")?.state == .upstreamFailed)
        #expect(record.step("report")?.state == .upstreamFailed)
        #expect(record.step("report")?.message == "not run: upstream step 'prep' failed")
        #expect(record.step("side")?.state == .succeeded)
        let message = try #require(record.message)
        #expect(message.contains("step 'prep' failed (exit 4)"))
        #expect(message.contains(runner.store.logPath(run: "r5", step: "prep", stream: .stderr)))
        #expect(message.contains("trellis flow resume r5"))
        // Failed: intermediates kept.
        #expect(record.objectsKept)
        #expect((plane.names(on: 0) + plane.names(on: 1)).contains("r5/df"))
        #expect(try runner.store.logs(run: "r5", step: "prep").stderr.contains("boom"))
    }

    @Test func missingOutputFailsTheStep() async throws {
        let (dir, _, runner) = fixture(1)
        defer { dir.cleanup() }
        let spec = FlowSpec(steps: [Sh.step("liar", "exit 0", outputs: ["x"]), Sh.step("user", "true", inputs: ["x"])])
        let record = try await runner.run(spec: spec, options: options("r6"))
        #expect(record.step("liar")?.state == .failed)
        #expect(record.step("liar")?.message == "exited 0 but did not produce 'x'")
        #expect(record.step("user")?.state == .upstreamFailed)
    }

    @Test func unknownExecutableFails() async throws {
        let (dir, _, runner) = fixture(1)
        defer { dir.cleanup() }
        let spec = FlowSpec(steps: [.command("ghost", ["no-such-program-trellis"], retries: 3)])
        let record = try await runner.run(spec: spec, options: options("r7"))
        #expect(record.step("ghost")?.state == .failed)
        #expect(record.step("ghost")?.attempts == 1)  // not retried
        #expect(record.step("ghost")?.message?.contains("not found") == true)
    }

    @Test func invalidFlowStartsNothing() async throws {
        let (dir, _, runner) = fixture(1)
        defer { dir.cleanup() }
        let spec = FlowSpec(steps: [Sh.step("a", "touch \(dir.sub("ran"))", inputs: ["nope"])])
        await #expect(throws: FlowValidationError.self) { _ = try await runner.run(spec: spec, options: options("r8")) }
        #expect(!FileManager.default.fileExists(atPath: dir.sub("ran")))
        #expect(!runner.store.exists("r8"))
    }

    @Test func runIDsAreUniqueAndValidated() async throws {
        let (dir, _, runner) = fixture(1)
        defer { dir.cleanup() }
        let spec = FlowSpec(steps: [Sh.step("a", "true")])
        _ = try await runner.run(spec: spec, options: options("same"))
        await #expect(throws: RunStoreError.self) { _ = try await runner.run(spec: spec, options: options("same")) }
        await #expect(throws: RunStoreError.self) { _ = try await runner.run(spec: spec, options: options("bad/id")) }
        let generated = try await runner.run(spec: spec, options: FlowRunOptions())
        #expect(generated.runID.hasPrefix("flow-"))
        #expect(runner.store.list().map(\.runID).sorted() == [generated.runID, "same"].sorted())
    }

    @Test func cancelStopsRunningStepsAndResumeFinishes() async throws {
        let (dir, plane, runner) = fixture()
        defer { dir.cleanup() }
        let pidFile = dir.sub("pid")
        let gate = dir.sub("gate")
        let spec = FlowSpec(steps: [
            Sh.step("gen", Sh.put("df", bytes: 2048), outputs: ["df"]),
            Sh.step(
                "wait", "echo $$ > \(pidFile); while [ ! -f \(gate) ]; do sleep 0.05; done; " + Sh.put("x", bytes: 10),
                inputs: ["df"], outputs: ["x"]),
            Sh.step("end", Sh.getLocal("x"), inputs: ["x"]),
        ])
        let task = Task.onBlockingPool { try await runner.run(spec: spec, options: options("r9")) }
        #expect(await eventually { !readFile(pidFile).isEmpty })
        task.cancel()
        let record = try await task.value
        #expect(record.state == .cancelled)
        #expect(record.step("gen")?.state == .succeeded)
        #expect(record.step("wait")?.state == .cancelled)
        #expect(record.step("end")?.state == .cancelled)
        #expect(record.objectsKept)
        let pid = try #require(Int32(readFile(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(await eventually { !processAlive(pid) })
        #expect(record.message?.contains("trellis flow resume r9") == true)

        // Resume: gen is reused (its output is still resident), the rest runs.
        _ = FileManager.default.createFile(atPath: gate, contents: nil)
        let resumed = try await runner.resume(runID: "r9", options: options("ignored"))
        #expect(resumed.state == .succeeded, "\(resumed.message ?? "")")
        #expect(resumed.resumes == 1)
        #expect(resumed.step("gen")?.reused == true)
        #expect(resumed.step("gen")?.attempts == 1)
        #expect(resumed.step("wait")?.attempts == 2)
        #expect(resumed.step("wait")?.inputs.first?.localBytes == 2048)
        #expect(plane.names(on: 0).isEmpty && plane.names(on: 1).isEmpty)
        await #expect(throws: RunStoreError.self) { _ = try await runner.resume(runID: "r9") }
    }

    @Test func resumeRerunsOnlyFailedAndDownstreamReusingResidentObjects() async throws {
        let (dir, plane, runner) = fixture()
        defer { dir.cleanup() }
        let genCount = dir.sub("gen.count")
        let broken = dir.sub("broken")
        _ = FileManager.default.createFile(atPath: broken, contents: nil)
        let spec = FlowSpec(steps: [
            Sh.step("gen", "echo x >> \(genCount); " + Sh.put("df", bytes: 700), outputs: ["df"]),
            Sh.step("prep", Sh.getLocal("df") + "; " + Sh.put("x", bytes: 70), inputs: ["df"], outputs: ["x"]),
            Sh.step("train", "[ ! -f \(broken) ] && " + Sh.getLocal("x") + " && " + Sh.put("m", bytes: 7), inputs: ["x"], outputs: ["m"]),
            Sh.step("test", Sh.getLocal("m") + " && " + Sh.getLocal("x"), inputs: ["m", "x"]),
        ])
        let first = try await runner.run(spec: spec, options: options("r10"))
        #expect(first.state == .failed)
        #expect(first.step("test")?.state == .upstreamFailed)
        try FileManager.default.removeItem(atPath: broken)
        let second = try await runner.resume(runID: "r10", options: options("r10"))
        #expect(second.state == .succeeded, "\(second.message ?? "")")
        #expect(readFile(genCount) == "x\n")  // gen ran once
        #expect(second.step("gen")?.reused == true)
        #expect(second.step("prep")?.reused == true)
        #expect(second.step("train")?.reused == false)
        #expect(second.step("train")?.attempts == 2)
        #expect(second.step("train")?.inputs.first?.movedBytes == 0)
        #expect(plane.names(on: 0).isEmpty && plane.names(on: 1).isEmpty)
    }

    @Test func resumeRebuildsEvictedInputs() async throws {
        let (dir, plane, runner) = fixture(1)
        defer { dir.cleanup() }
        let broken = dir.sub("broken")
        _ = FileManager.default.createFile(atPath: broken, contents: nil)
        let spec = FlowSpec(steps: [
            Sh.step("gen", Sh.put("df", bytes: 10), outputs: ["df"]),
            Sh.step("use", "[ ! -f \(broken) ] && " + Sh.getLocal("df"), inputs: ["df"]),
        ])
        #expect(try await runner.run(spec: spec, options: options("r11")).state == .failed)
        try await plane.delete(["r11/df"], on: plane.replicas[0])  // evicted meanwhile
        try FileManager.default.removeItem(atPath: broken)
        let again = try await runner.resume(runID: "r11")
        #expect(again.state == .succeeded)
        #expect(again.step("gen")?.reused == false)
        #expect(again.step("gen")?.attempts == 2)
    }

    @Test func namesDoNotCollideAcrossRuns() async throws {
        let (dir, plane, runner) = fixture(1)
        defer { dir.cleanup() }
        let spec = FlowSpec(steps: [Sh.step("p", Sh.put("x", bytes: 1), outputs: ["x"])])
        _ = try await runner.run(spec: spec, options: options("ra", keep: true))
        _ = try await runner.run(spec: spec, options: options("rb", keep: true))
        #expect(plane.names(on: 0) == ["ra/x", "rb/x"])
    }

    @Test func parallelIndependentSteps() async throws {
        let (dir, _, runner) = fixture()
        defer { dir.cleanup() }
        // A barrier instead of a stopwatch: each step checks in, then waits (bounded) until all
        // four have; run one after another, the first would give up and fail.
        let barrier = dir.sub("barrier")
        try FileManager.default.createDirectory(atPath: barrier, withIntermediateDirectories: true)
        func checkIn(_ name: String) -> String {
            "touch \(barrier)/\(name); for i in $(seq 1200); do "
                + "[ $(ls \(barrier) | wc -l) -ge 4 ] && exit 0; sleep 0.1; done; exit 1"
        }
        let spec = FlowSpec(maxParallel: 4, steps: (0..<4).map { Sh.step("s\($0)", checkIn("s\($0)")) })
        let record = try await runner.run(spec: spec, options: options("r12"))
        #expect(record.state == .succeeded)
        #expect(Set(record.steps.compactMap(\.replica)) == [0, 1])
    }

    @Test func stepEnvironment() async throws {
        let (dir, _, runner) = fixture()
        defer { dir.cleanup() }
        let out = dir.sub("env")
        var step = Sh.step("show", "env | grep -E '^(TRELLIS_|VINEYARD_|MINE)' | sort > \(out)", after: [])
        step.env = ["MINE": "1", "TRELLIS_STEP": "cannot-override"]
        let record = try await runner.run(spec: FlowSpec(steps: [step]), options: options("r13"))
        #expect(record.state == .succeeded)
        let env = readFile(out)
        #expect(env.contains("TRELLIS_RUN_ID=r13\n"))
        #expect(env.contains("TRELLIS_STEP=show\n"))
        #expect(env.contains("TRELLIS_REPLICA=0\n"))
        #expect(env.contains("TRELLIS_NAME_PREFIX=r13/\n"))
        #expect(env.contains("VINEYARD_IPC_SOCKET=\(dir.sub("store"))/r0\n"))
        #expect(env.contains("MINE=1\n"))
    }
}
