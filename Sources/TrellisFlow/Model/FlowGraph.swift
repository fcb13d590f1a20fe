/// The dependency graph of a flow: a step depends on the producer of each of its inputs and on
/// each step in its `after` list.
public struct FlowGraph: Sendable, Equatable {
    /// Step names in spec order.
    public let steps: [String]
    /// For each step, the steps it waits for.
    public let dependencies: [String: Set<String>]
    /// For each step, the steps waiting for it.
    public let dependents: [String: Set<String>]
    /// For each object name, the step producing it.
    public let producer: [String: String]
    /// Spec position of each step (for stable ordering).
    public let position: [String: Int]

    /// Builds the graph of a valid flow.
    public init(_ spec: FlowSpec) throws(FlowValidationError) {
        try spec.validate()
        self.init(unchecked: spec)
    }

    /// Builds a graph without validating (unknown names are ignored); used by validation itself.
    init(unchecked spec: FlowSpec) {
        var producer: [String: String] = [:]
        var position: [String: Int] = [:]
        for (i, s) in spec.steps.enumerated() {
            if position[s.name] == nil { position[s.name] = i }
            for o in s.outputs where producer[o] == nil { producer[o] = s.name }
        }
        var deps: [String: Set<String>] = [:]
        var dependents: [String: Set<String>] = [:]
        for s in spec.steps {
            var d = deps[s.name] ?? []
            for i in s.inputs { if let p = producer[i], p != s.name { d.insert(p) } }
            for a in s.after where a != s.name && position[a] != nil { d.insert(a) }
            deps[s.name] = d
            for p in d { dependents[p, default: []].insert(s.name) }
        }
        for s in spec.steps where dependents[s.name] == nil { dependents[s.name] = [] }
        self.steps = spec.steps.map(\.name)
        self.dependencies = deps
        self.dependents = dependents
        self.producer = producer
        self.position = position
    }

    /// Steps in an order where each comes after everything it depends on (spec order among
    /// independent steps). Only meaningful for an acyclic graph.
    public var topologicalOrder: [String] {
        var indegree = dependencies.mapValues(\.count)
        var ready = steps.filter { indegree[$0] == 0 }
        var order: [String] = []
        while !ready.isEmpty {
            ready.sort { position[$0, default: 0] < position[$1, default: 0] }
            let s = ready.removeFirst()
            order.append(s)
            for d in dependents[s, default: []] {
                indegree[d, default: 0] -= 1
                if indegree[d] == 0 { ready.append(d) }
            }
        }
        return order
    }

    /// Everything transitively downstream of `roots` (not including the roots themselves).
    public func downstream(of roots: Set<String>) -> Set<String> {
        var out: Set<String> = []
        var stack = Array(roots)
        while let s = stack.popLast() {
            for d in dependents[s, default: []] where !out.contains(d) {
                out.insert(d)
                stack.append(d)
            }
        }
        return out.subtracting(roots)
    }

    /// Everything transitively upstream of `step`.
    public func upstream(of step: String) -> Set<String> {
        var out: Set<String> = []
        var stack = [step]
        while let s = stack.popLast() {
            for d in dependencies[s, default: []] where !out.contains(d) {
                out.insert(d)
                stack.append(d)
            }
        }
        return out
    }

    /// A dependency cycle (steps in order along the cycle), or `nil` if there is none.
    public func findCycle() -> [String]? {
        enum Mark { case visiting, done }
        var mark: [String: Mark] = [:]
        var stack: [String] = []
        func visit(_ s: String) -> [String]? {
            mark[s] = .visiting
            stack.append(s)
            // Walk dependencies in spec order so the reported cycle is stable.
            let next = dependencies[s, default: []].sorted { position[$0, default: 0] < position[$1, default: 0] }
            for d in next {
                switch mark[d] {
                case .visiting?:
                    let start = stack.firstIndex(of: d)!
                    return Array(stack[start...]).reversed()
                case .done?: continue
                case nil: if let c = visit(d) { return c }
                }
            }
            stack.removeLast()
            mark[s] = .done
            return nil
        }
        for s in steps where mark[s] == nil {
            if let c = visit(s) {
                // Rotate so the cycle starts at the step that comes first in the spec.
                let first = c.indices.min { position[c[$0], default: 0] < position[c[$1], default: 0] }!
                return Array(c[first...] + c[..<first])
            }
        }
        return nil
    }
}
