import Foundation
import Testing
@testable import TrellisFlow

#if canImport(Glibc)
import Glibc
import TrellisTestSupport
#endif

/// A stand-in for `trellis serve`: records its arguments, listens on --socket, exits on SIGTERM.
let fakeDaemon = """
    import os, signal, socket, sys, json
    args = sys.argv[1:]
    path = args[args.index("--socket") + 1]
    with open(path + ".args", "w") as f:
        json.dump(args, f)
    if os.environ.get("FAKE_DAEMON_FAIL"):
        print("cannot start: injected failure", file=sys.stderr)
        sys.exit(3)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(16)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        c, _ = s.accept()
        c.close()
    """

func etcdBinary() -> String? {
    let candidates = [ProcessInfo.processInfo.environment["TRELLIS_ETCD"], "/usr/bin/etcd", repoRoot() + "/.venv/bin/etcd"]
    return candidates.compactMap { $0 }.first { access($0, X_OK) == 0 }
}

@Suite(.serialized, .onBlockingPool) struct RuntimeTests {
    func runtime(_ dir: TempDir, etcd: String? = nil, env: [String: String] = ProcessInfo.processInfo.environment) throws -> LocalRuntime {
        try fakeDaemon.write(toFile: dir.sub("fake_daemon.py"), atomically: true, encoding: .utf8)
        return LocalRuntime(
            directory: dir.sub("rt"), trellisBinary: "python3", serveCommand: [dir.sub("fake_daemon.py")],
            etcdBinary: etcd, startTimeout: 20, environment: env)
    }

    func args(_ r: Replica) throws -> [String] {
        try JSONDecoder().decode([String].self, from: Data(readFile(r.socket + ".args").utf8))
    }

    @Test func hugePagesReachTheReplicas() async throws {
        let dir = TempDir("trrth")
        defer { dir.cleanup() }
        let rt = try runtime(dir, etcd: "/nonexistent/etcd")
        let spec = try FlowSpec.load(yaml: "runtime: {replicas: 1, size: 64Mi, huge_pages: true}\nsteps: [{name: a, command: [true]}]")
        #expect(spec.runtime.hugePages)
        let state = try await rt.up(spec.runtime)
        let a = try? args(state.replicas[0])
        try await rt.down()
        #expect(a.map { Array($0.suffix(2)) } == ["--huge_pages", "--reserve_memory"])
    }

    /// Replicas reserve their arenas only when together they take at most half of the
    /// available memory; a runtime asking for more than the machine has still starts.
    @Test func reservationOnlyWhenTheArenasFit() async throws {
        let gib = 1 << 30
        #expect(LocalRuntime.reservesMemory(replicas: 2, bytes: 2 * gib, available: 22 * gib))
        #expect(LocalRuntime.reservesMemory(replicas: 2, bytes: 2 * gib, available: 8 * gib))
        #expect(!LocalRuntime.reservesMemory(replicas: 2, bytes: 30 * gib, available: 22 * gib))
        #expect(!LocalRuntime.reservesMemory(replicas: 3, bytes: Int.max / 2, available: 22 * gib))
        #expect(LocalRuntime.reservesMemory(replicas: 1, bytes: 64 << 20, available: nil))

        let dir = TempDir("trrsv")
        defer { dir.cleanup() }
        let rt = try runtime(dir, etcd: "/nonexistent/etcd")
        let small = try await rt.up(RuntimeSpec(replicas: 1, size: "64Mi"))
        let smallArgs = try? args(small.replicas[0])
        try await rt.down()
        #expect(smallArgs?.last == "--reserve_memory")
        let huge = try await rt.up(RuntimeSpec(replicas: 1, size: "64Ti"))
        let hugeArgs = try? args(huge.replicas[0])
        try await rt.down()
        #expect(hugeArgs != nil && !(hugeArgs ?? []).contains("--reserve_memory"))
    }

    @Test func oneReplicaNeedsNothingExternal() async throws {
        let dir = TempDir("trrt")
        defer { dir.cleanup() }
        let rt = try runtime(dir, etcd: "/nonexistent/etcd")
        #expect(rt.status().state == nil)
        #expect(!rt.status().isUp)
        let state = try await rt.up(RuntimeSpec(replicas: 1, size: "64Mi"))
        #expect(state.replicas.count == 1)
        #expect(state.etcd == nil)
        let a = try args(state.replicas[0])
        #expect(a.starts(with: ["--socket", dir.sub("rt") + "/r0.sock", "--size", String(64 << 20), "--rpc_socket_port"]))
        #expect(Array(a.suffix(3)) == ["--meta", "local", "--reserve_memory"])
        #expect(Int(a[5]) == state.replicas[0].rpcPort)
        // Another invocation sees it through state.json.
        let other = LocalRuntime(directory: dir.sub("rt"), trellisBinary: "unused")
        let status = other.status()
        #expect(status.isUp)
        #expect(status.summary.contains("r0: up"))
        await #expect(throws: RuntimeError.self) { _ = try await rt.up(RuntimeSpec()) }
        try await other.down()
        #expect(!isAlive(state.processes[0].pid))
        #expect(rt.status().state == nil)
        #expect(!FileManager.default.fileExists(atPath: state.replicas[0].socket))
        try await other.down()  // idempotent
    }

    @Test func twoReplicasShareAPrivateEtcd() async throws {
        guard let etcd = etcdBinary() else { return }  // etcd-server not installed here
        let dir = TempDir("trrt")
        defer { dir.cleanup() }
        let rt = try runtime(dir, etcd: etcd)
        let state = try await rt.up(
            RuntimeSpec(replicas: 2, size: "32Mi", medium: .spill, spillDirectory: dir.sub("spill")), ephemeral: true)
        guard let e = state.etcd else {
            try await rt.down()
            Issue.record("no etcd in a 2-replica runtime")
            return
        }
        // The private etcd listens only on UNIX sockets that only the runtime's user can write.
        let clientSocket = try #require(e.clientSocket)
        #expect(socketAccepts(clientSocket))
        #expect(e.clientPort == 0 && e.peerPort == 0)
        var st = stat()
        #expect(lstat(clientSocket, &st) == 0 && st.st_mode & 0o022 == 0)
        // Its data lives as long as the runtime: on tmpfs (no fsync cost) when /dev/shm is
        // there, in a directory of its own that no one else can enter.
        if FileManager.default.isWritableFile(atPath: "/dev/shm") {
            #expect(e.dataDirectory.hasPrefix("/dev/shm/trellis-etcd-"))
        }
        var dt = stat()
        #expect(lstat(e.dataDirectory, &dt) == 0 && (dt.st_mode & S_IFMT) == S_IFDIR)
        #expect(dt.st_mode & 0o077 == 0 && dt.st_uid == getuid())
        #expect(state.ephemeral)
        #expect(Set(state.replicas.map(\.rpcPort)).count == 2)
        for r in state.replicas {
            let a = try args(r)
            #expect(a.contains("--meta") && a[a.firstIndex(of: "--meta")! + 1] == "etcd")
            #expect(a[a.firstIndex(of: "--etcd_endpoint")! + 1] == "unix://" + clientSocket)
            #expect(a[a.firstIndex(of: "--etcd_prefix")! + 1] == state.id)
            #expect(a[a.firstIndex(of: "--spill_path")! + 1] == dir.sub("spill") + "/r\(r.index)")
        }
        #expect(rt.status().isUp)
        try rt.setKept("run-1", true)
        #expect(rt.loadState()?.keptFor == ["run-1"])
        try await rt.down()
        #expect(!isAlive(e.process.pid))
        #expect(state.processes.allSatisfy { !isAlive($0.pid) })
        #expect(!FileManager.default.fileExists(atPath: e.dataDirectory))
    }

    @Test func moreReplicasWithoutEtcdIsAClearError() async throws {
        let dir = TempDir("trrt")
        defer { dir.cleanup() }
        let rt = try runtime(dir, etcd: "/nonexistent/etcd")
        #expect(rt.resolveEtcd() == nil)
        await #expect {
            _ = try await rt.up(RuntimeSpec(replicas: 2))
        } throws: { "\($0)".contains("etcd") }
    }

    @Test func daemonThatDiesAtStartupIsReportedAndCleanedUp() async throws {
        let dir = TempDir("trrt")
        defer { dir.cleanup() }
        var env = ProcessInfo.processInfo.environment
        env["FAKE_DAEMON_FAIL"] = "1"
        let rt = try runtime(dir, etcd: "/nonexistent", env: env)
        await #expect {
            _ = try await rt.up(RuntimeSpec(replicas: 1))
        } throws: { "\($0)".contains("exited during startup") && "\($0)".contains("injected failure") }
        #expect(rt.status().state == nil)
    }

    /// The real daemon, when this checkout has been built (`swift build` builds `trellis`):
    /// one replica with local metadata, and two sharing the runtime's private etcd.
    @Test(arguments: [1, 2]) func realTrellisServe(replicas: Int) async throws {
        let bin = ProcessInfo.processInfo.environment["TRELLIS_BIN"] ?? repoRoot() + "/.build/debug/trellis"
        guard access(bin, X_OK) == 0 else { return }
        if replicas > 1 && etcdBinary() == nil { return }
        let dir = TempDir("trrt")
        defer { dir.cleanup() }
        let rt = LocalRuntime(directory: dir.sub("rt"), trellisBinary: bin, etcdBinary: etcdBinary(), startTimeout: 60)
        let state = try await rt.up(RuntimeSpec(replicas: replicas, size: "64Mi"))
        let status = rt.status()
        #expect(status.isUp, "\(status.summary)")
        for r in state.replicas {
            #expect(socketAccepts(r.socket))
            #expect(tcpAccepts(port: r.rpcPort!))
        }
        #expect((state.etcd != nil) == (replicas > 1))
        try await rt.down()
        #expect(state.processes.allSatisfy { !isAlive($0.pid) })
        #expect(state.etcd.map { !isAlive($0.process.pid) } ?? true)
    }
}

@Suite(.onBlockingPool) struct LauncherTests {
    /// A launcher with its home in `dir/home`, whose runtime runs ``fakeDaemon`` replicas (no
    /// etcd) and whose data plane is directories under `dir/store`.
    static func fakeLauncher(in dir: TempDir) throws -> FlowLauncher {
        try fakeDaemon.write(toFile: dir.sub("fake_daemon.py"), atomically: true, encoding: .utf8)
        let home = TrellisHome(path: dir.sub("home"))
        let planes = DirectoryDataPlane(root: dir.sub("store"), count: 1)
        var launcher = FlowLauncher(home: home, trellisBinary: "python3", makeDataPlane: { _ in planes })
        launcher.runtime.serveCommand = [dir.sub("fake_daemon.py")]
        launcher.runtime.etcdBinary = "/nonexistent"
        return launcher
    }

    /// `flow run` with no runtime up starts an ephemeral one, stops it after success, keeps it
    /// after a failure (for resume), and a successful resume stops it.
    @Test func ephemeralRuntimeLifecycle() async throws {
        let dir = TempDir("trla")
        defer { dir.cleanup() }
        let launcher = try Self.fakeLauncher(in: dir)
        // The fake data plane addresses replicas by directory, not by the daemons' sockets.
        let ok = FlowSpec(steps: [.command("a", ["true"])])
        var r = try await launcher.run(spec: ok, options: FlowRunOptions(runID: "ok"))
        #expect(r.state == .succeeded)
        #expect(launcher.runtime.status().state == nil)

        let gate = dir.sub("gate")
        let failing = FlowSpec(steps: [.command("b", ["test", "-f", gate])])
        r = try await launcher.run(spec: failing, options: FlowRunOptions(runID: "bad"))
        #expect(r.state == .failed)
        #expect(r.message?.contains("stays up") == true)
        #expect(launcher.runtime.status().isUp)
        #expect(launcher.runtime.loadState()?.keptFor == ["bad"])

        // A second failed run on the kept runtime is kept for too; resuming one keeps it up.
        let gate2 = dir.sub("gate2")
        r = try await launcher.run(spec: FlowSpec(steps: [.command("c", ["test", "-f", gate2])]), options: FlowRunOptions(runID: "bad2"))
        #expect(r.state == .failed)
        #expect(launcher.runtime.loadState()?.keptFor == ["bad", "bad2"])
        _ = FileManager.default.createFile(atPath: gate, contents: nil)
        r = try await launcher.resume(runID: "bad")
        #expect(r.state == .succeeded)
        #expect(launcher.runtime.status().isUp)
        _ = FileManager.default.createFile(atPath: gate2, contents: nil)
        r = try await launcher.resume(runID: "bad2")
        #expect(r.state == .succeeded)
        #expect(launcher.runtime.status().state == nil)

        // Invalid flows start nothing, not even a runtime.
        await #expect(throws: FlowValidationError.self) {
            _ = try await launcher.run(spec: FlowSpec(steps: []))
        }
        #expect(launcher.runtime.status().state == nil)
    }

    /// A Python step that prints its parent's command line (a forked worker's parent is its zygote).
    static let parentStep = """
        import os
        def parent():
            with open("/proc/%d/cmdline" % os.getppid(), "rb") as f:
                print("parent:", f.read().replace(b"\\0", b" ").decode())
        """

    /// `listening` (a shell loop `wait`, until the zygote listens), then `forked` (``parentStep``).
    static func forkedStepFlow(waitingFor wait: String, in directory: String) -> FlowSpec {
        FlowSpec(
            steps: [
                .command("listening", ["sh", "-c", wait]),
                StepSpec(name: "forked", action: .python(PythonTarget(file: "steps.py", function: "parent")), after: ["listening"]),
            ], baseDirectory: directory)
    }

    /// A runtime started with a zygote interpreter (`trellis runtime up`) keeps a warm zygote
    /// that every run's Python steps fork from; runs leave it running, `runtime down` stops it.
    @Test func runtimeKeepsAZygoteForItsRuns() async throws {
        let python = repoRoot() + "/.venv/bin/python"
        guard access(python, X_OK) == 0 else { return }
        let dir = TempDir("trrz")
        defer { dir.cleanup() }
        try Self.parentStep.write(toFile: dir.sub("steps.py"), atomically: true, encoding: .utf8)
        var launcher = try Self.fakeLauncher(in: dir)
        let home = launcher.home
        var env = ProcessInfo.processInfo.environment
        env["TRELLIS_PRELOAD"] = "json"
        // Named as users do, "python" on PATH: the runtime and the runs both resolve it.
        env["PATH"] = repoRoot() + "/.venv/bin:" + (env["PATH"] ?? "/usr/bin:/bin")
        launcher.runtime.environment = env
        launcher.runtime.zygoteInterpreter = "python"
        let state = try await launcher.runtime.up(RuntimeSpec(replicas: 1))
        let zygote = try #require(state.zygote)
        #expect(zygote.interpreter == python && isAlive(zygote.process.pid))
        #expect(launcher.runtime.status().summary.contains("python zygote: up pid \(zygote.process.pid)"))

        let wait = "for i in $(seq 200); do test -S \(zygote.socket) && exit 0; sleep 0.05; done; exit 1"
        let spec = Self.forkedStepFlow(waitingFor: wait, in: dir.path)
        for run in ["one", "two"] {
            let record = try await launcher.run(
                spec: spec, options: FlowRunOptions(runID: run, pythonExecutable: "python", environment: env))
            #expect(record.state == .succeeded, "\(record.message ?? "")")
            let out = try RunStore(home: home).logs(run: run, step: "forked").stdout
            #expect(out.contains("parent: \(python) \(zygote.directory)/trellis_zygote.py"), "\(out)")
            #expect(isAlive(zygote.process.pid))
        }
        #expect(!((try? FileManager.default.contentsOfDirectory(atPath: home.path)) ?? []).contains { $0.hasPrefix("zygote-") })
        try await launcher.runtime.down()
        #expect(!isAlive(zygote.process.pid))
        #expect(!FileManager.default.fileExists(atPath: zygote.directory))
    }

    /// The real CLI: the zygote `trellis runtime up` starts outlives that command (it serves
    /// until `runtime down`), only its owner can use its socket, and `runtime down` stops it.
    @Test func runtimeUpCommandLeavesItsZygoteServing() async throws {
        let bin = ProcessInfo.processInfo.environment["TRELLIS_BIN"] ?? repoRoot() + "/.build/debug/trellis"
        let python = repoRoot() + "/.venv/bin/python"
        guard access(bin, X_OK) == 0, access(python, X_OK) == 0 else { return }
        let dir = TempDir("trzc")
        defer { dir.cleanup() }
        var env = ProcessInfo.processInfo.environment
        env["TRELLIS_HOME"] = dir.sub("home")
        env["TRELLIS_PYTHON"] = python
        env["TRELLIS_PRELOAD"] = "json"
        func trellis(_ args: String...) async throws -> Int32? {
            let p = try ChildProcess.spawn(
                executable: bin, arguments: args, environment: env, workingDirectory: dir.path, stdout: .null, stderr: .null)
            return await p.wait().code
        }
        #expect(try await trellis("runtime", "up", "--size", "64Mi") == 0)
        let rt = LocalRuntime(directory: TrellisHome(path: dir.sub("home")).runtimeDirectory, trellisBinary: bin)
        let zygote = try #require(rt.loadState()?.zygote)
        #expect(zygote.interpreter == python)
        // The command has exited; the zygote comes up and stays.
        #expect(await eventually(30) { FileManager.default.fileExists(atPath: zygote.socket) })
        try await Task.sleep(for: .seconds(1.5))
        #expect(zygote.isRunning && FileManager.default.fileExists(atPath: zygote.socket))
        var st = stat()
        #expect(stat(zygote.socket, &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(rt.status().summary.contains("python zygote: up"))
        #expect(try await trellis("runtime", "down") == 0)
        #expect(await eventually(60) { !isAlive(zygote.process.pid) })
        #expect(!FileManager.default.fileExists(atPath: zygote.directory))
    }

    /// The launcher starts the Python zygote before the runtime (its imports overlap the
    /// replicas' start-up): the run's Python steps are forked from that zygote, which is
    /// stopped afterwards, its log filed with the run's logs and its directory removed.
    @Test func zygoteWarmsUpBeforeTheRuntime() async throws {
        let python = repoRoot() + "/.venv/bin/python"
        guard access(python, X_OK) == 0 else { return }
        let dir = TempDir("trlz")
        defer { dir.cleanup() }
        try Self.parentStep.write(toFile: dir.sub("steps.py"), atomically: true, encoding: .utf8)
        let launcher = try Self.fakeLauncher(in: dir)
        let home = launcher.home
        let zygotePrefix = home.path + "/zygote-\(getpid())-"
        // The first step waits until the launcher's zygote listens, so the second surely uses it.
        let wait = "for i in $(seq 200); do for s in \(zygotePrefix)*/z.sock; do test -S \"$s\" && exit 0; done; sleep 0.05; done; exit 1"
        let spec = Self.forkedStepFlow(waitingFor: wait, in: dir.path)
        var env = ProcessInfo.processInfo.environment
        env["TRELLIS_PRELOAD"] = "json"
        let record = try await launcher.run(
            spec: spec, options: FlowRunOptions(runID: "warm", pythonExecutable: python, environment: env))
        let zygoteLog = (try? String(contentsOfFile: RunStore(home: home).directory(of: "warm") + "/logs/zygote.log", encoding: .utf8)) ?? "none"
        #expect(record.state == .succeeded, "\(record.message ?? ""); zygote log: \(zygoteLog)")
        let out = try RunStore(home: home).logs(run: "warm", step: "forked").stdout
        #expect(out.contains("parent: \(python) \(zygotePrefix)") && out.contains("/trellis_zygote.py"), "\(out)")
        #expect(FileManager.default.fileExists(atPath: RunStore(home: home).directory(of: "warm") + "/logs/zygote.log"))
        let left = (try? FileManager.default.contentsOfDirectory(atPath: home.path)) ?? []
        #expect(!left.contains { $0.hasPrefix("zygote-") }, "\(left)")
        try? await launcher.runtime.down()  // kept up if the run failed
        #expect(!FileManager.default.fileExists(atPath: RunStore(home: home).libDirectory(of: "warm") + "/z.sock"))
    }
}
