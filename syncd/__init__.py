"""syncd: a catalog sync daemon that mirrors a source catalog into product APIs."""

import os
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

# NumPy's OpenBLAS starts a thread per core on import, and they spin while they wait: ~85 ms
# of CPU per process on the 2-core build machine, for linear algebra syncd never does (it
# uses NumPy for buffers of hashes, XOR, sorting and counts). One thread, unless the
# environment says otherwise; set before any syncd module imports NumPy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _version() -> str:
    """The version the build took from git tags (``syncd/_version.py``, written by
    hatch-vcs), else the installed distribution's, else ``0.0.0+unknown``."""
    try:
        return str(import_module("syncd._version").__version__)
    except ImportError:
        pass
    try:
        return version("syncd")
    except PackageNotFoundError:
        return "0.0.0+unknown"


__version__ = _version()
