/// One reason a flow cannot run.
public struct FlowIssue: Sendable, Equatable, CustomStringConvertible {
    /// The kind of problem, for programs; ``message`` is for people.
    public enum Kind: String, Sendable, Equatable {
        /// The flow has no steps.
        case noSteps
        /// A step name is empty or uses characters other than letters, digits, `.`, `_`, `-`.
        case invalidStepName
        /// Two steps share a name.
        case duplicateStep
        /// A step has nothing to run.
        case missingCommand
        /// A step's command, file, function or executable is empty or malformed.
        case emptyCommand
        /// An output name is empty or has spaces/control characters.
        case invalidObjectName
        /// Two steps produce the same object (or one lists it twice).
        case duplicateOutput
        /// A step reads an object no step produces.
        case unknownInput
        /// A step's `after` names no step of the flow.
        case unknownAfter
        /// A step reads its own output or lists itself in `after`.
        case selfDependency
        /// Dependencies form a cycle.
        case cycle
        /// Negative retries or retry delay.
        case invalidRetries
        /// A timeout that is not positive.
        case invalidTimeout
        /// Impossible replicas, size or medium.
        case invalidRuntime
        /// `max_parallel` below 1.
        case invalidParallelism
        /// A step's `kubernetes` additions cannot make a pod (unnamed or clashing volumes, …).
        case invalidKubernetes
    }

    /// The kind of problem.
    public var kind: Kind
    /// The offending step, when there is one.
    public var step: String?
    /// A sentence naming the step and the object or field.
    public var message: String

    /// Creates an issue.
    public init(_ kind: Kind, step: String?, _ message: String) {
        self.kind = kind
        self.step = step
        self.message = message
    }

    /// The message.
    public var description: String { message }
}

/// A flow that failed validation; nothing was started.
public struct FlowValidationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Every problem found, in step order.
    public var issues: [FlowIssue]
    /// One issue per line.
    public var description: String {
        "invalid flow:\n" + issues.map { "  - \($0.message)" }.joined(separator: "\n")
    }
}

extension FlowSpec {
    /// All problems that keep the flow from running (empty when it is valid): no steps,
    /// bad or duplicate step names, steps with nothing to run, inputs no step produces,
    /// two producers of one name, unknown `after` steps, dependency cycles (naming the steps on
    /// the cycle), negative retries, non-positive timeouts, an impossible runtime.
    public func issues() -> [FlowIssue] {
        var out: [FlowIssue] = []
        if steps.isEmpty { out.append(FlowIssue(.noSteps, step: nil, "the flow has no steps")) }
        if runtime.replicas < 1 || runtime.replicas > 64 {
            out.append(FlowIssue(.invalidRuntime, step: nil, "runtime.replicas must be between 1 and 64, got \(runtime.replicas)"))
        }
        if runtime.sizeInBytes == nil {
            out.append(FlowIssue(.invalidRuntime, step: nil, "runtime.size '\(runtime.size)' is not a size (e.g. 512Mi, 30Gi)"))
        }
        if runtime.medium == .spill && (runtime.spillDirectory ?? "").isEmpty {
            out.append(FlowIssue(.invalidRuntime, step: nil, "runtime.medium 'spill' needs runtime.spill_dir"))
        }
        if let p = maxParallel, p < 1 {
            out.append(FlowIssue(.invalidParallelism, step: nil, "max_parallel must be at least 1, got \(p)"))
        }

        var seen: Set<String> = []
        var producers: [String: String] = [:]
        for step in steps {
            let name = step.name
            if !FlowSpec.isValidStepName(name) {
                out.append(
                    FlowIssue(
                        .invalidStepName, step: name,
                        name.isEmpty
                            ? "a step has no name" : "step '\(name)': names may use letters, digits, '.', '_' and '-' only"))
            }
            if !seen.insert(name).inserted {
                out.append(FlowIssue(.duplicateStep, step: name, "step '\(name)' is defined more than once"))
            }
            switch step.action {
            case nil:
                out.append(FlowIssue(.missingCommand, step: name, "step '\(name)' has nothing to run (give command, python or swift)"))
            case .command(let argv)?:
                if argv.isEmpty || argv[0].isEmpty {
                    out.append(FlowIssue(.emptyCommand, step: name, "step '\(name)' has an empty command"))
                }
            case .python(let p)?:
                if p.file.isEmpty { out.append(FlowIssue(.emptyCommand, step: name, "step '\(name)': python.file is empty")) }
                if let f = p.function, !FlowSpec.isIdentifier(f) {
                    out.append(FlowIssue(.emptyCommand, step: name, "step '\(name)': python.function '\(f)' is not a Python identifier"))
                }
            case .swift(let s)?:
                if s.executable.isEmpty {
                    out.append(FlowIssue(.emptyCommand, step: name, "step '\(name)': swift.executable is empty"))
                }
            }
            if step.retries < 0 {
                out.append(FlowIssue(.invalidRetries, step: name, "step '\(name)': retries must be ≥ 0, got \(step.retries)"))
            }
            if step.retryDelay < 0 {
                out.append(FlowIssue(.invalidRetries, step: name, "step '\(name)': retry_delay must be ≥ 0"))
            }
            if let t = step.timeout, !(t > 0) {
                out.append(FlowIssue(.invalidTimeout, step: name, "step '\(name)': timeout must be positive, got \(t)"))
            }
            if let pod = step.kubernetes {
                let taken: Set<String> = [KubeRender.Paths.codeMount, KubeRender.Paths.datasetMountPath, KubeRender.Paths.daemonSocketDirectory]
                for p in pod.problems(step: name, mountPaths: taken) { out.append(FlowIssue(.invalidKubernetes, step: name, p)) }
            }
            for o in step.outputs {
                if !FlowSpec.isValidObjectName(o) {
                    out.append(FlowIssue(.invalidObjectName, step: name, "step '\(name)': output name '\(o)' is empty or has spaces/control characters"))
                    continue
                }
                if let other = producers[o], other != name {
                    out.append(FlowIssue(.duplicateOutput, step: name, "steps '\(other)' and '\(name)' both produce '\(o)'"))
                } else if producers[o] == name {
                    out.append(FlowIssue(.duplicateOutput, step: name, "step '\(name)' lists output '\(o)' twice"))
                } else {
                    producers[o] = name
                }
            }
        }
        for step in steps {
            for i in step.inputs {
                if producers[i] == nil {
                    out.append(FlowIssue(.unknownInput, step: step.name, "step '\(step.name)': input '\(i)' is not produced by any step"))
                } else if producers[i] == step.name {
                    out.append(FlowIssue(.selfDependency, step: step.name, "step '\(step.name)' reads its own output '\(i)'"))
                }
            }
            for a in step.after {
                if a == step.name {
                    out.append(FlowIssue(.selfDependency, step: step.name, "step '\(step.name)' is listed in its own 'after'"))
                } else if !seen.contains(a) {
                    out.append(FlowIssue(.unknownAfter, step: step.name, "step '\(step.name)': after '\(a)' is not a step of this flow"))
                }
            }
        }
        if out.isEmpty, let cycle = FlowGraph(unchecked: self).findCycle() {
            let path = (cycle + [cycle[0]]).map { "'\($0)'" }.joined(separator: " -> ")
            out.append(FlowIssue(.cycle, step: cycle[0], "steps form a cycle: \(path)"))
        }
        return out
    }

    /// Throws ``FlowValidationError`` listing every problem if the flow cannot run.
    public func validate() throws(FlowValidationError) {
        let found = issues()
        if !found.isEmpty { throw FlowValidationError(issues: found) }
    }

    static func isValidStepName(_ s: String) -> Bool {
        !s.isEmpty && s.count <= 128
            && s.unicodeScalars.allSatisfy { $0.isASCII && (isAlnum($0) || $0 == "." || $0 == "_" || $0 == "-") }
            && s != "." && s != ".."
    }

    static func isValidObjectName(_ s: String) -> Bool {
        !s.isEmpty && s.unicodeScalars.allSatisfy { $0.value > 32 && $0.value != 127 }
    }

    static func isIdentifier(_ s: String) -> Bool {
        guard let f = s.unicodeScalars.first, !("0"..."9").contains(f) else { return false }
        return s.unicodeScalars.allSatisfy { $0.isASCII && (isAlnum($0) || $0 == "_") }
    }

    static func isAlnum(_ c: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c)
    }
}
