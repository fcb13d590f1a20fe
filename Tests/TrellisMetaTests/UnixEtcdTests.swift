import Testing

@testable import TrellisMeta

#if canImport(Glibc)
import Glibc
import TrellisTestSupport
#endif

/// etcd on a UNIX socket (how a runtime's private etcd listens, issue 17): the client
/// turns `unix:///path` into AsyncHTTPClient's `http+unix://` and sends a Host header.
@Suite("etcd over a UNIX socket", .onBlockingPool)
struct UnixEtcdTests {
    @Test("unix:// endpoints become http+unix:// with the path percent-encoded")
    func normalized() {
        #expect(EtcdClient.normalizedEndpoint("unix:///run/x/etcd-client.sock:0") == "http+unix://%2Frun%2Fx%2Fetcd-client.sock%3A0")
        #expect(EtcdClient.normalizedEndpoint("unix:rel.sock") == "http+unix://rel.sock")
        #expect(EtcdClient.normalizedEndpoint("127.0.0.1:2379/") == "http://127.0.0.1:2379")
        #expect(EtcdClient.normalizedEndpoint("http://h:1") == "http://h:1")
    }

    @Test("a backend on unix:// registers and reads back", .enabled(if: EtcdBinary.available, EtcdBinary.skipMessage))
    func backendOverUnixSocket() async throws {
        var template = Array("/tmp/trux-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw SpawnError(description: "mkdtemp: errno \(errno)") }
        let dir = String(cString: made)
        let binary = try #require(EtcdBinary.path)
        // etcd wants host:port in unix:// URLs and takes it as a path relative to its cwd.
        let script = "cd '\(dir)' && exec '\(binary)' --name u --data-dir data"
            + " --listen-client-urls unix://client.sock:0 --advertise-client-urls unix://client.sock:0"
            + " --listen-peer-urls unix://peer.sock:0 --initial-advertise-peer-urls unix://peer.sock:0"
            + " --initial-cluster u=unix://peer.sock:0"
        let pid = try spawn(["/bin/sh", "-c", script], logPath: dir + "/etcd.log")
        defer {
            _ = kill(pid, SIGKILL)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            _ = try? spawn(["/bin/rm", "-rf", dir], logPath: "/dev/null")
        }
        let endpoint = "unix://\(dir)/client.sock:0"
        let client = EtcdClient(endpoint: endpoint, requestTimeout: .seconds(2), logger: testLogger)
        try await eventually(.seconds(30), "etcd on \(endpoint)") {
            _ = try await client.status()
            return true
        }
        let backend = MetaCore(
                etcd: EtcdConfiguration(endpoint: endpoint, prefix: "/ux", leaseTTL: .seconds(5), timeout: .seconds(10)),
            logger: testLogger)
        try await backend.connect()
        let id = try await backend.allocateInstanceID()
        _ = try await client.put("/ux/probe", value: "v")
        #expect(try await client.range("/ux/probe").kvs.first?.value == "v")
        #expect(try await backend.allocateInstanceID() == id + 1)
    }
}
