"""Trellis from Python.

- :mod:`trellis.flow` — flows in the chaining style (``Flow().process(f).process(g).run()``),
  the same flow model as the YAML file and the Swift API.
- :mod:`trellis.fluid` — the Fluid Python SDK calls of the VineyardRuntime + DataFlow
  tutorial, running on a Trellis runtime: a notebook written for Fluid runs with
  ``from trellis import fluid`` in place of ``import fluid``.

Both drive the ``trellis`` binary, found through ``$TRELLIS_BIN`` or on ``PATH``
(:func:`find_trellis`). Step code talks to the object store with the upstream ``vineyard``
client, unchanged.
"""

from ._binary import TrellisNotFound, find_trellis

__version__ = "0.3.0"
__all__ = ["TrellisNotFound", "find_trellis", "__version__"]
