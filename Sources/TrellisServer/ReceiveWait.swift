/// Decides how a connection thread waits for its client's next request: asleep in `recv`
/// itself (one system call), or in `poll` first (two).
///
/// A thread asleep in `recv` on a UNIX socket is woken whenever the client reads a reply
/// the thread sent (the kernel wakes the socket's one wait queue for write space too).
/// When the client then takes a while to send its next request, as a Python client does
/// between the requests of a `put` and a `get`, the thread wakes for nothing and sleeps
/// again: upstream's `put` + `get` of a small array cost the daemon ~10 sleeps for its 5
/// requests, ~155 µs of CPU per pair on a 2-core VM. `poll` waits for input alone, so
/// each request costs one sleep (~130 µs per pair), but a client that answers at once
/// never caused the second wake-up and pays the `poll` for nothing (a tight `exists`
/// loop: 19.8 → 22.5 µs per request).
///
/// So the thread measures instead of guessing: one blocking `recv` in ``sampleEvery``
/// counts the times the thread slept in it (the thread's voluntary context switches).
/// Not at all: the request was there. Once: a clean wait. Twice or more: woken for
/// nothing. What decides is how often that happens per receive, since the `poll` is paid
/// on every receive and the needless wake-up only on those: after ``samplesPerVerdict``
/// measured receives, if at least one in ``pollWhenOneIn`` was woken for nothing, the
/// connection waits in `poll` for the next ``pollSpan`` receives, then measures again —
/// at once when that many come before the last sample (measuring costs them).
/// (A client on another CPU that pauses between requests: nearly every wait woken for
/// nothing. The same client sharing the daemon's CPU: it runs while the daemon is
/// preempted, and ~4 % are — `recv` alone costs the daemon 71–72 µs per pair there,
/// `poll` first 72–74.)
struct ReceiveWait {
    enum Plan: Equatable {
        /// Block in `recv`.
        case receive
        /// Block in `recv` and report its sleeps to ``record(sleeps:)``.
        case measuredReceive
        /// Wait in `poll`, then `recv`.
        case pollFirst
    }

    static let sampleEvery = 16
    static let samplesPerVerdict = 32
    static let pollWhenOneIn = 8
    static let pollSpan = 4096

    private(set) var polling: Bool
    /// Receives until the next measured one (receive mode) or until measuring resumes (poll mode).
    private var countdown: Int
    private var samples = 0
    private var wokenForNothing = 0

    /// Starts measuring `recv`, or (`polling`) waiting in `poll` for ``pollSpan`` receives.
    init(polling: Bool = false) {
        self.polling = polling
        countdown = polling ? Self.pollSpan : Self.sampleEvery
    }

    /// How to wait for the next receive.
    mutating func next() -> Plan {
        if polling {
            if countdown > 0 {
                countdown -= 1
                return .pollFirst
            }
            polling = false
            countdown = Self.sampleEvery
        }
        countdown -= 1
        if countdown > 0 { return .receive }
        countdown = Self.sampleEvery
        return .measuredReceive
    }

    /// Records how many times a measured `recv` slept (its voluntary context switches).
    mutating func record(sleeps: Int) {
        samples += 1
        if sleeps > 1 { wokenForNothing += 1 }
        // (enough needless wake-ups for a verdict can come before all the samples: then at
        // once, since measuring costs them)
        let enough = Self.samplesPerVerdict / Self.pollWhenOneIn
        guard samples >= Self.samplesPerVerdict || wokenForNothing >= enough else { return }
        if wokenForNothing >= enough {
            polling = true
            countdown = Self.pollSpan
        }
        samples = 0
        wokenForNothing = 0
    }
}
