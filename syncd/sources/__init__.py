"""Sources: where the catalog is read from (a file export, a SQL database, an HTTP API)."""

from __future__ import annotations

from syncd.config import (
    FileSourceConfig,
    HttpConfig,
    HttpSourceConfig,
    SourceConfig,
    SqlSourceConfig,
)
from syncd.sources.base import (
    Source,
    compile_where,
    filter_records,
    group_records,
    read_catalog,
    record_matches,
)


def open_source(config: SourceConfig, http: HttpConfig | None = None) -> Source:
    """The source adapter for a validated source config."""
    if isinstance(config, FileSourceConfig):
        from syncd.sources.file import FileSource

        return FileSource(config)
    if isinstance(config, SqlSourceConfig):
        from syncd.sources.sql import SqlSource

        return SqlSource(config)
    if isinstance(config, HttpSourceConfig):
        from syncd.sources.http import HttpSource

        return HttpSource(config, http or HttpConfig())
    raise TypeError(f"unknown source config {type(config).__name__}")


__all__ = [
    "Source",
    "compile_where",
    "filter_records",
    "group_records",
    "open_source",
    "read_catalog",
    "record_matches",
]
