"""Builds the database and broker feeds from their config, their secrets read from the
environment: ``build_more`` gives a ``ChangeFeed`` for a ``postgres`` or ``rabbitmq``
table and None for any other kind (the webhook's registry builds those)."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from syncd.config import SourceConfig, SqlSourceConfig, resolve_secret
from syncd.config.feeds_more import PostgresFeedConfig, RabbitFeedConfig
from syncd.errors import ConfigError, ConfigProblem
from syncd.feeds.base import ChangeFeed


def build_more(
    config: object,
    source: SourceConfig | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    where: str = "feeds",
) -> ChangeFeed | None:
    """The feed of one ``[[feeds]]`` table (``where``: its TOML path, for errors), or None
    when its kind is not ``postgres`` or ``rabbitmq``. ``source``: the config's source, whose
    connection a ``postgres`` feed without ``url`` listens on. ``ConfigError`` naming the
    table when a variable is not set or the source can't be listened on."""
    if isinstance(config, PostgresFeedConfig):
        _need("psycopg", "postgres", where)
        from syncd.feeds.postgres import PostgresFeed

        conninfo, password = postgres_connection(config, source, environ=environ, where=where)
        return PostgresFeed(config, conninfo, password=password)
    if isinstance(config, RabbitFeedConfig):
        _need("pika", "rabbitmq", where)
        from syncd.feeds.rabbitmq import RabbitFeed

        if config.url_env is not None:
            url = _secret(config.url_env, f"{where}.url_env", environ)
            return RabbitFeed(config, url)
        password = (
            _secret(config.password_env, f"{where}.password_env", environ)
            if config.password_env is not None
            else None
        )
        return RabbitFeed(config, config.url or "", password=password)
    return None


def postgres_connection(
    config: PostgresFeedConfig,
    source: SourceConfig | None,
    *,
    environ: Mapping[str, str] | None = None,
    where: str = "feeds",
) -> tuple[str, str | None]:
    """The URL a ``postgres`` feed listens on and its password (None: in the URL, or
    none): its own ``url``/``url_env``, else the SQL source's."""
    if config.url_env is not None:
        return _secret(config.url_env, f"{where}.url_env", environ), None
    if config.url is not None:
        password = (
            _secret(config.password_env, f"{where}.password_env", environ)
            if config.password_env is not None
            else None
        )
        return config.url, password
    if not isinstance(source, SqlSourceConfig):
        raise ConfigError(
            [
                ConfigProblem(
                    where,
                    "a postgres feed without url listens on the source's database, "
                    "but the source is not sql: give url (or url_env)",
                )
            ]
        )
    if source.url_env is not None:
        url = _secret(source.url_env, "source.url_env", environ)
    else:
        url = source.url or ""
    if not _is_postgres(url):
        raise ConfigError(
            [
                ConfigProblem(
                    where,
                    "a postgres feed without url listens on the source's database, "
                    "which is not PostgreSQL: give url (or url_env)",
                )
            ]
        )
    password = (
        _secret(source.password_env, "source.password_env", environ)
        if source.password_env is not None
        else None
    )
    return url, password


def _need(module: str, extra: str, where: str) -> None:
    """``ConfigError`` naming the table when the feed's client library is not installed."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            [
                ConfigProblem(
                    where,
                    f"this feed needs {module}: install syncd with the {extra} extra "
                    f"(pip install 'syncd[{extra}]')",
                )
            ]
        )


def _is_postgres(url: str) -> bool:
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        return False
    return re.fullmatch(r"postgres(ql)?(\+\w+)?", scheme) is not None


def _secret(env_name: str, where: str, environ: Mapping[str, str] | None) -> str:
    value = resolve_secret(env_name, environ)
    if value is None:
        raise ConfigError([ConfigProblem(where, f"environment variable {env_name} is not set")])
    return value
