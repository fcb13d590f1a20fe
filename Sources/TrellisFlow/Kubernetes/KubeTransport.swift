import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

/// One HTTP request to the API server (or to etcd's JSON gateway), as data: what the unit
/// tests compare and the transport sends.
public struct KubeRequest: Sendable, Equatable, CustomStringConvertible {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`.
    public var method: String
    /// The path, starting with `/` (not percent-encoded).
    public var path: String
    /// Query parameters in order.
    public var query: [QueryItem]
    /// `Content-Type` of the body.
    public var contentType: String?
    /// The body (JSON text, or YAML for apply patches).
    public var body: String?

    /// A query parameter.
    public struct QueryItem: Sendable, Equatable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    /// Creates a request.
    public init(method: String, path: String, query: [QueryItem] = [], contentType: String? = nil, body: String? = nil) {
        self.method = method
        self.path = path
        self.query = query
        self.contentType = contentType
        self.body = body
    }

    /// The value of a query parameter.
    public func queryValue(_ name: String) -> String? { query.first { $0.name == name }?.value }

    /// Path and percent-encoded query, as sent.
    public var target: String {
        guard !query.isEmpty else { return Self.encodePath(path) }
        return Self.encodePath(path) + "?" + query.map { Self.encode($0.name) + "=" + Self.encode($0.value) }.joined(separator: "&")
    }

    static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    static func encode(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: unreserved) ?? s }

    static func encodePath(_ p: String) -> String {
        p.addingPercentEncoding(withAllowedCharacters: unreserved.union(CharacterSet(charactersIn: "/:"))) ?? p
    }

    public var description: String { "\(method) \(target)" }
}

/// An HTTP answer.
public struct KubeResponse: Sendable {
    /// HTTP status code.
    public var status: Int
    /// The body.
    public var body: Data
    /// Creates a response.
    public init(status: Int, body: Data) {
        self.status = status
        self.body = body
    }
}

/// Sends ``KubeRequest``s. The real one is ``HTTPKubeTransport``; tests record requests.
public protocol KubeTransport: Sendable {
    /// Sends one request and returns the answer, whatever its status. Throws only when no
    /// answer came (connection refused, TLS failure, deadline).
    func send(_ request: KubeRequest) async throws -> KubeResponse
}

/// A transport failure (no HTTP answer).
public struct KubeTransportError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// ``KubeTransport`` over AsyncHTTPClient: TLS through NIOSSL with the connection's CA,
/// client certificate and key, bearer token in `Authorization`. Also used without
/// credentials for a directly reachable etcd gateway.
public final class HTTPKubeTransport: KubeTransport {
    /// `https://host:port` or `http://…`.
    public let baseURL: String
    let token: String?
    let client: HTTPClient
    let timeout: TimeAmount

    /// Creates a transport to `connection` (builds the TLS configuration; fails on bad PEM).
    public convenience init(connection: KubeConnection, timeoutSeconds: Int64 = 60) throws {
        try self.init(
            baseURL: connection.server, token: connection.token, tls: try Self.tlsConfiguration(connection),
            timeoutSeconds: timeoutSeconds)
    }

    /// Creates a transport to `baseURL` with an optional TLS configuration and token.
    public init(baseURL: String, token: String? = nil, tls: TLSConfiguration? = nil, timeoutSeconds: Int64 = 60) throws {
        var base = baseURL
        while base.hasSuffix("/") { base.removeLast() }
        self.baseURL = base
        self.token = token
        var configuration = HTTPClient.Configuration()
        configuration.tlsConfiguration = tls
        configuration.timeout = .init(connect: .seconds(10))
        self.client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        self.timeout = .seconds(timeoutSeconds)
    }

    /// The TLS settings of a connection: custom CA (else the system's), client certificate
    /// and key, or no verification when `insecure-skip-tls-verify` is set.
    public static func tlsConfiguration(_ c: KubeConnection) throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        do {
            if let ca = c.certificateAuthorityPEM {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(ca.utf8)))
            }
            if let cert = c.clientCertificatePEM, let key = c.clientKeyPEM {
                tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(cert.utf8)).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(key.utf8), format: .pem))
            }
        } catch {
            throw KubeConfigError("\(c.source): bad certificate or key: \(error)")
        }
        if c.insecureSkipTLSVerify { tls.certificateVerification = .none }
        return tls
    }

    public func send(_ request: KubeRequest) async throws -> KubeResponse {
        var r = HTTPClientRequest(url: baseURL + request.target)
        r.method = HTTPMethod(rawValue: request.method)
        r.headers.add(name: "Accept", value: "application/json")
        if let token { r.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body = request.body {
            r.headers.add(name: "Content-Type", value: request.contentType ?? "application/json")
            r.body = .bytes(ByteBuffer(string: body))
        }
        do {
            let response = try await client.execute(r, timeout: timeout)
            let buffer = try await response.body.collect(upTo: 256 << 20)
            return KubeResponse(status: Int(response.status.code), body: Data(buffer.readableBytesView))
        } catch {
            throw KubeTransportError("\(request.method) \(baseURL)\(request.path): \(error)")
        }
    }

    /// Closes the connections.
    public func shutdown() async {
        try? await client.shutdown()
    }
}
