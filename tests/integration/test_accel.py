"""trellis.accel: the accelerated builders write exactly the objects the upstream builders
write — the daemon's own metadata trees compared field by field (ids, signatures and
timestamps aside) and the values read back by the upstream client — for every numeric
dtype, array order and shape, index kind and DataFrame block layout they cover; they step
aside (the upstream builder runs) for what they do not cover, and for upstream vineyardd."""

import os
import sys

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

import harness

sys.path.insert(0, str(harness.REPO_ROOT / "python"))

DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
          "float64", "bool"]


@pytest.fixture
def accel():
    import trellis.accel as accel

    accel.install()
    before = accel.stats()
    yield accel, before
    accel.uninstall()
    accel.close_connections()


def _tree(daemon, oid):
    """The stored tree, without what differs between two puts of one value."""
    return harness.normal_tree(harness.stored_tree(daemon.socket, oid))


def _both(daemon, client, accel, value):
    """Puts `value` with the upstream builders and with the accelerated ones; returns both
    ids and whether the second went the accelerated way."""
    mod, _ = accel
    mod.uninstall()
    upstream = client.put(value)
    mod.install()
    before = mod.stats()["accelerated"]
    fast = client.put(value)
    return upstream, fast, mod.stats()["accelerated"] == before + 1


def _arrays():
    rng = np.random.default_rng(7)
    out = []
    for dt in DTYPES:
        base = (rng.random(60) * 100).astype(dt)
        out += [base, base.reshape(6, 10), base.reshape(6, 10).T, base[::3], base.reshape(3, 4, 5)]
    out += [np.zeros(0, dtype="int64"), np.arange(12, dtype=">i4").astype("<i4")]
    return out


@pytest.mark.trellis_only
@pytest.mark.parametrize("inline", [True, False], ids=["inline", "mapped"])
@pytest.mark.parametrize("i", range(len(_arrays())))
def test_arrays_are_written_exactly_as_upstream_writes_them(daemon, client, accel, i, inline, monkeypatch):
    """Both ways a small value is written: in one request, its bytes inline (put_inline),
    and through a mapping of the arena."""
    if not inline:
        monkeypatch.setattr(accel[0], "_INLINE_MAX", 0)
    value = _arrays()[i]
    up, fast, accelerated = _both(daemon, client, accel, value)
    assert accelerated, "the accelerated builder stepped aside for %s %s" % (value.dtype, value.shape)
    assert _tree(daemon, fast) == _tree(daemon, up)
    np.testing.assert_array_equal(client.get(fast), client.get(up))
    np.testing.assert_array_equal(client.get(fast), value)


def _frames():
    n = 1000
    rng = np.random.default_rng(3)
    cols = {dt: (rng.random(n) * 100).astype(dt) for dt in DTYPES}
    mixed = pd.DataFrame(cols)
    from_2d = pd.DataFrame(rng.random((n, 5)), columns=list("abcde"))  # one F-ordered block
    named = pd.DataFrame({"x": np.arange(n), "y": np.arange(n) * 0.5}, index=pd.RangeIndex(n, name="row"))
    int_index = pd.DataFrame({"v": np.arange(10)}, index=np.arange(10, 20))
    float_index = pd.DataFrame({"v": np.arange(4)}, index=[0.5, 1.5, 2.5, 3.5])
    int_names = pd.DataFrame({0: np.arange(5), 1: np.arange(5.0)})
    empty = pd.DataFrame({"a": np.zeros(0, dtype="int64")})
    # row-major blocks gathered a band of rows at a time (several bands, two dtypes of one
    # stride, then more bytes than one thread copies)
    two_blocks = pd.DataFrame(rng.integers(-50, 50, size=(70_000, 4)), columns=list("abcd"))
    two_blocks[list("efgh")] = rng.random((70_000, 4))
    large_2d = pd.DataFrame(rng.random((110_000, 40)), columns=["c%d" % j for j in range(40)])
    return [mixed, from_2d, named, int_index, float_index, int_names, empty, two_blocks, large_2d]


@pytest.mark.trellis_only
@pytest.mark.parametrize("inline", [True, False], ids=["inline", "mapped"])
@pytest.mark.parametrize("i", range(len(_frames())))
def test_frames_are_written_exactly_as_upstream_writes_them(daemon, client, accel, i, inline, monkeypatch):
    # inline: every frame small enough to (the larger ones are mapped whatever the limit)
    monkeypatch.setattr(accel[0], "_INLINE_MAX", (1 << 20) if inline else 0)
    value = _frames()[i]
    up, fast, accelerated = _both(daemon, client, accel, value)
    assert accelerated
    assert _tree(daemon, fast) == _tree(daemon, up)
    pdt.assert_frame_equal(client.get(fast), client.get(up))
    pdt.assert_frame_equal(client.get(fast), value)


@pytest.mark.parametrize("i", range(len(_frames())))
def test_the_accelerated_reader_returns_the_frame_the_upstream_resolver_returns(daemon, client, accel, i):
    """trellis.accel's DataFrame resolver (one zero-copy block per numeric column, no
    per-column trip through the resolver registry) against the upstream one, frame for
    frame, block for block — on upstream vineyardd too (it only reads)."""
    mod, _ = accel
    value = _frames()[i]
    oid = client.put(value)
    mod.uninstall()
    upstream = client.get(oid)
    mod.install()
    before = mod.stats().get("resolved", 0)
    # (a resolver context passed in: the upstream get runs, with this resolver in it —
    # as when the fast get steps aside, e.g. for a blob on another instance)
    from vineyard.core.resolver import default_resolver_context

    fast = client.get(oid, resolver=default_resolver_context)
    assert mod.stats().get("resolved", 0) == before + (1 if len(value.columns) else 0)
    pdt.assert_frame_equal(fast, upstream)
    pdt.assert_frame_equal(fast, value, check_freq=False)
    assert [b.mgr_locs.as_array.tolist() for b in fast._mgr.blocks] == \
        [b.mgr_locs.as_array.tolist() for b in upstream._mgr.blocks]
    for block in fast._mgr.blocks:  # views of the blobs, as upstream's: no copy
        assert not block.values.flags.owndata or block.values.size == 0
    # what it does not cover goes to the upstream resolver
    strings = client.put(pd.DataFrame({"s": ["a", "b"], "n": [1, 2]}))
    before = mod.stats().get("resolved", 0)
    pdt.assert_frame_equal(client.get(strings, resolver=default_resolver_context),
                           pd.DataFrame({"s": ["a", "b"], "n": [1, 2]}))
    assert mod.stats().get("resolved", 0) == before


@pytest.mark.trellis_only
def test_series_and_indexes_are_written_exactly_as_upstream_writes_them(daemon, client, accel):
    for value in [pd.Series(np.arange(100) * 1.5, name="s"), pd.Series(np.arange(7, dtype="int32")),
                  pd.Index(np.arange(9), name="ix"), pd.RangeIndex(5)]:
        up, fast, accelerated = _both(daemon, client, accel, value)
        assert accelerated, type(value)
        assert _tree(daemon, fast) == _tree(daemon, up)
        got = client.get(fast)
        if isinstance(value, pd.Series):
            pdt.assert_series_equal(got, value)
        else:
            assert list(got) == list(value)


def test_what_the_builders_do_not_cover_goes_the_upstream_way(daemon, client, accel):
    """Strings, categoricals, MultiIndex: the upstream builder runs for the object (its
    numeric parts may still go the fast way) and the tree is the upstream one; against
    upstream vineyardd everything goes the upstream way."""
    mod, _ = accel
    values = [
        pd.DataFrame({"s": ["a", "b", "c"], "n": [1, 2, 3]}),
        pd.DataFrame({"c": pd.Categorical(["x", "y", "x"])}),
        pd.DataFrame({"v": [1, 2]}, index=pd.MultiIndex.from_tuples([(1, "a"), (2, "b")])),
        np.array(["a", "bc"], dtype=object),
        np.arange(10),
    ]
    for value in values:
        before = mod.stats()
        up, fast, _ = _both(daemon, client, accel, value)
        assert mod.stats()["stepped_aside"] > before["stepped_aside"] or not harness.is_upstream()
        if harness.is_upstream():
            assert mod.stats()["accelerated"] == before["accelerated"], "accelerated against vineyardd"
        else:
            assert _tree(daemon, fast) == _tree(daemon, up)
        if isinstance(value, pd.DataFrame) and isinstance(value.dtypes.iloc[0], pd.CategoricalDtype):
            continue  # the upstream client cannot read a categorical column back either
        got = client.get(fast)
        if isinstance(value, pd.DataFrame) and not isinstance(value.index, pd.MultiIndex):
            pdt.assert_frame_equal(got, value)
        elif isinstance(value, np.ndarray):
            assert list(got) == list(value)


@pytest.mark.trellis_only
def test_accelerated_objects_persist_get_names_and_free_their_memory(fresh_daemon, fresh_client, accel):
    client = fresh_client
    baseline = client.status.memory_usage
    df = pd.DataFrame({"a": np.arange(1 << 16), "b": np.arange(1 << 16) * 2.0})
    oid = client.put(df, persist=True, name="accel-frame")
    assert client.get_name("accel-frame") == oid
    pdt.assert_frame_equal(client.get(name="accel-frame"), df)
    assert client.status.memory_usage >= baseline + df.memory_usage(index=True).sum() - 1024
    client.delete(oid)
    # the builders' own connection released its blobs: only the readers' uses held them —
    # the upstream client's and trellis.accel's get's (each until its connection goes)
    harness.disconnect(client)
    accel[0].close_connections()
    with harness.RawConn(fresh_daemon.socket) as c:
        c.register()
        assert harness.wait_until(lambda: c.instance_status()["meta"]["memory_usage"] <= baseline, timeout=10)


@pytest.mark.trellis_only
def test_trellis_accel_0_turns_them_off(daemon, client, accel, monkeypatch):
    mod, _ = accel
    monkeypatch.setenv("TRELLIS_ACCEL", "0")
    before = mod.stats()
    client.put(np.arange(10))
    assert mod.stats()["accelerated"] == before["accelerated"]
    assert mod.stats()["stepped_aside"] == before["stepped_aside"] + 1


@pytest.mark.trellis_only
def test_a_forked_child_uses_a_connection_of_its_own(daemon, accel):
    import vineyard

    c = vineyard.connect(daemon.socket)
    c.put(np.arange(4))  # the parent's connection exists now
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child = vineyard.connect(daemon.socket).fork()
            oid = child.put(np.arange(100))
            code = 0 if list(child.get(oid)) == list(range(100)) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    np.testing.assert_array_equal(c.get(c.put(np.arange(3))), np.arange(3))


@pytest.mark.trellis_only
def test_a_put_that_does_not_fit_raises_the_clients_own_error_and_leaves_nothing(daemon_factory, accel):
    import vineyard

    d = daemon_factory(size="64Mi")
    client = harness.connect(d.socket)
    baseline = client.status.memory_usage
    df = pd.DataFrame({"c%d" % i: np.arange(1 << 20) for i in range(12)})  # 96 MiB
    with pytest.raises(vineyard.NotEnoughMemoryException):
        client.put(df)
    assert client.status.memory_usage == baseline
    ok = client.put(df.iloc[:1000])  # and the next one goes through
    pdt.assert_frame_equal(client.get(ok), df.iloc[:1000])
    harness.disconnect(client)


@pytest.mark.trellis_only
def test_an_array_read_from_the_store_is_put_back_the_upstream_way(daemon, client, accel):
    """The upstream builder refers to the blob an array read from the store already lives
    in (no copy). So do the accelerated builders for an array read by trellis.accel's
    get; one the upstream client mapped goes to the upstream builder."""
    from vineyard.core.resolver import default_resolver_context

    mod, _ = accel
    first = client.put(np.arange(1000))
    blob = lambda oid: harness.stored_tree(daemon.socket, oid)["buffer_"]["id"]  # noqa: E731
    view = client.get(first)  # lives in the daemon's shared memory (read by trellis.accel)
    before = mod.stats()
    again = client.put(view)
    assert mod.stats()["accelerated"] == before["accelerated"] + 1
    assert blob(again) == blob(first), "not copied: the same blob"
    np.testing.assert_array_equal(client.get(again), np.arange(1000))
    prefix = client.put(view[:10])  # starts where the blob does: the blob, a shorter tensor
    assert blob(prefix) == blob(first)
    np.testing.assert_array_equal(client.get(prefix), np.arange(10))
    tail = client.put(view[10:])  # does not: copied
    assert blob(tail) != blob(first)
    np.testing.assert_array_equal(client.get(tail), np.arange(10, 1000))
    mapped = client.get(first, resolver=default_resolver_context)  # mapped by the upstream client
    before = mod.stats()
    again = client.put(mapped)
    assert mod.stats()["accelerated"] == before["accelerated"]
    assert blob(again) == blob(first), "not copied: the same blob"


def _tables():
    import pyarrow as pa

    plain = pa.table({"i": pa.array(range(1000), pa.int64()), "f": pa.array(np.arange(1000) * 0.5),
                      "u8": pa.array(np.arange(1000) % 200, pa.uint8()), "b": pa.array(np.arange(1000) % 3 == 0)})
    nulls = pa.table({"x": pa.array([1, None, 3], pa.int32()), "y": pa.array([None, 2.5, None], pa.float64()),
                      "z": pa.array([True, None, False])})
    # the upstream client cannot read float32 columns or empty tables back (its resolvers):
    # their trees are compared, not their values
    f32 = pa.table({"h": pa.array(np.arange(10, dtype=np.float32))})
    batches = pa.concat_tables([plain, plain.slice(10, 100)])  # two batches, the second with an offset
    empty = plain.slice(0, 0)
    return [plain, nulls, batches, empty, f32]


@pytest.mark.trellis_only
@pytest.mark.parametrize("i", range(5))
def test_arrow_tables_are_written_exactly_as_upstream_writes_them(daemon, client, accel, i):
    value = _tables()[i]
    up, fast, accelerated = _both(daemon, client, accel, value)
    assert accelerated
    assert _tree(daemon, fast) == _tree(daemon, up)
    if i in (0, 1, 2):
        assert client.get(fast).equals(client.get(up))
        assert client.get(fast).to_pydict() == value.to_pydict()
    batch = value.to_batches()[0] if value.num_rows else None
    if batch is not None:
        up, fast, accelerated = _both(daemon, client, accel, batch)
        assert accelerated
        assert _tree(daemon, fast) == _tree(daemon, up)


@pytest.mark.trellis_only
def test_a_large_put_maps_its_pages_in_with_one_call_per_run_of_blobs(daemon, client, accel, monkeypatch):
    # a frame of 8 MB columns: the copies' destination pages are populated (MADV_POPULATE_WRITE)
    # in one call over the adjacent blobs, and the frame reads back exactly
    accel, _ = accel
    calls = []
    original = accel._populate

    def spy(conn, payloads):
        before = accel._populate_works
        original(conn, payloads)
        calls.append((before, accel._populate_works, sum(p["data_size"] for p in payloads)))

    monkeypatch.setattr(accel, "_populate", spy)
    value = pd.DataFrame({f"c{i}": np.arange(1 << 20, dtype="int64") + i for i in range(3)})
    oid = client.put(value)
    assert calls and calls[0][2] >= 3 * 8 << 20
    assert calls[0][0] and calls[0][1], "MADV_POPULATE_WRITE failed on this kernel (5.14+ has it)"
    pdt.assert_frame_equal(client.get(oid), value)


def test_copies_join_only_where_both_sides_are_adjacent_and_shares_cover_every_byte_once():
    import trellis.accel as accel

    jobs = [(1000, 50, 10), (1010, 60, 5), (1015, 90, 5), (2000, 95, 7), (2007, 102, 0)]
    # the second joins the first (both ends adjacent); the third's source is elsewhere; the
    # fourth's destination is elsewhere; the empty fifth joins the fourth
    assert accel._copy_runs(jobs) == [(1000, 50, 15), (1015, 90, 5), (2000, 95, 7)]
    rng = np.random.default_rng(3)
    for k in (1, 2, 3, 4, 7):
        runs, d, s = [], 0, 1 << 40
        for n in rng.integers(1, 3 << 20, size=int(rng.integers(1, 9))):
            runs.append((d, s, int(n)))
            d, s = d + int(n) + int(rng.integers(0, 2)) * 64, s + int(n) + 4096
        shares = accel._shares(runs, k)
        assert 1 <= len(shares) <= k
        total = sum(n for _, _, n in runs)
        assert all(sum(n for _, _, n in share) <= -(-total // k) + 4096 for share in shares)
        # in order, nothing twice, nothing skipped: the pieces join back into the runs (the
        # runs' sources are 4 KiB apart, so no two runs join each other)
        assert accel._copy_runs([p for share in shares for p in share]) == runs


@pytest.mark.trellis_only
@pytest.mark.parametrize("threads", ["1", "3"])
def test_a_large_frame_of_several_blocks_is_copied_by_the_threads_asked_for(
        daemon, client, accel, monkeypatch, threads):
    # 40 MB in three blocks of different dtypes (their columns adjacent within a block):
    # the bytes go through `threads` threads and the upstream reader gets the same frame
    import threading

    accel, _ = accel
    monkeypatch.setenv("TRELLIS_COPY_THREADS", threads)
    seen = []
    original = accel._memmove_all

    def spy(share):
        seen.append((threading.get_ident(), sum(n for _, _, n in share)))
        original(share)

    monkeypatch.setattr(accel, "_memmove_all", spy)
    rows = 1 << 20
    rng = np.random.default_rng(11)
    value = pd.DataFrame({"a": rng.integers(0, 1 << 40, rows), "b": rng.random(rows),
                          "c": rng.integers(0, 100, rows).astype("int32"),
                          "d": rng.integers(0, 1 << 40, rows), "e": rng.random(rows)})
    oid = client.put(value)
    # every column (the RangeIndex's values are written by the daemon: range_buffer)
    assert sum(n for _, n in seen) == sum(int(value[c].to_numpy().nbytes) for c in value.columns)
    # one share per thread: this thread copies the first, the pool's threads the others
    # (which of the pool's threads: whichever is free)
    assert len(seen) == int(threads)
    assert [t for t, _ in seen].count(threading.get_ident()) == 1
    accel.uninstall()  # read back the upstream way
    pdt.assert_frame_equal(client.get(oid), value)


@pytest.mark.parametrize("fast", [True, False], ids=["orjson", "json"])
def test_the_wire_json_is_the_json_modules_whatever_writes_it(monkeypatch, fast):
    """Request bodies and replies go through orjson when it is installed (as
    scripts/setup-python.sh installs it) and through the json module otherwise; either way
    the bodies decode to the same values, and what orjson refuses (an int beyond 64 bits,
    a key that is no string, a lone surrogate) takes the json module's path."""
    import json

    import trellis.accel as accel

    if fast:
        pytest.importorskip("orjson")
        assert accel._orjson is not None
    else:
        monkeypatch.setattr(accel, "_orjson", None)
    values = [
        {"type": "create_data_request", "content": {"typename": "vineyard::Tensor<int64>", "shape_": "[600000]",
                                                    "nbytes": 4800000, "ok": True, "none": None, "f": 0.1,
                                                    "u": "\u00e9\u4e2d", "nested": [1, [2, {"k": -3}]]}},
        {"id": (1 << 64) - 1, "neg": -(1 << 63)},
        {"big": 1 << 70},
        {1: "int key"},
    ]
    for v in values:
        body = accel._encode(v)
        assert isinstance(body, bytes)
        assert json.loads(body) == json.loads(json.dumps(v))
        assert accel._decode(body) == json.loads(body)
    lone = b'{"s": "\\ud800"}'
    assert accel._decode(lone) == json.loads(lone)
    # (replies carry no integer beyond 64 bits: the daemon's JSON holds Int64, UInt64 or
    # Double — orjson would read such a literal as a float)


def _range_frames():
    n = 200_000  # a RangeIndex of 1.6 MB: over the size the daemon writes it at
    return [
        pd.DataFrame({"a": np.arange(n) * 2, "b": np.linspace(0, 1, n)}),
        pd.DataFrame({"a": np.arange(n)}, index=pd.RangeIndex(-7, -7 + 3 * n, 3, name="r")),
        pd.DataFrame({"a": np.arange(n)}, index=pd.RangeIndex(n, 0, -1)),
    ]


@pytest.mark.trellis_only
@pytest.mark.parametrize("i", range(3))
def test_a_large_range_index_is_written_by_the_daemon_and_reads_back_as_upstream_writes_it(daemon, client, accel, i):
    # the daemon writes the index's values (range_buffer): the tree is upstream's, field by
    # field, and the upstream reader gets the same frame, index included
    mod, _ = accel
    value = _range_frames()[i]
    sent = []
    original = mod._Connection.send_ahead

    def spy(self, message):
        sent.append(message["type"])
        return original(self, message)

    mod._Connection.send_ahead = spy
    try:
        mod.uninstall()
        up = client.put(_range_frames()[i])  # (upstream's put materialises the index it gets)
        mod.install()
        before = mod.stats()["accelerated"]
        fast = client.put(value)
    finally:
        mod._Connection.send_ahead = original
    assert mod.stats()["accelerated"] == before + 1 and sent == ["trellis_create_range_buffer_request"]
    assert _tree(daemon, fast) == _tree(daemon, up)
    mod.uninstall()
    pdt.assert_frame_equal(client.get(fast), value)
    pdt.assert_series_equal(client.get(client.put(value["a"])), value["a"])  # a Series' index too


@pytest.mark.trellis_only
def test_without_range_buffer_or_when_the_daemon_cannot_the_index_is_copied(daemon, client, accel, monkeypatch):
    mod, _ = accel
    value = _range_frames()[1]
    conn = mod._connection(client)
    conn.extensions.discard("range_buffer")  # as an older Trellis daemon
    try:
        pdt.assert_frame_equal(_upstream_read(mod, client, client.put(value)), value)
    finally:
        conn.extensions.add("range_buffer")
    # the daemon refuses the range (here: a forged request for more than the arena): the
    # writer materialises the index and copies it, as without the extension
    real = mod._Plan.range_tensor

    def too_big(self, start, step, n):
        tensor = real(self, start, step, 1 << 60)
        self.ranges[-1] = (self.ranges[-1][0], self.ranges[-1][1], (start, step, n))
        return tensor

    monkeypatch.setattr(mod._Plan, "range_tensor", too_big)
    pdt.assert_frame_equal(_upstream_read(mod, client, client.put(value)), value)


def _upstream_read(mod, client, oid):
    mod.uninstall()
    try:
        return client.get(oid)
    finally:
        mod.install()


@pytest.mark.trellis_only
def test_a_put_that_steps_aside_after_asking_for_a_range_leaves_nothing_behind(fresh_daemon, accel):
    # the index is planned first (the daemon starts on its values), then a column the
    # builders do not cover: the upstream builder writes the frame; the range blob is
    # dropped. Its fast get steps aside too, after get_objects made the frame's blobs the
    # connection's uses: they are let go at once, so the delete frees the memory
    mod, _ = accel
    client = harness.connect(fresh_daemon.socket)
    sent = []
    original = mod._Connection.send_ahead

    def spy(self, message):
        sent.append(message["type"])
        return original(self, message)

    try:
        baseline = client.status.memory_usage
        value = pd.DataFrame({"a": np.arange(200_000), "s": ["x"] * 200_000})
        before = mod.stats()["stepped_aside"]
        mod._Connection.send_ahead = spy
        try:
            oid = client.put(value)
        finally:
            mod._Connection.send_ahead = original
        assert mod.stats()["stepped_aside"] > before and sent[:1] == ["trellis_create_range_buffer_request"]
        pdt.assert_frame_equal(client.get(oid), value)
        client.delete(oid, deep=True)
        assert harness.wait_until(lambda: client.status.memory_usage <= baseline, timeout=20)
    finally:
        harness.disconnect(client)


@pytest.mark.trellis_only
def test_hostile_range_requests_get_clear_errors_and_the_connection_goes_on(daemon):
    with harness.RawConn(daemon.socket) as c:
        c.register()
        for bad, word in ((-1, "num"), (1 << 62, "range"), ("9", "num"), (1 << 40, "memory")):
            reply = c.request({"type": "trellis_create_range_buffer_request", "start": 0, "step": 1, "num": bad})
            assert "code" in reply, reply
        wrapped = c.request({"type": "trellis_create_range_buffer_request", "start": (1 << 63) - 2, "step": 1 << 62,
                             "num": 4})
        assert wrapped["type"] == "create_buffer_reply" and wrapped["created"]["is_sealed"], wrapped
        if wrapped["fd"] >= 0:
            c.recv_fd()
        assert c.request({"type": "drop_buffer_request", "id": wrapped["id"]})["type"] == "drop_buffer_reply"
        assert c.request({"type": "exists_request", "id": 1})["type"] == "exists_reply"


def test_put_with_persist_and_name_persists_and_names_in_one_request_where_the_daemon_can(daemon, client, accel):
    """``put(value, persist=True, name=…)``: the object comes out persisted and named either
    way; against Trellis (extension ``persist_name``) both in one request after the build,
    against vineyardd the client's own persist and put_name. A second put under the name
    moves it, as put_name does."""
    mod, _ = accel
    name = "accel-persist-name-%d" % os.getpid()
    df = pd.DataFrame({"a": np.arange(100), "b": np.arange(100) * 0.5})
    before = mod.stats()["persisted_named"]
    oid = client.put(df, persist=True, name=name)
    assert mod.stats()["persisted_named"] == before + (0 if harness.is_upstream() else 1)
    assert client.get_name(name) == oid
    assert harness.stored_tree(daemon.socket, oid)["transient"] is False
    pdt.assert_frame_equal(client.get(name=name), df)
    again = client.put(np.arange(7), persist=True, name=name)
    assert again != oid and client.get_name(name) == again
    assert harness.stored_tree(daemon.socket, again)["transient"] is False
    # persist without a name, and a name without persist (upstream warns, binds nothing)
    plain = client.put(np.arange(3), persist=True)
    assert harness.stored_tree(daemon.socket, plain)["transient"] is False
    with pytest.warns(UserWarning):
        client.put(np.arange(3), name=name + "-not")
    with pytest.raises(Exception):
        client.get_name(name + "-not")
    assert mod.stats()["persisted_named"] == before + (0 if harness.is_upstream() else 2)
    client.drop_name(name)
    client.delete([oid, again, plain])


@pytest.mark.trellis_only
def test_persist_name_requests_that_cannot_be_served_get_clear_errors_and_change_nothing(daemon, client):
    """``trellis_persist_request``: a missing object, a blob, a missing or non-string name
    are refused with the daemon's error and leave the object transient and the name
    unbound; the connection goes on serving."""
    oid = client.put(np.arange(5))
    tree = harness.stored_tree(daemon.socket, oid)
    blob = int(tree["buffer_"]["id"][1:], 16)
    name = "persist-name-bad-%d" % os.getpid()
    with harness.RawConn(daemon.socket) as c:
        c.register()
        bad = [
            ({"type": "trellis_persist_request", "id": int(oid) + 2, "name": name}, "subtree"),
            ({"type": "trellis_persist_request", "id": blob, "name": name}, "blobs cannot have name"),
            ({"type": "trellis_persist_request", "id": int(oid)}, "name"),
            ({"type": "trellis_persist_request", "id": int(oid), "name": 7}, "name"),
        ]
        for request, why in bad:
            reply = c.request(request)
            assert reply.get("code", 0) != 0 and why in reply.get("message", ""), (request, reply)
        assert harness.stored_tree(daemon.socket, oid)["transient"] is True
        reply = c.request({"type": "get_name_request", "name": name, "wait": False})
        assert reply.get("code", 0) != 0
        reply = c.request({"type": "trellis_persist_request", "id": int(oid), "name": name})
        assert reply.get("type") == "persist_reply" and reply.get("code", 0) == 0, reply
    assert client.get_name(name) == oid
    assert harness.stored_tree(daemon.socket, oid)["transient"] is False
    client.drop_name(name)
    client.delete([oid])


@pytest.mark.parametrize("threads", [1, 2])
def test_strided_columns_are_gathered_into_c_order_whatever_their_layout(monkeypatch, threads):
    """``_gather`` (no daemon): every destination holds its source's elements in C order —
    a block's columns into adjacent destinations (one 2-D copy per band), in reverse, with
    gaps, a column taken twice, two dtypes of one stride, bands that do not divide the
    rows, N-d and one-element arrays — and nothing outside the destinations is written."""
    import trellis.accel as mod

    monkeypatch.setattr(mod, "_GATHER_BAND", 4096)  # bands of 64..512 rows: many of them
    monkeypatch.setattr(mod, "_COPY_PARALLEL_MIN", 0)
    monkeypatch.setenv("TRELLIS_COPY_THREADS", str(threads))
    rng = np.random.default_rng(11)
    rows = 1000 + 37
    ints = rng.integers(-1 << 40, 1 << 40, size=(rows, 6))
    floats = rng.random((rows, 6))
    small = rng.integers(0, 100, size=(rows, 5)).astype("int16")
    cube = rng.random((4, 5, 6))
    sources = [ints[:, j] for j in range(6)] + [floats[:, j] for j in range(6)] + \
        [small[:, j] for j in (4, 0, 2)] + [ints[:, 3], cube.transpose(2, 0, 1), ints[:1, 2], ints[::7, 1]]
    arena = np.full(1 << 20, 0xAB, dtype=np.uint8)
    layouts = {
        "adjacent": list(range(len(sources))),
        "reversed": list(reversed(range(len(sources)))),
        "shuffled": list(rng.permutation(len(sources))),
    }
    for name, order in layouts.items():
        arena[:] = 0xAB
        offsets, at = {}, 0
        for i in order:
            offsets[i] = at
            at += int(sources[i].nbytes) + (64 if name == "shuffled" and i % 3 == 0 else 0)  # some gaps
        pairs = [(arena[offsets[i]:offsets[i] + src.nbytes].view(src.dtype).reshape(src.shape), src)
                 for i, src in enumerate(sources)]
        mod._gather(pairs)
        touched = np.zeros(arena.size, dtype=bool)
        for i, src in enumerate(sources):
            got = arena[offsets[i]:offsets[i] + src.nbytes]
            assert got.tobytes() == np.ascontiguousarray(src).tobytes(), (name, i)
            touched[offsets[i]:offsets[i] + src.nbytes] = True
        assert (arena[~touched] == 0xAB).all(), name
    # the adjacent columns of one block went as one 2-D copy
    runs = mod._gather_runs([(arena[j * rows * 8:(j + 1) * rows * 8].view("int64"), ints[:, j]) for j in range(6)])
    assert len(runs) == 1 and runs[0][0].shape == (6, rows)
    runs = mod._gather_runs([(arena[0:rows * 8].view("int64"), ints[:, 0]), (arena[0:rows * 8].view("int64"), ints[:, 0])])
    assert len(runs) == 2  # (the same column twice: no step between them)


_PREFIXED_PUT = r"""
import json, sys
import numpy as np, pandas as pd, vineyard
sys.path[:0] = [sys.argv[2], sys.argv[3]]
import trellis_step
import trellis.accel as accel
if sys.argv[4] == "accel-first":
    accel.install(); trellis_step.install(prefix="run-7/")
else:
    trellis_step.install(prefix="run-7/"); accel.install()
c = vineyard.connect(sys.argv[1])
df = pd.DataFrame({"a": np.arange(50), "b": np.arange(50) * 2.0})
oid = c.put(df, persist=True, name="df")
assert c.get_name("df") == oid
back = c.get(name="df")
print(json.dumps({"id": int(oid), "named": accel.stats()["persisted_named"], "equal": bool(back.equals(df))}))
"""


@pytest.mark.parametrize("order", ["accel-first", "prefix-first"])
def test_a_flow_steps_run_prefix_applies_to_the_name_put_binds(daemon, order, tmp_path):
    """In a flow step the run's prefix wraps the client's put_name; ``put(…, persist=True,
    name=…)`` through trellis.accel still binds the prefixed name (in one request where the
    daemon serves ``persist_name``) and persists the object, whichever was installed first."""
    import json
    import subprocess

    script = tmp_path / "prefixed_put.py"
    script.write_text(_PREFIXED_PUT)
    step_dir = harness.REPO_ROOT / "Sources" / "TrellisFlow" / "Python"
    out = subprocess.run(
        [sys.executable, str(script), daemon.socket, str(step_dir), str(harness.REPO_ROOT / "python"), order],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["equal"] and got["named"] == (0 if harness.is_upstream() else 1)
    c = harness.connect(daemon.socket)
    try:
        assert int(c.get_name("run-7/df")) == got["id"]  # the prefixed name, nothing else
        with pytest.raises(Exception):
            c.get_name("df")
        assert harness.stored_tree(daemon.socket, got["id"])["transient"] is False
        c.drop_name("run-7/df")
        from vineyard import ObjectID

        c.delete([ObjectID(got["id"])], deep=True)
    finally:
        harness.disconnect(c)


def _requests_of(mod, monkeypatch):
    """The types of the requests trellis.accel's connections send, in order."""
    sent = []
    original = mod._Connection._send

    def spy(self, messages):
        sent.extend(m["type"] for m in messages)
        return original(self, messages)

    monkeypatch.setattr(mod._Connection, "_send", spy)
    return sent


@pytest.mark.trellis_only
def test_a_small_put_is_one_request_with_its_bytes_and_a_large_one_goes_through_a_mapping(daemon, client, accel,
                                                                                          monkeypatch):
    """put_inline: up to _INLINE_MAX bytes of buffers, the builders send one request (the
    bytes inline) and the object reads back as written; past it, create_buffers then the
    pipelined seal, create_data and release; with the limit at 0 never inline."""
    mod, _ = accel
    assert mod.warm(client)  # (the connection's own register and status first)
    sent = _requests_of(mod, monkeypatch)
    small = pd.DataFrame({"a": np.arange(100), "b": np.linspace(0, 1, 100)})
    oid = client.put(small)
    assert sent == ["trellis_put_request"], sent
    pdt.assert_frame_equal(client.get(oid), small)
    del sent[:]
    large = np.arange((mod._INLINE_MAX // 8) + 1, dtype=np.int64)
    big = client.put(large)
    assert sent[0] == "create_buffers_request" and "trellis_put_request" not in sent, sent
    np.testing.assert_array_equal(client.get(big), large)
    del sent[:]
    monkeypatch.setattr(mod, "_INLINE_MAX", 0)
    again = client.put(small)
    assert "trellis_put_request" not in sent and "create_data_request" in sent, sent
    assert _tree(daemon, again) == _tree(daemon, oid)
    client.delete([oid, big, again])


@pytest.mark.trellis_only
def test_hostile_inline_puts_get_clear_errors_leave_nothing_and_the_connection_goes_on(daemon):
    """``trellis_put_request`` refused — bytes not base64, a placeholder out of range or
    with company, a blob no member refers to, a tree without a typename, more bytes than
    the limit — with the daemon's error; the arena and the object count are as before,
    and the same connection then puts and reads an object."""
    tree = {"typename": "vineyard::Tensor<int64>", "instance_id": 0, "buffer_": {"__trellis_blob": 0}}
    before = daemon.status()
    with harness.RawConn(daemon.socket) as c:
        c.register()
        bad = [
            ({"content": tree, "blobs": ["AQI"]}, "base64"),
            ({"content": tree, "blobs": ["AR=="]}, "base64"),
            ({"content": tree, "blobs": []}, "placeholder"),
            ({"content": dict(tree, buffer_={"__trellis_blob": 0, "x": 1}), "blobs": ["AQ=="]}, "placeholder"),
            ({"content": tree, "blobs": ["AQ==", "Ag=="]}, "not referred to"),
            ({"content": {"instance_id": 0, "b": {"__trellis_blob": 0}}, "blobs": ["AQ=="]}, "typename"),
            ({"content": tree, "blobs": ["A" * (((1 << 20) // 3 + 2) * 4)]}, "inline"),
            ({"content": tree}, "blobs"),
        ]
        for fields, why in bad:
            reply = c.request(dict(fields, type="trellis_put_request"))
            assert harness.is_error(reply) and why in reply.get("message", ""), (why, reply)
        after = daemon.status()
        assert after["memory_usage"] == before["memory_usage"], (before, after)
        reply = c.request({"type": "trellis_put_request", "content": tree, "blobs": ["AQAAAAAAAAACAAAAAAAAAA=="]})
        assert reply.get("type") == "create_data_reply" and not harness.is_error(reply), reply
        oid = reply["id"]
    import vineyard

    v = vineyard.connect(daemon.socket)
    stored = harness.stored_tree(daemon.socket, oid)
    assert stored["buffer_"]["typename"] == "vineyard::Blob"
    blob = int(stored["buffer_"]["id"][1:], 16)
    assert bytes(memoryview(v.get_blob(vineyard.ObjectID(blob)))) == (1).to_bytes(8, "little") + (2).to_bytes(8, "little")
    v.delete([vineyard.ObjectID(oid)])
    v.close()
