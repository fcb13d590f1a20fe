import TrellisProtocol

/// What the connection loop must do after a request was decided.
enum Outcome {
    /// Write this reply; then send the arena descriptor if `sendArenaFD`.
    case reply(JSON, sendArenaFD: Bool = false)
    /// Write the reply, then the raw bytes of these `(offset, size)` arena ranges (RPC blob reads).
    case replyWithBlobBytes(JSON, ranges: [(offset: Int, size: Int)])
    /// Write nothing, close the connection (`exit_request`).
    case close
    /// Write nothing and keep reading (requests that upstream never answers are answered
    /// by Trellis, so this is unused for now, but kept explicit).
    case none
}
