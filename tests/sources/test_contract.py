"""The contract every source kind passes: file (JSON Lines, JSON, CSV), SQL (SQLite and
PostgreSQL) and HTTP, each over the same small catalog.

A read yields every record; a read that breaks raises ``SourceError`` (never a short
catalog); ``can_prove_complete`` says what the kind can prove; ``confirm_absent`` never
confirms gone a product the source holds again; ``describe`` shows no secret.
A new source kind adds its rig to ``RIGS``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.config import FileSourceConfig, HttpConfig, HttpSourceConfig, SqlSourceConfig
from syncd.errors import SourceError
from syncd.model import UnreadableRow
from syncd.sandbox.catalog import FakeCatalogApi
from syncd.sources import Source, open_source
from syncd.sources.http import HttpSource

SECRET = "s3cret-Pw-91xq"
CATALOG = [{"id": f"p{i}", "name": f"Product {i}", "price": i + 0.5} for i in range(1, 6)]


@dataclass
class Rig:
    """A source kind over data the test can rewrite."""

    write: Callable[[list[dict[str, Any]]], None]
    """Make the source hold exactly these records."""
    source: Callable[[], Source]
    """A source over the current data."""
    breaks: Callable[[], None]
    """Make the next read fail part-way (a cut file, a dropped table, a broken page)."""
    proves_complete: bool
    secret: str | None = None


def _file_rig(tmp_path: Path, suffix: str) -> Rig:
    path = tmp_path / f"catalog.{suffix}"

    def write(records: list[dict[str, Any]]) -> None:
        if suffix == "jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in records))
        elif suffix == "json":
            path.write_text(json.dumps(records))
        else:
            with path.open("w", newline="") as out:
                writer = csv.DictWriter(out, fieldnames=["id", "name", "price"])
                writer.writeheader()
                writer.writerows(records)

    def breaks() -> None:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3].rstrip(b"\n"))

    def source() -> Source:
        return open_source(FileSourceConfig(kind="file", path=path))

    return Rig(write, source, breaks, proves_complete=True)


def _sql_rig(url: str, secret_url: str | None, monkeypatch: pytest.MonkeyPatch) -> Rig:
    engine = sa.create_engine(url)

    def write(records: list[dict[str, Any]]) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS products"))
            conn.execute(
                sa.text("CREATE TABLE products (id VARCHAR(20), name VARCHAR(50), price FLOAT)")
            )
            if records:
                conn.execute(sa.text("INSERT INTO products VALUES (:id, :name, :price)"), records)

    def breaks() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE products"))

    def source() -> Source:
        if secret_url is None:
            config = SqlSourceConfig(kind="sql", url=url, table="products")
        else:
            monkeypatch.setenv("CONTRACT_DB_URL", secret_url)
            config = SqlSourceConfig(kind="sql", url_env="CONTRACT_DB_URL", table="products")
        return open_source(config)

    return Rig(write, source, breaks, proves_complete=True, secret=SECRET if secret_url else None)


def _http_rig(fake: FakeCatalogApi) -> Rig:
    def write(records: list[dict[str, Any]]) -> None:
        fake.records = [dict(r) for r in records]

    def source() -> Source:
        config = HttpSourceConfig(
            kind="http",
            url=fake.url,
            records_path="products",
            pagination={"style": "cursor", "page_size": 2},
            auth={"kind": "bearer", "token_env": "CONTRACT_TOKEN"},
            item_url=fake.url + "/{key}",
        )
        return HttpSource(config, HttpConfig(), sleep=lambda seconds: None)

    return Rig(write, source, lambda: fake.malformed_page(2), proves_complete=True, secret=SECRET)


RIGS = ["file-jsonl", "file-json", "file-csv", "sql-sqlite", "sql-postgresql", "http"]


@pytest.fixture(params=RIGS)
def rig(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch) -> Iterator[Rig]:
    kind = request.param
    if kind.startswith("file-"):
        yield _file_rig(tmp_path, kind.removeprefix("file-"))
    elif kind == "sql-sqlite":
        yield _sql_rig(f"sqlite:///{tmp_path / 'shop.db'}", None, monkeypatch)
    elif kind == "sql-postgresql":
        url = request.getfixturevalue("pg_url")
        secret_url = sa.make_url(url).set(password=SECRET).render_as_string(hide_password=False)
        yield _sql_rig(url, secret_url, monkeypatch)
    else:
        monkeypatch.setenv("CONTRACT_TOKEN", SECRET)
        with FakeCatalogApi(
            [], style="cursor", auth=("authorization", f"Bearer {SECRET}"), item_key="id"
        ) as fake:
            yield _http_rig(fake)


def keys(items: list[Any]) -> list[str]:
    return sorted(str(item["id"]) for item in items if not isinstance(item, UnreadableRow))


def test_a_complete_read_yields_every_record_once(rig):
    rig.write(CATALOG)
    items = list(rig.source().read())
    assert keys(items) == sorted(r["id"] for r in CATALOG)
    assert len(items) == len(CATALOG)
    assert [dict(item)["name"] for item in items if item["id"] == "p3"] == ["Product 3"]


def test_an_empty_catalog_reads_as_no_records(rig):
    rig.write([])
    assert list(rig.source().read()) == []


def test_a_read_that_breaks_part_way_raises_source_error_never_a_short_catalog(rig):
    rig.write(CATALOG)
    rig.breaks()
    source = rig.source()
    with pytest.raises(SourceError):
        list(source.read())


def test_the_kind_says_whether_a_read_proves_itself_complete(rig):
    rig.write(CATALOG)
    assert rig.source().can_prove_complete is rig.proves_complete


def test_a_second_look_never_confirms_gone_a_product_the_source_holds_again(rig):
    rig.write(CATALOG[:3])
    source = rig.source()
    list(source.read())
    rig.write(CATALOG)  # p4 and p5 are back (or were late)
    confirmed = source.confirm_absent(["p4", "p5"])
    assert confirmed is None or confirmed == set()


def test_a_second_look_confirms_a_product_still_missing_and_only_the_keys_given(rig):
    rig.write(CATALOG[:3])
    source = rig.source()
    list(source.read())
    assert source.confirm_absent(["gone-1", "gone-2"]) == {"gone-1", "gone-2"}
    assert source.confirm_absent([]) in (set(), None)


def test_describe_names_the_source_without_its_secret(rig):
    rig.write(CATALOG)
    source = rig.source()
    list(source.read())
    described = source.describe()
    assert described
    if rig.secret is not None:
        assert rig.secret not in described
