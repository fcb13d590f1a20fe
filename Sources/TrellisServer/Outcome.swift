import TrellisProtocol

/// What the connection loop must do after a request was decided.
enum Outcome {
    /// Write this reply; then send the arena descriptor if `sendArenaFD`.
    case reply(Reply, sendArenaFD: Bool = false)
    /// Write the reply, then the raw bytes of these `(offset, size)` arena ranges (RPC blob reads).
    case replyWithBlobBytes(Reply, ranges: [(offset: Int, size: Int)])
    /// RPC blob creation: write `reply`, read the raw bytes of each range into the arena,
    /// seal the blobs, write `reply` again. If the bytes do not arrive the blobs are
    /// reclaimed with the connection.
    case receiveBlobBytes(Reply, blobs: [ObjectID], ranges: [(offset: Int, size: Int)])
    /// Write nothing, close the connection (`exit_request`).
    case close
    /// Write the reply, then close the connection (`delete_session`).
    case replyThenClose(Reply)
    /// Write nothing and keep reading (requests that upstream never answers are answered
    /// by Trellis, so this is unused for now, but kept explicit).
    case none
}
