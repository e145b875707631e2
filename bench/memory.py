"""Peak memory of a first sync and of ``syncd plan`` at N and 3N products (flat or not).

``python -m bench.memory --n 100000`` generates the JSON Lines catalogs (``bench.catalog``,
kept in ``--workdir``), then for each size runs, each in a fresh child process on an empty
state: ``syncd plan`` (sends nothing) and a first sync to two targets, UserFlux and Vambe,
whose HTTP is answered in-process at once (``httpx.MockTransport`` through the
Reconciler's ``transports``: no fake server parses anything); with ``--modes
plan,sync,full`` also a full refresh of the state the first sync left. Each child prints its own
peak RSS (``VmHWM``) and CPU time; the table shows them side by side, and whether the
peak at 3N stays within 10% (+20 MB) of the peak at N.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import catalog
from bench.child import peak_rss_mb
from bench.config import ENV, write_config

BLOCK = "bench-block"
FIRST_WRITE: dict[str, float] = {}
"""Target -> when it got its first write (``time.perf_counter``): a run that sends while
it reads starts within seconds, not after planning the whole catalog."""


def _answer_userflux(request: httpx.Request) -> httpx.Response:
    FIRST_WRITE.setdefault("userflux", time.perf_counter())
    return httpx.Response(200, json={"ok": True})


def _answer_vambe(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("product-blocks"):
        return httpx.Response(200, json=[{"id": BLOCK, "name": "bench", "count": 0}])
    FIRST_WRITE.setdefault("vambe", time.perf_counter())
    return httpx.Response(201, json={"created": 0, "updated": 0})


def child(mode: str, config_path: str) -> int:
    """One measured run in this process: ``plan`` or ``sync``; prints one JSON line."""
    import os

    from syncd.config import load_config
    from syncd.logs import configure_logging
    from syncd.reconcile import Reconciler, RunOptions
    from syncd.state import open_store

    os.environ.update(ENV)
    config = load_config(config_path)
    configure_logging("warning", "json")
    store = open_store(config.state.resolved_url())
    transports = {
        "userflux": httpx.MockTransport(_answer_userflux),
        "vambe": httpx.MockTransport(_answer_vambe),
    }
    spools = _recording_spools()
    started = time.perf_counter()
    try:
        reconciler = Reconciler(config, store, transports=transports)
        if mode == "plan":
            plans = reconciler.plan(RunOptions())
            figures: dict[str, Any] = {
                plan.target: {"requests": len(plan.operations), **plan.counts()} for plan in plans
            }
        else:
            report = reconciler.sync(RunOptions(full=mode == "full"))
            figures = {
                t.target: {
                    "outcome": t.outcome,
                    "requests": t.requests,
                    "created": t.created,
                    "refreshed": t.refreshed,
                    "error": t.error,
                    "first_write_s": round(FIRST_WRITE.get(t.target, started) - started, 2),
                }
                for t in report.targets
            }
    finally:
        store.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "mode": mode,
                "wall_s": time.perf_counter() - started,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "peak_rss_mb": peak_rss_mb(),
                "spool_peak_mb": sum(spool.peak for spool in spools) / 1e6,
                "spool_written_mb": sum(spool.size for spool in spools) / 1e6,
                "targets": figures,
            },
            default=str,
        )
    )
    return 0


def _recording_spools() -> list[Any]:
    """The spools the run makes, to print the most they held on disk at once
    (``Spool.peak``, summed) beside all that was ever written to them."""
    from syncd import model, reconcile
    from syncd.stages import outbox, sending

    made: list[Any] = []

    class Recorded(model.Spool):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    # the outboxes' spools, their journals, and the changes kept of troubled requests
    for module in (reconcile, outbox, sending):
        module.Spool = Recorded  # type: ignore[misc]
    return made


def measure(mode: str, n: int, workdir: Path) -> dict[str, Any]:
    """Run one child over an empty state on the ``n``-product catalog."""
    source = workdir / f"catalog-{n}.jsonl"
    if not source.exists():
        partial = source.with_suffix(".partial")
        catalog.write_jsonl(partial, n)
        partial.rename(source)
    state = workdir / f"memory-{mode}-{n}.db"
    for leftover in workdir.glob(f"{state.name}*"):
        leftover.unlink()
    if mode == "full":  # a full refresh of what the first sync at n left
        synced = workdir / f"memory-sync-{n}.db"
        if not synced.exists():
            raise SystemExit(f"bench.memory: mode full needs mode sync first (no {synced})")
        shutil.copyfile(synced, state)
    config = write_config(
        workdir / f"memory-{mode}-{n}.toml",
        source="jsonl",
        location=str(source),
        state=state,
        userflux="http://userflux.bench",
        vambe="http://vambe.bench",
        block=BLOCK,
    )
    done = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--child", mode, str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench.memory: the {mode} child at n={n} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["n"] = n
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--n", type=int, default=100_000, help="the smaller size (default 100k)")
    parser.add_argument("--factor", type=int, default=3, help="the larger size is n x this")
    parser.add_argument(
        "--modes",
        default="plan,sync",
        help="plan, sync (a first sync), full (then a full refresh of its state), comma-separated",
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "syncd-bench")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child)
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for mode in args.modes.split(","):
        for n in (args.n, args.n * args.factor):
            row = measure(mode, n, args.workdir)
            rows.append(row)
            print(
                f"{mode:<5} n={n:>9,}  peak RSS {row['peak_rss_mb']:>7.0f} MB  "
                f"CPU {row['cpu_s']:>7.1f} s  wall {row['wall_s']:>7.1f} s  "
                f"spool peak {row['spool_peak_mb']:>6.1f} MB of {row['spool_written_mb']:,.0f} "
                "MB written  "
                f"{json.dumps(row['targets'])}",
                flush=True,
            )
    for mode in args.modes.split(","):
        small, large = (r for r in rows if r["mode"] == mode)
        flat = large["peak_rss_mb"] <= small["peak_rss_mb"] * 1.1 + 20
        print(
            f"{mode}: peak {small['peak_rss_mb']:.0f} MB at {small['n']:,}, "
            f"{large['peak_rss_mb']:.0f} MB at {large['n']:,}: {'flat' if flat else 'NOT flat'}"
        )
        if mode != "plan":  # a plan is not sent: its spool holds it whole, by design
            bounded = large["spool_peak_mb"] <= small["spool_peak_mb"] * 1.1 + 64
            print(
                f"{mode}: spool on disk at most {small['spool_peak_mb']:.0f} MB at "
                f"{small['n']:,} ({small['spool_written_mb']:,.0f} MB written), "
                f"{large['spool_peak_mb']:.0f} MB at {large['n']:,} "
                f"({large['spool_written_mb']:,.0f} MB written): "
                f"{'bounded' if bounded else 'NOT bounded'}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
