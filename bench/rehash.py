"""The time of migration 0007 (payload hashes BLAKE2b-128 -> XXH3-128) on a SQLite state.

A scratch state at revision 0006 holds ``--n`` bench products for each of the two bench
targets, acknowledged with their real mapped payloads and BLAKE2b-128 hashes; the upgrade
to 0007 is timed (wall and CPU of this process) and its rows per second printed.
``python -m bench.rehash --n 100000`` runs it alone.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from alembic import command

from bench import catalog
from bench.config import ENV, write_config
from syncd.config import load_config
from syncd.mapping import build_mapper
from syncd.state import migrate
from syncd.state.schema import products
from syncd.state.sql import current_revision, upgrade_database

_BATCH = 5000


def seed(url: str, folder: Path, n: int) -> int:
    """Fill a state at 0006 with ``n`` bench products for each bench target; the row count."""
    config_path = write_config(
        folder / "bench.toml",
        source="jsonl",
        location=str(folder / "catalog.jsonl"),
        state=folder / "unused.db",
        userflux="http://127.0.0.1:9",
        vambe="http://127.0.0.1:9",
        block="block",
    )
    targets = load_config(config_path, ENV).targets
    mappers = [(t.name, build_mapper(t, "id")) for t in targets]
    command.upgrade(migrate.alembic_config(url=url), "0006")
    engine = sa.create_engine(url)
    rows: list[dict[str, object]] = []
    count = 0
    with engine.begin() as conn:
        for record in catalog.products(n):
            for name, mapper in mappers:
                canonical = mapper.map(record).canonical
                digest = hashlib.blake2b(canonical, digest_size=16).digest()
                rows.append(
                    {
                        "target": name,
                        "key": str(record["id"]),
                        "hash": digest,
                        "payload": canonical.decode(),
                        "acked_at": 1.0,
                        "source_hash": None,
                    }
                )
            if len(rows) >= _BATCH:
                conn.execute(products.insert(), rows)
                count += len(rows)
                rows = []
        if rows:
            conn.execute(products.insert(), rows)
            count += len(rows)
    engine.dispose()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="products (default 100,000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="syncd-rehash-") as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'state.db'}"
        rows = seed(url, folder, args.n)
        size = (folder / "state.db").stat().st_size
        wall, cpu = time.perf_counter(), time.process_time()
        upgrade_database(url)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert current_revision(url) == "0007"
        print(
            f"{args.n} products x 2 targets = {rows} rows ({size / 1e6:.0f} MB state): "
            f"upgrade to 0007 {wall:.2f} s wall, {cpu:.2f} s CPU, {rows / wall:,.0f} rows/s"
        )


if __name__ == "__main__":
    main()
