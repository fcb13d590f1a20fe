/// A layered drawing of a DAG, left to right (pure; the run report draws it as SVG).
///
/// - Layers: longest path from the sources (a node sits one layer right of its furthest
///   predecessor), so every edge points right.
/// - Edges spanning several layers get a dummy point in each layer they cross, which takes part
///   in the ordering like a node, so long edges are routed between nodes, not through them.
/// - Order within a layer: start from the given node order, then barycenter sweeps (down and
///   up, each node moved to the mean position of its neighbours in the layer before/after); the
///   ordering with the fewest crossings seen is kept.
public struct DAGLayout: Sendable, Equatable {
    /// A placed node: its box's centre.
    public struct Node: Sendable, Equatable {
        /// The node's id.
        public var id: String
        /// Its layer (column), 0 for sources.
        public var layer: Int
        /// Its position in the layer, from the top.
        public var order: Int
        /// Centre x.
        public var x: Double
        /// Centre y.
        public var y: Double
    }

    /// A routed edge: from the right side of `from` through the dummy points to the left side of `to`.
    public struct Edge: Sendable, Equatable {
        /// Source node id.
        public var from: String
        /// Target node id.
        public var to: String
        /// The points to pass through, first on the source's box and last on the target's.
        public var points: [Point]
    }

    /// A point.
    public struct Point: Sendable, Equatable {
        /// x.
        public var x: Double
        /// y.
        public var y: Double
        /// Creates a point.
        public init(x: Double, y: Double) {
            self.x = x
            self.y = y
        }
    }

    /// Spacing of the drawing.
    public struct Metrics: Sendable, Equatable {
        /// Node box width.
        public var nodeWidth: Double = 180
        /// Node box height.
        public var nodeHeight: Double = 56
        /// Horizontal distance between layers' left edges.
        public var layerGap: Double = 300
        /// Vertical distance between rows' tops.
        public var rowGap: Double = 96
        /// Margin around the drawing.
        public var margin: Double = 24
        /// Default metrics.
        public init() {}
    }

    /// Placed nodes, in the input order.
    public var nodes: [Node]
    /// Routed edges, in the input order (duplicates and self-loops dropped).
    public var edges: [Edge]
    /// Width of the drawing.
    public var width: Double
    /// Height of the drawing.
    public var height: Double
    /// Edge crossings of the chosen ordering (counted between adjacent layers, dummies included).
    public var crossings: Int
    /// The metrics used.
    public var metrics: Metrics

    /// The node `id`.
    public func node(_ id: String) -> Node? { nodes.first { $0.id == id } }

    /// Lays out `nodes` (ids, in a preferred order) and `edges` (from → to). Edges naming
    /// unknown nodes are ignored; a cycle (not expected) is broken by the input order.
    public init(nodes ids: [String], edges rawEdges: [(from: String, to: String)], metrics: Metrics = Metrics()) {
        self.metrics = metrics
        var index: [String: Int] = [:]
        for (i, id) in ids.enumerated() where index[id] == nil { index[id] = i }
        let n = ids.count
        // Unique edges between known, distinct nodes.
        var seen = Set<[Int]>()
        var edgeList: [(Int, Int)] = []
        for e in rawEdges {
            guard let a = index[e.from], let b = index[e.to], a != b, seen.insert([a, b]).inserted else { continue }
            edgeList.append((a, b))
        }
        let layer = Self.longestPathLayers(count: n, edges: edgeList)
        // Graph with dummies: vertices 0..<n are nodes, the rest dummies.
        var vLayer = layer
        var chains: [[Int]] = []  // per edge: the vertex chain from source to target
        var succ: [[Int]] = Array(repeating: [], count: n)
        var pred: [[Int]] = Array(repeating: [], count: n)
        for (a, b) in edgeList {
            var chain = [a]
            var prev = a
            if layer[b] > layer[a] + 1 {
                for l in (layer[a] + 1)..<layer[b] {
                    let d = vLayer.count
                    vLayer.append(l)
                    succ.append([])
                    pred.append([])
                    succ[prev].append(d)
                    pred[d].append(prev)
                    chain.append(d)
                    prev = d
                }
            }
            succ[prev].append(b)
            pred[b].append(prev)
            chain.append(b)
            chains.append(chain)
        }
        let layerCount = (vLayer.max() ?? -1) + 1
        var rows: [[Int]] = Array(repeating: [], count: layerCount)
        for v in vLayer.indices { rows[vLayer[v]].append(v) }  // nodes by input order, dummies by edge order
        var best = rows
        var bestCrossings = Self.crossings(rows, succ: succ)
        if bestCrossings > 0 {
            for sweep in 0..<8 {
                let down = sweep % 2 == 0
                let range: [Int] = down ? Array(stride(from: 1, to: layerCount, by: 1)) : Array(stride(from: layerCount - 2, through: 0, by: -1))
                for l in range {
                    let fixed = rows[down ? l - 1 : l + 1]
                    var pos: [Int: Int] = [:]
                    for (i, v) in fixed.enumerated() { pos[v] = i }
                    let current = rows[l]
                    let keys: [(Double, Int, Int)] = current.enumerated().map { (i, v) in
                        let nb = (down ? pred[v] : succ[v]).compactMap { pos[$0] }
                        let bary = nb.isEmpty ? Double(i) : Double(nb.reduce(0, +)) / Double(nb.count)
                        return (bary, i, v)
                    }
                    rows[l] = keys.sorted { ($0.0, $0.1) < ($1.0, $1.1) }.map(\.2)
                }
                let c = Self.crossings(rows, succ: succ)
                if c < bestCrossings {
                    bestCrossings = c
                    best = rows
                }
                if bestCrossings == 0 { break }
            }
        }
        rows = best
        // Coordinates: layers left to right, each layer centred vertically.
        let tallest = rows.map(\.count).max() ?? 0
        var vx = Array(repeating: 0.0, count: vLayer.count)
        var vy = Array(repeating: 0.0, count: vLayer.count)
        var vOrder = Array(repeating: 0, count: vLayer.count)
        for (l, row) in rows.enumerated() {
            let offset = Double(tallest - row.count) * metrics.rowGap / 2
            for (i, v) in row.enumerated() {
                vOrder[v] = i
                vx[v] = metrics.margin + Double(l) * metrics.layerGap + metrics.nodeWidth / 2
                vy[v] = metrics.margin + offset + Double(i) * metrics.rowGap + metrics.nodeHeight / 2
            }
        }
        self.nodes = ids.indices.map { i in Node(id: ids[i], layer: vLayer[i], order: vOrder[i], x: vx[i], y: vy[i]) }
        self.edges = zip(edgeList, chains).map { e, chain in
            var pts = [Point(x: vx[e.0] + metrics.nodeWidth / 2, y: vy[e.0])]
            for d in chain.dropFirst().dropLast() { pts.append(Point(x: vx[d], y: vy[d])) }
            pts.append(Point(x: vx[e.1] - metrics.nodeWidth / 2, y: vy[e.1]))
            return Edge(from: ids[e.0], to: ids[e.1], points: pts)
        }
        self.crossings = bestCrossings
        self.width = layerCount == 0 ? 2 * metrics.margin
            : 2 * metrics.margin + Double(layerCount - 1) * metrics.layerGap + metrics.nodeWidth
        self.height = tallest == 0 ? 2 * metrics.margin
            : 2 * metrics.margin + Double(tallest - 1) * metrics.rowGap + metrics.nodeHeight
    }

    /// Longest-path layers: sources 0, every other node one more than its furthest predecessor.
    static func longestPathLayers(count n: Int, edges: [(Int, Int)]) -> [Int] {
        var indegree = Array(repeating: 0, count: n)
        var out: [[Int]] = Array(repeating: [], count: n)
        for (a, b) in edges {
            indegree[b] += 1
            out[a].append(b)
        }
        var layer = Array(repeating: 0, count: n)
        var done = Array(repeating: false, count: n)
        var ready = (0..<n).filter { indegree[$0] == 0 }
        var processed = 0
        while processed < n {
            if ready.isEmpty {
                // A cycle: release its first node in input order.
                guard let v = (0..<n).first(where: { !done[$0] }) else { break }
                ready.append(v)
                indegree[v] = 0
            }
            ready.sort()
            let v = ready.removeFirst()
            if done[v] { continue }
            done[v] = true
            processed += 1
            for w in out[v] where !done[w] {
                layer[w] = max(layer[w], layer[v] + 1)
                indegree[w] -= 1
                if indegree[w] == 0 { ready.append(w) }
            }
        }
        return layer
    }

    /// Crossings between each pair of adjacent layers of an ordering.
    static func crossings(_ rows: [[Int]], succ: [[Int]]) -> Int {
        var total = 0
        for l in 0..<max(0, rows.count - 1) {
            var pos: [Int: Int] = [:]
            for (i, v) in rows[l + 1].enumerated() { pos[v] = i }
            var segs: [(Int, Int)] = []
            for (i, v) in rows[l].enumerated() {
                for w in succ[v] { if let j = pos[w] { segs.append((i, j)) } }
            }
            for a in segs.indices {
                for b in segs.indices where b > a {
                    let (i1, j1) = segs[a]
                    let (i2, j2) = segs[b]
                    if (i1 < i2 && j1 > j2) || (i1 > i2 && j1 < j2) { total += 1 }
                }
            }
        }
        return total
    }
}
