import Foundation

/// How to reach one Kubernetes API server: the result of reading a kubeconfig (or the
/// in-cluster service-account files), before any socket is opened.
public struct KubeConnection: Sendable, Equatable {
    /// `https://host:port` (no trailing slash).
    public var server: String
    /// PEM of the CA that signs the server's certificate; `nil`: the system trust store.
    public var certificateAuthorityPEM: String?
    /// PEM of the client certificate (mutual TLS).
    public var clientCertificatePEM: String?
    /// PEM of the client certificate's key.
    public var clientKeyPEM: String?
    /// Bearer token.
    public var token: String?
    /// Do not verify the server's certificate (`insecure-skip-tls-verify`).
    public var insecureSkipTLSVerify: Bool
    /// The namespace to work in (`--namespace`, else the context's, else `default`).
    public var namespace: String
    /// Where it came from (`context NAME of FILE`, `in-cluster`), for messages.
    public var source: String

    /// Creates a connection description.
    public init(
        server: String, certificateAuthorityPEM: String? = nil, clientCertificatePEM: String? = nil,
        clientKeyPEM: String? = nil, token: String? = nil, insecureSkipTLSVerify: Bool = false,
        namespace: String = "default", source: String = ""
    ) {
        var server = server
        while server.hasSuffix("/") { server.removeLast() }
        self.server = server
        self.certificateAuthorityPEM = certificateAuthorityPEM
        self.clientCertificatePEM = clientCertificatePEM
        self.clientKeyPEM = clientKeyPEM
        self.token = token
        self.insecureSkipTLSVerify = insecureSkipTLSVerify
        self.namespace = namespace
        self.source = source
    }
}

/// A kubeconfig or in-cluster credential that cannot be used.
public struct KubeConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What is wrong.
    public var description: String
    /// Creates an error.
    public init(_ description: String) { self.description = description }
}

/// Reading credentials, as pure functions over text and a file reader (so tests need no files).
///
/// Supported: `clusters[].cluster.{server, certificate-authority(-data), insecure-skip-tls-verify}`,
/// `users[].user.{client-certificate(-data), client-key(-data), token, tokenFile}`,
/// `contexts[].context.{cluster, user, namespace}`, `current-context` or `--context`.
/// Relative file paths are relative to the kubeconfig's directory. `exec` and
/// `auth-provider` plugins are refused with a clear error (they run arbitrary programs).
public enum KubeConfig {
    /// The in-cluster service-account directory.
    public static let serviceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"

    /// The connection a kubeconfig describes.
    ///
    /// - Parameters:
    ///   - yaml: the kubeconfig's text.
    ///   - context: `--context`; `nil` uses `current-context`.
    ///   - namespace: `--namespace`; `nil` uses the context's, else `default`.
    ///   - directory: the kubeconfig's directory (for relative paths).
    ///   - readFile: reads a file the kubeconfig names.
    public static func connection(
        yaml: String, context: String? = nil, namespace: String? = nil, directory: String = ".",
        source: String = "kubeconfig", readFile: (String) throws -> Data = { try Data(contentsOf: URL(fileURLWithPath: $0)) }
    ) throws -> KubeConnection {
        let doc: KubeValue
        do { doc = try KubeValue.parse(yaml: yaml) } catch { throw KubeConfigError("\(source): not YAML: \(error)") }
        guard case .object = doc else { throw KubeConfigError("\(source): not a kubeconfig (no mapping at the top)") }
        guard let contextName = context ?? doc["current-context"]?.string, !contextName.isEmpty else {
            throw KubeConfigError("\(source): no current-context; pass --context")
        }
        func named(_ list: String, _ name: String, _ field: String) throws -> KubeValue {
            let entries = doc[list]?.array ?? []
            guard let entry = entries.first(where: { $0["name"]?.string == name }) else {
                let known = entries.compactMap { $0["name"]?.string }
                throw KubeConfigError(
                    "\(source): no \(field) named '\(name)'" + (known.isEmpty ? "" : " (known: \(known.joined(separator: ", ")))"))
            }
            return entry[field] ?? .object([])
        }
        let ctx = try named("contexts", contextName, "context")
        guard let clusterName = ctx["cluster"]?.string else {
            throw KubeConfigError("\(source): context '\(contextName)' names no cluster")
        }
        let cluster = try named("clusters", clusterName, "cluster")
        let user = try ctx["user"]?.string.map { try named("users", $0, "user") } ?? .object([])
        guard let server = cluster["server"]?.string, !server.isEmpty else {
            throw KubeConfigError("\(source): cluster '\(clusterName)' has no server")
        }
        guard server.hasPrefix("https://") || server.hasPrefix("http://") else {
            throw KubeConfigError("\(source): cluster '\(clusterName)': server '\(server)' is not an http(s) URL")
        }
        if user["exec"] != nil {
            throw KubeConfigError(
                "\(source): user of context '\(contextName)' uses an exec credential plugin, which is not supported; "
                    + "use a token, a client certificate, or run in the cluster")
        }
        if user["auth-provider"] != nil {
            throw KubeConfigError(
                "\(source): user of context '\(contextName)' uses an auth-provider plugin, which is not supported; "
                    + "use a token or a client certificate")
        }
        func path(_ p: String) -> String { p.hasPrefix("/") ? p : (directory as NSString).appendingPathComponent(p) }
        func pem(_ object: KubeValue, _ key: String) throws -> String? {
            if let data = object[key + "-data"]?.string {
                guard let decoded = Data(base64Encoded: data, options: .ignoreUnknownCharacters),
                    let text = String(data: decoded, encoding: .utf8)
                else { throw KubeConfigError("\(source): \(key)-data is not base64 of PEM text") }
                return text
            }
            guard let file = object[key]?.string else { return nil }
            do {
                guard let text = String(data: try readFile(path(file)), encoding: .utf8) else {
                    throw KubeConfigError("\(source): \(key) \(path(file)) is not PEM text")
                }
                return text
            } catch let e as KubeConfigError {
                throw e
            } catch {
                throw KubeConfigError("\(source): cannot read \(key) \(path(file)): \(error)")
            }
        }
        var token = user["token"]?.string
        if token == nil, let file = user["tokenFile"]?.string {
            do {
                token = String(decoding: try readFile(path(file)), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            } catch { throw KubeConfigError("\(source): cannot read tokenFile \(path(file)): \(error)") }
        }
        let cert = try pem(user, "client-certificate")
        let key = try pem(user, "client-key")
        if (cert == nil) != (key == nil) {
            throw KubeConfigError("\(source): user of context '\(contextName)' has a client certificate without a key (or a key without one)")
        }
        let insecure: Bool
        switch cluster["insecure-skip-tls-verify"] {
        case .bool(let b)?: insecure = b
        case .string(let s)?: insecure = s == "true"
        default: insecure = false
        }
        return KubeConnection(
            server: server, certificateAuthorityPEM: try pem(cluster, "certificate-authority"), clientCertificatePEM: cert,
            clientKeyPEM: key, token: token, insecureSkipTLSVerify: insecure,
            namespace: namespace ?? ctx["namespace"]?.string.flatMap { $0.isEmpty ? nil : $0 } ?? "default",
            source: "context '\(contextName)' of \(source)")
    }

    /// The in-cluster connection: `KUBERNETES_SERVICE_HOST`/`_PORT` and the service account's
    /// `token`, `ca.crt` and `namespace` files.
    public static func inCluster(
        environment: [String: String], namespace: String? = nil, directory: String = serviceAccountDirectory,
        readFile: (String) throws -> Data = { try Data(contentsOf: URL(fileURLWithPath: $0)) }
    ) throws -> KubeConnection {
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty,
            let port = environment["KUBERNETES_SERVICE_PORT"], !port.isEmpty
        else {
            throw KubeConfigError(
                "no kubeconfig found and not in a cluster (KUBERNETES_SERVICE_HOST/PORT unset); pass --kubeconfig")
        }
        func read(_ name: String) throws -> String {
            do {
                return String(decoding: try readFile(directory + "/" + name), as: UTF8.self)
            } catch {
                throw KubeConfigError("in-cluster: cannot read \(directory)/\(name): \(error)")
            }
        }
        let token = try read("token").trimmingCharacters(in: .whitespacesAndNewlines)
        let ca = try read("ca.crt")
        let ns = namespace ?? (try? read("namespace"))?.trimmingCharacters(in: .whitespacesAndNewlines)
        let hostPart = host.contains(":") ? "[\(host)]" : host
        return KubeConnection(
            server: "https://\(hostPart):\(port)", certificateAuthorityPEM: ca, token: token,
            namespace: ns.flatMap { $0.isEmpty ? nil : $0 } ?? "default", source: "in-cluster service account")
    }

    /// What `trellis flow run --on kubernetes` uses: `--kubeconfig`, else the first file of
    /// `$KUBECONFIG`, else `~/.kube/config` if it exists, else the in-cluster credentials.
    public static func load(
        kubeconfig: String?, context: String?, namespace: String?, environment: [String: String]
    ) throws -> KubeConnection {
        var file = kubeconfig
        if file == nil, let env = environment["KUBECONFIG"], !env.isEmpty {
            file = env.split(separator: ":").first.map(String.init)
        }
        if file == nil, let home = environment["HOME"], FileManager.default.fileExists(atPath: home + "/.kube/config") {
            file = home + "/.kube/config"
        }
        guard let file else { return try inCluster(environment: environment, namespace: namespace) }
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw KubeConfigError("cannot read kubeconfig \(file): \(error.localizedDescription)")
        }
        return try connection(
            yaml: text, context: context, namespace: namespace, directory: (file as NSString).deletingLastPathComponent,
            source: file)
    }
}
