"""Names: put/get by name, waiting for a name, listing, dropping, errors."""

import multiprocessing
import threading
import time

import numpy as np
import pandas as pd
import pytest
import vineyard

import harness
import workers

SPAWN = multiprocessing.get_context("spawn")
MISSING = vineyard.ObjectID("o0000000000000123")


def test_put_persist_name_and_get_by_name(client):
    df = pd.DataFrame({"x": np.arange(4, dtype=np.int64), "y": list("abcd")})
    oid = client.put(df, persist=True, name="names_df")
    assert client.get_name("names_df") == oid
    assert client.get_name("names_df", wait=True) == oid  # exists: returns at once
    pd.testing.assert_frame_equal(client.get(name="names_df"), df)
    meta = client.get_meta(oid)
    assert meta["__name"] == "names_df"
    assert meta["transient"] is False
    assert meta.islocal


def test_name_visible_to_another_connection(client, daemon):
    oid = client.put(np.arange(7), persist=True, name="names_shared")
    other = harness.connect(daemon.socket)
    try:
        assert other.get_name("names_shared") == oid
        assert np.array_equal(other.get(name="names_shared"), np.arange(7))
    finally:
        harness.disconnect(other)


def test_put_name_overwrites(client):
    a = client.put(np.arange(2), persist=True, name="names_over")
    b = client.put(np.arange(3), persist=True)
    client.put_name(b, "names_over")
    assert client.get_name("names_over") == b
    assert client.exists(a)  # the old object is not touched


def test_get_name_wait_released_by_put_from_another_thread(client, daemon):
    waiter = harness.connect(daemon.socket)
    result = {}

    def wait_for_name():
        try:
            result["id"] = waiter.get_name("names_late_thread", wait=True)
        except Exception as e:  # reported below
            result["error"] = e

    t = threading.Thread(target=wait_for_name, daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        assert t.is_alive(), "get_name(wait=True) returned before the name existed: %r" % result
        oid = client.put(np.arange(5), persist=True, name="names_late_thread")
        t.join(10)
        assert not t.is_alive(), "get_name(wait=True) was not released by the put"
        assert "error" not in result, result.get("error")
        assert result["id"] == oid
    finally:
        # a waiter still blocked here (failure) is released when the module's
        # daemon stops; the thread is a daemon thread
        t.join(5)
        harness.disconnect(waiter)


def test_get_name_wait_released_by_put_from_another_process(client, daemon):
    parent, child = SPAWN.Pipe()
    p = SPAWN.Process(
        target=workers.get_name_waiter, args=(daemon.socket, "names_late_proc", child), daemon=True
    )
    p.start()
    child.close()
    try:
        assert parent.poll(60), "waiter did not start"
        msg = parent.recv()
        assert msg[0] == "waiting", msg
        time.sleep(0.3)
        assert not parent.poll(0.2), "waiter returned before the name existed: %r" % (parent.recv(),)
        oid = client.put(np.arange(9), persist=True, name="names_late_proc")
        assert parent.poll(10), "get_name(wait=True) in the other process was not released"
        msg = parent.recv()
        assert msg[0] == "got", msg
        assert msg[1] == int(oid)
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()


def test_list_names_glob_regex_limit(client):
    ids = {}
    for n in ["lst_alpha_1", "lst_alpha_2", "lst_alpha_10", "lst_beta_1", "lst_x/y~z"]:
        ids[n] = client.put(np.arange(2), persist=True, name=n)
    # glob
    assert client.list_names("lst_alpha_*", limit=100) == {
        n: ids[n] for n in ["lst_alpha_1", "lst_alpha_2", "lst_alpha_10"]
    }
    assert client.list_names("lst_*_1", limit=100) == {
        n: ids[n] for n in ["lst_alpha_1", "lst_beta_1"]
    }
    assert client.list_names("lst_alpha_?", limit=100) == {
        n: ids[n] for n in ["lst_alpha_1", "lst_alpha_2"]
    }
    # names are listed as given (with --meta local upstream does not escape / and ~)
    assert client.list_names("lst_x/*", limit=100) == {"lst_x/y~z": ids["lst_x/y~z"]}
    assert client.list_names("nothing_matches_*", limit=100) == {}
    # regex: the whole name must match
    assert client.list_names("lst_alpha_[0-9]", regex=True, limit=100) == {
        n: ids[n] for n in ["lst_alpha_1", "lst_alpha_2"]
    }
    assert client.list_names("lst_alpha_[0-9]+", regex=True, limit=100) == {
        n: ids[n] for n in ["lst_alpha_1", "lst_alpha_2", "lst_alpha_10"]
    }
    assert client.list_names("lst_alpha", regex=True, limit=100) == {}
    assert client.list_names("lst_alpha_.*", regex=False, limit=100) == {}  # not a glob match
    # limit
    limited = client.list_names("lst_*", limit=2)
    assert len(limited) == 2
    assert all(ids[n] == v for n, v in limited.items())
    assert len(client.list_names("lst_*", limit=100)) == 5
    for n in ids:
        client.drop_name(n)


def test_drop_name(client):
    oid = client.put(np.arange(3), persist=True, name="names_drop")
    client.drop_name("names_drop")
    with pytest.raises(vineyard.ObjectNotExistsException):
        client.get_name("names_drop")
    assert client.list_names("names_drop", limit=10) == {}
    assert client.exists(oid)  # the object stays
    assert "__name" not in client.get_meta(oid)
    client.drop_name("names_drop")  # dropping a missing name is not an error


def test_name_errors(client):
    # missing names
    with pytest.raises(vineyard.ObjectNotExistsException, match="failed to find name"):
        client.get_name("names_never_put")
    with pytest.raises(vineyard.ObjectNotExistsException):
        client.get(name="names_never_put")
    # only persistent objects can be named (code 1, Invalid)
    transient = client.put(np.arange(2))
    with pytest.raises(vineyard.InvalidException, match="transient objects cannot have name"):
        client.put_name(transient, "names_transient")
    with pytest.raises(vineyard.ObjectNotExistsException):
        client.get_name("names_transient")
    # naming a missing object (code 12)
    with pytest.raises(vineyard.ObjectNotExistsException, match="doesn't exist"):
        client.put_name(MISSING, "names_ghost")
    # blobs cannot be named (code 1)
    blob = client.get_meta(client.put(np.arange(4), persist=True))["buffer_"].id
    with pytest.raises(vineyard.InvalidException, match="blobs cannot have name"):
        client.put_name(blob, "names_blob")
    # after persist the same transient object can be named
    client.persist(transient)
    client.put_name(transient, "names_transient")
    assert client.get_name("names_transient") == transient
