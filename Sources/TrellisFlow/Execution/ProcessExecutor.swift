import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Runs each attempt as a child process of the runner (its own process group, timeout and
/// cancellation as in ``supervise(_:timeout:grace:)``), optionally through a prefix that puts
/// it somewhere else on this machine: `ip netns exec <namespace>` makes the child run inside
/// its replica's network-namespace node, as a kubelet would run it on the pod's node.
///
/// The conformer for network-namespace nodes; the runner runs plain local steps itself (with
/// the warm zygote), and ``KubernetesExecutor`` runs them as Jobs.
public struct ProcessExecutor: StepExecutor {
    /// The argv put before a step's command on each replica (by index).
    public var prefixes: [Int: [String]]

    public init(prefixes: [Int: [String]]) {
        self.prefixes = prefixes
    }

    /// Steps of each replica run inside the namespace of its node (matched by node name).
    public static func networkNamespaces(_ network: NetnsNetwork, replicas: [Replica], ip: String) -> ProcessExecutor {
        var prefixes: [Int: [String]] = [:]
        for r in replicas {
            if let k = network.nodes.firstIndex(where: { $0.name == r.node }) { prefixes[r.index] = network.exec(node: k, ip: ip) }
        }
        return ProcessExecutor(prefixes: prefixes)
    }

    public func run(_ launch: StepLaunch) async throws -> StepExit {
        let argv = (prefixes[launch.replica.index] ?? []) + launch.command
        let child = try ChildProcess.spawn(
            executable: argv[0], arguments: Array(argv.dropFirst()), environment: launch.environment,
            workingDirectory: launch.workingDirectory, stdout: .file(launch.stdoutPath), stderr: .file(launch.stderrPath))
        let exit = await supervise(child, timeout: launch.timeout, grace: launch.killGrace)
        var message: String?
        let place = launch.replica.node.map { "node \($0) (replica \(launch.replica.index))" } ?? "replica \(launch.replica.index)"
        if exit.timedOut {
            message = "timed out after \(launch.timeout ?? 0)s on \(place); process group killed"
        } else if exit.status.code != 0, !exit.cancelled, !socketAccepts(launch.replica.socket) {
            message = "the daemon of \(place) is gone (its socket \(launch.replica.socket) does not answer)"
        }
        return StepExit(status: exit.status, timedOut: exit.timedOut, cancelled: exit.cancelled, seconds: exit.seconds, message: message)
    }
}
