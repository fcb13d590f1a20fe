import json, sys
import vineyard
from vineyard.core.client import _is_blob
from vineyard._C import ObjectMeta

clients, copies = {}, {}

def client(sock):
    if sock not in clients:
        clients[sock] = vineyard.connect(sock)
    return clients[sock]

def blobs(meta):
    if _is_blob(meta.id):
        return [meta]
    return [b for _, v in meta.items() if isinstance(v, ObjectMeta) for b in blobs(v)]

def local_bytes(meta, instance, c=None):
    # Blob metas in a tree carry no length; use the object's size when every blob is
    # local, and the local blobs' own sizes when it is split.
    bs = blobs(meta)
    here = [b for b in bs if b.instance_id == instance]
    if len(here) == len(bs):
        return meta.memory_usage or meta.nbytes
    total = 0
    for b in here:
        try:
            total += c.get_blob(b.id).size
        except Exception:
            pass
    return total

def resolve(c, name):
    try:
        return c.get_name(name)
    except Exception:
        return None

def resident(sock, names):
    c = client(sock)
    out = {}
    for n in names:
        ids = [oid for inst, oid in copies.get(n, []) if inst == c.instance_id]
        oid = resolve(c, n)
        if oid is not None:
            ids.append(oid)
        best = None
        for i in ids:
            try:
                b = local_bytes(c.get_meta(i, sync_remote=True), c.instance_id, c)
            except Exception:
                continue
            best = b if best is None else max(best, b)
        if best is not None:
            out[n] = best
    return out

def move(name, src, dst):
    c = client(dst)
    oid = c.get_name(name)
    new = c.migrate(oid)
    copies.setdefault(name, [])
    copies[name].append((client(src).instance_id, oid))
    copies[name].append((c.instance_id, new))
    c.put_name(new, name)
    return local_bytes(c.get_meta(new, sync_remote=True), c.instance_id, c)

def delete(sock, names):
    c = client(sock)
    for n in names:
        ids = [oid for inst, oid in copies.get(n, []) if inst == c.instance_id]
        oid = resolve(c, n)
        if oid is not None:
            try:
                if local_bytes(c.get_meta(oid, sync_remote=True), c.instance_id, c) > 0 or not copies.get(n):
                    ids.append(oid)
            except Exception:
                pass
        for i in set(ids):
            try:
                c.delete(i, deep=True, force=True)
            except Exception:
                pass
        if oid is not None and oid in ids:
            try:
                c.drop_name(n)
            except Exception:
                pass
        copies[n] = [(inst, o) for inst, o in copies.get(n, []) if inst != c.instance_id]

for line in sys.stdin:
    req = json.loads(line)
    try:
        op = req["op"]
        if op == "resident":
            res = resident(req["socket"], req["names"])
        elif op == "move":
            res = move(req["name"], req["from"], req["to"])
        else:
            res = delete(req["socket"], req["names"])
        print(json.dumps({"ok": res}), flush=True)
    except Exception as e:
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}), flush=True)
