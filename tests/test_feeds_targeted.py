"""Targeted syncs of the keys a change feed names: PostgreSQL as the source, both fakes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.config import parse_config
from syncd.errors import ConfigError
from syncd.feeds.targeted import DeleteWindow, read_targeted, sync_keys
from syncd.reconcile import Reconciler, RunOptions
from syncd.sandbox import FakeUserflux, FakeVambe
from syncd.sources.base import KeyedRead
from syncd.state import open_store
from tests.support import (
    ENV,
    KEY,
    catalog,
    expected_userflux,
    expected_vambe,
    load_table,
    userflux_target,
    vambe_target,
)


class Setup:
    def __init__(self, pg_url: str, tmp_path: Path, **guards: Any) -> None:
        self.url = pg_url
        self.userflux = FakeUserflux(api_key=KEY).start()
        self.vambe = FakeVambe(api_key=KEY).start()
        self.block = self.vambe.add_block()
        extra = {"guards": guards} if guards else {}
        self.raw: dict[str, Any] = {
            "source": {
                "kind": "sql",
                "url": pg_url,
                "query": "SELECT * FROM products",
                "key": "sku",
            },
            "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
            "targets": [
                userflux_target(self.userflux.url, **extra),
                vambe_target(self.vambe.url, self.block, **extra),
            ],
            "feeds": [{"kind": "webhook", "token_env": "FEED_TOKEN"}],
        }
        self.config = parse_config(self.raw, environ={**ENV, "FEED_TOKEN": "t" * 24})
        self.store = open_store(self.config.state.url)
        self.window = DeleteWindow(self.config.feed_sync.delete_window_s)
        self.seen = 0
        self.records = catalog(20)
        load_table(pg_url, self.records)

    def execute(self, statement: str, **params: Any) -> None:
        engine = sa.create_engine(self.url)
        with engine.begin() as conn:
            conn.execute(sa.text(statement), params)
        engine.dispose()

    def sync_all(self) -> Any:
        return Reconciler(self.config, self.store, environ=ENV).sync(RunOptions())

    def feed(self, keys: Sequence[str], **kwargs: Any) -> Any:
        return sync_keys(self.config, self.store, keys, window=self.window, environ=ENV, **kwargs)

    def current(self) -> list[dict[str, Any]]:
        engine = sa.create_engine(self.url)
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM products ORDER BY sku")).mappings().all()
        engine.dispose()
        return [{**row, "price": f"{row['price']:.2f}".rstrip("0").rstrip(".")} for row in rows]

    def assert_targets_equal_source(self) -> None:
        records = self.current()
        assert self.userflux.products == expected_userflux(records)
        assert self.vambe.block_products(self.block) == expected_vambe(records)

    def new_requests(self) -> list[Any]:
        """Requests UserFlux received since the first sync."""
        return self.userflux.requests[self.seen :]

    def close(self) -> None:
        self.store.close()
        self.userflux.stop()
        self.vambe.stop()


@pytest.fixture
def setup(pg_url: str, tmp_path: Path) -> Iterator[Setup]:
    made = Setup(pg_url, tmp_path)
    made.sync_all()
    made.seen = len(made.userflux.requests)
    yield made
    made.close()


def test_an_update_is_read_alone_and_only_the_diff_is_sent(setup: Setup) -> None:
    setup.execute("UPDATE products SET price = 77.25 WHERE sku = 'P00003'")
    done = setup.feed(["P00003", "P00004"])  # P00004 unchanged: nothing to send for it
    assert done.pushed and done.settled == {"P00003", "P00004"}
    writes = [r for r in setup.new_requests() if r.method == "POST"]
    assert [r.json["id"] for r in writes] == ["P00003"]
    assert writes[0].json["propertiesUpdateType"] == "INCREMENTAL_UPDATE"
    assert writes[0].json["properties"] == {"price": 77.25}
    setup.assert_targets_equal_source()
    runs = setup.store.recent_runs("uf", limit=1)
    assert runs[0].mode == "feed" and runs[0].updated == 1 and runs[0].source_count == 2
    # never the night's complete read: the baseline of the size guards is still 20
    assert setup.store.last_complete_source_count("uf") == 20


def test_an_insert_is_created_on_both_targets(setup: Setup) -> None:
    setup.execute(
        "INSERT INTO products VALUES ('P09999', 'New one', 12.50, 'red', '<p>New</p>', 3)"
    )
    done = setup.feed(["P09999"])
    assert done.pushed
    assert [t.created for t in done.report.targets] == [1, 1]
    setup.assert_targets_equal_source()


def test_a_key_the_read_confirms_gone_is_deleted(setup: Setup) -> None:
    setup.execute("DELETE FROM products WHERE sku = 'P00005'")
    done = setup.feed(["P00005"])
    assert done.pushed and done.read.gone == {"P00005"}
    assert [t.deleted for t in done.report.targets] == [1, 1]
    assert setup.store.get("uf", "P00005") is None
    setup.assert_targets_equal_source()


def test_a_scheduled_run_after_the_feed_has_nothing_to_repair(setup: Setup) -> None:
    setup.execute("UPDATE products SET title = 'Renamed' WHERE sku = 'P00001'")
    setup.execute("DELETE FROM products WHERE sku = 'P00002'")
    assert setup.feed(["P00001", "P00002"]).pushed
    report = setup.sync_all()
    assert [(t.created, t.updated, t.deleted) for t in report.targets] == [(0, 0, 0), (0, 0, 0)]


class _Unreachable:
    """A source whose targeted read reaches no key (an HTTP item URL answering 500)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def read(self) -> Any:
        return self._inner.read()

    def describe(self) -> str:
        return "half-broken source"

    @property
    def can_prove_complete(self) -> bool:
        return True

    def confirm_absent(self, keys: Sequence[str]) -> set[str] | None:
        return None

    def read_keys(self, keys: Sequence[str]) -> KeyedRead:
        return KeyedRead((), unreachable=frozenset(keys))


def test_a_key_the_read_could_not_reach_is_never_deleted(setup: Setup) -> None:
    from syncd.sources import open_source

    setup.execute("DELETE FROM products WHERE sku = 'P00006'")
    done = setup.feed(["P00006"], source=_Unreachable(open_source(setup.config.source)))
    assert not done.pushed and done.failed(["P00006"]) == {"P00006"}
    assert done.read.unreachable == {"P00006"} and not done.read.gone
    assert ("product", "P00006") in setup.userflux.products
    assert "P00006" in setup.vambe.block_products(setup.block)
    assert setup.new_requests() == []  # nothing sent at all


def test_a_source_that_cannot_be_read_deletes_nothing(setup: Setup) -> None:
    broken = parse_config(
        {**setup.raw, "source": {**setup.raw["source"], "query": "SELECT * FROM nowhere"}},
        environ={**ENV, "FEED_TOKEN": "t" * 24},
    )
    done = sync_keys(broken, setup.store, ["P00007"], window=setup.window, environ=ENV)
    assert done.report is None and done.read.error is not None
    assert "nowhere" in done.read.error
    assert done.failed(["P00007"]) == {"P00007"}
    assert setup.new_requests() == []


def test_feed_deletes_count_against_the_guards_over_a_sliding_window(
    pg_url: str, tmp_path: Path
) -> None:
    made = Setup(pg_url, tmp_path, max_delete_count=2)
    try:
        made.sync_all()
        made.execute("DELETE FROM products WHERE sku IN ('P00001', 'P00002', 'P00003')")
        first = made.feed(["P00001", "P00002"])
        assert first.pushed and [t.deleted for t in first.report.targets] == [2, 2]
        second = made.feed(["P00003"])  # 3 feed deletes within the window: over 2
        assert not second.pushed
        assert [t.outcome for t in second.report.targets] == ["blocked", "blocked"]
        assert "max_delete_count=2" in (second.report.targets[0].error or "")
        assert ("product", "P00003") in made.userflux.products
        # once the window has slid past the first deletes, it goes through
        made.window = DeleteWindow(made.window.window_s)
        third = made.feed(["P00003"])
        assert third.pushed and ("product", "P00003") not in made.userflux.products
    finally:
        made.close()


def test_the_targeted_read_restricts_the_query_to_the_keys_in_one_read(setup: Setup) -> None:
    read = read_targeted(setup.config, ["P00001", " P00002", "nope"])
    assert read.found == {"P00001", "P00002"} and read.gone == {"nope"}
    assert sorted(r["sku"] for r in read.rows) == ["P00001", "P00002"]


def test_a_file_source_refuses_feeds_at_config_check(tmp_path: Path) -> None:
    raw = {
        "source": {"kind": "file", "path": str(tmp_path / "c.jsonl"), "key": "sku"},
        "targets": [userflux_target("http://127.0.0.1:9")],
        "feeds": [{"kind": "webhook", "token_env": "FEED_TOKEN"}],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ={**ENV, "FEED_TOKEN": "x"})
    assert "feeds: a file source has no targeted read" in str(caught.value)


def test_a_feed_token_variable_that_is_not_set_is_reported(tmp_path: Path) -> None:
    raw = {
        "source": {"kind": "sql", "url": "sqlite:///x.db", "table": "t", "key": "sku"},
        "targets": [userflux_target("http://127.0.0.1:9")],
        "feeds": [{"kind": "webhook", "token_env": "FEED_TOKEN"}],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ=ENV)
    assert "feeds[0].token_env: environment variable FEED_TOKEN is not set" in str(caught.value)


def test_an_http_targeted_read_gets_each_item_404_is_gone_and_an_error_unreachable() -> None:
    import httpx

    from syncd.config import HttpConfig, HttpSourceConfig
    from syncd.sources.http import HttpSource

    def answer(request: httpx.Request) -> httpx.Response:
        key = request.url.path.rsplit("/", 1)[-1]
        if key == "A 1":
            return httpx.Response(200, json={"sku": "A 1", "title": "Here"})
        if key == "B":
            return httpx.Response(404)
        if key == "C":
            return httpx.Response(410)
        if key == "D":
            return httpx.Response(200, text="not json")
        return httpx.Response(500)

    config = HttpSourceConfig(
        kind="http",
        url="https://shop.example/api/products",
        key="sku",
        item_url="https://shop.example/api/products/{key}",
        max_attempts=2,
    )
    source = HttpSource(
        config, HttpConfig(), transport=httpx.MockTransport(answer), sleep=lambda s: None
    )
    read = source.read_keys(["A 1", "B", "C", "D", "E"])
    assert read.rows == ({"sku": "A 1", "title": "Here"},)
    assert read.gone == {"B", "C"}
    assert read.unreachable == {"D", "E"}
