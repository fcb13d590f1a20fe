import ArgumentParser
import TrellisClient
import TrellisProtocol
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// `--socket` and `--json`, shared by the object commands.
struct ObjectCommandOptions: ParsableArguments {
    @Option(name: .long, help: "The daemon's IPC socket (default: $VINEYARD_IPC_SOCKET, else /var/run/vineyard.sock).")
    var socket: String?

    @Flag(name: .long, help: "Print JSON for scripts instead of a table.")
    var json = false

    /// Connects, turning failure into the one-line error of ``ObjectCommand``.
    func connect() throws(ClientError) -> Client {
        try Client(socket: socket)
    }
}

/// An object command: runs against the daemon and turns every client failure into one
/// line on stderr and exit status 1.
protocol ObjectCommand: ParsableCommand {
    var options: ObjectCommandOptions { get }
    func run(with client: Client) throws(ClientError)
}

extension ObjectCommand {
    func run() throws {
        let name = Self.configuration.commandName ?? "trellis"
        let client: Client
        do {
            client = try options.connect()
        } catch {
            let path = options.socket ?? Client.defaultSocketPath
            let reason = error.systemError.map { String(cString: strerror($0.errno)) } ?? error.message
            printError("trellis \(name): cannot connect to the daemon at \(path): \(reason) (is `trellis serve` running?)")
            throw ExitCode(1)
        }
        defer { client.close() }
        do {
            try run(with: client)
        } catch {
            printError("trellis \(name): \(Self.describe(error))")
            throw ExitCode(1)
        }
    }

    static func describe(_ error: ClientError) -> String {
        switch error.kind {
        case .daemon: return "\(error.message) (\(error.code.name), code \(error.code.rawValue))"
        default: return error.description
        }
    }

    /// Resolves an id (`o…`) or a name, with a clear error when neither exists.
    func resolve(_ target: String, _ client: Client) throws(ClientError) -> ObjectID {
        do {
            return try client.resolve(target)
        } catch where error.isNotFound {
            throw ClientError(.daemon, code: .objectNotExists, "no object or name '\(target)'")
        }
    }
}

// MARK: - Output

/// Writes a line to stdout, unbuffered.
func printOut(_ text: String) {
    var bytes = Array(text.utf8)
    if bytes.last != 10 { bytes.append(10) }
    bytes.withUnsafeBytes { try? Descriptor.standardOutput.writeFile($0) }
}

/// `1.5 GiB`, `512 B`.
func humanBytes(_ n: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n)
    var u = 0
    while v >= 1024 && u < units.count - 1 {
        v /= 1024
        u += 1
    }
    if u == 0 { return "\(n) B" }
    let tenths = (v * 10).rounded() / 10
    return "\(tenths) \(units[u])"
}

/// Left-aligned columns separated by two spaces, with a header row.
func renderTable(_ header: [String], _ rows: [[String]]) -> String {
    var widths = header.map(\.count)
    for r in rows {
        for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) }
    }
    func line(_ cells: [String]) -> String {
        var s = ""
        for (i, c) in cells.enumerated() {
            if i == cells.count - 1 {
                s += c
            } else {
                s += c + String(repeating: " ", count: widths[i] - c.count + 2)
            }
        }
        return s
    }
    return ([line(header)] + rows.map(line)).joined(separator: "\n")
}

/// JSON with two-space indentation and sorted keys.
func prettyJSON(_ value: JSON, indent: String = "") -> String {
    let inner = indent + "  "
    switch value {
    case .object(let o) where !o.isEmpty:
        let items = o.keys.sorted().map { "\(inner)\(JSON.string($0)): \(prettyJSON(o[$0]!, indent: inner))" }
        return "{\n" + items.joined(separator: ",\n") + "\n\(indent)}"
    case .array(let a) where !a.isEmpty:
        return "[\n" + a.map { inner + prettyJSON($0, indent: inner) }.joined(separator: ",\n") + "\n\(indent)]"
    default:
        return value.description
    }
}

// MARK: - Files

/// A file opened for writing (created or truncated), closed when done; `-` is stdout.
struct OutputFile: ~Copyable {
    /// The file, owned (nil for stdout, which is not ours to close).
    private let owner: OwnedFD?
    /// Where the bytes go: the owned file's descriptor, or stdout's.
    private let descriptor: Descriptor
    let path: String

    init(path: String) throws(ClientError) {
        self.path = path
        if path == "-" {
            owner = nil
            descriptor = .standardOutput
            return
        }
        do {
            let fd = try OwnedFD.open(path, flags: O_WRONLY | O_CREAT | O_TRUNC)
            descriptor = fd.descriptor
            owner = consume fd
        } catch {
            throw ClientError(.invalidArgument, "cannot write \(path)", systemError: error)
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(ClientError) {
        do {
            try descriptor.writeFile(bytes)
        } catch {
            throw ClientError(.invalidArgument, "cannot write \(path)", systemError: error)
        }
    }

    func write(_ bytes: [UInt8]) throws(ClientError) {
        var failure: ClientError?
        bytes.withUnsafeBytes { b in
            do throws(ClientError) { try write(b) } catch { failure = error }
        }
        if let failure { throw failure }
    }
}

/// A file opened for reading, closed when done.
struct InputFile: ~Copyable {
    private let owner: OwnedFD
    let path: String
    let size: Int

    init(path: String) throws(ClientError) {
        self.path = path
        do {
            let fd = try OwnedFD.open(path, flags: O_RDONLY)
            size = try fd.descriptor.fileSize()
            owner = fd
        } catch {
            throw ClientError(.invalidArgument, "cannot read \(path)", systemError: error)
        }
    }

    /// Reads exactly `count` bytes at `offset` into `buffer`.
    func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int) throws(ClientError) {
        let complete: Bool
        do {
            complete = try owner.descriptor.read(into: buffer, count: count, at: offset)
        } catch {
            throw ClientError(.invalidArgument, "cannot read \(path)", systemError: error)
        }
        if !complete { throw ClientError(.invalidArgument, "\(path) is shorter than its header says") }
    }

    /// The first `count` bytes (or fewer, for a shorter file).
    func prefix(_ count: Int) throws(ClientError) -> [UInt8] {
        let n = min(count, size)
        guard n > 0 else { return [] }
        var bytes = [UInt8](repeating: 0, count: n)
        var failure: ClientError?
        bytes.withUnsafeMutableBytes { b in
            do throws(ClientError) { try read(into: b.baseAddress!, count: n, at: 0) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }
}
