import CTrellisShim
import Crypto
import TrellisMeta
import TrellisProtocol
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// `--htpasswd FILE`: an Apache htpasswd database, checked as `htpasswd -v` checks it
/// (vineyardd runs that tool at every `register`). Entries are `user:hash`, with hashes
/// in the formats `htpasswd` writes: bcrypt (`$2y$`, `-B`), Apache MD5 (`$apr1$`, `-m`,
/// the default), SHA-1 (`{SHA}`, `-s`), and crypt(3) (`-d`, and glibc's `$1$`/`$5$`/`$6$`).
/// Plain-text entries (`-p`) never match on Linux, as with `htpasswd -v`.
///
/// The file is read at every check, so that edits take effect without a restart (as
/// with vineyardd, which runs the tool each time).
public struct Htpasswd: Sendable {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    public enum Verdict: Sendable, Equatable {
        case accepted
        case rejected
        /// The database cannot be read (missing, unreadable, too large).
        case unavailable(String)
    }

    /// Largest database read (an htpasswd file is a few lines; this bounds a mistake).
    static let maxFileSize = 4 << 20

    /// Checks a register's username and password against the database.
    public func verify(user: String, password: String) -> Verdict {
        let text: String
        do {
            text = try Self.read(path)
        } catch {
            return .unavailable("cannot read the htpasswd database \(path): \(error)")
        }
        guard !user.isEmpty, !user.contains(":") else { return .rejected }
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            guard line[..<colon] == user else { continue }
            let hash = String(line[line.index(after: colon)...])
            return Self.matches(password: password, hash: hash) ? .accepted : .rejected
        }
        return .rejected
    }

    /// Whether the file can be read now (checked at start, so a typo fails the daemon at once).
    public func check() throws(SystemError) {
        _ = try Self.read(path)
    }

    static func read(_ path: String) throws(SystemError) -> String {
        let fd = try OwnedFD.open(path, flags: O_RDONLY)
        let size = try fd.descriptor.fileSize()
        guard size <= maxFileSize else { throw SystemError("read(\(path)): larger than \(maxFileSize) bytes", errno: EFBIG) }
        var bytes = [UInt8](repeating: 0, count: size)
        let descriptor = fd.descriptor
        let result: Result<Bool, SystemError> = bytes.withUnsafeMutableBytes { b in
            Result { () throws(SystemError) -> Bool in
                size == 0 ? true : try descriptor.read(into: b.baseAddress!, count: size, at: 0)
            }
        }
        let complete = try result.get()
        guard complete else { throw SystemError("read(\(path)): the file shrank while read", errno: EIO) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Whether `password` hashes to `hash` under the hash's own method.
    static func matches(password: String, hash: String) -> Bool {
        if hash.hasPrefix("$apr1$") {
            guard let computed = md5Crypt(password: password, setting: hash, magic: "$apr1$") else { return false }
            return constantTimeEqual(computed, hash)
        }
        if hash.hasPrefix("{SHA}") {
            let digest = Insecure.SHA1.hash(data: Array(password.utf8))
            return constantTimeEqual("{SHA}" + Base64.encode(Array(digest)), hash)
        }
        // bcrypt and every crypt(3) method glibc's libxcrypt knows
        guard let computed = crypt(password: password, setting: hash) else { return false }
        return constantTimeEqual(computed, hash)
    }

    static func crypt(password: String, setting: String) -> String? {
        var out = [CChar](repeating: 0, count: 512)
        let n = trellis_crypt(password, setting, &out, out.count)
        guard n > 0 else { return nil }
        return String(decoding: out[0..<Int(n)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<x.count { diff |= x[i] ^ y[i] }
        return diff == 0
    }

    private static let itoa64 = Array("./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    /// The MD5-based crypt of FreeBSD (`$1$`) and Apache (`$apr1$`): the two differ only in
    /// the magic string mixed into the hash. `setting` is `magic salt [$ …]`; the salt is
    /// at most 8 characters.
    static func md5Crypt(password: String, setting: String, magic: String) -> String? {
        guard setting.hasPrefix(magic) else { return nil }
        let afterMagic = setting.utf8.dropFirst(magic.utf8.count)
        let salt = Array(afterMagic.prefix { $0 != UInt8(ascii: "$") }.prefix(8))
        let pw = Array(password.utf8)
        let magicBytes = Array(magic.utf8)

        var alt = Insecure.MD5()
        alt.update(data: pw)
        alt.update(data: salt)
        alt.update(data: pw)
        let altDigest = Array(alt.finalize())

        var ctx = Insecure.MD5()
        ctx.update(data: pw)
        ctx.update(data: magicBytes)
        ctx.update(data: salt)
        var remaining = pw.count
        while remaining > 0 {
            ctx.update(data: altDigest[0..<min(16, remaining)])
            remaining -= 16
        }
        var i = pw.count
        while i > 0 {
            if i & 1 != 0 { ctx.update(data: [0]) } else { ctx.update(data: pw.prefix(1)) }
            i >>= 1
        }
        var final = Array(ctx.finalize())
        for round in 0..<1000 {
            var c = Insecure.MD5()
            if round & 1 != 0 { c.update(data: pw) } else { c.update(data: final) }
            if round % 3 != 0 { c.update(data: salt) }
            if round % 7 != 0 { c.update(data: pw) }
            if round & 1 != 0 { c.update(data: final) } else { c.update(data: pw) }
            final = Array(c.finalize())
        }
        var out = magicBytes + salt + [UInt8(ascii: "$")]
        func to64(_ value: UInt32, _ count: Int) {
            var v = value
            for _ in 0..<count {
                out.append(itoa64[Int(v & 0x3f)])
                v >>= 6
            }
        }
        for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
            to64(UInt32(final[a]) << 16 | UInt32(final[b]) << 8 | UInt32(final[c]), 4)
        }
        to64(UInt32(final[11]), 2)
        return String(decoding: out, as: UTF8.self)
    }
}
