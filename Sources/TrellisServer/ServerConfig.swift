import TrellisProtocol

/// How a daemon presents itself and where it listens.
public struct ServerConfig: Sendable {
    /// The IPC socket path.
    public var socketPath: String
    /// RPC (TCP) listener; nil disables RPC.
    public var rpcHost: String = "127.0.0.1"
    public var rpcPort: Int? = nil
    /// Largest request body accepted; a larger header closes the connection with an error.
    public var maxMessageSize: Int = Frame.defaultMaxMessageSize
    /// Host part of the advertised `rpc_endpoint` (`MY_HOST_NAME` or the host name).
    public var hostname: String = "localhost"
    public var nodename: String = "localhost"
    /// Reported by `instance_status` (`--deployment`).
    public var deployment: String = "local"
    public var version: String = "0.24.2"
    /// Connections and parked waits one client process may hold (see ``ClientLimits``).
    public var clientLimits = ClientLimits()
    /// `--htpasswd`: every connection (IPC and RPC) must register with a user and password
    /// from this database before any other request; nil: no authentication.
    public var htpasswd: Htpasswd? = nil
    /// The session this server serves (0: the root; children come from `new_session`).
    public var sessionID: UInt64 = 0
    /// Where requests, connections and migrations are counted (`--metrics_port`); nil: not
    /// at all (the request path then skips even the clock). Sessions share the root's.
    public var metrics: DaemonMetrics? = nil

    public init(socketPath: String) {
        self.socketPath = socketPath
    }

    /// `host:port` as clients split it, or `0.0.0.0:0` without RPC.
    public var rpcEndpoint: String {
        guard let p = rpcPort else { return "0.0.0.0:0" }
        return "\(hostname):\(p)"
    }
}
