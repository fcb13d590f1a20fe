import TrellisProtocol

#if canImport(Glibc)
import Glibc
#endif

/// `trellis serve` options, parsed from a command line in vineyardd's gflags syntax
/// (`--flag=value`, `--flag value`, `-flag value`, booleans as `--flag`, `--noflag`,
/// `--flag=true|false`) so that scripts and the Python package's launchers can start
/// Trellis where they would start vineyardd. glog flags are accepted and ignored.
public struct DaemonOptions: Sendable, Equatable {
    public var socket: String?
    public var size: Int?
    public var meta: String = "local"
    public var etcdEndpoint: String = "http://127.0.0.1:2379"
    public var etcdPrefix: String = "vineyard"
    public var metaTimeout: Double = 60
    /// Seconds an instance's cluster registration outlives its last heartbeat (Trellis's `--lease_ttl`).
    public var leaseTTL: Int = 10
    public var rpc: Bool = true
    public var rpcPort: Int = 9600
    public var rpcHost: String = "127.0.0.1"
    /// Whether `--rpc_host` was given; without it the bind address follows `MY_HOST_NAME`
    /// when that is an IP literal (see ``resolvedRPCBindHost(environment:)``).
    public var rpcHostGiven: Bool = false
    /// Whether `--meta` was given; without it an explicit `--etcd_endpoint` selects etcd
    /// (vineyardd's default backend), so Fluid's worker command line forms a cluster.
    public var metaGiven: Bool = false
    /// `--htpasswd FILE`: an Apache htpasswd database; every connection must register with
    /// a user and password from it (see ``Htpasswd``).
    public var htpasswd: String?
    public var reserveMemory: Bool = false
    /// With `reserveMemory`: serve at once and reserve from a background thread at idle
    /// priority (Trellis's own flag).
    public var reserveInBackground: Bool = false
    /// Back the arena with hugetlb pages (Trellis's own flag).
    public var hugePages: Bool = false
    /// Back the arena with transparent huge pages on a private tmpfs, falling back to
    /// 4 KiB pages where the kernel or permissions do not allow it (Trellis's own flag).
    public var transparentHugePages: Bool = true
    public var deployment: String = "local"
    public var logLevel: String = "info"
    public var maxMessageSize: Int = Frame.defaultMaxMessageSize
    public var spillPath: String = ""
    /// `--metrics_port P`: serve Prometheus metrics on 127.0.0.1:P (0: a free port); nil: off.
    public var metricsPort: Int?
    /// vineyardd's `--prometheus`/`--metrics` (upstream prints metrics to its log): here they
    /// turn the exporter on at ``defaultMetricsPort`` unless `--metrics_port` says where.
    public var metricsFlag: Bool = false
    /// Where `--prometheus`/`--metrics` alone serve metrics (grok_exporter's port, which
    /// vineyard's deployments scrape for the metrics it parses from vineyardd's log).
    public static let defaultMetricsPort = 9144

    /// The port to serve metrics on, and whether failing to is fatal (an explicit
    /// `--metrics_port`) or only worth a warning (the compatibility flags); nil: off.
    public var metricsListen: (port: Int, required: Bool)? {
        if let p = metricsPort { return (p, true) }
        return metricsFlag ? (Self.defaultMetricsPort, false) : nil
    }
    public var help: Bool = false
    public var version: Bool = false
    /// Flags accepted for compatibility that change nothing in Trellis, for a startup note.
    public var ignored: [String] = []

    public init() {}

    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    static let booleans: Set<String> = [
        "rpc", "reserve_memory", "reserve_in_background", "huge_pages", "transparent_huge_pages", "compression", "skip_launch_etcd", "sync_crds", "prometheus", "metrics",
        "coredump", "help", "helpfull", "version", "logtostderr", "alsologtostderr", "colorlogtostderr",
    ]
    /// Flags that take a value and are accepted but have no effect in Trellis.
    static let ignoredValued: Set<String> = [
        "allocator", "etcd_cmd", "etcd_data_dir", "rdma_endpoint", "spill_lower_rate", "spill_upper_rate",
        "stream_threshold", "redis_endpoint", "redis_prefix", "metrics_path",
        // glog
        "v", "stderrthreshold", "minloglevel", "log_dir", "vmodule", "log_link", "logbuflevel", "logbufsecs",
        "max_log_size", "flagfile", "fromenv", "tryfromenv",
    ]

    /// Parses arguments (without the program/subcommand name).
    public static func parse(_ args: [String]) throws(ParseError) -> DaemonOptions {
        var o = DaemonOptions()
        var i = 0
        func fail(_ m: String) -> ParseError { ParseError(message: m) }
        while i < args.count {
            let arg = args[i]
            i += 1
            guard arg.hasPrefix("-"), arg.count > 1 else { throw fail("unexpected argument '\(arg)'") }
            var body = arg.hasPrefix("--") ? String(arg.dropFirst(2)) : String(arg.dropFirst())
            var inline: String?
            if let eq = body.firstIndex(of: "=") {
                inline = String(body[body.index(after: eq)...])
                body = String(body[..<eq])
            }
            let name = String(body.map { $0 == "-" ? "_" : $0 })
            // Booleans: --flag, --noflag, --flag=true|false.
            var boolName = name
            var negated = false
            if !booleans.contains(name), name.hasPrefix("no"), booleans.contains(String(name.dropFirst(2))) {
                boolName = String(name.dropFirst(2))
                negated = true
            }
            if booleans.contains(boolName) {
                var value = !negated
                if let v = inline {
                    guard !negated else { throw fail("--\(name) takes no value") }
                    switch v.lowercased() {
                    case "true", "1", "yes", "t", "y": value = true
                    case "false", "0", "no", "f", "n": value = false
                    default: throw fail("invalid boolean '\(v)' for --\(boolName)")
                    }
                }
                switch boolName {
                case "rpc": o.rpc = value
                case "reserve_memory": o.reserveMemory = value
                case "reserve_in_background": o.reserveInBackground = value
                case "huge_pages": o.hugePages = value
                case "transparent_huge_pages": o.transparentHugePages = value
                case "prometheus", "metrics": o.metricsFlag = o.metricsFlag || value
                case "help", "helpfull": o.help = value
                case "version": o.version = value
                default: if value { o.ignored.append(boolName) }
                }
                // vineyard's operator writes `--sync_crds true` (a separate word, which
                // gflags leaves as a positional argument and vineyardd ignores).
                if inline == nil, i < args.count, ["true", "false"].contains(args[i].lowercased()) { i += 1 }
                continue
            }
            func value() throws(ParseError) -> String {
                if let v = inline { return v }
                guard i < args.count else { throw fail("--\(name) needs a value") }
                i += 1
                return args[i - 1]
            }
            switch name {
            case "socket": o.socket = try value()
            case "size":
                let text = try value()
                o.size = try parseSize(text)
            case "meta":
                let m = try value()
                guard m == "local" || m == "etcd" else { throw fail("--meta must be 'local' or 'etcd', got '\(m)'") }
                o.meta = m
                o.metaGiven = true
            case "etcd_endpoint":
                o.etcdEndpoint = try value()
                if !o.metaGiven { o.meta = "etcd" }
            case "htpasswd": o.htpasswd = try value()
            case "etcd_prefix": o.etcdPrefix = try value()
            case "meta_timeout":
                let t = try value()
                guard let d = Double(t), d > 0 else { throw fail("--meta_timeout must be a positive number of seconds") }
                o.metaTimeout = d
            case "lease_ttl":
                let t = try value()
                guard let n = Int(t), n >= 1 else { throw fail("--lease_ttl must be a whole number of seconds >= 1") }
                o.leaseTTL = n
            case "rpc_socket_port", "port":
                let p = try value()
                guard let n = Int(p), (0...65535).contains(n) else { throw fail("--rpc_socket_port must be a port number, got '\(p)'") }
                o.rpcPort = n
            case "rpc_host", "rpc_socket_host":
                o.rpcHost = try value()
                o.rpcHostGiven = true
            case "deployment": o.deployment = try value()
            case "log_level":
                let l = try value().lowercased()
                let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
                guard levels.contains(l) else { throw fail("--log-level must be one of \(levels.joined(separator: ", "))") }
                o.logLevel = l
            case "max_message_size":
                let text = try value()
                guard let n = try parseSize(text), n > 0 else { throw fail("--max-message-size must be positive") }
                o.maxMessageSize = n
            case "spill_path": o.spillPath = try value()
            case "metrics_port":
                let p = try value()
                guard let n = Int(p), (0...65535).contains(n) else { throw fail("--metrics_port must be a port number, got '\(p)'") }
                o.metricsPort = n
            default:
                if ignoredValued.contains(name) {
                    _ = try value()
                    o.ignored.append(name)
                } else {
                    throw fail("unknown flag --\(body) (see 'trellis serve --help')")
                }
            }
        }
        return o
    }

    /// vineyardd's size syntax: a number (fractions allowed) with an optional suffix
    /// `k m g t p e` in either case, all binary (`1G` = `1Gi` = 2^30); characters after
    /// the first suffix letter are ignored. Empty or ≤ 0 means "default" (nil).
    public static func parseSize(_ text: String) throws(ParseError) -> Int? {
        let t = String(text.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
        if t.isEmpty { return nil }
        var numberEnd = t.startIndex
        while numberEnd < t.endIndex, "0123456789.+-eE".contains(t[numberEnd]) {
            // an 'e'/'E' is an exponent only if digits follow; otherwise it is the exa suffix
            if "eE".contains(t[numberEnd]) {
                let next = t.index(after: numberEnd)
                if next == t.endIndex || !"0123456789+-".contains(t[next]) { break }
            }
            numberEnd = t.index(after: numberEnd)
        }
        guard let number = Double(t[..<numberEnd]) else { throw ParseError(message: "invalid size '\(text)'") }
        var multiplier = 1.0
        if numberEnd < t.endIndex {
            switch t[numberEnd].lowercased() {
            case "k": multiplier = 0x1p10
            case "m": multiplier = 0x1p20
            case "g": multiplier = 0x1p30
            case "t": multiplier = 0x1p40
            case "p": multiplier = 0x1p50
            case "e": multiplier = 0x1p60
            default: throw ParseError(message: "invalid size suffix in '\(text)' (use k, m, g, t, p or e)")
            }
        }
        let bytes = number * multiplier
        if bytes <= 0 { return nil }
        guard bytes < 0x1p62 else { throw ParseError(message: "size '\(text)' is too large") }
        return Int(bytes)
    }

    /// The RPC bind address: `--rpc_host` when given; otherwise `MY_HOST_NAME` when it is
    /// an IPv4 literal (Fluid sets it to the pod IP, which kubelet's liveness probe dials,
    /// and passes no `--rpc_host`); otherwise 127.0.0.1.
    public func resolvedRPCBindHost(environment: [String: String]) -> String {
        if rpcHostGiven { return rpcHost }
        if let h = environment["MY_HOST_NAME"], Self.isIPv4Literal(h) { return h }
        return rpcHost
    }

    static func isIPv4Literal(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return false }
        return parts.allSatisfy { p in
            !p.isEmpty && p.count <= 3 && p.allSatisfy(\.isASCII) && p.allSatisfy(\.isNumber) && Int(p).map { $0 <= 255 } == true
        }
    }

    /// The socket path to use: `--socket`, else `$VINEYARD_IPC_SOCKET`, else
    /// `/var/run/vineyard.sock` where that directory is writable, else
    /// `$HOME/.local/vineyard/vineyard.sock`.
    public func resolvedSocketPath(environment: [String: String]) -> String {
        if let s = socket, !s.isEmpty { return s }
        if let s = environment["VINEYARD_IPC_SOCKET"], !s.isEmpty { return s }
        if access("/var/run", W_OK) == 0 { return "/var/run/vineyard.sock" }
        let home = environment["HOME"] ?? "/tmp"
        return "\(home)/.local/vineyard/vineyard.sock"
    }

    public static let helpText = """
        USAGE: trellis serve [flags]   (vineyardd's flag syntax is accepted too)

          --socket PATH             IPC socket (default: $VINEYARD_IPC_SOCKET, /var/run/vineyard.sock, or under $HOME)
          --size SIZE               shared memory for blobs, e.g. 4Gi, 512M (binary suffixes; default: physical memory)
          --reserve_memory          pre-fault the whole arena at start (first writes then take no allocation faults)
          --reserve_in_background   with --reserve_memory: serve at once and pre-fault from a background thread at
                                    the lowest priority, bottom-up, until done or the first trim (hugetlb arenas
                                    are always reserved at start)
          --huge_pages              back the arena with 2 MiB hugetlb pages (needs a pool: /proc/sys/vm/nr_hugepages);
                                    clients then take one page fault per 2 MiB instead of per 4 KiB
          --transparent_huge_pages  (default on) the same without a pool: the arena is a file on a private
                                    tmpfs with huge=within_size (needs CAP_SYS_ADMIN or user namespaces;
                                    otherwise 4 KiB pages, with the reason in the log); off: --notransparent_huge_pages
          --meta local|etcd         metadata backend (default local; etcd when --etcd_endpoint is given)
          --etcd_endpoint URL       etcd endpoint (default http://127.0.0.1:2379); given without --meta, selects etcd
          --etcd_prefix PREFIX      key prefix; daemons sharing it form one cluster (default vineyard)
          --meta_timeout SECONDS    how long to wait for the metadata backend (default 60)
          --lease_ttl SECONDS       a dead instance leaves cluster_meta within this time (default 10)
          --rpc / --norpc           serve RPC clients over TCP (default on)
          --rpc_socket_port PORT    RPC port (default 9600)
          --rpc_host HOST           RPC bind address (default: $MY_HOST_NAME when it is an IPv4 address, else
                                    127.0.0.1; a cluster without MY_HOST_NAME sets 0.0.0.0 explicitly)
          --deployment NAME         reported by instance_status (default local)
          --max-message-size SIZE   largest request accepted (default 64Mi)
          --spill_path DIR          when the arena is full, move idle blobs (least recently used first)
                                    to files here; they are read back when a client asks for them
          --htpasswd FILE           require a user and password from this htpasswd database (bcrypt, apr1, SHA, crypt) on IPC and RPC
          --log-level LEVEL         trace, debug, info, notice, warning, error, critical (default info)
          --metrics_port PORT       serve Prometheus metrics at http://127.0.0.1:PORT/metrics (0: a free port,
                                    logged and reported as metrics_port by instance_status; default off)
          --prometheus, --metrics   vineyardd's switches: serve them on 127.0.0.1:9144 unless --metrics_port is given
                                    (a taken port is then only a warning)
        Accepted and ignored: glog flags (-v, --logtostderr, …), --allocator, --compression, --spill_lower_rate/--spill_upper_rate
        (Trellis spills on demand, when an allocation does not fit), --stream_threshold.
        SIGTERM or SIGINT stops the daemon, removes the socket file and exits 0.
        """
}
