import CTrellisShim
#if canImport(Glibc)
import Glibc
#endif

extension StreamSocket {
    /// Receives the 1-byte fd carrier on the socket `raw` (borrowed, not owned) and
    /// returns the descriptor it carries; for owners that keep the raw number apart
    /// from the ``StreamSocket`` that closes it.
    public static func receiveFD(_ raw: Int32) throws(SystemError) -> OwnedFD {
        var fd: Int32 = -1
        var byte: UInt8 = 0
        let n = trellis_recv_fd(raw, &fd, &byte)
        if n < 0 { throw SystemError("recvmsg(SCM_RIGHTS)") }
        if n == 0 { throw SystemError("recvmsg(SCM_RIGHTS)", errno: ECONNRESET) }
        if fd < 0 { throw SystemError("recvmsg(SCM_RIGHTS): no descriptor", errno: EPROTO) }
        return OwnedFD(adopting: fd)
    }
}
