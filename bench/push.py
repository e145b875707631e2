"""Each UserFlux push against a bare httpx client, side by side in one run.

``python -m bench.push [--n 4000] [--concurrency 64,256] [--latency 0,50] [--repeat 3]
[--processes 1,2]``: against one sink (``bench.sink``, a few µs a request, in this
process), for every latency and concurrency, each repeat runs, one after the other in
fresh processes and with the same request bodies:

- **bare**: a bare ``httpx.Client`` per thread, N threads, each posting bodies taken in
  turn from one shared list (the floor a push can't go under with httpx and threads);
- **syncd**: syncd's ``Executor`` and ``UserfluxTarget`` with N workers, rate limit off,
  metrics on (``SyncdMetrics`` as the events, as the daemon runs it), sending the same
  products planned as a first sync (one FULL_UPDATE ``POST /product`` each).

Each child builds its requests before the clock starts, then waits for the parent's
go; it reports the CPU time (``time.process_time``) and the wall time of its push
alone. CPU per request is process time / requests; req/s is requests / wall time.
With ``--processes 2`` a push is split across two processes (half the threads and
half the requests each), started together: whether a second process pays on this
machine, when one process is held by the GIL.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.catalog import write_jsonl
from bench.config import API_KEY, ENV, write_config
from bench.sink import Sink

CPU_TARGET = 1.15
"""syncd's CPU per request within this multiple of the bare client's."""
RPS_TARGET = 0.9
"""syncd's requests per second at least this fraction of the bare client's."""


# -- the child: one measured push --------------------------------------------------------


_SPOOLS: list[Any] = []


def _operations(config_path: str, start: int, count: int) -> tuple[Any, ...]:
    """The first sync's UserFlux operations for products ``start`` to ``start + count``."""
    from syncd.config import UserfluxTargetConfig, load_config
    from syncd.diff import Change, ChangeKind
    from syncd.mapping import build_mapper
    from syncd.model import Spool, UnreadableRow
    from syncd.sources import open_source
    from syncd.targets.userflux.planner import plan_userflux

    config = load_config(config_path)
    target = config.targets[0]
    assert isinstance(target, UserfluxTargetConfig)
    mapper = build_mapper(target, config.source.key)
    spool = _SPOOLS[0] if _SPOOLS else Spool()  # as a run's plan holds its payloads
    _SPOOLS[:] = [spool]
    changes = []
    for i, record in enumerate(open_source(config.source, config.http).read()):
        if i < start or isinstance(record, UnreadableRow):
            continue
        if i >= start + count:
            break
        document = mapper.map(record)
        changes.append(Change(ChangeKind.CREATE, document.key, document.spooled(spool)))
    return plan_userflux(changes, (), full=False, deletes_allowed=True).operations


def _clients(url: str, threads: int) -> list[Any]:
    """The bare clients, made before the clock starts (each builds its TLS context)."""
    import httpx

    from syncd.httpclient import USER_AGENT

    headers = {
        "User-Agent": USER_AGENT,
        "Accept": "application/json",
        "Authorization": f"Bearer {API_KEY}",
        "Content-Type": "application/json",
    }
    return [httpx.Client(base_url=url, headers=headers, timeout=60) for _ in range(threads)]


def _bare(clients: Sequence[Any], bodies: Sequence[bytes]) -> int:
    """Post every body, one thread per client; requests sent."""
    queue = iter(bodies)  # one shared iterator: next() on it is atomic under the GIL
    threads = len(clients)
    sent = [0] * threads

    def worker(index: int) -> None:
        with clients[index] as client:
            for body in queue:
                client.post("/product", content=body).raise_for_status()
                sent[index] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return sum(sent)


def _executor(config_path: str, threads: int) -> tuple[Any, Any]:
    """syncd's UserFlux target and an ``Executor`` for it (made before the clock starts,
    as a run makes them before it sends; its clients are made by the workers, timed)."""
    from syncd.config import UserfluxTargetConfig, load_config
    from syncd.executor import Executor
    from syncd.metrics import SyncdMetrics
    from syncd.targets.userflux.target import UserfluxTarget

    config = load_config(config_path)
    target_config = config.targets[0]
    assert isinstance(target_config, UserfluxTargetConfig)
    target = UserfluxTarget(target_config, config.http, api_key=API_KEY)
    executor = Executor(
        target,
        concurrency=threads,
        rate_limit_per_s=target_config.rate_limit_per_s,
        retry=target_config.retry,
        events=SyncdMetrics([target_config.name]),
    )
    return target, executor


def _syncd(target: Any, executor: Any, operations: Sequence[Any]) -> int:
    """Push ``operations`` through syncd's executor and UserFlux target; requests sent."""
    acked = [0]

    def on_ack(operation: Any) -> None:
        acked[0] += len(operation.changes)

    try:
        execution = executor.run(tuple(operations), on_ack, lambda: None)
    finally:
        target.close()
    if acked[0] != len(operations):
        raise RuntimeError(f"syncd acknowledged {acked[0]} of {len(operations)}: {execution}")
    return int(execution.requests)


def child(argv: list[str]) -> int:
    """``python -m bench.push child MODE CONFIG URL START COUNT THREADS``."""
    mode, config_path, url = argv[:3]
    start, count, threads = (int(a) for a in argv[3:6])
    operations = _operations(config_path, start, count)
    if mode == "bare":
        import json as _json

        from syncd.targets.userflux.planner import request_body

        bodies = [
            _json.dumps(request_body(op), separators=(",", ":"), ensure_ascii=False).encode()
            for op in operations
        ]
        clients = _clients(url, threads)
    else:
        target, executor = _executor(config_path, threads)
    print("ready", flush=True)
    sys.stdin.readline()  # the parent's go: every process of a push starts together
    cpu, started = time.process_time(), time.perf_counter()
    sent = _bare(clients, bodies) if mode == "bare" else _syncd(target, executor, operations)
    wall_end, cpu_end = time.perf_counter(), time.process_time()
    print(
        json.dumps({"requests": sent, "cpu_s": cpu_end - cpu, "start": started, "end": wall_end}),
        flush=True,
    )
    return 0


# -- the parent: side by side ----------------------------------------------------------


def push(
    mode: str, config: Path, sink: Sink, n: int, threads: int, processes: int
) -> dict[str, float]:
    """One push of ``n`` requests by ``threads`` threads over ``processes`` processes."""
    # the caller's PYTHONPATH first: it may name another syncd to measure (a before/after)
    path = [p for p in (os.environ.get("PYTHONPATH"), str(Path(__file__).parent.parent)) if p]
    env = dict(os.environ, **ENV, PYTHONPATH=os.pathsep.join(path))
    share, extra = divmod(n, processes)
    procs = []
    start = 0
    for index in range(processes):
        count = share + (index < extra)
        argv = [sys.executable, "-m", "bench.push", "child", mode, str(config), sink.url]
        argv += [str(start), str(count), str(max(1, threads // processes))]
        start += count
        procs.append(
            subprocess.Popen(
                argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
        )
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"bench.push child {mode} failed to start")
    sink.reset()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"bench.push child {mode} failed ({proc.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    requests = sum(r["requests"] for r in results)
    if requests != n or sink.requests != n:
        raise RuntimeError(f"{mode}: {requests} requests sent, {sink.requests} received, not {n}")
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    cpu = sum(r["cpu_s"] for r in results)
    return {"requests": n, "cpu_s": cpu, "wall_s": wall}


def compare(
    workdir: Path,
    *,
    n: int,
    concurrency: Sequence[int],
    latencies_ms: Sequence[float],
    repeat: int,
    processes: Sequence[int] = (1,),
    say: Any = None,
) -> dict[str, Any]:
    """Every (latency, concurrency, processes): bare and syncd, ``repeat`` times each,
    alternating; medians of CPU per request and req/s, and syncd's ratios to bare."""
    workdir.mkdir(parents=True, exist_ok=True)
    catalog = workdir / f"push-{n}.jsonl"
    if not catalog.exists():
        write_jsonl(catalog, n)
    rows: list[dict[str, Any]] = []
    with Sink() as sink:
        config = write_config(
            workdir / "push.toml",
            source="jsonl",
            location=str(catalog),
            state=workdir / "push-unused.db",
            userflux=sink.url,
            vambe=None,
        )
        for latency in latencies_ms:
            sink.latency = latency / 1000
            for threads in concurrency:
                for procs in processes:
                    if say:
                        say(
                            f"push: latency {latency:g} ms, {threads} threads, "
                            f"{procs} process(es), x {repeat}"
                        )
                    runs: dict[str, list[dict[str, float]]] = {"bare": [], "syncd": []}
                    for _ in range(repeat):
                        for mode, measured in runs.items():
                            measured.append(push(mode, config, sink, n, threads, procs))
                    row: dict[str, Any] = {
                        "latency_ms": latency,
                        "concurrency": threads,
                        "processes": procs,
                        "requests": n,
                    }
                    for mode, measured in runs.items():
                        row[mode] = {
                            "cpu_ms_per_request": statistics.median(
                                1000 * r["cpu_s"] / r["requests"] for r in measured
                            ),
                            "rps": statistics.median(r["requests"] / r["wall_s"] for r in measured),
                            "runs": measured,
                        }
                    row["cpu_ratio"] = (
                        row["syncd"]["cpu_ms_per_request"] / row["bare"]["cpu_ms_per_request"]
                    )
                    row["rps_ratio"] = row["syncd"]["rps"] / row["bare"]["rps"]
                    rows.append(row)
    return {"rows": rows, "cpu_target": CPU_TARGET, "rps_target": RPS_TARGET, "n": n}


def executor_overhead(operations: int = 20_000) -> dict[str, float]:
    """µs of CPU per operation of ``Executor.run`` alone, over a target whose ``send``
    does nothing, with no events and with ``SyncdMetrics``, at 16 and 256 workers."""
    from syncd.config import RetryConfig
    from syncd.diff import Change, ChangeKind, Operation
    from syncd.executor import Executor
    from syncd.metrics import SyncdMetrics

    class Nothing:
        name = "t"

        def send(self, operation: Operation) -> None:
            pass

        def split(self, operation: Operation) -> None:
            return None

    ops = tuple(
        Operation("product.upsert", "FULL_UPDATE", "", (Change(ChangeKind.CREATE, f"k{i}"),))
        for i in range(operations)
    )
    out: dict[str, float] = {}
    for workers in (16, 256):
        for label, events in (("no events", None), ("metrics", SyncdMetrics(["t"]))):
            executor = Executor(
                Nothing(),
                concurrency=workers,
                rate_limit_per_s=0,
                retry=RetryConfig(),
                events=events,
            )
            cpu = time.process_time()
            executor.run(ops, lambda op: None, lambda: None)
            out[f"{workers} workers, {label}"] = (time.process_time() - cpu) / len(ops) * 1e6
    return out


def render(result: dict[str, Any]) -> str:
    lines = [
        f"push vs a bare httpx client per thread (UserFlux bodies, {result['n']} requests a "
        "push, medians; CPU = process time / requests)",
        f"{'latency':>8} {'thr.':>5} {'proc':>4} {'bare ms':>8} {'syncd ms':>9} "
        f"{'CPU ratio':>14} {'bare r/s':>9} {'syncd r/s':>10} {'r/s ratio':>14}",
    ]
    for row in result["rows"]:
        bare, ours = row["bare"], row["syncd"]
        cpu_ok = "ok" if row["cpu_ratio"] <= CPU_TARGET else "MISS"
        rps_ok = "ok" if row["rps_ratio"] >= RPS_TARGET else "MISS"
        lines.append(
            f"{row['latency_ms']:>6g}ms {row['concurrency']:>5} {row['processes']:>4} "
            f"{bare['cpu_ms_per_request']:>8.3f} {ours['cpu_ms_per_request']:>9.3f} "
            f"{row['cpu_ratio']:>5.2f}x <={CPU_TARGET:g} {cpu_ok:<4}"
            f"{bare['rps']:>9.0f} {ours['rps']:>10.0f} "
            f"{row['rps_ratio']:>5.2f}x >={RPS_TARGET:g} {rps_ok}"
        )
    lines += _second_process(result["rows"])
    return "\n".join(lines)


def _second_process(rows: Sequence[dict[str, Any]]) -> list[str]:
    """For each push also split over more processes: its req/s and CPU per request over
    the same push from one process, for the bare client and for syncd (no target: a
    figure to read, whether a second process pays on this machine)."""
    single = {(r["latency_ms"], r["concurrency"]): r for r in rows if r["processes"] == 1}
    lines = []
    for row in rows:
        one = single.get((row["latency_ms"], row["concurrency"]))
        if row["processes"] == 1 or one is None:
            continue
        figures = []
        for mode in ("bare", "syncd"):
            rps = row[mode]["rps"] / one[mode]["rps"]
            cpu = row[mode]["cpu_ms_per_request"] / one[mode]["cpu_ms_per_request"]
            figures.append(f"{mode} {rps:.2f}x req/s, {cpu:.2f}x CPU per request")
        lines.append(
            f"{row['processes']} processes x {row['concurrency'] // row['processes']} threads "
            f"vs 1 x {row['concurrency']} at {row['latency_ms']:g} ms: " + "; ".join(figures)
        )
    return lines


def main(argv: list[str]) -> int:
    if argv[:1] == ["child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.push", description=__doc__)
    parser.add_argument("--n", type=int, default=4000, help="requests a push")
    parser.add_argument("--concurrency", default="16,64,256", help="threads")
    parser.add_argument("--latency", default="0,50", help="the sink's latency, in ms")
    parser.add_argument("--repeat", type=int, default=3, help="pushes of each kind (medians)")
    parser.add_argument("--processes", default="1", help="processes a push is split over")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "syncd-bench")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--overhead",
        action="store_true",
        help="only the executor's own CPU per operation (a target that sends nothing)",
    )
    args = parser.parse_args(argv)
    if args.overhead:
        for what, micros in executor_overhead().items():
            print(f"executor alone, {what}: {micros:.1f} µs CPU per operation")
        return 0
    started = time.time()

    def say(text: str) -> None:
        print(f"[{time.time() - started:7.1f}s] {text}", file=sys.stderr, flush=True)

    result = compare(
        args.workdir,
        n=args.n,
        concurrency=[int(c) for c in args.concurrency.split(",")],
        latencies_ms=[float(v) for v in args.latency.split(",")],
        repeat=args.repeat,
        processes=[int(p) for p in args.processes.split(",")],
        say=say,
    )
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
