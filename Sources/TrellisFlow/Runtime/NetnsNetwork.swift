import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The virtual network of a multi-node runtime on one machine (`trellis runtime up --netns`):
/// a bridge on the host with the gateway address, and per node a network namespace joined to
/// the bridge by a veth pair, with an address of its own. Each node's Trellis daemon runs
/// inside its namespace, bound to the node's address, so daemons reach each other — and
/// steps reach remote objects — only over this network, as pods on separate machines would.
///
/// Planning is pure (names, addresses, the `ip` commands); ``apply(ip:)`` and
/// ``remove(ip:)`` run them. Everything it makes carries the runtime's tag, so `runtime down`
/// (and a test's teardown) can remove it even after a crash.
public struct NetnsNetwork: Codable, Sendable, Equatable {
    /// One node: a namespace and the host end of its link.
    public struct Node: Codable, Sendable, Equatable {
        /// `MY_NODE_NAME` of its daemon (`node-<k>`), published in the cluster metadata.
        public var name: String
        /// The network namespace (`ip netns` name).
        public var namespace: String
        /// The veth end on the host, attached to the bridge.
        public var hostLink: String
        /// The veth end inside the namespace.
        public var nodeLink: String
        /// The node's address (no prefix length).
        public var address: String
    }

    /// Short tag shared by every name (6 hex digits).
    public var tag: String
    /// The bridge on the host.
    public var bridge: String
    /// The first three octets of the /24 (`10.231.X`).
    public var subnet: String
    /// The nodes.
    public var nodes: [Node]

    /// The bridge's (gateway's) address: etcd listens here.
    public var gateway: String { subnet + ".1" }

    /// Plans a network of `count` nodes on 10.231.`octet`.0/24.
    public static func plan(tag: String, nodes count: Int, octet: Int) -> NetnsNetwork {
        let subnet = "10.231.\(octet)"
        let nodes = (0..<count).map { k in
            Node(
                name: "node-\(k)", namespace: "trls-\(tag)-n\(k)", hostLink: "tv\(tag)h\(k)", nodeLink: "tv\(tag)n\(k)",
                address: "\(subnet).\(10 + k)")
        }
        return NetnsNetwork(tag: tag, bridge: "trb\(tag)", subnet: subnet, nodes: nodes)
    }

    /// The `ip` argument vectors that build the network, in order.
    public var setupCommands: [[String]] {
        var out: [[String]] = [
            ["link", "add", bridge, "type", "bridge"],
            ["addr", "add", gateway + "/24", "dev", bridge],
            ["link", "set", bridge, "up"],
        ]
        for n in nodes {
            out += [
                ["netns", "add", n.namespace],
                ["link", "add", n.hostLink, "type", "veth", "peer", "name", n.nodeLink],
                ["link", "set", n.nodeLink, "netns", n.namespace],
                ["link", "set", n.hostLink, "master", bridge],
                ["link", "set", n.hostLink, "up"],
                ["-n", n.namespace, "addr", "add", n.address + "/24", "dev", n.nodeLink],
                ["-n", n.namespace, "link", "set", n.nodeLink, "up"],
                ["-n", n.namespace, "link", "set", "lo", "up"],
            ]
        }
        return out
    }

    /// The `ip` argument vectors that remove it (deleting a namespace deletes its veth pair).
    public var teardownCommands: [[String]] {
        nodes.map { ["netns", "delete", $0.namespace] } + nodes.map { ["link", "delete", $0.hostLink] }
            + [["link", "delete", bridge]]
    }

    /// The argv prefix that runs a command inside node `k`'s namespace.
    public func exec(node k: Int, ip: String) -> [String] { [ip, "netns", "exec", nodes[k].namespace] }

    /// Builds the network; on the first failure removes what was made and throws the reason.
    public func apply(ip: String) throws {
        for args in setupCommands {
            let (status, output) = runIP(ip, args)
            if status != 0 {
                remove(ip: ip)
                throw RuntimeError("ip \(args.joined(separator: " ")) failed: \(output.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
        }
    }

    /// Removes every namespace, link and the bridge (what is already gone is skipped).
    public func remove(ip: String) {
        for args in teardownCommands { _ = runIP(ip, args) }
    }

    /// The `ip` binary, or nil.
    public static func findIP(environment: [String: String]) -> String? {
        let dirs = (environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        return dirs.map { $0 + "/ip" }.first { access($0, X_OK) == 0 }
    }

    /// Why network-namespace nodes cannot be made here, or nil when they can (root and `ip`).
    public static func unavailableReason(environment: [String: String]) -> String? {
        if geteuid() != 0 { return "network-namespace nodes need root (ip netns add); run as root or without --netns" }
        if findIP(environment: environment) == nil { return "network-namespace nodes need the ip command (Debian's iproute2)" }
        return nil
    }

    /// A /24 under 10.231 that no interface of this machine uses yet.
    public static func freeOctet(ip: String) -> Int {
        let used = runIP(ip, ["-4", "-o", "addr", "show"]).output
        var candidates = Array(0..<256).shuffled()
        candidates.removeAll { used.contains("10.231.\($0).") }
        return candidates.first ?? Int.random(in: 0..<256)
    }
}

/// Runs `ip ARGS…`, returning its status and its combined output.
func runIP(_ ip: String, _ args: [String]) -> (status: Int32, output: String) {
    let pipe = Pipe()
    let p = Process()
    p.executableURL = URL(fileURLWithPath: ip)
    p.arguments = args
    p.standardOutput = pipe
    p.standardError = pipe
    p.standardInput = FileHandle.nullDevice
    do { try p.run() } catch { return (127, "\(error)") }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}
