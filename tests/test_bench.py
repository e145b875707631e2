"""The benchmark itself: ``make bench`` must keep working, and its 1M seeding must leave
the state a real first sync leaves (or its no-change figures would measure mapping)."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from bench import catalog
from bench.config import ENV, write_config
from bench.postgres import ScratchDatabase
from bench.seed import naive_sizes
from syncd.config import load_config
from syncd.reconcile import Reconciler
from syncd.sandbox import FakeUserflux, FakeVambe
from syncd.stages import opening
from syncd.state import open_store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def postgres(pg_url):
    """The bench's own scratch databases are on the same server as ``pg_url``'s
    (fails under CI, skips elsewhere, when it is down)."""


def test_the_bench_runs_every_scenario_and_writes_its_figures(tmp_path, postgres):
    n = 400
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            f"--n={n}",
            "--repeat=1",
            "--sources=jsonl,postgres,sqlite",
            "--no-throughput",
            "--parallel=100",
            f"--workdir={tmp_path / 'work'}",
            f"--results={tmp_path / 'results'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "1% changed (postgres)" in out.stdout  # the printed table
    [written] = (tmp_path / "results").iterdir()
    figures = json.loads(written.read_text())
    medians = figures["medians"]

    edit = catalog.plan_edit(n)
    assert medians["first sync (jsonl)"]["requests"] == {"userflux": n, "vambe": 1}
    for source in ("jsonl", "postgres", "sqlite"):
        assert medians[f"no change ({source})"]["requests"] == {"userflux": 0, "vambe": 0}
        changed = medians[f"1% changed ({source})"]["requests"]
        assert changed["userflux"] == edit.changed  # creates and deletes included
        assert changed["vambe"] == 2  # one create batch, one delete batch
    assert figures["naive"]["requests"]["userflux"] == n
    assert all(row["met"] for row in figures["targets"] if "1% changed" in row["target"])
    rolling = medians["rolling refresh, a night (jsonl)"]["requests"]
    assert n // 7 <= rolling["userflux"] <= n // 7 + 2 and rolling["vambe"] == 1
    assert "142,857 UserFlux requests" in out.stdout  # a night's cost at 1M products
    for source in ("postgres", "sqlite"):  # each SQL source's CPU against JSON Lines'
        assert f"no change ({source}): CPU within 2x of JSON Lines" in out.stdout

    parallel = figures["targets_in_parallel"]
    assert parallel["products"] == 100
    assert "two-target run" in out.stdout and "the slowest alone (vambe" in out.stdout
    ways = parallel["medians"]
    assert ways["both targets"]["requests"] == {"userflux": 100, "vambe": 4}  # batches of 25
    assert ways["userflux alone"]["requests"] == {"userflux": 100, "vambe": 0}
    assert ways["vambe alone"]["requests"] == {"userflux": 0, "vambe": 4}
    # in the two-target run both targets were answering at once, not one after the other
    [both] = parallel["runs"]["both targets"]
    windows = [
        (w["first_request_after_s"], w["first_request_after_s"] + w["seconds"])
        for w in both["push"].values()
    ]
    assert len(windows) == 2
    assert max(start for start, _ in windows) < min(end for _, end in windows)
    assert parallel["ratio_to_sum"] == pytest.approx(
        ways["both targets"]["wall_s"]
        / (ways["userflux alone"]["wall_s"] + ways["vambe alone"]["wall_s"])
    )


def test_seeded_state_lets_a_postgres_run_skip_every_unchanged_row(tmp_path, monkeypatch, postgres):
    """``bench/seed.py`` records each PostgreSQL row's fingerprint as a sync would: the
    no-change run after seeding maps no row at all."""
    source = tmp_path / "catalog.jsonl"
    catalog.write_jsonl(source, 150)
    mapped: list[str] = []
    real_build_mapper = opening.build_mapper

    class CountingMapper:
        def __init__(self, mapper):
            self._mapper = mapper
            self.well_formed = mapper.well_formed

        def map(self, record):
            mapped.append(record["id"])
            return self._mapper.map(record)

        def encode(self, record):
            mapped.append(record["id"])
            return self._mapper.encode(record)

    def counting_build_mapper(*args, **kwargs):
        return CountingMapper(real_build_mapper(*args, **kwargs))

    monkeypatch.setattr(opening, "build_mapper", counting_build_mapper)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    with ExitStack() as stack:
        database = stack.enter_context(ScratchDatabase(f"syncd_bench_test_{tmp_path.name[-8:]}"))
        database.load("catalog_v1", source)
        userflux = stack.enter_context(FakeUserflux(ENV["BENCH_UF_KEY"]))
        vambe = stack.enter_context(FakeVambe(ENV["BENCH_VB_KEY"]))
        path = write_config(
            tmp_path / "postgres.toml",
            source="postgres",
            location=database.url,
            table="catalog_v1",
            state=tmp_path / "state.db",
            userflux=userflux.url,
            vambe=vambe.url,
            block=vambe.add_block(name="bench"),
        )
        config = load_config(path)
        naive_sizes(config, seed=True)
        store = open_store(config.state.resolved_url())
        stack.callback(store.close)

        plans = Reconciler(config, store).plan()

    assert [p.state_count for p in plans] == [150, 150]
    assert [p.unchanged for p in plans] == [150, 150]
    assert [p.operations for p in plans] == [(), ()]
    assert mapped == []
