import Dispatch

/// A thread parked until the store changes in a way it may care about.
final class Waiter: Sendable {
    let semaphore = DispatchSemaphore(value: 0)

    func wake() { semaphore.signal() }

    /// Waits up to `milliseconds`; returns true if woken.
    func wait(milliseconds: Int) -> Bool {
        semaphore.wait(timeout: .now() + .milliseconds(milliseconds)) == .success
    }
}
