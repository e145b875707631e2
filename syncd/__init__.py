"""syncd: a catalog sync daemon that mirrors a source catalog into product APIs."""

import os
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

# NumPy's OpenBLAS starts a thread per core on import, and they spin while they wait: ~85 ms
# of CPU per process on the 2-core build machine, for linear algebra syncd never does (it
# uses NumPy for buffers of hashes, XOR, sorting and counts). One thread, unless the
# environment says otherwise; set before any syncd module imports NumPy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# Pydantic looks for plugins (``pydantic`` entry points) when it builds its first model: a
# scan of every installed distribution's metadata (~19 M instructions, 0.7% of an empty
# ``syncd plan``), for observers of validation syncd has no use for. None, unless the
# environment names some; set before any syncd module builds a config model.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


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
