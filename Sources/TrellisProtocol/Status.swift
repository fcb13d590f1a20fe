/// Vineyard status codes, as they travel in `{"code": N, "message": "…"}` error replies.
public struct StatusCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    public static let ok = StatusCode(rawValue: 0)
    public static let invalid = StatusCode(rawValue: 1)
    public static let keyError = StatusCode(rawValue: 2)
    public static let typeError = StatusCode(rawValue: 3)
    public static let ioError = StatusCode(rawValue: 4)
    public static let endOfFile = StatusCode(rawValue: 5)
    public static let notImplemented = StatusCode(rawValue: 6)
    public static let assertionFailed = StatusCode(rawValue: 7)
    public static let userInputError = StatusCode(rawValue: 8)
    public static let objectExists = StatusCode(rawValue: 11)
    public static let objectNotExists = StatusCode(rawValue: 12)
    public static let objectSealed = StatusCode(rawValue: 13)
    public static let objectNotSealed = StatusCode(rawValue: 14)
    public static let objectIsBlob = StatusCode(rawValue: 15)
    public static let objectTypeError = StatusCode(rawValue: 16)
    public static let objectSpilled = StatusCode(rawValue: 17)
    public static let objectNotSpilled = StatusCode(rawValue: 18)
    public static let metaTreeInvalid = StatusCode(rawValue: 21)
    public static let metaTreeTypeInvalid = StatusCode(rawValue: 22)
    public static let metaTreeSubtreeNotExists = StatusCode(rawValue: 27)
    public static let serverNotReady = StatusCode(rawValue: 31)
    public static let connectionFailed = StatusCode(rawValue: 33)
    public static let connectionError = StatusCode(rawValue: 34)
    public static let etcdError = StatusCode(rawValue: 35)
    public static let alreadyStopped = StatusCode(rawValue: 36)
    public static let notEnoughMemory = StatusCode(rawValue: 41)
    public static let streamDrained = StatusCode(rawValue: 42)
    public static let streamFailed = StatusCode(rawValue: 43)
    public static let invalidStreamState = StatusCode(rawValue: 44)
    public static let streamOpened = StatusCode(rawValue: 45)
    public static let globalObjectInvalid = StatusCode(rawValue: 51)
    public static let unknownError = StatusCode(rawValue: 255)

    public var name: String {
        switch rawValue {
        case 0: return "OK"
        case 1: return "Invalid"
        case 2: return "KeyError"
        case 3: return "TypeError"
        case 4: return "IOError"
        case 5: return "EndOfFile"
        case 6: return "NotImplemented"
        case 7: return "AssertionFailed"
        case 8: return "UserInputError"
        case 11: return "ObjectExists"
        case 12: return "ObjectNotExists"
        case 13: return "ObjectSealed"
        case 14: return "ObjectNotSealed"
        case 15: return "ObjectIsBlob"
        case 16: return "ObjectTypeError"
        case 17: return "ObjectSpilled"
        case 18: return "ObjectNotSpilled"
        case 21: return "MetaTreeInvalid"
        case 22: return "MetaTreeTypeInvalid"
        case 27: return "MetaTreeSubtreeNotExists"
        case 31: return "VineyardServerNotReady"
        case 33: return "ConnectionFailed"
        case 34: return "ConnectionError"
        case 35: return "EtcdError"
        case 36: return "AlreadyStopped"
        case 41: return "NotEnoughMemory"
        case 42: return "StreamDrained"
        case 43: return "StreamFailed"
        case 44: return "InvalidStreamState"
        case 45: return "StreamOpened"
        case 51: return "GlobalObjectInvalid"
        default: return "Unknown(\(rawValue))"
        }
    }

    public var description: String { "\(name) (\(rawValue))" }
}

/// A failure that is answered to the client as an error reply.
public struct VineyardError: Error, Sendable, Equatable, CustomStringConvertible {
    public let code: StatusCode
    public let message: String

    public init(_ code: StatusCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.name): \(message)" }

    /// The error reply frame body: `{"code":N,"message":"…"}` (no `type`).
    public var reply: JSON { ["code": .number(code.rawValue), "message": .string(message)] }
}
