"""A measured sketch, not syncd's code: a no-change run that skips unchanged source rows.

``python -m bench.fingerprint CATALOG [EDITED]``. Today every run parses and maps
every record for every target, which costs about 100 µs per realistic product, so a
1M-product run can't finish in seconds whatever the state store does. The sketch
hashes each raw JSON Lines row (keyed with a fingerprint of the mapping, so a
mapping change still re-maps everything), stages those 16-byte digests in SQLite in
chunks of 5000 as syncd stages document hashes, and lets SQL name the rows it has
not seen: only those would be parsed and mapped. It prints what that costs.
"""

from __future__ import annotations

import hashlib
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

CHUNK = 5000
MAPPING_FINGERPRINT = hashlib.blake2b(b"the targets' mapping config, canonical").digest()


def digests(path: Path) -> Iterator[bytes]:
    key = MAPPING_FINGERPRINT
    with path.open("rb") as lines:
        for line in lines:
            yield hashlib.blake2b(line, digest_size=16, key=key).digest()


def seed(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("CREATE TABLE seen (digest BLOB PRIMARY KEY) WITHOUT ROWID")
    conn.executemany("INSERT OR IGNORE INTO seen VALUES (?)", ((d,) for d in digests(path)))
    conn.commit()


def unseen_rows(conn: sqlite3.Connection, path: Path) -> tuple[int, int]:
    """(rows read, rows whose digest state has not seen: the ones to parse and map)."""
    conn.execute("CREATE TEMP TABLE staged (seq INTEGER PRIMARY KEY, digest BLOB)")
    rows = fresh = 0
    chunk: list[tuple[int, bytes]] = []

    def flush() -> int:
        conn.executemany("INSERT INTO staged VALUES (?, ?)", chunk)
        found = conn.execute(
            "SELECT count(*) FROM staged s WHERE s.seq >= ? "
            "AND NOT EXISTS (SELECT 1 FROM seen WHERE seen.digest = s.digest)",
            (chunk[0][0],),
        ).fetchone()[0]
        chunk.clear()
        return int(found)

    for digest in digests(path):
        chunk.append((rows, digest))
        rows += 1
        if len(chunk) == CHUNK:
            fresh += flush()
    if chunk:
        fresh += flush()
    conn.commit()
    return rows, fresh


def main(argv: list[str]) -> int:
    catalog = Path(argv[0])
    edited = Path(argv[1]) if len(argv) > 1 else catalog
    with tempfile.TemporaryDirectory() as work:
        conn = sqlite3.connect(Path(work) / "state.db")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        seed(conn, catalog)
        for label, path in (("no change", catalog), ("edited", edited)):
            wall, cpu = time.perf_counter(), time.process_time()
            rows, fresh = unseen_rows(conn, path)
            conn.execute("DROP TABLE staged")
            print(
                f"{label}: {rows:,} rows, {fresh:,} to map; "
                f"{time.perf_counter() - wall:.2f} s wall, {time.process_time() - cpu:.2f} s CPU"
            )
        conn.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
