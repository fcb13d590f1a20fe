#!/usr/bin/env python3
"""Live-socket fuzzer: mutated captured client sessions against a real `trellis serve`.

Each worker process replays client sessions from Fuzz/corpus/live.jsonl (the client side
of the captured upstream transcripts) over raw IPC connections, mutating requests (field
values swapped for other types, huge or negative numbers, deep nesting, long strings,
repeated ids), frames (flipped, truncated, cut-off and oversized bodies, bad headers) and
connections (closed mid-frame, requests pipelined). Every loop is bounded: a worker stops
after its share of frames or at the deadline, every read has a timeout. Every
--check-every frames a fresh client must be answered; at the end all connections are
closed and the daemon must be alive, answer a fresh client, hold no memory
(memory_usage 0 after a clear) and have its heap (RssAnon) back near the baseline.

  scripts/fuzz_live.py --frames 1000000            # the recorded run (docs/FUZZING.md)
  scripts/fuzz_live.py --frames 20000 --workers 2  # a quick one

Exit status 0 when the daemon survived and memory returned; 1 otherwise (the daemon log
and the last frames each worker sent are printed).
"""

import argparse
import json
import os
import random
import socket
import struct
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import harness  # noqa: E402

SESSIONS = os.path.join(ROOT, "Fuzz", "corpus", "live.jsonl")

NASTY_VALUES = [
    None, True, False, 0, -1, 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 1e308, -0.0, 0.5,
    "", "x" * 10000, "\u0000", "\ud7ff\ue000", "o8000000000000000", "o" + "f" * 16, "*", "(a*)*b",
    [], [0] * 2000, {}, {"typename": "x"}, [[[[[[[[]]]]]]]],
]


def nested(depth):
    v = {}
    for _ in range(depth):
        v = {"typename": "fuzz::Nest", "instance_id": 0, "m": v}
    return v


def mutate_value(rng, value):
    r = rng.random()
    if r < 0.5:
        return rng.choice(NASTY_VALUES)
    if r < 0.6:
        return nested(rng.choice([2, 64, 65, 200]))
    if isinstance(value, int) and not isinstance(value, bool):
        return value ^ (1 << rng.randrange(64))
    if isinstance(value, str):
        return value[: rng.randrange(len(value) + 1)] + rng.choice(["", "\"", "\\", "é", "(", "["])
    if isinstance(value, list):
        return value * rng.choice([0, 2, 100])
    return rng.choice(NASTY_VALUES)


def mutate_request(rng, msg):
    msg = json.loads(json.dumps(msg))
    if not isinstance(msg, dict):
        return msg
    for _ in range(rng.randrange(1, 4)):
        keys = list(msg.keys())
        r = rng.random()
        if r < 0.6 and keys:
            k = rng.choice(keys)
            msg[k] = mutate_value(rng, msg[k])
        elif r < 0.75 and keys:
            del msg[rng.choice(keys)]
        elif r < 0.85:
            msg[rng.choice(["num", "id", "ids", "sizes", "limit", "pattern", "regex", "content", "0"])] = \
                mutate_value(rng, None)
        else:
            msg["type"] = rng.choice([
                "get_buffers_request", "create_buffers_request", "list_data_request", "del_data_request",
                "create_data_request", "persist_request", "get_data_request", "list_name_request",
                "seal_request", "release_request", "drop_buffer_request", "shallow_copy_request",
                "label_request", "if_persist_request", "instance_status_request", "no_such_request"])
    return no_wait(msg)


def no_wait(msg):
    """Never park: a wait for something nobody will create would only time out (the daemon
    takes a number as a bool too)."""
    if isinstance(msg, dict) and isinstance(msg.get("wait"), (bool, int, float)) and msg["wait"] is not False:
        msg = dict(msg, wait=False)
    return msg


def frame(body):
    return struct.pack("<Q", len(body)) + body


def mutate_bytes(rng, body):
    b = bytearray(body)
    r = rng.random()
    if r < 0.4 and b:
        for _ in range(rng.randrange(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif r < 0.6:
        b = b[: rng.randrange(len(b) + 1)]
    elif r < 0.8:
        b = b + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    else:
        b = b"[" * rng.randrange(100, 3000) + b"]" * rng.randrange(0, 3000)
    return bytes(b)


class Conn:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30.0)
        self.sock.connect(path)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def recv_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise EOFError("closed by the daemon")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_reply(self):
        (n,) = struct.unpack("<Q", self.recv_exact(8))
        reply = json.loads(self.recv_exact(n))
        # descriptor carriers follow replies that announce them: one byte each (+ SCM_RIGHTS)
        fds = reply.get("fds") if isinstance(reply, dict) else None
        count = len(fds) if isinstance(fds, list) else 0
        if isinstance(reply, dict) and isinstance(reply.get("fd"), int) and reply["fd"] >= 0:
            count = 1
        for _ in range(count):
            self.recv_fd()
        return reply

    def recv_fd(self):
        if self.buf:
            # the carrier byte arrived with earlier data; its descriptor rides on that recv
            self.buf = self.buf[1:]
            return
        msg, anc, _, _ = self.sock.recvmsg(1, socket.CMSG_SPACE(4))
        if not msg:
            raise EOFError("closed while a descriptor was expected")
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                for i in range(0, len(data) - len(data) % 4, 4):
                    os.close(struct.unpack("i", data[i:i + 4])[0])


def worker(path, sessions, frames, seed, deadline, out):
    rng = random.Random(seed)
    sent = replies = closed = refused = 0
    last = []
    try:
        while sent < frames and time.monotonic() < deadline:
            session = rng.choice(sessions)
            c = Conn(path)
            try:
                pending = 0
                requests = list(session)
                if rng.random() < 0.9:
                    requests = [harness.REGISTER] + [r for r in requests if r.get("type") != "register_request"]
                for i, msg in enumerate(requests[:64]):
                    if sent >= frames:
                        break
                    r = rng.random()
                    if i > 0 and r < 0.5:
                        msg = mutate_request(rng, msg)
                    else:
                        msg = no_wait(msg)  # the captured peer that would answer it is not here
                    body = json.dumps(msg, separators=(",", ":")).encode()
                    if i > 0 and rng.random() < 0.08:
                        body = mutate_bytes(rng, body)
                    if i > 0 and rng.random() < 0.01:
                        # a header beyond the limit (answered, then closed) or a cut-off frame
                        if rng.random() < 0.5:
                            data = struct.pack("<Q", rng.choice([(64 << 20) + 1, 2**63, 2**64 - 1]))
                        else:
                            data = frame(body)[: rng.randrange(1, 8 + len(body))]
                        c.sock.sendall(data)
                        sent += 1
                        last = (last + [data[:400]])[-5:]
                        break
                    data = frame(body)
                    c.sock.sendall(data)
                    sent += 1
                    pending += 1
                    last = (last + [data[:400]])[-5:]
                    # pipeline a few, then collect the replies in order
                    if pending >= rng.choice([1, 1, 4, 16]):
                        while pending:
                            reply = c.recv_reply()
                            pending -= 1
                            replies += 1
                            if isinstance(reply, dict) and "code" in reply and "type" not in reply:
                                refused += 1
                while pending:
                    c.recv_reply()
                    pending -= 1
                    replies += 1
            except (EOFError, ConnectionResetError, BrokenPipeError):
                closed += 1
            except socket.timeout:
                out.send({"error": "no reply within 30 s", "last": [x[8:].decode("utf-8", "replace") for x in last]})
                return
            finally:
                c.close()
        out.send({"sent": sent, "replies": replies, "closed": closed, "refused": refused})
    except Exception as e:  # noqa: BLE001 - report anything to the parent
        out.send({"error": "%s: %s" % (type(e).__name__, e), "last": [x.hex() for x in last]})


def rss_anon_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return -1


def fresh_client_answers(d):
    with harness.RawConn(d.socket, timeout=30.0) as c:
        c.register()
        return c.instance_status().get("type") == "instance_status_reply"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--check-every", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--max-seconds", type=float, default=3600.0)
    ap.add_argument("--size", default="512Mi")
    ap.add_argument("--rss-slack-mib", type=float, default=16.0)
    args = ap.parse_args()

    # IPC sessions only: an RPC session's remote-buffer requests are followed by raw blob
    # bytes, which a replayed (mutated) session does not send
    remote = ("create_remote_buffer_request", "create_remote_buffers_request", "get_remote_buffers_request")
    with open(SESSIONS) as f:
        sessions = [json.loads(line)["requests"] for line in f if line.strip()]
    sessions = [s for s in sessions if s and not any(r.get("type") in remote for r in s)]
    import multiprocessing
    spawn = multiprocessing.get_context("spawn")

    d = harness.Daemon(size=args.size).start()
    failed = False
    try:
        assert fresh_client_answers(d)
        time.sleep(0.5)
        baseline = rss_anon_kib(d.pid)
        print("daemon pid %d, seed %d, RssAnon baseline %d KiB" % (d.pid, args.seed, baseline), flush=True)
        deadline = time.monotonic() + args.max_seconds
        total = {"sent": 0, "replies": 0, "closed": 0, "refused": 0}
        started = time.monotonic()
        round_no = 0
        while total["sent"] < args.frames and time.monotonic() < deadline and not failed:
            share = min(args.check_every, args.frames - total["sent"])
            per = max(1, share // args.workers)
            procs, pipes = [], []
            for w in range(args.workers):
                parent, child = spawn.Pipe()
                p = spawn.Process(target=worker, args=(d.socket, sessions, per, args.seed * 1000 + round_no * 64 + w,
                                                       deadline, child), daemon=True)
                p.start()
                child.close()
                procs.append(p)
                pipes.append(parent)
            for p, pipe in zip(procs, pipes):
                if not pipe.poll(max(60.0, deadline - time.monotonic() + 60.0)):
                    print("worker did not report in time", flush=True)
                    failed = True
                    continue
                r = pipe.recv()
                if "error" in r:
                    print("worker failed: %s; last frames: %s" % (r["error"], r.get("last")), flush=True)
                    failed = True
                    continue
                for k in total:
                    total[k] += r[k]
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
            round_no += 1
            if not d.alive():
                print("daemon died", flush=True)
                failed = True
                break
            if not fresh_client_answers(d):
                print("the daemon did not answer a fresh client", flush=True)
                failed = True
            # keep the store bounded between rounds (sealed blobs and objects pile up)
            with harness.RawConn(d.socket, timeout=60.0) as c:
                c.register()
                c.request({"type": "clear_request"})
            elapsed = time.monotonic() - started
            print("%9d frames sent, %9d replies, %7d connections closed by the daemon, %8d errors; %.0f s, "
                  "RssAnon %d KiB" % (total["sent"], total["replies"], total["closed"], total["refused"], elapsed,
                                       rss_anon_kib(d.pid)), flush=True)

        # Memory back to baseline: everything gone, nothing held.
        time.sleep(1.0)
        with harness.RawConn(d.socket, timeout=60.0) as c:
            c.register()
            c.request({"type": "clear_request"})
            meta = c.instance_status()["meta"]
        after = None
        for _ in range(60):  # bounded: the last connection's exit trims the heap
            after = rss_anon_kib(d.pid)
            if after <= baseline + args.rss_slack_mib * 1024:
                break
            time.sleep(0.5)
        print("after: memory_usage %d, ipc_connections %d, RssAnon %d KiB (baseline %d KiB)"
              % (meta["memory_usage"], meta["ipc_connections"], after, baseline), flush=True)
        if meta["memory_usage"] != 0:
            print("memory_usage is not 0 after a clear", flush=True)
            failed = True
        if after > baseline + args.rss_slack_mib * 1024:
            print("the daemon's heap did not return to its baseline", flush=True)
            failed = True
        if not d.alive() or not fresh_client_answers(d):
            failed = True
        print("%s: %d frames, %d replies, seed %d" % ("FAILED" if failed else "ok", total["sent"], total["replies"],
                                                    args.seed), flush=True)
    finally:
        if failed:
            print(d.log_tail(), flush=True)
        if os.environ.get("FUZZ_LIVE_KEEP"):
            time.sleep(float(os.environ["FUZZ_LIVE_KEEP"]))
        d.cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
