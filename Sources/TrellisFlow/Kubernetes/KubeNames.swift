/// Names that Kubernetes (and Fluid, Helm, Argo) accept, made from flow and step names.
///
/// Flow and step names allow letters, digits, `.`, `_` and `-`; Kubernetes object names are
/// DNS-1123 labels (lower-case letters, digits, `-`, alphanumeric at both ends, ≤ 63). A name
/// that is already valid and short enough is kept as it is; anything else is sanitised and gets
/// `-` plus 8 hex digits of a stable hash (FNV-1a) of the original, so two different originals
/// never collapse into one name and the same original always gives the same name.
public enum KubeNames {
    /// Longest DNS-1123 label.
    public static let maxLabel = 63
    /// Longest DataProcess name: Fluid installs a Helm release `<name>-processor` and Helm
    /// caps release names at 53 characters.
    public static let maxDataProcess = 43
    /// Longest name of a StatefulSet or DaemonSet (its `controller-revision-hash` label value is
    /// `<name>-<10 characters>`, ≤ 63), and of a Workflow's `generateName` stem.
    public static let maxController = 52
    /// Longest Dataset/VineyardRuntime name: Fluid's Helm release for the runtime is named after
    /// it and derives `<name>-master`, `<name>-worker`, `<name>-fuse` and `<name>-rpc-conf` from it.
    public static let maxRuntime = 40
    /// Longest label value.
    public static let maxLabelValue = 63

    /// A stable 8-hex-digit hash of `text` (FNV-1a 64, upper 32 bits): the same on every
    /// platform and run (Swift's `Hasher` is seeded per process, so it cannot be used).
    public static func hash8(_ text: String) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in text.utf8 {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        let s = String(h >> 32, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }

    /// Whether `s` is a DNS-1123 label of at most `maxLength` characters.
    public static func isDNSLabel(_ s: String, maxLength: Int = maxLabel) -> Bool {
        let u = Array(s.utf8)
        guard !u.isEmpty, u.count <= maxLength else { return false }
        func alnum(_ c: UInt8) -> Bool { (c >= 97 && c <= 122) || (c >= 48 && c <= 57) }
        guard alnum(u.first!), alnum(u.last!) else { return false }
        return u.allSatisfy { alnum($0) || $0 == 45 }
    }

    /// Whether `s` is a valid label value (empty, or ≤ 63 of letters, digits, `-`, `_`, `.`,
    /// alphanumeric at both ends).
    public static func isLabelValue(_ s: String) -> Bool {
        let u = Array(s.utf8)
        if u.isEmpty { return true }
        guard u.count <= maxLabelValue else { return false }
        func alnum(_ c: UInt8) -> Bool { (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) }
        guard alnum(u.first!), alnum(u.last!) else { return false }
        return u.allSatisfy { alnum($0) || $0 == 45 || $0 == 95 || $0 == 46 }
    }

    /// `text` as a DNS-1123 label of at most `maxLength` (≥ 10) characters: itself when it
    /// already is one, else lower-cased, other characters turned into `-`, trimmed, cut, and
    /// suffixed with `-` + ``hash8(_:)`` of `text`.
    public static func dnsLabel(_ text: String, maxLength: Int = maxLabel) -> String {
        precondition(maxLength >= 10, "a DNS label needs room for the hash suffix")
        if isDNSLabel(text, maxLength: maxLength) { return text }
        var chars: [Character] = text.lowercased().map { c in
            (c.isASCII && (c.isLetter || c.isNumber)) ? c : "-"
        }
        chars = Array(chars.prefix(maxLength - 9))
        while let f = chars.first, f == "-" { chars.removeFirst() }
        while let l = chars.last, l == "-" { chars.removeLast() }
        let stem = String(chars)
        return (stem.isEmpty ? "x" : stem) + "-" + hash8(text)
    }

    /// `text` as a label value: itself when valid, else sanitised, cut and hash-suffixed like
    /// ``dnsLabel(_:maxLength:)`` (case and `_`/`.` kept).
    public static func labelValue(_ text: String) -> String {
        if isLabelValue(text) { return text }
        var chars: [Character] = text.map { c in
            (c.isASCII && (c.isLetter || c.isNumber || c == "_" || c == ".")) ? c : "-"
        }
        chars = Array(chars.prefix(maxLabelValue - 9))
        func alnum(_ c: Character) -> Bool { c.isASCII && (c.isLetter || c.isNumber) }
        while let f = chars.first, !alnum(f) { chars.removeFirst() }
        while let l = chars.last, !alnum(l) { chars.removeLast() }
        let stem = String(chars)
        return (stem.isEmpty ? "x" : stem) + "-" + hash8(text)
    }

    /// A ConfigMap key (letters, digits, `-`, `_`, `.`) for a relative file path: the path
    /// itself when it is one, else the path with other characters as `_` plus `-` + hash.
    public static func configMapKey(_ path: String) -> String {
        let ok = !path.isEmpty && path.utf8.count <= 253
            && path.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }
            && path != "." && path != ".."
        if ok { return path }
        let stem = String(
            path.map { c in (c.isASCII && (c.isLetter || c.isNumber || c == "-" || c == "." || c == "_")) ? c : "_" }
                .prefix(200))
        return stem + "-" + hash8(path)
    }
}
