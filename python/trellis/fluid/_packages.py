"""Checking a processor's ``packages_to_install`` against the step's Python environment.

Fluid installs them with pip at every pod start. Trellis steps run in an environment set up
beforehand (the project's venv, or the image on a cluster), so each requirement is checked
instead: a package that is not installed is an error naming it, a different installed
version a warning.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

__all__ = ["Requirement", "parse_requirement", "check_requirements", "installed_versions",
           "PackageNotInstalled", "PackageVersionWarning"]


class PackageNotInstalled(RuntimeError):
    """A package a processor needs is not installed in the step's environment."""


class PackageVersionWarning(UserWarning):
    """The step's environment has a package in another version than the processor asks for."""


class Requirement(NamedTuple):
    name: str          # as written
    key: str           # normalized (PEP 503)
    specifier: str     # e.g. "==1.4.0", ">=1,<2", "" for any


_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(text: str) -> Requirement:
    """``"scikit-learn==1.4.0"`` -> Requirement("scikit-learn", "scikit-learn", "==1.4.0").

    Environment markers (``; python_version < "3.9"``) are dropped; URLs are rejected.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("packages_to_install: %r is not a package requirement" % (text,))
    body = text.split(";", 1)[0].strip()
    if "@" in body or "://" in body:
        raise ValueError("packages_to_install: %r: direct references (URLs) are not supported; name the package "
                         "and install it into the step's environment" % text)
    m = _NAME.match(body)
    if not m:
        raise ValueError("packages_to_install: %r is not a package requirement" % text)
    spec = m.group(3).strip().replace(" ", "")
    if spec and not re.fullmatch(r"(?:(?:===|==|!=|~=|>=|<=|>|<)[A-Za-z0-9.*+!_-]+,?)+", spec):
        raise ValueError("packages_to_install: %r: cannot read the version specifier %r" % (text, spec))
    return Requirement(m.group(1), normalize(m.group(1)), spec.rstrip(","))


_QUERY = r"""
import json, sys
from importlib import metadata
out = {}
for name in json.loads(sys.argv[1]):
    try:
        out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        out[name] = None
print(json.dumps(out))
"""


def installed_versions(names: Sequence[str], interpreter: Optional[str] = None) -> Dict[str, Optional[str]]:
    """Installed version of each distribution (``None`` when absent) in ``interpreter``'s
    environment (default: this one)."""
    if interpreter is None or interpreter == sys.executable:
        from importlib import metadata
        out: Dict[str, Optional[str]] = {}
        for n in names:
            try:
                out[n] = metadata.version(n)
            except metadata.PackageNotFoundError:
                out[n] = None
        return out
    proc = subprocess.run([interpreter, "-c", _QUERY, json.dumps(list(names))],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError("cannot query the packages of %s: %s" % (interpreter, proc.stderr.strip()))
    result: Dict[str, Optional[str]] = json.loads(proc.stdout)
    return result


def satisfies(version: str, specifier: str) -> Optional[bool]:
    """Whether ``version`` meets ``specifier``; ``None`` when that cannot be decided here."""
    if not specifier:
        return True
    try:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
        from packaging.version import InvalidVersion, Version
    except ImportError:  # packaging absent: decide exact pins only
        clauses = specifier.split(",")
        if len(clauses) == 1 and clauses[0].startswith("==") and "*" not in clauses[0]:
            return normalize(clauses[0].lstrip("=")) == normalize(version)
        return None
    try:
        return Version(version) in SpecifierSet(specifier)
    except (InvalidSpecifier, InvalidVersion):
        return None


def check_requirements(requirements: Sequence[str], versions: Dict[str, Optional[str]],
                       where: str) -> Tuple[List[str], List[str]]:
    """Pure check: ``(errors, warnings)`` for ``requirements`` given ``versions`` (requirement
    name -> installed version or ``None``)."""
    errors: List[str] = []
    warns: List[str] = []
    for text in requirements:
        req = parse_requirement(text)
        have = versions.get(req.name)
        if have is None:
            errors.append("package %r (from packages_to_install %r) is not installed in %s; install it there "
                          "(e.g. add it to scripts/requirements.txt)" % (req.name, text, where))
            continue
        ok = satisfies(have, req.specifier)
        if ok is False:
            warns.append("packages_to_install asks for %s but %s has %s %s; the step runs with %s"
                         % (text, where, req.name, have, have))
    return errors, warns
