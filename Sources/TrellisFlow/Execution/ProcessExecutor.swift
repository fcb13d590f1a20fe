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

    /// Steps of each replica run inside its node's namespace.
    public static func networkNamespaces(_ network: NetnsNetwork, ip: String) -> ProcessExecutor {
        ProcessExecutor(prefixes: Dictionary(uniqueKeysWithValues: network.nodes.indices.map { ($0, network.exec(node: $0, ip: ip)) }))
    }

    public func run(_ launch: StepLaunch) async throws -> StepExit {
        let argv = (prefixes[launch.replica.index] ?? []) + launch.command
        let child = try ChildProcess.spawn(
            executable: argv[0], arguments: Array(argv.dropFirst()), environment: launch.environment,
            workingDirectory: launch.workingDirectory, stdout: .file(launch.stdoutPath), stderr: .file(launch.stderrPath))
        let exit = await supervise(child, timeout: launch.timeout, grace: launch.killGrace)
        var message: String?
        if exit.timedOut {
            message = "timed out after \(launch.timeout ?? 0)s on \(launch.replica.node ?? "replica \(launch.replica.index)"); process group killed"
        }
        return StepExit(status: exit.status, timedOut: exit.timedOut, cancelled: exit.cancelled, seconds: exit.seconds, message: message)
    }
}
