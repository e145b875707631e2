"""``python -m bench.keyed_read``: the SQL source's targeted read of 500 keys on a
1M-row PostgreSQL table, integer key vs text key, and the plan PostgreSQL chooses
(EXPLAIN) for the typed comparison and for the text one (``CAST(key AS text)``).

Times are the medians of ``--repeat`` reads (wall and this process's CPU time)."""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import psycopg

from bench.postgres import SERVER, ScratchDatabase
from syncd.config import SqlSourceConfig
from syncd.sources.sql import SqlSource


def _load(dbname: str, n: int) -> None:
    with psycopg.connect(f"{SERVER} dbname={dbname}") as conn:
        conn.execute("CREATE TABLE by_int (id bigint PRIMARY KEY, title text, price numeric)")
        conn.execute("CREATE TABLE by_text (id text PRIMARY KEY, title text, price numeric)")
        conn.execute(
            "INSERT INTO by_int SELECT g, 'Product ' || g, g %% 90 + 10.5 "
            "FROM generate_series(1, %s) g",
            (n,),
        )
        conn.execute(
            "INSERT INTO by_text SELECT 'P' || lpad(g::text, 7, '0'), 'Product ' || g, "
            "g %% 90 + 10.5 FROM generate_series(1, %s) g",
            (n,),
        )
        conn.execute("ANALYZE")
        conn.commit()


def _plan(dbname: str, sql: str) -> str:
    with psycopg.connect(f"{SERVER} dbname={dbname}") as conn:
        rows = conn.execute("EXPLAIN " + sql).fetchall()
    return "\n".join("    " + str(row[0]) for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.keyed_read", description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    rng = random.Random(3)
    with ScratchDatabase(f"syncd_bench_keyed_{int(time.time())}") as db:
        started = time.monotonic()
        _load(db.dbname, args.n)
        print(f"{args.n} rows in each table, loaded in {time.monotonic() - started:.1f} s")
        picked = rng.sample(range(1, args.n + 1), args.keys)
        cases = [
            ("by_int", [str(i) for i in picked], None),
            ("by_int", [str(i) for i in picked], False),  # as text: how it read before
            ("by_text", [f"P{i:07d}" for i in picked], None),
        ]
        for table, keys, as_integer in cases:
            source = SqlSource(SqlSourceConfig(kind="sql", url=db.url, table=table, key="id"))
            source._integer_key = as_integer
            walls, cpus = [], []
            for _ in range(args.repeat):
                wall0, cpu0 = time.perf_counter(), time.process_time()
                read = source.read_keys(keys)
                walls.append(time.perf_counter() - wall0)
                cpus.append(time.process_time() - cpu0)
                assert len(read.rows) == args.keys, len(read.rows)
            print(
                f"{table}: {args.keys} keys, integer comparison {source._integer_key}: "
                f"median {statistics.median(walls) * 1000:.1f} ms wall, "
                f"{statistics.median(cpus) * 1000:.1f} ms CPU (of {args.repeat})"
            )
        some = ", ".join(str(i) for i in picked[:3])
        texts = ", ".join(f"'P{i:07d}'" for i in picked[:3])
        as_text = ", ".join(f"'{i}'" for i in picked[:3])
        print("EXPLAIN, typed (the integer key now):")
        print(_plan(db.dbname, f"SELECT * FROM (SELECT * FROM by_int) q WHERE q.id IN ({some})"))
        print("EXPLAIN, CAST(key AS text) (the integer key before):")
        print(
            _plan(
                db.dbname,
                "SELECT * FROM (SELECT * FROM by_int) q "
                f"WHERE trim(CAST(q.id AS text)) IN ({as_text})",
            )
        )
        print("EXPLAIN, the text key (btrim of the text):")
        print(
            _plan(
                db.dbname,
                f"SELECT * FROM (SELECT * FROM by_text) q WHERE btrim(q.id) IN ({texts})",
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
