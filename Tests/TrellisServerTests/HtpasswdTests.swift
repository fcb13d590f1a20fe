import Testing
@testable import TrellisServer

/// The hash checks behind `--htpasswd`, without a daemon. (tests/integration/test_htpasswd.py
/// compares every verdict with Apache's own `htpasswd -v` on files that tool wrote.)
@Suite("htpasswd hashes")
struct HtpasswdTests {
    @Test(
        "the MD5 crypt written in Swift equals glibc's $1$ crypt, for any password and salt",
        arguments: [("", "abc"), ("password", "saltsalt"), ("a much longer password than sixteen bytes", "x"), ("ünïcödé", "12345678")])
    func md5CryptMatchesLibcrypt(password: String, salt: String) throws {
        let ours = try #require(Htpasswd.md5Crypt(password: password, setting: "$1$\(salt)$", magic: "$1$"))
        let libc = try #require(Htpasswd.crypt(password: password, setting: "$1$\(salt)$"))
        #expect(ours == libc)
        // $apr1$ is the same algorithm with another magic string: a different hash, same shape
        let apr = try #require(Htpasswd.md5Crypt(password: password, setting: "$apr1$\(salt)$", magic: "$apr1$"))
        #expect(apr.hasPrefix("$apr1$\(salt.prefix(8))$") && apr.count == ours.count + 3 && !apr.hasSuffix(String(ours.suffix(22))))
        #expect(Htpasswd.matches(password: password, hash: apr))
        #expect(!Htpasswd.matches(password: password + "x", hash: apr))
    }

    @Test("bcrypt, SHA-512 crypt and {SHA} entries verify; wrong passwords, plain text and junk do not")
    func formats() throws {
        let bcrypt = try #require(Htpasswd.crypt(password: "pw", setting: "$2b$05$abcdefghijklmnopqrstuu"))
        #expect(Htpasswd.matches(password: "pw", hash: bcrypt))
        #expect(!Htpasswd.matches(password: "pW", hash: bcrypt))
        let sha512 = try #require(Htpasswd.crypt(password: "pw", setting: "$6$saltsalt$"))
        #expect(Htpasswd.matches(password: "pw", hash: sha512) && !Htpasswd.matches(password: "px", hash: sha512))
        // {SHA}: base64 of SHA-1("password"), the RFC 3174 digest of that word
        #expect(Htpasswd.matches(password: "password", hash: "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="))
        #expect(!Htpasswd.matches(password: "Password", hash: "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="))
        #expect(!Htpasswd.matches(password: "plain", hash: "plain"), "htpasswd -v on Linux never accepts plain text")
        #expect(!Htpasswd.matches(password: "", hash: ""))
        #expect(!Htpasswd.matches(password: "x", hash: "$2b$99$garbage"))
        #expect(!Htpasswd.matches(password: "x", hash: "$apr1$"))
    }
}
