"""`trellis dashboard` looked at as a person would: a real 2-replica runtime (the debug
`trellis`), real flows on it, the dashboard started with `--port 0` and opened in headless
Chromium.

The runtime table shows both replicas with the arena figures their daemons report to
`instance_status` (what `trellis status --json` prints); the runs are listed with their state;
every `/api/...` document equals the CLI's `--json` output; a step's log page shows its output
and follows a running step until it ends (so does the plain-text `?follow=1` stream); a replica
that is killed shows as down without breaking the page; no page logs a console error; anything
but GET/HEAD gets 405. Screenshots go to a temporary directory; TRELLIS_UPDATE_SCREENSHOTS=1
writes them to docs/ (docs/dashboard*.png, the pictures the README shows)."""

import json
import os
import select
import signal
import subprocess
import textwrap
import threading
import time
import urllib.error
import urllib.request

import pytest

import browser_lib

REPO = browser_lib.REPO

pytestmark = pytest.mark.timeout(600)


STEPS = textwrap.dedent('''
    import os, sys


    def produce():
        import numpy as np
        import vineyard
        vineyard.put(np.arange(300_000, dtype="float64"), name="numbers", persist=True)
        print("produced 300000 numbers")


    def total():
        import vineyard
        print("total:", float(vineyard.get(name="numbers", fetch=True).sum()))
        print("a warning on stderr", file=sys.stderr)


    def boom():
        print("about to fail", flush=True)
        print("boom: the input was <b>bad</b> & 'wrong'", file=sys.stderr, flush=True)
        sys.exit(3)


    def tick():
        import time
        print("tick 1", flush=True)
        while not os.path.exists(os.environ["GO_MARKER"]):
            time.sleep(0.05)
        print("tick 2", flush=True)
''')

FLOWS = {
    "ok": """
        name: dash-ok
        runtime: {replicas: 2, size: 128Mi}
        steps:
          - {name: produce, python: {file: steps.py, function: produce}, outputs: [numbers]}
          - {name: total, python: {file: steps.py, function: total}, inputs: [numbers]}
    """,
    "bad": """
        name: dash-bad
        runtime: {replicas: 2, size: 128Mi}
        steps:
          - {name: produce, python: {file: steps.py, function: produce}, outputs: [numbers]}
          - {name: boom, python: {file: steps.py, function: boom}, inputs: [numbers], outputs: [doubled]}
          - {name: total, python: {file: steps.py, function: total}, inputs: [doubled]}
    """,
    "live": """
        name: dash-live
        runtime: {replicas: 2, size: 128Mi}
        steps:
          - {name: tick, python: {file: steps.py, function: tick}}
    """,
}

# instance_status fields the runtime table shows, as `data-field` cells.
ARENA_FIELDS = ["memory_limit", "memory_usage", "free_bytes", "largest_free_block", "fragmentation",
                "spilled_bytes", "objects", "blobs"]


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError("timed out after %ss waiting for %s (last: %r)" % (timeout, what, last))


class Stack(browser_lib.TrellisHome):
    """A TRELLIS_HOME with a 2-replica runtime, two finished runs, and the dashboard on it."""

    def __init__(self):
        super().__init__("trdash", STEPS, FLOWS, cli_timeout=300, GO_MARKER="go")
        self.dashboard = None
        self.live = None
        self.url = None

    def start(self):
        self.runtime_up("128Mi")
        with open(os.path.join(self.home, "runtime", "state.json")) as f:
            self.state = json.load(f)
        ok = self.trellis("flow", "run", "ok.yaml", "--run-id", "ok-1", "--keep")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        bad = self.trellis("flow", "run", "bad.yaml", "--run-id", "bad-1")
        assert bad.returncode == 1, bad.stdout + bad.stderr
        self.dashboard = subprocess.Popen([browser_lib.trellis_bin(), "dashboard", "--port", "0"], env=self.env, cwd=self.dir,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The first line on stdout names the bound URL.
        ready, _, _ = select.select([self.dashboard.stdout], [], [], 60)
        assert ready, "the dashboard printed no URL within 60 s"
        line = self.dashboard.stdout.readline()
        assert line.startswith("trellis dashboard: http://127.0.0.1:"), line
        self.url = line.split()[2].rstrip("/")
        return self

    def cli_json(self, *args):
        out = self.trellis(*args)
        assert out.stdout.strip(), out.stderr
        return json.loads(out.stdout)

    def get(self, path, method="GET"):
        req = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def api(self, path):
        status, headers, body = self.get(path)
        assert status == 200 and headers["Content-Type"].startswith("application/json"), (path, status, body)
        return json.loads(body)

    def close(self):
        try:
            if self.live is not None and self.live.poll() is None:
                open(self.env["GO_MARKER"], "w").close()
                try:
                    self.live.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.live.kill()
                    self.live.wait()
            if self.dashboard is not None and self.dashboard.poll() is None:
                self.dashboard.send_signal(signal.SIGTERM)
                try:
                    self.dashboard.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.dashboard.kill()
                    self.dashboard.wait()
        finally:
            super().close()


@pytest.fixture(scope="module")
def stack():
    s = Stack()
    try:
        yield s.start()
    finally:
        s.close()


def no_console_errors(browser):
    errors = browser_lib.console_errors(browser)
    assert errors == [], errors


def replica_rows(browser):
    rows = {}
    for tr in browser.find_elements("css selector", "table.replicas tbody tr"):
        cells = {td.get_attribute("data-field"): td for td in tr.find_elements("css selector", "td[data-field]")}
        rows[int(tr.get_attribute("data-replica"))] = (tr, cells)
    return rows


def figures_match(browser, stack):
    """The table's arena figures equal what each daemon reports now (`trellis status --json`)."""
    browser.get(stack.url + "/")
    rows = replica_rows(browser)
    if sorted(rows) != [0, 1]:
        return False
    for r in stack.state["replicas"]:
        cli = stack.cli_json("status", "--socket", r["socket"], "--json")
        _, cells = rows[r["index"]]
        for field in ARENA_FIELDS:
            want = cli.get(field, 0)
            got = cells[field].get_attribute("data-value")
            if field == "fragmentation" and abs(float(got) - float(want)) > 1e-9:
                return False
            if field != "fragmentation" and int(got) != int(want):
                return False
    return rows


def test_runtime_table_shows_each_replica_arena_as_its_daemon_reports_it(browser, stack):
    rows = wait_until(lambda: figures_match(browser, stack), 60, "the table to match `trellis status --json`")
    for index, (tr, cells) in rows.items():
        assert "up" in tr.get_attribute("class").split()
        assert tr.find_element("css selector", ".badge").text == "up"
        assert int(cells["memory_limit"].get_attribute("data-value")) == 128 << 20
    # The kept run's objects occupy some replica's arena.
    assert sum(int(cells["objects"].get_attribute("data-value")) for _, cells in rows.values()) > 0
    assert sum(int(cells["memory_usage"].get_attribute("data-value")) for _, cells in rows.values()) > 0
    assert browser.find_element("css selector", "#runtime strong").text == stack.state["id"]
    no_console_errors(browser)


def test_runs_are_listed_with_their_state(browser, stack):
    browser.get(stack.url + "/")
    runs = {tr.get_attribute("data-run"): tr for tr in browser.find_elements("css selector", "table.runs tbody tr")}
    assert {"ok-1", "bad-1"} <= set(runs)
    assert runs["ok-1"].get_attribute("data-state") == "succeeded"
    assert runs["bad-1"].get_attribute("data-state") == "failed"
    assert "2 succeeded" in runs["ok-1"].text
    assert "1 failed" in runs["bad-1"].text and "1 upstream-failed" in runs["bad-1"].text
    no_console_errors(browser)


def test_api_documents_equal_the_cli_json(stack):
    assert stack.api("/api/runtimes") == stack.cli_json("runtime", "status", "--json")
    assert stack.api("/api/runs") == stack.cli_json("flow", "ls", "--json")
    for run in ("ok-1", "bad-1"):
        assert stack.api("/api/runs/" + run) == stack.cli_json("flow", "status", run, "--json")
    replicas = stack.api("/api/runtimes/replicas")
    assert [r["index"] for r in replicas] == [0, 1] and all(r["up"] for r in replicas)
    for r in replicas:
        cli = stack.cli_json("status", "--socket", r["socket"], "--json")
        # Each side counts its own connection; the rest is the same document.
        for doc in (cli, r["status"]):
            doc.pop("ipc_connections")
        assert r["status"] == cli
    logs = stack.trellis("flow", "logs", "bad-1", "boom")
    _, _, out = stack.get("/api/runs/bad-1/steps/boom/stdout")
    _, _, err = stack.get("/api/runs/bad-1/steps/boom/stderr")
    assert (out, err) == (logs.stdout, logs.stderr)
    # Read-only: anything but GET and HEAD is refused.
    for method in ("POST", "PUT", "DELETE"):
        status, headers, _ = stack.get("/api/runs", method=method)
        assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert stack.get("/api/runs", method="HEAD")[0] == 200
    assert stack.get("/api/runs/no-such-run")[0] == 404


def test_run_page_and_the_failed_steps_log(browser, stack):
    browser.get(stack.url + "/")
    browser.find_element("link text", "bad-1").click()
    assert browser.current_url == stack.url + "/runs/bad-1"
    steps = {tr.get_attribute("data-step"): tr for tr in browser.find_elements("css selector", "table.steps tbody tr")}
    assert {name: tr.get_attribute("data-state") for name, tr in steps.items()} == \
        {"produce": "succeeded", "boom": "failed", "total": "upstream-failed"}
    assert "exit 3" in steps["boom"].text
    no_console_errors(browser)
    browser_lib.screenshot(browser, os.path.join(stack.shots, "dashboard-run.png"))
    steps["boom"].find_element("link text", "log").click()
    # The step's output as it printed it: markup in a log is text, not HTML.
    assert browser.find_element("id", "stdout").text == "about to fail"
    assert "boom: the input was <b>bad</b> & 'wrong'" in browser.find_element("id", "stderr").text
    assert browser.find_elements("css selector", "#stderr b") == []
    no_console_errors(browser)
    # the run's report, served by the dashboard as `trellis flow report` writes it
    browser.get(stack.url + "/runs/bad-1")
    browser.find_element("link text", "full report").click()
    assert browser.current_url == stack.url + "/runs/bad-1/report"
    nodes = {g.get_attribute("data-step"): g.get_attribute("data-state")
             for g in browser.find_elements("css selector", "g.step")}
    assert nodes == {"produce": "succeeded", "boom": "failed", "total": "upstream-failed"}
    assert "the input was <b>bad</b>" in browser.find_element("tag name", "body").text
    no_console_errors(browser)


def test_a_running_steps_log_follows_until_it_ends(browser, stack):
    stack.live = subprocess.Popen([browser_lib.trellis_bin(), "flow", "run", "live.yaml", "--run-id", "live-1"], env=stack.env,
                                  cwd=stack.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ticking():
        status, _, body = stack.get("/api/runs/live-1/steps/tick/stdout")
        return status == 200 and "tick 1" in body

    wait_until(ticking, 120, "the step to print its first line")
    browser.get(stack.url + "/runs/live-1/steps/tick")
    assert "tick 1" in browser.find_element("id", "stdout").text
    assert browser.find_elements("css selector", "meta[http-equiv=refresh]")
    # The plain-text stream, as `flow logs --follow` prints it: open until the step ends.
    streamed = {}

    def follow():
        with urllib.request.urlopen(stack.url + "/api/runs/live-1/steps/tick/stdout?follow=1", timeout=120) as r:
            streamed["body"] = r.read().decode()

    reader = threading.Thread(target=follow)
    reader.start()
    open(stack.env["GO_MARKER"], "w").close()
    reader.join(timeout=150)
    assert not reader.is_alive(), "the follow stream did not end with the step"
    assert streamed["body"] == "tick 1\ntick 2\n"
    # The page reloads itself until the step is done, then stops.
    def finished_page():
        # the page may reload itself between finding an element and reading it: not yet
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

        try:
            return "tick 2" in browser.find_element("id", "stdout").text \
                and not browser.find_elements("css selector", "meta[http-equiv=refresh]")
        except (StaleElementReferenceException, NoSuchElementException):
            return False

    wait_until(finished_page, 120, "the log page to show the end of the step")
    assert stack.live.wait(timeout=120) == 0
    no_console_errors(browser)


def test_overview_screenshot_then_a_dead_replica_shows_down(browser, stack):
    browser.get(stack.url + "/")
    states = {tr.get_attribute("data-run"): tr.get_attribute("data-state")
              for tr in browser.find_elements("css selector", "table.runs tbody tr")}
    assert states == {"ok-1": "succeeded", "bad-1": "failed", "live-1": "succeeded"}
    no_console_errors(browser)
    browser_lib.screenshot(browser, os.path.join(stack.shots, "dashboard.png"))
    # Kill replica 1's daemon (started by this test's `runtime up`).
    pid = stack.state["processes"][1]["pid"]
    os.kill(pid, signal.SIGKILL)

    def shows_down():
        browser.get(stack.url + "/")
        rows = replica_rows(browser)
        return sorted(rows) == [0, 1] and "down" in rows[1][0].get_attribute("class").split() and rows

    rows = wait_until(shows_down, 60, "replica 1 to show as down")
    assert "up" in rows[0][0].get_attribute("class").split()
    assert rows[1][0].find_element("css selector", ".badge").text == "down"
    assert browser.find_element("css selector", "#runtime .badge").text == "degraded"
    no_console_errors(browser)
    browser_lib.screenshot(browser, os.path.join(stack.shots, "dashboard-down.png"))
    replicas = stack.api("/api/runtimes/replicas")
    assert [r["up"] for r in replicas] == [True, False] and "error" in replicas[1]
    assert stack.api("/api/runtimes") == stack.cli_json("runtime", "status", "--json")
    # SIGTERM ends the dashboard cleanly.
    stack.dashboard.send_signal(signal.SIGTERM)
    assert stack.dashboard.wait(timeout=30) == 0
