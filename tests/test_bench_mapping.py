"""The bench's mapping figure: ``plan`` on an empty state, per product and target, beside
its target and the floors of the same run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_mapping_figure_is_printed_beside_its_target_and_floors(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.mapping", "--n=300", "--repeat=1", f"--workdir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "300 products x 2 targets" in out.stdout
    assert "target 25 µs" in out.stdout
    assert "compiled to bytecode first" in out.stdout
    for floor in ("json.loads of the lines", "canonical JSON + hash", "HTML to text"):
        assert floor in out.stdout
    assert "mapping: plan on an empty state <= 25 µs per product and target" in out.stdout
    # the code before the issue planned the same catalog in the same run, from git history
    assert "before issue 17 (39523b9), same run" in out.stdout
    assert "mapping: at least 3x cheaper than before issue 17 (39523b9), same run" in out.stdout
    assert (tmp_path / "reference-39523b9" / "syncd" / "__init__.py").is_file()
    assert not list(tmp_path.glob("mapping-*.db"))  # plan wrote no state
