import TrellisProtocol
import TrellisSystem

/// Why a client call failed.
///
/// Failures the daemon reports keep its status code and message unchanged
/// (``Kind/daemon``); failures on this side say what broke: the connection, the
/// conversation, or the shape of an object.
public struct ClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The family of a failure.
    public enum Kind: Sendable, Equatable {
        /// The daemon answered with an error reply (`{"code": N, "message": …}`).
        case daemon
        /// The daemon could not be reached (no socket, refused, bad address).
        case connectionFailed
        /// An established connection broke (EOF, reset, a failed read or write).
        case connectionLost
        /// The daemon's reply did not follow the protocol (wrong type, missing field, fd mismatch).
        case protocolViolation
        /// An object's metadata does not have the layout the reader expects.
        case invalidObject
        /// The caller asked for something impossible (bad shape, wrong element type, …).
        case invalidArgument
    }

    /// The family of the failure.
    public let kind: Kind
    /// The status code: the daemon's for ``Kind/daemon``, else the closest Vineyard code
    /// (``StatusCode/connectionFailed``, ``StatusCode/ioError``, ``StatusCode/invalid``, ``StatusCode/objectTypeError``).
    public let code: StatusCode
    /// The daemon's message, or a description of the local failure.
    public let message: String
    /// The failed system call, when there was one.
    public let systemError: SystemError?

    /// Makes an error; ``code`` defaults to the one that fits `kind`.
    public init(_ kind: Kind, code: StatusCode? = nil, _ message: String, systemError: SystemError? = nil) {
        self.kind = kind
        self.code = code ?? Self.defaultCode(kind)
        self.message = message
        self.systemError = systemError
    }

    /// Wraps an error reply of the daemon.
    public init(daemon error: VineyardError) {
        self.init(.daemon, code: error.code, error.message)
    }

    /// True when the daemon reported that the object or name does not exist
    /// (codes 12 ObjectNotExists and 27 MetaTreeSubtreeNotExists).
    public var isNotFound: Bool {
        kind == .daemon && (code == .objectNotExists || code == .metaTreeSubtreeNotExists)
    }

    public var description: String {
        switch kind {
        case .daemon: return "\(code.name) (\(code.rawValue)): \(message)"
        default:
            if let s = systemError { return "\(message): \(s)" }
            return message
        }
    }

    private static func defaultCode(_ kind: Kind) -> StatusCode {
        switch kind {
        case .daemon: return .unknownError
        case .connectionFailed: return .connectionFailed
        case .connectionLost: return .ioError
        case .protocolViolation: return .invalid
        case .invalidObject: return .objectTypeError
        case .invalidArgument: return .invalid
        }
    }

    static func lost(_ what: String, _ e: SystemError) -> ClientError {
        ClientError(.connectionLost, "connection to the daemon lost while \(what)", systemError: e)
    }

    static func badReply(_ text: String) -> ClientError {
        ClientError(.protocolViolation, text)
    }

    static func invalidObject(_ text: String) -> ClientError {
        ClientError(.invalidObject, text)
    }
}
