import Foundation
import Testing
@testable import TrellisFlow

#if canImport(Glibc)
import Glibc
import TrellisTestSupport
#endif

/// The repository root (this file is Tests/TrellisFlowTests/PythonTests.swift).
func repoRoot() -> String {
    var buf = [CChar](repeating: 0, count: Int(PATH_MAX))
    let file = realpath(#filePath, &buf).map { _ in String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) } ?? #filePath
    return URL(fileURLWithPath: file).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
}

/// Runs a command to completion; returns (status, stdout+stderr).
func shell(_ argv: [String], env: [String: String] = ProcessInfo.processInfo.environment, cwd: String? = nil) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = argv
    p.environment = env
    if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Python steps through the bootstrap, with a fake `vineyard` package that keeps objects as
/// files in the replica's directory (so names, placement and "local" reads are observable).
@Suite(.serialized, .onBlockingPool) struct PythonStepTests {
    func fixture(_ replicas: Int = 2) throws -> (TempDir, DirectoryDataPlane, FlowRunner, FlowRunOptions) {
        let dir = TempDir("trpy")
        let plane = DirectoryDataPlane(root: dir.sub("store"), count: replicas)
        let runner = FlowRunner(dataPlane: plane, replicas: plane.replicas, store: RunStore(root: dir.sub("runs")))
        try FakeVineyard.install(in: dir.sub("pylib"))
        var env = ProcessInfo.processInfo.environment
        env["PYTHONPATH"] = dir.sub("pylib") + ":" + repoRoot() + "/python"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        let options = FlowRunOptions(runID: nil, killGrace: 0.5, environment: env)
        return (dir, plane, runner, options)
    }

    @Test func functionStepsShareNamespacedObjects() async throws {
        let (dir, plane, runner, base) = try fixture()
        defer { dir.cleanup() }
        let out = dir.sub("result.txt")
        try """
            def produce():
                import vineyard
                vineyard.put({"rows": [1, 2, 3]}, name="table", persist=True)

            def consume():
                import os
                import vineyard
                t = vineyard.get(name="table", fetch=True)
                # Shipped as a file, never through a shell: these stay literal.
                note = "$HOME `date` \\\\n"
                with open(\(pyString(out)), "w") as f:
                    f.write("%d %s %s" % (sum(t["rows"]), note, os.environ["TRELLIS_STEP"]))
            """.write(toFile: dir.sub("steps.py"), atomically: true, encoding: .utf8)
        let spec = FlowSpec(
            name: "py", steps: [
                StepSpec(name: "other", action: .command(["true"])),
                StepSpec(name: "produce", action: .python(PythonTarget(file: "steps.py", function: "produce")), outputs: ["table"]),
                StepSpec(name: "consume", action: .python(PythonTarget(file: "steps.py", function: "consume")), inputs: ["table"]),
            ], baseDirectory: dir.path)
        var options = base
        options.runID = "p1"
        options.keepObjects = true
        let record = try await runner.run(spec: spec, options: options)
        let consumeLog = (try? runner.store.logs(run: "p1", step: "consume").stderr) ?? ""
        #expect(record.state == .succeeded, "\(record.message ?? "") \(consumeLog)")
        #expect(readFile(out) == #"6 $HOME `date` \n consume"#)
        let producer = try #require(record.step("produce")?.replica)
        #expect(record.step("consume")?.replica == producer)
        // The step said name="table"; the store holds the run's name.
        #expect(plane.names(on: producer) == ["p1/table"])
        #expect(record.step("produce")?.metrics["put_count"] == 1)
        #expect(record.step("consume")?.metrics["get_count"] == 1)
        #expect(record.step("consume")?.metrics["get_seconds"] != nil)
    }

    @Test func pythonExceptionFailsTheStep() async throws {
        let (dir, _, runner, base) = try fixture(1)
        defer { dir.cleanup() }
        try "def boom():\n    raise ValueError('bad data in step')\n".write(toFile: dir.sub("s.py"), atomically: true, encoding: .utf8)
        let spec = FlowSpec(
            steps: [StepSpec(name: "boom", action: .python(PythonTarget(file: "s.py", function: "boom")))],
            baseDirectory: dir.path)
        var options = base
        options.runID = "p2"
        let record = try await runner.run(spec: spec, options: options)
        #expect(record.step("boom")?.state == .failed)
        #expect(record.step("boom")?.exitCode == 1)
        #expect(try runner.store.logs(run: "p2", step: "boom").stderr.contains("ValueError: bad data in step"))
    }

    @Test func scriptsRunThroughTheBootstrapModule() async throws {
        let (dir, plane, runner, base) = try fixture(1)
        defer { dir.cleanup() }
        try """
            import sys, vineyard
            vineyard.put(sys.argv[1], name="arg", persist=True)
            """.write(toFile: dir.sub("script.py"), atomically: true, encoding: .utf8)
        try "import vineyard\nassert vineyard.get(name='arg') == 'hello'\n".write(toFile: dir.sub("check.py"), atomically: true, encoding: .utf8)
        let spec = FlowSpec(
            steps: [
                .command("put", ["python3", "-m", "trellis_step", "script.py", "hello"], outputs: ["arg"]),
                StepSpec(name: "check", action: .python(PythonTarget(file: "check.py")), inputs: ["arg"]),
            ], baseDirectory: dir.path)
        var options = base
        options.runID = "p3"
        options.keepObjects = true
        let record = try await runner.run(spec: spec, options: options)
        #expect(record.state == .succeeded, "\(record.message ?? "")")
        #expect(plane.names(on: 0) == ["p3/arg"])
    }

    /// The Python front door: the seed's chaining style produces the same model, with inputs
    /// and outputs found in the functions' sources, and runs through the runner.
    @Test func pythonFrontDoor() async throws {
        let (dir, plane, runner, base) = try fixture()
        defer { dir.cleanup() }
        let mse = dir.sub("mse.txt")
        try """
            from trellis.flow import Flow, Runtime

            def preprocess():
                import vineyard
                data = list(range(10))
                vineyard.put(data[:8], name="x_train", persist=True)
                vineyard.put(data[8:], name="x_test", persist=True)

            def train():
                import vineyard
                x = vineyard.get(name="x_train", fetch=True)
                vineyard.put(sum(x) / len(x), name="model", persist=True)

            def test():
                import vineyard
                m = vineyard.get(name="model", fetch=True)
                x = vineyard.get(name="x_test", fetch=True)
                err = sum((v - m) ** 2 for v in x) / len(x)
                with open(\(pyString(mse)), "w") as f:
                    f.write(str(err))

            flow = Flow(runtime=Runtime(replicas=2, size="64Mi"), name="seed") \\
                .process(preprocess).process(train).process(test, retries=1, timeout=60)
            print(flow.save(\(pyString(dir.sub("gen")))))
            """.write(toFile: dir.sub("front.py"), atomically: true, encoding: .utf8)
        let (status, output) = try shell(["python3", dir.sub("front.py")], env: base.environment, cwd: dir.path)
        #expect(status == 0, "\(output)")
        let spec = try FlowSpec.load(file: output.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(spec.name == "seed")
        #expect(spec.runtime == RuntimeSpec(replicas: 2, size: "64Mi"))
        #expect(spec.steps.map(\.name) == ["preprocess", "train", "test"])
        #expect(spec.steps[0].outputs == ["x_train", "x_test"])
        #expect(spec.steps[1].inputs == ["x_train"])
        #expect(spec.steps[1].outputs == ["model"])
        #expect(spec.steps[1].after == ["preprocess"])
        #expect(spec.steps[2].inputs == ["model", "x_test"])
        #expect(spec.steps[2].retries == 1)
        #expect(spec.steps[2].timeout == 60)
        guard case .python(let target)? = spec.steps[0].action else {
            Issue.record("not a python step")
            return
        }
        #expect(target.function == "preprocess")
        // Written relative to the flow's base directory, so a cluster run can ship it.
        #expect(!target.file.hasPrefix("/"))
        #expect(spec.baseDirectory == dir.path)
        #expect(readFile(dir.path + "/" + target.file).contains("def preprocess():"))

        var options = base
        options.runID = "front"
        let record = try await runner.run(spec: spec, options: options)
        #expect(record.state == .succeeded, "\(record.message ?? "")")
        #expect(readFile(mse) == "25.25")
        // One chain, every step next to its inputs.
        #expect(Set(record.steps.compactMap(\.replica)).count == 1)
        #expect(record.affinityViolations.isEmpty)
        #expect(plane.names(on: 0).isEmpty && plane.names(on: 1).isEmpty)
    }

    @Test func pythonUnitTests() throws {
        let root = repoRoot()
        var env = ProcessInfo.processInfo.environment
        env["PYTHONPATH"] = root + "/python"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        let (status, output) = try shell(
            ["python3", "-m", "unittest", "discover", "-s", root + "/python/tests", "-p", "test_flow.py"], env: env)
        #expect(status == 0, "\(output)")
    }
}

func pyString(_ s: String) -> String {
    "'" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
}
