"""A state written by one way of fingerprinting SQL rows (the record's JSON, as before
``source.fingerprint_rows`` and with it off; the database's hash with it on) read by the
other: the first run fetches every row, finds every payload unchanged and sends nothing;
a later edit and delete still land."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from syncd.config import parse_config
from tests.support import catalog, expected_userflux, expected_vambe, load_table
from tests.test_loop_skip import fakes, maps, reset, sql_harness, writes

__all__ = ["fakes", "maps"]  # fixtures

DATABASES = [
    pytest.param("pg_url", id="postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb_url", id="mariadb", marks=pytest.mark.mariadb),
    pytest.param("sqlite_url", id="sqlite"),
]


@pytest.mark.parametrize("database", DATABASES)
@pytest.mark.parametrize(("before", "after"), [(False, True), (True, False)])
def test_switching_how_rows_are_fingerprinted_sends_nothing(
    tmp_path: Path,
    fakes: Any,
    maps: dict[str, int],
    database: str,
    request: pytest.FixtureRequest,
    before: bool,
    after: bool,
) -> None:
    url = request.getfixturevalue(database)
    records = catalog(20)
    load_table(url, records)
    h = sql_harness(tmp_path, fakes, url)
    h.raw["source"]["fingerprint_rows"] = before
    h.config = parse_config(h.raw, environ=h.environ)
    assert h.sync().ok
    h.raw["source"]["fingerprint_rows"] = after
    h.config = parse_config(h.raw, environ=h.environ)
    reset(fakes, maps)

    report = h.sync()

    assert report.ok
    assert writes(fakes) == 0
    assert [t.unchanged for t in report.targets] == [20, 20]

    now = [dict(r, price="77.50") if i == 2 else r for i, r in enumerate(records) if i != 4]
    load_table(url, now)
    reset(fakes, maps)
    report = h.sync()

    assert report.ok
    assert [(t.created, t.updated, t.deleted) for t in report.targets] == [(0, 1, 1)] * 2
    userflux, vambe, block = fakes
    assert userflux.products == expected_userflux(now)
    assert vambe.block_products(block) == expected_vambe(now)
    h.close()
