"""syncd's benchmark: first, no-change and 1% runs over generated catalogs, a naive
re-push baseline, and push throughput under latency. ``python -m bench --help``."""
