"""list_objects / list_metadatas: glob and regex on the typename, limit, blobs."""

import numpy as np
import pandas as pd
import pytest
import vineyard


def ids(objs):
    return {o.id for o in objs}


@pytest.fixture
def client(fresh_client):
    """Each test here gets a daemon of its own: listings see the whole store."""
    return fresh_client


@pytest.fixture
def populated(client):
    """A clean store with three tensors and a DataFrame."""
    objs = {
        "i64": client.put(np.arange(3, dtype=np.int64)),
        "f64": client.put(np.arange(3, dtype=np.float64)),
        "i32": client.put(np.arange(5, dtype=np.int32)),
        "df": client.put(pd.DataFrame({"x": np.arange(2, dtype=np.int64)})),
    }
    metas = {k: client.get_meta(v) for k, v in objs.items()}
    blobs = {metas[k]["buffer_"].id for k in ("i64", "f64", "i32")}
    df_meta = metas["df"]
    df_members = {df_meta["__values_-value-0"].id, df_meta["index_"].id}
    df_tensors = {df_meta["__values_-value-0"].id, df_meta["index_"]["value_"].id}
    blobs |= {df_meta["__values_-value-0"]["buffer_"].id, df_meta["index_"]["value_"]["buffer_"].id}
    return dict(objs=objs, blobs=blobs, df_members=df_members, df_tensors=df_tensors)


def test_glob(client, populated):
    o = populated["objs"]
    tensors = {o["i64"], o["f64"], o["i32"]} | populated["df_tensors"]
    assert ids(client.list_objects("vineyard::Tensor*", limit=100)) == tensors
    assert ids(client.list_objects("vineyard::Tensor<int64>", limit=100)) == {
        o["i64"]
    } | populated["df_tensors"]
    assert ids(client.list_objects("vineyard::Tensor<int>", limit=100)) == {o["i32"]}
    # ? is one character: int64 (5) but not double (6) or int (3)
    assert ids(client.list_objects("vineyard::Tensor<?????>", limit=100)) == {
        o["i64"]
    } | populated["df_tensors"]
    assert ids(client.list_objects("vineyard::DataFrame", limit=100)) == {o["df"]}
    assert ids(client.list_objects("*Frame", limit=100)) == {o["df"]}
    assert client.list_objects("nomatch*", limit=100) == []


def test_regex(client, populated):
    o = populated["objs"]
    tensors = {o["i64"], o["f64"], o["i32"]} | populated["df_tensors"]
    assert ids(client.list_objects("vineyard::Tensor<.*>", regex=True, limit=100)) == tensors
    assert ids(client.list_objects("vineyard::Tensor<(int|double)>", regex=True, limit=100)) == {
        o["f64"],
        o["i32"],
    }
    # the whole typename must match
    assert client.list_objects("Tensor", regex=True, limit=100) == []
    assert ids(client.list_objects(".*Tensor.*", regex=True, limit=100)) == tensors
    # an invalid regex matches nothing (no error)
    assert client.list_objects("([", regex=True, limit=100) == []


def test_limit(client, populated):
    all_tensors = client.list_objects("vineyard::Tensor*", limit=100)
    assert len(all_tensors) == 5
    one = client.list_objects("vineyard::Tensor*", limit=1)
    assert len(one) == 1 and one[0].id in ids(all_tensors)
    three = client.list_objects("vineyard::Tensor<.*>", regex=True, limit=3)
    assert len(three) == 3 and ids(three) <= ids(all_tensors)
    # the Python default limit is 5
    assert len(client.list_objects("*")) == 5


def test_blobs_are_listed(client, populated):
    blobs = client.list_objects("vineyard::Blob", limit=100)
    assert ids(blobs) == populated["blobs"]
    assert all(b.typename == "vineyard::Blob" for b in blobs)
    sizes = sorted(b.nbytes for b in blobs)
    assert sizes == sorted([24, 24, 20, 16, 16])  # 3*i64, 3*f64, 5*i32, column, index
    # unsealed blobs are not listed; they are once sealed
    builder = client.create_blob(10)
    assert builder.id not in ids(client.list_objects("vineyard::Blob", limit=100))
    blob = builder.seal(client)
    assert blob.id in ids(client.list_objects("vineyard::Blob", limit=100))


def test_list_metadatas(client, populated):
    o = populated["objs"]
    metas = client.list_metadatas("*", limit=100, nobuffer=True)
    by_id = {m.id: m for m in metas}
    everything = set(o.values()) | populated["df_members"] | populated["df_tensors"] | populated["blobs"]
    assert set(by_id) == everything
    assert by_id[o["df"]].typename == "vineyard::DataFrame"
    assert by_id[o["df"]]["columns_"] == '["x"]'
    assert by_id[o["i32"]].typename == "vineyard::Tensor<int>"
    metas = client.list_metadatas("vineyard::Tensor<double>", limit=10)
    assert [m.id for m in metas] == [o["f64"]]
    assert metas[0]["shape_"] == "[3]"
    assert client.list_metadatas("nomatch", limit=10) == []


def test_clear_empties_listing(client, populated):
    client.clear()
    assert client.list_objects("*", limit=100) == []
    for oid in populated["objs"].values():
        assert not client.exists(oid)
    for blob in populated["blobs"]:
        assert not client.exists(blob)
    assert client.status.memory_usage == 0
    with pytest.raises(vineyard.ObjectNotExistsException):
        client.get(populated["objs"]["i64"])
