import Foundation

/// The API server's requests the launcher sends, as pure functions (unit-tested shape by shape).
public enum KubeRequests {
    /// The field manager of server-side apply.
    public static let fieldManager = "trellis"

    /// The REST path of a kind's collection (`name == nil`) or of one object.
    /// Core kinds (`v1`) live under `/api/v1`, the rest under `/apis/<group>/<version>`.
    public static func resourcePath(apiVersion: String, kind: String, namespace: String, name: String? = nil) -> String {
        let base = apiVersion.contains("/") ? "/apis/\(apiVersion)" : "/api/\(apiVersion)"
        let path = "\(base)/namespaces/\(namespace)/\(plural(kind))"
        return name.map { path + "/" + $0 } ?? path
    }

    /// The resource name of a kind (`Job` → `jobs`, `DataProcess` → `dataprocesses`).
    public static func plural(_ kind: String) -> String {
        let k = kind.lowercased()
        if k.hasSuffix("s") { return k + "es" }
        if k.hasSuffix("y") && !k.hasSuffix("ay") && !k.hasSuffix("ey") { return String(k.dropLast()) + "ies" }
        return k + "s"
    }

    /// Creates an object (`POST` to its collection).
    public static func create(_ object: KubeValue, namespace: String) throws -> KubeRequest {
        let (apiVersion, kind, _) = try identity(object)
        return KubeRequest(
            method: "POST", path: resourcePath(apiVersion: apiVersion, kind: kind, namespace: namespace),
            contentType: "application/json", body: object.json())
    }

    /// Server-side apply of a whole object (create or update, fields owned by `trellis`).
    public static func apply(_ object: KubeValue, namespace: String) throws -> KubeRequest {
        let (apiVersion, kind, name) = try identity(object)
        return KubeRequest(
            method: "PATCH", path: resourcePath(apiVersion: apiVersion, kind: kind, namespace: namespace, name: name),
            query: [.init("fieldManager", fieldManager), .init("force", "true")],
            contentType: "application/apply-patch+yaml", body: object.json())
    }

    /// Reads one object.
    public static func get(apiVersion: String, kind: String, name: String, namespace: String) -> KubeRequest {
        KubeRequest(method: "GET", path: resourcePath(apiVersion: apiVersion, kind: kind, namespace: namespace, name: name))
    }

    /// Deletes one object; `Background` lets the garbage collector remove its pods after.
    public static func delete(
        apiVersion: String, kind: String, name: String, namespace: String, propagation: String = "Background"
    ) -> KubeRequest {
        KubeRequest(
            method: "DELETE", path: resourcePath(apiVersion: apiVersion, kind: kind, namespace: namespace, name: name),
            contentType: "application/json",
            body: KubeValue.object([
                ("apiVersion", "v1"), ("kind", "DeleteOptions"), ("propagationPolicy", .string(propagation)),
            ]).json())
    }

    /// Deletes every object of a kind matching a label selector.
    public static func deleteCollection(
        apiVersion: String, kind: String, namespace: String, labelSelector: String, propagation: String = "Background"
    ) -> KubeRequest {
        KubeRequest(
            method: "DELETE", path: resourcePath(apiVersion: apiVersion, kind: kind, namespace: namespace),
            query: [.init("labelSelector", labelSelector)], contentType: "application/json",
            body: KubeValue.object([
                ("apiVersion", "v1"), ("kind", "DeleteOptions"), ("propagationPolicy", .string(propagation)),
            ]).json())
    }

    /// Lists a Job's pods (the Job controller labels them `job-name=<job>`).
    public static func listPods(ofJob job: String, namespace: String) -> KubeRequest {
        KubeRequest(
            method: "GET", path: resourcePath(apiVersion: "v1", kind: "Pod", namespace: namespace),
            query: [.init("labelSelector", "job-name=\(job)")])
    }

    /// A pod's log (one container; the whole log so far).
    public static func podLog(pod: String, container: String, namespace: String) -> KubeRequest {
        KubeRequest(
            method: "GET", path: resourcePath(apiVersion: "v1", kind: "Pod", namespace: namespace, name: pod) + "/log",
            query: [.init("container", container)])
    }

    /// The events about one pod (for the scheduler's `FailedScheduling` reason).
    public static func podEvents(pod: String, namespace: String) -> KubeRequest {
        KubeRequest(
            method: "GET", path: resourcePath(apiVersion: "v1", kind: "Event", namespace: namespace),
            query: [.init("fieldSelector", "involvedObject.kind=Pod,involvedObject.name=\(pod)")])
    }

    static func identity(_ object: KubeValue) throws -> (String, String, String) {
        guard let apiVersion = object["apiVersion"]?.string, let kind = object["kind"]?.string,
            let name = object[path: "metadata", "name"]?.string
        else { throw KubeAPIError(status: 0, reason: "Invalid", message: "object without apiVersion, kind or metadata.name") }
        return (apiVersion, kind, name)
    }
}

/// An API server answer other than success, or an unusable one.
public struct KubeAPIError: Error, CustomStringConvertible, Sendable, Equatable {
    /// HTTP status (0: not from the server).
    public var status: Int
    /// The `Status.reason` (`AlreadyExists`, `NotFound`, `Forbidden`, …).
    public var reason: String
    /// The server's message.
    public var message: String

    public init(status: Int, reason: String, message: String) {
        self.status = status
        self.reason = reason
        self.message = message
    }

    public var description: String { "API server: \(status) \(reason): \(message)" }

    /// The error an answer carries (a `Status` object, or the bare body).
    static func from(_ response: KubeResponse, request: KubeRequest) -> KubeAPIError {
        let status = try? KubeValue.parse(json: response.body)
        let text = String(decoding: response.body.prefix(500), as: UTF8.self)
        return KubeAPIError(
            status: response.status, reason: status?["reason"]?.string ?? "HTTP \(response.status)",
            message: "\(request.method) \(request.path): " + (status?["message"]?.string ?? text))
    }
}

/// The API operations of the launcher over a ``KubeTransport``.
public struct KubeClient: Sendable {
    /// The transport.
    public let transport: any KubeTransport
    /// The namespace everything is created in.
    public let namespace: String

    public init(transport: any KubeTransport, namespace: String) {
        self.transport = transport
        self.namespace = namespace
    }

    /// Sends and parses a JSON answer; non-2xx throws ``KubeAPIError``.
    @discardableResult
    public func call(_ request: KubeRequest) async throws -> KubeValue {
        let response = try await transport.send(request)
        guard (200..<300).contains(response.status) else { throw KubeAPIError.from(response, request: request) }
        if response.body.isEmpty { return .null }
        return try KubeValue.parse(json: response.body)
    }

    /// Creates an object; `AlreadyExists` throws (callers decide).
    @discardableResult
    public func create(_ object: KubeValue) async throws -> KubeValue {
        try await call(try KubeRequests.create(object, namespace: namespace))
    }

    /// Server-side apply.
    @discardableResult
    public func apply(_ object: KubeValue) async throws -> KubeValue {
        try await call(try KubeRequests.apply(object, namespace: namespace))
    }

    /// Deletes a Job (and, in the background, its pods); a missing Job is not an error.
    public func deleteJob(_ name: String) async throws {
        do {
            try await call(KubeRequests.delete(apiVersion: "batch/v1", kind: "Job", name: name, namespace: namespace))
        } catch let e as KubeAPIError where e.status == 404 {}
    }

    /// Deletes an object by kind and name; a missing one is not an error.
    public func delete(apiVersion: String, kind: String, name: String) async throws {
        do {
            try await call(KubeRequests.delete(apiVersion: apiVersion, kind: kind, name: name, namespace: namespace))
        } catch let e as KubeAPIError where e.status == 404 {}
    }

    /// Deletes every object of a kind with these labels.
    public func deleteAll(apiVersion: String, kind: String, labelSelector: String) async throws {
        try await call(
            KubeRequests.deleteCollection(apiVersion: apiVersion, kind: kind, namespace: namespace, labelSelector: labelSelector))
    }

    /// A Job's pods, newest first.
    public func pods(ofJob job: String) async throws -> [KubeValue] {
        let list = try await call(KubeRequests.listPods(ofJob: job, namespace: namespace))
        return (list["items"]?.array ?? []).sorted {
            ($0[path: "metadata", "creationTimestamp"]?.string ?? "") > ($1[path: "metadata", "creationTimestamp"]?.string ?? "")
        }
    }

    /// A container's log as text.
    public func log(pod: String, container: String) async throws -> String {
        let request = KubeRequests.podLog(pod: pod, container: container, namespace: namespace)
        let response = try await transport.send(request)
        guard (200..<300).contains(response.status) else { throw KubeAPIError.from(response, request: request) }
        return String(decoding: response.body, as: UTF8.self)
    }

    /// The latest `FailedScheduling` message about a pod, if any.
    public func schedulingMessage(pod: String) async -> String? {
        guard let list = try? await call(KubeRequests.podEvents(pod: pod, namespace: namespace)) else { return nil }
        return (list["items"]?.array ?? []).last { $0["reason"]?.string == "FailedScheduling" }?["message"]?.string
    }
}
