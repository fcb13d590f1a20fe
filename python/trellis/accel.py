"""Accelerated builders for the upstream ``vineyard`` client on a Trellis daemon.

``import trellis.accel`` registers builders for numpy arrays, pandas DataFrames, Series
and Indexes, and pyarrow Tables and RecordBatches (numeric and boolean columns) in the
vineyard client's own builder registry, so ``client.put(df, ...)``
— the step code as the tutorial writes it — goes through them. They write the exact
objects the upstream builders write (the same metadata trees, field by field; readers
cannot tell), but:

- all of an object's buffers are allocated in **one** ``create_buffers`` request,
- the bytes are copied with ``memcpy``: adjacent columns (a pandas block's rows, blobs
  allocated one after the other) in one copy, large puts split among a few threads (one
  per usable CPU, at most 4) — not one copy per column pushed through six threads,
- the seals, the whole metadata tree (frame, index, columns: **one** ``create_data``)
  and the releases go in one pipelined round trip — two round trips per object in all.

They step aside — the upstream builder runs, unchanged — for anything they do not
cover (object and string columns, categoricals, extension arrays, MultiIndex, RPC
clients, builder keyword arguments), for a daemon that is not Trellis (upstream
vineyardd: detected once per socket through ``instance_status``), and when
``TRELLIS_ACCEL=0``.

Readers too: ``client.get(...)`` (and ``vineyard.get``) of a DataFrame, Series or numeric
tensor on a Trellis daemon is read straight from the daemon — the client's own
``get_name``, then one ``get_objects`` (a Trellis extension: the tree and its blobs in
one reply; ``get_data`` and ``get_buffers`` where a daemon lacks it) — and built over a read-only mapping
of the arena: the value the upstream resolvers return, without the upstream client's
per-member Python. Anything else goes the upstream way.

Each process keeps one connection of its own per daemon socket (re-opened after a
fork). The blobs it creates are released as soon as they are sealed, so deleting an
object frees its memory at once (the daemon keeps memory a connection still uses); the
blobs a value read the fast way uses are released once the last such value is gone.
"""

from __future__ import annotations

import binascii
import bisect
import contextlib
import functools
import json
import math
import mmap
import os
import select
import socket
import struct
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

__all__ = ["install", "uninstall", "enabled", "installed", "stats", "warm", "close_connections",
           "zero_copy", "zero_copy_off", "zero_copy_from_env", "zero_copy_stats"]

_HEADER = struct.Struct("<Q")
_MAX_REPLY = 256 << 20


class _StepAside(Exception):
    """The accelerated path does not cover this value: use the upstream builder."""


class _DaemonError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__("vineyard error %d: %s" % (code, message))
        self.code = code


# one encoder for every request (json.dumps with arguments makes a new one per call);
# requests are trees of dicts, lists and scalars, never cyclic
_ENCODE = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode

try:  # a seed frame's 25 KB tree: orjson writes it ~10x and reads it ~3x faster than json
    import orjson as _orjson
except ImportError:  # (optional: pip install 'trellis[accel]')
    _orjson = None


def _encode(message: Any) -> bytes:
    """One request's JSON body."""
    if _orjson is not None:
        try:
            return _orjson.dumps(message)
        except TypeError:
            pass  # what orjson refuses (an int beyond 64 bits, a key that is no string) json writes
    return _ENCODE(message).encode()


def _decode(body) -> Any:
    """One reply's JSON body (bytes)."""
    if _orjson is not None:
        try:
            return _orjson.loads(body)
        except _orjson.JSONDecodeError:
            pass  # what orjson refuses (an int beyond 64 bits, a lone surrogate) json reads
    return json.loads(body)


class _Connection:
    """A raw IPC connection to a Trellis daemon (frames of u64le length + JSON).

    The daemon answers a connection's requests strictly in order, so a request whose reply
    (and the descriptors passed with it) is not read to the end — an exception, even
    ``KeyboardInterrupt``, between sending it and having read it all — leaves the stream
    out of step: the connection is then **broken**: it sends nothing more and leaves the
    cache (the next use opens a fresh one). Its socket stays open while anything this
    process has through it lives — values read through it (the daemon keeps their blobs
    while the connection uses them) and zero-copy reservations made through it (the
    daemon would hand their memory out again) — and closes when the last of them goes."""

    def __init__(self, path: str):
        self.path = path
        self.pid = os.getpid()
        # no more requests (a reply was cut short, or close_connections() dropped it)
        self.broken = False
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # replies are waited for in poll, not in a blocking recv: a reader blocked in
        # recv is woken (for nothing) each time the daemon reads one of its requests (the
        # kernel signals the sender's socket writable then), and on a machine of two CPUs
        # that wake-up, paid by the daemon, was a quarter of its CPU per small put+get;
        # poll's wait is woken only by what it asked for (input)
        self.readable = select.poll()
        self.readable.register(self.sock.fileno(), select.POLLIN)
        self.arena: Optional[mmap.mmap] = None
        self.arena_fd = -1
        try:
            self.sock.connect(path)
            self._init(path)
        except BaseException:
            self.broken = True
            self.close()
            raise

    def _init(self, path: str) -> None:
        self.arena_map_size = 0
        self.zc_base = 0  # where trellis._zerocopy mapped the arena (zero-copy put)
        # the reader's fast path: a read-only mapping of the arena, the blobs read through
        # it (data offset -> (blob id, size)), how many live values use each blob, and the
        # holds of values that died (released with this connection's next request)
        self.ro_arena: Optional[mmap.mmap] = None
        self.ro_base = 0
        self.read_blobs: Dict[int, Tuple[int, int]] = {}
        self.read_uses: Dict[int, int] = {}
        self.dead_holds: List[Tuple[int, ...]] = []
        self.skip_replies = 0
        # requests sent ahead whose replies are read when anything else is (in order)
        self.pending: List["_Ticket"] = []
        # requests of numpy's free hook that came while this thread was inside a request
        self.deferred: List[Dict[str, Any]] = []
        self.populated: Optional[bytearray] = None  # 2 MiB chunks of self.arena mapped in
        # re-entrant: a zero-copy reservation may be asked for by numpy on a thread that
        # already holds it
        self.lock = threading.RLock()
        user = os.environ.get("TRELLIS_USERNAME", "")
        password = os.environ.get("TRELLIS_PASSWORD", "")
        reg = self.call({"type": "register_request", "version": "0.24.2", "store_type": 1, "session_id": 0,
                         "username": user, "password": password})
        # Trellis' protocol extensions (vineyardd's register reply has none)
        self.extensions = set(reg.get("trellis_extensions") or [])
        meta = self.call({"type": "instance_status_request"}).get("meta", {})
        # Trellis reports its arena (upstream vineyardd does not): the builders need the
        # Trellis daemon's nested create_data and its memory rule for released blobs.
        self.is_trellis = isinstance(meta, dict) and "free_bytes" in meta and "pages" in meta
        self.instance_id = int(meta.get("instance_id", 0)) if isinstance(meta, dict) else 0

    def close(self) -> None:
        self.broken = True
        try:
            self.sock.close()
        finally:
            # the read-only mapping is not closed: values read through it may live on
            # (each keeps the mmap object); it is unmapped when the last of them goes
            self.ro_arena = None
            if self.arena is not None:
                try:
                    self.arena.close()
                except BufferError:
                    pass  # (a copy into it still being unwound: unmapped when that goes)
                self.arena = None
            if self.arena_fd >= 0:
                os.close(self.arena_fd)
                self.arena_fd = -1

    def __del__(self) -> None:
        # a dropped connection (broken, or left by close_connections() or a fork) closes
        # its socket once nothing that lives uses it (the values and reservations made
        # through it hold it)
        try:
            if getattr(self, "sock", None) is not None and self.sock.fileno() >= 0:
                self.close()
        except Exception:
            pass

    def in_use(self) -> bool:
        """Whether a live value read through this connection, or a zero-copy reservation
        made through it, still needs its socket open (called with the lock held)."""
        self._releases()  # (the holds that died: their uses end with the socket anyway)
        if self.read_uses:
            return True
        return any(r.conn is self for r in list(_reservations.values()))

    @contextlib.contextmanager
    def _whole(self) -> Iterator[None]:
        """Whatever stops the block before its end (an error, an interrupt) leaves replies
        unread or a request half sent: the connection is then broken (``_break``)."""
        complete = False
        try:
            yield
            complete = True
        finally:
            if not complete:
                self._break()

    def _break(self) -> None:
        """A request's reply was not read to the end: nothing more goes on this connection;
        it leaves the cache and closes now, or once nothing uses it."""
        if self.broken and self.sock.fileno() < 0:
            return
        self.broken = True
        _stats["broken_connections"] = _stats.get("broken_connections", 0) + 1
        _forget(self)
        if not self.in_use():
            self.close()

    # -- frames -------------------------------------------------------------------------
    def _releases(self) -> List[Dict[str, Any]]:
        """Release requests for the blobs no live value read through this connection uses
        any more (called with the lock held; the holds only queue themselves, so no
        garbage collection ever sends on the socket)."""
        if not self.dead_holds:
            return []
        out = []
        while self.dead_holds:
            for b in self.dead_holds.pop():
                n = self.read_uses.get(b, 0) - 1
                if n > 0:
                    self.read_uses[b] = n
                    continue
                self.read_uses.pop(b, None)
                out.append({"type": "release_request", "object_id": b})
        if not self.read_uses:
            self.read_blobs.clear()
        elif out:
            gone = {m["object_id"] for m in out}
            for off in [o for o, (b, _) in self.read_blobs.items() if b in gone]:
                del self.read_blobs[off]
        return out

    def let_go(self, hold: "_ReadHold") -> None:
        """Releases `hold`'s blobs now, without waiting for the replies (read, and dropped,
        ahead of the next request's): a value that will not be made (called with the lock
        held)."""
        if hold.blobs:
            self.dead_holds.append(hold.blobs)
            hold.blobs = ()
        if self.dead_holds and not self.broken:
            with self._whole():
                self._send([])

    def _send(self, messages: List[Dict[str, Any]]) -> None:
        releases = self._releases()
        if self.deferred:
            releases, self.deferred = self.deferred + releases, []
        # the releases go first in the same write; their replies are read and dropped
        # ahead of the next reply this connection waits for
        parts = []
        for m in releases + messages:
            body = _encode(m)
            parts.append(_HEADER.pack(len(body)))
            parts.append(body)
        self.sock.sendall(b"".join(parts))
        self.skip_replies += len(releases)

    def _exact(self, n: int) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            self.readable.poll()
            k = self.sock.recv_into(view[got:], n - got)
            if k == 0:
                raise ConnectionError("the daemon closed the connection")
            got += k
        return bytes(buf)

    def _receive(self) -> Dict[str, Any]:
        while self.skip_replies:
            self.skip_replies -= 1
            try:
                self._receive_one()
            except _DaemonError:
                pass
        return self._receive_one()

    def _receive_one(self) -> Dict[str, Any]:
        (n,) = _HEADER.unpack(self._exact(8))
        if n > _MAX_REPLY:
            raise ConnectionError("reply of %d bytes is larger than %d" % (n, _MAX_REPLY))
        reply = _decode(self._exact(n))
        code = reply.get("code", 0) if isinstance(reply, dict) else 0
        if code:
            raise _DaemonError(code, reply.get("message", ""))
        return reply

    def call(self, message: Dict[str, Any], fds: bool = False) -> Dict[str, Any]:
        return self.pipeline([message], fds)[0]

    def send_ahead(self, message: Dict[str, Any]) -> "_Ticket":
        """Sends `message` now; its reply is read when the ticket is redeemed or when any
        other request's is (replies come in order), with the descriptors it announces.
        The daemon works on it meanwhile."""
        with self.lock:
            if self.broken:
                raise ConnectionError("this connection to %s was dropped" % self.path)
            ticket = _Ticket(self)
            with self._whole():
                self._send([message])
            self.pending.append(ticket)
            return ticket

    def _drain(self) -> None:
        """Reads the replies of the requests sent ahead (called with the lock held)."""
        with self._whole():
            while self.pending:
                ticket = self.pending[0]
                try:
                    reply = self._receive()
                    self._adopt_fds(reply)
                    ticket.reply = reply
                except _DaemonError as e:  # (a whole reply, read)
                    ticket.error = e
                self.pending.pop(0)

    def pipeline(self, messages: List[Dict[str, Any]], fds: bool = False) -> List[Dict[str, Any]]:
        """Sends every request at once and reads the replies in order (the daemon answers
        one connection's requests strictly in order). All are read even if one fails; with
        `fds`, so are the descriptors a reply announces (the arena's). Anything that stops
        this before every reply is read breaks the connection."""
        if not messages:
            return []
        if self.broken:
            raise ConnectionError("this connection to %s was dropped" % self.path)
        with self._whole():
            if self.pending:
                self._drain()
            self._send(messages)
            replies, error = [], None
            for _ in messages:
                try:
                    reply = self._receive()
                except _DaemonError as e:  # (a whole reply, read)
                    error = error or e
                    replies.append({})
                    continue
                if fds:
                    self._adopt_fds(reply)
                replies.append(reply)
        if error is not None:
            raise error
        return replies

    def _adopt_fds(self, reply: Dict[str, Any]) -> None:
        """Receives the descriptors `reply` announces: the arena's, kept the first time
        (with the size to map from its payloads), closed after that."""
        payloads = reply.get("payloads") or []
        announced = reply.get("fds") or []
        if not announced and isinstance(reply.get("fd"), int) and reply["fd"] >= 0:
            # (create_buffer_reply's form: one "fd", the payload under "created")
            announced, payloads = [reply["fd"]], [reply.get("created") or {}]
        for _ in announced:
            fd = self._receive_fd()
            if self.arena_fd >= 0:
                os.close(fd)
                continue
            self.arena_fd = fd
            self.arena_map_size = next((p["map_size"] for p in payloads if p["data_size"] > 0), 8) - 8

    def _receive_fd(self) -> int:
        _, fds, _, _ = socket.recv_fds(self.sock, 1, 1)
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise ConnectionError("expected one descriptor from the daemon, got %d" % len(fds))
        return fds[0]

    # -- blobs ----------------------------------------------------------------------------
    def create_buffers(self, sizes: List[int]) -> List[Dict[str, Any]]:
        # (one carrier per descriptor announced — Trellis: the arena, once)
        reply = self.call({"type": "create_buffers_request", "num": len(sizes), "sizes": sizes}, fds=True)
        payloads = reply["payloads"]
        if self.arena is None and self.arena_fd >= 0 and any(p["data_size"] > 0 for p in payloads):
            # (the descriptor may have come with a get's reply, on the reader's path)
            self.arena = mmap.mmap(self.arena_fd, self.arena_map_size, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE)
        return payloads


class _Ticket:
    """The reply to come of a request sent ahead (``_Connection.send_ahead``)."""

    __slots__ = ("conn", "reply", "error")

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn
        self.reply: Optional[Dict[str, Any]] = None
        self.error: Optional[BaseException] = None

    def redeem(self) -> Dict[str, Any]:
        """The reply (read now if it has not been); the daemon's error raised."""
        with self.conn.lock:
            if self.reply is None and self.error is None:
                if self not in self.conn.pending:
                    raise ConnectionError("the connection was dropped before the reply came")
                self.conn._drain()
        if self.error is not None:
            raise self.error
        assert self.reply is not None
        return self.reply


_connections: Dict[str, _Connection] = {}
# re-entrant: a connection that breaks while being opened (under it) drops itself
_connections_lock = threading.RLock()
_stats = {"accelerated": 0, "stepped_aside": 0, "persisted_named": 0}


def _connection(client) -> _Connection:
    path = getattr(client, "ipc_socket", None)
    if not path or not getattr(client, "is_ipc", True):
        raise _StepAside("not an IPC client")
    return _connection_at(path)


def _forget(conn: _Connection) -> None:
    """Takes `conn` out of the cache (if it is still the one there)."""
    with _connections_lock:
        if _connections.get(conn.path) is conn:
            del _connections[conn.path]


def _connection_at(path: str) -> _Connection:
    with _connections_lock:
        c = _connections.get(path)
        if c is not None and (c.pid != os.getpid() or c.broken):
            # a forked child must not share its parent's socket: open its own
            _connections.pop(path, None)
            c = None
        if c is None:
            c = _Connection(path)
            _connections[path] = c
    if not c.is_trellis:
        raise _StepAside("not a Trellis daemon")
    return c


# -- the metadata trees, as the upstream builders write them --------------------------------

def _to_json(value: Any) -> str:
    from vineyard.data.utils import to_json

    if type(value) is tuple or type(value) is str:
        return _to_json_memo(value)
    return to_json(value)


@functools.lru_cache(maxsize=1024, typed=True)
def _to_json_memo(value) -> str:  # shapes and orders: the same few strings over and over
    from vineyard.data.utils import to_json

    return to_json(value)


@functools.lru_cache(maxsize=256)
def _dtype_facts(dtype) -> Tuple[str, str, str]:
    """(the C++ type name, ``dtype.name``, ``dtype.str``) — each a slow property in numpy."""
    from vineyard.data.utils import normalize_cpptype

    return normalize_cpptype(dtype), dtype.name, dtype.str


@functools.lru_cache(maxsize=256)
def _tensor_facts(dtype) -> Tuple[str, str, str]:
    """A tensor's typename, ``dtype.name`` and ``dtype.str``."""
    cpptype, name, typestr = _dtype_facts(dtype)
    return "vineyard::Tensor<%s>" % cpptype, name, typestr


_NUMERIC_KINDS = set("biuf")


class _Plan:
    """Arrays to copy into blobs and the metadata trees that refer to them."""

    def __init__(self, client=None, conn: Optional[_Connection] = None) -> None:
        self.conn = conn  # the connection the objects are written through
        # RangeIndex blobs the daemon writes meanwhile (range_buffer): (ticket, slot, arange)
        self.ranges: List[Tuple[_Ticket, Dict[str, Any], Tuple[int, int, int]]] = []
        # numpy arrays, one blob each, its bytes in C order (a strided one is gathered)
        self.arrays: List[Any] = []
        # the array each one's memory belongs to (made read-only when published in place)
        self.owners: List[Any] = []
        self.slots: List[Dict[str, Any]] = []  # each array's blob member, filled in by _write
        self.client = client
        # this process's connection that reads the fast way from the client's daemon
        # (looked up once: ``client.ipc_socket`` is slow)
        self.reader = None
        if client is not None and _connections:
            self.reader = _connections.get(getattr(client, "ipc_socket", None) or "")

    def blob(self, array, owner=None) -> Dict[str, Any]:
        """A placeholder member for `array`'s blob, filled in (in place) once allocated."""
        self.arrays.append(array)
        self.owners.append(owner)
        slot: Dict[str, Any] = {"__trellis_blob": len(self.arrays) - 1}
        self.slots.append(slot)
        return slot

    def tensor(self, value, owner=None) -> Dict[str, Any]:
        import numpy as np

        if not isinstance(value, np.ndarray) or value.dtype.kind not in _NUMERIC_KINDS or value.dtype.hasobject:
            raise _StepAside("not a numeric numpy array")
        if value.dtype.byteorder not in ("=", "|", "<"):
            raise _StepAside("big-endian array")
        # as upstream's builder: "C" unless C-contiguous fails, and the bytes in C order
        # (np.ascontiguousarray) whatever the recorded order — copied in C order straight
        # into the blob (_copy_in), not through a contiguous copy of its own first
        contiguous = value.flags["C_CONTIGUOUS"]
        order = "C" if contiguous else "F"
        data = value
        buffer = None
        if contiguous and data.nbytes and self.client is not None:
            # memory that already is a vineyard blob (an array read from the store): the
            # upstream builder refers to that blob instead of copying it; so does this one
            # for an array read the fast way (it starts where its blob does), and leaves
            # the ones the upstream client mapped to the upstream builder
            ptr = data.__array_interface__["data"][0]
            buffer = _read_blob_member(self.reader, ptr, int(data.nbytes))
            finder = getattr(self.client, "find_shared_memory", None)
            if buffer is None and finder is not None and finder(ptr) is not None:
                raise _StepAside("the array is in shared memory already")
        typename, name, typestr = _tensor_facts(value.dtype)
        return {
            "typename": typename,
            "shape_": _to_json(value.shape),
            "partition_index_": "[]",  # (to_json([]))
            "nbytes": int(value.nbytes),
            "order_": '"C"' if order == "C" else '"F"',  # (to_json(order))
            "value_type_": name,
            "value_type_meta_": typestr,
            "buffer_": buffer if buffer is not None else self.blob(data, owner if owner is not None else value),
        }

    def index(self, value) -> Dict[str, Any]:
        import pandas as pd

        if isinstance(value, pd.MultiIndex) or not isinstance(value, pd.Index):
            raise _StepAside("index kind")
        if isinstance(value, pd.RangeIndex) and len(value) * 8 >= _RANGE_MIN and "_data" not in value._cache \
                and self.conn is not None and "range_buffer" in self.conn.extensions:
            # vineyard stores a RangeIndex as its values: the daemon writes them while this
            # plans the rest (a 600,000-row frame's index: ~0.8 ms of arange, a reservation
            # and a copy here otherwise). Not when pandas has materialised it already.
            return {
                "typename": "vineyard::Index",
                "name": _to_json(value.name),
                "value_type_": "int64",
                "value_": self.range_tensor(value.start, value.step, len(value)),
            }
        values = value.to_numpy()
        return {
            "typename": "vineyard::Index",
            "name": _to_json(value.name),
            "value_type_": value.dtype.name,
            "value_": self.tensor(values),
        }

    def range_tensor(self, start: int, step: int, n: int) -> Dict[str, Any]:
        """The tensor of `n` int64 values `start, start + step, …`, written by the daemon."""
        assert self.conn is not None
        slot: Dict[str, Any] = {"__trellis_range": len(self.ranges)}
        ticket = self.conn.send_ahead(
            {"type": "trellis_create_range_buffer_request", "start": int(start), "step": int(step), "num": int(n)})
        self.ranges.append((ticket, slot, (int(start), int(step), int(n))))
        return {
            "typename": "vineyard::Tensor<int64>",
            "shape_": _to_json((int(n),)),
            "partition_index_": "[]",
            "nbytes": int(n) * 8,
            "order_": '"C"',
            "value_type_": "int64",
            "value_type_meta_": "<i8",
            "buffer_": slot,
        }

    def abandon(self) -> None:
        """Drops what the daemon made for a plan that is not written (the builders stepped
        aside after asking for a range)."""
        made = []
        for ticket, _, _ in self.ranges:
            try:
                made.append(int(ticket.redeem()["id"]))
            except (_DaemonError, OSError, ConnectionError):
                pass
        self.ranges = []
        if made and self.conn is not None:
            _drop_quietly(self.conn, made)

    def series(self, value) -> Dict[str, Any]:
        values = value._values
        return {
            "typename": "vineyard::Series",
            "name": _to_json(value.name),
            "index_": self.index(value.index),
            "value_": self.tensor(value.to_numpy(), owner=values if hasattr(values, "flags") else None),
        }

    def dataframe(self, value) -> Dict[str, Any]:
        import numpy as np
        from vineyard.data.utils import expand_slice

        columns: List[Any] = [None] * len(value.columns)
        owners: List[Any] = [None] * len(value.columns)
        for block in value._mgr.blocks:
            slices = list(expand_slice(block.mgr_locs.indexer))
            values = block.values
            if not isinstance(values, np.ndarray):
                raise _StepAside("extension array column")
            if values.ndim == 1:
                if len(slices) != 1:
                    raise _StepAside("block layout")
                columns[slices[0]] = values
                owners[slices[0]] = values
            else:
                for i, column_index in enumerate(slices):
                    columns[column_index] = values[i]
                    owners[column_index] = values
        if any(c is None for c in columns):
            raise _StepAside("block layout")
        tree: Dict[str, Any] = {
            "typename": "vineyard::DataFrame",
            "columns_": _to_json(value.columns.values.tolist()),
            "index_": self.index(value.index),
        }
        for i, name in enumerate(value.columns):
            tree["__values_-key-%d" % i] = _to_json(name)
            tree["__values_-value-%d" % i] = self.tensor(columns[i], owner=owners[i])
        tree["nbytes"] = 0
        tree["__values_-size"] = len(value.columns)
        tree["partition_index_row_"] = -1
        tree["partition_index_column_"] = -1
        tree["row_batch_index_"] = 0
        return tree


    # -- pyarrow ---------------------------------------------------------------------------
    def arrow_buffer(self, buf) -> Dict[str, Any]:
        import numpy as np

        if buf is None or buf.size == 0:
            return self.blob(np.empty(0, dtype=np.uint8))
        finder = getattr(self.client, "find_shared_memory", None)
        if finder is not None and finder(buf.address) is not None:
            raise _StepAside("the buffer is in shared memory already")
        return self.blob(np.frombuffer(buf, dtype=np.uint8))

    def arrow_array(self, array) -> Dict[str, Any]:
        import pyarrow as pa

        t = array.type
        if pa.types.is_boolean(t):
            typename = "vineyard::BooleanArray"
        elif pa.types.is_integer(t) or pa.types.is_floating(t):
            typename = "vineyard::NumericArray<%s>" % t
        else:
            raise _StepAside("arrow type %s" % t)
        buffers = array.buffers()
        return {
            "typename": typename,
            "length_": len(array),
            "null_count_": array.null_count,
            "offset_": array.offset,
            "buffer_": self.arrow_buffer(buffers[1]),
            "null_bitmap_": self.arrow_buffer(buffers[0]),
            "nbytes": array.nbytes,
        }

    def schema(self, schema) -> Dict[str, Any]:
        import pyarrow as pa
        from vineyard.data.arrow import _resize_arrow_type, json_from_arrow_buffer

        fields = [pa.field(n, _resize_arrow_type(t)) for n, t in zip(schema.names, schema.types)]
        serialized = pa.schema(fields, schema.metadata).serialize()
        return {
            "typename": "vineyard::SchemaProxy",
            "schema_binary_": json.dumps(json_from_arrow_buffer(serialized)),
            "nbytes": len(serialized),
        }

    def record_batch(self, batch) -> Dict[str, Any]:
        tree: Dict[str, Any] = {
            "typename": "vineyard::RecordBatch",
            "row_num_": batch.num_rows,
            "column_num_": batch.num_columns,
            "__columns_-size": batch.num_columns,
            "schema_": self.schema(batch.schema),
        }
        for i in range(batch.num_columns):
            tree["__columns_-%d" % i] = self.arrow_array(batch.column(i))
        tree["nbytes"] = batch.nbytes
        return tree

    def table(self, table) -> Dict[str, Any]:
        batches = table.to_batches()
        tree: Dict[str, Any] = {
            "typename": "vineyard::Table",
            "num_rows_": table.num_rows,
            "num_columns_": table.num_columns,
            "batch_num_": len(batches),
            "partitions_-size": len(batches),
            "schema_": self.schema(table.schema),
        }
        for i, batch in enumerate(batches):
            tree["partitions_-%d" % i] = self.record_batch(batch)
        tree["nbytes"] = table.nbytes
        return tree


def _finish(tree: Dict[str, Any], instance_id: int) -> None:
    """Adds what ``create_metadata`` adds to every new object, recursively."""
    for v in tree.values():
        if type(v) is dict and "typename" in v and "instance_id" not in v:
            _finish(v, instance_id)
    tree.setdefault("instance_id", instance_id)
    tree.setdefault("transient", True)
    tree.setdefault("global", False)
    tree.setdefault("nbytes", 0)


_MADV_POPULATE_WRITE = 23  # Linux 5.14 (not in Python 3.11's mmap module)
_POPULATE_MIN = 4 << 20
_populate_works = True


_POPULATE_CHUNK = 2 << 20


def _populate(conn: "_Connection", payloads: List[Dict[str, Any]]) -> None:
    """Maps in, with one call per run of adjacent blobs, the pages the copies are about to
    write: a process that has just mapped the arena would otherwise take one page fault per
    4 KiB written (a third of a large put's time). Only the 2 MiB chunks of the arena this
    connection has not populated before (walking pages already mapped costs ~20 ms per
    GiB). Small puts, and kernels without MADV_POPULATE_WRITE, skip it."""
    global _populate_works
    if not _populate_works or conn.arena is None:
        return
    size = len(conn.arena)
    if conn.populated is None:
        conn.populated = bytearray((size + _POPULATE_CHUNK - 1) // _POPULATE_CHUNK)
    chunks = set()
    for p in payloads:
        if p["data_size"] >= _POPULATE_MIN:
            start, end = int(p["data_offset"]), min(size, int(p["data_offset"]) + int(p["data_size"]))
            chunks.update(c for c in range(start // _POPULATE_CHUNK, (end - 1) // _POPULATE_CHUNK + 1)
                          if not conn.populated[c])
    runs: List[List[int]] = []
    for c in sorted(chunks):
        if runs and runs[-1][1] == c:
            runs[-1][1] = c + 1
        else:
            runs.append([c, c + 1])
    for first, last in runs:
        start, end = first * _POPULATE_CHUNK, min(size, last * _POPULATE_CHUNK)
        try:
            conn.arena.madvise(_MADV_POPULATE_WRITE, start, end - start)
        except (OSError, ValueError):
            _populate_works = False  # (an older kernel: EINVAL)
            return
        conn.populated[first:last] = b"\x01" * (last - first)


_COPY_PARALLEL_MIN = 32 << 20  # below this, one thread copies (a thread hand-off costs more)
_copy_pool: Optional[Tuple[int, Any]] = None  # (pid, ThreadPoolExecutor)
_copy_pool_lock = threading.Lock()


def _copy_threads(nbytes: int) -> int:
    """How many threads copy `nbytes`: one below _COPY_PARALLEL_MIN, else one per usable
    CPU (at most 4; ``TRELLIS_COPY_THREADS`` overrides)."""
    if nbytes < _COPY_PARALLEL_MIN:
        return 1
    env = os.environ.get("TRELLIS_COPY_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return min(int(env), 16)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


def _copy_executor():
    """The process's copy threads (made again after a fork: the parent's are not here)."""
    global _copy_pool
    with _copy_pool_lock:
        if _copy_pool is None or _copy_pool[0] != os.getpid():
            from concurrent.futures import ThreadPoolExecutor

            _copy_pool = (os.getpid(), ThreadPoolExecutor(max_workers=3, thread_name_prefix="trellis-copy"))
        return _copy_pool[1]


def _copy_runs(jobs: List[Tuple[int, int, int]]) -> List[Tuple[int, int, int]]:
    """(destination, source, bytes) copies with neighbours on both sides joined into one:
    a frame's columns are the rows of one block, and its blobs are allocated one after
    the other — a few large copies run at memory speed where many 5 MB ones do not."""
    runs: List[List[int]] = []
    for dst, src, n in jobs:
        if runs and runs[-1][0] + runs[-1][2] == dst and runs[-1][1] + runs[-1][2] == src:
            runs[-1][2] += n
        else:
            runs.append([dst, src, n])
    return [(d, s, n) for d, s, n in runs]


def _shares(runs: List[Tuple[int, int, int]], k: int) -> List[List[Tuple[int, int, int]]]:
    """`runs` cut into `k` lists of about equal bytes (a run may be cut, at 4 KiB)."""
    total = sum(n for _, _, n in runs)
    per = -(-total // k)
    per = -(-per // 4096) * 4096
    shares: List[List[Tuple[int, int, int]]] = [[]]
    room = per
    for d, s, n in runs:
        while n > 0:
            if room == 0:
                shares.append([])
                room = per
            take = min(n, room)
            shares[-1].append((d, s, take))
            d, s, n, room = d + take, s + take, n - take, room - take
    return shares


def _memmove_all(share: List[Tuple[int, int, int]]) -> None:
    import ctypes

    for d, s, n in share:
        ctypes.memmove(d, s, n)  # (ctypes lets the GIL go: the threads copy at once)


_GATHER_BAND = 256 << 10  # bytes of a strided block's rows copied out at once


def _ptr(array) -> int:
    return int(array.__array_interface__["data"][0])


def _gather_runs(members: List[Tuple[Any, Any]]) -> List[Tuple[Any, Any]]:
    """1-D (destination, source) pairs of one dtype, stride and length, as 2-D views where
    the sources lie at equal steps and so do their destinations (a block's adjacent
    columns copied into blobs allocated one after the other): row j of each view is
    exactly pair j's elements, so one copy call moves all of a band's columns."""
    from numpy.lib.stride_tricks import as_strided

    members = sorted(members, key=lambda m: _ptr(m[1]))
    out: List[Tuple[Any, Any]] = []
    i = 0
    while i < len(members):
        j = i + 1
        if j < len(members):
            ds = _ptr(members[j][1]) - _ptr(members[i][1])
            dd = _ptr(members[j][0]) - _ptr(members[i][0])
            while j < len(members) and ds != 0 and dd != 0 \
                    and _ptr(members[j][1]) - _ptr(members[j - 1][1]) == ds \
                    and _ptr(members[j][0]) - _ptr(members[j - 1][0]) == dd:
                j += 1
        if j - i == 1:
            out.append(members[i])
        else:
            dst, src = members[i]
            shape = (j - i, src.shape[0])
            out.append((as_strided(dst, shape=shape, strides=(dd, dst.strides[0])),
                        as_strided(src, shape=shape, strides=(ds, src.strides[0]), writeable=False)))
        i = j
    return out


def _gather_bands(runs: List[Tuple[Any, Any]], bands: List[Tuple[int, int]]) -> None:
    import numpy as np

    for r0, r1 in bands:
        for dst, src in runs:
            np.copyto(dst[..., r0:r1], src[..., r0:r1])  # (numpy lets the GIL go)


def _gather(pairs: List[Tuple[Any, Any]]) -> None:
    """Copies strided arrays into their C-ordered destinations. A frame made from a
    row-major 2-D array keeps its columns in one block whose rows are the frame's rows:
    each column is every n-th element, and copied one at a time every column reads the
    whole block from memory again (46 columns: 46 times its bytes). Here the columns of
    one dtype, stride and length are copied together, a band of rows at a time (one call
    for a block's adjacent columns), so each band is read from memory once and its
    columns taken while it is in the cache; the bands are shared among the copy threads."""
    if not pairs:
        return
    import numpy as np

    groups: Dict[Tuple[str, int, int], List[Tuple[Any, Any]]] = {}
    for dst, src in pairs:
        if src.ndim == 1 and src.size > 1:
            groups.setdefault((src.dtype.str, int(src.strides[0]), int(src.shape[0])), []).append((dst, src))
        else:
            np.copyto(dst, src)
    for (_, stride, n), members in groups.items():
        runs = _gather_runs(members)
        rows = max(64, _GATHER_BAND // max(abs(stride), 1))
        bands = [(r, min(n, r + rows)) for r in range(0, n, rows)]
        k = min(len(bands), _copy_threads(sum(int(src.nbytes) for _, src in members)))
        if k == 1:
            _gather_bands(runs, bands)
            continue
        from concurrent.futures import wait

        per = -(-len(bands) // k)
        shares = [bands[i:i + per] for i in range(0, len(bands), per)]
        pool = _copy_executor()
        pending = [pool.submit(_gather_bands, runs, share) for share in shares[1:]]
        try:
            _gather_bands(runs, shares[0])
        finally:
            wait(pending)  # none still writes once this returns or raises
        for f in pending:
            f.result()


def _copy_in(conn: "_Connection", placed: List[Tuple[int, Any]]) -> None:
    """Copies each array's bytes, in C order, into the arena at its offset: contiguous ones
    with adjacent copies joined, the bytes shared among a few threads when there are many
    of them (two threads on two cores copy a seed frame in about half a single memcpy's
    time); strided ones gathered (``_gather``)."""
    if not placed:
        return
    import numpy as np

    arena = np.frombuffer(conn.arena, dtype=np.uint8)  # held: the mapping stays while we copy
    base = arena.__array_interface__["data"][0]
    jobs = []
    strided = []
    for offset, array in placed:
        n = int(array.nbytes)
        if offset < 0 or offset + n > arena.size:
            raise _DaemonError(0, "the daemon placed a blob outside its arena")
        if not array.flags["C_CONTIGUOUS"]:
            strided.append((arena[offset:offset + n].view(array.dtype).reshape(array.shape), array))
            continue
        jobs.append((base + offset, int(array.__array_interface__["data"][0]), n))
    _gather(strided)
    runs = _copy_runs(jobs)
    k = _copy_threads(sum(n for _, _, n in runs))
    if k == 1:
        _memmove_all(runs)
    else:
        from concurrent.futures import wait

        shares = _shares(runs, k)
        pool = _copy_executor()
        pending = [pool.submit(_memmove_all, share) for share in shares[1:]]
        try:
            _memmove_all(shares[0])
        finally:
            wait(pending)  # none still writes once this returns or raises
        for f in pending:
            f.result()
    del arena


_RANGE_MIN = 1 << 20  # a RangeIndex of at least this many bytes is written by the daemon


def _drop_quietly(conn: "_Connection", blobs: List[int]) -> None:
    try:
        conn.pipeline([{"type": "drop_buffer_request", "id": b} for b in blobs])
    except Exception:
        pass


def _fill_slot(slot: Dict[str, Any], conn: "_Connection", blob_id: int, size: int) -> None:
    """Turns a placeholder member into the blob's member (the same dict, so no tree walk)."""
    slot.clear()
    slot.update(_blob_meta(conn, blob_id, size))


def _read_blob_member(conn: Optional[_Connection], ptr: int, nbytes: int) -> Optional[Dict[str, Any]]:
    """The member for a blob `conn` read the fast way that starts at `ptr` and holds
    `nbytes`, or None."""
    if conn is None or conn.ro_arena is None or conn.pid != os.getpid():
        return None
    hit = conn.read_blobs.get(ptr - conn.ro_base)
    if hit is None or nbytes > hit[1]:
        return None
    return _blob_meta(conn, hit[0], hit[1])


def _blob_meta(conn: _Connection, blob_id: int, size: int) -> Dict[str, Any]:
    return {"id": "o%016x" % blob_id, "typename": "vineyard::Blob", "instance_id": conn.instance_id,
            "length": size, "nbytes": size, "transient": True}


# A put of at most this many bytes of buffers goes to the daemon in one request, its
# bytes inline (the ``put_inline`` extension) instead of through a blob mapping: one
# round trip instead of two (``$TRELLIS_INLINE_MAX``; 0 turns it off).
_INLINE_DEFAULT = 16 << 10
_INLINE_MAX = int(os.environ.get("TRELLIS_INLINE_MAX", str(_INLINE_DEFAULT)))


def _inline_fits(conn: _Connection, plan: _Plan) -> bool:
    """Whether `plan` goes in one ``trellis_put_request``: the daemon serves it, no range
    is pending, its buffers are small in all, and none is to be published in place."""
    if plan.ranges or "put_inline" not in conn.extensions:
        return False
    total = 0
    for a in plan.arrays:
        total += a.nbytes
        if total > _INLINE_MAX:
            return False
    return not (_reservations and any(a.nbytes and _zc_find(a.__array_interface__["data"][0]) is not None
                                      for a in plan.arrays))


def _write_inline(conn: _Connection, plan: _Plan, tree: Dict[str, Any]) -> int:
    """One request: the daemon allocates, writes and seals the blobs (their bytes in C
    order, base64) and creates the tree, whose placeholder members ({"__trellis_blob": k},
    as _Plan.blob made them) it fills in; all or nothing."""
    _finish(tree, conn.instance_id)
    blobs = [binascii.b2a_base64(a.tobytes(), newline=False).decode("ascii") for a in plan.arrays]
    return int(conn.call({"type": "trellis_put_request", "content": tree, "blobs": blobs})["id"])


def _write(conn: _Connection, plan: _Plan, tree: Dict[str, Any]) -> int:
    """Allocates every blob (one request), copies the bytes in, then seals them, creates
    the tree and releases the blobs in one pipelined round trip; returns the tree's id.
    Arrays that already live in this daemon's arena (zero-copy put) are published in
    place instead of copied; a small object goes in one request (_write_inline). On any
    failure the blobs are dropped: nothing is left behind."""
    import numpy as np

    with conn.lock:
        if _inline_fits(conn, plan):
            return _write_inline(conn, plan, tree)
        # the RangeIndex blobs the daemon wrote (sealed): released with the copies' blobs;
        # one it could not make is materialised and copied as any array
        ranged: List[int] = []
        for ticket, slot, (start, step, n) in plan.ranges:
            try:
                reply = ticket.redeem()
            except _DaemonError:
                plan.arrays.append(np.arange(start, start + step * n, step, dtype=np.int64))
                plan.owners.append(None)
                plan.slots.append(slot)
                continue
            ranged.append(int(reply["id"]))
            _fill_slot(slot, conn, int(reply["id"]), n * 8)
        plan.ranges = []
        try:
            # array index -> (blob id, size), published in place; those still to seal
            placed, unsealed = _zc_publish(conn, plan)
            copied = [i for i in range(len(plan.arrays)) if i not in placed]
            sizes = [int(plan.arrays[i].nbytes) for i in copied]
            payloads = conn.create_buffers(sizes) if sizes else []
        except BaseException:
            _drop_quietly(conn, ranged)
            raise
        copies = [p["object_id"] for p in payloads if p["data_size"] > 0]
        written = copies + ranged  # (the ranges came sealed)
        try:
            _populate(conn, payloads)
            _copy_in(conn, [(int(p["data_offset"]), plan.arrays[i])
                            for i, p in zip(copied, payloads) if p["data_size"] > 0])
            for i, p in zip(copied, payloads):
                _fill_slot(plan.slots[i], conn, p["object_id"], p["data_size"])
            for i, (blob_id, size) in placed.items():
                _fill_slot(plan.slots[i], conn, blob_id, size)
            _finish(tree, conn.instance_id)
            # in order on the daemon: the seals, the tree (which needs them sealed), then
            # this connection lets the blobs go (the object holds them), so a delete frees
            # their memory at once
            # (pieces cut with split_seal came back sealed; a whole reservation is sealed here)
            sealed = unsealed + copies
            replies = conn.pipeline(
                [{"type": "seal_request", "object_id": b} for b in sealed]
                + [{"type": "create_data_request", "content": tree}]
                + [{"type": "release_request", "object_id": b} for b in written])
        except BaseException:
            _drop_quietly(conn, written)
            _zc_orphan(placed)
            raise
        _zc_published(placed)
        return int(replies[len(sealed)]["id"])


# -- zero-copy put -------------------------------------------------------------------------
#
# With zero-copy on (``zero_copy()``; ``TRELLIS_ZERO_COPY=1`` in a flow step), numpy
# places every buffer of at least ``threshold`` bytes in the daemon's arena (an unsealed
# blob of this process's connection, through the ``trellis._zerocopy`` memory handler),
# so a DataFrame built in a step already lives in shared memory. ``put`` then seals those
# blobs where they are — a pandas block of several columns is cut into one blob per
# column (the daemon's ``split_buffer`` extension) — and records the metadata: no copy.
# The rules:
#   * after ``put`` the arrays published in place are read-only (their memory is the
#     object's, immutable as every vineyard object); views taken before ``put`` keep their
#     flag, and writing through one changes the stored object: don't.
#   * an array freed before ``put`` gives its memory back to the arena at once.
#   * a published array keeps its memory alive while it lives, even if the object is
#     deleted meanwhile (the daemon retires the blobs until this process lets go).
#   * the connection holding the reservations stays open while any lives
#     (``close_connections()`` keeps it); if the daemon goes away the arrays stay readable
#     and writable in this process, and puts fall back to the upstream builders.
#   * a connection broken by a cut request (see _Connection) keeps its socket open while
#     its reserved arrays live; they are never published in place (put copies them) and
#     freeing them sends nothing; the socket closes with the last of them.
#   * only what could be published as is goes in place (C-contiguous arrays tiling their
#     allocation exactly; without the daemon's ``split_unaligned``, each column but the
#     last a multiple of 64 bytes); anything else
#     is copied as before. Allocations the arena cannot hold come from the heap.
#   * a forked child's inherited arrays are the parent's; the child reserves through its
#     own connection once it calls ``zero_copy()`` itself.

class _Reservation:
    __slots__ = ("conn", "addr", "blob", "size", "state", "pieces")

    def __init__(self, conn: _Connection, addr: int, blob: int, size: int) -> None:
        self.conn = conn
        self.addr = addr
        self.blob = blob
        self.size = size
        self.state = "open"  # open -> sealed (in place, not yet in an object) -> published | orphan
        self.pieces: List[int] = []


_zc_module = None
_zc_path: Optional[str] = None
_zc_pid = 0
_zc_threshold = 1 << 20
_reservations: Dict[int, _Reservation] = {}
_reserved_addrs: List[int] = []  # sorted
_zc_maps: Dict[Tuple[int, int, int], int] = {}  # the arenas trellis._zerocopy mapped
_zc_lock = threading.RLock()


def _zerocopy_module():
    global _zc_module
    if _zc_module is None:
        try:
            from trellis import _zerocopy  # type: ignore[attr-defined]
        except ImportError:
            return None
        _zc_module = _zerocopy
    return _zc_module


def _zc_reserve(size: int) -> int:
    """numpy asks for `size` bytes: an unsealed blob in the arena, or 0 (the heap)."""
    if _zc_path is None or os.getpid() != _zc_pid:
        return 0
    try:
        conn = _connection_at(_zc_path)
        with conn.lock:
            payload = conn.create_buffers([size])[0]
            if conn.zc_base == 0:
                # one mapping per arena for the process's life (a connection opened after
                # another broke maps the same arena: the same memfd)
                st = os.fstat(conn.arena_fd)
                key = (st.st_dev, st.st_ino, conn.arena_map_size)
                if key not in _zc_maps:
                    fd = os.dup(conn.arena_fd)
                    try:
                        _zc_maps[key] = _zc_module.map(fd, conn.arena_map_size)
                    finally:
                        os.close(fd)
                conn.zc_base = _zc_maps[key]
    except Exception:
        return 0
    addr = conn.zc_base + payload["data_offset"]
    with _zc_lock:
        _reservations[addr] = _Reservation(conn, addr, payload["object_id"], size)
        bisect.insort(_reserved_addrs, addr)
    return addr


def _zc_sizeof(addr: int) -> int:
    r = _reservations.get(addr)
    return r.size if r is not None else 0


def _zc_release(addr: int) -> None:
    """numpy frees an array that lives in the arena."""
    with _zc_lock:
        r = _reservations.pop(addr, None)
        if r is None:
            return
        del _reserved_addrs[bisect.bisect_left(_reserved_addrs, addr)]
    if r.state == "open":
        messages = [{"type": "drop_buffer_request", "id": r.blob}]
    elif r.state == "published":
        # the object owns the memory now: only this process's use ends
        messages = [{"type": "release_request", "object_id": b} for b in r.pieces]
    else:  # sealed in place but never recorded in an object
        messages = [{"type": "drop_buffer_request", "id": b} for b in r.pieces]
    if r.conn.broken:
        # its connection was dropped with this reservation alive (the socket stayed open
        # for it): nothing goes on it any more; the daemon frees or releases the blob when
        # that socket closes, once nothing else of it lives
        return
    owned = getattr(r.conn.lock, "_is_owned", None)
    if owned is not None and owned():
        # freed (by the garbage collector, say) while this thread is inside a request on
        # this connection: no nested I/O — they go ahead of its next request
        r.conn.deferred.extend(messages)
        return
    try:
        with r.conn.lock:
            r.conn.pipeline(messages)
    except Exception:
        pass


def _zc_find(address: int) -> Optional[_Reservation]:
    with _zc_lock:
        i = bisect.bisect_right(_reserved_addrs, address) - 1
        if i < 0:
            return None
        r = _reservations[_reserved_addrs[i]]
        return r if address < r.addr + r.size else None


def _zc_publish(conn: _Connection, plan: _Plan) -> Tuple[Dict[int, Tuple[int, int]], List[int]]:
    """Publishes in place the planned arrays that live in reservations of `conn` and tile
    them exactly (cutting a reservation into one blob per array); returns index -> (blob,
    size), and the blobs still to seal in the write's pipelined round trip: a reservation
    that is one array whole (no cut: no request of its own), and without the daemon's
    ``split_seal`` every piece."""
    presealed = "split_seal" in conn.extensions
    unsealed: List[int] = []
    if not _reservations:
        return {}, unsealed
    groups: Dict[int, Tuple[_Reservation, List[Tuple[int, int, int]]]] = {}
    for i, a in enumerate(plan.arrays):
        if a.nbytes == 0 or not a.flags["C_CONTIGUOUS"]:
            continue
        ptr = a.__array_interface__["data"][0]
        r = _zc_find(ptr)
        if r is None or r.conn is not conn or r.state != "open" or conn.broken:
            continue
        groups.setdefault(r.addr, (r, []))[1].append((ptr - r.addr, int(a.nbytes), i))
    placed: Dict[int, Tuple[int, int]] = {}
    for r, parts in groups.values():
        parts.sort()
        at, tiles = 0, True
        for offset, n, _ in parts:
            if offset != at:
                tiles = False
                break
            at += n
        if not tiles or at != r.size:
            continue  # not publishable as is: copied
        if "split_unaligned" not in conn.extensions and any(n % 64 for _, n, _ in parts[:-1]):
            continue  # (an older daemon cuts only at its 64-byte alignment)
        if len(parts) == 1:
            pieces = [r.blob]
            unsealed.append(r.blob)
        elif presealed:
            # one request cuts and seals (this connection then uses every piece)
            reply = conn.call({"type": "trellis_split_buffer_request", "id": r.blob, "num": len(parts),
                               "sizes": [n for _, n, _ in parts], "seal": True})
            pieces = [int(b) for b in reply["ids"]]
        else:
            reply = conn.call({"type": "trellis_split_buffer_request", "id": r.blob,
                               "num": len(parts), "sizes": [n for _, n, _ in parts]})
            pieces = [int(b) for b in reply["ids"]]
            unsealed.extend(pieces)
        r.pieces = pieces
        r.state = "sealed"
        for (_, n, i), b in zip(parts, pieces):
            placed[i] = (b, n)
            owner = plan.owners[i]
            for arr in (plan.arrays[i], owner):
                if arr is not None:
                    try:
                        arr.flags.writeable = False
                    except ValueError:
                        pass
    if placed:
        # (whatever is still unsealed is sealed by this connection — which keeps using
        # them while the arrays live — in the write's pipelined round trip, ahead of the tree)
        _stats["zero_copy_blobs"] = _stats.get("zero_copy_blobs", 0) + len(placed)
    return placed, unsealed


def _zc_mark(placed: Dict[int, Tuple[int, int]], state: str) -> None:
    if not placed:
        return
    blobs = {b for b, _ in placed.values()}
    with _zc_lock:
        for r in _reservations.values():
            if r.state == "sealed" and blobs.intersection(r.pieces):
                r.state = state


def _zc_published(placed: Dict[int, Tuple[int, int]]) -> None:
    _zc_mark(placed, "published")


def _zc_orphan(placed: Dict[int, Tuple[int, int]]) -> None:
    _zc_mark(placed, "orphan")


def zero_copy(socket_path: Optional[str] = None, threshold: Optional[int] = None) -> bool:
    """Turns zero-copy put on for this process: numpy buffers of at least `threshold`
    bytes (default 1 MiB, ``$TRELLIS_ZERO_COPY_THRESHOLD``) are placed in the arena of the
    Trellis daemon at `socket_path` (default ``$VINEYARD_IPC_SOCKET``). Returns False —
    and changes nothing — when that is not possible (no such daemon, upstream vineyardd,
    the C extension missing)."""
    global _zc_path, _zc_pid, _zc_threshold
    module = _zerocopy_module()
    path = socket_path or os.environ.get("VINEYARD_IPC_SOCKET")
    if module is None or not path:
        return False
    try:
        conn = _connection_at(path)
    except (OSError, ConnectionError, _DaemonError, _StepAside):
        return False
    if not conn.is_trellis or "split_buffer" not in conn.extensions:
        return False
    if threshold is None:
        threshold = int(os.environ.get("TRELLIS_ZERO_COPY_THRESHOLD", str(1 << 20)))
    _zc_path, _zc_pid, _zc_threshold = path, os.getpid(), max(1, int(threshold))
    module.install(_zc_reserve, _zc_release, _zc_sizeof, _zc_threshold)
    return True


def zero_copy_off() -> None:
    """New arrays come from the heap again (those in the arena stay where they are)."""
    global _zc_path
    _zc_path = None
    module = _zerocopy_module()
    if module is not None:
        module.uninstall()


def zero_copy_from_env() -> bool:
    """``TRELLIS_ZERO_COPY=1``: ``zero_copy()`` (what a flow step's bootstrap calls)."""
    return os.environ.get("TRELLIS_ZERO_COPY", "0") == "1" and zero_copy()


def zero_copy_stats() -> Dict[str, Any]:
    module = _zerocopy_module()
    out: Dict[str, Any] = dict(module.stats()) if module is not None else {"available": False}
    out["live_reservations"] = len(_reservations)
    out["live_bytes"] = sum(r.size for r in list(_reservations.values()))
    return out


def _zc_after_fork_in_child() -> None:
    global _zc_path, _zc_lock
    _zc_lock = threading.RLock()
    _reservations.clear()
    del _reserved_addrs[:]
    _zc_maps.clear()
    _zc_path = None
    if _zc_module is not None:
        _zc_module.forked()


def _after_fork_in_child() -> None:
    """A forked child starts with fresh locks (another thread of the parent may have held
    one at the fork: it would never be released here) and none of its parent's
    connections: their sockets are the parent's, and the child's requests would interleave
    with the parent's. The inherited ones are marked dropped (nothing is sent on them;
    values inherited through them keep their mapping); collecting them closes the child's
    copies of their descriptors only."""
    global _connections_lock
    _connections_lock = threading.RLock()
    inherited = list(_connections.values())
    _connections.clear()
    for c in inherited:
        c.lock = threading.RLock()
        c.broken = True
    _zc_after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the builders ------------------------------------------------------------------------------

_originals: Dict[type, Callable] = {}


def enabled() -> bool:
    return os.environ.get("TRELLIS_ACCEL", "1") != "0"


def _accelerated(kind: str, upstream: Callable) -> Callable:
    def build(client, value, builder=None, **kw):
        from vineyard import ObjectID

        def aside():
            _stats["stepped_aside"] += 1
            if builder is None:
                return upstream(client, value, **kw)
            return upstream(client, value, builder=builder, **kw)

        if not enabled() or kw:
            return aside()
        plan = None
        try:
            conn = _connection(client)
            plan = _Plan(client, conn)
            tree = getattr(plan, kind)(value)
        except (_StepAside, OSError, ConnectionError, _DaemonError):
            if plan is not None:
                plan.abandon()
            return aside()
        try:
            oid = _write(conn, plan, tree)
        except _DaemonError as e:
            if e.code == 41:
                # the arena cannot hold it: the client's own exception, with nothing left
                # behind (the upstream path would fail too, after leaving the columns it
                # had written sealed and orphaned)
                from vineyard._C import NotEnoughMemoryException

                raise NotEnoughMemoryException(str(e)) from None
            return aside()
        except (OSError, ConnectionError):
            return aside()  # (a connection cut mid-request dropped itself)
        _stats["accelerated"] += 1
        return ObjectID(oid)

    build.__trellis_accel__ = True  # type: ignore[attr-defined]
    build.__wrapped__ = upstream  # type: ignore[attr-defined]
    return build


# -- the reader's side -------------------------------------------------------------------------
#
# The upstream DataFrame resolver turns each column into a numpy array through the
# resolver registry (an ``inspect.getfullargspec`` and an ``np.prod`` per column, then
# the generic tensor resolver): at 46 columns that is most of a ``get``. This one builds
# the same DataFrame — one block per column, each a zero-copy view of its blob, the
# same index — straight from the members. Anything but plain 1-D numeric C-ordered
# tensor columns goes to the upstream resolver.

_NUMERIC_VALUE_TYPES = {
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64",
    "bool", "int", "uint", "float", "double", "long long", "i32", "i64", "u32", "u64", "int32_t", "int64_t",
    "uint32_t", "uint64_t",
}
_resolver_originals: Dict[str, Callable] = {}


def _resolve_dataframe(obj, resolver):
    import numpy as np
    import pandas as pd
    from vineyard.data.utils import from_json

    upstream = _resolver_originals["vineyard::DataFrame"]
    if not enabled():
        return upstream(obj, resolver)
    try:
        from vineyard.data.tensor import ndarray as vineyard_ndarray
    except ImportError:
        return upstream(obj, resolver)
    meta = obj.meta
    columns = from_json(meta["columns_"])
    if not columns:
        return upstream(obj, resolver)
    names, rows_2d, rows = [], [], None
    for i in range(len(columns)):
        member = obj.member("__values_-value-%d" % i)
        m = member.meta
        try:
            dtype, shape = _numeric_tensor(
                m.typename, m["value_type_"] if "value_type_" in m else None,
                m["value_type_meta_"] if "value_type_meta_" in m else None, m["shape_"])
        except _StepAside:
            return upstream(obj, resolver)
        if len(shape) != 1:  # (a 1-D array's order, "C" or "F", is the same layout)
            return upstream(obj, resolver)
        n = int(shape[0])
        if rows is None:
            rows = n
        if n == 0:
            column = np.zeros(0, dtype=dtype)
        else:
            column = np.frombuffer(memoryview(member.member("buffer_")), dtype=dtype, count=n).view(vineyard_ndarray)
            column.__vineyard_ref = member  # the column's object keeps its blob mapped
        names.append(from_json(meta["__values_-key-%d" % i]))
        rows_2d.append(_block_row(column))
    index = resolver.run(obj.member("index_")) if "index_" in meta else pd.RangeIndex(rows or 0)
    _stats["resolved"] = _stats.get("resolved", 0) + 1
    return _frame_of_rows(rows_2d, names, index)


def _install_resolvers() -> None:
    from vineyard.core.resolver import default_resolver_context as ctx

    current = ctx._factory.get("vineyard::DataFrame")
    if current is None or getattr(current, "__trellis_accel__", False):
        return
    _resolver_originals["vineyard::DataFrame"] = current
    ctx.register("vineyard::DataFrame", _resolve_dataframe)


def _uninstall_resolvers() -> None:
    from vineyard.core.resolver import default_resolver_context as ctx

    for typename, original in list(_resolver_originals.items()):
        ctx.register(typename, original)
        del _resolver_originals[typename]


_resolve_dataframe.__trellis_accel__ = True  # type: ignore[attr-defined]


# -- the reader's fast path: get ------------------------------------------------------------
#
# ``client.get(...)`` through the upstream client spends most of its time before any
# resolver runs: the C++ ``get_meta`` builds an ObjectMeta tree, ``_traverse_blobs`` walks
# it in Python, ``get_object`` wraps every member. For the values the resolvers above
# cover, on a Trellis daemon and with every blob local, ``get`` here asks the daemon
# itself — ``get_name``, one ``get_data`` for the whole tree, one ``get_buffers`` for its
# blobs — and builds the value straight from the tree over a read-only mapping of the
# arena: the same frame, array and index the upstream resolvers return (views of the
# blobs, no copy; read-only, as theirs). Anything else — another resolver context, a
# resolver or keyword passed in, a type or dtype not covered, a blob on another instance
# (``fetch`` migrates it), upstream vineyardd, ``TRELLIS_ACCEL=0`` — goes the upstream way.
#
# The blobs stay in use by this process's connection while any value read through it
# lives (the daemon keeps a deleted object's memory until then); when the last value
# using a blob is collected, the blob is released with the connection's next request.

class _ReadHold:
    """Kept alive by every array of one value read the fast way; queues the release of
    its blobs when the last of them goes. Stands where the upstream client puts the
    value's ``Object`` (``value.__vineyard_ref``): it has the object's ``id`` and
    ``typename``."""

    __slots__ = ("conn", "blobs", "id", "typename", "__weakref__")

    def __init__(self, conn: "_Connection", blobs: Tuple[int, ...], oid, typename: str) -> None:
        self.conn = conn
        self.blobs = blobs
        self.id = oid
        self.typename = typename

    def __del__(self) -> None:
        if self.blobs:
            self.conn.dead_holds.append(self.blobs)


_expected_resolvers: Dict[str, Callable] = {}
_get_originals: Dict[Any, Callable] = {}


class _Need:
    """What reading one tree takes: its blobs (with the bytes read from each) and the
    resolvers checked on the way (once per type name)."""

    __slots__ = ("blobs", "checked", "factory")

    def __init__(self) -> None:
        from vineyard.core.resolver import get_current_resolvers

        self.blobs: List[Tuple[Dict[str, Any], int]] = []
        self.checked: set = set()
        self.factory = get_current_resolvers()._factory

    def check(self, typename: str, kind: str) -> None:
        """Steps aside unless the resolver in effect for `typename` is the one this reader
        stands for (the upstream tensor and index resolvers, our DataFrame resolver)."""
        if typename in self.checked:
            return
        from vineyard.core.utils import find_most_precise_match

        expected = _expected_resolvers.get(kind)
        _, current = find_most_precise_match(typename, self.factory)
        if expected is None or current is not expected:
            raise _StepAside("another resolver for %s" % typename)
        self.checked.add(typename)


@functools.lru_cache(maxsize=1024)
def _json_memo(text: str):
    """``from_json`` of the strings trees repeat (shapes, orders); returns a fresh copy
    of lists so no caller shares one."""
    return json.loads(text)


def _from_json_repeated(text: str):
    value = _json_memo(text)
    return list(value) if isinstance(value, list) else value


def _from_json_name(text: str):
    """A column name as ``from_json`` reads it (plain strings without escapes directly)."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"' and "\\" not in text and '"' not in text[1:-1]:
        return text[1:-1]
    return json.loads(text)


@functools.lru_cache(maxsize=256)
def _read_dtype(value_type: str, value_type_meta: Optional[str]):
    import numpy as np
    from vineyard.data.utils import normalize_dtype

    return np.dtype(normalize_dtype(value_type, value_type_meta))


def _numeric_tensor(typename: str, value_type: Optional[str], value_type_meta: Optional[str], shape_text: str):
    """The dtype and shape of a tensor both readers build as a numpy view of its blob (a
    numeric vineyard::Tensor); _StepAside for any other."""
    if not typename.startswith("vineyard::Tensor<"):
        raise _StepAside("not a tensor")
    if value_type not in _NUMERIC_VALUE_TYPES:
        raise _StepAside("tensor value type")
    return _read_dtype(value_type, value_type_meta), _from_json_repeated(shape_text)


def _block_row(column):
    """A 1-D column as the (1, n) array of its own block (a view; an empty column's own)."""
    import numpy as np

    return np.asarray(column.reshape(1, len(column))) if len(column) else np.zeros((1, 0), dtype=column.dtype)


def _frame_of_rows(rows_2d, names, index):
    """The frame upstream's DataFrame resolver builds: one block per column (`rows_2d`,
    each (1, n)), in order, with `names` and `index`."""
    import pandas as pd
    from pandas.core.indexes.api import ensure_index
    from pandas.core.internals.blocks import BlockPlacement, new_block
    from pandas.core.internals.managers import BlockManager

    n = len(index)
    if any(values.shape != (1, n) for values in rows_2d):
        raise _StepAside("columns and index of different lengths")
    blocks = [new_block(values, BlockPlacement(slice(i, i + 1, 1)), ndim=2) for i, values in enumerate(rows_2d)]
    # (consistent as built and checked: one (1, n) block per column, placed in order)
    return pd.DataFrame(BlockManager(blocks, [ensure_index(names), index], verify_integrity=False))


class _TensorRead:
    """Builds the array upstream's tensor resolver returns for one tensor tree."""

    __slots__ = ("blob", "dtype", "shape", "count", "order", "column")

    def __init__(self, blob, dtype, shape, count: int, order: str) -> None:
        self.blob, self.dtype, self.shape, self.count, self.order = blob, dtype, shape, count, order
        self.column = (blob, dtype, count) if len(shape) == 1 else None  # (what a frame's fast path needs)

    def __call__(self, view):
        import numpy as np
        from vineyard.data.tensor import ndarray as vineyard_ndarray

        c_array = np.frombuffer(view(self.blob), dtype=self.dtype, count=self.count).reshape(self.shape)
        array = c_array if self.order == "C" else np.asfortranarray(c_array)
        return array.view(vineyard_ndarray)


def _tensor_key(m: Dict[str, Any]):
    """What makes two tensor trees read alike (all but their blobs)."""
    return (m.get("typename"), m.get("value_type_"), m.get("value_type_meta_"), m.get("shape_", "[]"), m.get("order_"))


def _tensor_reader(m: Dict[str, Any], need: "_Need", like: Optional[_TensorRead] = None) -> Callable:
    """How to build the array upstream's tensor resolver returns for tree `m` — with `like`,
    the reader of a tree with the same `_tensor_key` (checked by the caller): only the blob
    differs."""
    import numpy as np

    blob = m.get("buffer_")
    if not isinstance(blob, dict) or blob.get("typename") != "vineyard::Blob":
        raise _StepAside("tensor buffer")
    if like is not None:
        need.blobs.append((blob, like.count * like.dtype.itemsize))
        return _TensorRead(blob, like.dtype, like.shape, like.count, like.order)
    dtype, shape = _numeric_tensor(str(m.get("typename", "")), m.get("value_type_"), m.get("value_type_meta_"),
                                   m.get("shape_", "[]"))
    need.check(m["typename"], "tensor")
    order = _from_json_repeated(m["order_"]) if "order_" in m else "C"
    count = math.prod(shape)
    if count == 0:
        return lambda view: np.zeros(shape, dtype=dtype)
    need.blobs.append((blob, count * dtype.itemsize))  # (checked against the blob's size)
    return _TensorRead(blob, dtype, shape, count, order)


def _index_reader(m: Dict[str, Any], need: "_Need") -> Callable:
    import pandas as pd
    from vineyard.data.utils import from_json, normalize_dtype

    if m.get("typename") != "vineyard::Index":
        raise _StepAside("index kind")
    need.check("vineyard::Index", "index")
    value_type = normalize_dtype(m["value_type_"])
    name = from_json(m["name"])
    value = _tensor_reader(m["value_"], need)
    return lambda view: pd.Index(value(view), dtype=value_type, name=name)


def _frame_reader(m: Dict[str, Any], need: "_Need") -> Callable:
    """How to build the frame upstream's DataFrame resolver (and ``_resolve_dataframe``)
    returns for tree `m`: one block per column, each a view of its blob, the same index."""
    import pandas as pd
    from vineyard.data.utils import from_json

    need.check("vineyard::DataFrame", "frame")
    columns = from_json(m["columns_"])
    if not columns:
        raise _StepAside("a frame without columns")
    names, readers = [], []
    last_key, last = None, None
    for i in range(len(columns)):
        column = m["__values_-value-%d" % i]
        key = _tensor_key(column)
        if key == last_key:
            # written alike (a frame's columns mostly are): only the blob differs
            readers.append(_tensor_reader(column, need, like=last))
        else:
            if len(_json_memo(column.get("shape_", "[]"))) != 1:
                raise _StepAside("column shape")
            read = _tensor_reader(column, need)
            readers.append(read)
            last_key, last = (key, read) if isinstance(read, _TensorRead) else (None, None)
        names.append(_from_json_name(m["__values_-key-%d" % i]))
    index = _index_reader(m["index_"], need) if "index_" in m else None

    def build(view):
        whole = _adjacent_columns(view, readers)
        if whole is not None:
            # the columns' blobs lie one after another in the arena (as a block's columns
            # written by the builders or published in place do): one view over all of them,
            # one row of it per column's block — the same blocks, without making each
            # column's array on its own
            rows = whole.shape[1]
            rows_2d = [whole[i:i + 1] for i in range(len(readers))]
        else:
            rows_2d = [_block_row(read(view)) for read in readers]
            rows = rows_2d[-1].shape[1]
        axis = index(view) if index is not None else pd.RangeIndex(rows)
        return _frame_of_rows(rows_2d, names, axis)

    return build


def _adjacent_columns(view: "_View", readers: List[Callable]):
    """A 2-D read-only array (one row per column) over the columns' blobs when every
    column is a non-empty 1-D array of one dtype and length, each blob starting where the
    one before ends; else None."""
    first = getattr(readers[0], "column", None)
    if first is None or len(readers) < 2:
        return None
    _, dtype, count = first
    if count <= 0:
        return None
    step = count * dtype.itemsize
    start = None
    for i, read in enumerate(readers):
        column = getattr(read, "column", None)
        if column is None or column[1] != dtype or column[2] != count:
            return None
        off, size = view.where[_blob_id(column[0]["id"])]
        if start is None:
            start = off
        if off != start + i * step or size < step:
            return None
    whole = view.span(start, step * len(readers))
    return whole.view(dtype).reshape(len(readers), count)


def _series_reader(m: Dict[str, Any], need: "_Need") -> Callable:
    """How to build the series upstream's Series resolver returns for tree `m`: one block
    over the values' blob (the vineyard ndarray itself), the same index and name."""
    import pandas as pd
    from pandas.core.internals.managers import SingleBlockManager
    from vineyard.data.utils import from_json

    try:
        from pandas.core.internals.blocks import BlockPlacement
        from pandas.core.internals.blocks import NumpyBlock as Block
    except ImportError:
        raise _StepAside("pandas without NumpyBlock") from None
    need.check("vineyard::Series", "series")
    value = m.get("value_")
    if not isinstance(value, dict) or len(_json_memo(value.get("shape_", "[]"))) != 1:
        raise _StepAside("series values")
    values = _tensor_reader(value, need)
    index = _index_reader(m["index_"], need)
    name = from_json(m["name"])

    def build(view):
        array = values(view)
        block = Block(array, BlockPlacement(slice(0, len(array), 1)), ndim=1)
        return pd.Series(SingleBlockManager(block, index(view)), name=name)

    return build


def _reader(tree: Dict[str, Any], need: "_Need") -> Callable:
    typename = str(tree.get("typename", ""))
    if typename == "vineyard::DataFrame":
        return _frame_reader(tree, need)
    if typename == "vineyard::Series":
        return _series_reader(tree, need)
    if typename.startswith("vineyard::Tensor<"):
        return _tensor_reader(tree, need)
    raise _StepAside("type not covered: %s" % typename)


@functools.lru_cache(maxsize=4096)
def _blob_id(text) -> int:
    text = str(text)
    return int(text[1:], 16) if text.startswith("o") else int(text)


def _read_mapping(conn: _Connection) -> memoryview:
    """The connection's read-only view of the arena (mapped once; the descriptor came with
    the first reply that sent it — a get_buffers or a create_buffers)."""
    if conn.ro_arena is None:
        if conn.arena_fd < 0:
            raise _StepAside("no descriptor for the arena")
        import numpy as np

        conn.ro_arena = mmap.mmap(conn.arena_fd, conn.arena_map_size, mmap.MAP_SHARED, mmap.PROT_READ)
        conn.ro_base = int(np.frombuffer(conn.ro_arena, dtype=np.uint8, count=1).__array_interface__["data"][0])
    return memoryview(conn.ro_arena)


class _Mem:
    """One blob's bytes in the read-only mapping, as numpy sees them (``__array_interface__``).
    Every array made from it — and every view of those, however taken (``np.asarray``,
    ``.view(np.ndarray)``, ``to_numpy()``, a Series over it) — has this object at the end of
    its ``base`` chain (numpy collapses chains to the first non-array), so it keeps the
    value's hold (the daemon keeps the blob's memory) and the mapping alive."""

    __slots__ = ("__array_interface__", "hold", "mapping")

    def __init__(self, address: int, size: int, hold: "_ReadHold", mapping) -> None:
        self.__array_interface__ = {"shape": (size,), "typestr": "|u1", "data": (address, True), "version": 3}
        self.hold = hold
        self.mapping = mapping


class _View:
    """The blobs of one value read the fast way, as memory, and the hold its arrays keep."""

    __slots__ = ("mapping", "base", "where", "hold")

    def __init__(self, mapping, base: int, where: Dict[int, Tuple[int, int]], hold: _ReadHold) -> None:
        self.mapping = mapping
        self.base = base
        self.where = where
        self.hold = hold

    def __call__(self, blob: Dict[str, Any]):
        off, size = self.where[_blob_id(blob["id"])]
        return self.span(off, size)

    def span(self, off: int, size: int):
        """`size` bytes of the mapping from `off` (inside it: checked by the caller), as a
        read-only uint8 array whose base chain ends at a _Mem holding the value's hold."""
        import numpy as np

        return np.asarray(_Mem(self.base + off, size, self.hold, self.mapping))


class _StepAsideWithID(_StepAside):
    """Stepping aside after the name was resolved: upstream gets the id, not the name again."""

    def __init__(self, reason: str, oid: int) -> None:
        super().__init__(reason)
        self.oid = oid


def _direct_get(client, object_id, name):
    """The value `client.get(object_id, name)` returns, read the fast way (or _StepAside)."""
    from vineyard import ObjectID

    conn = _connection(client)
    if _reservations and any(r.conn is conn for r in list(_reservations.values())):
        # the daemon counts one use per connection and blob: zero-copy arrays of this
        # connection and values read through it would share it, and either's release would
        # end the other's (the upstream get uses the client's own connection)
        raise _StepAside("zero-copy reservations on this connection")
    if object_id is not None:
        oid = int(ObjectID(object_id)) if isinstance(object_id, str) else int(object_id)
    elif name is not None and isinstance(name, str) and "get_objects" in conn.extensions and _plain_get_name(client):
        # nothing maps names for this client: the daemon resolves the name as its get_name
        # would, in the same request (a missing name: the upstream get raises its own error)
        return _direct_get_named(client, conn, name)
    elif name is not None:
        # through the client's own get_name, as upstream's get: whatever maps names there
        # (a flow step's run prefix, a replica's local copy) maps them here too; a missing
        # name raises the client's own exception
        oid = int(client.get_name(name))
    else:
        raise _StepAside("neither an id nor a name")
    try:
        return _direct_get_id(client, conn, oid)
    except _StepAside as e:
        if name is not None and object_id is None:
            raise _StepAsideWithID(str(e), oid) from None
        raise


def _plain_get_name(client) -> bool:
    """Whether `client.get_name` is vineyard's own (a flow step's bootstrap maps names)."""
    f = getattr(type(client), "get_name", None)
    return (getattr(f, "__module__", None) == "vineyard.core.client" and getattr(f, "__qualname__", None) == "Client.get_name"
            and "get_name" not in getattr(client, "__dict__", {}))


def _direct_get_named(client, conn: _Connection, name: str):
    return _objects_value(conn, {"type": "trellis_get_objects_request", "name": name, "sync_remote": True}, None)


def _objects_value(conn: _Connection, request: Dict[str, Any], oid: Optional[int]):
    """The value of the object a get_objects `request` asks for (by id `oid`, or by name:
    then a step-aside says which object the name was bound to). The reply's blobs are this
    connection's uses from the moment it comes, whatever the tree turns out to be: if no
    value is made of them they are let go at once, so the upstream get that follows finds
    nothing held."""
    from vineyard import ObjectID

    with conn.lock:
        reply = conn.call(request, fds=True)
        early = _ReadHold(conn, _held(conn, reply.get("payloads") or []), None, "")
        try:
            content = reply.get("content") or {}
            if len(content) != 1:
                raise _StepAside("no such object here")
            found = _blob_id(next(iter(content))) if oid is None else oid
            early.id = ObjectID(found)
            try:
                return _direct_value(conn, found, reply, early)
            except _StepAside as e:
                if oid is None:
                    raise _StepAsideWithID(str(e), found) from None
                raise
        except BaseException:
            conn.let_go(early)
            raise


def _held(conn: _Connection, payloads) -> Tuple[int, ...]:
    """The blobs of a get_buffers (or get_objects) reply, counted as this connection's
    uses of them: the daemon counts them so as soon as it replies."""
    got = tuple(int(p["object_id"]) for p in payloads)
    for b in got:
        conn.read_uses[b] = conn.read_uses.get(b, 0) + 1
    return got


def _direct_get_id(client, conn, oid):
    if "get_objects" in conn.extensions:
        # the tree and its blobs in one round trip (the daemon's get_objects extension)
        return _objects_value(conn, {"type": "trellis_get_objects_request", "ids": [oid], "sync_remote": True}, oid)
    with conn.lock:
        reply = conn.call({"type": "get_data_request", "id": [oid], "sync_remote": True, "wait": False})
        return _direct_value(conn, oid, reply, None)


def _direct_value(conn: _Connection, oid: int, reply: Dict[str, Any], early: Optional["_ReadHold"]):
    """The value of the tree in `reply` (a get_objects reply, whose blobs `early` holds, or
    a get_data reply: then a get_buffers follows); called with the connection's lock held."""
    from vineyard import ObjectID

    combined = early is not None
    content = reply.get("content") or {}
    if len(content) != 1:
        raise _StepAside("no such object here")
    tree = next(iter(content.values()))
    need = _Need()
    build = _reader(tree, need)
    blobs = need.blobs  # (blob member, bytes the value reads)
    if any(int(b.get("instance_id", -1)) != conn.instance_id for b, _ in blobs):
        raise _StepAside("a blob on another instance")
    ids = sorted({_blob_id(b["id"]) for b, _ in blobs})
    where: Dict[int, Tuple[int, int]] = {}
    if ids or combined:
        if combined:
            payloads = reply.get("payloads") or []
            hold = early
            hold.typename = tree["typename"]
        else:
            reply = conn.call({"type": "get_buffers_request", "ids": ids, "unsafe": False}, fds=True)
            payloads = reply.get("payloads") or []
            # the daemon counts these as this connection's uses now: so does the hold,
            # before anything else can fail (whatever happens, they are released)
            hold = _ReadHold(conn, _held(conn, payloads), ObjectID(oid), tree["typename"])
        arena = _read_mapping(conn) if payloads else memoryview(b"")
        for p in payloads:
            where[int(p["object_id"])] = (int(p["data_offset"]), int(p["data_size"]))
            conn.read_blobs[int(p["data_offset"])] = (int(p["object_id"]), int(p["data_size"]))
        if not set(ids) <= set(where):
            raise _StepAside("a blob is gone")
        if any(off < 0 or off + size > len(arena) for off, size in where.values()):
            raise _StepAside("a blob outside the mapping")
        if any(n > where[_blob_id(b["id"])][1] for b, n in blobs):
            raise _StepAside("a value larger than its blob")
    else:
        hold, arena = _ReadHold(conn, (), ObjectID(oid), tree["typename"]), memoryview(b"")
    # (taken under the lock: a connection dropped meanwhile lets go of its mapping,
    # which then lives only as long as the values over it)
    mapping, base = conn.ro_arena, conn.ro_base
    value = build(_View(mapping, base, where, hold))
    _stats["direct_gets"] = _stats.get("direct_gets", 0) + 1
    return value, hold


def _attach(value, name: str, obj) -> None:
    """``setattr(value, name, obj)`` — what pandas' ``__setattr__`` does for a name that is
    neither an attribute nor a label, without its look-up of `name` among the labels (the
    first one builds the labels' hash table: ~0.1 ms for 46 columns, a whole index's for a
    Series). A frame whose columns, or a Series whose index, may hold the name goes through
    ``setattr``."""
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        axis = value.columns
    elif isinstance(value, pd.Series):
        axis = value.index
    else:
        setattr(value, name, obj)
        return
    if axis.dtype.kind in "iufbmM" or (isinstance(value, pd.DataFrame) and len(axis) <= 4096
                                        and name not in axis.tolist()):
        try:
            object.__getattribute__(value, name)
        except AttributeError:
            if name not in value._internal_names_set and name not in value._metadata:
                object.__setattr__(value, name, obj)
                return
    setattr(value, name, obj)


def _accelerated_get(upstream: Callable) -> Callable:
    def get(self, object_id=None, name=None, resolver=None, fetch=False, **kwargs):
        if resolver is None and not kwargs and enabled() and _expected_resolvers:
            try:
                value, hold = _direct_get(self, object_id, name)
            except _StepAsideWithID as e:
                from vineyard import ObjectID

                object_id, name = ObjectID(e.oid), None  # (the name is not looked up twice)
            except (_StepAside, _DaemonError):
                pass  # (a missing name or object: upstream's own exception, below)
            except (OSError, ConnectionError):
                pass  # (a connection cut mid-request dropped itself: the upstream get)
            else:
                # what the upstream resolver context adds to every value it returns
                try:
                    _attach(value, "__vineyard_ref", hold)
                    _attach(value, "__vineyard_client", self)
                    from vineyard.core.driver import get_current_drivers

                    get_current_drivers().resolve(value, hold.typename)
                except AttributeError:
                    pass
                return value
            _stats["gets_stepped_aside"] = _stats.get("gets_stepped_aside", 0) + 1
        return upstream(self, object_id, name, resolver, fetch, **kwargs)

    get.__trellis_accel__ = True  # type: ignore[attr-defined]
    get.__wrapped__ = upstream  # type: ignore[attr-defined]
    return get


def _get_targets():
    from vineyard._C import IPCClient
    from vineyard.core.client import Client

    return [Client, IPCClient]


def _wrap_clients(method: str, wrap: Callable, originals: Dict[Any, Callable]) -> None:
    """Replaces `method` of the client classes with `wrap(upstream)`, keeping the upstream
    one in `originals` (a class whose method is already ours is left alone)."""
    for cls in _get_targets():
        current = cls.__dict__.get(method)
        if current is None or getattr(current, "__trellis_accel__", False):
            continue
        originals[cls] = current
        setattr(cls, method, wrap(current))


def _unwrap_clients(method: str, originals: Dict[Any, Callable]) -> None:
    for cls, original in list(originals.items()):
        setattr(cls, method, original)
        del originals[cls]


def _install_get() -> None:
    _wrap_clients("get", _accelerated_get, _get_originals)
    # the upstream resolvers themselves (what the readers reproduce), not whatever was
    # registered for those types before install()
    from vineyard.data.index import pandas_index_resolver
    from vineyard.data.series import pandas_series_resolver
    from vineyard.data.tensor import numpy_ndarray_resolver

    _expected_resolvers.update({"tensor": numpy_ndarray_resolver,
                                "index": pandas_index_resolver,
                                "series": pandas_series_resolver,
                                "frame": _resolve_dataframe})


def _uninstall_get() -> None:
    _unwrap_clients("get", _get_originals)
    _expected_resolvers.clear()


# -- put(value, persist=True, name=…) ---------------------------------------------------------
#
# Upstream's put persists the new object, then binds the name through the client's
# put_name: two more round trips after the builder's, and in a cluster two etcd writes.
# Against a daemon that serves `persist_name` the name still goes through the client's
# put_name — whatever wraps it sees it and may map it, as a flow step's run prefix does —
# and the IPC client's own put_name, reached for the object just put, asks for the
# persist and the name in one request (one etcd transaction, the name after the
# records). Anything else, or any failure of that request, goes the upstream way: the
# client's own persist, then its put_name, with their own errors.

_put_originals: Dict[Any, Callable] = {}
_put_name_original: List[Callable] = []  # the IPC client's put_name, while ours wraps it
_pending = threading.local()  # .id: the object put whose persist waits for its name


def _persist_name_served(client) -> bool:
    try:
        return "persist_name" in _connection(client).extensions
    except (_StepAside, _DaemonError, OSError, ConnectionError):
        return False


def _accelerated_put(upstream: Callable) -> Callable:
    def put(self, value, builder=None, persist=False, name=None, **kwargs):
        # (with an explicit builder upstream neither persists nor names: left to it)
        if not (persist and isinstance(name, str) and builder is None and enabled()):
            return upstream(self, value, builder, persist, name, **kwargs)
        from vineyard import ObjectID

        r = upstream(self, value, builder, False, None, **kwargs)
        if not isinstance(r, ObjectID):
            return r  # (upstream persists and names only an ObjectID)
        # after the put: a retry may have moved the client to another daemon
        if not _persist_name_served(self):
            self.persist(r)
            self.put_name(r, name)
            return r
        outer = getattr(_pending, "id", None)
        _pending.id = int(r)
        try:
            self.put_name(r, name)
        except BaseException:
            if getattr(_pending, "id", None) is not None:
                self.persist(r)  # (upstream had persisted it before its put_name failed)
            raise
        finally:
            left = getattr(_pending, "id", None)
            _pending.id = outer
        if left is not None:
            # bound by a put_name that never reached the IPC client's: persisted after
            self.persist(r)
        return r

    put.__trellis_accel__ = True  # type: ignore[attr-defined]
    put.__wrapped__ = upstream  # type: ignore[attr-defined]
    return put


def _accelerated_put_name(upstream: Callable) -> Callable:
    def put_name(self, object, name):
        pending = getattr(_pending, "id", None)
        if pending is None or not isinstance(name, str):
            return upstream(self, object, name)
        try:
            oid = int(getattr(object, "id", object))
        except (TypeError, ValueError):
            return upstream(self, object, name)
        if oid != pending:
            return upstream(self, object, name)
        _pending.id = None  # this call persists it, one way or the other
        try:
            conn = _connection(self)
            if "persist_name" in conn.extensions:
                conn.call({"type": "trellis_persist_request", "id": oid, "name": name})
                _stats["persisted_named"] += 1
                return None
        except (_StepAside, _DaemonError, OSError, ConnectionError):
            pass
        self.persist(object)
        return upstream(self, object, name)

    put_name.__trellis_accel__ = True  # type: ignore[attr-defined]
    put_name.__wrapped__ = upstream  # type: ignore[attr-defined]
    return put_name


def _install_put() -> None:
    from vineyard._C import IPCClient

    _wrap_clients("put", _accelerated_put, _put_originals)
    # (put_name is ClientBase's, shared with the RPC client: wrapped for the IPC client only)
    current = getattr(IPCClient, "put_name")
    if not getattr(current, "__trellis_accel__", False):
        _put_name_original.append(current)
        setattr(IPCClient, "put_name", _accelerated_put_name(current))


def _uninstall_put() -> None:
    from vineyard._C import IPCClient

    if _put_name_original:
        _put_name_original.clear()
        delattr(IPCClient, "put_name")  # ClientBase's again
    _unwrap_clients("put", _put_originals)


def _targets():
    import numpy as np
    import pandas as pd

    out = [(np.ndarray, "tensor"), (pd.DataFrame, "dataframe"), (pd.Series, "series"), (pd.Index, "index")]
    try:
        import pyarrow as pa

        out += [(pa.Table, "table"), (pa.RecordBatch, "record_batch")]
    except ImportError:
        pass
    return out


def install() -> None:
    """Registers the accelerated builders (idempotent)."""
    from vineyard.core.builder import default_builder_context as ctx

    for cls, kind in _targets():
        current = ctx._factory.get(cls)
        if current is None or getattr(current, "__trellis_accel__", False):
            continue
        _originals[cls] = current
        ctx.register(cls, _accelerated(kind, current))
    _install_resolvers()
    _install_get()
    _install_put()


def uninstall() -> None:
    """Puts the upstream builders back."""
    from vineyard.core.builder import default_builder_context as ctx

    for cls, original in list(_originals.items()):
        ctx.register(cls, original)
        del _originals[cls]
    _uninstall_resolvers()
    _uninstall_get()
    _uninstall_put()


def installed() -> bool:
    return bool(_originals)


def warm(client) -> bool:
    """Opens this process's connection for `client`'s daemon now (a step may do it before
    its timed work); False when the builders would step aside for it."""
    try:
        _connection(client)
        return True
    except (_StepAside, OSError, ConnectionError, _DaemonError):
        return False


def close_connections() -> None:
    """Closes this process's connections to daemons (they are opened again on demand).
    Each is closed under its own lock (a request in flight on another thread ends first).
    A connection that holds zero-copy reservations stays open and cached: the daemon would
    take their memory back while the arrays still use it. One that values read through it
    still use leaves the cache and closes once the last of them goes (the daemon keeps
    their blobs while it is open)."""
    holding = {id(r.conn) for r in list(_reservations.values())}
    with _connections_lock:
        dropped = [c for c in _connections.values() if id(c) not in holding or c.pid != os.getpid()]
        for c in dropped:
            del _connections[c.path]
    # (the locks are taken outside the cache's: a request holding its connection's lock
    # may open a connection — numpy asking for a zero-copy reservation)
    for c in dropped:
        if c.pid != os.getpid():
            continue  # (an inherited one: the fork hook dropped it; only collection closes it)
        with c.lock:
            c.broken = True
            if not c.in_use():
                c.close()


def stats() -> Dict[str, int]:
    """How many puts went through the accelerated path and how many stepped aside."""
    return dict(_stats)


install()
