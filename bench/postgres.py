"""The PostgreSQL source of the benchmark: a scratch database holding the catalog.

``ScratchDatabase`` creates ``syncd_bench_<pid>`` on the server (127.0.0.1:5432,
user postgres), loads JSON Lines catalogs into tables with COPY, and drops the
database on exit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg

SERVER = "host=127.0.0.1 port=5432 user=postgres"
COLUMNS = (
    ("id", "text PRIMARY KEY"),
    ("title", "text"),
    ("description", "text"),
    ("price", "text"),
    ("compare_at_price", "text"),
    ("brand", "text"),
    ("category", "text"),
    ("tags", "jsonb"),
    ("stock", "integer"),
    ("attributes", "jsonb"),
    ("image", "text"),
    ("updated_at", "text"),
)
_JSON_COLUMNS = frozenset({"tags", "attributes"})


class ScratchDatabase:
    """A database created for one bench invocation and dropped after it."""

    def __init__(self, dbname: str | None = None) -> None:
        self.dbname = dbname or f"syncd_bench_{os.getpid()}"

    @property
    def url(self) -> str:
        """The SQLAlchemy URL syncd reads it with."""
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.dbname}"

    def __enter__(self) -> ScratchDatabase:
        with psycopg.connect(f"{SERVER} dbname=test", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}"')
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        return self

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(f"{SERVER} dbname=test", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')

    def load(self, table: str, catalog: Path) -> int:
        """(Re)create ``table`` and COPY the JSON Lines file ``catalog`` into it."""
        names = [name for name, _ in COLUMNS]
        columns = ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
        rows = 0
        with psycopg.connect(f"{SERVER} dbname={self.dbname}") as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"CREATE TABLE {table} ({columns})")
            with (
                conn.cursor() as cursor,
                cursor.copy(f"COPY {table} ({', '.join(names)}) FROM STDIN") as copy,
                catalog.open(encoding="utf-8") as lines,
            ):
                for line in lines:
                    record = json.loads(line)
                    copy.write_row(
                        [
                            json.dumps(record.get(name))
                            if name in _JSON_COLUMNS
                            else record.get(name)
                            for name in names
                        ]
                    )
                    rows += 1
            conn.execute(f"ANALYZE {table}")
        return rows
