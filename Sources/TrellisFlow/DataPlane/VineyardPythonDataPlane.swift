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
/// (`$TRELLIS_PYTHON`). Calls are serialized and run on the blocking pool, never on the caller's thread;
/// the first call pays the helper's `import vineyard` (about a second).
public final class VineyardPythonDataPlane: DataPlane, @unchecked Sendable {
    /// The helper's source.
    public static let helper = pythonSource(PackageResources.vineyard_data_plane_py)

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
