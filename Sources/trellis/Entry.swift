import ArgumentParser

#if canImport(Glibc)
import Glibc
#endif

@main
enum Entry {
    static func main() async {
        let argv = CommandLine.arguments
        let program = argv.first.map { String($0.split(separator: "/").last ?? "") } ?? "trellis"
        // Started as vineyardd (e.g. a symlink the Python launchers find), or as `trellis serve`:
        // vineyardd's gflags syntax is parsed by hand, the rest goes to ArgumentParser.
        if program == "vineyardd" {
            exit(await Serve.run(arguments: Array(argv.dropFirst())))
        }
        // `trellis --deployment local --size … --socket …` (how vineyard.deploy.local.start_vineyardd
        // calls a daemon given as vineyardd_path) is `trellis serve` too.
        let vineyarddFirstFlags: Set<String> = ["--deployment", "--size", "--socket", "--meta", "--rpc", "--norpc", "--rpc_socket_port"]
        if argv.count > 1, let flag = argv[1].split(separator: "=").first, vineyarddFirstFlags.contains(String(flag)) {
            exit(await Serve.run(arguments: Array(argv.dropFirst())))
        }
        if argv.count > 1 && argv[1] == "serve" {
            exit(await Serve.run(arguments: Array(argv.dropFirst(2))))
        }
        await Trellis.main()
    }
}

struct Trellis: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trellis",
        abstract: "An in-memory immutable object store that speaks Vineyard's protocol, and flows over it.",
        subcommands: [ServeHelp.self] + objectCommands + [FlowCommand.self, RuntimeCommand.self, DashboardCommand.self])
}

/// Only for the help listing: `trellis serve` is dispatched before ArgumentParser runs.
struct ServeHelp: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Run the daemon (accepts vineyardd's flags; see 'trellis serve --help').")
    @Argument(parsing: .captureForPassthrough) var flags: [String] = []
}
