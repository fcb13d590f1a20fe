"""`--htpasswd FILE`: the database is written by Apache's own `htpasswd` tool in each of
its formats (bcrypt, apr1 MD5, SHA-1, crypt, plain text), and every register the upstream
client makes — right and wrong passwords, unknown users — is accepted exactly when
`htpasswd -v` (what vineyardd runs at every register) accepts it. Runs against upstream
vineyardd too (TRELLIS_DAEMON=vineyardd)."""

import os
import shutil
import socket
import subprocess
import tempfile

import pytest

import harness

pytestmark = pytest.mark.skipif(shutil.which("htpasswd") is None,
                                reason="htpasswd (apache2-utils) is not installed: scripts/setup.sh installs it")

USERS = [  # user, password, htpasswd flag (format)
    ("alice", "s3cret-bcrypt", "-B"),
    ("bob", "apr1 with spaces", "-m"),
    ("carol", "sha-one", "-s"),
    ("dave", "crypt8ch", "-d"),
    ("eve", "plain", "-p"),
    ("frank", "", "-m"),  # an empty password is a password
]


def _write_db(path, users):
    for i, (user, password, flag) in enumerate(users):
        argv = ["htpasswd", "-b", flag] + (["-c"] if i == 0 else []) + [path, user, password]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)


def _tool_accepts(path, user, password):
    return subprocess.run(["htpasswd", "-v", "-b", path, user, password],
                          capture_output=True, timeout=60).returncode == 0


def _ipc_registers(sock, user, password):
    import vineyard

    try:
        c = vineyard.connect(sock, username=user, password=password)
    except vineyard._C.ConnectionErrorException:
        return False
    c.close()
    return True


@pytest.fixture
def db():
    d = tempfile.mkdtemp(prefix="trht", dir="/tmp")
    path = os.path.join(d, "htpasswd")
    _write_db(path, USERS)
    yield path
    shutil.rmtree(d, ignore_errors=True)


def test_every_register_is_judged_as_htpasswd_judges_it(daemon_factory, db):
    daemon = daemon_factory(size="64Mi", extra=("--htpasswd", db))
    attempts = []
    for user, password, _ in USERS:
        attempts += [(user, password), (user, password + "x"), (user, password.upper() + "!"), (user, "")]
    attempts += [("nobody", "s3cret-bcrypt"), ("", ""), ("alice:", "s3cret-bcrypt"), ("ALICE", "s3cret-bcrypt")]
    verdicts = [(u, p, _tool_accepts(db, u, p), _ipc_registers(daemon.socket, u, p)) for u, p in attempts]
    assert [v for v in verdicts if v[2] != v[3]] == [], "user, password, htpasswd -v, daemon"
    accepted = {u for u, _, tool, _ in verdicts if tool}
    # the file's formats really were exercised: each user with a hash logs in
    assert accepted == {"alice", "bob", "carol", "dave", "frank"}, accepted
    # and the daemon still serves: an accepted client works normally
    import vineyard

    c = vineyard.connect(daemon.socket, username="alice", password="s3cret-bcrypt")
    oid = c.put([1, 2, 3])
    assert list(c.get(oid)) == [1, 2, 3]
    c.close()


def test_a_user_added_to_the_file_logs_in_without_a_restart(daemon_factory, db):
    daemon = daemon_factory(size="64Mi", extra=("--htpasswd", db))
    assert not _ipc_registers(daemon.socket, "grace", "new-user")
    subprocess.run(["htpasswd", "-b", "-B", db, "grace", "new-user"], check=True, capture_output=True, timeout=60)
    assert _ipc_registers(daemon.socket, "grace", "new-user")
    subprocess.run(["htpasswd", "-D", db, "grace"], check=True, capture_output=True, timeout=60)
    assert not _ipc_registers(daemon.socket, "grace", "new-user")


@pytest.mark.trellis_only
def test_rpc_connections_authenticate_too(daemon_factory, db):
    import vineyard

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = daemon_factory(size="64Mi", extra=("--htpasswd", db, "--rpc", "--rpc_socket_port", str(port)))
    assert harness.wait_until(lambda: harness.daemons.tcp_accepts(port), timeout=30)
    # the binding's own connect: vineyard.connect() turns every RPC failure into one generic error
    with pytest.raises(vineyard._C.ConnectionErrorException, match="Incorrect"):
        vineyard._C._connect("127.0.0.1", port, username="alice", password="wrong")
    c = vineyard._C._connect("127.0.0.1", port, username="carol", password="sha-one")
    assert c.status.instance_id == 0
    c.close()


@pytest.mark.trellis_only
def test_no_request_is_served_before_a_successful_register(daemon_factory, db):
    """Upstream checks the password in register but serves a client that never registers;
    Trellis refuses every request until the connection has registered successfully."""
    daemon = daemon_factory(size="64Mi", extra=("--htpasswd", db))
    with harness.RawConn(daemon.socket) as c:
        for request in ({"type": "instance_status_request"}, {"type": "list_name_request", "pattern": "*"},
                        {"type": "create_buffer_request", "size": 64}):
            reply = c.request(request)
            assert harness.is_error(reply) and "register" in reply["message"], reply
        reply = c.request({"type": "register_request", "version": "0.24.2", "store_type": 1, "session_id": 0,
                           "username": "bob", "password": "wrong"})
        assert harness.is_error(reply, 34) and "Incorrect" in reply["message"], reply
        assert harness.is_error(c.request({"type": "instance_status_request"}))
        reply = c.request({"type": "register_request", "version": "0.24.2", "store_type": 1, "session_id": 0,
                           "username": "bob", "password": "apr1 with spaces"})
        assert reply["type"] == "register_reply", reply
        assert c.request({"type": "instance_status_request"})["type"] == "instance_status_reply"


@pytest.mark.trellis_only
def test_a_missing_database_stops_the_daemon_at_start():
    binary = harness.daemon_command("<socket>")[0]
    with tempfile.TemporaryDirectory(prefix="trht", dir="/tmp") as d:
        sock = os.path.join(d, "d.sock")
        missing = os.path.join(d, "no-such-htpasswd")
        p = subprocess.run([binary, "serve", "--socket", sock, "--size", "16Mi", "--norpc", "--htpasswd", missing],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert p.returncode != 0
        assert "--htpasswd" in p.stderr and missing in p.stderr, p.stderr
        assert not os.path.exists(sock)


@pytest.mark.trellis_only
def test_a_database_removed_while_running_refuses_everyone_clearly(daemon_factory, db):
    daemon = daemon_factory(size="64Mi", extra=("--htpasswd", db))
    assert _ipc_registers(daemon.socket, "carol", "sha-one")
    os.rename(db, db + ".moved")
    with harness.RawConn(daemon.socket) as c:
        reply = c.request({"type": "register_request", "version": "0.24.2", "store_type": 1, "session_id": 0,
                           "username": "carol", "password": "sha-one"})
        assert harness.is_error(reply, 34) and "htpasswd" in reply["message"], reply
    os.rename(db + ".moved", db)
    assert _ipc_registers(daemon.socket, "carol", "sha-one")
