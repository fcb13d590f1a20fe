import CTrellisShim
#if canImport(Glibc)
import Glibc
#endif

/// A descriptor borrowed for I/O: copyable, and it never closes anything. Every read,
/// write and descriptor-passing call goes through one; ``OwnedFD`` (and the types built
/// on it: ``StreamSocket``, ``Listener``, ``MappedRegion``'s file) is the only thing that
/// closes. Keep the owner alive for as long as a `Descriptor` of it is used.
public struct Descriptor: Sendable, Hashable, CustomStringConvertible {
    public let raw: Int32

    public init(_ raw: Int32) { self.raw = raw }

    public var description: String { "fd \(raw)" }

    /// Standard output (CLI output).
    public static let standardOutput = Descriptor(1)

    // MARK: Sockets

    /// Reads exactly `count` bytes (`recv`). Returns false on a clean EOF before the first
    /// byte; an EOF after it is `ECONNRESET`.
    public func readExact(into buffer: UnsafeMutableRawPointer, count: Int) throws(SystemError) -> Bool {
        var done = 0
        while done < count {
            let n = recv(raw, buffer + done, count - done, 0)
            if n > 0 {
                done += n
            } else if n == 0 {
                if done == 0 { return false }
                throw SystemError("recv", errno: ECONNRESET)
            } else {
                let e = Glibc.errno
                if e == EINTR { continue }
                throw SystemError("recv", errno: e)
            }
        }
        return true
    }

    /// One blocking `recv` of at most `count` bytes (EINTR retried): the bytes received, 0 at EOF.
    public func receiveSome(into buffer: UnsafeMutableRawPointer, count: Int) throws(SystemError) -> Int {
        while true {
            let n = recv(raw, buffer, count, 0)
            if n >= 0 { return n }
            let e = Glibc.errno
            if e != EINTR { throw SystemError("recv", errno: e) }
        }
    }

    /// Like ``receiveSome(into:count:)``, but sleeps in `poll` for input before the `recv`.
    ///
    /// A thread blocked in `recv` on a UNIX socket sleeps on the socket's one wait queue,
    /// and the kernel wakes that queue with every write-space event too: when the peer
    /// reads a reply this thread sent, the thread wakes, finds nothing to read, and sleeps
    /// again. `poll` waits for input only (its wake-up is keyed by the events asked for),
    /// so a request-reply peer that reads the reply and takes a while to send the next
    /// request costs one wake-up instead of two, for one more system call.
    public func receiveSomeWhenReadable(into buffer: UnsafeMutableRawPointer, count: Int) throws(SystemError) -> Int {
        while true {
            var p = pollfd(fd: raw, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, -1) < 0 {
                let e = Glibc.errno
                if e == EINTR { continue }
                throw SystemError("poll", errno: e)
            }
            let n = recv(raw, buffer, count, Int32(MSG_DONTWAIT))
            if n >= 0 { return n }
            let e = Glibc.errno
            if e != EINTR && e != EAGAIN && e != EWOULDBLOCK { throw SystemError("recv", errno: e) }
        }
    }

    /// Whatever has arrived, without waiting (`MSG_DONTWAIT`): the bytes taken, 0 if none
    /// (EOF and errors are left for the next blocking read to see).
    public func receiveAvailable(into buffer: UnsafeMutableRawPointer, count: Int) -> Int {
        max(0, recv(raw, buffer, count, Int32(MSG_DONTWAIT)))
    }

    /// The process at the other end of a UNIX socket (`SO_PEERCRED`); nil when unknown.
    public func peerProcess() -> Int32? {
        let pid = trellis_peer_pid(raw)
        return pid > 0 ? pid : nil
    }

    /// Sends all of `buffer` (`send`, no SIGPIPE).
    public func writeAll(_ buffer: UnsafeRawBufferPointer) throws(SystemError) {
        guard var p = buffer.baseAddress else { return }
        var left = buffer.count
        while left > 0 {
            let n = send(raw, p, left, Int32(MSG_NOSIGNAL))
            if n < 0 {
                let e = Glibc.errno
                if e == EINTR { continue }
                throw SystemError("send", errno: e)
            }
            p += n
            left -= n
        }
    }

    public func writeAll(_ bytes: [UInt8]) throws(SystemError) {
        var failure: SystemError?
        bytes.withUnsafeBytes { b in
            do throws(SystemError) { try writeAll(b) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Sends one byte carrying `fd` in an SCM_RIGHTS message.
    public func sendFD(_ fd: Descriptor, byte: UInt8 = 0x14) throws(SystemError) {
        if trellis_send_fd(raw, fd.raw, byte) != 1 { throw SystemError("sendmsg(SCM_RIGHTS)") }
    }

    /// Receives the 1-byte fd carrier and returns the descriptor it carries, owned.
    public func receiveFD() throws(SystemError) -> OwnedFD {
        var fd: Int32 = -1
        var byte: UInt8 = 0
        let n = trellis_recv_fd(raw, &fd, &byte)
        if n < 0 { throw SystemError("recvmsg(SCM_RIGHTS)") }
        if n == 0 { throw SystemError("recvmsg(SCM_RIGHTS)", errno: ECONNRESET) }
        if fd < 0 { throw SystemError("recvmsg(SCM_RIGHTS): no descriptor", errno: EPROTO) }
        return OwnedFD(adopting: fd)
    }

    /// Wakes a thread blocked on this socket (shutdown both directions); closes nothing.
    public func shutdown() {
        _ = Glibc.shutdown(raw, Int32(SHUT_RDWR))
    }

    /// True once the peer has hung up (EOF or error); pending request bytes do not count.
    public func peerHasClosed() -> Bool {
        var pfd = pollfd(fd: raw, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, 0) > 0 else { return false }
        if pfd.revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 { return true }
        var byte: UInt8 = 0
        let n = recv(raw, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    }

    public func setNoDelay() {
        var one: Int32 = 1
        _ = setsockopt(raw, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Bounds every blocking receive (`SO_RCVTIMEO`).
    public func setReceiveTimeout(seconds: Int) {
        var tv = timeval(tv_sec: seconds, tv_usec: 0)
        _ = setsockopt(raw, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Bounds a blocking connect and every later send (`SO_SNDTIMEO`).
    public func setSendTimeout(seconds: Int) {
        var tv = timeval(tv_sec: seconds, tv_usec: 0)
        _ = setsockopt(raw, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    // MARK: Files and pipes

    /// `write(2)` until done (files and pipes; sockets use ``writeAll(_:)-(UnsafeRawBufferPointer)``).
    public func writeFile(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        guard var p = bytes.baseAddress else { return }
        var left = bytes.count
        while left > 0 {
            let n = Glibc.write(raw, p, left)
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("write")
            }
            p += n
            left -= n
        }
    }

    /// Reads exactly `count` bytes at `offset` (`pread`); false if the file ends first.
    public func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int) throws(SystemError) -> Bool {
        var done = 0
        while done < count {
            let n = pread(raw, buffer + done, count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("pread")
            }
            if n == 0 { return false }
            done += n
        }
        return true
    }

    /// The file's size (`fstat`).
    public func fileSize() throws(SystemError) -> Int {
        var st = stat()
        guard fstat(raw, &st) == 0 else { throw SystemError("fstat") }
        return Int(st.st_size)
    }
}

extension OwnedFD {
    /// Opens `path` (`O_CLOEXEC` added), owned.
    public static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws(SystemError) -> OwnedFD {
        let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
        guard fd >= 0 else { throw SystemError("open(\(path))") }
        return OwnedFD(adopting: fd)
    }
}
