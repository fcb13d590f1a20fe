#!/usr/bin/env python3
"""Writes the fuzzers' seed inputs (Fuzz/corpus/<harness>/) from the captured upstream
transcripts: every message as JSON text (FuzzJSON), each connection's client bytes as
frames (FuzzFrame), each connection's requests as newline-separated JSON (FuzzRequest),
and the client side of every connection (Fuzz/corpus/live.jsonl, for scripts/fuzz_live.py).

Usage: scripts/fuzz_seeds.py [TRANSCRIPT_DIR]  (default: Tests/Fixtures/captured)
"""
import hashlib
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "Tests", "Fixtures", "captured")
OUT = os.path.join(ROOT, "Fuzz", "corpus")


def write(harness, data):
    d = os.path.join(OUT, harness)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def compact(msg):
    return json.dumps(msg, separators=(",", ":"), sort_keys=True).encode()


sessions = []
for file in sorted(os.listdir(SRC)):
    if not file.endswith(".jsonl"):
        continue
    conns = {}
    with open(os.path.join(SRC, file)) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            if r.get("kind") != "msg":
                continue
            if "msg" not in r:  # a malformed frame the capture kept as text: a seed as it is
                write("FuzzJSON", r.get("raw", "").encode())
                continue
            body = compact(r["msg"])
            write("FuzzJSON", body)
            if r["dir"] == "c2s":
                conns.setdefault((file, r["conn"]), []).append(r["msg"])
    for key, msgs in conns.items():
        sessions.append({"source": "%s#%s" % key, "requests": msgs})
        write("FuzzFrame", b"".join(struct.pack("<Q", len(compact(m))) + compact(m) for m in msgs[:32]))
        for i in range(0, len(msgs), 16):
            write("FuzzRequest", b"\n".join(compact(m) for m in msgs[i:i + 16]))

with open(os.path.join(OUT, "live.jsonl"), "w") as f:
    for s in sessions:
        f.write(json.dumps(s, separators=(",", ":"), sort_keys=True) + "\n")
print("%d sessions; seeds in %s" % (len(sessions), OUT))
