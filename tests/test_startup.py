"""What importing syncd sets up for the process: one OpenBLAS thread, unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = (
    "import syncd, numpy, os, pathlib;"
    "tasks = pathlib.Path('/proc/self/task');"
    "count = len(list(tasks.iterdir())) if tasks.is_dir() else -1;"
    "print(os.environ['OPENBLAS_NUM_THREADS'], count)"
)


def _probe(**env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    ).stdout.split()
    return out[0], int(out[1])


def test_importing_syncd_keeps_numpy_to_one_blas_thread() -> None:
    setting, threads = _probe()
    assert setting == "1"
    if threads < 0:
        pytest.skip("no /proc/self/task to count the threads")
    assert threads == 1, "NumPy's OpenBLAS started threads syncd never uses"


def test_an_explicit_blas_thread_count_is_kept() -> None:
    setting, _ = _probe(OPENBLAS_NUM_THREADS="2")
    assert setting == "2"
