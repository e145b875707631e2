"""Crash harness: ``syncd sync`` killed with SIGKILL at random points of its pushes to both
targets, then run again (sometimes after the source rolled back the trial's edit). The
edits sometimes make a product unpushable to Vambe (a price of 0). Every trial: the target
ends equal to the source, as a fresh full sync would leave it, no product present in the
source (and acceptable to that target) is ever deleted, state only moved for acknowledged
writes, the state database passes ``PRAGMA integrity_check``, and the killed run is
recorded as interrupted.

``SYNCD_CRASH_TRIALS`` sets the number of trials (default 8, a few seconds each);
``SYNCD_CRASH_SEED`` replays a run (the seed is printed and named in every failure).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from syncd.sandbox import RecordedRequest
from tests.robustness.helpers import (
    UF_NAME,
    UNACKNOWLEDGED,
    VB_NAME,
    Sandbox,
    acked_rows,
    acknowledged,
    deleted_keys,
    expected_vambe,
    integrity_check,
    keys_of,
    make_record,
    make_records,
    sandbox,
    state_rows,
)

TRIALS = int(os.environ.get("SYNCD_CRASH_TRIALS", "8"))
BATCH = 8
START = 120


class Trial:
    """One edit of the catalog, one killed ``syncd sync``, one clean re-run."""

    def __init__(self, box: Sandbox, rng: random.Random, seed: int, number: int) -> None:
        self.box = box
        self.rng = rng
        self.where = f"seed={seed} trial={number}"

    def fail(self, message: str) -> str:
        return f"[{self.where}] {message}"


def edit(
    rng: random.Random, records: list[dict[str, Any]], gone: list[dict], next_id: list[int]
) -> tuple[list[dict], int]:
    """Change ~10%, delete up to ~8%, add a few, bring back a deleted one; the change count."""
    records = list(records)
    changes = 0
    for index in rng.sample(range(len(records)), k=max(1, len(records) // 10)):
        number = int(records[index]["id"][1:])
        records[index] = make_record(number, version=rng.randint(1, 50))
        changes += 1
    for _ in range(rng.randint(0, max(1, len(records) * 8 // 100))):
        gone.append(records.pop(rng.randrange(len(records))))
        changes += 1
    for _ in range(rng.randint(1, 6)):
        records.append(make_record(next_id[0]))
        next_id[0] += 1
        changes += 1
    if gone and rng.random() < 0.5:
        records.append(gone.pop(rng.randrange(len(gone))))
        changes += 1
    if rng.random() < 0.5:  # Vambe can't take a price of 0: withdrawn from it
        index = rng.randrange(len(records))
        records[index] = dict(records[index], price=0)
        changes += 1
    return records, changes


def wrongly_deleted(
    uf: list[RecordedRequest], vb: list[RecordedRequest], records: list[dict[str, Any]]
) -> set[str]:
    """Keys deleted from a target that can still take them from the source."""
    return (set(deleted_keys(uf, [])) & keys_of(records)) | (
        set(deleted_keys([], vb)) & set(expected_vambe(records))
    )


def writes_of(requests: list[RecordedRequest]) -> int:
    return sum(1 for r in requests if r.method != "GET")


def run_and_kill(
    box: Sandbox, rng: random.Random, changes: int, trial: Trial
) -> tuple[str, int | None]:
    """Start ``syncd sync`` and kill it at a random point; (how it was killed, return code).

    SIGKILL after the n-th write to UserFlux or to Vambe, or at a random time early on
    (start-up, migrations, the read); or SIGTERM after the n-th UserFlux write, which
    must stop the run cleanly (exit 0, run recorded, lease released).
    """
    assert box.userflux is not None and box.vambe is not None
    uf_before, vb_before = len(box.userflux.requests), len(box.vambe.requests)
    kind = rng.choices(["userflux", "vambe", "early", "sigterm"], weights=[5, 3, 1, 2])[0]
    if kind in ("userflux", "sigterm"):
        threshold = rng.randint(1, max(1, changes - 1))
    elif kind == "vambe":
        threshold = rng.randint(1, max(1, math.ceil(changes / BATCH)))
    else:
        threshold = 0
    deadline_early = time.monotonic() + rng.uniform(0.2, 1.2)
    process = subprocess.Popen(
        box.cli_command("sync"),
        env=box.cli_env(),
        cwd=box.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    give_up = time.monotonic() + 30
    try:
        while process.poll() is None and time.monotonic() < give_up:
            if kind in ("userflux", "sigterm"):
                hit = writes_of(box.userflux.requests[uf_before:]) >= threshold
            elif kind == "vambe":
                hit = writes_of(box.vambe.requests[vb_before:]) >= threshold
            else:
                hit = time.monotonic() >= deadline_early
            if hit:
                process.send_signal(signal.SIGTERM if kind == "sigterm" else signal.SIGKILL)
                break
            time.sleep(0.001)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read() if process.stderr else ""
    if process.returncode not in (-signal.SIGKILL, 0):
        pytest.fail(trial.fail(f"the run ended {process.returncode}:\n{stderr[-3000:]}"))
    return f"{kind}@{threshold}", process.returncode


def expire_leases(db: Path) -> int:
    """Let the lease TTL pass: what a real restart does by waiting ``lease_ttl_s``."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        return conn.execute("UPDATE leases SET expires_at = 0").rowcount


def live_leases(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        now = time.time()
        return int(
            conn.execute("SELECT count(*) FROM leases WHERE expires_at > ?", (now,)).fetchone()[0]
        )


def runs_after(db: Path, run_id: int) -> list[tuple[int, str, str]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT id, target, outcome FROM runs WHERE id > ? ORDER BY id", (run_id,)
        ).fetchall()


def last_run_id(db: Path) -> int:
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(db)) as conn:
        try:
            return int(conn.execute("SELECT coalesce(max(id), 0) FROM runs").fetchone()[0])
        except sqlite3.OperationalError:  # killed before the schema existed
            return 0


def check_state_moved_only_on_acks(
    trial: Trial, before: dict[str, dict], after: dict[str, dict], requests: dict[str, list]
) -> None:
    """A row newly claiming an acknowledgement, or a row removed, needs a 2xx of this run.

    (Rows marked unacknowledged before sending claim nothing and are left out.)
    """
    for name in (UF_NAME, VB_NAME):
        old, new = before[name], after[name]
        claims = {k for k, row in new.items() if row[0] != UNACKNOWLEDGED and old.get(k) != row}
        moved = claims | (set(old) - set(new))
        unacked = moved - acknowledged(requests[name])
        assert not unacked, trial.fail(
            f"{name}: state changed without a 2xx: {sorted(unacked)[:5]}"
        )


@pytest.mark.slow
@pytest.mark.timeout(max(120, TRIALS * 30))
def test_syncd_killed_at_random_points_never_loses_or_wrongly_deletes(tmp_path: Path) -> None:
    seed = int(os.environ.get("SYNCD_CRASH_SEED") or random.randrange(2**32))
    print(f"crash harness: SYNCD_CRASH_SEED={seed} SYNCD_CRASH_TRIALS={TRIALS}")
    rng = random.Random(seed)
    began = time.monotonic()
    kinds: list[str] = []
    with sandbox(tmp_path / "crash") as box:
        assert box.userflux is not None and box.vambe is not None
        records = make_records(START)
        gone: list[dict] = []
        next_id = [START + 1]
        box.write_catalog(records)
        box.configure(batch_size=BATCH, concurrency=4, guards={"max_delete_fraction": 0.5})
        changes = len(records)
        for number in range(TRIALS):
            trial = Trial(box, rng, seed, number)
            before_edit = (list(records), list(gone))
            if number:
                records, changes = edit(rng, records, gone, next_id)
                box.write_catalog(records)
            source = keys_of(records)
            latency = rng.uniform(0.005, 0.02)
            box.userflux.latency = box.vambe.latency = latency
            state_before = {
                name: state_rows(box.state_path, name) if box.state_path.exists() else {}
                for name in (UF_NAME, VB_NAME)
            }
            first_id = last_run_id(box.state_path)
            box.mark()

            how, code = run_and_kill(box, rng, changes, trial)
            kinds.append(how)
            trial.where += f" kill={how} latency={latency * 1000:.0f}ms"

            killed_uf, killed_vb = box.new_requests()
            wrong = wrongly_deleted(killed_uf, killed_vb, records)
            assert not wrong, trial.fail(f"the killed run deleted source keys {sorted(wrong)}")
            if box.state_path.exists():
                assert integrity_check(box.state_path) == "ok", trial.fail("after the kill")
                with contextlib.suppress(sqlite3.OperationalError):
                    state_after = {n: state_rows(box.state_path, n) for n in (UF_NAME, VB_NAME)}
                    check_state_moved_only_on_acks(
                        trial, state_before, state_after, {UF_NAME: killed_uf, VB_NAME: killed_vb}
                    )
            killed_runs = runs_after(box.state_path, first_id) if box.state_path.exists() else []
            if how.startswith("sigterm"):
                left = [o for _, _, o in killed_runs if o == "running"]
                assert not left, trial.fail(f"SIGTERM left runs 'running': {killed_runs}")
                assert live_leases(box.state_path) == 0, trial.fail("SIGTERM kept a lease")

            if number == 0 and code != 0 and killed_runs:
                locked = box.cli("sync")
                assert locked.returncode == 1, trial.fail(locked.stdout + locked.stderr)
                assert "another syncd" in locked.stderr, trial.fail(locked.stderr)
            if box.state_path.exists():
                expire_leases(box.state_path)
            if number and code != 0 and rng.random() < 0.3:
                # The backend rolls back before the restart: what the killed run sent but
                # never saw answered must still be put right.
                records, gone = before_edit
                box.write_catalog(records)
                source = keys_of(records)
                trial.where += " reverted"

            box.userflux.latency = box.vambe.latency = 0.0
            box.mark()
            rerun = box.cli("sync")

            assert rerun.returncode == 0, trial.fail(
                f"re-run:\n{rerun.stdout}\n{rerun.stderr[-3000:]}"
            )
            uf, vb = box.new_requests()
            wrong = wrongly_deleted(uf, vb, records)
            assert not wrong, trial.fail(f"the re-run deleted source keys {sorted(wrong)}")
            try:
                box.assert_converged(records)
            except AssertionError as exc:
                raise AssertionError(trial.fail(str(exc))) from None
            assert integrity_check(box.state_path) == "ok", trial.fail("after the re-run")
            for name, want in ((UF_NAME, source), (VB_NAME, set(expected_vambe(records)))):
                rows = state_rows(box.state_path, name)
                assert set(rows) == want, trial.fail(f"{name} state keys")
                assert rows == acked_rows(box.state_path, name), trial.fail(f"{name} unacked rows")
            outcomes = {
                run_id: outcome for run_id, _, outcome in runs_after(box.state_path, first_id)
            }
            mine = [outcomes[run_id] for run_id, _, _ in killed_runs]
            assert "running" not in mine, trial.fail(f"killed runs left running: {mine}")
            if any(o == "running" for _, _, o in killed_runs):
                assert "interrupted" in mine, trial.fail(f"killed runs: {mine}")
            if how.startswith("sigterm") and killed_runs:
                assert "interrupted" in mine or set(mine) <= {"ok"}, trial.fail(f"{mine}")
            print(f"  [{trial.where}] killed runs: {[o for _, _, o in killed_runs]} -> {mine}")
    took = time.monotonic() - began
    print(f"crash harness: {TRIALS} trials in {took:.1f}s, kills: {', '.join(kinds)}")
