"""Targets in parallel (issue 14, point 2): a first sync of a subset of the catalog to a
UserFlux that answers after 50 ms and a Vambe that answers after 500 ms, run three ways in
each repeat (both targets in one run, then each alone), so the two-target run's wall time
can be set beside the slowest target alone and the sum of the two."""

from __future__ import annotations

import statistics
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.config import write_config
from bench.suite import Catalogs, Fakes, Options, Run, medians, subset, sync

PARALLEL = "targets in parallel"
PRODUCTS = 1000
"""Products pushed by default (the catalog's first): about 20 s for the three runs."""
FAST_S = 0.050
"""UserFlux's latency: every answer waits this long."""
SLOW_S = 0.500
"""Vambe's latency (its product-blocks read included)."""
VAMBE_BATCH = 25
"""Vambe's ``batch_size`` in this scenario. With the bench config's 2000 the whole subset is
one or two Vambe requests (about a second at 500 ms): the sum would be the slowest target
plus a second, and the figure could not tell targets in parallel from one after another.
At 25 Vambe's four batches in flight move 200 products/s against UserFlux's 320 (16
requests in flight at 50 ms): Vambe is the slowest and UserFlux takes about 60% of its time."""
WAYS = ("both targets", "userflux alone", "vambe alone")


def run_parallel(opts: Options, cats: Catalogs, say: Any) -> dict[str, Any]:
    """``opts.parallel`` products (at most n) pushed from an empty state three ways, each
    against fresh fakes, ``opts.repeat`` times (the order turns each repeat, so no way
    always runs first on a machine whose load drifts)."""
    work = opts.workdir
    log = work / "syncd.log"
    state = work / "parallel.db"
    products = min(opts.parallel, opts.n)
    source = subset(cats.v1, products, work / f"parallel-{products}.jsonl")
    runs: dict[str, list[Run]] = {way: [] for way in WAYS}
    for repeat in range(opts.repeat):
        for way in WAYS[repeat % len(WAYS) :] + WAYS[: repeat % len(WAYS)]:
            say(
                f"[{repeat + 1}/{opts.repeat}] {PARALLEL}: first sync of {products:,} products, "
                f"{way}"
            )
            with ExitStack() as stack:
                fakes = Fakes(stack)
                fakes.userflux.latency = FAST_S
                fakes.vambe.latency = SLOW_S
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{state}{suffix}").unlink(missing_ok=True)
                config = write_config(
                    work / "parallel.toml",
                    source="jsonl",
                    location=str(source),
                    state=state,
                    userflux=None if way == "vambe alone" else fakes.userflux.url,
                    vambe=None if way == "userflux alone" else fakes.vambe.url,
                    block=fakes.block,
                    vambe_batch=VAMBE_BATCH,
                )
                runs[way].append(sync(config, fakes, log))
    return summarize_parallel(products, runs)


def _done_s(run: Run, target: str) -> float | None:
    """Seconds from the child's start to ``target``'s last answer (None: it sent nothing)."""
    window = run.push.get(target)
    return None if window is None else window["first_request_after_s"] + window["seconds"]


def summarize_parallel(products: int, runs: dict[str, list[Run]]) -> dict[str, Any]:
    table = {way: medians(values) for way, values in runs.items()}
    for way, row in table.items():
        row["done_s"] = {}
        for target in ("userflux", "vambe"):
            done = [d for d in (_done_s(run, target) for run in runs[way]) if d is not None]
            if done:
                row["done_s"][target] = statistics.median(done)
    both = table["both targets"]["wall_s"]
    alone = {t: table[f"{t} alone"]["wall_s"] for t in ("userflux", "vambe")}
    slowest = max(alone, key=lambda t: alone[t])
    total = sum(alone.values())
    return {
        "products": products,
        "latency_ms": {"userflux": FAST_S * 1000, "vambe": SLOW_S * 1000},
        "vambe_batch": VAMBE_BATCH,
        "medians": table,
        "slowest": slowest,
        "slowest_alone_s": alone[slowest],
        "sum_alone_s": total,
        "ratio_to_slowest": both / alone[slowest],
        "ratio_to_sum": both / total,
        "runs": {
            way: [
                {
                    "wall_s": r.wall_s,
                    "cpu_s": r.cpu_s,
                    "rss_mb": r.rss_mb,
                    "requests": r.requests,
                    "push": r.push,
                }
                for r in values
            ]
            for way, values in runs.items()
        },
    }


def render_parallel(result: dict[str, Any], repeat: int) -> list[str]:
    table = result["medians"]
    lines = [
        f"{PARALLEL}: a first sync of {result['products']:,} products (the catalog's first), "
        f"UserFlux answering after {FAST_S * 1000:.0f} ms (16 in flight), Vambe after "
        f"{SLOW_S * 1000:.0f} ms (4 batches of {VAMBE_BATCH} in flight); medians of {repeat}",
        f"{'run':<16} {'wall s':>8} {'CPU s':>8} {'peak MB':>8} {'req UF':>8} {'req VB':>7}"
        f" {'UF done s':>10} {'VB done s':>10}",
    ]
    for way in WAYS:
        row = table[way]
        done = row["done_s"]
        lines.append(
            f"{way:<16} {row['wall_s']:>8.2f} {row['cpu_s']:>8.2f} {row['rss_mb']:>8.0f} "
            f"{row['requests'].get('userflux', 0):>8} {row['requests'].get('vambe', 0):>7} "
            f"{_seconds(done.get('userflux')):>10} {_seconds(done.get('vambe')):>10}"
        )
    lines.append(
        f"two-target run {table['both targets']['wall_s']:.2f} s wall: "
        f"{result['ratio_to_slowest']:.2f}x the slowest alone ({result['slowest']}, "
        f"{result['slowest_alone_s']:.2f} s), {result['ratio_to_sum']:.2f}x the sum of both "
        f"alone ({result['sum_alone_s']:.2f} s); CPU {table['both targets']['cpu_s']:.2f} s "
        f"against {table['userflux alone']['cpu_s']:.2f} + {table['vambe alone']['cpu_s']:.2f} s"
    )
    return lines


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def check_parallel(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The run takes about as long as its slowest target (at most 1.2x), well under the sum
    (at most 0.8x), and the fast target is not held back by the slow one (its last answer
    within 1.2x of when it came alone)."""
    table = result["medians"]
    fast_both = table["both targets"]["done_s"].get("userflux")
    fast_alone = table["userflux alone"]["done_s"].get("userflux")
    held = None if fast_both is None or not fast_alone else fast_both / fast_alone
    return [
        {
            "target": f"{PARALLEL}: two-target run <= 1.2x the slowest alone, <= 0.8x the sum",
            "met": result["ratio_to_slowest"] <= 1.2 and result["ratio_to_sum"] <= 0.8,
            "measured": f"{result['ratio_to_slowest']:.2f}x the slowest, "
            f"{result['ratio_to_sum']:.2f}x the sum",
        },
        {
            "target": f"{PARALLEL}: UserFlux done within 1.2x of its time alone",
            "met": held is not None and held <= 1.2,
            "measured": "-"
            if held is None or fast_both is None or fast_alone is None
            else f"{fast_both:.2f} s with Vambe, {fast_alone:.2f} s alone ({held:.2f}x)",
        },
    ]
