import Testing
@testable import TrellisFlow

@Suite struct SchedulerTests {
    /// gen → prep → (train, stats) → test; plus an unrelated step.
    let spec = FlowSpec(steps: [
        .command("gen", ["true"], outputs: ["df"]),
        .command("prep", ["true"], inputs: ["df"], outputs: ["x"], retries: 1, retryDelay: 2),
        .command("train", ["true"], inputs: ["x"], outputs: ["model"]),
        .command("stats", ["true"], inputs: ["x"]),
        .command("test", ["true"], inputs: ["model", "x"]),
        .command("other", ["true"]),
    ])

    @Test func runsInDependencyOrderAndPlacesByData() throws {
        var s = try FlowScheduler(spec: spec, replicaCount: 2, maxParallel: 4)
        #expect(s.readySteps() == ["gen", "other"])
        let gen = s.start("gen", residency: [:])
        let other = s.start("other", residency: [:])
        #expect(gen.placement.replica == 0)
        #expect(other.placement.replica == 1)  // spread
        #expect(s.readySteps().isEmpty)
        s.succeeded("gen")
        s.succeeded("other")
        #expect(s.readySteps() == ["prep"])
        let prep = s.start("prep", residency: ["df": [0: 1000]])
        #expect(prep.placement.replica == 0)
        s.succeeded("prep")
        #expect(s.readySteps() == ["train", "stats"])
        let train = s.start("train", residency: ["x": [0: 800]])
        let stats = s.start("stats", residency: ["x": [0: 800]])
        #expect(train.placement.replica == 0)
        #expect(stats.placement.replica == 0)  // affinity beats load
        s.succeeded("train")
        s.succeeded("stats")
        let test = s.start("test", residency: ["x": [0: 800], "model": [0: 10]])
        #expect(test.placement.replica == 0)
        s.succeeded("test")
        #expect(s.isFinished)
        #expect(s.outcome == .succeeded)
    }

    @Test func parallelLimit() throws {
        let wide = FlowSpec(steps: (0..<5).map { .command("s\($0)", ["true"]) })
        var s = try FlowScheduler(spec: wide, replicaCount: 2, maxParallel: 2)
        #expect(s.readySteps() == ["s0", "s1"])
        _ = s.start("s0", residency: [:])
        #expect(s.readySteps() == ["s1"])
        _ = s.start("s1", residency: [:])
        #expect(s.readySteps().isEmpty)
        s.succeeded("s0")
        #expect(s.readySteps() == ["s2"])
    }

    @Test func retriesWithBackoffThenFailurePropagates() throws {
        var s = try FlowScheduler(spec: spec, replicaCount: 1, maxParallel: 4)
        _ = s.start("gen", residency: [:])
        _ = s.start("other", residency: [:])
        s.succeeded("gen")
        let first = s.start("prep", residency: [:])
        #expect(first.attempt == 1)
        #expect(s.attemptFailed("prep") == .retry(after: 2))
        #expect(s.states["prep"] == .pending)
        #expect(s.readySteps().isEmpty)  // waiting for the delay
        #expect(!s.isFinished)
        s.retryDue("prep")
        #expect(s.readySteps() == ["prep"])
        let second = s.start("prep", residency: [:])
        #expect(second.attempt == 2)
        #expect(s.attemptFailed("prep") == .failed(upstreamFailed: ["train", "stats", "test"]))
        #expect(s.states["prep"] == .failed)
        #expect(s.states["test"] == .upstreamFailed)
        // The unrelated step is still running and may finish.
        #expect(!s.isFinished)
        s.succeeded("other")
        #expect(s.isFinished)
        #expect(s.outcome == .failed)
        #expect(s.states["other"] == .succeeded)
    }

    @Test func backoffDoublesAndCaps() {
        #expect(FlowScheduler.backoff(base: 1, retry: 1) == 1)
        #expect(FlowScheduler.backoff(base: 1, retry: 3) == 4)
        #expect(FlowScheduler.backoff(base: 10, retry: 10) == 60)
    }

    @Test func nonRetryableFailsAtOnce() throws {
        var s = try FlowScheduler(spec: spec, replicaCount: 1, maxParallel: 4)
        _ = s.start("gen", residency: [:])
        s.succeeded("gen")
        _ = s.start("prep", residency: [:])
        #expect(s.attemptFailed("prep", retryable: false) == .failed(upstreamFailed: ["train", "stats", "test"]))
    }

    @Test func cancelStopsEverything() throws {
        var s = try FlowScheduler(spec: spec, replicaCount: 2, maxParallel: 4)
        _ = s.start("gen", residency: [:])
        let running = s.cancel()
        #expect(running == ["gen"])
        #expect(s.states["other"] == .cancelled)
        #expect(s.states["prep"] == .cancelled)
        #expect(s.readySteps().isEmpty)
        #expect(!s.isFinished)
        s.stopped("gen")
        #expect(s.isFinished)
        #expect(s.outcome == .cancelled)
    }

    @Test func failureWhileCancellingIsNotRetried() throws {
        var s = try FlowScheduler(spec: spec, replicaCount: 1, maxParallel: 4)
        _ = s.start("gen", residency: [:])
        s.succeeded("gen")
        _ = s.start("prep", residency: [:])
        _ = s.cancel()
        #expect(s.attemptFailed("prep") == .failed(upstreamFailed: []))
    }

    @Test func resumeStartsFromSucceededSteps() throws {
        var s = try FlowScheduler(
            spec: spec, replicaCount: 1, maxParallel: 4,
            initial: ["gen": .succeeded, "prep": .succeeded, "train": .failed, "stats": .succeeded])
        #expect(s.states["train"] == .pending)
        #expect(s.readySteps() == ["train", "other"])
        _ = s.start("train", residency: [:])
        s.succeeded("train")
        #expect(s.readySteps() == ["test", "other"])
    }

    @Test func resumePlanRerunsFailedDownstreamAndMissingProducers() throws {
        let previous: [String: StepState] = [
            "gen": .succeeded, "prep": .succeeded, "train": .failed, "stats": .succeeded,
            "test": .upstreamFailed, "other": .succeeded,
        ]
        // Everything still resident: only train and test.
        var plan = try FlowScheduler.resumePlan(spec: spec, previous: previous, resident: ["df", "x", "model"])
        #expect(plan == ["train", "test"])
        // x was evicted: prep must run again, which needs df (resident).
        plan = try FlowScheduler.resumePlan(spec: spec, previous: previous, resident: ["df"])
        #expect(plan == ["train", "test", "prep"])
        // Nothing resident: the chain back to gen.
        plan = try FlowScheduler.resumePlan(spec: spec, previous: previous, resident: [])
        #expect(plan == ["train", "test", "prep", "gen"])
    }
}
