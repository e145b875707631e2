"""``python -m bench.nochange --n 1000000``: the no-change run alone, from JSON Lines and
from each SQL source side by side, CPU medians and each SQL source's ratio to JSON Lines.

What ``make bench`` measures too, without its first syncs, 1% runs, rolling refresh and
the recording syncs that fill state with each source's fingerprints (at 1M those map
every row and take most of an hour on the shared machine). State is seeded instead with
what a no-change run reads: per target and product its key and the fingerprint of its
row, as a run records it (``row_fingerprint`` of the stripped JSON Lines line, or of the
database's fingerprint of a SQL row), with a placeholder payload (a no-change run reads
no payload: every row is skipped by fingerprint, and a row that were not would be
mapped, differ, and be pushed, which the 0-request check catches).

``--reuse-postgres``/``--reuse-mariadb``/``--reuse-sqlite`` read catalogs already loaded
(``catalog_v1``) instead of loading them again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.config import ENV, write_config
from bench.postgres import ScratchDatabase
from bench.sqldbs import RATIO_TARGET, ScratchMariaDB, ScratchSqlite
from bench.suite import Fakes, Run, prepare_catalogs, restore, snapshot, sync
from syncd.config import load_config
from syncd.model import payload_hash
from syncd.reconcile import mapping_fingerprint, row_digest, row_fingerprint
from syncd.sources import open_source
from syncd.sources.base import fingerprinted_rows
from syncd.sources.file import FileSource
from syncd.state import open_store

_PLACEHOLDER = b"{}"
_PLACEHOLDER_HASH = payload_hash(_PLACEHOLDER)
_CHUNK = 5000


def seed_fingerprints(config_path: Path) -> int:
    """Fill the config's (empty) state with each row's key and fingerprint per target."""
    config = load_config(config_path)
    keys = {t.name: mapping_fingerprint(config.source, t) for t in config.targets}
    source = open_source(config.source, config.http)
    store = open_store(config.state.resolved_url())
    rows = 0

    def record(batch: list[tuple[str, bytes]]) -> None:
        for name, key in keys.items():
            assert key is not None, f"{name}: rows are not fingerprinted"
            store.apply_acks(
                name,
                [
                    (
                        product,
                        _PLACEHOLDER_HASH,
                        _PLACEHOLDER,
                        row_fingerprint(row_digest(raw), key),
                    )
                    for product, raw in batch
                ],
            )

    try:
        fingerprinted = fingerprinted_rows(source)
        if fingerprinted is not None:
            for block in fingerprinted.read_fingerprints(whole=True):
                items = block.records(range(len(block.fingerprints)))
                batch = [
                    (str(item["id"]), raw)
                    for item, raw in zip(items, block.fingerprints, strict=True)
                    if isinstance(item, dict)
                ]
                record(batch)
                rows += len(batch)
        else:
            assert isinstance(source, FileSource)
            batch = []
            for line in source.read_lines():
                raw = line.data.strip()
                if raw:
                    batch.append((str(json.loads(raw)["id"]), raw))
                if len(batch) == _CHUNK:
                    record(batch)
                    rows += len(batch)
                    batch = []
            record(batch)
            rows += len(batch)
    finally:
        store.close()
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.nochange", description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sources", default="jsonl,postgres,mariadb,sqlite")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "syncd-bench")
    parser.add_argument("--reuse-postgres", help="a database holding catalog_v1")
    parser.add_argument("--reuse-mariadb", help="a database holding catalog_v1")
    parser.add_argument("--reuse-sqlite", type=Path, help="a file holding catalog_v1")
    args = parser.parse_args(argv)
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    work: Path = args.workdir
    os.environ.update(ENV)
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()

    def say(text: str) -> None:
        print(f"[{time.time() - started:7.1f}s] {text}", file=sys.stderr, flush=True)

    cats = prepare_catalogs(args.n, work, say)
    state, log = work / "nochange-state.db", work / "nochange.log"
    runs: dict[str, list[Run]] = {}
    with ExitStack() as stack:
        urls: dict[str, str] = {"jsonl": str(cats.v1)}
        for source in sources:
            if source == "postgres":
                pg = ScratchDatabase(args.reuse_postgres)
                if args.reuse_postgres is None:
                    stack.enter_context(pg)
                    say("loading PostgreSQL")
                    pg.load("catalog_v1", cats.v1)
                urls[source] = pg.url
            elif source == "mariadb":
                maria = ScratchMariaDB(args.reuse_mariadb)
                if args.reuse_mariadb is None:
                    stack.enter_context(maria)
                    say("loading MariaDB")
                    maria.load("catalog_v1", cats.v1)
                urls[source] = maria.url
            elif source == "sqlite":
                lite = ScratchSqlite(work)
                if args.reuse_sqlite is not None:
                    lite.path = args.reuse_sqlite
                else:
                    stack.enter_context(lite)
                    say("loading SQLite")
                    lite.load("catalog_v1", cats.v1)
                urls[source] = lite.url
        fakes = Fakes(stack)
        configs: dict[str, Path] = {}
        for source in sources:
            configs[source] = write_config(
                work / f"nochange-{source}.toml",
                source=source,
                location=urls[source],
                table="catalog_v1",
                state=state,
                userflux=fakes.userflux.url,
                vambe=fakes.vambe.url,
                block=fakes.block,
            )
            for suffix in ("", "-wal", "-shm"):
                Path(f"{state}{suffix}").unlink(missing_ok=True)
            say(f"seeding the fingerprints of {source} rows (not measured)")
            seeded = seed_fingerprints(configs[source])
            assert seeded == args.n, f"{source}: {seeded} rows"
            snapshot(state, work / f"nochange-seeded-{source}.db")
        for repeat in range(args.repeat):
            for source in sources:
                restore(work / f"nochange-seeded-{source}.db", state)
                say(f"[{repeat + 1}/{args.repeat}] no change ({source})")
                runs.setdefault(source, []).append(sync(configs[source], fakes, log))
    report(args.n, runs, work)
    return 0


def report(n: int, runs: dict[str, list[Run]], work: Path) -> None:
    medians: dict[str, dict[str, Any]] = {}
    for source, measured in runs.items():
        medians[source] = {
            "cpu_s": statistics.median(r.cpu_s for r in measured),
            "wall_s": statistics.median(r.wall_s for r in measured),
            "rss_mb": statistics.median(r.rss_mb for r in measured),
            "requests": max(r.total_requests for r in measured),
            "cpu_runs": [round(r.cpu_s, 2) for r in measured],
        }
    jsonl = medians.get("jsonl")
    print(f"no change, {n:,} rows, medians of {len(next(iter(runs.values())))} run(s)")
    print(
        f"{'source':<10} {'CPU s':>7} {'wall s':>7} {'peak MB':>8} {'requests':>9} "
        f"{'vs JSONL':>9}  target   runs (CPU s)"
    )
    for source, row in medians.items():
        ratio = (
            "" if jsonl is None or source == "jsonl" else f"{row['cpu_s'] / jsonl['cpu_s']:.2f}x"
        )
        target = "" if not ratio else f"<= {RATIO_TARGET:g}x"
        print(
            f"{source:<10} {row['cpu_s']:>7.2f} {row['wall_s']:>7.2f} {row['rss_mb']:>8.0f} "
            f"{row['requests']:>9} {ratio:>9}  {target:<7}  {row['cpu_runs']}"
        )
    out = work / f"nochange-{time.strftime('%Y%m%d-%H%M%S')}-{n}.json"
    out.write_text(json.dumps({"n": n, "medians": medians}, indent=2), encoding="utf-8")
    print(f"figures written to {out}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
