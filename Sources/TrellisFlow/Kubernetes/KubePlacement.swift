import Foundation

/// Where a step's pod may go: the node placement chose, as a hard or a soft rule.
public enum NodeAffinity: Sendable, Equatable, CustomStringConvertible {
    /// `requiredDuringScheduling…`: only this node (`matchFields metadata.name In [node]`).
    case required(node: String)
    /// `preferredDuringScheduling…` weight 100: this node if it has room, else any.
    case preferred(node: String)
    /// No node rule (a replica without a known node).
    case none

    /// The node it names.
    public var node: String? {
        switch self {
        case .required(let n), .preferred(let n): return n
        case .none: return nil
        }
    }

    /// What to resubmit with when the pod stays Unschedulable: required → preferred.
    public var fallback: NodeAffinity? {
        if case .required(let n) = self { return .preferred(node: n) }
        return nil
    }

    /// The pod's `affinity` (nil for ``none``). `matchFields` on `metadata.name` matches the
    /// node object's name exactly (the `kubernetes.io/hostname` label usually equals it, but
    /// is not guaranteed to); the API server allows exactly one value there.
    public var podAffinity: KubeValue? {
        func term(_ node: String) -> KubeValue {
            ["matchFields": [["key": "metadata.name", "operator": "In", "values": [.string(node)]]]]
        }
        switch self {
        case .required(let n):
            return ["nodeAffinity": ["requiredDuringSchedulingIgnoredDuringExecution": ["nodeSelectorTerms": [term(n)]]]]
        case .preferred(let n):
            return ["nodeAffinity": ["preferredDuringSchedulingIgnoredDuringExecution": [["weight": 100, "preference": term(n)]]]]
        case .none:
            return nil
        }
    }

    public var description: String {
        switch self {
        case .required(let n): return "required node \(n)"
        case .preferred(let n): return "preferred node \(n)"
        case .none: return "any node"
        }
    }
}

/// Names and labels of the launcher's objects.
public enum KubeNaming {
    /// Label on everything the launcher creates.
    public static let managedByLabel = "app.kubernetes.io/managed-by"
    /// Label carrying the run id (as a label value).
    public static let runLabel = "trellis.io/run"
    /// Label carrying the step name (as a label value).
    public static let stepLabel = "trellis.io/step"

    /// A stable 8-hex-digit FNV-1a hash (the same on every machine and run).
    public static func hash(_ parts: String...) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for part in parts {
            for b in part.utf8 {
                h ^= UInt64(b)
                h = h &* 0x100_0000_01b3
            }
            h ^= 0xff
            h = h &* 0x100_0000_01b3
        }
        let s = String(h & 0xffff_ffff, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }

    /// `s` as a DNS-1123 label fragment: lower case, `[a-z0-9-]`, no leading/trailing `-`,
    /// at most `limit` characters (may be empty).
    public static func dnsFragment(_ s: String, limit: Int) -> String {
        var out = ""
        var lastDash = true
        for c in s.lowercased().unicodeScalars {
            if ("a"..."z").contains(c) || ("0"..."9").contains(c) {
                out.unicodeScalars.append(c)
                lastDash = false
            } else if !lastDash {
                out += "-"
                lastDash = true
            }
        }
        out = String(out.prefix(limit))
        while out.hasSuffix("-") { out.removeLast() }
        return out
    }

    /// The Job of one attempt: `<run>-<step>-<hash>-<attempt>[p]`, a DNS-1123 label of at most
    /// 63 characters (so its pods' `job-name` label fits too). The hash of the full run id and
    /// step name keeps names distinct when the readable parts are cut; `p` marks the
    /// resubmission with preferred affinity; `invocation` (a resume's number) keeps a resume's
    /// Jobs apart from the first run's.
    public static func jobName(runID: String, step: String, attempt: Int, fallback: Bool = false, invocation: Int = 0) -> String {
        let h = invocation == 0 ? hash(runID, step) : hash(runID, step, String(invocation))
        let tail = "-\(h)-\(attempt)\(fallback ? "p" : "")"
        let room = 63 - tail.count
        let run = dnsFragment(runID, limit: max(1, room * 2 / 3))
        let stepPart = dnsFragment(step, limit: max(0, room - run.count - 1))
        var head = [run, stepPart].filter { !$0.isEmpty }.joined(separator: "-")
        if head.isEmpty { head = "t" }
        if let f = head.unicodeScalars.first, !("a"..."z").contains(f) { head = "t" + head }
        return String(head.prefix(room)) + tail
    }

    /// A per-run object name with a suffix (`-code`, `-rm-<node>`), ≤ 63 characters.
    public static func runObjectName(runID: String, suffix: String) -> String {
        let tail = "-\(hash(runID))-\(suffix)"
        var head = dnsFragment(runID, limit: max(1, 63 - tail.count))
        if head.isEmpty || !("a"..."z").contains(head.unicodeScalars.first!) { head = "t" + head }
        return String(head.prefix(63 - tail.count)) + tail
    }

    /// `s` as a label value (≤ 63, `[A-Za-z0-9._-]`, alphanumeric at both ends).
    public static func labelValue(_ s: String) -> String {
        var out = String(s.unicodeScalars.map { c -> Character in
            (("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c) || c == "." || c == "_" || c == "-")
                ? Character(c) : "_"
        }.prefix(63))
        while let f = out.unicodeScalars.first, !(CharacterSet.alphanumerics.contains(f) && f.isASCII) { out.removeFirst() }
        while let l = out.unicodeScalars.last, !(CharacterSet.alphanumerics.contains(l) && l.isASCII) { out.removeLast() }
        return out
    }

    /// The label selector of a run's objects.
    public static func runSelector(_ runID: String) -> String { "\(runLabel)=\(labelValue(runID))" }
}

/// What a step pod's status says, for the executor's loop.
public enum PodCondition: Sendable, Equatable {
    /// Not yet scheduled, or scheduled and starting (pulling, creating).
    case pending
    /// The scheduler found no node (`PodScheduled=False`, reason `Unschedulable`).
    case unschedulable(message: String)
    /// Its container runs.
    case running
    /// The container exited 0.
    case succeeded
    /// The container ended otherwise (exit code, or a signal), or can never start
    /// (`reason`: `OOMKilled`, `ImagePullBackOff`, …).
    case failed(ExitStatus, reason: String?)

    /// Reasons of a waiting container that will not go away by waiting.
    static let hopelessWaiting: Set<String> = [
        "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "ErrImageNeverPull",
    ]

    /// Classifies a pod object (`status.phase`, `conditions`, the step container's state).
    public static func of(pod: KubeValue, container: String = "step") -> PodCondition {
        let status = pod["status"] ?? .object([])
        let statuses = status["containerStatuses"]?.array ?? []
        let cs = statuses.first { $0["name"]?.string == container } ?? statuses.first
        if let t = cs?[path: "state", "terminated"] {
            return terminated(t)
        }
        switch status["phase"]?.string {
        case "Succeeded": return .succeeded
        case "Failed":
            return .failed(ExitStatus(code: nil, signal: nil), reason: status["reason"]?.string ?? status["message"]?.string)
        case "Running": return .running
        default: break
        }
        for c in status["conditions"]?.array ?? [] where c["type"]?.string == "PodScheduled" {
            if c["status"]?.string == "False", c["reason"]?.string == "Unschedulable" {
                return .unschedulable(message: c["message"]?.string ?? "no node fits")
            }
        }
        if let w = cs?[path: "state", "waiting"], let reason = w["reason"]?.string, hopelessWaiting.contains(reason) {
            return .failed(ExitStatus(code: nil, signal: nil), reason: reason + (w["message"]?.string.map { ": \($0)" } ?? ""))
        }
        return .pending
    }

    /// A terminated container's end: exit 0 succeeds; `OOMKilled` is SIGKILL; a code of
    /// 128+n (what runtimes report for a process killed by signal n) is signal n.
    static func terminated(_ t: KubeValue) -> PodCondition {
        let code = t["exitCode"]?.int ?? -1
        let reason = t["reason"]?.string
        if code == 0 { return .succeeded }
        if reason == "OOMKilled" { return .failed(ExitStatus(code: nil, signal: 9), reason: "OOMKilled") }
        if let s = t["signal"]?.int, s > 0 { return .failed(ExitStatus(code: nil, signal: Int32(s)), reason: reason) }
        if code > 128 && code < 128 + 65 { return .failed(ExitStatus(code: nil, signal: Int32(code - 128)), reason: reason) }
        return .failed(ExitStatus(code: Int32(truncatingIfNeeded: code), signal: nil), reason: reason)
    }
}
