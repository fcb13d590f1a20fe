import Foundation
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// Runs each attempt of a step as a Kubernetes Job pinned to the node of the replica placement
/// chose (``StepLaunch/replica``'s `node`).
///
/// One attempt: create the Job with required node affinity (`matchFields metadata.name In
/// [node]`); poll its pod with a growing interval (never a busy loop); when the pod reports
/// `PodScheduled=False reason=Unschedulable` (the node has no room), delete the Job and submit
/// it again with *preferred* affinity to the same node — once — and say so in the step's log and
/// ``StepExit/message``; when the container terminates, copy the pod's log into the step's
/// stdout log, delete the Job, and map the container's end to ``ExitStatus``. Past
/// `launch.timeout`, or when the calling task is cancelled, the Job is deleted (propagation
/// `Background`: the garbage collector stops the pod with its grace period).
public struct KubernetesExecutor: StepExecutor {
    /// The API client (namespace included).
    public var client: KubeClient
    /// Builds a step's Job body for an affinity (the renderer's builder, or
    /// ``KubeStepObjects/job(for:affinity:settings:)``). The executor sets `metadata.name`.
    public var jobFactory: @Sendable (StepLaunch, NodeAffinity) -> KubeValue
    /// First and largest pause between two status reads.
    public var pollInterval: (first: Double, max: Double)
    /// How long a pod may stay Unschedulable with required affinity before the fallback
    /// (0: at the first such report; the scheduler only reports it after a failed attempt).
    public var unschedulableGrace: Double
    /// Resubmit with preferred affinity when Unschedulable (else the attempt fails).
    public var fallbackToPreferred: Bool
    /// Which invocation of the run this is (0 for `flow run`, n for its n-th resume): part of
    /// the Job names, since attempt numbers start at 1 again on resume.
    public var invocation: Int = 0

    public init(
        client: KubeClient, jobFactory: @escaping @Sendable (StepLaunch, NodeAffinity) -> KubeValue,
        pollInterval: (first: Double, max: Double) = (0.25, 2), unschedulableGrace: Double = 0,
        fallbackToPreferred: Bool = true
    ) {
        self.client = client
        self.jobFactory = jobFactory
        self.pollInterval = pollInterval
        self.unschedulableGrace = unschedulableGrace
        self.fallbackToPreferred = fallbackToPreferred
    }

    /// The Job of an attempt with its name set.
    public func jobBody(_ launch: StepLaunch, affinity: NodeAffinity, fallback: Bool) -> KubeValue {
        var job = jobFactory(launch, affinity)
        job.set(
            path: ["metadata", "name"],
            .string(
                KubeNaming.jobName(
                    runID: launch.runID, step: launch.step.name, attempt: launch.attempt, fallback: fallback,
                    invocation: invocation)))
        return job
    }

    public func run(_ launch: StepLaunch) async throws -> StepExit {
        let start = ContinuousClock.now
        func elapsed() -> Double { (ContinuousClock.now - start).seconds }
        let note: (String) -> Void = { appendLine("trellis: \($0)", to: launch.stderrPath) }
        var affinity: NodeAffinity = launch.replica.node.map { .required(node: $0) } ?? .none
        var fellBack = false
        var job = try await submit(launch, affinity: affinity, fallback: false)
        note("submitted Job \(job) (\(affinity)) in namespace \(client.namespace)")
        var fallbackMessage: String?
        var interval = pollInterval.first
        var unschedulableSince: ContinuousClock.Instant?
        var lastPod: String?
        while true {
            if Task.isCancelled {
                await stop(job, pod: lastPod, launch: launch)
                note("cancelled; Job \(job) deleted")
                return StepExit(status: ExitStatus(code: nil, signal: SIGTERM), cancelled: true, seconds: elapsed())
            }
            if let t = launch.timeout, elapsed() >= t {
                await stop(job, pod: lastPod, launch: launch)
                note("timed out after \(t)s; Job \(job) deleted")
                return StepExit(
                    status: ExitStatus(code: nil, signal: SIGKILL), timedOut: true, seconds: elapsed(), message: fallbackMessage)
            }
            var pause = interval
            if let t = launch.timeout { pause = min(pause, max(0.05, t - elapsed())) }
            try? await Task.sleep(for: .seconds(pause))
            interval = min(pollInterval.max, interval * 2)
            if Task.isCancelled { continue }
            let pods: [KubeValue]
            do {
                pods = try await client.pods(ofJob: job)
            } catch {
                note("cannot read the pods of Job \(job): \(error) (retrying)")
                continue
            }
            guard let pod = pods.first else {
                // The pod is gone (evicted, node lost, deleted by someone else): the Job says why.
                if lastPod != nil, let gone = await jobEnded(job) {
                    note(gone)
                    return StepExit(status: ExitStatus(code: nil, signal: nil), seconds: elapsed(), message: gone)
                }
                continue
            }
            let podName = pod[path: "metadata", "name"]?.string
            lastPod = podName ?? lastPod
            let condition = PodCondition.of(pod: pod, container: KubeStepObjects.container)
            switch condition {
            case .pending, .running:
                unschedulableSince = nil
            case .unschedulable(let message):
                let since = unschedulableSince ?? ContinuousClock.now
                unschedulableSince = since
                guard (ContinuousClock.now - since).seconds >= unschedulableGrace else { continue }
                guard fallbackToPreferred, !fellBack, let next = affinity.fallback else {
                    if fellBack || affinity.fallback == nil { continue }  // preferred/none: the scheduler keeps trying
                    await stop(job, pod: podName, launch: launch)
                    return StepExit(
                        status: ExitStatus(code: nil, signal: nil), seconds: elapsed(),
                        message: "unschedulable on node \(affinity.node ?? "?"): \(message)")
                }
                let detail = await client.schedulingMessage(pod: podName ?? "") ?? message
                try? await client.deleteJob(job)
                fallbackMessage =
                    "required affinity to node \(affinity.node ?? "?") was unschedulable (\(detail)); resubmitted with preferred affinity"
                note(fallbackMessage!)
                affinity = next
                fellBack = true
                unschedulableSince = nil
                interval = pollInterval.first
                job = try await submit(launch, affinity: affinity, fallback: true)
                note("submitted Job \(job) (\(affinity))")
            case .succeeded, .failed:
                let node = pod[path: "spec", "nodeName"]?.string
                if let podName { await copyLog(pod: podName, launch: launch) }
                try? await client.deleteJob(job)
                var message = fallbackMessage.map { $0 + (node.map { "; ran on node \($0)" } ?? "") }
                let status: ExitStatus
                if case .failed(let s, let reason) = condition {
                    status = s
                    if let reason, reason != "Error" {
                        message = [message, "pod \(podName ?? "?"): \(reason)"].compactMap { $0 }.joined(separator: "; ")
                    }
                } else {
                    status = ExitStatus(code: 0, signal: nil)
                }
                note("pod \(podName ?? "?") on node \(node ?? "?") ended: \(status)")
                return StepExit(status: status, seconds: elapsed(), message: message)
            }
        }
    }

    /// Why a Job whose pod disappeared will not finish, or nil while it still may.
    private func jobEnded(_ job: String) async -> String? {
        do {
            let body = try await client.call(
                KubeRequests.get(apiVersion: "batch/v1", kind: "Job", name: job, namespace: client.namespace))
            for c in body[path: "status", "conditions"]?.array ?? []
            where c["type"]?.string == "Failed" && c["status"]?.string == "True" {
                return "Job \(job) failed: \(c["reason"]?.string ?? "?") \(c["message"]?.string ?? "")"
            }
            return nil
        } catch let e as KubeAPIError where e.status == 404 {
            return "Job \(job) was deleted while its step ran"
        } catch {
            return nil
        }
    }

    /// Creates the Job (replacing a leftover of the same name, e.g. from a killed launcher).
    private func submit(_ launch: StepLaunch, affinity: NodeAffinity, fallback: Bool) async throws -> String {
        let body = jobBody(launch, affinity: affinity, fallback: fallback)
        let name = body[path: "metadata", "name"]?.string ?? "?"
        do {
            try await client.create(body)
        } catch let e as KubeAPIError where e.status == 409 {
            try await client.deleteJob(name)
            try await Task.sleep(for: .seconds(1))
            try await client.create(body)
        } catch let e as KubeAPIError {
            throw KubeAPIError(status: e.status, reason: e.reason, message: "cannot create Job \(name): \(e.message)")
        }
        return name
    }

    /// Keeps what the pod printed so far, then deletes the Job.
    /// Runs in a task of its own: the caller's may be cancelled, and HTTP requests made from a
    /// cancelled task fail at once.
    private func stop(_ job: String, pod: String?, launch: StepLaunch) async {
        await Task {
            if let pod { await copyLog(pod: pod, launch: launch) }
            do { try await client.deleteJob(job) } catch {
                appendLine("trellis: cannot delete Job \(job): \(error)", to: launch.stderrPath)
            }
        }.value
    }

    private func copyLog(pod: String, launch: StepLaunch) async {
        do {
            let text = try await client.log(pod: pod, container: KubeStepObjects.container)
            guard let file = try? OwnedFD.open(launch.stdoutPath, flags: O_WRONLY | O_CREAT | O_APPEND) else { return }
            _ = Array(text.utf8).withUnsafeBytes { try? file.descriptor.writeFile($0) }
        } catch {
            appendLine("trellis: cannot read the log of pod \(pod): \(error)", to: launch.stderrPath)
        }
    }
}
