"""syncd: a catalog sync daemon that mirrors a source catalog into product APIs."""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version


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
