import CTrellisShim
#if canImport(Glibc)
import Glibc
#endif

/// A connected stream socket (UNIX or TCP) with blocking I/O, owning its descriptor.
public struct StreamSocket: ~Copyable, Sendable {
    public let fd: OwnedFD
    public var raw: Int32 { fd.raw }

    public init(adopting fd: consuming OwnedFD) {
        self.fd = fd
    }

    /// Connects to a UNIX-domain socket path.
    public static func connect(unixPath path: String) throws(SystemError) -> StreamSocket {
        let raw = try syscallRetrying("socket") { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        let sock = StreamSocket(adopting: OwnedFD(adopting: raw))
        var addr = try SocketAddress.unix(path)
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(raw, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if rc != 0 { throw SystemError("connect(\(path))") }
        return sock
    }

    /// Connects to a TCP host (IPv4 dotted quad or name) and port, with TCP_NODELAY.
    /// Connects over TCP. `timeoutSeconds` bounds the connect and every later send (a peer
    /// cut off from the network fails within it rather than after the kernel's ~2 min of SYN
    /// retries); nil leaves the socket without limits.
    public static func connect(host: String, port: Int, timeoutSeconds: Int? = nil) throws(SystemError) -> StreamSocket {
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let info = result else { throw SystemError("getaddrinfo(\(host))", errno: EHOSTUNREACH) }
        defer { freeaddrinfo(result) }
        let raw = try syscallRetrying("socket") { socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        let sock = StreamSocket(adopting: OwnedFD(adopting: raw))
        if let t = timeoutSeconds { sock.descriptor.setSendTimeout(seconds: t) }  // bounds a blocking connect on Linux
        if Glibc.connect(raw, info.pointee.ai_addr, info.pointee.ai_addrlen) != 0 {
            throw SystemError("connect(\(host):\(port))")
        }
        sock.setNoDelay()
        return sock
    }

    /// The socket, borrowed for I/O.
    public var descriptor: Descriptor { fd.descriptor }

    public func setNoDelay() { descriptor.setNoDelay() }

    /// Reads exactly `count` bytes. Returns false on a clean EOF before the first byte.
    public func readExact(into buffer: UnsafeMutableRawPointer, count: Int) throws(SystemError) -> Bool {
        try descriptor.readExact(into: buffer, count: count)
    }

    public func writeAll(_ buffer: UnsafeRawBufferPointer) throws(SystemError) { try descriptor.writeAll(buffer) }

    /// Sends one byte carrying `fd` in an SCM_RIGHTS message.
    public func sendFD(_ fd: Descriptor, byte: UInt8 = 0x14) throws(SystemError) { try descriptor.sendFD(fd, byte: byte) }

    /// Receives the 1-byte fd carrier and returns the descriptor it carries.
    public func receiveFD() throws(SystemError) -> OwnedFD { try descriptor.receiveFD() }
}

/// sockaddr builders.
public enum SocketAddress {
    public static func unix(_ path: String) throws(SystemError) -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard bytes.count < capacity else { throw SystemError("socket path too long (\(bytes.count) bytes, limit \(capacity - 1))", errno: ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return addr
    }
}

/// A listening socket. `accept()` blocks; `close()` from another thread stops it.
public final class Listener: Sendable {
    private let fd: OwnedFD
    public var raw: Int32 { fd.raw }
    public let unixPath: String?
    public let port: Int

    /// Device and inode of the socket file this listener bound, so `close` removes only
    /// its own file (not one a successor bound after a preStop hook removed ours).
    private let identity: (device: UInt64, inode: UInt64)?

    private init(fd: consuming OwnedFD, unixPath: String?, port: Int, identity: (UInt64, UInt64)? = nil) {
        self.fd = fd
        self.unixPath = unixPath
        self.port = port
        self.identity = identity.map { (device: $0.0, inode: $0.1) }
    }

    /// What is at a path where a UNIX socket is to be bound.
    public enum SocketPathState: Equatable, Sendable {
        case absent
        /// A socket file nobody accepts on (left by a daemon that died): safe to replace.
        case staleSocket
        /// A socket some process accepts on.
        case liveSocket
        /// Something that is not a socket (a regular file, a directory, a symlink, …): never removed.
        case notASocket(kind: String)
    }

    /// Inspects `path` without following a final symlink.
    public static func inspectSocketPath(_ path: String) -> SocketPathState {
        var st = stat()
        if lstat(path, &st) != 0 { return .absent }
        let kind = st.st_mode & S_IFMT
        guard kind == S_IFSOCK else {
            let name: String
            switch kind {
            case S_IFREG: name = "a regular file"
            case S_IFDIR: name = "a directory"
            case S_IFLNK: name = "a symbolic link"
            case S_IFIFO: name = "a FIFO"
            case S_IFCHR, S_IFBLK: name = "a device"
            default: name = "not a socket"
            }
            return .notASocket(kind: name)
        }
        if let probe = try? StreamSocket.connect(unixPath: path) {
            _ = probe
            return .liveSocket
        }
        return .staleSocket
    }

    /// Refuses a path that holds anything but a stale socket; returns whether a stale socket is there.
    public static func checkSocketPath(_ path: String) throws(SystemError) -> Bool {
        switch inspectSocketPath(path) {
        case .absent: return false
        case .staleSocket: return true
        case .liveSocket: throw SystemError("socket \(path) is in use by another process", errno: EADDRINUSE)
        case .notASocket(let kind):
            throw SystemError("\(path) is \(kind), not a socket; refusing to replace it (remove it or choose another --socket)", errno: EEXIST)
        }
    }

    /// Binds a UNIX socket at `path` (mode 0777, so clients of any user can connect, as
    /// vineyardd does), replacing a stale socket file but refusing when another process
    /// is accepting on it or when the path holds anything that is not a socket.
    public static func unix(path: String, backlog: Int32 = 1024) throws(SystemError) -> Listener {
        var addr = try SocketAddress.unix(path)
        if try checkSocketPath(path) { unlink(path) }
        let fd = OwnedFD(adopting: try syscallRetrying("socket") { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) })
        let raw = fd.raw
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(raw, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if rc != 0 { throw SystemError("bind(\(path))") }
        if chmod(path, 0o777) != 0 {
            let e = SystemError("chmod(\(path), 0777)")
            unlink(path)
            throw e
        }
        var st = stat()
        _ = lstat(path, &st)
        if Glibc.listen(raw, backlog) != 0 {
            let e = SystemError("listen")
            unlink(path)
            throw e
        }
        return Listener(fd: fd, unixPath: path, port: 0, identity: (UInt64(st.st_dev), UInt64(st.st_ino)))
    }

    /// Binds TCP on `host:port` (port 0 picks one) with SO_REUSEADDR.
    public static func tcp(host: String, port: Int, backlog: Int32 = 1024) throws(SystemError) -> Listener {
        let fd = OwnedFD(adopting: try syscallRetrying("socket") { socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) })
        let raw = fd.raw
        var one: Int32 = 1
        setsockopt(raw, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        if inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &addr.sin_addr) != 1 {
            throw SystemError("inet_pton(\(host))", errno: EINVAL)
        }
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(raw, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 { throw SystemError("bind(\(host):\(port))") }
        if Glibc.listen(raw, backlog) != 0 { throw SystemError("listen") }
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(raw, $0, &len) }
        }
        return Listener(fd: fd, unixPath: nil, port: Int(UInt16(bigEndian: bound.sin_port)))
    }

    /// Accepts one connection; throws once the listener is closed.
    public func accept() throws(SystemError) -> StreamSocket {
        while true {
            let fd = trellis_accept_cloexec(raw)
            if fd >= 0 { return StreamSocket(adopting: OwnedFD(adopting: fd)) }
            let e = Glibc.errno
            if e == EINTR || e == ECONNABORTED { continue }
            if e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM {
                usleep(10_000)  // out of descriptors: back off instead of spinning
                continue
            }
            throw SystemError("accept", errno: e)
        }
    }

    /// Stops accepting: wakes a blocked `accept` and removes a UNIX socket file.
    public func close() {
        fd.descriptor.shutdown()
        if let path = unixPath, let identity {
            var st = stat()
            if lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFSOCK, UInt64(st.st_dev) == identity.device,
                UInt64(st.st_ino) == identity.inode
            {
                unlink(path)
            }
        }
    }
}
