"""A real headless Chromium (Debian's `chromium` + `chromium-driver`) driven by Selenium,
for the tests that look at what Trellis renders as a person would: the run report and the
dashboard. Helpers live here, not in conftest.py (several suites under tests/ have one)."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def required() -> bool:
    """On CI (and wherever TRELLIS_REQUIRE_BROWSER=1) a missing browser is a failure, not a
    skip: scripts/setup.sh installs it."""
    return os.environ.get("CI", "") not in ("", "0", "false") or os.environ.get("TRELLIS_REQUIRE_BROWSER") == "1"


def start(width: int = 1400, height: int = 1000):
    """A headless Chromium with console logging on; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--window-size={width},{height}",
    ):
        opts.add_argument(a)
    profile = tempfile.mkdtemp(prefix="trellis-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver from Debian's chromium-driver, never a download by selenium-manager.
    service = Service(executable_path=CHROMEDRIVER, log_output=os.devnull)
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_page_load_timeout(60)
    driver._trellis_profile = profile  # removed by stop()
    return driver


def stop(driver) -> None:
    profile = getattr(driver, "_trellis_profile", None)
    try:
        driver.quit()
    finally:
        if profile:
            shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver) -> list:
    """The SEVERE entries the page logged since the last call (the log is drained on read)."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def screenshot(driver, path: str) -> str:
    """A full-page PNG of what the browser shows (the window grows to the page's height)."""
    h = driver.execute_script(
        "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
    w = driver.get_window_size()["width"]
    driver.set_window_size(w, min(max(int(h) + 40, 400), 6000))
    # The window's size is not the viewport's: grow by what the viewport still lacks.
    inner = driver.execute_script("return window.innerHeight")
    if inner < h:
        outer = driver.get_window_size()["height"]
        driver.set_window_size(w, min(int(outer) + int(h) - int(inner) + 8, 6000))
    driver.save_screenshot(path)
    return path


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def trellis_bin() -> str:
    return os.environ.get("TRELLIS_BIN") or os.path.join(REPO, ".build", "debug", "trellis")


class TrellisHome:
    """A TRELLIS_HOME of its own under /tmp with a work directory holding the module's
    steps.py and flow files, the environment the `trellis` CLI runs with, a screenshot
    directory (docs/ with TRELLIS_UPDATE_SCREENSHOTS=1) and, once `runtime_up`, a runtime
    that `close` takes down again."""

    def __init__(self, prefix: str, steps: str, flows: dict, cli_timeout: float = 600, **env):
        self.cli_timeout = cli_timeout
        self.home = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        self.dir = os.path.join(self.home, "work")
        os.makedirs(self.dir)
        self.shots = os.path.join(REPO, "docs") if os.environ.get("TRELLIS_UPDATE_SCREENSHOTS") == "1" \
            else os.path.join(self.home, "shots")
        os.makedirs(self.shots, exist_ok=True)
        venv = os.path.dirname(sys.executable)
        self.env = dict(os.environ, TRELLIS_HOME=self.home, TRELLIS_PYTHON=sys.executable, PYTHONUNBUFFERED="1",
                        PATH=venv + os.pathsep + os.environ.get("PATH", ""),
                        **{k: os.path.join(self.home, v) for k, v in env.items()})
        self.env.pop("VINEYARD_IPC_SOCKET", None)
        with open(os.path.join(self.dir, "steps.py"), "w") as f:
            f.write(steps)
        for name, text in flows.items():
            with open(os.path.join(self.dir, name + ".yaml"), "w") as f:
                f.write(textwrap.dedent(text))
        self.runtime_is_up = False

    def trellis(self, *args, timeout=None, env=None):
        return subprocess.run([trellis_bin(), *args], env=env or self.env, cwd=self.dir, capture_output=True,
                              text=True, timeout=timeout or self.cli_timeout)

    def runtime_up(self, size: str) -> None:
        up = self.trellis("runtime", "up", "--replicas", "2", "--size", size)
        assert up.returncode == 0, up.stdout + up.stderr
        self.runtime_is_up = True

    def close(self) -> None:
        try:
            if self.runtime_is_up:
                down = self.trellis("runtime", "down", timeout=120)
                assert down.returncode == 0, down.stderr
        finally:
            shutil.rmtree(self.home, ignore_errors=True)
