"""``type = "json"`` parses a JSON value held as text (a database's JSON aggregate returned
as a string), and rejects invalid JSON naming the field and where the JSON breaks."""

from __future__ import annotations

from typing import Any

import pytest

from syncd.config import UserfluxTargetConfig, VambeTargetConfig
from syncd.errors import RecordError
from syncd.mapping import build_mapper


def userflux(properties: dict[str, Any]) -> Any:
    config = UserfluxTargetConfig.model_validate(
        {"kind": "userflux", "name": "uf", "api_key_env": "K", "type_id": "product",
         "mapping": {"properties": properties}}
    )  # fmt: skip
    return build_mapper(config, "id")


def vambe_metadata(metadata: dict[str, Any]) -> Any:
    config = VambeTargetConfig.model_validate(
        {"kind": "vambe", "name": "vb", "api_key_env": "K", "block_id": "b",
         "mapping": {"price": {"const": 1}, "metadata": metadata}}
    )  # fmt: skip
    return build_mapper(config, "id")


@pytest.mark.parametrize(
    "spec",
    [
        {"path": "dims", "type": "json"},
        {"path": "dims", "type": "json", "required": True},
        {"path": "dims", "type": "json", "fallback": ["other"]},
        {"path": "dims", "type": "json", "default": "{}"},
    ],
)
def test_a_json_text_is_sent_as_the_value_it_holds(spec: dict[str, Any]) -> None:
    mapper = userflux({"dims": spec})
    record = {"id": "P1", "dims": ' {"w": 10, "h": [1.5, null], "unit": "cm"} '}

    document = mapper.map(record)

    assert document.payload["properties"]["dims"] == {"w": 10, "h": [1.5, None], "unit": "cm"}


@pytest.mark.parametrize(
    ("text", "value"),
    [("[1, 2]", [1, 2]), ('"plain"', "plain"), ("12.5", 12.5), ("true", True)],
)
def test_any_json_text_is_parsed_not_only_objects(text: str, value: Any) -> None:
    document = userflux({"v": {"path": "v", "type": "json"}}).map({"id": "P1", "v": text})
    assert document.payload["properties"]["v"] == value


def test_a_value_that_is_already_json_passes_through() -> None:
    document = userflux({"v": {"path": "v", "type": "json"}}).map({"id": "P1", "v": {"a": [1]}})
    assert document.payload["properties"]["v"] == {"a": [1]}


def test_an_untyped_text_stays_text() -> None:
    document = userflux({"v": "v"}).map({"id": "P1", "v": '{"a": 1}'})
    assert document.payload["properties"]["v"] == '{"a": 1}'


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"w": 10,}', "line 1 column 10 (char 9)"),
        ('{"w": 10', "line 1 column 9 (char 8)"),
        ("[1,\n 2,\n x]", "line 3 column 2 (char 9)"),
        ("not json", "line 1 column 1 (char 0)"),
    ],
)
def test_invalid_json_text_rejects_the_record_naming_the_field_and_position(
    text: str, where: str
) -> None:
    mapper = userflux({"dims": {"path": "dims", "type": "json"}})

    with pytest.raises(RecordError) as caught:
        mapper.map({"id": "P1", "dims": text})

    assert caught.value.key == "P1"
    assert str(caught.value).startswith(f"properties.dims: not valid JSON at {where}: ")


def test_nan_in_json_text_is_refused() -> None:
    with pytest.raises(RecordError, match=r"properties\.v: not valid JSON: NaN is not valid"):
        userflux({"v": {"path": "v", "type": "json"}}).map({"id": "P1", "v": '{"a": NaN}'})


def test_a_json_text_in_vambe_metadata_is_parsed_and_flattened() -> None:
    mapper = vambe_metadata({"dims": {"path": "dims", "type": "json"}})

    document = mapper.map(
        {"id": "P1", "name": "x", "description": "d", "dims": '{"w": 10, "unit": "cm"}'}
    )

    metadata = {m["key"]: m["value"] for m in document.payload["metadata"]}
    assert metadata == {"dims.w": "10", "dims.unit": "cm"}
