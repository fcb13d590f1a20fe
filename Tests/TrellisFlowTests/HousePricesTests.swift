import Foundation
import Testing
@testable import TrellisFlow

#if canImport(Glibc)
import Glibc
import TrellisTestSupport
#endif

/// examples/house-prices, with a reduced row count: the flow file loads and validates, the
/// seed's steps run through the runner on two replicas (with the fake file-backed vineyard,
/// which refuses non-local reads), and the file-exchange baseline computes the same MSE.
/// Needs the project's Python environment (.venv with pandas and scikit-learn).
@Suite(.serialized, .onBlockingPool) struct HousePricesTests {
    let example = repoRoot() + "/examples/house-prices"
    let python = repoRoot() + "/.venv/bin/python"
    let rows = "20000"

    var hasPython: Bool {
        access(python, X_OK) == 0
            && ((try? shell([python, "-c", "import pandas, sklearn"]).0) ?? 1) == 0
    }

    @Test func flowFileIsValid() throws {
        let spec = try FlowSpec.load(file: example + "/flow.yaml")
        try spec.validate()
        #expect(spec.runtime.replicas == 2)
        #expect(spec.steps.map(\.name) == ["generate", "preprocess", "train", "test"])
        #expect(spec.baseDirectory == example)
    }

    @Test func pipelineRunsOnTwoReplicasWithEveryStepNextToItsInputs() async throws {
        guard hasPython else { return }
        let dir = TempDir("trhp")
        defer { dir.cleanup() }
        let plane = DirectoryDataPlane(root: dir.sub("store"), count: 2)
        try FakeVineyard.install(in: dir.sub("pylib"))
        let runner = FlowRunner(dataPlane: plane, replicas: plane.replicas, store: RunStore(root: dir.sub("runs")))
        var env = ProcessInfo.processInfo.environment
        env["PYTHONPATH"] = dir.sub("pylib")
        env["HOUSE_ROWS"] = rows
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        let spec = try FlowSpec.load(file: example + "/flow.yaml")
        let record = try await runner.run(
            spec: spec, options: FlowRunOptions(runID: "hp", pythonExecutable: python, environment: env))
        let logs = record.steps.map { (try? runner.store.logs(run: "hp", step: $0.name).stderr) ?? "" }.joined()
        #expect(record.state == .succeeded, "\(record.message ?? "")\n\(logs)")
        #expect(Set(record.steps.compactMap(\.replica)).count == 1)
        #expect(record.affinityViolations.isEmpty)
        #expect(record.steps.dropFirst().allSatisfy { $0.placementReason == .dataAffinity })
        #expect(record.steps.flatMap(\.inputs).allSatisfy { $0.movedBytes == 0 })
        #expect(record.step("preprocess")?.outputs.count == 4)
        #expect((record.step("test")?.metrics["get_count"] ?? 0) == 3)
        let out = try runner.store.logs(run: "hp", step: "test").stdout
        let mse = try #require(out.split(separator: "\n").first { $0.hasPrefix("MSE: ") }.flatMap { Double($0.dropFirst(5)) })

        // The baseline: same pipeline through pickle files; same numbers.
        let (status, text) = try shell([python, example + "/baseline_files.py", "--rows", rows, "--json"], cwd: example)
        #expect(status == 0, "\(text)")
        let result = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        let baseline = try #require(result?["mse"] as? Double)
        #expect(abs(baseline - mse) <= 1e-6 * abs(mse))
        #expect((result?["handoff_seconds"] as? Double ?? 0) > 0)
    }

    /// End to end through the real CLI and daemons (`python flow.py`) with the built binary
    /// (TRELLIS_BIN or .build/debug/trellis); TRELLIS_FLOW_E2E=0 skips it.
    @Test func endToEndThroughTheCLI() throws {
        let env = ProcessInfo.processInfo.environment
        let bin = env["TRELLIS_BIN"] ?? repoRoot() + "/.build/debug/trellis"
        guard env["TRELLIS_FLOW_E2E"] != "0", access(bin, X_OK) == 0, hasPython else { return }
        let home = TempDir("trhome")
        defer { home.cleanup() }
        var e = env
        e["TRELLIS_HOME"] = home.path
        e["TRELLIS_BIN"] = bin
        e["TRELLIS_PYTHON"] = python
        let (status, text) = try shell([python, example + "/flow.py", "--rows", rows, "--size", "512Mi"], env: e, cwd: example)
        #expect(status == 0, "\(text)")
        #expect(text.contains("MSE: "))
        #expect(text.contains("steps off their inputs' replica: none"))
    }
}
