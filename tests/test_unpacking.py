"""Declarative unpacking of packed cells: split, pairs, nested splits, pick, distinct, trim."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from syncd.config import FieldSpec, UserfluxTargetConfig, VambeTargetConfig, parse_config
from syncd.errors import ConfigError, RecordError
from syncd.mapping import MISSING, build_mapper, evaluate

VARIANTS = "|".join(
    [
        "sku=A-XS-Black,size=XS,color=Black",
        "sku=A-XS-Gray,size=XS,color=Gray",
        "sku=A-S-Gray,size=S,color=Gray",
    ]
)


def value(options: dict[str, Any], cell: Any) -> Any:
    return evaluate(FieldSpec.model_validate({"path": "cell", **options}), {"cell": cell})


def refusal(options: dict[str, Any], cell: Any) -> str:
    with pytest.raises(RecordError) as caught:
        value(options, cell)
    return caught.value.reason


def problems_of(spec: dict[str, Any]) -> list[str]:
    data = {
        "source": {"kind": "file", "path": "c.jsonl"},
        "targets": [
            {"kind": "userflux", "name": "uf", "api_key_env": "K", "type_id": "p",
             "mapping": {"properties": {"sizes": spec}}}
        ],
    }  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ={"K": "x"})
    return [str(p) for p in caught.value.problems]


# --------------------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("separators", "cell", "items"),
    [
        ("\n", "Cotton\nMachine wash\r\n\n  Portugal  ", ["Cotton", "Machine wash", "Portugal"]),
        (";", "a; b ;;c", ["a", "b", "c"]),
        ([",", ";", "\n"], "a,b;c\nd", ["a", "b", "c", "d"]),
        (" > ", "Clothing > Hoodies", ["Clothing", "Hoodies"]),
        ([",", ", "], "a, b,c", ["a", "b", "c"]),
    ],
    ids=repr,
)
def test_split_cuts_text_at_any_of_its_separators_and_trims_the_items(
    separators: Any, cell: str, items: list[str]
) -> None:
    assert value({"split": separators}, cell) == items


def test_split_takes_a_list_value_as_already_cut_and_trims_its_items() -> None:
    assert value({"split": "\n"}, [" a ", "", None, "b,c", 3]) == ["a", "b,c", 3]


def test_a_split_cell_of_only_separators_is_missing_and_required_rejects_it() -> None:
    assert value({"split": "\n"}, "\n \n") is MISSING
    assert refusal({"split": "\n", "required": True}, "\n \n") == "missing (required)"


def test_split_then_index_keeps_one_item_and_a_type_applies_to_every_item() -> None:
    assert value({"split": "\n", "index": -1}, "first\nlast") == "last"
    assert value({"split": "|", "type": "number"}, "1.50 | $ 2 | 3") == [1.5, 2, 3]
    assert refusal({"split": "|", "type": "number"}, "1 | two") == "not a number: 'two'"


def test_trim_strips_given_characters_or_keeps_whitespace_when_false() -> None:
    assert value({"split": "\n", "trim": "•*"}, "• Soft\n* Warm ") == ["Soft", "Warm"]
    assert value({"split": "|", "trim": False}, " a | b") == [" a ", " b"]


# --------------------------------------------------------------------------------------
# then: nested splits
# --------------------------------------------------------------------------------------


def test_then_cuts_every_item_again_into_category_paths() -> None:
    options = {"split": ",", "then": {"split": "/"}}
    assert value(options, "Women/Tops, Sale/Summer") == [["Women", "Tops"], ["Sale", "Summer"]]


def test_then_with_an_index_keeps_each_paths_leaf_and_distinct_drops_repeats() -> None:
    options = {"split": ",", "then": {"split": "/", "index": -1}, "distinct": True}
    assert value(options, "Women/Tops, Sale/Summer, Men/Tops") == ["Tops", "Summer"]


def test_then_nests_and_applies_to_a_json_list_value() -> None:
    options = {"then": {"split": "/", "then": {"split": ":", "index": 0}}}
    assert value(options, ["A:1/B:2", "C:3"]) == [["A", "B"], ["C"]]


def test_then_refuses_objects_naming_them() -> None:
    assert refusal({"then": {"split": "/"}}, [{"a": 1}]).startswith("then cuts text, not {'a': 1}")


# --------------------------------------------------------------------------------------
# pairs, pick
# --------------------------------------------------------------------------------------


def test_pairs_unpack_key_value_items_into_a_list_of_objects() -> None:
    assert value({"pairs": {}}, VARIANTS) == [
        {"sku": "A-XS-Black", "size": "XS", "color": "Black"},
        {"sku": "A-XS-Gray", "size": "XS", "color": "Gray"},
        {"sku": "A-S-Gray", "size": "S", "color": "Gray"},
    ]


def test_pick_with_distinct_gives_the_distinct_values_of_one_key() -> None:
    assert value({"pairs": {}, "pick": "size", "distinct": True}, VARIANTS) == ["XS", "S"]
    assert value({"pairs": {}, "pick": "color", "distinct": True}, VARIANTS) == ["Black", "Gray"]
    assert value({"pairs": {}, "pick": "sku"}, VARIANTS) == ["A-XS-Black", "A-XS-Gray", "A-S-Gray"]


def test_pairs_take_any_separators_and_items_empty_gives_one_object() -> None:
    options = {"pairs": {"items": "", "fields": ";", "kv": ":"}}
    assert value(options, "Material: Cotton; Fit : Slim;") == {"Material": "Cotton", "Fit": "Slim"}
    nested = {"pairs": {"items": "\n", "fields": ";", "kv": ":"}, "pick": "Fit"}
    assert value(nested, "Fit:Slim\nFit:Loose;x:1") == ["Slim", "Loose"]


def test_a_fragment_without_kv_belongs_to_the_value_before_and_a_repeated_key_is_a_list() -> None:
    assert value({"pairs": {"items": ""}}, "color=Black,Gray,size=M,size=L") == {
        "color": "Black,Gray",
        "size": ["M", "L"],
    }
    assert value({"pairs": {}, "pick": "size"}, "size=M,size=L|size=XL") == ["M", "L", "XL"]


def test_pairs_that_do_not_start_with_a_pair_reject_the_record_naming_the_text() -> None:
    reason = refusal({"pairs": {}}, "Black,size=M")
    assert reason == "'Black' is not a key=value pair (in 'Black,size=M')"
    assert refusal({"pairs": {}}, "=M") == "no key before '=' in '=M'"


def test_pairs_read_a_list_of_cells_and_keep_objects_as_they_are() -> None:
    cells = ["size=M,color=Red", {"size": "L"}, ""]
    assert value({"pairs": {}, "pick": "size"}, cells) == ["M", "L"]


def test_pick_reads_a_dotted_path_from_a_list_of_objects_and_skips_those_without_it() -> None:
    variants = [{"option": {"size": "M"}}, {"option": {}}, {"option": {"size": "L"}}]
    assert value({"pick": "option.size"}, variants) == ["M", "L"]
    assert value({"pick": "option.colour"}, variants) is MISSING


def test_pick_refuses_an_item_that_is_not_an_object() -> None:
    assert refusal({"pick": "size"}, ["M"]) == "pick needs objects, item 0 is 'M'"


def test_a_type_after_pairs_refuses_objects() -> None:
    reason = refusal({"pairs": {}, "type": "number"}, "a=1")
    assert reason.startswith("an object is not a single value")


# --------------------------------------------------------------------------------------
# Anywhere a field is; validated at config load
# --------------------------------------------------------------------------------------


def test_unpacking_works_in_userflux_properties_and_vambe_metadata_from_toml() -> None:
    text = """
    [uf.mapping.properties]
    categories = { path = "Categories", split = ",", then = { split = "/", index = -1 } }
    sizes = { path = "Variants", pairs = {}, pick = "size", distinct = true }
    care = { path = "Care", split = "\\n" }

    [vb.mapping]
    name = "Name"
    description = { path = "Care", split = "\\n", index = 0 }
    price = { path = "Price", type = "number" }
    currency = { const = "EUR" }
    metadata = { colors = { path = "Variants", pairs = {}, pick = "color", distinct = true } }
    """
    data = tomllib.loads(text)
    record = {
        "id": "A", "Name": "Tee", "Price": "9,90 €", "Categories": "Women/Tops, Sale/Summer",
        "Variants": VARIANTS, "Care": "Cotton\nWash cold",
    }  # fmt: skip
    uf = UserfluxTargetConfig.model_validate(
        {"kind": "userflux", "name": "uf", "api_key_env": "K", "type_id": "p", **data["uf"]}
    )
    payload = build_mapper(uf, "id").map(record).payload
    assert payload["properties"] == {
        "categories": ["Tops", "Summer"], "sizes": ["XS", "S"], "care": ["Cotton", "Wash cold"],
    }  # fmt: skip
    data["vb"]["mapping"]["price"]["decimal_separator"] = ","
    vb = VambeTargetConfig.model_validate(
        {"kind": "vambe", "name": "vb", "api_key_env": "K", "block_id": "b", **data["vb"]}
    )
    product = build_mapper(vb, "id").map(record).payload
    assert product["description"] == "Cotton"
    assert product["price"] == 9.9
    assert product["metadata"] == [
        {"key": "colors.0", "value": "Black"},
        {"key": "colors.1", "value": "Gray"},
    ]


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"path": "v", "split": ",", "pairs": {}}, "give split or pairs, not both"),
        ({"path": "v", "pairs": {}, "then": {"split": "/"}}, "then cuts text items"),
        ({"path": "v", "pairs": {"fields": "|"}}, "items and fields are both '|'"),
        ({"path": "v", "pairs": {"kv": ""}}, "pairs.kv"),
        ({"path": "v", "split": ""}, "split"),
        ({"path": "v", "split": []}, "split"),
        ({"path": "v", "then": {"index": 0}}, "then.split: missing"),
        ({"path": "v", "pairs": {"sep": "="}}, "pairs.sep: unknown key"),
    ],
    ids=repr,
)
def test_bad_unpacking_options_are_config_errors_with_their_toml_path(
    spec: dict[str, Any], problem: str
) -> None:
    problems = problems_of(spec)
    assert any(p.startswith("targets[0].mapping.properties.sizes") for p in problems), problems
    assert any(problem in p for p in problems), problems


# --------------------------------------------------------------------------------------
# aggregate and exclude
# --------------------------------------------------------------------------------------

PRICED_VARIANTS = [
    {"sku": "T-S", "price": "19.90"},
    {"sku": "T-M", "price": "$ 9.90"},
    {"sku": "T-L", "price": "100"},  # "100" < "19.90" as text: compared as numbers
    {"sku": "T-XL"},
]


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("min", 9.9),
        ("max", 100),
        ("sum", 129.8),
        ("count", 3),
        ("first", "19.90"),
        ("last", "100"),
        ("join", "19.90, $ 9.90, 100"),
    ],
)
def test_aggregate_reduces_picked_variant_values_to_one(how: str, expected: Any) -> None:
    assert value({"pick": "price", "aggregate": how}, PRICED_VARIANTS) == expected


def test_a_from_price_is_the_lowest_variant_price_as_a_number() -> None:
    spec = {"pick": "price", "aggregate": "min", "type": "number"}
    assert value(spec, PRICED_VARIANTS) == 9.9
    assert (
        value({**spec, "decimal_separator": ","}, [{"price": "12,50"}, {"price": "9,95"}]) == 9.95
    )


def test_aggregate_applies_to_a_split_cell_and_join_takes_its_separator() -> None:
    assert value({"split": "|", "aggregate": "max"}, "3|12|7") == 12
    assert value({"split": ",", "aggregate": "join", "join_with": " / "}, "a, b,c") == "a / b / c"


def test_aggregate_of_nothing_is_missing_and_a_required_field_rejects_it() -> None:
    assert value({"pick": "price", "aggregate": "min"}, [{"sku": "A"}]) is MISSING
    assert "missing (required)" in refusal(
        {"pick": "price", "aggregate": "min", "required": True}, [{"sku": "A"}]
    )


def test_a_variant_price_that_is_not_a_number_rejects_the_min_naming_it() -> None:
    reason = refusal({"pick": "price", "aggregate": "min"}, [{"price": "9"}, {"price": "9x"}])
    assert reason.startswith("aggregate min: item 1: not a number: '9x'")


def test_exclude_drops_placeholder_items_and_a_single_placeholder_value() -> None:
    options = [{"option": "Default Title"}, {"option": "Red"}, {"option": " Blue "}]
    assert value({"pick": "option", "exclude": ["Default Title"]}, options) == ["Red", " Blue "]
    assert value({"exclude": ["Default Title"]}, " Default Title ") is MISSING
    assert value({"pick": "option", "exclude": ["Default Title"]}, options[:1]) is MISSING


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"path": "v", "aggregate": "avg"}, "aggregate: Input should be"),
        ({"path": "v", "aggregate": "min", "index": 0}, "give index or aggregate"),
        ({"path": "v", "aggregate": "first", "type": "list"}, "can't follow it"),
        ({"path": "v", "join_with": "/"}, 'join_with needs aggregate = "join"'),
        ({"path": "v", "exclude": [" "]}, "an empty text can't be excluded"),
    ],
    ids=repr,
)
def test_bad_aggregate_options_are_config_errors_with_their_toml_path(
    spec: dict[str, Any], problem: str
) -> None:
    problems = problems_of(spec)
    assert any(p.startswith("targets[0].mapping.properties.sizes") for p in problems), problems
    assert any(problem in p for p in problems), problems


def test_a_from_price_falls_back_to_the_products_own_price_when_it_has_no_variants() -> None:
    spec = FieldSpec.model_validate(
        {
            "path": "variants",
            "pick": "price",
            "aggregate": "min",
            "type": "number",
            "fallback": ["sale", "price"],
        }
    )

    assert evaluate(spec, {"variants": [{"price": "20"}, {"price": "15"}]}) == 15
    assert evaluate(spec, {"variants": [], "sale": "", "price": "18"}) == 18
    assert evaluate(spec, {"variants": [], "sale": "16", "price": "18"}) == 16
