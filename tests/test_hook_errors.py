"""A mapping hook that raises: the product is rejected with the hook's name, file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from syncd.cli import main
from syncd.sandbox import FakeUserflux
from tests.support import KEY, catalog, write_jsonl

HOOK = """\
def enrich(record, product):
    if record["sku"] == "P00002":
        product["properties"]["ratio"] = 1 / 0
    return product
"""

CONFIG = """\
[source]
kind = "file"
path = "catalog.jsonl"
key = "sku"

[state]
url = "sqlite:///state.db"

[[targets]]
name = "uf"
kind = "userflux"
base_url = "{url}"
api_key_env = "UF_KEY"
type_id = "product"
rate_limit_per_s = 0

[targets.mapping]
callable = "{module}:enrich"

[targets.mapping.properties]
name = "title"
"""


@pytest.fixture
def fake() -> Iterator[FakeUserflux]:
    with FakeUserflux(api_key=KEY) as server:
        yield server


def test_a_hook_exception_names_the_hook_its_file_and_line_and_logs_the_traceback_at_debug(
    tmp_path: Path, fake, monkeypatch
):
    module = f"hooks_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(HOOK)
    config = tmp_path / "syncd.toml"
    config.write_text(CONFIG.format(url=fake.url, module=module))
    write_jsonl(tmp_path / "catalog.jsonl", catalog(3))
    monkeypatch.chdir("/")  # the hook beside the config imports from any working directory

    def run(*args: str):
        return CliRunner().invoke(main, [*args, "--config", str(config)], env={"UF_KEY": KEY})

    synced = run("sync", "--log-level", "debug", "--log-format", "json")

    assert synced.exit_code == 0, synced.output
    assert len(fake.products) == 2  # the others still went
    [rejection] = json.loads(run("rejections", "--json").stdout)
    assert rejection["key"] == "P00002"
    reason = rejection["reason"]
    assert f"{module}:enrich" in reason and "ZeroDivisionError" in reason
    assert f"{tmp_path / (module + '.py')}:3" in reason
    [debug] = [
        json.loads(line)
        for line in synced.stderr.splitlines()
        if line.startswith("{") and "syncd.mapping.hook_failed" in line
    ]
    assert "Traceback" in debug["traceback"] and "1 / 0" in debug["traceback"]
