"""`python -m syncd` runs the command line."""

from syncd.cli import entry

entry()
