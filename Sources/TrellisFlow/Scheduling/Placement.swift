/// Where each object lives: object name → replica index → bytes resident on that replica.
///
/// "Resident" means the object's blobs are in that replica's memory (a local, zero-copy get
/// there). An object can be resident on several replicas (after a move the source keeps its copy).
/// A 0 entry means the replica knows the object but holds none of its bytes (with shared
/// metadata, a remote object); it counts as neither local data nor a move source.
public typealias Residency = [String: [Int: Int]]

/// A planned copy of one input to the replica a step was placed on.
public struct PlannedMove: Codable, Sendable, Equatable {
    /// Object name (logical, as the flow spells it).
    public var name: String
    /// Replica holding it now.
    public var from: Int
    /// Replica the step runs on.
    public var to: Int
    /// Bytes resident on `from` (what the move will copy).
    public var bytes: Int

    /// Creates a planned move.
    public init(name: String, from: Int, to: Int, bytes: Int) {
        self.name = name
        self.from = from
        self.to = to
        self.bytes = bytes
    }
}

/// Why a replica was chosen.
public enum PlacementReason: String, Codable, Sendable, Equatable {
    /// The replica holds strictly the most bytes of the step's inputs.
    case dataAffinity = "data-affinity"
    /// Several replicas hold the same (largest) number of input bytes; the least busy won.
    case affinityTie = "affinity-tie"
    /// The step has no inputs (or none is resident anywhere): spread over the least busy replica.
    case spread
}

/// The decision for one step: a replica, and the inputs to move there first.
public struct Placement: Codable, Sendable, Equatable {
    /// The chosen replica.
    public var replica: Int
    /// Why.
    public var reason: PlacementReason
    /// Input bytes already resident on the chosen replica.
    public var localBytes: Int
    /// Inputs resident only elsewhere, to move before the step starts.
    public var moves: [PlannedMove]
    /// Inputs resident nowhere (the step will most likely fail to read them).
    public var missing: [String]

    /// Creates a placement.
    public init(replica: Int, reason: PlacementReason, localBytes: Int, moves: [PlannedMove], missing: [String]) {
        self.replica = replica
        self.reason = reason
        self.localBytes = localBytes
        self.moves = moves
        self.missing = missing
    }

    /// Bytes the moves will copy.
    public var movedBytes: Int { moves.reduce(0) { $0 + $1.bytes } }
}

/// Data-affinity placement, as a pure function.
///
/// Rules:
/// 1. A step runs on the replica holding the most bytes of its inputs.
/// 2. Ties (equal bytes, including "all zero") go to the replica with fewer running steps,
///    then fewer steps placed so far in this run, then the lowest index.
/// 3. A step without resident inputs is spread: fewest running, fewest placed, lowest index.
/// 4. Each input not resident on the chosen replica is moved there from the replica holding
///    most of it, so the step's own get is local (zero-copy) whatever flags it passes.
///
/// Consequence checked by the tests and the run record: a step whose inputs all live on one
/// replica always runs there (that replica holds all bytes; any other holds fewer — unless
/// every input is empty, when there is nothing to keep local).
public enum Placer {
    /// Places one step.
    ///
    /// - Parameters:
    ///   - inputs: the step's input names.
    ///   - residency: where those objects live.
    ///   - running: running steps per replica (its count is the replica count).
    ///   - placed: steps placed so far per replica in this run (for spreading); may be empty.
    public static func place(inputs: [String], residency: Residency, running: [Int], placed: [Int] = []) -> Placement {
        let n = max(running.count, 1)
        func load(_ r: Int) -> (Int, Int, Int) {
            (r < running.count ? running[r] : 0, r < placed.count ? placed[r] : 0, r)
        }
        var bytesOn = [Int](repeating: 0, count: n)
        var missing: [String] = []
        var unique: [String] = []
        for name in inputs where !unique.contains(name) { unique.append(name) }
        for name in unique {
            let where_ = residency[name] ?? [:]
            let resident = where_.filter { $0.key >= 0 && $0.key < n && $0.value > 0 }
            if resident.isEmpty {
                if where_.filter({ $0.key >= 0 && $0.key < n }).isEmpty { missing.append(name) }
                continue
            }
            for (r, b) in resident { bytesOn[r] += b }
        }
        let best = bytesOn.max() ?? 0
        let candidates = (0..<n).filter { bytesOn[$0] == best }
        let chosen = candidates.min { load($0) < load($1) }!
        let reason: PlacementReason
        if best == 0 {
            reason = .spread
        } else {
            reason = candidates.count == 1 ? .dataAffinity : .affinityTie
        }
        var moves: [PlannedMove] = []
        for name in unique {
            // Replicas holding bytes of it; a 0 entry means "known there, but not local".
            let holding = (residency[name] ?? [:]).filter { $0.key >= 0 && $0.key < n && $0.value > 0 }
            guard !holding.isEmpty, holding[chosen] == nil else { continue }
            // Source: the replica holding most of it (lowest index on ties).
            let src = holding.max { a, b in a.value < b.value || (a.value == b.value && a.key > b.key) }!
            moves.append(PlannedMove(name: name, from: src.key, to: chosen, bytes: src.value))
        }
        return Placement(replica: chosen, reason: reason, localBytes: bytesOn[chosen], moves: moves, missing: missing)
    }
}
