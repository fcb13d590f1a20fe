"""``fluid.utils``: :mod:`trellis.fluid.utils.processor`."""

from . import processor

__all__ = ["processor"]
