"""Migration 0007: stored payload hashes go from BLAKE2b-128 to XXH3-128, so an unchanged
catalog is not re-pushed after the upgrade."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import xxhash
from alembic import command
from click.testing import CliRunner

from syncd import model
from syncd.cli import main
from syncd.model import SEEN_ONLY, UNACKNOWLEDGED, payload_hash, refresh_marker
from syncd.sandbox import FakeUserflux, FakeVambe
from syncd.state import migrate
from syncd.state.schema import products, rejections
from syncd.state.sql import current_revision, upgrade_database
from tests.support import (
    ENV,
    KEY,
    STATE_BACKENDS,
    STATE_URL_FIXTURES,
    Harness,
    catalog,
    userflux_target,
    vambe_target,
    write_jsonl,
)


def blake2b_128(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def xxh3_128(data: bytes) -> bytes:
    return xxhash.xxh3_128_digest(data)


def _row(target: str, key: str, hash_: bytes, payload: str) -> dict[str, Any]:
    return {
        "target": target,
        "key": key,
        "hash": hash_,
        "payload": payload,
        "acked_at": 1.0,
        "source_hash": None,
    }


def _state_at_0006(url: str) -> tuple[list[dict[str, Any]], set[tuple[str, str]]]:
    """A state at 0006: acknowledged products hashed the old way, across more than two
    of the migration's pages and two targets, and every kind of row it must leave alone;
    returns the rows and the (target, key) of those the migration must rehash."""
    command.upgrade(migrate.alembic_config(url=url), "0006")
    rows, matching = [], set()
    for target in ("uf", "vb"):
        for i in range(2003):
            payload = f'{{"name":"Product {i} ünï ✓","target":"{target}"}}'
            rows.append(_row(target, f"P{i:05d}", blake2b_128(payload.encode()), payload))
            matching.add((target, f"P{i:05d}"))
    rows += [
        _row("uf", "in-flight", UNACKNOWLEDGED, '{"name":"in flight"}'),
        _row("uf", "seen-only", SEEN_ONLY, ""),
        _row("uf", "refresh-due", refresh_marker(3600.0), '{"name":"due"}'),
        _row("uf", "mismatch", blake2b_128(b'{"name":"other"}'), '{"name":"this"}'),
        _row("vb", "short", blake2b_128(b"{}")[:9], "{}"),
    ]
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(products.insert(), rows)
        conn.execute(
            rejections.insert(),
            [
                {
                    "target": "uf",
                    "key": "held",
                    "reason": "refused",
                    "first_seen": 1.0,
                    "last_seen": 1.0,
                    "count": 1,
                    "hash": blake2b_128(b'{"name":"held"}'),
                    "by_target": True,
                }
            ],
        )
    engine.dispose()
    return rows, matching


def _stored(url: str) -> tuple[dict[tuple[str, str], bytes], dict[tuple[str, str], bytes]]:
    """Every product's and rejection's hash, by (target, key)."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        hashes = {
            (t, k): bytes(h)
            for t, k, h in conn.execute(
                sa.select(products.c.target, products.c.key, products.c.hash)
            )
        }
        held = {
            (t, k): bytes(h)
            for t, k, h in conn.execute(
                sa.select(rejections.c.target, rejections.c.key, rejections.c.hash)
            )
        }
    engine.dispose()
    return hashes, held


@pytest.mark.parametrize("backend", STATE_BACKENDS)
def test_upgrade_rehashes_exactly_the_products_whose_hash_is_blake2b_of_their_payload(
    request, backend
) -> None:
    url = request.getfixturevalue(STATE_URL_FIXTURES[backend])
    rows, matching = _state_at_0006(url)
    before, held_before = _stored(url)

    upgrade_database(url)

    after, held_after = _stored(url)
    assert current_revision(url) == "0007"
    expected = {
        (r["target"], r["key"]): (
            xxh3_128(r["payload"].encode()) if (r["target"], r["key"]) in matching else r["hash"]
        )
        for r in rows
    }
    assert after == expected
    assert after[("uf", "mismatch")] == before[("uf", "mismatch")]  # still re-sent
    assert held_after == held_before  # no payload to rehash: sent once more

    command.downgrade(migrate.alembic_config(url=url), "0006")

    assert current_revision(url) == "0006"
    assert _stored(url) == (before, held_before)


def test_the_payload_hash_is_xxh3_128_of_the_canonical_payload() -> None:
    canonical = '{"name":"Shoe ✓","price":1.5}'.encode()

    assert payload_hash(canonical) == xxh3_128(canonical)
    assert len(payload_hash(b"")) == 16


def _harness(tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe, block: str) -> Harness:
    # skipping unchanged rows off: every product is mapped and its payload hash compared
    return Harness(
        tmp_path,
        [userflux_target(userflux.url), vambe_target(vambe.url, block)],
        skip_unchanged_rows=False,
    )


def _writes(userflux: FakeUserflux, vambe: FakeVambe) -> int:
    return userflux.request_count() - userflux.request_count("GET") + vambe.request_count("POST")


def test_a_state_synced_with_blake2b_and_upgraded_sends_nothing_for_an_unchanged_catalog(
    tmp_path, monkeypatch
) -> None:
    with FakeUserflux(api_key=KEY) as userflux, FakeVambe(api_key=KEY) as vambe:
        block = vambe.add_block()
        h = _harness(tmp_path, userflux, vambe, block)
        h.write(catalog(40))
        with monkeypatch.context() as old:
            old.setattr(model, "payload_hash", blake2b_128)  # the hash up to 0006
            assert h.sync().ok
        url = h.config.state.url
        h.close()
        command.downgrade(migrate.alembic_config(url=url), "0006")
        stored, _ = _stored(url)
        assert len(stored) == 80
        assert all(len(v) == 16 and v != xxh3_128(b"") for v in stored.values())
        userflux.reset_requests()
        vambe.reset_requests()

        h = _harness(tmp_path, userflux, vambe, block)  # the sync's automatic upgrade
        plans = h.plan()
        report = h.sync()

        assert current_revision(url) == "0007"
        assert [p.summary()["changes"] for p in plans] == [{}, {}]
        assert report.ok
        assert [(t.created, t.updated, t.unchanged) for t in report.targets] == [(0, 0, 40)] * 2
        assert _writes(userflux, vambe) == 0
        h.close()


def test_without_the_upgrade_a_state_hashed_by_blake2b_would_re_push_everything(
    tmp_path, monkeypatch
) -> None:
    """What the migration spares: the same state left with its BLAKE2b hashes."""
    with FakeUserflux(api_key=KEY) as userflux, FakeVambe(api_key=KEY) as vambe:
        block = vambe.add_block()
        h = _harness(tmp_path, userflux, vambe, block)
        h.write(catalog(10))
        with monkeypatch.context() as old:
            old.setattr(model, "payload_hash", blake2b_128)
            assert h.sync().ok

        plans = h.plan()

        assert [sum(p.summary()["changes"].values()) for p in plans] == [10, 10]
        h.close()


_CLI_CONFIG = """\
[source]
kind = "file"
path = "catalog.jsonl"
key = "sku"
skip_unchanged_rows = false

[state]
url = "sqlite:///{state}"

[[targets]]
name = "uf"
kind = "userflux"
base_url = "{url}"
api_key_env = "UF_KEY"
type_id = "product"
rate_limit_per_s = 0

[targets.mapping.properties]
name = "title"
price = {{ path = "price", type = "number" }}
"""


def test_plan_asks_for_the_upgrade_then_finds_a_blake2b_state_in_line(
    tmp_path, monkeypatch
) -> None:
    with FakeUserflux(api_key=KEY) as userflux:
        config = tmp_path / "syncd.toml"
        state = tmp_path / "state.db"
        config.write_text(_CLI_CONFIG.format(state=state, url=userflux.url))
        write_jsonl(tmp_path / "catalog.jsonl", catalog(12))

        def run(*args: str) -> Any:
            return CliRunner().invoke(main, ["--config", str(config), *args], env=ENV)

        with monkeypatch.context() as old:
            old.setattr(model, "payload_hash", blake2b_128)
            assert run("sync").exit_code == 0
        command.downgrade(migrate.alembic_config(url=f"sqlite:///{state}"), "0006")
        userflux.reset_requests()

        behind = run("plan", "--exit-code")
        upgraded = run("db", "upgrade")
        in_line = run("plan", "--exit-code")

        assert behind.exit_code not in (0, 3)
        assert "syncd db upgrade" in behind.output
        assert upgraded.exit_code == 0, upgraded.output
        assert in_line.exit_code == 0, in_line.output  # 3 would mean changes pending
        assert userflux.request_count() - userflux.request_count("GET") == 0


class _Killed(BaseException):
    """The process dying half-way through a migration (not an error syncd handles)."""


@pytest.mark.parametrize("backend", STATE_BACKENDS)
def test_an_upgrade_that_dies_while_rehashing_can_be_run_again(
    request, backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # from 0005, so the DDL of 0006 (which MariaDB commits at once) comes before the rehash
    url = request.getfixturevalue(STATE_URL_FIXTURES[backend])
    command.upgrade(migrate.alembic_config(url=url), "0005")
    payload = '{"name":"Product"}'
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(products.insert(), [_row("uf", "P1", blake2b_128(payload.encode()), payload)])
    engine.dispose()

    def dying(data: bytes) -> bytes:
        raise _Killed

    monkeypatch.setattr(xxhash, "xxh3_128_digest", dying)
    with pytest.raises(_Killed):
        upgrade_database(url)
    monkeypatch.undo()

    assert upgrade_database(url) == "0007"  # not stopped by what the first attempt left
    assert _stored(url)[0] == {("uf", "P1"): xxh3_128(payload.encode())}
