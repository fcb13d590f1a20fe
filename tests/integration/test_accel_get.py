"""trellis.accel's get: on a Trellis daemon, ``client.get(...)`` of a DataFrame or a numeric
tensor is read straight from the daemon (get_name, then one get_objects — or one get_data
and one get_buffers where the daemon lacks that extension) and
built over a read-only mapping of the arena. What the reader gets must be what the
upstream client's get returns — value, dtypes, block layout, index, read-only zero-copy
views, the vineyard ndarray type — and everything it does not cover must go the upstream
way. The memory rules: values keep their blobs in use (a deleted object's memory stays
until they are gone), and the uses are released once the last value using them is."""

import gc
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

import harness

sys.path.insert(0, str(harness.REPO_ROOT / "python"))

from test_accel import _arrays, _frames  # noqa: E402  (the same values the builders are tested with)


@pytest.fixture
def accel():
    import trellis.accel as accel

    accel.install()
    yield accel
    accel.uninstall()
    accel.close_connections()


def _direct(mod):
    return mod.stats().get("direct_gets", 0)


def _upstream_get(mod, client, *args, **kw):
    mod.uninstall()
    try:
        return client.get(*args, **kw)
    finally:
        mod.install()


def _memory_usage(socket):
    with harness.RawConn(socket) as c:
        c.register()
        return c.instance_status()["meta"]["memory_usage"]


@pytest.mark.parametrize("i", range(len(_frames())))
def test_a_frame_read_directly_is_the_frame_upstream_reads(daemon, client, accel, i):
    value = _frames()[i]
    oid = client.put(value)
    upstream = _upstream_get(accel, client, oid)
    before = _direct(accel)
    fast = client.get(oid)
    covered = len(value.columns) > 0 and not harness.is_upstream()
    assert _direct(accel) == before + (1 if covered else 0)
    pdt.assert_frame_equal(fast, upstream)
    pdt.assert_frame_equal(fast, value, check_freq=False)
    assert type(fast.index) is type(upstream.index)
    assert [b.mgr_locs.as_array.tolist() for b in fast._mgr.blocks] == \
        [b.mgr_locs.as_array.tolist() for b in upstream._mgr.blocks]
    for block, up in zip(fast._mgr.blocks, upstream._mgr.blocks):
        assert block.values.dtype == up.values.dtype
        assert not block.values.flags.writeable or block.values.size == 0
        assert not block.values.flags.owndata or block.values.size == 0  # views, no copy


@pytest.mark.parametrize("i", range(len(_arrays())))
def test_an_array_read_directly_is_the_array_upstream_reads(daemon, client, accel, i):
    value = _arrays()[i]
    oid = client.put(value)
    upstream = _upstream_get(accel, client, oid)
    before = _direct(accel)
    fast = client.get(oid)
    assert _direct(accel) == before + (0 if harness.is_upstream() else 1)
    assert type(fast) is type(upstream)
    assert fast.dtype == upstream.dtype and fast.shape == upstream.shape
    assert fast.flags["C_CONTIGUOUS"] == upstream.flags["C_CONTIGUOUS"]
    assert fast.flags["F_CONTIGUOUS"] == upstream.flags["F_CONTIGUOUS"]
    assert fast.flags.writeable == upstream.flags.writeable
    np.testing.assert_array_equal(fast, upstream)
    np.testing.assert_array_equal(fast, value)


def _series():
    rng = np.random.default_rng(11)
    return [pd.Series(np.arange(100) * 1.5, name="s"), pd.Series(np.arange(7, dtype="int32")),
            pd.Series(rng.random(50), index=np.arange(100, 150), name=3),
            pd.Series(np.arange(5, dtype="uint8"), index=[0.5, 1.5, 2.5, 3.5, 4.5]),
            pd.Series(np.zeros(0, dtype="float32"), name="empty")]


@pytest.mark.parametrize("i", range(len(_series())))
def test_a_series_read_directly_is_the_series_upstream_reads(daemon, client, accel, i):
    value = _series()[i]
    oid = client.put(value)
    upstream = _upstream_get(accel, client, oid)
    before = _direct(accel)
    fast = client.get(oid)
    assert _direct(accel) == before + (0 if harness.is_upstream() else 1)
    pdt.assert_series_equal(fast, upstream)
    pdt.assert_series_equal(fast, value, check_index_type=False)
    assert type(fast.index) is type(upstream.index)
    assert type(fast.values) is type(upstream.values)
    assert fast.values.flags.writeable == upstream.values.flags.writeable


@pytest.mark.trellis_only
def test_by_name_by_id_string_and_through_vineyard_get(daemon, client, accel):
    import vineyard

    df = pd.DataFrame({"a": np.arange(1000), "b": np.arange(1000) * 0.25})
    oid = client.put(df, name="accel-get-frame", persist=True)
    before = _direct(accel)
    pdt.assert_frame_equal(client.get(name="accel-get-frame"), df)
    pdt.assert_frame_equal(client.get(vineyard.ObjectID(oid)), df)
    pdt.assert_frame_equal(client.get(repr(vineyard.ObjectID(oid))), df)  # "o…", as printed
    old = os.environ.get("VINEYARD_IPC_SOCKET")
    os.environ["VINEYARD_IPC_SOCKET"] = daemon.socket
    try:
        pdt.assert_frame_equal(vineyard.get(name="accel-get-frame"), df)
    finally:
        if old is None:
            del os.environ["VINEYARD_IPC_SOCKET"]
        else:
            os.environ["VINEYARD_IPC_SOCKET"] = old
    assert _direct(accel) == before + 4
    got = client.get(name="accel-get-frame")
    assert getattr(got, "__vineyard_ref").id == oid  # where upstream puts the Object
    assert getattr(got, "__vineyard_client") is client


def test_what_the_fast_get_does_not_cover_goes_the_upstream_way(daemon, client, accel):
    """Strings, a resolver passed in, another resolver in effect, a missing name (the
    upstream client's own exception), TRELLIS_ACCEL=0."""
    import vineyard
    from vineyard.core.resolver import resolver_context

    strings = pd.DataFrame({"s": ["a", "b"], "n": [1, 2]})
    sid = client.put(strings)
    nid = client.put(pd.DataFrame({"n": np.arange(10)}))
    before = _direct(accel)
    pdt.assert_frame_equal(client.get(sid), strings)
    from vineyard.core.resolver import default_resolver_context
    pdt.assert_frame_equal(client.get(nid, resolver=default_resolver_context), pd.DataFrame({"n": np.arange(10)}))
    with resolver_context({"vineyard::DataFrame": lambda obj, resolver: "mine"}):
        assert client.get(nid) == "mine"
    with pytest.raises(vineyard.ObjectNotExistsException):
        client.get(name="no-such-name-anywhere")
    os.environ["TRELLIS_ACCEL"] = "0"
    try:
        pdt.assert_frame_equal(client.get(nid), pd.DataFrame({"n": np.arange(10)}))
    finally:
        del os.environ["TRELLIS_ACCEL"]
    assert _direct(accel) == before


@pytest.mark.trellis_only
def test_values_keep_a_deleted_objects_memory_until_they_are_gone(fresh_daemon, accel):
    """A reader's frame outlives the object's deletion by another client (its bytes stay,
    the memory is not reused); once the frame and its arrays are gone the memory returns
    (released with the reader connection's next request)."""
    d = fresh_daemon
    writer, reader = harness.connect(d.socket), harness.connect(d.socket)
    try:
        baseline = _memory_usage(d.socket)
        df = pd.DataFrame({"a": np.arange(1 << 17), "b": np.arange(1 << 17) * 3})
        oid = writer.put(df)
        first = reader.get(oid)
        second = reader.get(oid)  # two values over the same blobs
        column = first["a"].to_numpy()
        writer.delete(oid, deep=True)
        # the memory stays with the reader's values: another object cannot take it
        other = writer.put(pd.DataFrame({"z": np.full(1 << 18, 7)}))
        pdt.assert_frame_equal(first, df)
        pdt.assert_frame_equal(second, df)
        del first
        gc.collect()
        reader.get(other)  # (a request of the reader's connection: releases go with it)
        np.testing.assert_array_equal(column, df["a"].to_numpy())  # still used by column, second
        pdt.assert_frame_equal(second, df)
        frame_bytes = 2 * (1 << 17) * 8
        assert _memory_usage(d.socket) >= baseline + frame_bytes
        del second, column
        gc.collect()
        reader.get(other)
        writer.delete(other, deep=True)
        gc.collect()
        reader.exists(other)  # whatever the reader's fast path still held goes now
        accel.close_connections()
        assert harness.wait_until(lambda: _memory_usage(d.socket) <= baseline, timeout=20)
    finally:
        harness.disconnect(writer)
        harness.disconnect(reader)


@pytest.mark.trellis_only
def test_a_frame_read_directly_in_another_process_is_the_writers(daemon, client, accel):
    """The reader is a separate process (as a flow step is), reading by name."""
    df = pd.DataFrame({"c%d" % i: np.arange(50_000) * (i + 1) for i in range(8)})
    client.put(df, name="accel-get-cross", persist=True)
    code = r"""
import sys, numpy as np, vineyard
sys.path.insert(0, sys.argv[2])
import trellis.accel as accel
c = vineyard.connect(sys.argv[1])
got = c.get(name="accel-get-cross")
assert accel.stats().get("direct_gets") == 1, accel.stats()
print(int(sum(int(got[k].to_numpy().sum()) for k in got.columns)), got.shape)
"""
    r = subprocess.run([sys.executable, "-c", code, daemon.socket, str(harness.REPO_ROOT / "python")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    total = int(sum(int(df[k].sum()) for k in df.columns))
    assert r.stdout.split()[0] == str(total)


@pytest.mark.trellis_only
def test_names_go_through_the_clients_own_get_name(daemon, client, accel, monkeypatch):
    """A flow step maps names (the run's prefix) by patching Client.get_name: the fast get
    must read the object the mapped name binds, never the one under the bare name."""
    from vineyard.core.client import Client

    mine = pd.DataFrame({"v": np.arange(100)})
    other = pd.DataFrame({"v": -np.arange(100)})
    client.put(mine, name="run-7/accel-x", persist=True)
    client.put(other, name="accel-x", persist=True)
    plain = Client.get_name
    monkeypatch.setattr(Client, "get_name", lambda self, name, wait=False: plain(self, "run-7/" + name, wait))
    before = _direct(accel)
    pdt.assert_frame_equal(client.get(name="accel-x"), mine)
    assert _direct(accel) == before + 1


@pytest.mark.trellis_only
@pytest.mark.parametrize("zero_copy", [False, True])
def test_a_process_that_reads_first_then_writes(daemon, client, zero_copy):
    """The arena's descriptor comes once per connection, with whichever reply is first:
    a process whose first request is a get (a flow step reading its input) must still
    write — copied, and with zero-copy put, in place."""
    df = pd.DataFrame({"c%d" % i: np.arange(200_000) + i for i in range(4)})
    client.put(df, name="accel-read-first-%d" % zero_copy, persist=True)
    code = r"""
import sys, numpy as np, pandas as pd, vineyard
sys.path.insert(0, sys.argv[2])
import trellis.accel as accel
if sys.argv[3] == "1":
    assert accel.zero_copy(sys.argv[1], threshold=1 << 16)
c = vineyard.connect(sys.argv[1])
got = c.get(name="accel-read-first-" + sys.argv[3])
assert accel.stats().get("direct_gets") == 1, accel.stats()
small = pd.DataFrame({"s": np.arange(1000)})          # below any threshold: copied
big = got * 2                                         # new arrays (in the arena with zero-copy)
a, b = c.put(small), c.put(big)
assert accel.stats()["accelerated"] == 2, accel.stats()
print(int(c.get(a)["s"].sum()), int(c.get(b).to_numpy().sum()))
"""
    r = subprocess.run([sys.executable, "-c", code, daemon.socket, str(harness.REPO_ROOT / "python"), str(int(zero_copy))],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(int(np.arange(1000).sum())), str(int((df * 2).to_numpy().sum()))]


@pytest.mark.trellis_only
def test_plain_views_of_values_read_directly_keep_their_memory(daemon_factory, accel):
    """np.asarray, .view(np.ndarray), Series.to_numpy, Index.to_numpy: views that drop
    the vineyard ndarray type must still keep the blob's memory (the daemon must not reuse
    it after a delete while they live)."""
    import vineyard

    d = daemon_factory(size="16Mi")
    writer, reader = harness.connect(d.socket), harness.connect(d.socket)
    try:
        n = 1 << 16  # 512 KiB per array
        tid = writer.put(np.arange(n) * 3)
        sid = writer.put(pd.Series(np.arange(n) * 5.0, index=np.arange(n) + 7))
        fid = writer.put(pd.DataFrame({"a": np.arange(n) * 7}, index=np.arange(n) * 2))
        before = _direct(accel)
        t, s, f = reader.get(tid), reader.get(sid), reader.get(fid)
        assert _direct(accel) == before + 3
        kept = [np.asarray(t), t.view(np.ndarray), s.to_numpy(), s.index.to_numpy(),
                f.index.to_numpy(), np.asarray(f["a"].to_numpy())]
        want = [a.copy() for a in kept]
        del t, s, f
        gc.collect()
        writer.delete([tid, sid, fid], deep=True)
        reader.exists(tid)  # (the reader's connection sends whatever it released)
        for _ in range(64):  # fill the arena: memory freed too early would be reused
            try:
                writer.put(np.full(n // 4, -1))
            except vineyard.NotEnoughMemoryException:
                break
        for a, w in zip(kept, want):
            np.testing.assert_array_equal(a, w)
    finally:
        harness.disconnect(writer)
        harness.disconnect(reader)


@pytest.mark.trellis_only
def test_a_name_is_looked_up_once_when_the_fast_get_steps_aside(daemon, client, accel, monkeypatch):
    from vineyard.core.client import Client

    strings = pd.DataFrame({"s": ["x", "y"]})
    client.put(strings, name="accel-once", persist=True)
    calls = []
    plain = Client.get_name
    monkeypatch.setattr(Client, "get_name", lambda self, name, wait=False: calls.append(name) or plain(self, name, wait))
    pdt.assert_frame_equal(client.get(name="accel-once"), strings)
    assert calls == ["accel-once"]


@pytest.mark.trellis_only
def test_a_frame_whose_column_blobs_lie_one_after_another_is_read_through_one_view(daemon, client, accel, monkeypatch):
    # the builders allocate one column after another: the reader takes one view over them
    # all and gives each column's block its row — the same blocks as upstream's
    value = pd.DataFrame({f"c{i}": np.arange(1000, dtype="int64") * (i + 1) for i in range(8)})
    oid = client.put(value)
    seen = []
    original = accel._adjacent_columns
    monkeypatch.setattr(accel, "_adjacent_columns", lambda view, readers: seen.append(original(view, readers)) or seen[-1])
    fast = client.get(oid)
    upstream = _upstream_get(accel, client, oid)
    assert len(seen) == 1 and seen[0] is not None and seen[0].shape == (8, 1000)
    pdt.assert_frame_equal(fast, upstream)
    pdt.assert_frame_equal(fast, value)
    assert len(fast._mgr.blocks) == len(upstream._mgr.blocks) == 8
    for block in fast._mgr.blocks:
        assert not block.values.flags.writeable and not block.values.flags.owndata
    del fast, seen


def test_columns_that_do_not_lie_one_after_another_are_read_one_by_one(accel):
    # the fast path's conditions, over a view whose blobs are where the test says
    import trellis.accel as mod

    blobs = [{"id": "o%016x" % (0x8000000000000001 + i)} for i in range(3)]

    def readers(dtypes, counts):
        out = []
        for b, dt, n in zip(blobs, dtypes, counts):
            r = lambda view: None  # noqa: E731
            r.column = (b, np.dtype(dt), n)
            out.append(r)
        return out

    buf = np.zeros(1 << 16, dtype=np.uint8)
    hold = mod._ReadHold.__new__(mod._ReadHold)
    hold.blobs = ()

    def view(offsets, size=800):
        where = {int(b["id"][1:], 16): (off, size) for b, off in zip(blobs, offsets)}
        return mod._View(buf, buf.__array_interface__["data"][0], where, hold)

    i8 = ["int64"] * 3
    assert mod._adjacent_columns(view([0, 800, 1600]), readers(i8, [100] * 3)).shape == (3, 100)
    assert mod._adjacent_columns(view([0, 1600, 800]), readers(i8, [100] * 3)) is None  # out of order
    assert mod._adjacent_columns(view([0, 832, 1664]), readers(i8, [100] * 3)) is None  # gaps
    assert mod._adjacent_columns(view([0, 800, 1600]), readers(["int64", "float64", "int64"], [100] * 3)) is None
    assert mod._adjacent_columns(view([0, 800, 1600]), readers(i8, [100, 100, 99])) is None
    assert mod._adjacent_columns(view([0, 0, 0], size=0), readers(i8, [0] * 3)) is None


def _blob_ids(tree, instance):
    """The ids of the blobs of this instance a stored tree refers to, at any depth."""
    out = set()
    for v in tree.values():
        if isinstance(v, dict):
            if v.get("typename") == "vineyard::Blob":
                if int(v.get("instance_id", -1)) == instance:
                    out.add(int(v["id"][1:], 16))
            else:
                out |= _blob_ids(v, instance)
    return out


@pytest.mark.trellis_only
def test_get_objects_returns_the_tree_and_every_blob_it_refers_to_in_one_reply(daemon, client, accel):
    # the get_objects extension: get_data's content and get_buffers' payloads (and the
    # arena's descriptor) for exactly the tree's blobs, each once — a frame whose index
    # and columns are blobs, two of them the same column twice
    df = pd.DataFrame({"a": np.arange(5000), "b": np.arange(5000) * 2.5, "c": np.arange(5000) % 7})
    oid = client.put(df)
    with harness.RawConn(daemon.socket) as c:
        reg = c.register()
        assert "get_objects" in reg["trellis_extensions"]
        plain = c.request({"type": "get_data_request", "id": [int(oid)], "sync_remote": False, "wait": False})
        reply = c.request({"type": "trellis_get_objects_request", "ids": [int(oid)], "sync_remote": True})
        assert reply["type"] == "trellis_get_objects_reply", reply
        if reply["fds"]:
            assert len(c.recv_fd()) == 1
        assert reply["content"] == plain["content"]
        (tree,) = reply["content"].values()
        want = _blob_ids(tree, int(reg["instance_id"]))
        got = [int(p["object_id"]) for p in reply["payloads"]]
        assert len(want) == 4 and sorted(got) == sorted(want)
        assert all(p["is_sealed"] and p["data_size"] > 0 for p in reply["payloads"])
        # an object that is not there: no content, no payloads (and the connection goes on)
        missing = c.request({"type": "trellis_get_objects_request", "ids": [int(oid) + 2]})
        assert missing["content"] is None and missing["payloads"] == [] and missing["fds"] == []
        bad = c.request({"type": "trellis_get_objects_request", "ids": ["x"]})
        assert "code" in bad and "ids" in bad["message"]
        assert c.request({"type": "exists_request", "id": int(oid)})["exists"] is True


@pytest.mark.trellis_only
@pytest.mark.parametrize("combined", [True, False], ids=["get_objects", "get_data+get_buffers"])
def test_the_fast_get_takes_one_round_trip_where_the_daemon_offers_get_objects(daemon, client, accel, combined):
    df = pd.DataFrame({"a": np.arange(10000), "b": np.linspace(0, 1, 10000)})
    oid = client.put(df)
    conn = accel._connection(client)
    if not combined:
        conn.extensions.discard("get_objects")  # as an older Trellis daemon
    sent = []
    original = accel._Connection.pipeline

    def spy(self, messages, *args, **kwargs):
        sent.extend(m["type"] for m in messages)
        return original(self, messages, *args, **kwargs)

    try:
        accel._Connection.pipeline = spy
        before = _direct(accel)
        value = client.get(oid)
    finally:
        accel._Connection.pipeline = original
        conn.extensions.add("get_objects")
    assert _direct(accel) == before + 1
    pdt.assert_frame_equal(value, df)
    reads = [t for t in sent if t != "release_request"]
    assert reads == (["trellis_get_objects_request"] if combined else ["get_data_request", "get_buffers_request"])


@pytest.mark.trellis_only
def test_the_reference_attributes_are_set_as_upstream_sets_them_without_hashing_the_labels(daemon, client, accel):
    # upstream's resolver context setattr()s __vineyard_ref and __vineyard_client; pandas'
    # __setattr__ first looks the name up among the labels (hashing all of them). The fast
    # get sets the same attributes without that look-up — unless a label may be the name
    frame = pd.DataFrame({"a": np.arange(1000), "b": np.arange(1000) * 0.5})
    series = pd.Series(np.arange(1000) * 2, index=np.arange(1000) + 7, name="s")
    odd = pd.DataFrame({"__vineyard_ref": np.arange(10), "x": np.arange(10)})
    for value in (frame, series, odd):
        oid = client.put(value)
        before = _direct(accel)
        fast = client.get(oid)
        assert _direct(accel) == before + 1
        upstream = _upstream_get(accel, client, oid)
        assert sorted(k for k in vars(fast) if k.startswith("__vineyard")) == \
            sorted(k for k in vars(upstream) if k.startswith("__vineyard"))
        if value is odd:
            # (pandas set that column to the reference, for upstream's value and this one)
            assert list(fast.columns) == list(upstream.columns)
            continue
        assert getattr(fast, "__vineyard_ref").id == oid and getattr(fast, "__vineyard_client") is client
        labels = fast.columns if isinstance(fast, pd.DataFrame) else fast.index
        assert "_engine" not in labels._cache


@pytest.mark.trellis_only
def test_a_get_by_name_is_one_request_when_nothing_maps_names(daemon, client, accel):
    # vineyard's own get_name: the daemon resolves the name in the get_objects request
    # itself; a missing name still raises the client's own exception
    import vineyard

    df = pd.DataFrame({"a": np.arange(5000), "b": np.arange(5000) * 0.5})
    client.put(df, name="accel-one-request", persist=True)
    sent = []
    original = accel._Connection.pipeline

    def spy(self, messages, *args, **kwargs):
        sent.extend((m["type"], m.get("name")) for m in messages)
        return original(self, messages, *args, **kwargs)

    accel._Connection.pipeline = spy
    try:
        before = _direct(accel)
        value = client.get(name="accel-one-request")
        assert _direct(accel) == before + 1
        assert [s for s in sent if s[0] != "release_request"] == [("trellis_get_objects_request", "accel-one-request")]
        pdt.assert_frame_equal(value, df)
        assert getattr(value, "__vineyard_ref").id == client.get_name("accel-one-request")
        with pytest.raises(vineyard.ObjectNotExistsException):
            client.get(name="accel-no-such-name")
    finally:
        accel._Connection.pipeline = original
        client.drop_name("accel-one-request")


@pytest.mark.trellis_only
def test_a_frame_whose_index_and_columns_differ_in_length_is_not_built(daemon, client, accel):
    # a tree no builder writes (the index of a 20-row frame under 10-row columns): the fast
    # reader does not build a frame pandas would not; the upstream get decides
    a = client.put(pd.DataFrame({"x": np.arange(10), "y": np.arange(10) * 2}))
    b = client.put(pd.DataFrame({"x": np.arange(20)}))
    tree = harness.stored_tree(daemon.socket, a)
    index_id = harness.stored_tree(daemon.socket, b)["index_"]["id"]

    def strip(t):
        out = {k: v for k, v in t.items() if k not in ("id", "signature", "__timestamp")}
        for k, v in out.items():
            if isinstance(v, dict) and v.get("typename") != "vineyard::Blob":
                out[k] = {"id": v["id"]}  # members by reference
        return out

    forged = strip(tree)
    forged["index_"] = {"id": index_id}
    with harness.RawConn(daemon.socket) as c:
        c.register()
        made = c.request({"type": "create_data_request", "content": forged})
    assert "id" in made, made
    before = accel.stats().get("gets_stepped_aside", 0)
    with pytest.raises(Exception) as fast:
        client.get(made["id"])
    assert accel.stats().get("gets_stepped_aside", 0) == before + 1
    with pytest.raises(Exception) as upstream:
        _upstream_get(accel, client, made["id"])
    assert type(fast.value) is type(upstream.value)
