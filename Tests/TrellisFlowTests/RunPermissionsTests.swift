import Foundation
import Testing
@testable import TrellisFlow

#if canImport(Glibc)
import Glibc
import TrellisTestSupport
#endif

/// Run records and logs are private by default (issue 17): directories 0700, files 0600.
@Suite("Run directory and log permissions", .onBlockingPool)
struct RunPermissionsTests {
    func mode(_ path: String) -> mode_t {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_mode & 0o777 : 0
    }

    @Test("a new run's directories are 0700 and its record and logs 0600 (not the umask's 0755/0644)")
    func privateByDefault() async throws {
        #expect(RunPermissions.current == .private)  // the suite runs without TRELLIS_RUN_PERMISSIONS
        let dir = TempDir("trperm")
        defer { dir.cleanup() }
        let store = RunStore(root: dir.sub("runs"))
        try store.create("run-1")
        #expect(mode(store.directory(of: "run-1")) == 0o700)
        #expect(mode(store.directory(of: "run-1") + "/logs") == 0o700)
        #expect(mode(store.libDirectory(of: "run-1")) == 0o700)
        let log = store.logPath(run: "run-1", step: "a", stream: .stderr)
        appendLine("attempt 1", to: log)
        #expect(mode(log) == 0o600)
        let out = store.logPath(run: "run-1", step: "a", stream: .stdout)
        let child = try ChildProcess.spawn(
            executable: "/bin/sh", arguments: ["-c", "echo hi"], environment: ProcessInfo.processInfo.environment,
            workingDirectory: nil, stdout: .file(out), stderr: .file(out), newSession: false)
        #expect(await child.wait().succeeded)
        #expect(mode(out) == 0o600)
    }

    @Test("TRELLIS_RUN_PERMISSIONS names: private, group, world; anything else is refused")
    func names() {
        #expect(RunPermissions.named(nil) == .private)
        #expect(RunPermissions.named("") == .private)
        #expect(RunPermissions.named("group") == RunPermissions(directory: 0o750, file: 0o640))
        #expect(RunPermissions.named("World") == RunPermissions(directory: 0o755, file: 0o644))
        #expect(RunPermissions.named("0777") == nil)
    }
}
