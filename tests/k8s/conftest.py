"""Fixtures for the Kubernetes render tests (helpers live in k8s_render.py and k8s_checks.py,
not here: several suites under tests/ have a conftest.py, so `import conftest` is ambiguous)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import k8s_render  # noqa: E402


@pytest.fixture(scope="session")
def render():
    return k8s_render.render_docs
