import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import TrellisFlow
import TrellisProtocol

/// `trellis dashboard`: a read-only web view of the runtime and the runs of one Trellis home.
///
/// Pages (HTML, no JavaScript, reloading themselves while something runs):
/// - `/` the runtime's replicas with their arenas, and the runs;
/// - `/runs/<id>` a run's steps; `/runs/<id>/report` its report (`trellis flow report`);
///   `/runs/<id>/steps/<step>` a step's output, followed live.
///
/// JSON, byte for byte what the CLI's `--json` prints:
/// - `/api/runtimes` = `trellis runtime status --json`;
/// - `/api/runtimes/replicas` = per replica, `trellis status --socket <its socket> --json`
///   (under `status`, or `error` when it does not answer);
/// - `/api/runs` = `trellis flow ls --json`; `/api/runs/<id>` = `trellis flow status <id> --json`;
/// - `/api/runs/<id>/steps/<step>/stdout|stderr` = what `trellis flow logs` prints on that
///   stream (text), and with `?follow=1` what `flow logs --follow` prints, as it is written.
///
/// Only GET and HEAD are served; any other method gets 405.
public enum Dashboard {
    /// The routes over `source`.
    public static func router(source: DashboardSource) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self, options: [.autoGenerateHeadEndpoints])
        router.add(middleware: ReadOnlyMiddleware())

        router.get("/") { _, _ in
            let runtime = await source.runtime()
            return Dashboard.html(DashboardPages.index(runtime: runtime, runs: source.runs(), home: source.home.path))
        }
        router.get("/runs/:run") { _, context in
            let id = try Dashboard.parameter("run", context)
            guard let record = source.run(id) else { return Dashboard.notFound("no run '\(id)'") }
            return Dashboard.html(DashboardPages.run(record, hasReport: true))
        }
        router.get("/runs/:run/report") { _, context in
            let id = try Dashboard.parameter("run", context)
            guard let page = source.report(id) else { return Dashboard.notFound("no run '\(id)'") }
            return Dashboard.html(page)
        }
        router.get("/runs/:run/steps/:step") { _, context in
            let id = try Dashboard.parameter("run", context), name = try Dashboard.parameter("step", context)
            guard let record = source.run(id) else { return Dashboard.notFound("no run '\(id)'") }
            guard let step = record.step(name) else { return Dashboard.notFound("run '\(id)' has no step '\(name)'") }
            return Dashboard.html(
                DashboardPages.stepLog(
                    record, step: step, stdout: source.logExcerpt(run: id, step: name, stream: .stdout),
                    stderr: source.logExcerpt(run: id, step: name, stream: .stderr)))
        }

        // Pages name no icon (`data:,`); a browser that asks anyway gets nothing, not a 404.
        router.get("/favicon.ico") { _, _ in Response(status: .noContent) }

        router.get("/api/runtimes") { _, _ in
            Dashboard.json(await source.runtimeStatus().json)
        }
        router.get("/api/runtimes/replicas") { _, _ in
            Dashboard.json(JSON.array(await source.runtime().replicas.map(\.json)).description)
        }
        router.get("/api/runs") { _, _ in
            Dashboard.json(try RunFormatter.json(source.runs()))
        }
        router.get("/api/runs/:run") { _, context in
            let id = try Dashboard.parameter("run", context)
            guard let record = source.run(id) else { return Dashboard.jsonError(.notFound, "no run '\(id)'") }
            return Dashboard.json(try RunFormatter.json(record))
        }
        router.get("/api/runs/:run/steps/:step/:stream") { request, context in
            let id = try Dashboard.parameter("run", context), name = try Dashboard.parameter("step", context)
            guard let stream = LogStream(rawValue: try Dashboard.parameter("stream", context)) else {
                return Dashboard.jsonError(.notFound, "logs are stdout or stderr")
            }
            guard let whole = source.log(run: id, step: name, stream: stream) else {
                return Dashboard.jsonError(.notFound, "no run '\(id)' with a step '\(name)'")
            }
            guard request.uri.queryParameters["follow"].map({ $0 == "1" || $0 == "true" }) == true else {
                return Dashboard.text(whole)
            }
            let store = source.store
            return Response(
                status: .ok, headers: Dashboard.textHeaders,
                body: ResponseBody { writer in
                    // `flow logs --follow`: ends when the step does (or its runner is gone), when
                    // the client leaves (the write fails), or when the server shuts down.
                    let (chunks, sink) = AsyncStream<String>.makeStream()
                    let pump = Task {
                        do {
                            for try await (s, chunk) in store.follow(run: id, step: name) where s == stream {
                                sink.yield(chunk)
                            }
                        } catch {}
                        sink.finish()
                    }
                    defer { pump.cancel() }
                    try await withGracefulShutdownHandler {
                        for await chunk in chunks { try await writer.write(ByteBuffer(string: chunk)) }
                    } onGracefulShutdown: {
                        pump.cancel()
                    }
                    try await writer.finish(nil)
                })
        }
        return router
    }

    /// An application serving ``router(source:)`` on `host:port` (0: any free port);
    /// `onBound` gets the port once it listens.
    public static func application(
        source: DashboardSource, host: String = "127.0.0.1", port: Int,
        onBound: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        var logger = Logger(label: "trellis.dashboard")
        logger.logLevel = .warning
        return Application(
            router: router(source: source),
            configuration: .init(address: .hostname(host, port: port), serverName: "trellis-dashboard"),
            onServerRunning: { channel in await onBound(channel.localAddress?.port ?? port) },
            logger: logger)
    }

    static let textHeaders: HTTPFields = [
        .contentType: "text/plain; charset=utf-8", .init("X-Content-Type-Options")!: "nosniff",
    ]

    /// No scripts at all, styles only inline, images only `data:`.
    static let pageHeaders: HTTPFields = [
        .contentType: "text/html; charset=utf-8", .init("X-Content-Type-Options")!: "nosniff",
        .contentSecurityPolicy: "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
    ]

    static func html(_ page: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: pageHeaders, body: ResponseBody(byteBuffer: ByteBuffer(string: page)))
    }

    static func text(_ s: String) -> Response {
        Response(status: .ok, headers: Dashboard.textHeaders, body: ResponseBody(byteBuffer: ByteBuffer(string: s)))
    }

    static func json(_ s: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: s.hasSuffix("\n") ? s : s + "\n")))
    }

    static func jsonError(_ status: HTTPResponse.Status, _ message: String) -> Response {
        Dashboard.json(JSON.object(["error": .string(message)]).description, status: status)
    }

    static func notFound(_ detail: String) -> Response {
        Dashboard.html(DashboardPages.problem("Not found", detail), status: .notFound)
    }

    /// A path parameter, percent-decoded.
    static func parameter(_ name: String, _ context: BasicRequestContext) throws -> String {
        let raw = try context.parameters.require(name)
        return raw.removingPercentEncoding ?? raw
    }
}

/// Answers anything but GET and HEAD with 405 (`Allow: GET, HEAD`): the dashboard only reads.
struct ReadOnlyMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        guard request.method == .get || request.method == .head else {
            var response = Dashboard.html(
                DashboardPages.problem("Method not allowed", "The dashboard is read-only: GET and HEAD only."),
                status: .methodNotAllowed)
            response.headers[.allow] = "GET, HEAD"
            return response
        }
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            return Dashboard.notFound("Nothing is served at \(request.uri.path).")
        }
    }
}
