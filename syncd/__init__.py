"""syncd: a catalog sync daemon that mirrors a source catalog into product APIs."""

__version__ = "0.1.0"
