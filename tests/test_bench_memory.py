"""``python -m bench.memory`` keeps running: peak RSS of a plan and a first sync at n and 3n."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_memory_bench_measures_a_plan_and_a_first_sync_at_two_sizes(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--n=150", f"--workdir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )

    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    rows = [line for line in lines if "peak RSS" in line]
    assert [row.split()[0] for row in rows] == ["plan", "plan", "sync", "sync"]
    assert '"create": 450' in rows[1] and '"outcome": "ok"' in rows[3]
    assert '"created": 450' in rows[3]
    assert any(line.startswith("sync: peak") for line in lines)
