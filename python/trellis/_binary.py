"""Finding the ``trellis`` binary the Python front doors drive."""

from __future__ import annotations

import os
import shutil
from typing import Mapping, Optional

__all__ = ["TrellisNotFound", "find_trellis"]


class TrellisNotFound(FileNotFoundError):
    """Neither ``$TRELLIS_BIN`` nor ``trellis`` on ``PATH`` gives a runnable binary."""


def find_trellis(explicit: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> str:
    """The ``trellis`` binary to run: ``explicit`` if given, else ``$TRELLIS_BIN``, else
    ``trellis`` on ``PATH``.

    Raises :class:`TrellisNotFound` with what was tried and how to fix it.
    """
    env = os.environ if environ is None else environ
    candidate = explicit or env.get("TRELLIS_BIN") or None
    if candidate:
        source = "the trellis argument" if explicit else "TRELLIS_BIN"
        if os.path.isdir(candidate) or not os.access(candidate, os.X_OK):
            raise TrellisNotFound(
                "%s is %r, which is not an executable file (build it with "
                "`swift build --product trellis`, then point %s at .build/debug/trellis)" % (source, candidate, source))
        return os.path.abspath(candidate)
    found = shutil.which("trellis", path=env.get("PATH"))
    if found:
        return found
    raise TrellisNotFound(
        "no trellis binary: TRELLIS_BIN is not set and `trellis` is not on PATH "
        "(build it with `swift build --product trellis` and set TRELLIS_BIN=$PWD/.build/debug/trellis, "
        "or put the binary on PATH)")
