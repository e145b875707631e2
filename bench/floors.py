"""The floors of a no-change run from JSON Lines, measured with plain Python and NumPy:
``python -m bench.floors CONFIG`` prints one JSON line of CPU seconds.

What a run that skips every row by fingerprint can't do without: start the interpreter
and import what a sync imports (``IMPORTS``, in a process of their own), read the file,
split it into lines, hash each line (XXH3-128, as syncd does), read each target's
fingerprints from state, and look each row's fingerprint up among them
(``np.searchsorted``). Each is
timed alone with ``time.process_time``, in a process of its own beside the measured run.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from xxhash import xxh3_128_digest

BLOCK = 1 << 22
"""Bytes read at a time."""


IMPORTS = "import bench.child, syncd.state.sql, numpy"
"""What a sync imports before it reads a row: ``bench.child``'s imports, the SQL state
store it opens (SQLAlchemy, and Alembic for the schema check), and NumPy, which a run
skipping rows by fingerprint loads for its fingerprint index (since 2026-12-06 where it is
used, no longer with syncd's modules: a first plan of compact JSON Lines doesn't need it)."""


def import_cpu() -> float:
    """CPU seconds of a fresh interpreter that runs ``IMPORTS``."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    proc = subprocess.Popen([sys.executable, "-c", IMPORTS], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"python -c {IMPORTS!r} failed")
    return usage.ru_utime + usage.ru_stime


def file_floors(path: Path) -> tuple[dict[str, float], bytes]:
    """Read, split and hash ``path`` a block at a time, each step timed on its own;
    the digests (16 bytes a non-blank line, concatenated)."""
    read = split = hashed = 0.0
    digests: list[bytes] = []
    tail = b""
    clock = time.process_time
    with path.open("rb", buffering=0) as handle:
        while True:
            t0 = clock()
            data = handle.read(BLOCK)
            t1 = clock()
            read += t1 - t0
            if not data:
                break
            lines = data.split(b"\n")
            if tail:
                lines[0] = tail + lines[0]
            tail = lines.pop()
            t2 = clock()
            split += t2 - t1
            digests.append(b"".join(map(xxh3_128_digest, lines)))
            hashed += clock() - t2
    if tail:
        digests.append(xxh3_128_digest(tail))
    return {"read": read, "split": split, "hash": hashed}, b"".join(digests)


_ROWS = (
    "SELECT source_hash FROM products WHERE target = ? AND source_hash IS NOT NULL"
    " ORDER BY source_hash"
)
_HEX = (
    "SELECT group_concat(hex(source_hash), '') FROM products"
    " WHERE target = ? AND source_hash >= ? AND source_hash < ?"
)


def _by_rows(conn: sqlite3.Connection, target: str) -> bytes:
    return b"".join([row[0] for row in conn.execute(_ROWS, (target,))])


def _by_hex(conn: sqlite3.Connection, target: str) -> bytes:
    pages = []
    for first in range(256):
        high = bytes([first + 1]) if first < 255 else b"\xff" * 17
        (page,) = conn.execute(_HEX, (target, bytes([first]), high)).fetchone()
        if page:
            pages.append(bytes.fromhex(page))
    return b"".join(pages)


def state_floors(state: Path, keys: dict[str, bytes | None], digests: bytes) -> dict[str, Any]:
    """Per target: read its fingerprints from state (``fingerprints``: the cheaper of a
    row each and SQL's hex of a page), and look up every row's fingerprint among them
    with one plain ``np.searchsorted`` over the rows in file order (``lookup``)."""
    loaded = lookup = lookup_sorted = 0.0
    found: dict[str, int] = {}
    clock = time.process_time
    rows = np.frombuffer(digests, dtype=">u8").astype(np.uint64).reshape(-1, 2)
    conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        for target, key in keys.items():
            if key is None:
                continue
            costs = []
            for read in (_by_rows, _by_hex):
                t0 = clock()
                known = read(conn, target)
                costs.append(clock() - t0)
            t0 = clock()
            high = np.frombuffer(known, dtype=">u8").astype(np.uint64)[0::2]
            wanted = rows ^ np.frombuffer(key, dtype=">u8").astype(np.uint64)
            at = np.minimum(np.searchsorted(high, wanted[:, 0]), max(len(high) - 1, 0))
            hits = int(np.count_nonzero(high[at] == wanted[:, 0])) if len(high) else 0
            t1 = clock()
            order = np.argsort(wanted[:, 0])  # the same, keys sorted first (a whole-file batch)
            np.searchsorted(high, wanted[order, 0])
            lookup += t1 - t0
            lookup_sorted += clock() - t1
            loaded += min(costs)
            found[target] = hits
    finally:
        conn.close()
    return {
        "fingerprints": loaded,
        "lookup": lookup,
        "lookup_sorted": lookup_sorted,
        "found": found,
    }


def measure(config_path: Path) -> dict[str, Any]:
    from syncd.config import load_config
    from syncd.stages.fingerprinting import mapping_fingerprint

    config = load_config(config_path)
    path = Path(str(getattr(config.source, "path", "")))
    state = Path(config.state.resolved_url().removeprefix("sqlite:///"))
    keys = {t.name: mapping_fingerprint(config.source, t) for t in config.targets}
    floors, digests = file_floors(path)
    found = state_floors(state, keys, digests)
    floors["fingerprints"] = found["fingerprints"]
    floors["lookup"] = found["lookup"]
    floors["imports"] = import_cpu()
    total = sum(floors.values())
    return {
        "floors": floors,
        "sum": total,
        "sum_lookup_sorted": total - floors["lookup"] + found["lookup_sorted"],
        "rows": len(digests) // 16,
        "found": found["found"],
    }


TARGET = 1.2
"""Issue 17: the no-change run within this of the sum of its floors."""


def run(config: Path) -> dict[str, Any]:
    """``measure`` in a process of its own (``python -m bench.floors``)."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    out = subprocess.run(
        [sys.executable, "-m", "bench.floors", str(config)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def medians(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each floor over the repeats, and of their sums."""
    names = measured[0]["floors"].keys()
    return {
        "floors": {n: statistics.median([m["floors"][n] for m in measured]) for n in names},
        "sum": statistics.median([m["sum"] for m in measured]),
        "sum_lookup_sorted": statistics.median([m["sum_lookup_sorted"] for m in measured]),
        "rows": measured[0]["rows"],
        "found": measured[0]["found"],
    }


def render(floors: dict[str, Any], cpu_s: float) -> list[str]:
    """The floors, their sum and the no-change run's CPU beside them."""
    parts = ", ".join(f"{name} {value:.2f}" for name, value in floors["floors"].items())
    return [
        f"no change (jsonl) against its floors (CPU s, same run, {floors['rows']:,} rows): {parts}",
        f"  sum {floors['sum']:.2f} s; the run {cpu_s:.2f} s = {cpu_s / floors['sum']:.2f}x "
        f"(target <= {TARGET}x); with the lookup's keys sorted first "
        f"(a whole-file batch, {floors['sum_lookup_sorted']:.2f} s): "
        f"{cpu_s / floors['sum_lookup_sorted']:.2f}x",
    ]


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]))))
