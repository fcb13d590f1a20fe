"""Streams (`vineyard.io`), driven by the upstream client's own stream API: a writer
process pushing record batches while a reader process pulls them, byte streams with
daemon-allocated chunks, stop (drained or failed) and drop. Runs against upstream
vineyardd too (TRELLIS_DAEMON=vineyardd)."""

import os

import pytest

import harness
import workers


def _vineyard():
    import vineyard
    import vineyard.io  # noqa: F401

    return vineyard


def test_record_batches_flow_from_a_writer_process_to_a_reader_process(daemon, client):
    vineyard = _vineyard()
    from vineyard.io.recordbatch import RecordBatchStream

    stream = RecordBatchStream.new(client, params={"origin": "test"})
    sid = int(stream.id)
    # the reader starts first and waits in pull_next_stream_chunk for the writer's batches
    reader, writer = harness.run_workers_each(
        [(workers.stream_reader, (daemon.socket, sid)), (workers.stream_writer, (daemon.socket, sid, 12, 5000))])
    assert writer["ok"], writer.get("error")
    assert reader["ok"], reader.get("error")
    assert [b[0] for b in reader["batches"]] == [5000] * 12
    assert [b[1] for b in reader["batches"]] == writer["sums"]
    assert [b[2] for b in reader["batches"]] == [str(i) for i in range(12)]
    # the stream's metadata is an ordinary object
    meta = client.get_meta(stream.id)
    assert meta.typename == "vineyard::RecordBatchStream"
    # the reader's connection is gone: as upstream, the daemon dropped the stream with it
    # (its metadata stays until deleted)
    with pytest.raises(vineyard._C.ObjectNotExistsException):
        client.drop_stream(stream.id)
    client.delete(stream.id)
    assert not client.exists(stream.id)


def test_byte_stream_chunks_are_daemon_allocated_and_read_back(fresh_client):
    vineyard = _vineyard()
    from vineyard.io.byte import ByteStream

    client = fresh_client
    stream = ByteStream.new(client, params={"kind": "bytes"})
    writer = stream.open_writer(client)
    payloads = [os.urandom(n) for n in (20, 7, 4096, 1 << 20)]
    for p in payloads:
        view = writer.next(len(p))  # a chunk the daemon allocates in shared memory
        view[:] = p
    writer.finish()
    reader = stream.open_reader(client)
    got = []
    while True:
        try:
            got.append(bytes(reader.next()))
        except StopIteration:
            break
    assert got == payloads
    # read to its end: another pull says drained again
    with pytest.raises(vineyard._C.StreamDrainedException):
        client.next_buffer_chunk(stream.id)
    client.drop_stream(stream.id)
    client.delete(stream.id)


def test_a_stream_opened_twice_in_one_mode_is_refused(client):
    vineyard = _vineyard()
    from vineyard.io.byte import ByteStream

    stream = ByteStream.new(client)
    client.open_stream(stream.id, "w")
    with pytest.raises(vineyard._C.StreamOpenedException):
        client.open_stream(stream.id, "w")
    client.open_stream(stream.id, "r")
    with pytest.raises(vineyard._C.StreamOpenedException):
        client.open_stream(stream.id, "r")
    client.drop_stream(stream.id)
    client.delete(stream.id)


def test_a_failed_stream_fails_its_reader(client):
    vineyard = _vineyard()
    from vineyard.io.byte import ByteStream

    stream = ByteStream.new(client)
    writer = stream.open_writer(client)
    writer.next(16)[:] = b"x" * 16
    writer.fail()
    reader = stream.open_reader(client)
    assert bytes(reader.next()) == b"x" * 16  # what was written before the failure is read
    with pytest.raises(vineyard._C.StreamFailedException):
        reader.next()
    # a stopped stream takes no more chunks and cannot be stopped again
    with pytest.raises(vineyard._C.InvalidStreamStateException):
        client.stop_stream(stream.id, False)
    client.drop_stream(stream.id)
    client.delete(stream.id)


def test_unknown_streams_are_clear_errors(client):
    vineyard = _vineyard()
    missing = vineyard.ObjectID(0x0123456789ABCDEE)
    with pytest.raises(vineyard._C.ObjectNotExistsException):
        client.open_stream(missing, "r")
    with pytest.raises(vineyard._C.ObjectNotExistsException):
        client.drop_stream(missing)
    with pytest.raises(vineyard._C.ObjectNotExistsException):
        client.stop_stream(missing, False)


def test_dropping_a_stream_frees_the_chunks_nobody_read(fresh_daemon, fresh_client):
    from vineyard.io.byte import ByteStream

    client = fresh_client
    baseline = client.status.memory_usage
    stream = ByteStream.new(client)
    writer = stream.open_writer(client)
    for _ in range(8):
        writer.next(1 << 20)[:] = b"\x01" * (1 << 20)
    writer.finish()
    assert client.status.memory_usage >= baseline + 8 * (1 << 20)
    client.drop_stream(stream.id)
    client.delete(stream.id)
    assert harness.wait_until(lambda: client.status.memory_usage <= baseline + 4096, timeout=10), \
        "memory %d, baseline %d" % (client.status.memory_usage, baseline)


def test_a_reader_waiting_on_an_empty_stream_is_woken_by_stop(daemon, client):
    """The reader parks in pull (no chunk yet); the writer's stop ends it with StopIteration."""
    from vineyard.io.recordbatch import RecordBatchStream

    stream = RecordBatchStream.new(client)
    sid = int(stream.id)
    reader, writer = harness.run_workers_each(
        [(workers.stream_reader, (daemon.socket, sid)), (workers.stream_writer, (daemon.socket, sid, 0, 1))])
    assert writer["ok"], writer.get("error")
    assert reader["ok"] and reader["batches"] == [], reader
    client.delete(stream.id)


@pytest.mark.trellis_only
def test_a_chunk_larger_than_the_arena_fails_at_once_even_with_a_backlog(client):
    """A writer parks for room only when a chunk could ever fit: one larger than the whole
    arena is NotEnoughMemory at once, not a wait for a reader (upstream parks it for good)."""
    vineyard = _vineyard()
    from vineyard.io.byte import ByteStream

    stream = ByteStream.new(client)
    writer = stream.open_writer(client)
    writer.next(64)[:] = b"q" * 64
    writer.next(64)[:] = b"r" * 64  # the first chunk is queued: a backlog a reader could free
    with pytest.raises(vineyard._C.NotEnoughMemoryException):
        client.new_buffer_chunk(stream.id, 1 << 42)
    writer.finish()
    client.drop_stream(stream.id)
    client.delete(stream.id)
