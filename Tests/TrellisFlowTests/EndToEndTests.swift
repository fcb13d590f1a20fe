import Foundation
import Testing
@testable import TrellisFlow

#if canImport(Glibc)
import Glibc
import TrellisTestSupport
#endif

/// Real flows on two real replica daemons (`trellis serve` + the runtime's private etcd), with
/// Python steps using the upstream vineyard client. Needs the built `trellis` binary
/// (TRELLIS_BIN or .build/debug/trellis), etcd, and the project's .venv; set
/// TRELLIS_FLOW_REAL=0 to skip them.
@Suite(.serialized, .onBlockingPool) struct EndToEndTests {
    let python = repoRoot() + "/.venv/bin/python"

    func prerequisites() -> String? {
        let env = ProcessInfo.processInfo.environment
        guard env["TRELLIS_FLOW_REAL"] != "0" else { return nil }
        let bin = env["TRELLIS_BIN"] ?? repoRoot() + "/.build/debug/trellis"
        guard access(bin, X_OK) == 0, etcdBinary() != nil, access(python, X_OK) == 0 else { return nil }
        return bin
    }

    @Test func consumerRunsWhereTheDataIsAndReadsZeroCopy() async throws {
        guard let bin = prerequisites() else { return }
        let dir = TempDir("tre2e")
        defer { dir.cleanup() }
        let rt = LocalRuntime(directory: dir.sub("rt"), trellisBinary: bin, etcdBinary: etcdBinary(), startTimeout: 60)
        let state = try await rt.up(RuntimeSpec(replicas: 2, size: "256Mi"))
        try await stopping(rt) {
            try await zeroCopy(state, dir, plane: try VineyardPythonDataPlane(python: python), run: "e2e")
            // the CLI's data plane: it also hands each step the ids its inputs resolved to
            try await zeroCopy(state, dir, plane: try ClientDataPlane(replicas: state.replicas), run: "e2eids", ids: true)
        }
    }

    func zeroCopy(_ state: RuntimeState, _ dir: TempDir, plane: any DataPlane, run: String, ids: Bool = false) async throws {
        let runner = FlowRunner(dataPlane: plane, replicas: state.replicas, store: RunStore(root: dir.sub("runs")))
        try """
            def put_big():
                import numpy as np, vineyard
                vineyard.put(np.arange(4_000_000, dtype=np.int64), name="big", persist=True)

            def put_small():
                import numpy as np, vineyard
                vineyard.put(np.ones(100_000), name="small", persist=True)

            def _local(name):
                import vineyard
                c = vineyard.connect()
                meta = c.get_meta(c.get_name(name), sync_remote=True)
                from vineyard.core.client import _is_blob
                def blobs(m):
                    if _is_blob(m.id):
                        return [m]
                    return [b for _, v in m.items() if hasattr(v, "id") for b in blobs(v)]
                return all(b.instance_id == c.instance_id for b in blobs(meta))

            def use_big():
                import json, os, numpy as np, vineyard
                assert _local("big"), "big is not local"
                ids = json.loads(os.environ["TRELLIS_INPUT_IDS"])
                if os.environ["EXPECT_IDS"] == "1":
                    c = vineyard.connect()
                    raw = c.default_client()  # the daemon's answer, not the bootstrap's
                    shared = os.environ["TRELLIS_NAME_PREFIX"] + "big"
                    assert ids == {"big": str(int(raw.get_name(shared)))}, ids
                    # the step's lookups of "big" are answered from the ids: rebind the name
                    # to another object for a moment, and the step still reads big
                    other = c.put(np.zeros(2), persist=True)
                    raw.put_name(other, shared)
                    try:
                        assert vineyard.get(name="big").shape == (4_000_000,)
                    finally:
                        raw.put_name(vineyard.ObjectID(int(ids["big"])), shared)
                        c.delete(other)
                else:
                    assert ids == {}, ids
                # nothing was moved here: the runner says so, and a name bound where a local
                # copy's would be is not looked at (only moved inputs' copies are)
                assert json.loads(os.environ["TRELLIS_LOCAL_COPIES"]) == [], os.environ["TRELLIS_LOCAL_COPIES"]
                decoy = "big@r" + os.environ["TRELLIS_REPLICA"]
                c = vineyard.connect()
                d = c.put(np.zeros(3), name=decoy, persist=True)
                a = vineyard.get(name="big")  # no fetch: must still be local
                c.drop_name(decoy)
                c.delete(d)
                assert a.shape == (4_000_000,), "the decoy was read: %s" % (a.shape,)
                assert not a.flags.owndata  # a view of the store's memory: zero-copy
                assert int(a[-1]) == 3_999_999
                vineyard.put(a[:10].copy(), name="head", persist=True)

            def join():
                import json, os, vineyard
                assert json.loads(os.environ["TRELLIS_LOCAL_COPIES"]) == ["small"], os.environ["TRELLIS_LOCAL_COPIES"]
                assert _local("big") and _local("small"), "inputs not local"
                b = vineyard.get(name="big")
                s = vineyard.get(name="small")
                print("joined", int(b.sum()) + int(s.sum()))
            """.write(toFile: dir.sub("steps.py"), atomically: true, encoding: .utf8)
        func py(_ name: String, _ fn: String, inputs: [String] = [], outputs: [String] = []) -> StepSpec {
            StepSpec(name: name, action: .python(PythonTarget(file: "steps.py", function: fn)), inputs: inputs, outputs: outputs)
        }
        let spec = FlowSpec(
            name: "e2e", runtime: RuntimeSpec(replicas: 2, size: "256Mi"),
            steps: [
                py("big", "put_big", outputs: ["big"]),
                py("small", "put_small", outputs: ["small"]),
                py("use", "use_big", inputs: ["big"], outputs: ["head"]),
                py("join", "join", inputs: ["big", "small"]),
            ], baseDirectory: dir.path)
        var env = ProcessInfo.processInfo.environment
        env["EXPECT_IDS"] = ids ? "1" : "0"
        let record = try await runner.run(
            spec: spec, options: FlowRunOptions(runID: run, keepObjects: false, pythonExecutable: python, environment: env))
        let logs = record.steps.map { "\($0.name): " + ((try? runner.store.logs(run: run, step: $0.name).stderr) ?? "") }
        #expect(record.state == .succeeded, "\(record.message ?? "")\n\(logs.joined(separator: "\n"))")
        let big = try #require(record.step("big")?.replica)
        let small = try #require(record.step("small")?.replica)
        #expect(big != small)
        #expect(record.step("use")?.replica == big)
        #expect(record.step("use")?.inputs.first?.localBytes == 32_000_000)
        let join = try #require(record.step("join"))
        #expect(join.replica == big)
        let moved = try #require(join.inputs.first { $0.name == "small" })
        #expect(moved.movedBytes == 800_000)
        #expect(moved.residentOn == small)
        #expect(record.affinityViolations.isEmpty)
        #expect(try runner.store.logs(run: run, step: "join").stdout.contains("joined"))
        // Success: the run's objects are gone from both replicas.
        let left = try await plane.residency(of: ["\(run)/big", "\(run)/small", "\(run)/head"], on: state.replicas)
        #expect(left.values.allSatisfy { $0.values.allSatisfy { $0 == 0 } }, "\(left)")
    }

    /// examples/house-prices on two real replicas (HOUSE_ROWS rows, default 20000): every step
    /// next to its inputs, nothing moved, same MSE as the file baseline; prints the numbers.
    @Test func housePricesOnTwoReplicas() async throws {
        guard let bin = prerequisites() else { return }
        let rows = ProcessInfo.processInfo.environment["HOUSE_ROWS"] ?? "20000"
        let dir = TempDir("trhp2")
        defer { dir.cleanup() }
        let rt = LocalRuntime(directory: dir.sub("rt"), trellisBinary: bin, etcdBinary: etcdBinary(), startTimeout: 60)
        let state = try await rt.up(RuntimeSpec(replicas: 2, size: "2Gi"))
        try await stopping(rt) { try await housePrices(state, rows) }
    }

    func housePrices(_ state: RuntimeState, _ rows: String) async throws {
        let dir = TempDir("trhp2")
        defer { dir.cleanup() }
        let plane = try VineyardPythonDataPlane(python: python)
        let runner = FlowRunner(dataPlane: plane, replicas: state.replicas, store: RunStore(root: dir.sub("runs")))
        var env = ProcessInfo.processInfo.environment
        env["HOUSE_ROWS"] = rows
        let spec = try FlowSpec.load(file: repoRoot() + "/examples/house-prices/flow.yaml")
        let record = try await runner.run(
            spec: spec, options: FlowRunOptions(runID: "hp", pythonExecutable: python, environment: env))
        let logs = record.steps.map { "\($0.name): " + ((try? runner.store.logs(run: "hp", step: $0.name).stderr) ?? "") }
        #expect(record.state == .succeeded, "\(record.message ?? "")\n\(logs.joined(separator: "\n"))")
        #expect(Set(record.steps.compactMap(\.replica)).count == 1)
        #expect(record.affinityViolations.isEmpty)
        #expect(record.steps.flatMap(\.inputs).allSatisfy { $0.movedBytes == 0 && $0.localBytes > 0 })
        let mse = try runner.store.logs(run: "hp", step: "test").stdout
        #expect(mse.contains("MSE: "))
        var put = 0.0, get = 0.0
        for s in record.steps {
            put += s.metrics["put_seconds"] ?? 0
            get += s.metrics["get_seconds"] ?? 0
            print("house-prices \(s.name): r\(s.replica ?? -1) \(s.placementReason?.rawValue ?? "-") "
                + "\(formatFixed(s.duration ?? 0, digits: 2))s put \(formatFixed(s.metrics["put_seconds"] ?? 0, digits: 3))s "
                + "get \(formatFixed(s.metrics["get_seconds"] ?? 0, digits: 3))s local-in \(s.inputs.reduce(0) { $0 + $1.localBytes }) "
                + "runner \(formatFixed((s.overhead ?? 0) * 1000, digits: 1))ms data-plane \(formatFixed((s.dataPlaneSeconds ?? 0) * 1000, digits: 1))ms")
        }
        print("house-prices \(rows) rows: \(mse.trimmingCharacters(in: .whitespacesAndNewlines)); wall \(formatFixed(record.duration ?? 0, digits: 2))s; handoff put \(formatFixed(put, digits: 3))s + get \(formatFixed(get, digits: 3))s")
    }
}

/// Runs `body`, then stops the runtime whether it threw or not (a `defer` cannot await, and
/// the daemons live in their own sessions: they would outlive the test process).
func stopping(_ rt: LocalRuntime, _ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch {
        try? await rt.down()
        throw error
    }
    try await rt.down()
}
