"""Fixtures for the single-node daemon integration suite.

TRELLIS_DAEMON=trellis (default) runs Trellis (``$TRELLIS_BIN serve``);
TRELLIS_DAEMON=vineyardd runs the upstream 0.24.2 daemon from the pinned wheel.
Tests marked ``trellis_only`` check guarantees upstream does not give and are
skipped against vineyardd.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "trellis_only: a Trellis guarantee upstream vineyardd 0.24.2 does not give "
        "(skipped when TRELLIS_DAEMON=vineyardd)",
    )


def pytest_report_header(config):
    argv = harness.daemon_command("<socket>")
    return "daemon under test: %s (%s)" % (harness.daemon_kind(), " ".join(argv))


HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(config, items):
    # this hook sees the items of every suite in the run: touch only ours
    items = [item for item in items if str(item.fspath).startswith(HERE + os.sep)]
    # A daemon that stops answering must fail a test, not hang the run: with
    # pytest-timeout installed every test gets a limit (TRELLIS_TEST_TIMEOUT
    # seconds, default 300) unless it sets its own.
    if config.pluginmanager.hasplugin("timeout"):
        limit = float(os.environ.get("TRELLIS_TEST_TIMEOUT", "300"))
        for item in items:
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(limit))
    # TRELLIS_RUN_ALL=1 runs the trellis_only tests against upstream as well, to
    # see how upstream fails them.
    if not harness.is_upstream() or os.environ.get("TRELLIS_RUN_ALL") == "1":
        return
    skip = pytest.mark.skip(reason="trellis_only: upstream vineyardd behaves differently")
    for item in items:
        if "trellis_only" in item.keywords:
            item.add_marker(skip)


def _start(**kwargs):
    try:
        return harness.Daemon(**kwargs).start()
    except harness.DaemonError as e:
        pytest.fail(str(e), pytrace=False)


def _finish(daemon):
    """Stop a daemon; fail the test run if it crashed while it was in use."""
    crashed = not daemon.stopped and not daemon.alive()
    log = daemon.log_tail() if crashed else ""
    daemon.cleanup()
    if crashed:
        pytest.fail(
            "daemon died during the tests (exit status %s)\n%s" % (daemon.returncode, log),
            pytrace=False,
        )


@pytest.fixture(scope="module")
def daemon():
    """A daemon shared by the tests of one module (--size 2Gi)."""
    d = _start(size="2Gi")
    yield d
    _finish(d)


@pytest.fixture
def fresh_daemon():
    """A daemon of its own for a test that needs a clean baseline."""
    d = _start(size="2Gi")
    yield d
    _finish(d)


@pytest.fixture
def daemon_factory():
    """Start daemons with custom sizes / extra flags; all are stopped afterwards."""
    started = []

    def make(size="2Gi", extra=()):
        d = _start(size=size, extra=extra)
        started.append(d)
        return d

    yield make
    for d in started:
        _finish(d)


@pytest.fixture
def client(daemon):
    """A vineyard client (own connection) to the module daemon."""
    c = harness.connect(daemon.socket)
    yield c
    harness.disconnect(c)


@pytest.fixture
def fresh_client(fresh_daemon):
    c = harness.connect(fresh_daemon.socket)
    yield c
    harness.disconnect(c)
