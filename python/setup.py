"""The C part of the trellis package: trellis._zerocopy, numpy's memory handler for
zero-copy put (trellis.accel.zero_copy). Optional: without a compiler, Python headers or
numpy at build time the package installs without it and zero-copy put is unavailable
(``zero_copy()`` returns False). scripts/setup-python.sh builds it against the venv's
numpy (``--no-build-isolation``)."""

from setuptools import Extension, setup

try:
    import numpy
except ImportError:  # no numpy to build against: the pure-Python package
    ext_modules = []
else:
    ext_modules = [
        Extension(
            "trellis._zerocopy",
            ["trellis/_zerocopy.c"],
            include_dirs=[numpy.get_include()],
            extra_compile_args=["-O2", "-Wall", "-Werror"],
            optional=True,
        )
    ]

setup(ext_modules=ext_modules)
