"""The hooks' toolbox: the declarative mapping's text, number and unpacking rules, from one
public module, used by real hooks (``mapping.callable``)."""

from __future__ import annotations

from typing import Any

import pytest

from syncd import toolbox
from syncd.config import FieldSpec, UserfluxTargetConfig, VambeTargetConfig
from syncd.errors import RecordError
from syncd.mapping import build_mapper, evaluate
from syncd.toolbox import (
    distinct,
    field,
    html_to_text,
    parse_boolean,
    parse_integer,
    parse_number,
    parse_price,
    pick,
    split,
    split_pairs,
    truncate,
)

SIZES = field({"path": "Attributes", "pairs": {}, "pick": "size", "distinct": True})


def describe(record: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """A hook building Vambe's description from HTML parts and a packed attribute cell."""
    material = html_to_text(record["material_html"])
    sizes = ", ".join(SIZES(record) or [])
    text = f"{html_to_text(record['intro_html'])} Material: {material}. Sizes: {sizes}."
    document["description"] = truncate(text, 60)
    document["price"] = parse_price(record["Price"], decimal_separator=",")
    return document


def sizes_and_colours(record: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    variants = split_pairs(record["Attributes"])
    document["properties"]["sizes"] = distinct(pick(variants, "size"))
    document["properties"]["colours"] = distinct(pick(variants, "color"))
    document["properties"]["care"] = split(record["Care"], "\n")
    document["properties"]["stock"] = parse_integer(record["Stock"])
    return document


RECORD = {
    "id": "A-1",
    "Name": "Yoga pants",
    "intro_html": "<p>Soft &amp; stretchy</p>",
    "material_html": "<b>Lycra&reg;</b>",
    "Price": "1.234,50 €",
    "Attributes": "sku=A-XS-Black,size=XS,color=Black|sku=A-S-Black,size=S,color=Black",
    "Care": "Wash cold\r\nDo not tumble dry\n",
    "Stock": "1,200",
}


def test_a_hook_builds_a_description_from_html_with_entities_decoded() -> None:
    target = VambeTargetConfig.model_validate(
        {"kind": "vambe", "name": "vb", "api_key_env": "K", "block_id": "b",
         "mapping": {"name": "Name", "description": "Name", "price": {"const": 1},
                     "callable": "tests.test_toolbox:describe"}}
    )  # fmt: skip

    payload = build_mapper(target, "id").map(RECORD).payload

    assert payload["description"] == "Soft & stretchy Material: Lycra®. Sizes: XS, S."
    assert "&reg;" not in payload["description"]
    assert payload["price"] == 1234.5


def test_a_hook_unpacks_packed_cells_with_the_same_helpers_as_the_mapping() -> None:
    target = UserfluxTargetConfig.model_validate(
        {"kind": "userflux", "name": "uf", "api_key_env": "K", "type_id": "p",
         "mapping": {"properties": {"name": "Name"},
                     "callable": "tests.test_toolbox:sizes_and_colours"}}
    )  # fmt: skip

    properties = build_mapper(target, "id").map(RECORD).payload["properties"]

    assert properties == {
        "name": "Yoga pants",
        "sizes": ["XS", "S"],
        "colours": ["Black"],
        "care": ["Wash cold", "Do not tumble dry"],
        "stock": 1200,
    }


@pytest.mark.parametrize(
    ("text", "separator"),
    [("$ 12.99", "."), ("1.234,50", ","), ("45.000", "."), ("-3", "."), ("  7 ", ".")],
)
def test_parse_number_follows_the_same_rules_as_type_number(text: str, separator: str) -> None:
    declared = evaluate_number(text, separator)
    assert parse_number(text, decimal_separator=separator) == declared
    assert type(parse_number(text, decimal_separator=separator)) is type(declared)


def evaluate_number(text: str, separator: str) -> Any:
    spec = FieldSpec(path="v", type="number", decimal_separator=separator)  # type: ignore[arg-type]
    return evaluate(spec, {"v": text})


@pytest.mark.parametrize(
    "text", ["abc", "NaN", "\uff11\uff12\uff13", "1_000", "0.1000000000000000000001"]
)
def test_parse_number_refuses_what_type_number_refuses(text: str) -> None:
    with pytest.raises(RecordError):
        parse_number(text)


def test_a_hook_that_gets_a_bad_price_rejects_its_record_with_the_reason() -> None:
    target = VambeTargetConfig.model_validate(
        {"kind": "vambe", "name": "vb", "api_key_env": "K", "block_id": "b",
         "mapping": {"name": "Name", "description": "Name", "price": {"const": 1},
                     "callable": "tests.test_toolbox:describe"}}
    )  # fmt: skip

    with pytest.raises(RecordError) as caught:
        build_mapper(target, "id").map(RECORD | {"Price": "call us"})

    assert (caught.value.key, caught.value.reason) == ("A-1", "not a number: 'call us'")


def test_truncate_cuts_on_a_word_boundary_and_refuses_a_limit_below_one() -> None:
    assert truncate("Soft and stretchy pants", 12) == "Soft and"
    with pytest.raises(ValueError, match="at least 1"):
        truncate("x", 0)


def test_integers_and_booleans_follow_their_declared_types() -> None:
    assert parse_integer("1.000", decimal_separator=",") == 1000
    assert parse_boolean(" Yes ") is True
    with pytest.raises(RecordError, match="not an integer"):
        parse_integer("1.5")


def test_field_compiles_a_toml_field_spec_and_gives_none_when_missing() -> None:
    categories = field({"path": "Categories", "split": ",", "then": {"split": "/", "index": -1}})
    assert categories({"Categories": "Women/Tops, Sale/Summer"}) == ["Tops", "Summer"]
    assert categories({}) is None
    assert field("Name")({"Name": "  Tee "}) == "Tee"


def test_field_refuses_a_spec_the_config_would_refuse_naming_the_option() -> None:
    with pytest.raises(ValueError, match=r"bad field spec: pairs\.kv"):
        field({"path": "a", "pairs": {"kv": ""}})


def test_pick_reads_one_object_or_a_list_and_skips_those_without_it() -> None:
    assert pick({"size": "M"}, "size") == ["M"]
    assert pick([{"size": "M"}, {}, {"size": "L"}], "size") == ["M", "L"]
    assert pick([], "size") == []


def test_every_tool_the_module_exports_is_documented() -> None:
    undocumented = [name for name in toolbox.__all__ if not getattr(toolbox, name).__doc__]
    assert undocumented == []
    assert {"html_to_text", "parse_number", "truncate", "split_pairs"} <= set(toolbox.__all__)
