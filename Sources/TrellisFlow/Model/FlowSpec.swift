/// A flow: a runtime to run it on and a DAG of steps that hand data to each other through
/// the object store.
///
/// The same value comes from three front doors: a YAML file (``FlowSpec/load(yaml:baseDirectory:)``),
/// Swift code (build the value directly), and the `trellis.flow` Python module (which writes
/// the YAML form). Dependencies are inferred from ``StepSpec/inputs`` and ``StepSpec/outputs``
/// (a step waits for the producer of each of its inputs); ``StepSpec/after`` adds ordering
/// that no object expresses. Call ``FlowSpec/validate()`` before running anything.
public struct FlowSpec: Codable, Sendable, Equatable {
    /// A short name, used to make run ids (`<name>-<time>-<random>`). Defaults to `flow`.
    public var name: String
    /// What the flow runs on: replica count, size per replica, storage medium.
    public var runtime: RuntimeSpec
    /// How many steps may run at once (all replicas together); `nil` lets the runner choose.
    public var maxParallel: Int?
    /// The steps, in the order they were written (used for display and to break ties).
    public var steps: [StepSpec]
    /// The directory relative paths in steps are resolved against (the YAML file's directory).
    /// `nil` means the runner's current directory.
    public var baseDirectory: String?

    /// Creates a flow.
    public init(
        name: String = "flow", runtime: RuntimeSpec = RuntimeSpec(), maxParallel: Int? = nil,
        steps: [StepSpec], baseDirectory: String? = nil
    ) {
        self.name = name
        self.runtime = runtime
        self.maxParallel = maxParallel
        self.steps = steps
        self.baseDirectory = baseDirectory
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, runtime, steps
        case maxParallel = "max_parallel"
        case baseDirectory = "base_dir"
    }

    /// Decodes a flow, rejecting unknown keys (a misspelt `ouputs:` must not be ignored).
    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, allowed: CodingKeys.allCases.map(\.rawValue), context: "flow")
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? "flow"
        runtime = try c.decodeIfPresent(RuntimeSpec.self, forKey: .runtime) ?? RuntimeSpec()
        maxParallel = try c.decodeIfPresent(Int.self, forKey: .maxParallel)
        steps = try c.decodeIfPresent([StepSpec].self, forKey: .steps) ?? []
        baseDirectory = try c.decodeIfPresent(String.self, forKey: .baseDirectory)
    }

    /// Encodes the flow in the same shape the YAML front door reads.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(runtime, forKey: .runtime)
        try c.encodeIfPresent(maxParallel, forKey: .maxParallel)
        try c.encode(steps, forKey: .steps)
        try c.encodeIfPresent(baseDirectory, forKey: .baseDirectory)
    }

    /// The step called `name`, if any.
    public func step(named name: String) -> StepSpec? { steps.first { $0.name == name } }
}

/// The storage medium of the replicas.
public enum Medium: String, Codable, Sendable, Equatable, CaseIterable {
    /// Objects live in shared memory only.
    case memory
    /// Objects live in shared memory and may spill to ``RuntimeSpec/spillDirectory`` under pressure.
    case spill
}

/// The runtime a flow runs on: `replicas` daemons of `size` bytes each on this machine.
public struct RuntimeSpec: Codable, Sendable, Equatable {
    /// Number of replica daemons (≥ 1). More than one shares metadata through a private etcd.
    public var replicas: Int
    /// Shared-memory size of each replica in vineyardd's syntax (`512Mi`, `30Gi`, `2G`, bytes).
    public var size: String
    /// Memory only, or memory with spill to ``spillDirectory``.
    public var medium: Medium
    /// Where replicas spill (one subdirectory per replica); required when ``medium`` is `.spill`.
    public var spillDirectory: String?
    /// Arenas from the kernel's hugetlb pool, pre-faulted (`--huge_pages --reserve_memory`):
    /// large handoffs then take one page fault per 2 MiB. The pool must hold
    /// `replicas × size` (see `/proc/sys/vm/nr_hugepages`).
    public var hugePages: Bool

    /// Creates a runtime description.
    public init(
        replicas: Int = 1, size: String = "1Gi", medium: Medium = .memory, spillDirectory: String? = nil,
        hugePages: Bool = false
    ) {
        self.replicas = replicas
        self.size = size
        self.medium = medium
        self.spillDirectory = spillDirectory
        self.hugePages = hugePages
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case replicas, size, medium
        case spillDirectory = "spill_dir"
        case hugePages = "huge_pages"
    }

    /// Decodes a runtime; `size` may be a string (`30Gi`) or a plain number of bytes.
    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, allowed: CodingKeys.allCases.map(\.rawValue), context: "runtime")
        let c = try decoder.container(keyedBy: CodingKeys.self)
        replicas = try c.decodeIfPresent(Int.self, forKey: .replicas) ?? 1
        if let s = try? c.decodeIfPresent(String.self, forKey: .size) {
            size = s
        } else if let n = try c.decodeIfPresent(Int.self, forKey: .size) {
            size = String(n)
        } else {
            size = "1Gi"
        }
        medium = try c.decodeIfPresent(Medium.self, forKey: .medium) ?? .memory
        spillDirectory = try c.decodeIfPresent(String.self, forKey: .spillDirectory)
        hugePages = try c.decodeIfPresent(Bool.self, forKey: .hugePages) ?? false
    }

    /// Encodes the runtime in the YAML front door's shape.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(replicas, forKey: .replicas)
        try c.encode(size, forKey: .size)
        try c.encode(medium, forKey: .medium)
        try c.encodeIfPresent(spillDirectory, forKey: .spillDirectory)
        if hugePages { try c.encode(hugePages, forKey: .hugePages) }
    }

    /// ``size`` in bytes, or `nil` when it does not parse or is not positive.
    public var sizeInBytes: Int? { ByteSize.parse(size) }
}

/// A step: something to run, the objects it reads and writes, and how to treat failures.
public struct StepSpec: Codable, Sendable, Equatable {
    /// Unique within the flow; letters, digits, `.`, `_`, `-` (it names log files).
    public var name: String
    /// What to run; `nil` only in a spec that ``FlowSpec/validate()`` will reject.
    public var action: StepAction?
    /// Extra environment for the step (on top of the runner's and the `TRELLIS_*` variables).
    public var env: [String: String]
    /// Object names the step reads; each must be an output of another step of the flow.
    public var inputs: [String]
    /// Object names the step writes; at most one producer per name in a flow.
    public var outputs: [String]
    /// Steps that must succeed first although no object links them.
    public var after: [String]
    /// How many times to retry after a failure or timeout (0 = run once).
    public var retries: Int
    /// Delay before the first retry in seconds; doubles on each further retry (capped at 60 s).
    public var retryDelay: Double
    /// Wall-clock limit of one attempt in seconds; the step's whole process group is killed then.
    public var timeout: Double?
    /// Working directory, relative to the flow's base directory; default: the base directory.
    public var workdir: String?
    /// What the step's pod adds on Kubernetes (image, packages, volumes); local runs ignore it.
    public var kubernetes: StepPod?

    /// Creates a step.
    public init(
        name: String, action: StepAction?, env: [String: String] = [:], inputs: [String] = [],
        outputs: [String] = [], after: [String] = [], retries: Int = 0, retryDelay: Double = 1,
        timeout: Double? = nil, workdir: String? = nil, kubernetes: StepPod? = nil
    ) {
        self.name = name
        self.action = action
        self.env = env
        self.inputs = inputs
        self.outputs = outputs
        self.after = after
        self.retries = retries
        self.retryDelay = retryDelay
        self.timeout = timeout
        self.workdir = workdir
        self.kubernetes = kubernetes
    }

    /// Convenience: a step running a command line (argument vector, no shell).
    public static func command(
        _ name: String, _ argv: [String], inputs: [String] = [], outputs: [String] = [],
        after: [String] = [], env: [String: String] = [:], retries: Int = 0, retryDelay: Double = 1,
        timeout: Double? = nil
    ) -> StepSpec {
        StepSpec(
            name: name, action: .command(argv), env: env, inputs: inputs, outputs: outputs, after: after,
            retries: retries, retryDelay: retryDelay, timeout: timeout)
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, command, python, swift, env, inputs, outputs, after, retries, timeout, workdir, kubernetes
        case retryDelay = "retry_delay"
    }

    /// Decodes a step. `command` is a list, or a string split like a shell would split words
    /// (quotes and backslashes) but never expanded; `timeout`/`retry_delay` take seconds or
    /// `500ms`, `30s`, `5m`, `1h`. More than one of `command`/`python`/`swift` is an error
    /// naming the step; none is left for ``FlowSpec/validate()`` to report.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = (try? c.decodeIfPresent(String.self, forKey: .name)) ?? ""
        let label = name.isEmpty ? "step" : "step '\(name)'"
        try rejectUnknownKeys(decoder, allowed: CodingKeys.allCases.map(\.rawValue), context: label)
        var actions: [StepAction] = []
        if c.contains(.command) {
            if let list = try? c.decode([String].self, forKey: .command) {
                actions.append(.command(list))
            } else {
                let text = try c.decode(String.self, forKey: .command)
                do {
                    actions.append(.command(try CommandLineSplitter.split(text)))
                } catch {
                    throw DecodingError.dataCorruptedError(
                        forKey: .command, in: c, debugDescription: "\(label): \(error)")
                }
            }
        }
        if c.contains(.python) { actions.append(.python(try c.decode(PythonTarget.self, forKey: .python))) }
        if c.contains(.swift) { actions.append(.swift(try c.decode(SwiftTarget.self, forKey: .swift))) }
        if actions.count > 1 {
            throw DecodingError.dataCorruptedError(
                forKey: .command, in: c,
                debugDescription: "\(label): give exactly one of 'command', 'python', 'swift'")
        }
        action = actions.first
        env = try c.decodeIfPresent([String: String].self, forKey: .env) ?? [:]
        inputs = try c.decodeIfPresent([String].self, forKey: .inputs) ?? []
        outputs = try c.decodeIfPresent([String].self, forKey: .outputs) ?? []
        after = try c.decodeIfPresent([String].self, forKey: .after) ?? []
        retries = try c.decodeIfPresent(Int.self, forKey: .retries) ?? 0
        func seconds(_ key: CodingKeys) throws -> Double? {
            guard c.contains(key) else { return nil }
            if let d = try? c.decode(Double.self, forKey: key) { return d }
            let text = try c.decode(String.self, forKey: key)
            guard let d = DurationText.parse(text) else {
                throw DecodingError.dataCorruptedError(
                    forKey: key, in: c,
                    debugDescription: "\(label): '\(text)' is not a duration (e.g. 30, 500ms, 30s, 5m, 1h)")
            }
            return d
        }
        retryDelay = try seconds(.retryDelay) ?? 1
        timeout = try seconds(.timeout)
        workdir = try c.decodeIfPresent(String.self, forKey: .workdir)
        kubernetes = try c.decodeIfPresent(StepPod.self, forKey: .kubernetes)
    }

    /// Encodes the step in the YAML front door's shape (empty fields left out).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        switch action {
        case .command(let argv)?: try c.encode(argv, forKey: .command)
        case .python(let p)?: try c.encode(p, forKey: .python)
        case .swift(let s)?: try c.encode(s, forKey: .swift)
        case nil: break
        }
        if !env.isEmpty { try c.encode(env, forKey: .env) }
        if !inputs.isEmpty { try c.encode(inputs, forKey: .inputs) }
        if !outputs.isEmpty { try c.encode(outputs, forKey: .outputs) }
        if !after.isEmpty { try c.encode(after, forKey: .after) }
        if retries != 0 { try c.encode(retries, forKey: .retries) }
        if retryDelay != 1 { try c.encode(retryDelay, forKey: .retryDelay) }
        try c.encodeIfPresent(timeout, forKey: .timeout)
        try c.encodeIfPresent(workdir, forKey: .workdir)
        try c.encodeIfPresent(kubernetes, forKey: .kubernetes)
    }
}

/// What a step runs.
public enum StepAction: Sendable, Equatable {
    /// An argument vector executed directly (never through a shell); `argv[0]` is looked up in `PATH`
    /// unless it contains a `/` (then it is relative to the step's working directory).
    case command([String])
    /// A Python file, and optionally a function in it to call with no arguments.
    case python(PythonTarget)
    /// A Swift (or any native) executable with arguments.
    case swift(SwiftTarget)
}

/// A Python step: `file` is executed as `__main__`, or imported and `function()` called.
///
/// The source is run from the file itself — never pasted into a shell — by a small bootstrap
/// the runner writes next to the run record; the bootstrap also applies the run's object-name
/// prefix to the upstream `vineyard` client (see ``ObjectNaming``).
public struct PythonTarget: Codable, Sendable, Equatable {
    /// Path of the `.py` file, relative to the step's working directory.
    public var file: String
    /// Function to call (module-level, no arguments); `nil` runs the file as a script.
    public var function: String?
    /// Python interpreter; `nil` uses the runner's (`$TRELLIS_PYTHON`, else `python3`).
    public var interpreter: String?

    /// Creates a Python target.
    public init(file: String, function: String? = nil, interpreter: String? = nil) {
        self.file = file
        self.function = function
        self.interpreter = interpreter
    }
}

/// A native-executable step (typically a SwiftPM executable product).
public struct SwiftTarget: Codable, Sendable, Equatable {
    /// Path of the executable, relative to the step's working directory, or a name in `PATH`.
    public var executable: String
    /// Arguments passed to it.
    public var arguments: [String]

    /// Creates a native-executable target.
    public init(executable: String, arguments: [String] = []) {
        self.executable = executable
        self.arguments = arguments
    }

    enum CodingKeys: String, CodingKey { case executable, arguments }

    /// Decodes; `arguments` may be omitted.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        executable = try c.decode(String.self, forKey: .executable)
        arguments = try c.decodeIfPresent([String].self, forKey: .arguments) ?? []
    }
}

// MARK: - Helpers shared by the decoders

struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

func rejectUnknownKeys(_ decoder: any Decoder, allowed: [String], context: String) throws {
    guard let c = try? decoder.container(keyedBy: AnyKey.self) else { return }
    let unknown = c.allKeys.map(\.stringValue).filter { !allowed.contains($0) }.sorted()
    if let first = unknown.first {
        throw DecodingError.dataCorrupted(
            .init(
                codingPath: decoder.codingPath,
                debugDescription:
                    "\(context): unknown key '\(first)' (known: \(allowed.sorted().joined(separator: ", ")))"))
    }
}

/// Byte sizes in vineyardd's syntax.
public enum ByteSize {
    /// Parses `123`, `512Mi`, `30Gi`, `2G`, `1.5g` (all suffixes binary, as vineyardd reads them).
    /// Returns `nil` for text that does not parse or a size ≤ 0.
    public static func parse(_ text: String) -> Int? {
        let t = text.trimmingSpaces
        guard !t.isEmpty else { return nil }
        let digits = t.prefix { "0123456789.".contains($0) }
        guard let number = Double(digits), number > 0 else { return nil }
        var rest = t.dropFirst(digits.count).lowercased()
        if rest.hasSuffix("ib") { rest = String(rest.dropLast(2)) } else if rest.hasSuffix("i") || rest.hasSuffix("b") {
            rest = String(rest.dropLast())
        }
        let shift: Int
        switch rest {
        case "": shift = 0
        case "k": shift = 10
        case "m": shift = 20
        case "g": shift = 30
        case "t": shift = 40
        default: return nil
        }
        let value = number * Double(1 << shift)
        guard value >= 1, value < Double(Int.max) else { return nil }
        return Int(value)
    }

    /// A short human form: `512 B`, `1.5 KiB`, `30.0 GiB`.
    public static func format(_ bytes: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(bytes)
        var i = 0
        while v >= 1024, i < units.count - 1 {
            v /= 1024
            i += 1
        }
        if i == 0 { return "\(bytes) B" }
        return "\(formatFixed(v, digits: 1)) \(units[i])"
    }
}

/// Durations written as seconds or with a unit.
public enum DurationText {
    /// Parses `30`, `1.5`, `500ms`, `30s`, `5m`, `1h` into seconds.
    public static func parse(_ text: String) -> Double? {
        let t = text.trimmingSpaces.lowercased()
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, scale) in units where t.hasSuffix(suffix) {
            if let v = Double(t.dropLast(suffix.count)) { return v * scale }
        }
        return Double(t)
    }
}

/// Splits a command line into words the way a POSIX shell splits them (single and double quotes,
/// backslash escapes), without any expansion: `$`, backticks, globs and `~` stay literal.
public enum CommandLineSplitter {
    /// A quote was not closed.
    public struct UnterminatedQuote: Error, CustomStringConvertible {
        /// Describes the problem.
        public var description: String { "unterminated quote in command" }
    }

    /// Splits `text` into words.
    public static func split(_ text: String) throws -> [String] {
        var words: [String] = []
        var current = ""
        var inWord = false
        var quote: Character?
        var escaped = false
        for ch in text {
            if escaped {
                current.append(ch)
                escaped = false
                inWord = true
                continue
            }
            if let q = quote {
                if ch == q {
                    quote = nil
                } else if ch == "\\" && q == "\"" {
                    escaped = true
                } else {
                    current.append(ch)
                }
                continue
            }
            switch ch {
            case "'", "\"":
                quote = ch
                inWord = true
            case "\\":
                escaped = true
            case " ", "\t", "\n":
                if inWord {
                    words.append(current)
                    current = ""
                    inWord = false
                }
            default:
                current.append(ch)
                inWord = true
            }
        }
        if quote != nil || escaped { throw UnterminatedQuote() }
        if inWord { words.append(current) }
        return words
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}

func formatFixed(_ value: Double, digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    var text = String(rounded)
    if let dot = text.firstIndex(of: ".") {
        let decimals = text.distance(from: dot, to: text.endIndex) - 1
        if decimals < digits { text += String(repeating: "0", count: digits - decimals) }
        if digits == 0 { text = String(text[..<dot]) }
    } else if digits > 0 {
        text += "." + String(repeating: "0", count: digits)
    }
    return text
}
