"""Trellis step stub (written by the runner; do not edit): runs ARGV in a worker forked by the zygote."""
import json
import os
import signal
import socket
import sys
import time


def main():
    split = sys.argv.index("--")
    path = sys.argv[sys.argv.index("--zygote") + 1]
    argv = sys.argv[split + 1:]
    interpreter = os.environ.get("TRELLIS_STUB_PYTHON") or sys.executable
    zygote = int(sys.argv[sys.argv.index("--pid") + 1]) if "--pid" in sys.argv[:split] else 0
    # A zygote still preloading is as fast as a cold start: wait for it while it lives.
    deadline = time.monotonic() + 10
    while zygote and not os.path.exists(path) and time.monotonic() < deadline:
        try:
            os.kill(zygote, 0)
        except OSError:
            break
        time.sleep(0.01)
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.connect(path)
        message = json.dumps({"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
        socket.send_fds(conn, [message], [0, 1, 2])
        pid = int(conn.recv(64))
    except (OSError, ValueError):
        os.execv(interpreter, [interpreter] + argv)  # no zygote: start the step cold

    def forward(signum, _frame):
        try:
            os.killpg(pid, signum)
        except OSError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    reply = conn.recv(64)
    if not reply:
        sys.stderr.write("trellis: the zygote went away while the step ran\n")
        sys.exit(70)
    code = int(reply)
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


main()
