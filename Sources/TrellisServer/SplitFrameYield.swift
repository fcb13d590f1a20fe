/// Decides whether a connection thread that has read only part of a frame yields the
/// CPU before it sleeps on the rest.
///
/// The upstream client writes a frame's 8-byte header and its body in two `send`s.
/// When client and connection thread share a CPU, the header alone wakes the thread,
/// which preempts the client, reads 8 bytes and goes back to sleep, only to be woken
/// again by the body: two sleeps and wake-ups per request instead of one. Yielding
/// lets the client finish its write and block on the reply, after which the body is
/// waiting (a pinned `exists` loop costs the daemon 6.6 µs instead of 12.1).
///
/// A yield pays only when the sender shares this CPU. When it runs elsewhere, the
/// yield returns at once with nothing new: a wasted system call, so the policy backs
/// off, skipping the next 16, 32, … up to 4,096 partial frames (a yield that brings
/// the rest resets this). When unrelated work shares the CPU, a yield can cost that
/// work's whole time slice (milliseconds): after such a slow yield there are no
/// yields for a second, then two, four, … up to a minute.
struct SplitFrameYield {
    /// Longest a yield may take and still count as quick: well under a time slice of
    /// unrelated work (0.75 ms × (1 + log₂ CPUs) by default), well over the tens to
    /// hundreds of microseconds a virtual machine's CPU may stall a quick one. (At 50 µs
    /// a pinned pair's rare stalled yield turned yields off for seconds at a time: 80 µs
    /// of daemon CPU per pair instead of 73–75.)
    static let slowYieldNanoseconds: UInt64 = 500_000
    static let firstBackoff = 16
    static let maxBackoff = 4096
    static let firstPause: UInt64 = 1_000_000_000
    static let maxPause: UInt64 = 64_000_000_000

    private(set) var skip = 0
    private(set) var backoff = 0
    /// No yields before this time (monotonic nanoseconds).
    private(set) var pausedUntil: UInt64 = 0
    private(set) var pause: UInt64 = 0

    /// Whether to yield at a partial frame seen at time `now`.
    mutating func shouldYield(now: UInt64) -> Bool {
        if now < pausedUntil { return false }
        if skip > 0 {
            skip -= 1
            return false
        }
        return true
    }

    /// Records what a yield begun at `start` brought: whether more of the frame was
    /// there afterwards, as seen at time `end`.
    mutating func record(gotMore: Bool, start: UInt64, end: UInt64) {
        if end &- start > Self.slowYieldNanoseconds {
            pause = min(max(pause * 2, Self.firstPause), Self.maxPause)
            pausedUntil = end &+ pause
        } else if gotMore {
            backoff = 0
        } else {
            backoff = min(max(backoff * 2, Self.firstBackoff), Self.maxBackoff)
            skip = backoff
        }
    }
}
