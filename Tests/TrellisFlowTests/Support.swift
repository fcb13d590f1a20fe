import Foundation
@testable import TrellisFlow

#if canImport(Glibc)
import Glibc
#endif

/// A fresh temporary directory, removed by `cleanup()`.
struct TempDir {
    let path: String
    init(_ tag: String = "tf") {
        var template = Array("/tmp/\(tag)XXXXXX".utf8CString)
        _ = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    func sub(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
    func cleanup() { try? FileManager.default.removeItem(atPath: path) }
}

/// A data plane over directories: replica i's store is the directory `root/r<i>` (which is also
/// what steps get as VINEYARD_IPC_SOCKET); an object is a file at `<dir>/<store name>`.
/// A step "puts" by writing the file in its own replica's directory and "gets locally" by
/// finding it there — the stand-in for a zero-copy IPC get. Moves copy the file.
final class DirectoryDataPlane: DataPlane {
    let root: String
    let replicas: [Replica]

    init(root: String, count: Int) {
        self.root = root
        replicas = (0..<count).map { Replica(index: $0, socket: "\(root)/r\($0)") }
        for r in replicas { try? FileManager.default.createDirectory(atPath: r.socket, withIntermediateDirectories: true) }
    }

    func path(_ name: String, _ r: Replica) -> String { "\(r.socket)/\(name)" }

    func residentBytes(of names: [String], on replica: Replica) async throws -> [String: Int] {
        var out: [String: Int] = [:]
        for n in names {
            if let a = try? FileManager.default.attributesOfItem(atPath: path(n, replica)), let size = a[.size] as? Int {
                out[n] = size
            }
        }
        return out
    }

    func move(_ name: String, from: Replica, to: Replica) async throws -> Int {
        let src = path(name, from)
        let dst = path(name, to)
        try FileManager.default.createDirectory(
            atPath: (dst as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(atPath: dst)
        try FileManager.default.copyItem(atPath: src, toPath: dst)
        return (try FileManager.default.attributesOfItem(atPath: dst)[.size] as? Int) ?? 0
    }

    func delete(_ names: [String], on replica: Replica) async throws {
        for n in names { try? FileManager.default.removeItem(atPath: path(n, replica)) }
    }

    /// Every object of this store is a file.
    func typeNames(of names: [String], on replica: Replica) async throws -> [String: String] {
        var out: [String: String] = [:]
        for n in names where FileManager.default.fileExists(atPath: path(n, replica)) { out[n] = "file" }
        return out
    }

    /// The bytes of the files in the replica's directory.
    func memory(on replica: Replica) async throws -> ReplicaMemory? {
        let all = (FileManager.default.enumerator(atPath: replica.socket)?.allObjects as? [String]) ?? []
        let used = all.reduce(0) { sum, f in
            guard let a = try? FileManager.default.attributesOfItem(atPath: "\(replica.socket)/\(f)"),
                a[.type] as? FileAttributeType == .typeRegular
            else { return sum }
            return sum + ((a[.size] as? Int) ?? 0)
        }
        return ReplicaMemory(replica: replica.index, usedBytes: used, limitBytes: 0)
    }

    /// Store names present on a replica.
    func names(on r: Int) -> [String] {
        let base = replicas[r].socket
        let all = (FileManager.default.enumerator(atPath: base)?.allObjects as? [String]) ?? []
        return all.filter { !isDirectory("\(base)/\($0)") }.sorted()
    }

    private func isDirectory(_ p: String) -> Bool {
        var d: ObjCBool = false
        return FileManager.default.fileExists(atPath: p, isDirectory: &d) && d.boolValue
    }
}

/// Shell snippets for steps over a DirectoryDataPlane.
enum Sh {
    /// Puts `name` with `bytes` bytes on the step's replica.
    static func put(_ name: String, bytes: Int) -> String {
        #"mkdir -p "$VINEYARD_IPC_SOCKET/$TRELLIS_RUN_ID" && head -c \#(bytes) /dev/zero > "$VINEYARD_IPC_SOCKET/${TRELLIS_NAME_PREFIX}\#(name)""#
    }
    /// Fails unless `name` is local to the step's replica.
    static func getLocal(_ name: String) -> String {
        #"test -f "$VINEYARD_IPC_SOCKET/${TRELLIS_NAME_PREFIX}\#(name)" || { echo "\#(name) is not local" >&2; exit 3; }"#
    }
    static func step(
        _ name: String, _ script: String, inputs: [String] = [], outputs: [String] = [], after: [String] = [],
        retries: Int = 0, retryDelay: Double = 0.05, timeout: Double? = nil
    ) -> StepSpec {
        .command(
            name, ["/bin/sh", "-c", script], inputs: inputs, outputs: outputs, after: after, retries: retries,
            retryDelay: retryDelay, timeout: timeout)
    }
}

/// A fake `vineyard` Python package whose Client stores pickles as files in the directory
/// named by VINEYARD_IPC_SOCKET (so it works with DirectoryDataPlane), with the same
/// name-call structure as the upstream client: put(name=) → put_name, get(name=) → get_name.
enum FakeVineyard {
    static func install(in dir: String) throws {
        let pkg = dir + "/vineyard"
        try FileManager.default.createDirectory(atPath: pkg + "/core", withIntermediateDirectories: true)
        try "from vineyard.core.client import Client\n\n_c = None\n\ndef connect():\n    global _c\n    if _c is None:\n        _c = Client()\n    return _c\n\ndef put(value, builder=None, persist=False, name=None, **kw):\n    return connect().put(value, builder, persist, name, **kw)\n\ndef get(object_id=None, name=None, resolver=None, fetch=False, **kw):\n    return connect().get(object_id, name, resolver, fetch, **kw)\n"
            .write(toFile: pkg + "/__init__.py", atomically: true, encoding: .utf8)
        try "".write(toFile: pkg + "/core/__init__.py", atomically: true, encoding: .utf8)
        try """
            import os, pickle, uuid

            class Client:
                def __init__(self):
                    self.root = os.environ["VINEYARD_IPC_SOCKET"]
                    self.ids = {}
                def put(self, value, builder=None, persist=False, name=None, **kw):
                    oid = uuid.uuid4().hex
                    self.ids[oid] = value
                    if name is not None:
                        self.put_name(oid, name)
                    return oid
                def put_name(self, oid, name):
                    path = os.path.join(self.root, name)
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, "wb") as f:
                        pickle.dump(self.ids[oid], f)
                def get_name(self, name, wait=False):
                    path = os.path.join(self.root, name)
                    if not os.path.exists(path):
                        raise KeyError("no object named %r on this replica" % name)
                    return path
                def drop_name(self, name):
                    os.remove(os.path.join(self.root, name))
                def list_names(self, pattern, regex=False, limit=5):
                    import glob
                    return [os.path.relpath(p, self.root) for p in glob.glob(os.path.join(self.root, pattern))][:limit]
                def get(self, object_id=None, name=None, resolver=None, fetch=False, **kw):
                    path = self.get_name(name) if name is not None else object_id
                    with open(path, "rb") as f:
                        return pickle.load(f)

            """.write(toFile: pkg + "/core/client.py", atomically: true, encoding: .utf8)
    }
}

/// Waits until `condition` holds or `seconds` pass.
func eventually(_ seconds: Double = 60, _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return condition()
}

func readFile(_ path: String) -> String {
    FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) } ?? ""
}

func processAlive(_ pid: Int32) -> Bool {
    // A zombie still answers kill(0): look at /proc state.
    guard kill(pid, 0) == 0 else { return false }
    let stat = readFile("/proc/\(pid)/stat")
    if let close = stat.lastIndex(of: ")") {
        let rest = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces)
        return !rest.hasPrefix("Z")
    }
    return true
}
