"""The postgres and rabbitmq feed tables, how ``build_more`` turns them into feeds with
their secrets, and ``syncd feed-trigger``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from pydantic import TypeAdapter, ValidationError

from syncd.cli import main
from syncd.config import SqlSourceConfig, raw_secret_names
from syncd.config.feeds_more import PostgresFeedConfig, RabbitFeedConfig
from syncd.errors import ConfigError
from syncd.feeds.base import ChangeFeed
from syncd.feeds.postgres import PostgresFeed, libpq_url
from syncd.feeds.rabbitmq import RabbitFeed
from syncd.feeds.registry_more import build_more, postgres_connection


def _pg(**values: Any) -> PostgresFeedConfig:
    return PostgresFeedConfig(kind="postgres", **values)


def _rabbit(**values: Any) -> RabbitFeedConfig:
    return RabbitFeedConfig(kind="rabbitmq", **{"queue": "products", **values})


def _sql(**values: Any) -> SqlSourceConfig:
    return SqlSourceConfig(kind="sql", **{"query": "SELECT 1", **values})


def test_a_url_holding_a_password_is_refused() -> None:
    with pytest.raises(ValidationError, match="holds a password"):
        _pg(url="postgresql://syncd:secret@db/shop")
    with pytest.raises(ValidationError, match="holds a password"):
        _rabbit(url="amqp://syncd:secret@rabbit/%2F")


def test_feed_tables_are_checked_with_their_reasons() -> None:
    cases = [
        (lambda: _pg(channel="bad-channel"), "channel"),
        (lambda: _pg(url="mysql://db/shop"), "postgresql://"),
        (lambda: _pg(url="postgresql://db/shop", url_env="X"), "not both"),
        (lambda: _pg(password_env="PW"), "password_env needs url"),
        (lambda: _rabbit(url="http://rabbit/"), "amqp://"),
        (lambda: _rabbit(url="amqp://syncd@rabbit/%2F"), "give its password in password_env"),
        (lambda: _rabbit(dead_letter_exchange="dlx"), "declare = true"),
        (lambda: _rabbit(format="text", changed_at_path="at"), 'format = "json"'),
        (lambda: _rabbit(prefetch=0), "prefetch"),
        (lambda: _rabbit(name="has space"), "name"),
        (lambda: RabbitFeedConfig(kind="rabbitmq"), "queue"),
    ]
    for make, reason in cases:
        with pytest.raises(ValidationError, match=reason):
            make()


def test_the_name_defaults_to_the_kind() -> None:
    assert _pg().feed_name == "postgres"
    assert _rabbit().feed_name == "rabbitmq"
    assert _rabbit(name="orders").feed_name == "orders"


def test_the_secret_markers_name_the_variables() -> None:
    for model, data, expected in [
        (PostgresFeedConfig, {"kind": "postgres", "url_env": "PG_URL"}, ["PG_URL"]),
        (
            RabbitFeedConfig,
            {"kind": "rabbitmq", "url": "amqp://u@h/%2F", "password_env": "RMQ_PW"},
            ["RMQ_PW"],
        ),
    ]:
        assert [name for _, name in raw_secret_names(model, data)] == expected


def test_build_more_reads_secrets_from_the_environment() -> None:
    feed = build_more(
        _rabbit(url="amqp://syncd@127.0.0.1/%2F", password_env="RMQ_PW"),
        environ={"RMQ_PW": "pw-from-env-123"},
    )
    assert isinstance(feed, RabbitFeed)
    assert feed.name == "rabbitmq"
    assert feed._params.credentials.password == "pw-from-env-123"
    with pytest.raises(ConfigError, match=r"feeds\[1\].password_env: environment variable RMQ_PW"):
        build_more(
            _rabbit(url="amqp://syncd@127.0.0.1/%2F", password_env="RMQ_PW"),
            environ={},
            where="feeds[1]",
        )
    assert build_more(object()) is None  # another kind: the webhook registry's


def test_the_feeds_satisfy_the_change_feed_protocol() -> None:
    feeds: list[ChangeFeed] = [
        PostgresFeed(_pg(), "postgresql://db/shop"),
        RabbitFeed(_rabbit(), "amqp://127.0.0.1/%2F"),
    ]
    assert [(f.name, f.kind, f.status().connected) for f in feeds] == [
        ("postgres", "postgres", False),
        ("rabbitmq", "rabbitmq", False),
    ]


def test_a_postgres_feed_listens_on_the_sql_sources_database_by_default() -> None:
    source = _sql(url="postgresql+psycopg://syncd@db:5432/shop", password_env="SHOP_PW")
    url, password = postgres_connection(_pg(), source, environ={"SHOP_PW": "pw"})
    assert (url, password) == ("postgresql+psycopg://syncd@db:5432/shop", "pw")
    assert libpq_url(url) == "postgresql://syncd@db:5432/shop"
    own = postgres_connection(_pg(url="postgresql://feed@db/shop"), source, environ={})
    assert own == ("postgresql://feed@db/shop", None)
    assert isinstance(build_more(_pg(), source, environ={"SHOP_PW": "pw"}), PostgresFeed)


def test_a_postgres_feed_without_url_needs_a_postgres_source() -> None:
    with pytest.raises(ConfigError, match=r"feeds\[0\]: .*not PostgreSQL"):
        postgres_connection(_pg(), _sql(url="mysql+pymysql://db/shop"), where="feeds[0]")
    with pytest.raises(ConfigError, match="the source is not sql"):
        postgres_connection(_pg(), None)
    with pytest.raises(ConfigError, match=r"source\.url_env: environment variable SHOP_URL"):
        postgres_connection(_pg(), _sql(url_env="SHOP_URL"), environ={})


def test_feed_configs_are_frozen_and_strict() -> None:
    adapter = TypeAdapter(PostgresFeedConfig | RabbitFeedConfig)
    with pytest.raises(ValidationError, match="Extra inputs"):
        adapter.validate_python({"kind": "postgres", "chanel": "typo"})


# ------------------------------------------------------------------------------------
# syncd feed-trigger


def test_feed_trigger_prints_the_trigger() -> None:
    result = CliRunner().invoke(
        main, ["feed-trigger", "--table", "shop.products", "--key", "sku", "--channel", "c1"]
    )
    assert result.exit_code == 0, result.output
    assert "CREATE OR REPLACE FUNCTION syncd_notify_change()" in result.output
    assert 'CREATE CONSTRAINT TRIGGER "syncd_notify_c1"' in result.output
    assert 'ON "shop"."products"' in result.output
    assert "EXECUTE FUNCTION syncd_notify_change('c1', 'sku');" in result.output


def test_feed_trigger_refuses_a_bad_table_name() -> None:
    result = CliRunner().invoke(main, ["feed-trigger", "--table", "x; drop", "--key", "sku"])
    assert result.exit_code == 2
    assert "plain name" in result.output


@pytest.mark.postgres
def test_feed_trigger_installs_into_the_sources_database(pg_url: str, tmp_path: Path) -> None:
    with psycopg.connect(libpq_url(pg_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE products (sku text PRIMARY KEY)")
    config = tmp_path / "syncd.toml"
    config.write_text(
        """
[source]
kind = "sql"
url_env = "SHOP_URL"
table = "products"
key = "sku"

[[targets]]
name = "uf"
kind = "userflux"
api_key_env = "UF_KEY"
type_id = "product"
"""
    )
    env = {"SHOP_URL": pg_url, "UF_KEY": "k" * 20}
    args = ["--config", str(config), "feed-trigger", "--table", "products", "--key", "sku"]
    for _ in range(2):  # idempotent
        result = CliRunner().invoke(main, [*args, "--install"], env=env)
        assert result.exit_code == 0, result.output
        assert "installed trigger syncd_notify_syncd_products on products" in result.output
    result = CliRunner().invoke(main, [*args[:-1], "code", "--install"], env=env)
    assert result.exit_code == 1
    assert "column 'code' of table products" in result.output
    with psycopg.connect(libpq_url(pg_url), autocommit=True) as conn:
        found = conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'products'::regclass "
            "AND NOT tgisinternal"
        ).fetchall()
    assert found == [("syncd_notify_syncd_products",)]


def test_feed_trigger_install_with_an_unset_url_env_says_so() -> None:
    result = CliRunner().invoke(
        main,
        ["feed-trigger", "--table", "t", "--key", "k", "--install", "--url-env", "NOPE_URL"],
        env={},
    )
    assert result.exit_code == 2
    assert "NOPE_URL is not set" in result.output


@pytest.mark.postgres
def test_feed_trigger_never_prints_the_password(pg_url: str) -> None:
    secret = "pg-secret-password-42"
    url = pg_url.replace("postgres@", f"postgres:{secret}@").replace(":5432/", ":1/")
    result = CliRunner().invoke(
        main,
        ["feed-trigger", "--table", "t", "--key", "k", "--install", "--url-env", "SHOP_URL"],
        env={"SHOP_URL": url},
    )
    assert result.exit_code == 1
    assert "could not connect" in result.output
    assert secret not in result.output


def _feed_tables(text: str) -> list[dict[str, Any]]:
    """The ``[[feeds]]`` tables of a TOML text, commented out or not."""
    import tomllib

    lines = [line.removeprefix("# ").removeprefix("#") for line in text.splitlines()]
    tables: list[dict[str, Any]] = []
    for start, line in enumerate(lines):
        if line.strip() != "[[feeds]]":
            continue
        body = []
        for follow in lines[start + 1 :]:
            if not follow.strip() or follow.startswith(("[", "`", "```")):
                break
            body.append(follow)
        tables.append(tomllib.loads("\n".join(body)))
    return tables


def test_the_documented_feed_tables_are_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    adapter = TypeAdapter(PostgresFeedConfig | RabbitFeedConfig)
    for doc in ("config.example.toml", "README.md"):
        tables = [t for t in _feed_tables((root / doc).read_text()) if t.get("kind") != "webhook"]
        assert {t["kind"] for t in tables} == {"postgres", "rabbitmq"}, doc
        for table in tables:
            adapter.validate_python(table)


def test_every_feed_kind_loads_from_the_config_and_is_built_by_build_feeds(tmp_path: Path) -> None:
    from syncd.config import parse_config
    from syncd.feeds.registry import build_feeds
    from syncd.feeds.webhook import WebhookFeed
    from tests.support import ENV, userflux_target

    raw = {
        "source": {"kind": "sql", "url": "postgresql://syncd@db/shop", "table": "t", "key": "id"},
        "targets": [userflux_target("http://127.0.0.1:9")],
        "feeds": [
            {"kind": "webhook", "token_env": "FEED_TOKEN"},
            {"kind": "postgres"},
            {"kind": "rabbitmq", "name": "events", "url": "amqp://rabbit/%2F", "queue": "q"},
        ],
    }
    environ = {**ENV, "FEED_TOKEN": "t0ken-0123456789"}
    feeds = build_feeds(parse_config(raw, environ=environ), environ=environ)
    assert [type(feed) for feed in feeds] == [WebhookFeed, PostgresFeed, RabbitFeed]
    assert [feed.name for feed in feeds] == ["webhook", "postgres", "events"]


def test_a_postgres_feed_without_url_is_refused_at_config_check_when_the_source_is_http() -> None:
    from syncd.config import parse_config
    from tests.support import ENV, userflux_target

    raw = {
        "source": {
            "kind": "http",
            "url": "http://127.0.0.1:9/products",
            "item_url": "http://127.0.0.1:9/products/{key}",
        },
        "targets": [userflux_target("http://127.0.0.1:9")],
        "feeds": [{"kind": "postgres"}],
    }
    with pytest.raises(ConfigError, match=r"feeds\[0\].*source is not sql"):
        parse_config(raw, environ=ENV)
