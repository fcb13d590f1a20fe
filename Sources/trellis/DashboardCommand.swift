import ArgumentParser
import Foundation
import Hummingbird
import TrellisDashboard
import TrellisFlow

/// `trellis dashboard [--port P] [--host H]`: the read-only web view of this home's runtime
/// and runs (``Dashboard``). Prints its URL on stdout once it listens; stops on SIGINT/SIGTERM.
struct DashboardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dashboard",
        abstract: "Serve a read-only web view of the runtime and the runs (and their JSON under /api).")

    @Option(help: "TCP port (0: any free port; the URL is printed).") var port = 8650
    @Option(help: "Address to listen on. Anything but loopback shows run logs to whoever can reach it.")
    var host = "127.0.0.1"

    func run() async throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0…65535") }
        let home = TrellisHome.fromEnvironment()
        if host != "127.0.0.1" && host != "::1" && host != "localhost" {
            FileHandle.standardError.write(
                Data("trellis dashboard: listening on \(host): anyone who reaches it can read run logs\n".utf8))
        }
        let shownHost = host.contains(":") ? "[\(host)]" : host
        let app = Dashboard.application(source: DashboardSource(home: home), host: host, port: port) { bound in
            // Unbuffered: whoever started us (a test, a script) reads this line to find the port.
            FileHandle.standardOutput.write(Data("trellis dashboard: http://\(shownHost):\(bound)/ (home \(home.path))\n".utf8))
        }
        try await app.runService()
    }
}
