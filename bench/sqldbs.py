"""The MariaDB and SQLite sources of the benchmark (PostgreSQL's is ``bench.postgres``),
and the SQL sources' target: a no-change run within 2x of the JSON Lines one's CPU.

``ScratchMariaDB`` creates ``syncd_bench_<pid>`` on the server (127.0.0.1:3306, root)
and drops it on exit; ``ScratchSqlite`` is a file in the bench's workdir. Both load the
JSON Lines catalogs with the columns of ``bench.postgres.COLUMNS``; the JSON columns
(tags, attributes) are text there, as those databases return JSON.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pymysql

from bench.postgres import _JSON_COLUMNS, COLUMNS

SQL_SOURCES = ("postgres", "mariadb", "sqlite")
RATIO_TARGET = 2.0
"""A no-change run from a SQL source: at most this many times the JSON Lines run's CPU."""
_BATCH = 2000
_MARIADB_TYPES = {"text PRIMARY KEY": "VARCHAR(64) PRIMARY KEY", "jsonb": "LONGTEXT"}
_SQLITE_TYPES = {"jsonb": "TEXT"}


def _rows(catalog: Path) -> Iterator[list[list[Any]]]:
    """The catalog's records as rows of ``COLUMNS``, JSON columns as text, in batches."""
    names = [name for name, _ in COLUMNS]
    batch: list[list[Any]] = []
    with catalog.open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            batch.append(
                [
                    json.dumps(record.get(name)) if name in _JSON_COLUMNS else record.get(name)
                    for name in names
                ]
            )
            if len(batch) == _BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def _create(table: str, types: dict[str, str]) -> str:
    columns = ", ".join(f"{name} {types.get(kind, kind)}" for name, kind in COLUMNS)
    return f"CREATE TABLE {table} ({columns})"


class ScratchMariaDB:
    """A MariaDB database created for one bench invocation and dropped after it."""

    def __init__(self, dbname: str | None = None) -> None:
        self.dbname = dbname or f"syncd_bench_{os.getpid()}"

    @property
    def url(self) -> str:
        """The SQLAlchemy URL syncd reads it with."""
        return f"mysql+pymysql://root@127.0.0.1:3306/{self.dbname}?charset=utf8mb4"

    def _connect(self, database: str | None = None) -> pymysql.Connection[Any]:
        return pymysql.connect(
            host="127.0.0.1", port=3306, user="root", database=database, charset="utf8mb4"
        )

    def __enter__(self) -> ScratchMariaDB:
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {self.dbname}")
            cursor.execute(f"CREATE DATABASE {self.dbname} CHARACTER SET utf8mb4")
        return self

    def __exit__(self, *exc: object) -> None:
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {self.dbname}")

    def load(self, table: str, catalog: Path) -> int:
        """(Re)create ``table`` and insert the JSON Lines file ``catalog`` into it."""
        placeholders = ", ".join(["%s"] * len(COLUMNS))
        names = ", ".join(name for name, _ in COLUMNS)
        insert = f"INSERT INTO {table} ({names}) VALUES ({placeholders})"
        rows = 0
        with self._connect(self.dbname) as conn, conn.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
            cursor.execute(_create(table, _MARIADB_TYPES))
            for batch in _rows(catalog):
                cursor.executemany(insert, batch)
                rows += len(batch)
            conn.commit()
            cursor.execute(f"ANALYZE TABLE {table}")
        return rows


class ScratchSqlite:
    """A SQLite database file in the bench's workdir, removed after the invocation."""

    def __init__(self, workdir: Path) -> None:
        self.path = workdir / "catalog.sqlite"

    @property
    def url(self) -> str:
        """The SQLAlchemy URL syncd reads it with."""
        return f"sqlite:///{self.path}"

    def __enter__(self) -> ScratchSqlite:
        self.path.unlink(missing_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)

    def load(self, table: str, catalog: Path) -> int:
        """(Re)create ``table`` and insert the JSON Lines file ``catalog`` into it."""
        placeholders = ", ".join(["?"] * len(COLUMNS))
        rows = 0
        conn = sqlite3.connect(self.path)
        try:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(_create(table, _SQLITE_TYPES))
            for batch in _rows(catalog):
                conn.executemany(f"INSERT INTO {table} VALUES ({placeholders})", batch)
                rows += len(batch)
            conn.commit()
            conn.execute(f"ANALYZE {table}")
        finally:
            conn.close()
        return rows


def open_sql_sources(
    sources: Sequence[str],
    catalogs: dict[str, Path],
    workdir: Path,
    stack: ExitStack,
    say: Callable[[str], None],
) -> dict[str, str]:
    """The MariaDB and SQLite sources asked for, each loaded with ``catalogs`` (table name:
    JSON Lines file) and dropped when ``stack`` closes; their URLs by source name."""
    urls: dict[str, str] = {}
    for source in sources:
        database: ScratchMariaDB | ScratchSqlite
        if source == "mariadb":
            database = stack.enter_context(ScratchMariaDB())
        elif source == "sqlite":
            database = stack.enter_context(ScratchSqlite(workdir))
        else:
            continue
        for table, path in catalogs.items():
            say(f"loading {path.name} into {source} {table}")
            database.load(table, path)
        urls[source] = database.url
    return urls


def sql_ratio_checks(medians: dict[str, Any], sources: Sequence[str]) -> list[dict[str, Any]]:
    """Each SQL source's no-change run against the JSON Lines one of the same bench run:
    CPU time (medians), the ratio beside its target."""
    jsonl = medians.get("no change (jsonl)")
    out: list[dict[str, Any]] = []
    if jsonl is None:
        return out
    for source in sources:
        row = medians.get(f"no change ({source})")
        if source not in SQL_SOURCES or row is None:
            continue
        ratio = row["cpu_s"] / jsonl["cpu_s"]
        out.append(
            {
                "target": f"no change ({source}): CPU within {RATIO_TARGET:g}x of JSON Lines",
                "met": ratio <= RATIO_TARGET,
                "measured": f"{row['cpu_s']:.2f} s / {jsonl['cpu_s']:.2f} s CPU = {ratio:.2f}x "
                f"(target {RATIO_TARGET:g}x)",
            }
        )
    return out
