"""A real Prometheus (Debian's `prometheus`) scrapes Trellis: two `trellis serve
--metrics_port 0` daemons on a real etcd, and a `trellis flow run --metrics-port 0`.

The test runs its own Prometheus (temporary config and storage, a free port, 1 s scrapes,
targets through a file_sd file it writes once it knows the ports) and stops everything by
PID. It sends a known set of requests, then polls Prometheus' query API until the series
say exactly that; it also scrapes /metrics directly and checks that every metric
docs/METRICS.md documents is served with the documented type.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import urllib.request
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "cluster"))

import cluster_lib  # noqa: E402
from benchkit import daemons  # noqa: E402  (cluster_lib put bench/ on the path)

PROMETHEUS = shutil.which("prometheus")
ETCD = cluster_lib.find_etcd()
pytestmark = pytest.mark.skipif(
    not PROMETHEUS or not ETCD, reason="needs Debian's prometheus and etcd (scripts/setup.sh installs both)")

DEADLINE = 60.0  # generous: a busy 2-core machine; every wait polls for its condition


def documented_metrics():
    """{section: {name: type}} from the tables of docs/METRICS.md."""
    sections, current = {}, None
    with open(os.path.join(REPO, "docs", "METRICS.md")) as f:
        for line in f:
            if line.startswith("## "):
                current = sections.setdefault(line[3:].strip(), {})
                continue
            m = re.match(r"\|\s*`(trellis_[a-z_]+)`\s*\|\s*(counter|gauge|histogram)\s*\|", line)
            if m and current is not None:
                current[m.group(1)] = m.group(2)
    return sections


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


def families(text):
    """{name: type} from the exposition's # TYPE lines."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


class Prometheus:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tprom", dir="/tmp")
        self.port = cluster_lib.free_port()
        self.targets = os.path.join(self.dir, "targets.json")
        self.set_targets([])
        config = textwrap.dedent("""\
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: trellis
                file_sd_configs:
                  - files: [%s]
                    refresh_interval: 1s
            """ % json.dumps(self.targets))
        with open(os.path.join(self.dir, "prometheus.yml"), "w") as f:
            f.write(config)
        argv = [PROMETHEUS, "--config.file=" + os.path.join(self.dir, "prometheus.yml"),
                "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
                "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"]
        self.process = daemons.Process(argv, os.path.join(self.dir, "prometheus.log"))

    def start(self):
        self.process.spawn()
        cluster_lib.wait_until(self.ready, DEADLINE, interval=0.2, what="prometheus ready")
        return self

    def ready(self):
        assert self.process.alive(), "prometheus exited:\n" + self.process.log_tail()
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/-/ready" % self.port, timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def set_targets(self, targets):
        """targets: [(port, {label: value})]; written atomically (file_sd watches the file)."""
        groups = [{"targets": ["127.0.0.1:%d" % port], "labels": labels} for port, labels in targets]
        tmp = self.targets + ".tmp"
        with open(tmp, "w") as f:
            json.dump(groups, f)
        os.rename(tmp, self.targets)

    def query(self, expr):
        """{frozenset(labels without __name__/job/instance): value} of an instant query."""
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (self.port, urllib.parse.urlencode({"query": expr}))
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        out = {}
        for s in body["data"]["result"]:
            labels = {k: v for k, v in s["metric"].items() if k not in ("__name__", "job", "instance")}
            out[frozenset(labels.items())] = float(s["value"][1])
        return out

    def value(self, expr):
        """The single value of `expr`, or None while it has no series."""
        r = self.query(expr)
        assert len(r) <= 1, (expr, r)
        return next(iter(r.values())) if r else None

    def wait_for(self, expr, expected):
        """Polls until `expr` is `expected` (exactly), failing with the last value seen."""
        seen = []

        def check():
            seen[:] = [self.value(expr)]
            return seen[0] == expected

        try:
            cluster_lib.wait_until(check, DEADLINE, interval=0.25, what=expr)
        except TimeoutError:
            raise AssertionError("%s: expected %r, last %r" % (expr, expected, seen[0] if seen else None)) from None

    def cleanup(self):
        self.process.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def prom():
    p = Prometheus()
    try:
        yield p.start()
    finally:
        p.cleanup()


@pytest.fixture(scope="module")
def etcd():
    e = cluster_lib.Etcd(ETCD).start()
    try:
        yield e
    finally:
        e.cleanup()


def metrics_port(node):
    """The exporter's port, from instance_status (0 until it listens)."""
    ports = []
    cluster_lib.wait_until(lambda: ports.append(node.status().get("metrics_port", 0)) or ports[-1] > 0,
                           DEADLINE, what="metrics_port in instance_status")
    return ports[-1]


@pytest.fixture(scope="module")
def nodes(etcd):
    prefix = "metrics-" + uuid.uuid4().hex[:8]
    started = []
    try:
        for _ in range(2):
            started.append(cluster_lib.Node(etcd.endpoint, prefix, size="256Mi",
                                            extra=["--metrics_port", "0"]).start())
        yield started
    finally:
        for n in started:
            n.cleanup()


def test_prometheus_scrapes_daemons(prom, nodes):
    import numpy as np
    import vineyard

    a, b = nodes
    ports = [metrics_port(a), metrics_port(b)]
    prom.set_targets([(ports[0], {"node": "a"}), (ports[1], {"node": "b"})])

    # What the test does, so what the series must say:
    array = np.arange(100_000, dtype=np.int64)  # one blob of 800,000 bytes
    client_a = vineyard.connect(a.socket)
    client_a.put(array, persist=True, name="m_x")
    client_b = vineyard.connect(b.socket)
    got = client_b.get(name="m_x", fetch=True)  # B migrates it from A over RPC
    assert (np.asarray(got) == array).all()
    for _ in range(2):
        r = a.request({"type": "get_name_request", "name": "m_missing", "wait": False})
        assert r["code"] == 12  # ObjectNotExists
    r = a.request({"type": "no_such_request"})
    assert r["code"] == 1  # Invalid

    prom.wait_for('trellis_requests_total{node="a",type="get_name_request",status="ObjectNotExists"}', 2)
    prom.wait_for('trellis_requests_total{node="a",type="other",status="Invalid"}', 1)
    prom.wait_for('trellis_migrations_total{node="b",status="ok"}', 1)
    prom.wait_for('trellis_migrated_bytes_total{node="b"}', array.nbytes)
    prom.wait_for('trellis_migrations_total{node="a",status="ok"}', 0)
    prom.wait_for('trellis_migration_duration_seconds_count{node="b"}', 1)
    # the put went through create_buffer and persist on A
    assert prom.value('trellis_requests_total{node="a",type="create_buffer_request",status="ok"}') >= 1
    assert prom.value('trellis_requests_total{node="a",type="persist_request",status="ok"}') >= 1

    # One scrape: per type, the histogram's count is the requests' total over statuses.
    totals = prom.query('sum by (type) (trellis_requests_total{node="a"})')
    counts = prom.query('sum by (type) (trellis_request_duration_seconds_count{node="a"})')
    assert totals and totals == counts
    inf = prom.query('trellis_request_duration_seconds_bucket{node="a",le="+Inf"}')
    assert {dict(k)["type"]: v for k, v in inf.items()} == {dict(k)["type"]: v for k, v in counts.items()}

    # etcd round trips: registration and the publish of the persisted object, no failures
    assert prom.value('sum(trellis_etcd_round_trips_total{node="a",operation="kv/txn"})') >= 1
    assert prom.value('sum(trellis_etcd_failures_total{node="a"})') == 0

    # The gauges follow the store: nothing changes now, so they settle on instance_status.
    for node, label in ((a, "a"), (b, "b")):
        st = node.status()
        for metric, key in (("trellis_arena_used_bytes", "memory_usage"), ("trellis_arena_limit_bytes", "memory_limit"),
                            ("trellis_arena_free_bytes", "free_bytes"), ("trellis_objects", "objects"),
                            ("trellis_blobs", "blobs"), ("trellis_names", "names"),
                            ("trellis_spilled_bytes", "spilled_bytes")):
            prom.wait_for('%s{node="%s"}' % (metric, label), st[key])
    assert prom.value('trellis_arena_used_bytes{node="b"}') >= array.nbytes
    prom.wait_for('trellis_clients{node="a",transport="ipc"}', a.status()["ipc_connections"] - 1)

    # Directly: every documented daemon metric, with its type.
    served = families(scrape(ports[0]))
    documented = documented_metrics()["Daemon"]
    assert len(documented) >= 20
    missing = {m: t for m, t in documented.items() if served.get(m) != t}
    assert not missing, "documented but not served (or another type): %s" % missing
    client_a.close()
    client_b.close()


FLOW = """\
name: metered
runtime: {replicas: 1, size: 256Mi}
steps:
  - {name: produce, python: {file: steps.py, function: produce}, outputs: [x]}
  - {name: consume, python: {file: steps.py, function: consume}, inputs: [x]}
"""

STEPS = """\
import numpy as np
import vineyard


def produce():
    vineyard.connect().put(np.arange(10_000), name="x", persist=True)


def consume():
    assert int(vineyard.connect().get(name="x").sum()) == sum(range(10_000))
"""


def test_prometheus_scrapes_the_flow_runner(prom):
    work = tempfile.mkdtemp(prefix="tflow", dir="/tmp")
    runner = None
    try:
        with open(os.path.join(work, "flow.yaml"), "w") as f:
            f.write(FLOW)
        with open(os.path.join(work, "steps.py"), "w") as f:
            f.write(STEPS)
        env = dict(os.environ, TRELLIS_HOME=os.path.join(work, "home"), TRELLIS_PYTHON=sys.executable)
        env.pop("VINEYARD_IPC_SOCKET", None)
        out, err = os.path.join(work, "out.log"), os.path.join(work, "err.log")
        with open(out, "w") as o, open(err, "w") as e:
            runner = subprocess.Popen(
                [cluster_lib.trellis_bin(), "flow", "run", os.path.join(work, "flow.yaml"), "--run-id", "metered-1",
                 "--metrics-port", "0", "--metrics-linger", "120"],
                stdout=o, stderr=e, env=env, cwd=work, start_new_session=True)

        def read(path):
            with open(path) as f:
                return f.read()

        port = []

        def announced():
            assert runner.poll() is None, "runner exited: %s\n%s" % (read(out), read(err))
            m = re.search(r"metrics at http://127\.0\.0\.1:(\d+)/metrics", read(err))
            return bool(m) and not port.append(int(m.group(1)))

        cluster_lib.wait_until(announced, DEADLINE, what="the runner's metrics URL")
        prom.set_targets([(port[0], {"node": "runner"})])

        # The run ends while the runner keeps serving (--metrics-linger); its record says so
        # (stdout, a file here, is flushed only at exit).
        def record():
            r = subprocess.run([cluster_lib.trellis_bin(), "flow", "status", "metered-1", "--json"], env=env,
                               capture_output=True, text=True)
            return json.loads(r.stdout) if r.returncode == 0 else None

        def finished():
            assert runner.poll() is None, "runner exited: %s\n%s" % (read(out), read(err))
            r = record()
            return r is not None and r["state"] != "running"

        cluster_lib.wait_until(finished, 180, interval=0.5, what="the run to finish")
        final = record()
        assert final["state"] == "succeeded", read(err)

        for step in ("produce", "consume"):
            prom.wait_for('trellis_flow_step_attempts_total{flow="metered",step="%s",result="succeeded"}' % step, 1)
            prom.wait_for('trellis_flow_step_duration_seconds_count{flow="metered",step="%s"}' % step, 1)
        prom.wait_for('trellis_flow_runs_total{flow="metered",state="succeeded"}', 1)
        # one replica: nothing to move
        prom.wait_for('trellis_flow_moved_bytes_total{flow="metered",step="consume"}', 0)
        # the steps' own put and get were timed (their handoff)
        assert prom.value('trellis_flow_handoff_seconds_total{flow="metered",step="produce",phase="put"}') > 0
        assert prom.value('trellis_flow_handoff_seconds_total{flow="metered",step="consume",phase="get"}') > 0
        # the record agrees on the steps' durations
        total = sum(s["duration"] for s in final["steps"])
        summed = prom.value('sum(trellis_flow_step_duration_seconds_sum{flow="metered"})')
        assert abs(summed - total) < 1e-6 * max(1.0, total)

        served = families(scrape(port[0]))
        documented = documented_metrics()["Flow runner"]
        missing = {m: t for m, t in documented.items() if served.get(m) != t}
        assert not missing, "documented but not served (or another type): %s" % missing
    finally:
        if runner is not None and runner.poll() is None:
            os.killpg(runner.pid, signal.SIGTERM)
            try:
                runner.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(runner.pid, signal.SIGKILL)
                runner.wait()
        shutil.rmtree(work, ignore_errors=True)
