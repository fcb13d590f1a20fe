import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The bodies of the `trellis flow …` and `trellis runtime …` subcommands, so the CLI glue is
/// only argument parsing. Each returns the process exit status and prints to stdout/stderr:
/// 0 success; 1 the run failed (or the command failed); 2 invalid flow or arguments;
/// 130 the run was cancelled (Ctrl-C).
public enum FlowCLI {
    /// Exit status for a finished run.
    public static func exitStatus(_ record: RunRecord) -> Int32 {
        switch record.state {
        case .succeeded: return 0
        case .cancelled: return 130
        case .failed, .running: return 1
        }
    }

    /// The running executable (`/proc/self/exe`), for ``LocalRuntime/trellisBinary``.
    public static func currentExecutable() -> String {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        if n > 0 { return String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        return CommandLine.arguments.first ?? "trellis"
    }

    /// `trellis flow run FILE [--run-id ID] [--keep] [--max-parallel N]`.
    ///
    /// Validates the file (printing every issue, exit 2), starts an ephemeral runtime when none
    /// is up, shows live progress on stderr, cancels cleanly on Ctrl-C, and prints the run's
    /// status at the end.
    public static func run(
        file: String, runID: String?, keep: Bool, maxParallel: Int? = nil, home: TrellisHome = .fromEnvironment(),
        trellisBinary: String = currentExecutable(), metrics: FlowMetrics? = nil,
        makeDataPlane: @escaping @Sendable ([Replica]) async throws -> any DataPlane
    ) async -> Int32 {
        let spec: FlowSpec
        do {
            spec = try FlowSpec.load(file: file)
            try spec.validate()
        } catch {
            printErr("trellis flow run: \(error)")
            return 2
        }
        let launcher = FlowLauncher(
            home: home, trellisBinary: trellisBinary, makeDataPlane: makeDataPlane, note: { printErr("trellis: \($0)") })
        return await drive(metrics: metrics) { observer in
            try await launcher.run(
                spec: spec,
                options: FlowRunOptions(runID: runID, keepObjects: keep, maxParallel: maxParallel, observer: observer))
        }
    }

    /// `trellis flow resume RUN [--keep]`.
    public static func resume(
        runID: String, keep: Bool, maxParallel: Int? = nil, home: TrellisHome = .fromEnvironment(),
        trellisBinary: String = currentExecutable(), metrics: FlowMetrics? = nil,
        makeDataPlane: @escaping @Sendable ([Replica]) async throws -> any DataPlane
    ) async -> Int32 {
        let launcher = FlowLauncher(
            home: home, trellisBinary: trellisBinary, makeDataPlane: makeDataPlane, note: { printErr("trellis: \($0)") })
        return await drive(metrics: metrics) { observer in
            try await launcher.resume(
                runID: runID, options: FlowRunOptions(keepObjects: keep, maxParallel: maxParallel, observer: observer))
        }
    }

    /// `trellis flow run FILE --on kubernetes …` (and `flow resume RUN` of such a run, with
    /// `runID` set and `file` nil): the run's steps as Jobs in the cluster, see
    /// ``KubernetesLauncher``.
    public static func kubernetes(
        file: String?, resume runID: String?, newRunID: String? = nil, keep: Bool, maxParallel: Int? = nil,
        options: KubernetesOptions?, home: TrellisHome = .fromEnvironment(),
        environment: [String: String] = ProcessInfo.processInfo.environment, metrics: FlowMetrics? = nil
    ) async -> Int32 {
        var loaded: FlowSpec?
        if let file {
            do {
                let s = try FlowSpec.load(file: file)
                try s.validate()
                loaded = s
            } catch {
                printErr("trellis flow run: \(error)")
                return 2
            }
        }
        let spec = loaded
        guard let kube = options ?? runID.flatMap({ KubernetesLauncher.savedOptions(runID: $0, home: home) }) else {
            printErr("trellis: no Kubernetes settings for this run; pass --on kubernetes and its options")
            return 2
        }
        let transport: HTTPKubeTransport
        var etcdTransport: HTTPKubeTransport?
        let connection: KubeConnection
        do {
            connection = try KubeConfig.load(
                kubeconfig: kube.kubeconfig, context: kube.context, namespace: kube.namespace, environment: environment)
            transport = try HTTPKubeTransport(connection: connection)
            if let e = kube.etcdEndpoint { etcdTransport = try HTTPKubeTransport(baseURL: e) }
        } catch {
            printErr("trellis: \(error)")
            return 2
        }
        let launcher = KubernetesLauncher(
            home: home, options: kube, connection: connection, transport: transport, etcdTransport: etcdTransport,
            note: { printErr("trellis: \($0)") })
        let status = await drive(metrics: metrics) { observer in
            let o = FlowRunOptions(runID: newRunID, keepObjects: keep, maxParallel: maxParallel, observer: observer)
            if let spec { return try await launcher.run(spec: spec, options: o) }
            return try await launcher.resume(runID: runID ?? "", options: o)
        }
        await transport.shutdown()
        await etcdTransport?.shutdown()
        return status
    }

    private static func drive(
        metrics: FlowMetrics? = nil, _ body: @escaping @Sendable (@escaping @Sendable (RunEvent) -> Void) async throws -> RunRecord
    ) async -> Int32 {
        let renderer = ProgressRenderer()
        let task = Task {
            try await body {
                renderer.observe($0)
                metrics?.observe($0)
            }
        }
        let sources = InterruptHandler.cancelOnInterrupt(task)
        defer { sources.forEach { $0.cancel() } }
        do {
            let record = try await task.value
            if let m = record.message { printErr(m) }
            print("run \(record.runID): \(record.state.rawValue)")
            return exitStatus(record)
        } catch let e as FlowValidationError {
            printErr("trellis: \(e)")
            return 2
        } catch {
            printErr("trellis: \(error)")
            return 1
        }
    }

    /// `trellis flow validate FILE`: every issue (exit 2), or the dependency order (exit 0).
    public static func validate(file: String) -> Int32 {
        do {
            let spec = try FlowSpec.load(file: file)
            let graph = try FlowGraph(spec)
            print("\(file): valid flow '\(spec.name)', \(spec.steps.count) step(s) on \(spec.runtime.replicas) replica(s)")
            for name in graph.topologicalOrder {
                let deps = graph.dependencies[name, default: []].sorted { graph.position[$0, default: 0] < graph.position[$1, default: 0] }
                print("  \(name)" + (deps.isEmpty ? "" : " <- \(deps.joined(separator: ", "))"))
            }
            return 0
        } catch {
            printErr("\(error)")
            return 2
        }
    }

    /// `trellis flow status RUN [--json]`.
    public static func status(runID: String, json: Bool, home: TrellisHome = .fromEnvironment()) -> Int32 {
        do {
            let record = try RunStore(home: home).load(runID)
            print(json ? try RunFormatter.json(record) : RunFormatter.status(record))
            return 0
        } catch {
            printErr("trellis flow status: \(error)")
            return 1
        }
    }

    /// `trellis flow logs RUN STEP [--follow]`: stdout then stderr of every attempt; with
    /// `follow`, streams both as they grow until the step finishes.
    public static func logs(runID: String, step: String, follow: Bool, home: TrellisHome = .fromEnvironment()) async
        -> Int32
    {
        let store = RunStore(home: home)
        do {
            if follow {
                for try await (stream, text) in store.follow(run: runID, step: step) {
                    if stream == .stdout {
                        FileHandle.standardOutput.write(Data(text.utf8))
                    } else {
                        FileHandle.standardError.write(Data(text.utf8))
                    }
                }
            } else {
                let (out, err) = try store.logs(run: runID, step: step)
                FileHandle.standardOutput.write(Data(out.utf8))
                FileHandle.standardError.write(Data(err.utf8))
            }
            return 0
        } catch {
            printErr("trellis flow logs: \(error)")
            return 1
        }
    }

    /// Output formats of `trellis flow report`.
    public enum ReportFormat: String, Sendable, CaseIterable {
        /// The whole report page.
        case html
        /// The DAG and the timeline as one SVG.
        case svg
        /// That SVG rasterised by headless Chromium.
        case png
    }

    /// `trellis flow report RUN [--out FILE] [--format html|svg|png] [--lines N]`: writes the
    /// run report (default `<run directory>/report.<format>`; `--out -` writes HTML or SVG to
    /// standard output) and prints where. Works on running, failed, resumed and finished runs.
    public static func report(
        runID: String, out: String?, format: ReportFormat, lines: Int = 40, home: TrellisHome = .fromEnvironment(),
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) async -> Int32 {
        let store = RunStore(home: home)
        let record: RunRecord
        do { record = try store.load(runID) } catch {
            printErr("trellis flow report: \(error)")
            return 1
        }
        let state = record.effectiveState
        let now = Date()
        let path = out ?? (store.directory(of: runID) as NSString).appendingPathComponent("report.\(format.rawValue)")
        switch format {
        case .html, .svg:
            let text: String
            if format == .html {
                text = store.reportHTML(for: record, lines: lines, now: now)
            } else {
                text = FlowReport.svg(for: record, state: state, now: now)
            }
            if path == "-" {
                FileHandle.standardOutput.write(Data(text.utf8))
                return 0
            }
            do { try text.write(toFile: path, atomically: true, encoding: .utf8) } catch {
                printErr("trellis flow report: cannot write \(path): \(error)")
                return 1
            }
        case .png:
            if path == "-" {
                printErr("trellis flow report: --format png needs a file (--out FILE.png)")
                return 2
            }
            let size = FlowReport.svgSize(for: record, state: state, now: now)
            let svg = FlowReport.svg(for: record, state: state, now: now)
            if let problem = await rasterise(svg: svg, width: size.width, height: size.height, to: path, environment: environment) {
                printErr("trellis flow report: \(problem)")
                return 1
            }
        }
        print(path)
        return 0
    }

    /// Renders an SVG to PNG with headless Chromium (`chromium`, `chromium-browser` or
    /// `$TRELLIS_CHROMIUM`); a sentence saying why not, or nil when the file was written.
    static func rasterise(svg: String, width: Int, height: Int, to path: String, environment: [String: String]) async -> String? {
        let candidates = [environment["TRELLIS_CHROMIUM"], "chromium", "chromium-browser", "google-chrome"].compactMap { $0 }
        guard let browser = candidates.lazy.compactMap({ c -> String? in
            guard !c.isEmpty else { return nil }
            return try? ChildProcess.resolve(c, environment: environment, workingDirectory: nil)
        }).first else {
            return "--format png needs headless Chromium (Debian: apt-get install chromium; or set TRELLIS_CHROMIUM); "
                + "--format svg writes the same picture without it"
        }
        var template = Array("/tmp/trellis-report-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            return "cannot make a temporary directory: \(errnoText(errno))"
        }
        let dir = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let svgPath = dir + "/report.svg"
        let pngPath = dir + "/report.png"
        do { try svg.write(toFile: svgPath, atomically: true, encoding: .utf8) } catch { return "cannot write \(svgPath): \(error)" }
        var args = [
            "--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--disable-extensions",
            "--disable-background-networking", "--disable-dev-shm-usage", "--user-data-dir=\(dir)/profile",
            "--window-size=\(width),\(height)", "--screenshot=\(pngPath)", "file://\(svgPath)",
        ]
        if geteuid() == 0 { args.insert("--no-sandbox", at: 0) }
        let child: ChildProcess
        do {
            child = try ChildProcess.spawn(
                executable: browser, arguments: args, environment: environment, workingDirectory: dir,
                stdout: .file(dir + "/chromium.log"), stderr: .file(dir + "/chromium.log"), newSession: true)
        } catch {
            return "cannot start \(browser): \(error)"
        }
        let exit = await supervise(child, timeout: 120, grace: 2)
        guard FileManager.default.fileExists(atPath: pngPath) else {
            let log = (try? String(contentsOfFile: dir + "/chromium.log", encoding: .utf8)) ?? ""
            return "\(browser) wrote no screenshot (\(exit.timedOut ? "timed out" : exit.status.description)): "
                + log.split(separator: "\n").suffix(5).joined(separator: " | ")
        }
        do {
            try? FileManager.default.removeItem(atPath: path)
            try FileManager.default.copyItem(atPath: pngPath, toPath: path)
        } catch {
            return "cannot write \(path): \(error)"
        }
        return nil
    }

    /// `trellis flow ls [--json]`.
    public static func list(json: Bool = false, home: TrellisHome = .fromEnvironment()) -> Int32 {
        let runs = RunStore(home: home).list()
        if json {
            do {
                print(try RunFormatter.json(runs))
            } catch {
                printErr("trellis flow ls: \(error)")
                return 1
            }
        } else {
            print(RunFormatter.list(runs))
        }
        return 0
    }

    /// `trellis runtime up [--replicas N] [--size S] [--medium memory|spill] [--spill-dir D]`.
    public static func runtimeUp(
        _ spec: RuntimeSpec, home: TrellisHome = .fromEnvironment(), trellisBinary: String = currentExecutable(),
        networkNamespaces: Bool = false
    ) async -> Int32 {
        var rt = LocalRuntime(directory: home.runtimeDirectory, trellisBinary: trellisBinary)
        rt.networkNamespaces = networkNamespaces
        if PythonZygote.isEnabled(environment: rt.environment) {
            rt.zygoteInterpreter = FlowRunOptions.defaultPython(environment: rt.environment)
        }
        do {
            _ = try await rt.up(spec)
            print(rt.status().summary)
            return 0
        } catch {
            printErr("trellis runtime up: \(error)")
            return 1
        }
    }

    /// `trellis runtime down`.
    public static func runtimeDown(home: TrellisHome = .fromEnvironment()) async -> Int32 {
        let rt = LocalRuntime(directory: home.runtimeDirectory, trellisBinary: "")
        do {
            let kept = rt.loadState()?.keptFor ?? []
            try await rt.down()
            print("runtime: down" + (kept.isEmpty ? "" : " (intermediates of \(kept.joined(separator: ", ")) dropped)"))
            return 0
        } catch {
            printErr("trellis runtime down: \(error)")
            return 1
        }
    }

    /// `trellis runtime status [--json]`; exit 0 when up, 1 when down or degraded.
    public static func runtimeStatus(json: Bool, home: TrellisHome = .fromEnvironment()) -> Int32 {
        let status = LocalRuntime(directory: home.runtimeDirectory, trellisBinary: "").status()
        if json {
            print(status.json)
        } else {
            print(status.summary)
        }
        return status.isUp ? 0 : 1
    }

    static func printErr(_ s: String) {
        FileHandle.standardError.write(Data((s + "\n").utf8))
    }
}
