"""Config loading: every problem at once with its TOML path, secrets from the environment."""

from __future__ import annotations

import ast
import inspect
import itertools
import re
import textwrap
import tomllib
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from syncd import config as cfg
from syncd.config import load_config, parse_config, resolve_secret
from syncd.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"
ENV = {"USERFLUX_API_KEY": "k1", "VAMBE_API_KEY": "k2"}


def minimal(**target: object) -> dict:
    return {
        "source": {"kind": "file", "path": "c.jsonl"},
        "targets": [
            {"kind": "userflux", "name": "uf", "api_key_env": "K", "type_id": "p", **target}
        ],
    }


def problems_of(data: dict, environ: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ={"K": "x"} if environ is None else environ)
    return [str(p) for p in caught.value.problems]


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            annotation = stack.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                _models(annotation, seen)
            stack.extend(typing.get_args(annotation))


def test_the_example_config_is_valid():
    config = load_config(EXAMPLE, environ=ENV)
    assert [t.name for t in config.targets] == ["userflux", "vambe"]
    assert config.source.path == EXAMPLE.parent / "catalog.jsonl"


def test_the_example_config_documents_every_option():
    text = EXAMPLE.read_text()
    models: set[type[BaseModel]] = set()
    _models(cfg.SyncdConfig, models)
    missing = [
        f"{model.__name__}.{name}"
        for model in models
        for name in model.model_fields
        if not re.search(rf"(^|[\s#{{,]){re.escape(name)}\s*=|\b{re.escape(name)}\b", text)
    ]
    assert missing == []


def _attribute_docstrings(model: type[BaseModel]) -> dict[str, str]:
    """The docstrings written under a model's fields and its base models' (a string
    statement right after the annotated field), read from their source."""
    found: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not issubclass(cls, BaseModel) or cls is BaseModel:
            continue
        (definition,) = ast.parse(textwrap.dedent(inspect.getsource(cls))).body
        assert isinstance(definition, ast.ClassDef)
        for statement, following in itertools.pairwise(definition.body):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                found[statement.target.id] = following.value.value
    return found


def test_every_option_has_a_docstring():
    models: set[type[BaseModel]] = set()
    _models(cfg.SyncdConfig, models)
    undocumented = [
        f"{m.__name__}.{name}"
        for m in models
        for name in m.model_fields
        if not _attribute_docstrings(m).get(name, "").strip()
    ]
    assert undocumented == []


def test_every_problem_is_reported_at_once_with_its_toml_path():
    data = minimal()
    data["source"]["bogus"] = 1
    data["targets"][0].pop("type_id")
    data["targets"][0]["concurrency"] = "many"
    data["targets"].append({"kind": "vambe", "name": "vb", "api_key_env": "K"})

    problems = problems_of(data)

    assert "source.bogus: unknown key" in problems
    assert "targets[0].type_id: missing" in problems
    assert any(p.startswith("targets[0].concurrency:") for p in problems)
    assert "targets[1].block_id: missing" in problems


def test_a_missing_environment_variable_is_named_with_its_place():
    problems = problems_of(minimal(), environ={})
    assert problems == ["targets[0].api_key_env: environment variable K is not set (nor K_FILE)"]


def test_a_secret_can_come_from_a_file_named_by_name_file(tmp_path):
    secret = tmp_path / "key"
    secret.write_text("from-file\n")
    assert resolve_secret("K", {"K_FILE": str(secret)}) == "from-file"
    parse_config(minimal(), environ={"K_FILE": str(secret)})


def test_duplicate_target_names_are_refused():
    data = minimal()
    data["targets"].append(dict(data["targets"][0]))
    assert "targets[1].name: duplicate target name 'uf' (also targets[0])" in problems_of(data)


def test_a_field_spec_needs_exactly_one_source_of_value():
    data = minimal(mapping={"properties": {"price": {"path": "p", "const": 3}}})
    [problem] = problems_of(data)
    assert problem.startswith("targets[0].mapping.properties.price:")
    assert "exactly one of path, const or template" in problem


def test_a_sql_source_needs_a_url_and_a_query_or_table():
    data = minimal()
    data["source"] = {"kind": "sql", "url": "sqlite:///x.db"}
    [problem] = problems_of(data)
    assert "query or table" in problem


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"source = [", "is not valid TOML"),
        (b"\xff\xfe\x00", "is not UTF-8"),
    ],
)
def test_an_unparsable_config_file_says_why(tmp_path, content, expected):
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=expected):
        load_config(path, environ={})


def test_a_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml", environ={})
    with pytest.raises(ConfigError, match="SYNCD_CONFIG"):
        load_config(None, environ={})


def test_the_example_is_valid_toml_with_two_targets():
    data = tomllib.loads(EXAMPLE.read_text())
    assert len(data["targets"]) == 2


# -- every path option resolves against the config file, whatever the working directory ----


def _load_from_elsewhere(tmp_path, monkeypatch, text: str):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "syncd.toml").write_text(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return folder, load_config("../conf/syncd.toml", environ={"K": "x"})


TARGET = '[[targets]]\nkind = "userflux"\nname = "uf"\napi_key_env = "K"\ntype_id = "p"\n'


def test_a_relative_sqlite_state_url_is_relative_to_the_config_file(tmp_path, monkeypatch):
    folder, config = _load_from_elsewhere(
        tmp_path,
        monkeypatch,
        '[source]\nkind = "file"\npath = "c.jsonl"\n[state]\nurl = "sqlite:///db/state.db"\n'
        + TARGET,
    )
    assert config.state.resolved_url() == f"sqlite:///{folder.absolute()}/db/state.db"


def test_the_default_state_url_is_next_to_the_config_file(tmp_path, monkeypatch):
    folder, config = _load_from_elsewhere(
        tmp_path, monkeypatch, '[source]\nkind = "file"\npath = "c.jsonl"\n' + TARGET
    )
    assert config.state.resolved_url() == f"sqlite:///{folder.absolute()}/syncd-state.db"


def test_a_relative_file_source_path_is_relative_to_the_config_file(tmp_path, monkeypatch):
    folder, config = _load_from_elsewhere(
        tmp_path, monkeypatch, '[source]\nkind = "file"\npath = "data/c.jsonl"\n' + TARGET
    )
    assert config.source.path == folder.absolute() / "data" / "c.jsonl"
    assert config.source.path.is_absolute()


def test_a_relative_sqlite_source_url_is_relative_to_the_config_file(tmp_path, monkeypatch):
    folder, config = _load_from_elsewhere(
        tmp_path,
        monkeypatch,
        '[source]\nkind = "sql"\nurl = "sqlite:///shop.db?timeout=5"\ntable = "products"\n'
        + TARGET,
    )
    assert config.source.url == f"sqlite:///{folder.absolute()}/shop.db?timeout=5"


def test_a_relative_ca_bundle_is_relative_to_the_config_file(tmp_path, monkeypatch):
    folder, config = _load_from_elsewhere(
        tmp_path,
        monkeypatch,
        '[source]\nkind = "file"\npath = "c.jsonl"\n[http]\nca_bundle = "certs/ca.pem"\n' + TARGET,
    )
    assert config.http.ca_bundle == folder.absolute() / "certs" / "ca.pem"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////var/lib/syncd/state.db",
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql+psycopg://syncd@db/state",
        "sqlite:///file:state.db?mode=ro&uri=true",
    ],
)
def test_absolute_memory_uri_and_server_urls_are_left_as_they_are(url, tmp_path):
    assert cfg.resolve_sqlite_url(url, tmp_path) == url


def test_problems_of_the_file_and_missing_secrets_come_in_one_pass():
    data = minimal()
    data["source"]["bogus"] = 1
    data["targets"].append(dict(data["targets"][0]))
    data["schedule"] = {"cron": "nightly"}

    problems = problems_of(data, environ={})

    assert "source.bogus: unknown key" in problems
    assert "targets[0].api_key_env: environment variable K is not set (nor K_FILE)" in problems
    assert "targets[1].name: duplicate target name 'uf' (also targets[0])" in problems
    assert "schedule.cron: a crontab needs 5 fields" in problems


def test_secrets_are_not_required_when_asked_not_to():
    config = parse_config(minimal(), environ={}, require_secrets=False)
    assert config.targets[0].api_key_env == "K"
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({**minimal(), "bogus": 1}, environ={}, require_secrets=False)


def test_the_rolling_refresh_is_on_for_seven_days_and_the_weekly_full_refresh_off_by_default():
    config = parse_config(minimal(), environ={"K": "x"})

    assert config.schedule.refresh_period == 7 * 86400
    assert config.schedule.full_refresh_cron is None


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("7d", 604800.0),
        ("12h", 43200.0),
        ("90m", 5400.0),
        ("2w", 1209600.0),
        (3600, 3600.0),
        ("", None),
        (0, None),
    ],
)
def test_refresh_period_takes_seconds_or_a_number_with_a_unit(written, seconds):
    data = minimal()
    data["schedule"] = {"refresh_period": written}

    assert parse_config(data, environ={"K": "x"}).schedule.refresh_period == seconds


@pytest.mark.parametrize("written", ["weekly", "7 days", "-1", -5, "1y"])
def test_a_refresh_period_that_is_no_duration_is_named_with_its_key(written):
    data = minimal()
    data["schedule"] = {"refresh_period": written}

    problems = problems_of(data, environ={"K": "x"})

    assert any(p.startswith("schedule.refresh_period:") for p in problems), problems
