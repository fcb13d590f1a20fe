import Testing
import TrellisServer
import TrellisSystem

#if canImport(Glibc)
import Glibc
import TrellisTestSupport
#endif

/// The worker command line Fluid's vineyard chart renders (kubernetes-fluid.md §2.3), and the
/// socket-path rules a hostPath socket directory needs (§2.4).
@Suite("Fluid worker command line and socket path", .onBlockingPool)
struct FluidWorkerTests {
    static let fluidArgv = [
        "--socket", "/var/run/vineyard/vineyard-worker.sock", "--size", "30Gi", "--reserve_memory",
        "--meta_timeout", "120", "--etcd_prefix", "/vineyard", "--etcd_endpoint",
        "http://rt-master-0.rt-master.default:2379", "--rpc_socket_port", "32001",
    ]

    @Test("Fluid's argv parses: etcd backend from --etcd_endpoint, prefix with its slash, exact port")
    func fluidArgv() throws {
        let o = try DaemonOptions.parse(Self.fluidArgv)
        #expect(o.socket == "/var/run/vineyard/vineyard-worker.sock")
        #expect(o.size == 30 << 30)
        #expect(o.reserveMemory)
        #expect(o.metaTimeout == 120)
        #expect(o.etcdPrefix == "/vineyard")
        #expect(o.meta == "etcd")
        #expect(o.etcdEndpoint == "http://rt-master-0.rt-master.default:2379")
        #expect(o.rpc && o.rpcPort == 32001)
        // an explicit --meta wins, in either order
        #expect(try DaemonOptions.parse(["--meta", "local", "--etcd_endpoint", "http://x:1"]).meta == "local")
        #expect(try DaemonOptions.parse(["--etcd_endpoint", "http://x:1", "--meta", "local"]).meta == "local")
        #expect(try DaemonOptions.parse([]).meta == "local")
    }

    @Test("vineyard's operator spelling: --sync_crds followed by a separate boolean word")
    func syncCRDs() throws {
        let o = try DaemonOptions.parse(["--sync_crds", "true", "--stream_threshold", "80", "--etcd_cmd", "etcd", "--size", "1Gi"])
        #expect(o.size == 1 << 30)
        #expect(throws: DaemonOptions.ParseError.self) { try DaemonOptions.parse(["--size", "1Gi", "stray"]) }
    }

    @Test("RPC binds MY_HOST_NAME when it is an IPv4 literal and no --rpc_host is given")
    func rpcBindHost() throws {
        let fluid = try DaemonOptions.parse(Self.fluidArgv)
        #expect(fluid.resolvedRPCBindHost(environment: ["MY_HOST_NAME": "10.1.2.3"]) == "10.1.2.3")
        #expect(fluid.resolvedRPCBindHost(environment: ["MY_HOST_NAME": "node-a.example"]) == "127.0.0.1")
        #expect(fluid.resolvedRPCBindHost(environment: ["MY_HOST_NAME": "10.1.2.300"]) == "127.0.0.1")
        #expect(fluid.resolvedRPCBindHost(environment: [:]) == "127.0.0.1")
        let explicit = try DaemonOptions.parse(Self.fluidArgv + ["--rpc_host", "0.0.0.0"])
        #expect(explicit.resolvedRPCBindHost(environment: ["MY_HOST_NAME": "10.1.2.3"]) == "0.0.0.0")
    }

    @Test("--htpasswd is recorded (the daemon then requires a user and password), not silently ignored")
    func htpasswd() throws {
        let o = try DaemonOptions.parse(["--htpasswd", "/etc/vineyard/htpasswd"])
        #expect(o.htpasswd == "/etc/vineyard/htpasswd")
        #expect(!o.ignored.contains("htpasswd"))
    }

    @Test("a regular file, a directory or a symlink at the socket path is refused and left intact")
    func notASocket() throws {
        let dir = try SocketTestDirectory()
        let file = dir.path + "/file.sock"
        let fd = open(file, O_CREAT | O_WRONLY, 0o644)
        #expect(fd >= 0)
        _ = write(fd, "keep", 4)
        close(fd)
        #expect(Listener.inspectSocketPath(file) == .notASocket(kind: "a regular file"))
        #expect(throws: SystemError.self) { _ = try Listener.unix(path: file) }
        var st = stat()
        #expect(lstat(file, &st) == 0 && st.st_mode & S_IFMT == S_IFREG && st.st_size == 4)

        let link = dir.path + "/link.sock"
        #expect(symlink(file, link) == 0)
        #expect(throws: SystemError.self) { _ = try Listener.unix(path: link) }
        #expect(lstat(link, &st) == 0 && st.st_mode & S_IFMT == S_IFLNK)

        let sub = dir.path + "/sub.sock"
        #expect(mkdir(sub, 0o755) == 0)
        #expect(throws: SystemError.self) { _ = try Listener.unix(path: sub) }
        #expect(lstat(sub, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR)
    }

    @Test("a stale socket is replaced, a live one refused; the socket is mode 0777; close removes only its own file")
    func staleAndLive() throws {
        let dir = try SocketTestDirectory()
        let path = dir.path + "/w.sock"
        // A stale socket: bound, never listened on, its owner gone.
        let raw = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = try SocketAddress.unix(path)
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(raw, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(rc == 0)
        close(raw)
        #expect(Listener.inspectSocketPath(path) == .staleSocket)

        let live = try Listener.unix(path: path)
        var st = stat()
        #expect(lstat(path, &st) == 0 && st.st_mode & 0o777 == 0o777)
        #expect(Listener.inspectSocketPath(path) == .liveSocket)
        #expect(throws: SystemError.self) { _ = try Listener.unix(path: path) }

        // preStop removed our file and a successor bound the path: closing must not remove theirs.
        unlink(path)
        let successor = try Listener.unix(path: path)
        live.close()
        #expect(lstat(path, &st) == 0)
        successor.close()
        #expect(lstat(path, &st) != 0)
    }
}

/// A private directory under /tmp, removed with its contents.
final class SocketTestDirectory {
    let path: String
    init() throws {
        var template = Array("/tmp/trfXXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw SystemError("mkdtemp") }
        path = String(cString: p)
    }
    deinit {
        var parts: [String] = []
        if let d = opendir(path) {
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                if name != "." && name != ".." { parts.append(name) }
            }
            closedir(d)
        }
        for n in parts {
            let full = path + "/" + n
            if unlink(full) != 0 { rmdir(full) }
        }
        rmdir(path)
    }
}
