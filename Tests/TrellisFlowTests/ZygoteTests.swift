import Foundation
import Testing

@testable import TrellisFlow

#if canImport(Glibc)
import Glibc
import TrellisTestSupport
#endif

/// Python steps run in workers forked from the run's warm zygote (modules preloaded), with
/// the same supervision as plain children: exit codes, timeouts, process groups, logs.
@Suite(.serialized, .onBlockingPool) struct ZygoteTests {
    let python = repoRoot() + "/.venv/bin/python"

    func fixture() -> (TempDir, FlowRunner) {
        let dir = TempDir("trzyg")
        let plane = DirectoryDataPlane(root: dir.sub("store"), count: 1)
        return (dir, FlowRunner(dataPlane: plane, replicas: plane.replicas, store: RunStore(root: dir.sub("runs"))))
    }

    func options(_ id: String, zygote: Bool = true) -> FlowRunOptions {
        var env = ProcessInfo.processInfo.environment
        env["TRELLIS_ZYGOTE"] = zygote ? "1" : "0"
        env["TRELLIS_PRELOAD"] = "json,wave"  // light modules: the test is about mechanics
        return FlowRunOptions(runID: id, pythonExecutable: python, killGrace: 0.3, environment: env)
    }

    func step(_ name: String, _ fn: String, timeout: Double? = nil, after: [String] = []) -> StepSpec {
        StepSpec(name: name, action: .python(PythonTarget(file: "steps.py", function: fn)), after: after, timeout: timeout)
    }

    @Test func stepsRunInForkedWorkersWithTheirOwnEnvironmentAndExitCodes() async throws {
        guard access(python, X_OK) == 0 else { return }
        let (dir, runner) = fixture()
        defer { dir.cleanup() }
        try """
            import os, sys, time

            def wait_for_zygote():
                # The first step may start before the zygote listens (it then runs cold).
                for _ in range(200):
                    if os.path.exists(os.path.join(os.environ["PYTHONPATH"].split(":")[0], "z.sock")):
                        return
                    time.sleep(0.05)

            def warm():
                print("preloaded" if "wave" in sys.modules else "cold", os.environ["TRELLIS_STEP"], os.getcwd())
                sys.stderr.write("to stderr\\n")

            def fails():
                raise SystemExit(7)

            def slow():
                with open(os.environ["PID_FILE"] + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.replace(os.environ["PID_FILE"] + ".tmp", os.environ["PID_FILE"])
                time.sleep(120)
            """.write(toFile: dir.sub("steps.py"), atomically: true, encoding: .utf8)
        var spec = FlowSpec(name: "z", steps: [
            step("first", "wait_for_zygote"),
            step("warm", "warm", after: ["first"]),
            step("fails", "fails", after: ["warm"]),
        ], baseDirectory: dir.path)
        let record = try await runner.run(spec: spec, options: options("z1"))
        #expect(record.step("warm")?.state == .succeeded)
        let logs = try runner.store.logs(run: "z1", step: "warm")
        #expect(logs.stdout.contains("preloaded warm \(dir.path)"), "\(logs.stdout)")
        #expect(logs.stderr.contains("to stderr"))
        let failed = try #require(record.step("fails"))
        #expect(failed.state == .failed && failed.exitCode == 7)

        // A timeout ends the forked worker too (it lives in a session of its own). The limit
        // leaves a busy machine ample time to fork the worker and let it write its pid.
        let pidFile = dir.sub("slow.pid")
        spec = FlowSpec(name: "z", steps: [step("first", "wait_for_zygote"), step("slow", "slow", timeout: 10, after: ["first"])],
                        baseDirectory: dir.path)
        var opts = options("z2")
        opts.environment["PID_FILE"] = pidFile
        let timed = try await runner.run(spec: spec, options: opts)
        #expect(timed.step("slow")?.timedOut == true)
        let written = readFile(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)
        let worker = try #require(Int32(written), "the worker did not write its pid within the step's 10 s: '\(written)'")
        #expect(await eventually { !processAlive(worker) })
    }

    @Test("a run's zygote preloads the installed modules its steps import, never the steps' own modules")
    func stepImportsArePreloaded() async throws {
        guard access(python, X_OK) == 0 else { return }
        let (dir, runner) = fixture()
        defer { dir.cleanup() }
        // localmod lies beside the steps (and is on PYTHONPATH, so the zygote could find
        // it): importing it leaves a mark, which must come from the step's own import only.
        try """
            import os
            with open(os.environ["MARKS"], "a") as f:
                f.write("localmod imported by %d\\n" % os.getpid())
            """.write(toFile: dir.sub("localmod.py"), atomically: true, encoding: .utf8)
        try """
            import os, sys, time

            def wait_for_zygote():
                for _ in range(200):
                    if os.path.exists(os.path.join(os.environ["PYTHONPATH"].split(":")[0], "z.sock")):
                        return
                    time.sleep(0.05)

            def uses():
                from xml.dom import minidom  # installed (standard library): preloaded
                import localmod  # the step's own: imported here, by the step
                import no_such_module_anywhere  # noqa: a step that fails on it; the zygote lives on

            def check():
                print("minidom", "xml.dom.minidom" in sys.modules, "localmod", "localmod" in sys.modules)
            """.write(toFile: dir.sub("steps.py"), atomically: true, encoding: .utf8)
        let spec = FlowSpec(name: "z", steps: [
            step("first", "wait_for_zygote"),
            step("check", "check", after: ["first"]),
            StepSpec(name: "never", action: .python(PythonTarget(file: "steps.py", function: "uses")), after: ["check"]),
        ], baseDirectory: dir.path)
        for (run, steps) in [("zp1", "1"), ("zp2", "0")] {
            var opts = options(run)
            opts.environment["MARKS"] = dir.sub("marks-\(run)")
            opts.environment["PYTHONPATH"] = dir.path
            opts.environment["TRELLIS_PRELOAD_STEPS"] = steps
            let record = try await runner.run(spec: spec, options: opts)
            #expect(record.step("check")?.state == .succeeded)
            let out = try runner.store.logs(run: run, step: "check").stdout
            #expect(out.contains("minidom \(steps == "1" ? "True" : "False") localmod False"), "\(run): \(out)")
            #expect(record.step("never")?.state == .failed)  // no_such_module_anywhere
            // localmod was imported once, by the step (not by the zygote: its pid is not the mark's)
            let marks = readFile(dir.sub("marks-\(run)")).split(separator: "\n")
            #expect(marks.count == 1, "\(run): \(marks)")
        }
    }

    @Test func withoutTheZygoteStepsStartCold() async throws {
        guard access(python, X_OK) == 0 else { return }
        let (dir, runner) = fixture()
        defer { dir.cleanup() }
        try """
            import sys
            def warm():
                print("preloaded" if "wave" in sys.modules else "cold")
            """.write(toFile: dir.sub("steps.py"), atomically: true, encoding: .utf8)
        let spec = FlowSpec(name: "z", steps: [step("warm", "warm")], baseDirectory: dir.path)
        let record = try await runner.run(spec: spec, options: options("z3", zygote: false))
        #expect(record.step("warm")?.state == .succeeded)
        #expect(try runner.store.logs(run: "z3", step: "warm").stdout.contains("cold"))
    }
}
