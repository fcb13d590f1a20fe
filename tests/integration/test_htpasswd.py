"""Issue 17: `--htpasswd` used to be accepted and ignored (wrong credentials registered
fine). Until Trellis implements authentication, the flag makes the daemon refuse to
start with a clear error and a non-zero exit, and it creates no socket."""

import os
import subprocess
import tempfile

import pytest

import harness

pytestmark = pytest.mark.trellis_only


def test_htpasswd_is_refused_at_start():
    binary = harness.daemon_command("<socket>")[0]
    with tempfile.TemporaryDirectory(prefix="trht", dir="/tmp") as d:
        htpasswd = os.path.join(d, "htpasswd")
        with open(htpasswd, "w") as f:
            f.write("alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n")
        sock = os.path.join(d, "d.sock")
        p = subprocess.run([binary, "serve", "--socket", sock, "--size", "16Mi", "--norpc", "--htpasswd", htpasswd],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert p.returncode != 0
        assert "--htpasswd" in p.stderr and "authentication" in p.stderr
        assert not os.path.exists(sock)
