"""`trellis flow report` looked at as a person would: real flows on a real 2-replica runtime
(the debug `trellis`), their reports opened from file:// in headless Chromium.

For a finished, a failed (a step exits 3 with stderr), a resumed, a still-running run and a
small house-prices run: the DAG has one node per step with the step's state, the timeline one
bar per attempt, failed steps are marked and their log tail is on the page, and the page logs no
console error. Screenshots go to a temporary directory; TRELLIS_UPDATE_SCREENSHOTS=1 writes them
to docs/ instead (docs/report-*.png, the pictures the README shows)."""

import json
import os
import struct
import subprocess
import textwrap
import time

import pytest

import browser_lib

REPO = browser_lib.REPO

pytestmark = pytest.mark.timeout(900)


STEPS = textwrap.dedent('''
    import os, sys


    def produce():
        import numpy as np
        import vineyard
        vineyard.put(np.arange(200_000, dtype="float64"), name="numbers", persist=True)


    def double():
        import vineyard
        x = vineyard.get(name="numbers", fetch=True)
        vineyard.put(x * 2, name="doubled", persist=True)


    def produce_small():
        import numpy as np
        import vineyard
        vineyard.put(np.ones(1000), name="ones", persist=True)


    def join():
        import vineyard
        x = vineyard.get(name="numbers", fetch=True)
        y = vineyard.get(name="ones", fetch=True)
        vineyard.put(x * 2 + y.sum(), name="doubled", persist=True)


    def total():
        import vineyard
        print("total:", float(vineyard.get(name="doubled", fetch=True).sum()))


    def boom():
        print("about to fail", flush=True)
        print("boom: the input was <b>bad</b> & 'wrong'", file=sys.stderr, flush=True)
        sys.exit(3)


    def flaky():
        marker = os.environ["FLAKY_MARKER"]
        if not os.path.exists(marker):
            open(marker, "w").close()
            print("flaky: first run fails on purpose", file=sys.stderr, flush=True)
            sys.exit(3)
        import vineyard
        vineyard.put(vineyard.get(name="numbers", fetch=True) + 1, name="doubled", persist=True)


    def wait_for_go():
        import time
        while not os.path.exists(os.environ["GO_MARKER"]):
            time.sleep(0.05)
''')

FLOWS = {
    "ok": """
        name: report-ok
        runtime: {replicas: 2, size: 128Mi}
        steps:
          - {name: produce, python: {file: steps.py, function: produce}, outputs: [numbers]}
          - {name: produce-small, python: {file: steps.py, function: produce_small}, outputs: [ones]}
          - {name: join, python: {file: steps.py, function: join}, inputs: [numbers, ones], outputs: [doubled]}
          - {name: total, python: {file: steps.py, function: total}, inputs: [doubled]}
    """,
    "bad": """
        name: report-bad
        runtime: {replicas: 2, size: 128Mi}
        steps:
          - {name: produce, python: {file: steps.py, function: produce}, outputs: [numbers]}
          - {name: boom, python: {file: steps.py, function: boom}, inputs: [numbers], outputs: [doubled]}
          - {name: total, python: {file: steps.py, function: total}, inputs: [doubled]}
    """,
    "res": """
        name: report-resumed
        runtime: {replicas: 2, size: 128Mi}
        steps:
          - {name: produce, python: {file: steps.py, function: produce}, outputs: [numbers]}
          - {name: flaky, python: {file: steps.py, function: flaky}, inputs: [numbers], outputs: [doubled]}
          - {name: total, python: {file: steps.py, function: total}, inputs: [doubled]}
    """,
    "live": """
        name: report-live
        runtime: {replicas: 2, size: 128Mi}
        steps:
          - {name: produce, python: {file: steps.py, function: produce}, outputs: [numbers]}
          - {name: waiting, python: {file: steps.py, function: wait_for_go}, inputs: [numbers]}
    """,
}


class Runs(browser_lib.TrellisHome):
    """A TRELLIS_HOME with a 2-replica runtime, and the flows of this module run on it."""

    def __init__(self):
        super().__init__("trrep", STEPS, FLOWS, FLAKY_MARKER="flaky-ran", GO_MARKER="go")
        try:
            self.runtime_up("256Mi")
        except BaseException:
            self.close()
            raise

    def record(self, run_id):
        out = self.trellis("flow", "status", run_id, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def report(self, run_id, *extra):
        path = os.path.join(self.home, run_id + ".html")
        out = self.trellis("flow", "report", run_id, "--out", path, *extra)
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.strip() == path
        return path


@pytest.fixture(scope="module")
def runs():
    r = Runs()
    try:
        yield r
    finally:
        r.close()


def open_report(browser, path):
    browser_lib.console_errors(browser)  # drain what an earlier page logged
    browser.get("file://" + path)
    assert browser.find_element("css selector", "h1").is_displayed()


def check_page(browser, record):
    """The DAG and timeline match the record; no console errors."""
    steps = browser.find_elements("css selector", "svg.dag g.step")
    assert sorted(s.get_attribute("data-step") for s in steps) == sorted(s["name"] for s in record["steps"])
    states = {s.get_attribute("data-step"): s.get_attribute("data-state") for s in steps}
    assert states == {s["name"]: s["state"] for s in record["steps"]}
    for s in steps:  # drawn, with its name readable
        assert s.is_displayed()
    bars = browser.find_elements("css selector", "svg.timeline g.attempt")
    assert len(bars) == sum(s["attempts"] for s in record["steps"])
    per_step = {}
    for b in bars:
        per_step.setdefault(b.get_attribute("data-step"), []).append(int(b.get_attribute("data-attempt")))
        assert b.find_element("css selector", "rect.bar").size["width"] >= 1
    for s in record["steps"]:
        assert sorted(per_step.get(s["name"], [])) == list(range(1, s["attempts"] + 1)), s["name"]
    producer = {o: s["name"] for s in record["spec"]["steps"] for o in s.get("outputs", [])}
    pairs = {(producer[i], s["name"]) for s in record["spec"]["steps"] for i in s.get("inputs", [])}
    edges = browser.find_elements("css selector", "svg.dag g.edge")
    assert {(e.get_attribute("data-from"), e.get_attribute("data-to")) for e in edges} == pairs
    assert len(edges) == len(pairs)
    assert browser_lib.console_errors(browser) == []
    return states


def test_finished_run(runs, browser):
    out = runs.trellis("flow", "run", "ok.yaml", "--run-id", "ok")
    assert out.returncode == 0, out.stderr
    record = runs.record("ok")
    open_report(browser, runs.report("ok"))
    states = check_page(browser, record)
    assert set(states.values()) == {"succeeded"}
    assert browser.find_element("id", "run-state").text == "succeeded"
    assert browser.find_elements("css selector", "div.failure") == []
    # The two producers ran on both replicas (spread); join ran with the bigger input and the
    # smaller one was moved to it: a dashed edge, a hatched stretch on join's bar.
    by_step = {s["name"]: s for s in record["steps"]}
    assert {by_step["produce"]["replica"], by_step["produce-small"]["replica"]} == {0, 1}
    assert by_step["join"]["replica"] == by_step["produce"]["replica"]
    replicas = {s.get_attribute("data-step"): s.get_attribute("data-replica")
                for s in browser.find_elements("css selector", "svg.dag g.step")}
    assert replicas == {n: str(s["replica"]) for n, s in by_step.items()}
    fills = {s.get_attribute("data-step"): s.find_element("css selector", "rect").get_attribute("fill")
             for s in browser.find_elements("css selector", "svg.dag g.step")}
    assert fills["produce"] != fills["produce-small"]  # coloured by replica
    moved = browser.find_element("css selector", "svg.dag g.edge[data-from='produce-small'][data-to='join']")
    assert int(moved.get_attribute("data-moved-bytes")) == 8000
    assert "moved" in moved.text
    assert browser.find_elements("css selector", "svg.timeline g.attempt[data-step='join'] rect.move")
    # The objects table: the intermediates, produced and freed (the run did not --keep).
    rows = {r.get_attribute("data-object"): r.text for r in browser.find_elements("css selector", "tr.object")}
    assert set(rows) == {"numbers", "ones", "doubled"}
    assert "vineyard::Tensor" in rows["numbers"] and "1.5 MiB" in rows["numbers"]
    assert "still in the store" not in rows["numbers"]
    peak = browser.find_element("id", "total-peak").text
    assert "r0" in peak and "r1" in peak and "of 256.0 MiB" in peak
    browser_lib.screenshot(browser, os.path.join(runs.shots, "report-finished.png"))


def test_failed_run_shows_the_failure_and_its_log(runs, browser):
    out = runs.trellis("flow", "run", "bad.yaml", "--run-id", "bad")
    assert out.returncode == 1, out.stderr
    record = runs.record("bad")
    open_report(browser, runs.report("bad"))
    states = check_page(browser, record)
    assert states == {"produce": "succeeded", "boom": "failed", "total": "upstream-failed"}
    node = browser.find_element("css selector", "svg.dag g.step[data-step='boom']")
    assert node.find_element("css selector", "rect").get_attribute("stroke") == "#d62728"
    assert "exit 3" in node.text
    failure = browser.find_element("css selector", "div.failure[data-step='boom']")
    assert failure.is_displayed()
    assert "exit 3" in failure.text
    tail = failure.find_element("css selector", "pre.log-tail[data-stream='stderr']")
    assert tail.is_displayed()
    # The step's own words, shown as text (the markup in them escaped, not rendered).
    assert "boom: the input was <b>bad</b> & 'wrong'" in tail.text
    assert failure.find_elements("css selector", "pre.log-tail b") == []
    assert "about to fail" in failure.find_element("css selector", "pre.log-tail[data-stream='stdout']").text
    assert browser.find_element("id", "run-state").text == "failed"
    assert "total" in browser.find_element("css selector", "#failures .not-run").text
    browser_lib.screenshot(browser, os.path.join(runs.shots, "report-failed.png"))


def test_resumed_run(runs, browser):
    out = runs.trellis("flow", "run", "res.yaml", "--run-id", "res")
    assert out.returncode == 1, out.stderr
    out = runs.trellis("flow", "resume", "res")
    assert out.returncode == 0, out.stderr
    record = runs.record("res")
    assert record["resumes"] == 1
    open_report(browser, runs.report("res"))
    states = check_page(browser, record)
    assert set(states.values()) == {"succeeded"}
    flaky = browser.find_elements("css selector", "svg.timeline g.attempt[data-step='flaky']")
    assert [(b.get_attribute("data-attempt"), b.get_attribute("data-outcome"), b.get_attribute("data-invocation"))
            for b in flaky] == [("1", "failed", "0"), ("2", "succeeded", "1")]
    # Its failed first attempt is explained, with the log.
    failure = browser.find_element("css selector", "div.failure[data-step='flaky']")
    assert "first run fails on purpose" in failure.text
    assert "resumed 1" in browser.find_element("css selector", "header").text
    browser_lib.screenshot(browser, os.path.join(runs.shots, "report-resumed.png"))


def test_running_run(runs, browser):
    proc = subprocess.Popen([browser_lib.trellis_bin(), "flow", "run", "live.yaml", "--run-id", "live"], env=runs.env,
                            cwd=runs.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            st = runs.trellis("flow", "status", "live", "--json")
            if st.returncode == 0 and st.stdout.strip():
                steps = {s["name"]: s for s in json.loads(st.stdout)["steps"]}
                if steps["waiting"]["state"] == "running":
                    break
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the waiting step never started"
            time.sleep(0.1)
        record = runs.record("live")
        open_report(browser, runs.report("live"))
        states = check_page(browser, record)
        assert states == {"produce": "succeeded", "waiting": "running"}
        bar = browser.find_element("css selector", "svg.timeline g.attempt[data-step='waiting']")
        assert bar.get_attribute("data-outcome") == "running"
        assert browser.find_element("id", "run-state").text == "running"
    finally:
        open(runs.env["GO_MARKER"], "w").close()
        try:
            proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0


def test_svg_and_png(runs):
    if not runs.trellis("flow", "status", "bad").returncode == 0:
        runs.trellis("flow", "run", "bad.yaml", "--run-id", "bad")
    svg = os.path.join(runs.home, "bad.svg")
    out = runs.trellis("flow", "report", "bad", "--format", "svg", "--out", svg)
    assert out.returncode == 0, out.stderr
    with open(svg) as f:
        text = f.read()
    import xml.dom.minidom
    doc = xml.dom.minidom.parseString(text)  # well-formed
    groups = [g for g in doc.getElementsByTagName("g") if g.getAttribute("class") == "step"]
    assert len(groups) == 3
    png = os.path.join(runs.home, "bad.png")
    out = runs.trellis("flow", "report", "bad", "--format", "png", "--out", png)
    if not browser_lib.CHROMIUM:
        assert out.returncode != 0 and "Chromium" in out.stderr
        return
    assert out.returncode == 0, out.stderr
    with open(png, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert width > 800 and height > 300
    # Without a browser it says so and what to use instead.
    env = dict(runs.env, PATH="/nonexistent", TRELLIS_CHROMIUM="")
    out = runs.trellis("flow", "report", "bad", "--format", "png", "--out", png, env=env)
    assert out.returncode == 1 and "needs headless Chromium" in out.stderr and "--format svg" in out.stderr


def test_house_prices_report(runs, browser):
    """The README's picture: a small house-prices run, 2 replicas."""
    env = dict(runs.env, HOUSE_ROWS="20000")
    flow = os.path.join(REPO, "examples", "house-prices", "flow.yaml")
    out = runs.trellis("flow", "run", flow, "--run-id", "house-prices", env=env)
    assert out.returncode == 0, out.stderr
    record = runs.record("house-prices")
    open_report(browser, runs.report("house-prices"))
    states = check_page(browser, record)
    assert set(states.values()) == {"succeeded"}
    assert len(browser.find_elements("css selector", "tr.object")) == 6
    browser_lib.screenshot(browser, os.path.join(runs.shots, "report-house-prices.png"))
