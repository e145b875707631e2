"""Progress a person can read: per target done / total, rate and ETA; the plan's time."""

from __future__ import annotations

from pathlib import Path

from syncd.metrics import SyncdMetrics
from syncd.progress import RunProgress, TargetProgress
from syncd.reconcile import Reconciler, RunOptions
from syncd.report import render_plan
from syncd.sandbox import FakeUserflux
from tests.support import KEY, Harness, catalog, userflux_target


class ManualTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_gives_each_target_done_total_rate_and_eta():
    time = ManualTime()
    progress = RunProgress(clock=time)
    progress.begin("uf", 100)
    progress.begin("vb", 10)
    time.now += 5
    progress.advance("uf", 20)
    progress.advance("vb", 10)

    uf, vb = progress.snapshot()

    assert (uf.target, uf.done, uf.total) == ("uf", 20, 100)
    assert uf.rate == 4.0 and uf.eta_s == 20.0
    assert uf.line() == "uf: 20/100 products, 4.0/s, about 0m20s left"
    assert vb.eta_s == 0.0


def test_a_target_that_settled_nothing_yet_has_no_eta():
    assert TargetProgress("uf", 0, 50, 3.0).eta_s is None
    assert "ETA unknown" in TargetProgress("uf", 0, 50, 3.0).line()


def test_a_sync_reports_its_progress_as_gauges_on_metrics(tmp_path: Path):
    with FakeUserflux(api_key=KEY) as userflux:
        h = Harness(tmp_path, [userflux_target(userflux.url)])
        h.write(catalog(7))
        metrics = SyncdMetrics(["uf"])
        reconciler = Reconciler(h.config, h.store, environ=h.environ, progress=metrics.progress)

        assert reconciler.sync(RunOptions()).ok

        text = metrics.render()[0].decode()
        assert 'syncd_run_products_done{target="uf"} 7.0' in text
        assert 'syncd_run_products_total{target="uf"} 7.0' in text
        assert 'syncd_run_eta_seconds{target="uf"} 0.0' in text
        h.close()


def test_the_plan_says_how_long_sending_takes_at_least_at_the_rate_limit(tmp_path: Path):
    with FakeUserflux(api_key=KEY) as userflux:
        h = Harness(tmp_path, [userflux_target(userflux.url, rate_limit_per_s=4)])
        h.write(catalog(600))

        [plan] = h.plan()

        assert plan.min_duration_s == 150.0
        assert plan.summary()["min_duration_s"] == 150.0
        assert "time: at least 2m30s (600 requests at rate_limit_per_s=4" in render_plan(plan)
        assert userflux.request_count(method="POST") == 0
        h.close()


def test_a_plan_without_a_rate_limit_gives_no_time():
    from syncd.diff import Plan

    plan = Plan("uf", "userflux", "full", "why", (), 0)

    assert plan.min_duration_s is None
    assert "time:" not in render_plan(plan)
