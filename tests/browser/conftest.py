"""Fixtures for the browser tests: one headless Chromium per module (see browser_lib.py)."""

import importlib.util
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import browser_lib  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    if not (browser_lib.CHROMIUM and browser_lib.CHROMEDRIVER):
        if browser_lib.required():
            pytest.fail("chromium and chromium-driver are not installed (scripts/setup.sh installs them)")
        pytest.skip("no chromium/chromedriver (scripts/setup.sh installs them)")
    if importlib.util.find_spec("selenium") is None:
        pytest.fail("selenium is not in the venv (scripts/requirements.txt)")
    driver = browser_lib.start()
    try:
        yield driver
    finally:
        browser_lib.stop(driver)
