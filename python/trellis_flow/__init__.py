"""Deprecated: the Python flow front door is now :mod:`trellis.flow`.

``import trellis_flow`` keeps working for one release and warns; write
``from trellis.flow import Flow, Runtime`` instead.
"""

import warnings

from trellis.flow import Flow, FlowFailed, Run, Runtime, infer_names

warnings.warn(
    "trellis_flow is deprecated and will be removed in the next release: "
    "use `from trellis.flow import Flow, Runtime` (pip install ./python)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["Flow", "FlowFailed", "Run", "Runtime", "infer_names"]
