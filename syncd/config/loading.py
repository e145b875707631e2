"""Loading: TOML read, validated once, every problem reported at once with its TOML path,
the secrets the file names, and relative paths resolved against the config's folder."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from syncd.config.base import raw_secret_fields, raw_secret_names, resolve_secret
from syncd.config.document import SyncdConfig
from syncd.config.feeds import feed_problems
from syncd.config.sources import FileSourceConfig, SqlSourceConfig
from syncd.errors import ConfigError, ConfigProblem

CONFIG_ENV = "SYNCD_CONFIG"
"""Environment variable naming the config file when ``--config`` is not given."""

_MESSAGES = {
    "missing": "missing",
    "extra_forbidden": "unknown key",
}
_UNION_TAGS = {
    "file",
    "sql",
    "http",
    "userflux",
    "vambe",
    "webhook",
    "postgres",
    "rabbitmq",
    "function-after[_one_source(), FieldSpec]",
}


def _toml_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _UNION_TAGS and (previous == "source" or isinstance(previous, int)):
            pass  # the discriminator pydantic inserts: `source.file.path` is `source.path`
        elif part.startswith(("function-", "list[", "dict[")):
            pass
        else:
            out += f".{part}" if out else str(part)
        previous = part
    return out


def _problems(error: ValidationError) -> list[ConfigProblem]:
    problems = []
    for item in error.errors(include_url=False):
        message = _MESSAGES.get(item["type"], item["msg"])
        message = message.removeprefix("Value error, ")
        problems.append(ConfigProblem(_toml_path(tuple(item["loc"])), message))
    return problems


def secret_names(config: SyncdConfig) -> list[tuple[str, str]]:
    """Every secret the config names: (TOML path, environment variable)."""
    return _raw_secret_names(config.model_dump())


def _table(data: Any, name: str) -> Mapping[str, Any]:
    value = data.get(name) if isinstance(data, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value else None


def _raw_targets(data: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    targets = data.get("targets")
    if not isinstance(targets, list):
        return []
    return [(i, t) for i, t in enumerate(targets) if isinstance(t, Mapping)]


def _raw_secret_names(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The secrets a (possibly invalid) parsed document names, found by the ``Secret``
    markers of the models: read defensively, so a file with other problems still gets
    its missing variables reported in the same pass."""
    return list(raw_secret_names(SyncdConfig, data))


def credential_names(config: SyncdConfig) -> list[tuple[str | None, str]]:
    """Every user and password pair the config names: (user, environment variable of the
    password), from the ``Secret(user_field=...)`` markers."""
    found: list[tuple[str | None, str]] = []
    for _, name, marker, table in raw_secret_fields(SyncdConfig, config.model_dump()):
        if marker.user_field is not None:
            user = table.get(marker.user_field)
            found.append((user if isinstance(user, str) else None, name))
    return found


def alert_secret_names(config: SyncdConfig) -> list[tuple[str, str]]:
    """The alert webhook URLs the config names: (TOML path, environment variable)."""
    tables = [("alerts", config.alerts)] + [
        (f"targets[{index}].alerts", target.alerts)
        for index, target in enumerate(config.targets)
        if target.alerts is not None and target.enabled
    ]
    return [
        (f"{path}.{key}", name)
        for path, table in tables
        for key in ("webhook_url_env", "slack_webhook_url_env")
        if (name := getattr(table, key))
    ]


def _secret_problems(
    data: Mapping[str, Any], environ: Mapping[str, str], *, require_secrets: bool = True
) -> list[ConfigProblem]:
    problems = []
    source = _table(data, "source")
    if source.get("kind") == "http":
        auth = _table(source, "auth")
        kind = auth.get("kind", "none")
        if kind in ("bearer", "header") and not _text(auth, "token_env"):
            problems.append(ConfigProblem("source.auth.token_env", f"missing (needed by {kind})"))
        if kind == "basic" and not (_text(auth, "username") and _text(auth, "password_env")):
            problems.append(ConfigProblem("source.auth", "basic needs username and password_env"))
    if not require_secrets:
        return problems
    return problems + [
        ConfigProblem(path, f"environment variable {name} is not set (nor {name}_FILE)")
        for path, name in _raw_secret_names(data)
        if resolve_secret(name, environ) is None
    ]


def _cross_problems(data: Mapping[str, Any]) -> list[ConfigProblem]:
    """Problems across tables, read from the parsed document (valid or not), so they are
    reported with the validation problems in one pass."""
    problems = []
    seen: dict[str, int] = {}
    for index, target in _raw_targets(data):
        name = target.get("name")
        if not isinstance(name, str):
            continue
        if name in seen:
            problems.append(
                ConfigProblem(
                    f"targets[{index}].name",
                    f"duplicate target name {name!r} (also targets[{seen[name]}])",
                )
            )
        seen.setdefault(name, index)
    schedule = _table(data, "schedule")
    for key, default in (("cron", "0 3 * * *"), ("full_refresh_cron", None)):
        value = schedule.get(key, default)
        if isinstance(value, str) and value and len(value.split()) != 5:
            problems.append(ConfigProblem(f"schedule.{key}", "a crontab needs 5 fields"))
    return problems + feed_problems(data)


_SQLITE_URL = re.compile(r"^(sqlite(?:\+\w+)?):///(?P<database>[^?]*)(?P<query>\?.*)?$")


def resolve_sqlite_url(url: str, base_dir: Path) -> str:
    """A SQLite URL whose file path is relative, made absolute against ``base_dir`` (the
    config file's folder). Other URLs, absolute paths, ``:memory:`` and ``file:`` URIs
    are returned unchanged."""
    match = _SQLITE_URL.match(url)
    if match is None:
        return url
    database = match["database"]
    if not database or database == ":memory:" or database.startswith(("/", "file:")):
        return url
    located = Path(os.path.abspath(base_dir / database))
    return f"{match[1]}:///{located}{match['query'] or ''}"


def _resolved_paths(config: SyncdConfig, base_dir: Path) -> SyncdConfig:
    """Every path option of the file made absolute against the config file's folder:
    ``source.path``, a SQLite ``source.url``, a SQLite ``state.url``, ``http.ca_bundle``.
    (URLs from environment variables are used as given.)"""
    base_dir = Path(os.path.abspath(base_dir))  # ``..`` folded, symlinks kept
    update: dict[str, Any] = {}
    source = config.source
    if isinstance(source, FileSourceConfig):
        update["source"] = source.resolved(base_dir)  # absolute paths stay as they are
    if isinstance(source, SqlSourceConfig) and source.url is not None:
        url = resolve_sqlite_url(source.url, base_dir)
        if url != source.url:
            update["source"] = source.model_copy(update={"url": url})
    state_url = resolve_sqlite_url(config.state.url, base_dir)
    if state_url != config.state.url:
        update["state"] = config.state.model_copy(update={"url": state_url})
    bundle = config.http.ca_bundle
    if bundle is not None and not bundle.is_absolute():
        update["http"] = config.http.model_copy(update={"ca_bundle": base_dir / bundle})
    return config.model_copy(update=update) if update else config


def parse_config(
    data: Mapping[str, Any],
    *,
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    source: str = "",
    require_secrets: bool = True,
) -> SyncdConfig:
    """Validate a parsed TOML document; raise ``ConfigError`` listing every problem.

    Every problem comes in one pass: the models' own, those across tables, and the
    environment variables that are not set. ``require_secrets=False`` (the read-only
    commands) does not ask for the secrets. With ``base_dir``, every path option is
    resolved against it (see ``_resolved_paths``).
    """
    environ = os.environ if environ is None else environ
    problems: list[ConfigProblem] = []
    config: SyncdConfig | None = None
    try:
        config = SyncdConfig.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc)
    reported = {str(p) for p in problems}
    problems += [
        p
        for p in _cross_problems(data)
        + _secret_problems(data, environ, require_secrets=require_secrets)
        if str(p) not in reported
    ]
    if problems or config is None:
        raise ConfigError(problems, source=source)
    if base_dir is not None:
        config = _resolved_paths(config, base_dir)
    return config


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    require_secrets: bool = True,
) -> SyncdConfig:
    """Read and validate the config file named by ``path`` or ``$SYNCD_CONFIG``.

    ``require_secrets=False``: the environment variables holding secrets need not be set
    (for the commands that only read the state database)."""
    environ = os.environ if environ is None else environ
    if path is None:
        path = environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"no config file: pass --config PATH or set {CONFIG_ENV}")
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {file} is not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from None
    return parse_config(
        data,
        base_dir=file.parent,
        environ=environ,
        source=str(file),
        require_secrets=require_secrets,
    )
