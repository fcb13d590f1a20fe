/// The numpy element types a ``Tensor`` can hold, with the spellings each side uses.
public enum DType: String, Sendable, CaseIterable, CustomStringConvertible {
    case bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float16, float32, float64

    /// numpy's `dtype.name` (`value_type_` in metadata): `"int64"`, `"float64"`, …
    public var numpyName: String { rawValue }

    /// The C++ type in `vineyard::Tensor<T>` as Python spells it (`normalize_cpptype`):
    /// `int` for int32, `float`/`double` for float32/float64, else the numpy name.
    public var cppName: String {
        switch self {
        case .int32: return "int"
        case .float32: return "float"
        case .float64: return "double"
        default: return rawValue
        }
    }

    /// numpy's `dtype.str` (`value_type_meta_`, and `descr` in `.npy` files): `"<i8"`, `"|b1"`, …
    public var typeString: String {
        switch self {
        case .bool: return "|b1"
        case .int8: return "|i1"
        case .uint8: return "|u1"
        case .int16: return "<i2"
        case .uint16: return "<u2"
        case .int32: return "<i4"
        case .uint32: return "<u4"
        case .int64: return "<i8"
        case .uint64: return "<u8"
        case .float16: return "<f2"
        case .float32: return "<f4"
        case .float64: return "<f8"
        }
    }

    /// Arrow's type name (`str(pa_type)`), as in `vineyard::NumericArray<T>`.
    public var arrowName: String {
        switch self {
        case .float16: return "halffloat"
        case .float32: return "float"
        case .float64: return "double"
        default: return rawValue
        }
    }

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .bool, .int8, .uint8: return 1
        case .int16, .uint16, .float16: return 2
        case .int32, .uint32, .float32: return 4
        case .int64, .uint64, .float64: return 8
        }
    }

    /// True for the floating-point types.
    public var isFloatingPoint: Bool { self == .float16 || self == .float32 || self == .float64 }

    /// Reads any spelling Python or C++ writers use for a tensor's value type
    /// (`value_type_`, the `Tensor<T>` parameter, Arrow names, `normalize_dtype`'s aliases).
    public init?(name: String) {
        switch name {
        case "bool": self = .bool
        case "int8", "int8_t", "byte": self = .int8
        case "uint8", "uint8_t", "char": self = .uint8
        case "int16", "int16_t", "short": self = .int16
        case "uint16", "uint16_t": self = .uint16
        case "int", "int32", "int32_t", "i32": self = .int32
        case "uint", "uint32", "uint32_t", "u32", "uint_t": self = .uint32
        case "int64", "int64_t", "i64", "long long", "long": self = .int64
        case "uint64", "uint64_t", "u64": self = .uint64
        case "float16", "half", "halffloat": self = .float16
        case "float", "float32": self = .float32
        case "double", "float64": self = .float64
        default: return nil
        }
    }

    /// Reads a numpy type string (`"<i8"`, `"|b1"`, `"=f4"`); big-endian types are not supported.
    public init?(typeString s: String) {
        guard let first = s.first, "<|=".contains(first) else { return nil }
        let rest = s.dropFirst()
        guard let t = DType.allCases.first(where: { $0.typeString.dropFirst() == rest }) else { return nil }
        self = t
    }

    public var description: String { rawValue }
}

/// A Swift type that is the element of a numpy dtype.
public protocol TensorElement: BitwiseCopyable, Sendable {
    /// The numpy dtype with this memory layout.
    static var dtype: DType { get }
}

extension Bool: TensorElement { public static var dtype: DType { .bool } }
extension Int8: TensorElement { public static var dtype: DType { .int8 } }
extension Int16: TensorElement { public static var dtype: DType { .int16 } }
extension Int32: TensorElement { public static var dtype: DType { .int32 } }
extension Int64: TensorElement { public static var dtype: DType { .int64 } }
extension UInt8: TensorElement { public static var dtype: DType { .uint8 } }
extension UInt16: TensorElement { public static var dtype: DType { .uint16 } }
extension UInt32: TensorElement { public static var dtype: DType { .uint32 } }
extension UInt64: TensorElement { public static var dtype: DType { .uint64 } }
extension Float: TensorElement { public static var dtype: DType { .float32 } }
extension Double: TensorElement { public static var dtype: DType { .float64 } }
#if !((os(macOS) || targetEnvironment(macCatalyst)) && arch(x86_64))
extension Float16: TensorElement { public static var dtype: DType { .float16 } }
#endif
