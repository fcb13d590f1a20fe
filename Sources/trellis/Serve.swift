import Logging
import ServiceLifecycle
import TrellisServer
import TrellisStore
import TrellisSystem
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

enum Serve {
    /// Runs the daemon until SIGTERM/SIGINT; returns the exit status.
    static func run(arguments: [String]) async -> Int32 {
        let options: DaemonOptions
        do {
            options = try DaemonOptions.parse(arguments)
        } catch {
            printError("trellis serve: \(error)\n")
            return 2
        }
        if options.help {
            print(DaemonOptions.helpText)
            return 0
        }
        if options.version {
            print("trellis (vineyard protocol 0.24.2)")
            return 0
        }
        let level = Logger.Level(rawValue: options.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "trellis.daemon")
        var env: [String: String] = [:]
        for (k, v) in ProcessEnvironment.all() { env[k] = v }

        let socket = options.resolvedSocketPath(environment: env)
        makeParentDirectory(of: socket)
        let size = options.size ?? physicalMemory()

        if options.meta == "etcd" {
            printError("trellis serve: --meta etcd is not available yet in this build; use --meta local\n")
            return 2
        }
        var config = ServerConfig(socketPath: socket)
        config.maxMessageSize = options.maxMessageSize
        config.deployment = options.deployment
        config.hostname = env["MY_HOST_NAME"] ?? hostName()
        config.nodename = env["MY_NODE_NAME"] ?? config.hostname
        if options.rpc {
            config.rpcPort = options.rpcPort
            config.rpcHost = options.rpcHost
        }
        if !options.ignored.isEmpty {
            logger.debug("accepted for compatibility, no effect", metadata: ["flags": "\(options.ignored.joined(separator: ","))"])
        }

        let store: ObjectStore
        do {
            store = try ObjectStore(capacity: size, instanceID: 0, prefault: options.reserveMemory)
        } catch {
            printError("trellis serve: cannot create a shared-memory arena of \(size) bytes: \(error)\n")
            return 1
        }
        let listeners: [Listener]
        do {
            (listeners, config) = try Daemon.bind(config)
        } catch {
            printError("trellis serve: \(error)\n")
            return 1
        }
        let daemon = Daemon(store: store, config: config, logger: logger)
        do {
            try daemon.run(listeners: listeners)
        } catch {
            printError("trellis serve: \(error)\n")
            daemon.stop(listeners)
            return 1
        }
        logger.info(
            "trellis daemon ready",
            metadata: ["socket": "\(socket)", "size": "\(size)", "meta": "\(options.meta)", "rpc": "\(config.rpcPort.map { "\(config.rpcHost):\($0)" } ?? "off")"])
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: WaitForShutdown())],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        do {
            try await group.run()
        } catch {
            logger.error("service group failed", metadata: ["error": "\(error)"])
        }
        daemon.stop(listeners)
        return 0
    }

    static func physicalMemory() -> Int {
        Int(sysconf(Int32(_SC_PHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    static func hostName() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        guard gethostname(&buf, 255) == 0 else { return "localhost" }
        return String(cString: buf)
    }

    static func makeParentDirectory(of path: String) {
        var parts = path.split(separator: "/", omittingEmptySubsequences: false).dropLast()
        var current = path.hasPrefix("/") ? "" : "."
        while !parts.isEmpty {
            let p = parts.removeFirst()
            if p.isEmpty { continue }
            current += "/" + p
            mkdir(current, 0o755)
        }
    }
}

/// Keeps the service group alive until a shutdown signal arrives.
struct WaitForShutdown: Service {
    func run() async throws {
        try? await gracefulShutdown()
    }
}

enum ProcessEnvironment {
    static func all() -> [(String, String)] {
        var out: [(String, String)] = []
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") {
                out.append((String(s[..<eq]), String(s[s.index(after: eq)...])))
            }
            p += 1
        }
        return out
    }
}

/// Writes a line to standard error (unbuffered, no shared FILE state).
func printError(_ text: String) {
    var bytes = Array(text.utf8)
    if bytes.last != 10 { bytes.append(10) }
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}
