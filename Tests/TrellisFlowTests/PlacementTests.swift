import Foundation
import Testing
@testable import TrellisFlow

@Suite struct PlacementTests {
    @Test func mostInputBytesWins() {
        let p = Placer.place(
            inputs: ["a", "b"], residency: ["a": [0: 100], "b": [1: 300]], running: [0, 0])
        #expect(p.replica == 1)
        #expect(p.reason == .dataAffinity)
        #expect(p.localBytes == 300)
        #expect(p.moves == [PlannedMove(name: "a", from: 0, to: 1, bytes: 100)])
        #expect(p.movedBytes == 100)
        #expect(p.missing.isEmpty)
    }

    @Test func affinityBeatsBusyness() {
        let p = Placer.place(inputs: ["a"], residency: ["a": [0: 10]], running: [5, 0])
        #expect(p.replica == 0)
        #expect(p.moves.isEmpty)
    }

    @Test func tiesGoToFewerRunningSteps() {
        let p = Placer.place(inputs: ["a", "b"], residency: ["a": [0: 50], "b": [1: 50]], running: [2, 1])
        #expect(p.replica == 1)
        #expect(p.reason == .affinityTie)
        #expect(p.moves == [PlannedMove(name: "a", from: 0, to: 1, bytes: 50)])
    }

    @Test func objectOnBothReplicasNeedsNoMove() {
        let p = Placer.place(inputs: ["a"], residency: ["a": [0: 50, 1: 50]], running: [1, 0])
        #expect(p.replica == 1)
        #expect(p.moves.isEmpty)
        #expect(p.localBytes == 50)
    }

    @Test func stepsWithoutInputsSpread() {
        var running = [0, 0, 0]
        var placed = [0, 0, 0]
        var chosen: [Int] = []
        for _ in 0..<3 {
            let p = Placer.place(inputs: [], residency: [:], running: running, placed: placed)
            #expect(p.reason == .spread)
            chosen.append(p.replica)
            running[p.replica] += 1
            placed[p.replica] += 1
        }
        #expect(chosen == [0, 1, 2])
        // With nothing running, the replica that got fewer steps so far is next.
        let next = Placer.place(inputs: [], residency: [:], running: [0, 0, 0], placed: [2, 1, 2])
        #expect(next.replica == 1)
    }

    @Test func missingInputsAreReported() {
        let p = Placer.place(inputs: ["gone", "here"], residency: ["here": [1: 5]], running: [0, 0])
        #expect(p.replica == 1)
        #expect(p.missing == ["gone"])
    }

    @Test func movesComeFromTheLargestCopy() {
        let p = Placer.place(
            inputs: ["big", "x"], residency: ["big": [2: 1000], "x": [0: 10, 1: 20]], running: [0, 0, 0])
        #expect(p.replica == 2)
        #expect(p.moves == [PlannedMove(name: "x", from: 1, to: 2, bytes: 20)])
    }

    /// The target from the issue: a step whose inputs all live on one replica runs there,
    /// whatever the other replicas' load.
    @Test func inputsOnOneReplicaAlwaysRunThere() {
        var rng = SplitMix(seed: 7)
        for _ in 0..<500 {
            let n = Int(rng.next() % 4) + 1
            let home = Int(rng.next() % UInt64(n))
            let count = Int(rng.next() % 4) + 1
            var residency: Residency = [:]
            var inputs: [String] = []
            for i in 0..<count {
                inputs.append("o\(i)")
                residency["o\(i)"] = [home: Int(rng.next() % 1000) + 1]
            }
            let running = (0..<n).map { _ in Int(rng.next() % 5) }
            let p = Placer.place(inputs: inputs, residency: residency, running: running)
            #expect(p.replica == home)
            #expect(p.moves.isEmpty)
        }
    }
}

struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct AffinityCheckTests {
    func record(_ steps: [StepRecord]) -> RunRecord {
        RunRecord(
            runID: "r", spec: FlowSpec(steps: []), state: .succeeded, createdAt: .distantPast, startedAt: .distantPast,
            replicas: [], steps: steps)
    }

    func step(_ name: String, ranOn r: Int, _ inputs: [(Int, [Int])]) -> StepRecord {
        var s = StepRecord(name: name, stdoutPath: "", stderrPath: "")
        s.replica = r
        s.inputs = inputs.enumerated().map { i, x in
            InputRecord(name: "i\(i)", bytes: x.0, residentOn: x.1.first, residentReplicas: x.1, localBytes: 0, movedBytes: 0, moveSeconds: 0)
        }
        return s
    }

    @Test func violationsAreStepsAwayFromAReplicaHoldingAllTheirInputs() {
        let r = record([
            step("home", ranOn: 1, [(10, [1]), (5, [1])]),
            step("away", ranOn: 0, [(10, [1]), (5, [1])]),
            step("split", ranOn: 0, [(10, [0]), (5, [1])]),  // no replica had both: fine
            step("copies", ranOn: 1, [(10, [0, 1])]),  // resident on both
            step("empty", ranOn: 0, [(0, [1])]),  // nothing to keep local
            step("none", ranOn: 0, []),
        ])
        #expect(r.affinityViolations == ["away"])
    }
}

@Suite struct RemoteEntryTests {
    /// With shared metadata a replica "knows" a remote object (0 local bytes): that is not data
    /// to stay next to, and the object must still be moved there.
    @Test func zeroByteEntriesAreNotLocal() {
        let p = Placer.place(inputs: ["a", "b"], residency: ["a": [0: 0, 1: 800], "b": [0: 900, 1: 0]], running: [0, 0])
        #expect(p.replica == 0)
        #expect(p.localBytes == 900)
        #expect(p.moves == [PlannedMove(name: "a", from: 1, to: 0, bytes: 800)])
    }
}
