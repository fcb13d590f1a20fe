import Dispatch
import Foundation
import TrellisSystem
import Synchronization

/// A ``DataPlane`` through the upstream vineyard **Python** client: one long-lived helper
/// process (`python -c ...`, JSON lines on its stdin/stdout) connected to each replica's socket.
///
/// An interim binding, so flows run end to end before the Swift-client binding exists, and a
/// reference for its semantics: names are global across replicas (shared etcd metadata); a
/// move migrates the object into the target replica and points the name at the copy (the
/// source copy is remembered and deleted with the name on its replica); residency counts the
/// bytes of the blobs whose instance is the replica. It needs an interpreter with `vineyard`
/// (`$TRELLIS_PYTHON`). Calls are serialized on a private queue, never on the caller's thread;
/// the first call pays the helper's `import vineyard` (about a second).
public final class VineyardPythonDataPlane: DataPlane, @unchecked Sendable {
    /// The helper's source.
    public static let helper = """
        import json, sys
        import vineyard
        from vineyard.core.client import _is_blob
        from vineyard._C import ObjectMeta

        clients, copies = {}, {}

        def client(sock):
            if sock not in clients:
                clients[sock] = vineyard.connect(sock)
            return clients[sock]

        def blobs(meta):
            if _is_blob(meta.id):
                return [meta]
            return [b for _, v in meta.items() if isinstance(v, ObjectMeta) for b in blobs(v)]

        def local_bytes(meta, instance, c=None):
            # Blob metas in a tree carry no length; use the object's size when every blob is
            # local, and the local blobs' own sizes when it is split.
            bs = blobs(meta)
            here = [b for b in bs if b.instance_id == instance]
            if len(here) == len(bs):
                return meta.memory_usage or meta.nbytes
            total = 0
            for b in here:
                try:
                    total += c.get_blob(b.id).size
                except Exception:
                    pass
            return total

        def resolve(c, name):
            try:
                return c.get_name(name)
            except Exception:
                return None

        def resident(sock, names):
            c = client(sock)
            out = {}
            for n in names:
                ids = [oid for inst, oid in copies.get(n, []) if inst == c.instance_id]
                oid = resolve(c, n)
                if oid is not None:
                    ids.append(oid)
                best = None
                for i in ids:
                    try:
                        b = local_bytes(c.get_meta(i, sync_remote=True), c.instance_id, c)
                    except Exception:
                        continue
                    best = b if best is None else max(best, b)
                if best is not None:
                    out[n] = best
            return out

        def move(name, src, dst):
            c = client(dst)
            oid = c.get_name(name)
            new = c.migrate(oid)
            copies.setdefault(name, [])
            copies[name].append((client(src).instance_id, oid))
            copies[name].append((c.instance_id, new))
            c.put_name(new, name)
            return local_bytes(c.get_meta(new, sync_remote=True), c.instance_id, c)

        def delete(sock, names):
            c = client(sock)
            for n in names:
                ids = [oid for inst, oid in copies.get(n, []) if inst == c.instance_id]
                oid = resolve(c, n)
                if oid is not None:
                    try:
                        if local_bytes(c.get_meta(oid, sync_remote=True), c.instance_id, c) > 0 or not copies.get(n):
                            ids.append(oid)
                    except Exception:
                        pass
                for i in set(ids):
                    try:
                        c.delete(i, deep=True, force=True)
                    except Exception:
                        pass
                if oid is not None and oid in ids:
                    try:
                        c.drop_name(n)
                    except Exception:
                        pass
                copies[n] = [(inst, o) for inst, o in copies.get(n, []) if inst != c.instance_id]

        for line in sys.stdin:
            req = json.loads(line)
            try:
                op = req["op"]
                if op == "resident":
                    res = resident(req["socket"], req["names"])
                elif op == "move":
                    res = move(req["name"], req["from"], req["to"])
                else:
                    res = delete(req["socket"], req["names"])
                print(json.dumps({"ok": res}), flush=True)
            except Exception as e:
                print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}), flush=True)
        """

    private let process = Process()
    private let input: FileHandle
    private let output: FileHandle
    /// One conversation with the helper at a time.
    private let conversation = Mutex<Void>(())

    /// Starts the helper with `python` (which must import `vineyard`).
    public init(python: String = FlowRunOptions.defaultPython(environment: ProcessInfo.processInfo.environment)) throws {
        let inPipe = Pipe()
        let outPipe = Pipe()
        let path = try ChildProcess.resolve(python, environment: ProcessInfo.processInfo.environment, workingDirectory: nil)
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["-c", VineyardPythonDataPlane.helper]
        process.standardInput = inPipe
        process.standardOutput = outPipe
        process.standardError = FileHandle.standardError
        try process.run()
        input = inPipe.fileHandleForWriting
        output = outPipe.fileHandleForReading
    }

    deinit {
        try? input.close()
        process.waitUntilExit()
    }

    private func call(_ request: [String: any Sendable]) async throws -> Any? {
        let data = try JSONSerialization.data(withJSONObject: request)
        // The helper answers one line per request; its pipes block, so the blocking pool reads them.
        let reply: Data? = await Blocking.run { [self] () -> Data? in
            self.conversation.withLock { _ -> Data? in
                input.write(data + Data([0x0A]))
                var line = Data()
                while true {
                    let byte = output.readData(ofLength: 1)
                    if byte.isEmpty { return nil }
                    if byte[byte.startIndex] == 0x0A { return line }
                    line.append(byte)
                }
            }
        }
        guard let reply else { throw DataPlaneError("the vineyard helper exited") }
        let object = try JSONSerialization.jsonObject(with: reply) as? [String: Any] ?? [:]
        if let e = object["error"] as? String { throw DataPlaneError(e) }
        return object["ok"]
    }

    /// Bytes of each named object's blobs held by `replica`.
    public func residentBytes(of names: [String], on replica: Replica) async throws -> [String: Int] {
        let r = try await call(["op": "resident", "socket": replica.socket, "names": names])
        return (r as? [String: Any] ?? [:]).compactMapValues { ($0 as? NSNumber)?.intValue }
    }

    /// Migrates the object into `to` and points its name at the copy.
    public func move(_ name: String, from: Replica, to: Replica) async throws -> Int {
        (try await call(["op": "move", "name": name, "from": from.socket, "to": to.socket]) as? NSNumber)?.intValue ?? 0
    }

    /// Deletes the named objects' copies on `replica` (and the name with its last copy).
    public func delete(_ names: [String], on replica: Replica) async throws {
        _ = try await call(["op": "delete", "socket": replica.socket, "names": names])
    }
}
