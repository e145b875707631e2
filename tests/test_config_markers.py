"""Each config model declares its own transport-only and secret fields; the mapping
fingerprint and the secrets syncd asks for are read from those markers."""

from __future__ import annotations

from typing import Annotated

import pytest

from syncd import reconcile
from syncd.config import (
    SECRET,
    TRANSPORT,
    Secret,
    UserfluxTargetConfig,
    VambeTargetConfig,
    credential_names,
    parse_config,
    raw_secret_names,
    secret_names,
)
from syncd.config.base import _Model
from syncd.stages import fingerprinting

ENV = {"K": "x", "HOOK": "http://h"}

CONFIGS = [
    {
        "source": {"kind": "file", "path": "c.jsonl"},
        "targets": [{"kind": "userflux", "name": "uf", "api_key_env": "K", "type_id": "p"}],
    },
    {
        "source": {"kind": "file", "path": "c.jsonl", "key": "sku", "where": {"status": "publish"}},
        "targets": [
            {
                "kind": "userflux",
                "name": "uf",
                "api_key_env": "K",
                "type_id": "shoe",
                "base_url": "http://127.0.0.1:1",
                "concurrency": 3,
                "rate_limit_per_s": 5,
                "retry": {"max_attempts": 2},
                "guards": {"max_delete_fraction": 0.5},
                "alerts": {"webhook_url_env": "HOOK"},
                "where": {"price": {"gt": 0}},
                "mapping": {
                    "properties": {"title": "name", "price": {"path": "price", "type": "number"}},
                    "ai_property_overrides": {"title": {"const": "x"}},
                },
            }
        ],
    },
    {
        "source": {"kind": "sql", "url": "sqlite:///x.db", "query": "select 1"},
        "targets": [
            {
                "kind": "vambe",
                "name": "vb",
                "api_key_env": "K",
                "block_id": "b-1",
                "batch_size": 10,
                "mirror_block": True,
                "product_type": "PRODUCT",
                "rejected": "keep",
                "in_doubt_window_s": 5,
                "rejection_backoff_s": 1,
                "enabled": False,
                "timeout_s": 3,
                "mapping": {"currency": {"const": "EUR"}, "metadata": ["brand", "color"]},
            }
        ],
    },
]
# computed by the code before the markers (with its hard-coded set of how-sent keys), at
# 6707f7e: after the field options exclude/aggregate/join_with were added, which are part of
# a mapping's config and so of its fingerprint
GOLDEN = [
    "aed2badcccf20499543e53b8918f6743",
    "999913ec0c2ad2a29d6bb9feb33360f0",
    "a31b8f7f0cb593fa9eaf06172c6c1138",
]


@pytest.mark.parametrize(("data", "golden"), list(zip(CONFIGS, GOLDEN, strict=True)))
def test_the_mapping_fingerprint_of_todays_configs_is_unchanged(monkeypatch, data, golden):
    monkeypatch.setattr(fingerprinting, "__version__", "0.0-golden")
    config = parse_config(data, environ=ENV)
    fingerprint = reconcile.mapping_fingerprint(config.source, config.targets[0])
    assert fingerprint is not None
    assert fingerprint.hex() == golden


def test_each_target_model_declares_how_its_requests_are_sent():
    shared = {
        "enabled",
        "api_key_env",
        "concurrency",
        "rate_limit_per_s",
        "timeout_s",
        "retry",
        "guards",
        "rejection_backoff_s",
        "rejected",
        "in_doubt_window_s",
        "base_url",
    }
    assert UserfluxTargetConfig.transport_fields() == shared
    assert VambeTargetConfig.transport_fields() == shared | {
        "block_id",
        "batch_size",
        "mirror_block",
    }
    assert "mapping" not in VambeTargetConfig.transport_fields()
    assert "product_type" not in VambeTargetConfig.transport_fields()


def test_a_transport_setting_leaves_the_fingerprint_and_a_mapping_setting_changes_it():
    config = parse_config(CONFIGS[2], environ=ENV)
    source, target = config.source, config.targets[0]
    before = reconcile.mapping_fingerprint(source, target)
    tuned = target.model_copy(update={"batch_size": 5, "block_id": "b-2", "base_url": "http://x"})
    assert reconcile.mapping_fingerprint(source, tuned) == before
    retyped = target.model_copy(update={"product_type": "SERVICE"})
    assert reconcile.mapping_fingerprint(source, retyped) != before


def test_secrets_are_found_by_their_markers_in_a_document_with_other_problems():
    data = {
        "source": {"kind": "sql", "url_env": "DBURL", "password_env": "DBPW", "query": 1},
        "targets": [
            {"kind": "userflux", "api_key_env": "UF", "alerts": {"webhook_url_env": "H1"}},
            {
                "kind": "vambe",
                "api_key_env": "VB",
                "enabled": False,
                "alerts": {"slack_webhook_url_env": "OFF"},
            },
            "not a table",
            {"kind": "unknown", "api_key_env": "ANYKIND"},
            {"api_key_env": "NOKIND"},
        ],
        "state": {"url_env": "ST"},
        "alerts": {"webhook_url_env": "G1", "slack_webhook_url_env": "G2"},
    }
    assert sorted(raw_secret_names(type(parse_config(CONFIGS[0], environ=ENV)), data)) == sorted(
        [
            ("source.url_env", "DBURL"),
            ("source.password_env", "DBPW"),
            ("targets[0].api_key_env", "UF"),
            ("targets[0].alerts.webhook_url_env", "H1"),
            ("targets[3].api_key_env", "ANYKIND"),
            ("targets[4].api_key_env", "NOKIND"),
            ("state.url_env", "ST"),
            ("alerts.webhook_url_env", "G1"),
            ("alerts.slack_webhook_url_env", "G2"),
        ]
    )


@pytest.mark.parametrize(
    ("auth", "wanted"),
    [
        (
            {"kind": "bearer", "token_env": "TOK", "password_env": "NO"},
            [("source.auth.token_env", "TOK")],
        ),
        ({"kind": "header", "token_env": "TOK"}, [("source.auth.token_env", "TOK")]),
        (
            {"kind": "basic", "username": "u", "token_env": "NO", "password_env": "PW"},
            [("source.auth.password_env", "PW")],
        ),
        ({"token_env": "NO"}, []),
    ],
)
def test_a_secret_is_wanted_only_by_the_auth_kind_that_uses_it(auth, wanted):
    data = {"source": {"kind": "http", "url": "https://shop/api", "auth": auth}}
    assert list(raw_secret_names(type(parse_config(CONFIGS[0], environ=ENV)), data)) == wanted


def test_a_missing_secret_of_a_disabled_target_is_not_asked_for():
    data = {
        "source": {"kind": "file", "path": "c.jsonl"},
        "targets": [
            {"kind": "userflux", "name": "uf", "api_key_env": "K", "type_id": "p"},
            {
                "kind": "vambe",
                "name": "vb",
                "api_key_env": "UNSET",
                "block_id": "b",
                "enabled": False,
            },
        ],
    }
    config = parse_config(data, environ={"K": "x"})
    assert secret_names(config) == [("targets[0].api_key_env", "K")]


class _Plugin(_Model):
    """A model a new backend might add."""

    token_env: Annotated[str | None, SECRET] = None
    """A secret."""
    endpoint: Annotated[str, TRANSPORT] = "http://x"
    """Where requests go."""
    nested: list[_Inner] = []
    """Tables of their own."""


class _Inner(_Model):
    key_env: Annotated[str | None, Secret()] = None
    """Another secret."""


_Plugin.model_rebuild()


def test_a_new_model_declares_its_secrets_and_transport_fields_without_any_other_edit():
    data = {"token_env": "T", "nested": [{"key_env": "A"}, {"key_env": ""}, {"key_env": "B"}]}
    assert list(raw_secret_names(_Plugin, data)) == [
        ("token_env", "T"),
        ("nested[0].key_env", "A"),
        ("nested[2].key_env", "B"),
    ]
    assert _Plugin.transport_fields() == {"endpoint"}


def test_a_basic_auth_password_is_paired_with_its_user_by_its_marker():
    data = {
        "source": {
            "kind": "http",
            "url": "https://shop.test/api",
            "auth": {"kind": "basic", "username": "shop-user", "password_env": "PW"},
        },
        "targets": CONFIGS[0]["targets"],
    }
    config = parse_config(data, environ={"K": "x", "PW": "pw-secret-1"})
    assert credential_names(config) == [("shop-user", "PW")]
    bearer = {**data, "source": {**data["source"], "auth": {"kind": "bearer", "token_env": "K"}}}
    assert credential_names(parse_config(bearer, environ={"K": "x"})) == []
