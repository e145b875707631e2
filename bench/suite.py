"""The benchmark's scenarios, their measurement, and the report.

Every measured sync runs in a fresh process (``bench.child``), so its CPU time and
peak RSS are its own (``os.wait4``); the fakes run in this process, so their CPU is
not counted in syncd's figures (it is in the wall time of a run that pushes a lot).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import catalog, floors, mapping
from bench import push as push_bench
from bench.config import ENV, write_config
from bench.postgres import ScratchDatabase
from bench.seed import naive_sizes
from bench.sink import Sink
from bench.sqldbs import open_sql_sources, sql_ratio_checks
from syncd.config import load_config
from syncd.model import refresh_slice_size
from syncd.sandbox import FakeUserflux, FakeVambe

RESULTS = Path(__file__).with_name("results")
LATENCY = 0.050
"""Seconds the target takes to answer, in the throughput runs."""


@dataclass
class Options:
    n: int
    repeat: int
    first_repeat: int
    """Measured first syncs (the rest of the repeats start from the first one's state)."""
    sources: tuple[str, ...]
    workdir: Path
    concurrency: tuple[int, ...]
    seed_directly: bool
    naive: bool
    throughput: bool
    results: Path = RESULTS
    """Where the figures' JSON is written."""
    parallel: int = 0
    """Products in the targets-in-parallel scenario (``bench/parallel.py``; 0: skipped)."""


@dataclass
class Run:
    """One measured process."""

    wall_s: float
    cpu_s: float
    rss_mb: float
    requests: dict[str, int]
    """Write requests each target received (Vambe's GET product-blocks not counted)."""
    bytes: dict[str, int]
    """Request body bytes each target received."""
    report: dict[str, Any] = field(default_factory=dict)
    push: dict[str, Any] = field(default_factory=dict)

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())


class Fakes:
    """Fake UserFlux and Vambe (one block), started fresh for each repeat."""

    def __init__(self, stack: ExitStack) -> None:
        self.userflux = stack.enter_context(FakeUserflux(ENV["BENCH_UF_KEY"]))
        self.vambe = stack.enter_context(FakeVambe(ENV["BENCH_VB_KEY"]))
        self.block = self.vambe.add_block(name="bench")

    def reset(self) -> None:
        self.userflux.reset_requests()
        self.vambe.reset_requests()

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        vambe_writes = sum(1 for r in self.vambe.requests if r.method != "GET")
        requests = {"userflux": self.userflux.request_count(), "vambe": vambe_writes}
        sizes = {"userflux": self.userflux.bytes_received, "vambe": self.vambe.bytes_received}
        return requests, sizes


def run_process(argv: Sequence[str], fakes: Fakes | Sink | None, log: Path) -> Run:
    """Run ``argv`` to its end; its wall time, CPU, peak RSS and what the fakes got."""
    if isinstance(fakes, Fakes) or fakes is not None:
        fakes.reset()
    env = dict(os.environ, **ENV, PYTHONPATH=str(Path(__file__).parent.parent))
    started = time.perf_counter()
    with log.open("ab") as err:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if isinstance(fakes, Fakes):
        requests, sizes = fakes.counts()
    elif fakes is not None:
        requests, sizes = {"sink": fakes.requests}, {"sink": fakes.bytes_received}
    else:
        requests, sizes = {}, {}
    try:
        result = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}); see {log}") from None
    return Run(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        rss_mb=result.get("peak_rss_mb") or usage.ru_maxrss / 1024,
        requests=requests,
        bytes=sizes,
        report=result.get("report", {}),
        push=result.get("push", {}),
    )


def sync(config: Path, fakes: Fakes | Sink | None, log: Path) -> Run:
    run = run_process([sys.executable, "-m", "bench.child", str(config)], fakes, log)
    for target in run.report.get("targets", []):
        if target["outcome"] != "ok":
            raise RuntimeError(
                f"{config}: {target['target']} ended {target['outcome']}: {target['error']}"
            )
    return run


def snapshot(state: Path, copy: Path) -> None:
    """Copy a SQLite state database consistently (the backup API, WAL included)."""
    copy.unlink(missing_ok=True)
    with sqlite3.connect(state) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    source.close()
    target.close()


def restore(copy: Path, state: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{state}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(copy, state)


# -- the catalogs -------------------------------------------------------------------


@dataclass
class Catalogs:
    v1: Path
    v2: Path
    edit: catalog.Edit
    size_v1: int


def prepare_catalogs(n: int, workdir: Path, say: Any) -> Catalogs:
    """Write (or reuse) the catalog and its 1% edit as JSON Lines."""
    v1, v2 = workdir / f"catalog-{n}.jsonl", workdir / f"catalog-{n}-edited.jsonl"
    edit = catalog.plan_edit(n)
    for path, which in ((v1, None), (v2, edit)):
        if not path.exists():
            say(f"writing {path.name}")
            partial = path.with_suffix(".partial")
            catalog.write_jsonl(partial, n, which)
            partial.rename(path)
    return Catalogs(v1, v2, edit, v1.stat().st_size)


def subset(source: Path, k: int, path: Path) -> Path:
    with source.open(encoding="utf-8") as lines, path.open("w", encoding="utf-8") as out:
        for _, line in zip(range(k), lines, strict=False):
            out.write(line)
    return path


def changed_payloads(config: Path, cats: Catalogs) -> dict[str, int]:
    """Body bytes of the changed products' new documents, per target: the floor a
    run after the edit can't go under by much (Vambe deletes: their external ids)."""
    from syncd.mapping import build_mapper

    loaded = load_config(config)
    mappers = {t.name: build_mapper(t, loaded.source.key) for t in loaded.targets}
    changed = {
        catalog.product_id(i)
        for i in (
            *cats.edit.prices,
            *cats.edit.descriptions,
            *cats.edit.removals,
            *cats.edit.creates,
        )
    }
    sizes = dict.fromkeys(mappers, 0)
    with cats.v2.open(encoding="utf-8") as lines:
        for line in lines:
            if line[7:18] in changed:
                record = json.loads(line)
                for name, mapper in mappers.items():
                    sizes[name] += len(mapper.map(record).canonical)
    sizes["vambe"] += sum(
        len(f'{{"external_id":"{catalog.product_id(i)}"}},') for i in cats.edit.deletes
    )
    return sizes


def minimal_requests(edit: catalog.Edit, batch: int = 2000) -> dict[str, int]:
    upserts = edit.changed - len(edit.deletes)
    return {
        "userflux": edit.changed,
        "vambe": math.ceil(upserts / batch) + math.ceil(len(edit.deletes) / batch),
    }


# -- the scenarios ------------------------------------------------------------------


def medians(runs: Sequence[Run]) -> dict[str, Any]:
    def med(values: Sequence[float]) -> float:
        return statistics.median(values)

    names = runs[0].requests.keys()
    return {
        "wall_s": med([r.wall_s for r in runs]),
        "cpu_s": med([r.cpu_s for r in runs]),
        "rss_mb": med([r.rss_mb for r in runs]),
        "requests": {k: int(med([r.requests[k] for r in runs])) for k in names},
        "bytes": {k: int(med([r.bytes[k] for r in runs])) for k in names},
        "runs": len(runs),
    }


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def run_scenarios(opts: Options, cats: Catalogs, say: Any) -> dict[str, Any]:
    work = opts.workdir
    log = work / "syncd.log"
    state, seeded = work / "state.db", work / "seeded.db"
    first_source = opts.sources[0]

    def start(source: str) -> None:
        """Restore the state a run from ``source`` starts from."""
        restore(seeded if source == first_source else work / f"seeded-{source}.db", state)

    results: dict[str, list[Run]] = {}
    extra: dict[str, Any] = {}
    with ExitStack() as outer:
        database = None
        if "postgres" in opts.sources:
            database = outer.enter_context(ScratchDatabase())
            for table, path in (("catalog_v1", cats.v1), ("catalog_v2", cats.v2)):
                say(f"loading {path.name} into PostgreSQL {database.dbname}.{table}")
                database.load(table, path)
        catalogs = {"catalog_v1": cats.v1, "catalog_v2": cats.v2}
        urls = open_sql_sources(opts.sources, catalogs, work, outer, say)
        for repeat in range(opts.repeat):
            with ExitStack() as stack:
                fakes = Fakes(stack)

                def config(
                    source: str, version: str, *, fakes: Fakes = fakes, refresh: str = ""
                ) -> Path:
                    path = cats.v1 if version == "v1" else cats.v2
                    location = (
                        str(path)
                        if source == "jsonl"
                        else urls.get(source, database.url if database else "")
                    )
                    return write_config(
                        work / f"{source}-{version}.toml",
                        source=source,
                        location=location,
                        table=f"catalog_{version}",
                        state=state,
                        userflux=fakes.userflux.url,
                        vambe=fakes.vambe.url,
                        block=fakes.block,
                        refresh_period=refresh,
                    )

                for suffix in ("", "-wal", "-shm"):
                    Path(f"{state}{suffix}").unlink(missing_ok=True)
                fresh = False
                if opts.seed_directly:
                    if repeat == 0:
                        say("seeding state directly (no first sync measured at this size)")
                        sizes = naive_sizes(load_config(config(first_source, "v1")), seed=True)
                        extra["naive_estimate"] = {"requests": sizes.requests, "bytes": sizes.bytes}
                        fresh = True
                elif repeat < opts.first_repeat:
                    say(f"[{repeat + 1}/{opts.repeat}] first sync ({first_source})")
                    results.setdefault(f"first sync ({first_source})", []).append(
                        sync(config(first_source, "v1"), fakes, log)
                    )
                    fresh = True
                if fresh:
                    snapshot(state, seeded)
                    # State fingerprints the rows of the source that filled it. Each other
                    # source starts from what a run of its own left (an unmeasured
                    # no-change run records its rows' fingerprints), as in production,
                    # where a deployment reads one source.
                    for source in opts.sources[1:]:
                        say(f"recording the fingerprints of {source} rows (not measured)")
                        sync(config(source, "v1"), fakes, log)
                        snapshot(state, work / f"seeded-{source}.db")
                        restore(seeded, state)

                for source in opts.sources:
                    start(source)
                    say(f"[{repeat + 1}/{opts.repeat}] no change ({source})")
                    results.setdefault(f"no change ({source})", []).append(
                        sync(config(source, "v1"), fakes, log)
                    )
                    if source == "jsonl":
                        say(f"[{repeat + 1}/{opts.repeat}] floors of no change (jsonl)")
                        extra.setdefault("floors", []).append(floors.run(config(source, "v1")))
                for source in opts.sources:
                    start(source)
                    say(f"[{repeat + 1}/{opts.repeat}] 1% changed ({source})")
                    results.setdefault(f"1% changed ({source})", []).append(
                        sync(config(source, "v2"), fakes, log)
                    )
                start(first_source)
                age_state(state, ROLLING_SPACING_S)
                say(f"[{repeat + 1}/{opts.repeat}] {ROLLING} ({first_source})")
                results.setdefault(f"{ROLLING} ({first_source})", []).append(
                    sync(config(first_source, "v1", refresh=ROLLING_PERIOD), fakes, log)
                )
                if opts.naive and repeat == 0:
                    say("naive full re-push (jsonl)")
                    naive = run_process(
                        [sys.executable, "-m", "bench.naive", str(config("jsonl", "v1"))],
                        fakes,
                        log,
                    )
                    results["naive full re-push (jsonl)"] = [naive]
                if repeat == 0:
                    extra["changed_payload_bytes"] = changed_payloads(config("jsonl", "v2"), cats)
    return {"runs": results, **extra}


ROLLING = "rolling refresh, a night"
ROLLING_PERIOD = "7d"
ROLLING_PERIOD_S = 7 * 86400.0
ROLLING_SPACING_S = 86400.0
UF_RATE_PER_S = 20.0
"""UserFlux's default rate limit, for the hours a night's slice takes."""


def age_state(state: Path, seconds: float) -> None:
    """Move every time the state database holds back by ``seconds``, as if that long had
    passed since its runs (the rolling refresh then has a night's slice to re-send)."""
    conn = sqlite3.connect(state)
    try:
        with conn:
            conn.execute("UPDATE products SET acked_at = acked_at - ?", (seconds,))
            conn.execute(
                "UPDATE runs SET started_at = started_at - ?, finished_at = finished_at - ?",
                (seconds, seconds),
            )
    finally:
        conn.close()


def rolling_cost(n: int, batch: int = 2000) -> dict[str, float]:
    """A night's cost of the rolling refresh at ``n`` products (nightly runs, a 7-day
    period), from its slice rule: ``n x spacing / period`` products re-sent whole."""
    products = refresh_slice_size(n, ROLLING_SPACING_S, ROLLING_PERIOD_S)
    return {
        "products": products,
        "userflux_requests": products,
        "userflux_hours": products / UF_RATE_PER_S / 3600,
        "vambe_requests": -(-products // batch),
        "weekly_full_hours": n / UF_RATE_PER_S / 3600,
    }


def run_throughput(opts: Options, cats: Catalogs, say: Any) -> dict[str, Any]:
    """UserFlux pushes at several concurrency levels, against the sink and the fake
    UserFlux: ``opts.repeat`` times (medians), each a push with ``LATENCY`` followed by
    one with none (that server's ceiling at that concurrency).

    The sink answers for a few µs of CPU, so its rows measure syncd alone; the fake
    parses and validates every request in Python, on the same two cores as syncd."""
    work = opts.workdir
    log = work / "syncd.log"
    state = work / "throughput.db"
    rows: list[dict[str, Any]] = []

    def push(url: str, concurrency: int, k: int) -> float:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{state}{suffix}").unlink(missing_ok=True)
        source = subset(cats.v1, k, work / f"subset-{k}.jsonl")
        path = write_config(
            work / "throughput.toml",
            source="jsonl",
            location=str(source),
            state=state,
            userflux=url,
            vambe=None,
            concurrency=concurrency,
        )
        window = sync(path, None, log).push["userflux"]
        return float((window["requests"] - 1) / window["seconds"])

    def products(concurrency: int, latency: float) -> int:
        """3x the ideal requests per second (100 to 4,000); 4,000 with no latency."""
        return int(min(4000, max(100, concurrency / latency * 3))) if latency else 4000

    with FakeUserflux(ENV["BENCH_UF_KEY"]) as fake, Sink() as sink:
        for server, url in (("sink", sink.url), ("fake UserFlux", fake.url)):
            for concurrency in opts.concurrency:
                say(
                    f"throughput: {server}, concurrency {concurrency}, latency "
                    f"{LATENCY * 1000:.0f} ms and 0 ms, x {opts.repeat}"
                )
                # Each repeat pushes with latency, then without: the ceiling is measured
                # next to the figure it caps, so a change in the machine's load hits both.
                runs: dict[float, list[float]] = {LATENCY: [], 0.0: []}
                for _ in range(opts.repeat):
                    for latency, measured in runs.items():
                        sink.latency = fake.latency = latency
                        measured.append(push(url, concurrency, products(concurrency, latency)))
                for latency, measured in runs.items():
                    rows.append(
                        {
                            "server": server,
                            "latency_ms": latency * 1000,
                            "concurrency": concurrency,
                            "requests": products(concurrency, latency),
                            "rps": statistics.median(measured),
                            "runs_rps": measured,
                            "ideal_rps": concurrency / latency if latency else None,
                        }
                    )
    rows.sort(key=lambda row: row["latency_ms"] == 0)  # rows with latency first (stable)
    ceilings: dict[str, dict[int, float]] = {}
    for row in rows:
        if not row["ideal_rps"]:
            ceilings.setdefault(row["server"], {})[row["concurrency"]] = row["rps"]
    for row in rows:
        if row["ideal_rps"]:
            # The ceiling against the same server at the same concurrency, latency 0:
            # more threads cost the client more, and the fake's validation shares its cores.
            ceiling = ceilings[row["server"]][row["concurrency"]]
            row["expected_rps"] = min(row["ideal_rps"], ceiling)
            row["efficiency"] = row["rps"] / row["expected_rps"]
    return {"rows": rows, "ceiling_rps": max(ceilings["sink"].values()), "ceilings": ceilings}


def push_vs_bare(opts: Options, say: Any) -> dict[str, Any]:
    """Each push beside a bare httpx client per thread (``bench.push``): CPU per request
    and req/s at 50 ms latency and none, 64 and 256 threads, ``opts.repeat`` times; then
    the 50 ms, 256-thread push split over two processes (issue 17: does a second process
    pay on this machine?)."""
    n = min(opts.n, 4000)
    result = push_bench.compare(
        opts.workdir,
        n=n,
        concurrency=(64, 256),
        latencies_ms=(LATENCY * 1000, 0.0),
        repeat=opts.repeat,
        say=say,
    )
    split = push_bench.compare(
        opts.workdir,
        n=n,
        concurrency=(256,),
        latencies_ms=(LATENCY * 1000,),
        repeat=opts.repeat,
        processes=(2,),
        say=say,
    )
    result["rows"] += split["rows"]
    return result


# -- the report ---------------------------------------------------------------------


def _mb(value: float) -> str:
    return f"{value / 1e6:.2f}"


def summarize(opts: Options, cats: Catalogs, scenarios: dict[str, Any]) -> dict[str, Any]:
    runs: dict[str, list[Run]] = scenarios["runs"]
    table = {name: medians(values) for name, values in runs.items()}
    naive = table.get("naive full re-push (jsonl)")
    if naive is None and "naive_estimate" in scenarios:
        estimate = scenarios["naive_estimate"]
        naive = {"requests": estimate["requests"], "bytes": estimate["bytes"], "estimated": True}
    if naive is not None:
        naive_requests = sum(naive["requests"].values())
        naive_bytes = sum(naive["bytes"].values())
        for name, row in table.items():
            if name.startswith("naive"):
                continue
            row["naive_ratio"] = {
                "requests": naive_requests / max(1, sum(row["requests"].values())),
                "bytes": naive_bytes / max(1, sum(row["bytes"].values())),
            }
            if "wall_s" in naive:
                row["naive_ratio"]["wall"] = naive["wall_s"] / row["wall_s"]
                row["naive_ratio"]["cpu"] = naive["cpu_s"] / row["cpu_s"]
    measured = scenarios.get("floors")
    return {
        "medians": table,
        "naive": naive,
        "floors": floors.medians(measured) if measured else None,
    }


def checks(
    opts: Options,
    cats: Catalogs,
    summary: dict[str, Any],
    scenarios: dict[str, Any],
    throughput: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    table = summary["medians"]
    out: list[dict[str, Any]] = []

    def check(name: str, ok: bool, measured: str) -> None:
        out.append({"target": name, "met": ok, "measured": measured})

    nochange = table.get("no change (jsonl)")
    if nochange is not None:
        requests = sum(nochange["requests"].values())
        # The 10 s target is for a million products; below that only memory and requests
        # are checked (interpreter start and imports alone take about a second).
        timed = opts.n >= 1_000_000
        budget = 10 * opts.n / 1e6  # 10 s per million products
        check(
            f"no change, {opts.n:,} products, JSONL: "
            + (f"< {budget:g} s wall, " if timed else "(wall checked from 1M: make bench-1m) ")
            + "< 300 MB, 0 requests",
            (nochange["wall_s"] < budget or not timed)
            and nochange["rss_mb"] < 300
            and requests == 0,
            f"{nochange['wall_s']:.1f} s wall, {nochange['cpu_s']:.1f} s CPU, "
            f"{nochange['rss_mb']:.0f} MB, {requests} requests",
        )
    if nochange is not None and scenarios.get("floors"):
        measured = floors.medians(scenarios["floors"])
        ratio = nochange["cpu_s"] / measured["sum"]
        check(
            f"no change, {opts.n:,} products, JSONL: CPU within {floors.TARGET}x of the sum of "
            "its floors (read, split, hash, state's fingerprints, lookups, imports)",
            ratio <= floors.TARGET,
            f"{nochange['cpu_s']:.2f} s / {measured['sum']:.2f} s = {ratio:.2f}x",
        )
    out.extend(sql_ratio_checks(table, opts.sources))
    rolling = table.get(f"{ROLLING} ({opts.sources[0]})")
    if rolling is not None:
        expected = rolling_cost(opts.n)
        sent = rolling["requests"].get("userflux", 0)
        check(
            f"{ROLLING}: about n / 7 products re-sent whole ({expected['products']:,})",
            expected["products"] <= sent <= expected["products"] * 1.02 + 1,
            f"{sent:,} UserFlux requests, {rolling['requests'].get('vambe', 0)} Vambe batches",
        )
    minimal = minimal_requests(cats.edit)
    floor = scenarios.get("changed_payload_bytes", {})
    for source in opts.sources:
        row = table.get(f"1% changed ({source})")
        if row is None:
            continue
        check(
            f"1% changed ({source}): minimal requests {minimal}",
            row["requests"] == minimal,
            f"{row['requests']}",
        )
        if floor:
            ratio = sum(row["bytes"].values()) / sum(floor.values())
            check(
                f"1% changed ({source}): bytes within 1.5x of the changed payloads",
                ratio <= 1.5,
                f"{_mb(sum(row['bytes'].values()))} MB sent / {_mb(sum(floor.values()))} MB "
                f"changed payloads = {ratio:.2f}x",
            )
    if throughput is not None:
        for row in throughput["rows"]:
            if row.get("efficiency") is None:
                continue
            check(
                f"throughput, concurrency {row['concurrency']}, {row['latency_ms']:.0f} ms: "
                ">= 90% of min(c/latency, ceiling)",
                row["efficiency"] >= 0.9,
                f"{row['rps']:.0f} req/s of {row['expected_rps']:.0f} ({row['efficiency']:.0%})",
            )
    return out


def render(
    opts: Options,
    cats: Catalogs,
    summary: dict[str, Any],
    throughput: dict[str, Any] | None,
    found: list[dict[str, Any]],
    sections: Sequence[list[str]] = (),
) -> str:
    """The printed report; ``sections``: more blocks of lines, printed before the targets."""
    lines = [
        f"syncd bench: {opts.n:,} products ({cats.size_v1 / 1e6:.0f} MB JSONL), "
        f"medians of {opts.repeat} run(s); {os.cpu_count()} CPUs",
        "",
        f"{'scenario':<28} {'wall s':>8} {'CPU s':>8} {'peak MB':>8} {'req UF':>8} {'req VB':>7}"
        f" {'MB sent':>8} {'naive/this req':>15} {'bytes':>8} {'wall':>7}",
    ]
    for name, row in summary["medians"].items():
        ratio = row.get("naive_ratio", {})
        requests = row["requests"]
        lines.append(
            f"{name:<28} {row['wall_s']:>8.2f} {row['cpu_s']:>8.2f} {row['rss_mb']:>8.0f} "
            f"{requests.get('userflux', 0):>8} {requests.get('vambe', 0):>7} "
            f"{_mb(sum(row['bytes'].values())):>8} "
            f"{_ratio(ratio.get('requests')):>15} {_ratio(ratio.get('bytes')):>8} "
            f"{_ratio(ratio.get('wall')):>7}"
        )
    naive = summary.get("naive")
    if naive and naive.get("estimated"):
        lines.append(
            f"{'naive full re-push (computed)':<28} {'':>8} {'':>8} {'':>8} "
            f"{naive['requests'].get('userflux', 0):>8} {naive['requests'].get('vambe', 0):>7} "
            f"{_mb(sum(naive['bytes'].values())):>8}"
        )
    million = rolling_cost(1_000_000)
    lines += [
        "",
        f"rolling refresh, nightly cost at 1,000,000 products, refresh_period {ROLLING_PERIOD}, "
        f"nightly runs: {million['userflux_requests']:,.0f} UserFlux requests "
        f"({million['userflux_hours']:.1f} h at {UF_RATE_PER_S:g} req/s) and "
        f"{million['vambe_requests']:.0f} Vambe batches a night, every night; the weekly full "
        f"refresh it replaces: 1,000,000 requests ({million['weekly_full_hours']:.1f} h) "
        "every Sunday",
    ]
    if throughput is not None:
        lines += [
            "",
            f"push throughput (UserFlux, one request per product, medians of {opts.repeat}); "
            f"client ceiling {throughput['ceiling_rps']:.0f} req/s (sink, latency 0, best "
            "concurrency);",
            "efficiency is against min(ideal, that server's ceiling at the same concurrency);",
            "the sink costs a few µs a request; the fake validates in Python on syncd's cores",
            f"{'server':<14} {'latency':>8} {'conc.':>6} {'requests':>9} {'req/s':>8}"
            f" {'ideal':>8} {'expected':>9} {'eff.':>6}",
        ]
        for row in throughput["rows"]:
            ideal = f"{row['ideal_rps']:.0f}" if row["ideal_rps"] else "-"
            expected = f"{row['expected_rps']:.0f}" if row.get("expected_rps") else "-"
            efficiency = f"{row['efficiency']:.0%}" if row.get("efficiency") else "-"
            lines.append(
                f"{row['server']:<14} {row['latency_ms']:>6.0f}ms {row['concurrency']:>6} "
                f"{row['requests']:>9} {row['rps']:>8.0f} {ideal:>8} {expected:>9} {efficiency:>6}"
            )
    nochange = summary["medians"].get("no change (jsonl)")
    if nochange is not None and summary.get("floors"):
        lines += ["", *floors.render(summary["floors"], nochange["cpu_s"])]
    for section in sections:
        lines += ["", *section]
    lines += ["", "targets:"]
    for item in found:
        lines.append(
            f"  [{'met' if item['met'] else 'MISSED':>6}] {item['target']}: {item['measured']}"
        )
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}x" if value >= 10 else f"{value:.2f}x"


def main(opts: Options) -> int:
    opts.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.update(ENV)
    started = time.time()

    def say(text: str) -> None:
        print(f"[{time.time() - started:7.1f}s] {text}", file=sys.stderr, flush=True)

    load_before = os.getloadavg()
    cats = prepare_catalogs(opts.n, opts.workdir, say)
    scenarios = run_scenarios(opts, cats, say)
    throughput = run_throughput(opts, cats, say) if opts.throughput else None
    pushes = push_vs_bare(opts, say) if opts.throughput else None
    from bench import parallel  # it runs through this module's fakes and children

    in_parallel = parallel.run_parallel(opts, cats, say) if opts.parallel else None
    mapped = mapping.measure(opts.n, cats.v1, opts.workdir, opts.repeat, say)
    summary = summarize(opts, cats, scenarios)
    found = [*checks(opts, cats, summary, scenarios, throughput), *mapping.checks(mapped)]
    if in_parallel is not None:
        found += parallel.check_parallel(in_parallel)
    sections = [] if in_parallel is None else [parallel.render_parallel(in_parallel, opts.repeat)]
    sections.append(mapping.render(mapped))
    text = render(opts, cats, summary, throughput, found, sections)
    if pushes is not None:
        text += "\n\n" + push_bench.render(pushes)
    print(text)
    opts.results.mkdir(parents=True, exist_ok=True)
    out = opts.results / f"{time.strftime('%Y%m%d-%H%M%S')}-{opts.n}.json"
    document = {
        "meta": {
            "n": opts.n,
            "repeat": opts.repeat,
            "sources": opts.sources,
            "catalog_bytes": cats.size_v1,
            "edit": {
                "changed": cats.edit.changed,
                "deletes": len(cats.edit.deletes),
                "creates": len(cats.edit.creates),
            },
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "python": platform.python_version(),
            "seconds": time.time() - started,
        },
        "medians": summary["medians"],
        "naive": summary["naive"],
        "changed_payload_bytes": scenarios.get("changed_payload_bytes"),
        "no_change_floors": summary.get("floors"),
        "runs": {name: [_plain(r) for r in runs] for name, runs in scenarios["runs"].items()},
        "throughput": throughput,
        "targets_in_parallel": in_parallel,
        "push_vs_bare": pushes,
        "mapping": mapped,
        "rolling_refresh_nightly": {
            "1000000": rolling_cost(1_000_000),
            str(opts.n): rolling_cost(opts.n),
        },
        "targets": found,
    }
    out.write_text(json.dumps(document, indent=2, default=str), encoding="utf-8")
    say(f"figures written to {out}")
    return 0


def _plain(run: Run) -> dict[str, Any]:
    targets = run.report.get("targets", [])
    return {
        "wall_s": run.wall_s,
        "cpu_s": run.cpu_s,
        "rss_mb": run.rss_mb,
        "requests": run.requests,
        "bytes": run.bytes,
        "push": run.push,
        "outcomes": {t["target"]: t["outcome"] for t in targets},
        "durations_ms": {t["target"]: t["duration_ms"] for t in targets},
    }
