"""Mapping records to UserFlux and Vambe documents: values, coercions, payload shapes."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest

from syncd.config import FieldSpec, UserfluxTargetConfig, VambeTargetConfig
from syncd.errors import ConfigError, RecordError
from syncd.mapping import MISSING, build_mapper, evaluate
from syncd.values import coerce

# --------------------------------------------------------------------------------------
# Helpers and fixtures (shapes taken from real exports, values made up)
# --------------------------------------------------------------------------------------


def userflux(**mapping: Any) -> UserfluxTargetConfig:
    return UserfluxTargetConfig.model_validate(
        {"kind": "userflux", "name": "uf", "api_key_env": "UF_KEY", "type_id": "product",
         "mapping": mapping}
    )  # fmt: skip


def vambe(**mapping: Any) -> VambeTargetConfig:
    return VambeTargetConfig.model_validate(
        {"kind": "vambe", "name": "vb", "api_key_env": "VB_KEY", "block_id": "b-1",
         "mapping": mapping}
    )  # fmt: skip


def spec(value: Any) -> FieldSpec:
    return FieldSpec.model_validate({"path": value} if isinstance(value, str) else value)


def dummyjson_product() -> dict[str, Any]:
    return {
        "id": 7,
        "title": "Chanel Coco Noir Eau De",
        "description": "Coco Noir is an elegant and mysterious fragrance.",
        "category": "fragrances",
        "price": 129.99,
        "rating": 4.26,
        "stock": 41,
        "tags": ["fragrances", "perfumes"],
        "brand": "Chanel",
        "sku": "FRA-CHA-CHA-007",
        "weight": 7,
        "dimensions": {"width": 24.5, "height": 25.7, "depth": 25.9},
        "availabilityStatus": "In Stock",
        "meta": {"barcode": "1234567890123"},
        "images": ["https://cdn.example.com/7/1.webp", "https://cdn.example.com/7/2.webp"],
    }


def woocommerce_row() -> dict[str, Any]:
    return {
        "ID": "46",
        "Type": "simple",
        "SKU": "woo-hoodie-with-logo",
        "Name": "Hoodie with Logo",
        "Short description": "This is a simple product.",
        "Description": "Pellentesque habitant morbi tristique senectus et netus.",
        "Weight (lbs)": "2",
        "Sale price": "",
        "Regular price": "45",
        "Categories": "Clothing > Hoodies",
        "Images": "https://example.com/hoodie-with-logo-2.jpg, https://example.com/hoodie-2.jpg",
        "Meta: _wpcom_is_markdown": "1",
        "Attribute 1 value(s)": "Blue, Green, Red",
    }


def shopify_grouped_record() -> dict[str, Any]:
    rows = [
        {"Handle": "classic-varsity-top", "Title": "Classic Varsity Top",
         "Body (HTML)": "<p>Womens casual varsity top,\u00a0grey &amp; black.</p>",
         "Vendor": "partners-demo", "Tags": "women, varsity", "Option1 Value": "Small",
         "Variant Price": "60", "Image Src": "https://example.com/varsity.jpg"},
        {"Handle": "classic-varsity-top", "Title": "", "Option1 Value": "Medium",
         "Variant Price": "55.50", "Image Src": ""},
        {"Handle": "classic-varsity-top", "Title": "", "Option1 Value": "",
         "Variant Price": "", "Image Src": "https://example.com/varsity-back.jpg"},
    ]  # fmt: skip
    return {**rows[0], "variants": rows}


def lowest_variant_price(record: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """A mapping callable: the price is the cheapest variant's (image-only rows skipped)."""
    prices = [
        coerce(row["Variant Price"], "number")
        for row in record["variants"]
        if row.get("Variant Price")
    ]
    if not prices:
        raise ValueError("no variant has a price")
    payload.get("properties", payload)["price"] = min(prices)
    return payload


def reject_everything(record: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    raise ValueError(f"{record['id']} is discontinued")


def add_a_decimal(record: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    payload["properties"]["cost"] = Decimal("12.50")
    return payload


def hide_a_space_in_the_key(record: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    payload["id"] = payload["id"].replace("-", "-\u200b")
    return payload


def pad_the_key(record: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    payload["id"] = f"\ufeff {payload['id']} "
    return payload


def forget_the_key(record: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    del payload["id"]
    return payload


not_callable = 42


def rejection(call: Any, *args: Any) -> RecordError:
    with pytest.raises(RecordError) as caught:
        call(*args)
    return caught.value


# --------------------------------------------------------------------------------------
# Coercions
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "separator", "number"),
    [
        (12, ".", 12),
        (9.99, ".", 9.99),
        (45.0, ".", 45),
        (Decimal("240.000"), ".", 240),
        (Decimal("11.05"), ".", 11.05),
        ("240.000", ".", 240),
        (".5", ".", 0.5),
        ("0.6", ".", 0.6),
        ("1,234.50", ".", 1234.5),
        ("1,234,567", ".", 1234567),
        ("1.234,50", ",", 1234.5),
        ("240.000", ",", 240000),
        ("1 234,50", ",", 1234.5),
        ("$ 12.99", ".", 12.99),
        ("$12.99", ".", 12.99),
        ("12,99 €", ",", 12.99),
        ("USD 12.99", ".", 12.99),
        ("12.99 EUR", ".", 12.99),
        ("R$ 1.299,90", ",", 1299.9),
        ("-3", ".", -3),
        ("-$5.25", ".", -5.25),
        (" 7 ", ".", 7),
        ("12.", ".", 12),
        ("1.5e3", ".", 1500),
    ],
)
def test_number_accepts_numbers_and_price_strings(value: Any, separator: str, number: Any) -> None:
    result = coerce(value, "number", decimal_separator=separator)
    assert result == number
    assert type(result) is type(number)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "not a finite number: nan"),
        (float("inf"), "not a finite number: inf"),
        (Decimal("NaN"), "not a finite number"),
        ("NaN", "not a number: 'NaN'"),
        ("Infinity", "not a number: 'Infinity'"),
        ("-inf", "not a number: '-inf'"),
        (True, "a boolean is not a number: True"),
        ("", "not a number: ''"),
        ("abc", "not a number: 'abc'"),
        ("1.2.3", "not a number: '1.2.3'"),
        ("12,99", "not a number: '12,99' (with decimal_separator = \",\" it would be one)"),
        ([1], "not a number: [1]"),
    ],
)
def test_number_rejects_what_is_not_a_finite_number(value: Any, message: str) -> None:
    assert message in rejection(coerce, value, "number").reason


def test_a_rejected_value_is_quoted_cut_to_about_40_characters() -> None:
    reason = rejection(coerce, "garbage " * 20, "number").reason
    assert reason.startswith("not a number: 'garbage garbage")
    assert len(reason) < 70
    assert "…" in reason


@pytest.mark.parametrize(
    ("value", "integer"),
    [(12, 12), ("12", 12), (" -3 ", -3), ("1,234", 1234), (12.0, 12), (Decimal("12.000"), 12),
     ("240.000", 240), ("9007199254740992", 9007199254740992)],
)  # fmt: skip
def test_integer_accepts_exact_integers(value: Any, integer: int) -> None:
    assert coerce(value, "integer") == integer
    assert type(coerce(value, "integer")) is int


@pytest.mark.parametrize("value", [12.5, "12.5", True, float("nan"), "twelve", Decimal("0.1")])
def test_integer_rejects_what_is_not_an_exact_integer(value: Any) -> None:
    rejection(coerce, value, "integer")


@pytest.mark.parametrize(
    ("value", "boolean"),
    [(True, True), (False, False), (1, True), (0, False), ("true", True), ("FALSE", False),
     ("Yes", True), ("no", False), ("1", True), ("0", False), ("y", True), ("N", False),
     ("on", True), (" Off ", False)],
)  # fmt: skip
def test_boolean_accepts_the_usual_spellings(value: Any, boolean: bool) -> None:
    assert coerce(value, "boolean") is boolean


@pytest.mark.parametrize("value", [2, -1, 1.0, "maybe", "", "-1"])
def test_boolean_rejects_anything_else(value: Any) -> None:
    assert rejection(coerce, value, "boolean").reason.startswith("not a boolean")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("as is", "as is"),
        (42, "42"),
        (42.0, "42"),
        (9.99, "9.99"),
        (-0.5, "-0.5"),
        (True, "true"),
        (False, "false"),
        (Decimal("12.50"), "12.5"),
        (Decimal("240.000"), "240"),
        (dt.datetime(2025, 4, 30, 9, 41, tzinfo=dt.UTC), "2025-04-30T09:41:00+00:00"),
        (dt.date(2025, 4, 30), "2025-04-30"),
        (["Blue", "Green", None, ""], "Blue, Green"),
        ({"b": 1, "a": 2}, '{"a": 2, "b": 1}'),
    ],
)
def test_string_writes_values_as_text(value: Any, text: str) -> None:
    assert coerce(value, "string") == text


def test_string_rejects_a_float_that_is_not_finite() -> None:
    assert "not a finite number" in rejection(coerce, float("inf"), "string").reason


@pytest.mark.parametrize(
    ("value", "items"),
    [
        ("Blue, Green, Red", ["Blue", "Green", "Red"]),
        ("a|b | c", ["a", "b", "c"]),
        ("a,,b, ", ["a", "b"]),
        (["x", 1], ["x", 1]),
        (("x", "y"), ["x", "y"]),
        (5, [5]),
    ],
)
def test_list_keeps_lists_and_splits_strings(value: Any, items: list[Any]) -> None:
    assert coerce(value, "list") == items


@pytest.mark.parametrize("kind", ["json", None])
def test_json_and_untyped_values_pass_through_when_json_compatible(kind: Any) -> None:
    value = {"a": [1, 2.5, "x", True, None, {"b": {}}]}
    assert coerce(value, kind) is value
    converted = coerce({"price": Decimal("1.5"), "at": dt.date(2025, 1, 2), "t": (1,)}, kind)
    assert converted == {"price": 1.5, "at": "2025-01-02", "t": [1]}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"x": float("nan")}, "not a finite number"),
        ([1, float("-inf")], "not a finite number"),
        ({1, 2}, "not JSON-compatible: set"),
        (object(), "not JSON-compatible: object"),
        ({1: "a"}, "not JSON-compatible: a int key"),
    ],
)
def test_json_rejects_what_json_cannot_hold(value: Any, message: str) -> None:
    assert message in rejection(coerce, value, "json").reason


def nested(levels: int) -> Any:
    value: Any = "bottom"
    for level in range(levels):
        value = {"down": value} if level % 2 else [value]
    return value


def test_json_allows_32_levels_of_nesting_and_rejects_33() -> None:
    assert coerce(nested(32), "json") == nested(32)
    assert rejection(coerce, nested(33), "json").reason == "nested deeper than 32 levels"
    assert rejection(coerce, nested(33), None).reason == "nested deeper than 32 levels"


# --------------------------------------------------------------------------------------
# Evaluating one field spec
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("title", "Chanel Coco Noir Eau De"),
        ("dimensions.width", 24.5),
        ("images.0", "https://cdn.example.com/7/1.webp"),
        ("images.-1", "https://cdn.example.com/7/2.webp"),
        ("images.2", MISSING),
        ("meta.barcode", "1234567890123"),
        ("meta.barcode.x", MISSING),
        ("tags.first", MISSING),
        ("nope", MISSING),
        ("nope.deeper", MISSING),
    ],
)
def test_a_dotted_path_reads_nested_values_and_list_items(path: str, value: Any) -> None:
    assert evaluate(spec(path), dummyjson_product()) == value


def test_a_path_reaches_keys_that_contain_dots_or_spaces() -> None:
    record = {
        "Regular price": "45",
        "Weight (lbs.)": "2",
        "variants": [{"Variant Price": "60", "size.label": "S"}],
    }
    assert evaluate(spec("Regular price"), record) == "45"
    assert evaluate(spec("Weight (lbs.)"), record) == "2"
    assert evaluate(spec("variants.0.Variant Price"), record) == "60"
    assert evaluate(spec("variants.0.size.label"), record) == "S"


@pytest.mark.parametrize("missing", [None, "", "   ", "\u00a0"])
def test_none_and_blank_strings_count_as_missing(missing: Any) -> None:
    assert evaluate(spec("a"), {"a": missing}) is MISSING
    assert evaluate(spec({"path": "a", "default": "d"}), {"a": missing}) == "d"


def test_strings_are_stripped() -> None:
    assert evaluate(spec("a"), {"a": "  Ocean Blue Shirt "}) == "Ocean Blue Shirt"


def test_fallbacks_are_tried_in_order_then_the_default() -> None:
    price = spec({"path": "Sale price", "fallback": ["Regular price", "price"], "type": "number"})
    assert evaluate(price, woocommerce_row()) == 45
    assert evaluate(price, {"Sale price": "39.5", "Regular price": "45"}) == 39.5
    assert evaluate(price, {"price": 3}) == 3
    assert evaluate(price, {}) is MISSING
    with_default = spec({"path": "x", "fallback": ["y"], "default": "0", "type": "number"})
    assert evaluate(with_default, {}) == 0


def test_a_const_is_the_same_for_every_record() -> None:
    assert evaluate(spec({"const": "USD"}), {}) == "USD"
    assert evaluate(spec({"const": 3, "type": "string"}), {"x": 1}) == "3"


def test_a_const_that_cannot_be_coerced_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"currency.*const 'abc': not a number"):
        build_mapper(vambe(currency={"const": "abc", "type": "number"}), "id")


def test_a_template_fills_placeholders_from_dotted_paths() -> None:
    template = spec({"template": "{title} by {brand} ({dimensions.width:.0f} cm, {tags.0})"})
    expected = "Chanel Coco Noir Eau De by Chanel (24 cm, fragrances)"
    assert evaluate(template, dummyjson_product()) == expected
    assert evaluate(spec({"template": "{a}/{b}"}), {"a": 42.0, "b": True}) == "42/true"


def test_a_missing_placeholder_rejects_the_record_naming_it() -> None:
    record = dummyjson_product()
    del record["brand"]
    reason = rejection(evaluate, spec({"template": "{title} by {brand}"}), record).reason
    assert reason == "template placeholder {brand} is missing"


def test_a_missing_placeholder_falls_back_then_to_the_default() -> None:
    record = {"title": "Basil"}
    byline = "{title} by {brand}"
    assert evaluate(spec({"template": byline, "fallback": ["title"]}), record) == "Basil"
    assert evaluate(spec({"template": byline, "default": "n/a"}), record) == "n/a"
    assert evaluate(spec({"template": byline, "default": ""}), record) is MISSING


def test_a_bad_template_is_a_config_error_at_build() -> None:
    with pytest.raises(ConfigError, match=r"target 'uf' mapping\.properties\.label.*bad template"):
        build_mapper(userflux(properties={"label": {"template": "{title"}}), "id")


def test_required_and_missing_rejects_the_record() -> None:
    required = spec({"path": "x", "required": True})
    assert rejection(evaluate, required, {}).reason == "missing (required)"
    assert rejection(evaluate, required, {"x": " "}).reason == "missing (required)"
    typed = spec({"path": "x", "required": True, "type": "number"})
    assert rejection(evaluate, typed, {"x": ""}).reason == "missing (required)"
    with_fallback = spec({"path": "x", "fallback": ["y"], "required": True})
    assert rejection(evaluate, with_fallback, {}).reason == "missing (required)"


def test_html_becomes_text_before_the_type_and_the_length() -> None:
    body = spec({"path": "Body (HTML)", "html": True, "max_length": 30})
    assert evaluate(body, shopify_grouped_record()) == "Womens casual varsity top,"
    assert evaluate(spec({"path": "d", "html": True}), {"d": "<p> </p>"}) is MISSING


def test_max_length_cuts_strings_on_a_word_boundary() -> None:
    record = {"d": "Coco Noir is an elegant and mysterious fragrance."}
    assert evaluate(spec({"path": "d", "max_length": 20}), record) == "Coco Noir is an"
    assert evaluate(spec({"path": "d", "max_length": 4}), {"d": "Supercalifragilistic"}) == "Supe"


def test_index_picks_one_item_of_a_comma_list() -> None:
    image = spec({"path": "Images", "type": "list", "index": 0})
    assert evaluate(image, woocommerce_row()) == "https://example.com/hoodie-with-logo-2.jpg"
    assert evaluate(spec({"path": "x", "type": "list", "index": 3}), {"x": "a, b"}) is MISSING


def test_a_list_that_splits_into_nothing_is_missing() -> None:
    assert evaluate(spec({"path": "tags", "type": "list"}), {"tags": " , |"}) is MISSING


def test_untyped_values_are_made_json_compatible() -> None:
    record = {"cost": Decimal("3.10"), "at": dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)}
    assert evaluate(spec("cost"), record) == 3.1
    assert evaluate(spec("at"), record) == "2025-01-02T03:04:05+00:00"
    assert "not a finite number" in rejection(evaluate, spec("x"), {"x": float("nan")}).reason


# --------------------------------------------------------------------------------------
# UserFlux documents
# --------------------------------------------------------------------------------------


def test_a_userflux_document_carries_id_type_and_properties() -> None:
    mapper = build_mapper(
        userflux(
            properties={
                "title": "title",
                "description.full": {"path": "description"},
                "description.short": {"template": "{title} ({category})"},
                "price": {"path": "price", "type": "number"},
                "brand": "brand",
                "stock": {"path": "stock", "type": "integer"},
                "tags": "tags",
                "image": "images.0",
                "colour": "colour",
            }
        ),
        "id",
    )
    document = mapper.map(dummyjson_product())
    assert document.key == "7"
    assert document.payload == {
        "id": "7",
        "typeId": "product",
        "properties": {
            "title": "Chanel Coco Noir Eau De",
            "description": {
                "full": "Coco Noir is an elegant and mysterious fragrance.",
                "short": "Chanel Coco Noir Eau De (fragrances)",
            },
            "price": 129.99,
            "brand": "Chanel",
            "stock": 41,
            "tags": ["fragrances", "perfumes"],
            "image": "https://cdn.example.com/7/1.webp",
        },
    }
    assert "aiPropertyOverrides" not in document.payload
    assert json.loads(document.canonical) == document.payload


def test_missing_optional_properties_are_omitted_not_sent_as_null() -> None:
    mapper = build_mapper(userflux(properties={"a.b": "x", "a.c": "y", "d": "z"}), "id")
    assert mapper.map({"id": 1}).payload["properties"] == {}
    assert mapper.map({"id": 1, "y": 2}).payload["properties"] == {"a": {"c": 2}}


def test_ai_property_overrides_are_sent_only_when_there_are_some_and_stay_flat() -> None:
    mapper = build_mapper(
        userflux(
            ai_property_overrides={"description.summary": "summary", "tone": {"const": "warm"}}
        ),
        "id",
    )
    assert mapper.map({"id": 1, "summary": "Short."}).payload["aiPropertyOverrides"] == {
        "description.summary": "Short.",
        "tone": "warm",
    }
    mapper = build_mapper(userflux(ai_property_overrides={"description.summary": "summary"}), "id")
    assert "aiPropertyOverrides" not in mapper.map({"id": 1}).payload


def test_property_names_that_collide_are_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        build_mapper(userflux(properties={"a": "x", "a.b": "y", "c..d": "z"}), "id")
    message = str(caught.value)
    assert "'a' and 'a.b' collide" in message
    assert "bad name 'c..d'" in message


@pytest.mark.parametrize(
    ("value", "key"),
    [(42, "42"), (42.0, "42"), ("  sku-1 ", "sku-1"), (Decimal("7"), "7"), ("Ü-1", "Ü-1"),
     (4e3, "4000"), (Decimal("7.00"), "7"), (2.5, "2.5"), ("\ufeffsku-1", "sku-1"),
     (" \ufeff sku-1", "sku-1"), ("U\u0308-1", "Ü-1")],
)  # fmt: skip
def test_the_key_is_the_source_key_as_a_string(value: Any, key: str) -> None:
    document = build_mapper(userflux(), "meta.id").map({"meta": {"id": value}})
    assert document.key == key
    assert document.payload == {"id": key, "typeId": "product", "properties": {}}


@pytest.mark.parametrize("record", [{}, {"id": None}, {"id": "  "}, {"id": ""}])
def test_a_record_without_a_key_is_rejected(record: dict[str, Any]) -> None:
    error = rejection(build_mapper(userflux(), "id").map, record)
    assert (error.reason, error.key, error.field) == ("missing key", None, "id")


def test_a_key_longer_than_512_characters_is_rejected() -> None:
    mapper = build_mapper(userflux(), "id")
    assert mapper.map({"id": "k" * 512}).key == "k" * 512
    assert "longer than 512" in rejection(mapper.map, {"id": "k" * 513}).reason


@pytest.mark.parametrize(
    ("make", "label"), [(userflux, "id"), (vambe, "external_id")], ids=["userflux", "vambe"]
)
@pytest.mark.parametrize(
    ("value", "twin"),
    [
        ("sku-\u200b1", "sku-1"),
        ("sku-1\ufeff", "sku-1"),
        ("sku\t1", "sku1"),
        ("sku\u00a01", "sku 1"),
    ],
    ids=repr,
)
def test_a_key_with_an_invisible_character_is_rejected_keeping_its_visible_twin(
    make: Any, label: str, value: str, twin: str
) -> None:
    error = rejection(build_mapper(make(), "id").map, {"id": value, "price": 5})
    field, reason = error.problems[0]  # Vambe's missing fields are listed after the key
    assert (error.key, field) == (twin, label)
    assert reason.startswith(f"the key {value!r} holds invisible or control characters")
    assert value in error.also_keys


def test_a_template_key_with_an_invisible_character_is_rejected() -> None:
    mapper = build_mapper(userflux(key={"template": "woo-{ID}"}), "SKU")
    error = rejection(mapper.map, {"ID": "4\u200b6"})
    assert (error.key, error.field) == ("woo-46", "id")


def test_a_key_the_callable_hides_a_character_in_is_rejected_keeping_its_visible_twin() -> None:
    mapper = build_mapper(userflux(callable="tests.test_mapping:hide_a_space_in_the_key"), "id")
    error = rejection(mapper.map, {"id": "sku-1"})
    assert (error.key, error.field) == ("sku-1", "id")
    assert "U+200B ZERO WIDTH SPACE" in error.reason


def test_a_key_the_callable_pads_is_normalised_like_any_other() -> None:
    mapper = build_mapper(userflux(callable="tests.test_mapping:pad_the_key"), "id")
    document = mapper.map({"id": "sku-1"})
    assert document.key == document.payload["id"] == "sku-1"


@pytest.mark.parametrize("value", [True, 1e17, float("nan")], ids=repr)
def test_a_key_that_is_not_stable_text_is_rejected(value: Any) -> None:
    error = rejection(build_mapper(userflux(), "id").map, {"id": value})
    assert (error.key, error.field) == (None, "id")


@pytest.mark.parametrize(
    ("price", "reason"),
    [
        ("\u0661\u0662\u0663", "not a number: '\u0661\u0662\u0663'"),
        ("5e-400", "'5e-400' can't be sent exactly: a JSON number holds 0.0"),
        ("123456789012345678901234567890", "can't be sent exactly"),
        (Decimal("0.1000000000000000000001"), "can't be sent exactly"),
        ("1_000", "not a number: '1_000'"),
    ],
    ids=repr,
)
def test_a_price_that_only_looks_numeric_is_rejected_naming_key_and_field(
    price: Any, reason: str
) -> None:
    mapper = build_mapper(userflux(properties={"price": {"path": "price", "type": "number"}}), "id")
    error = rejection(mapper.map, {"id": "3", "price": price})
    assert (error.key, error.field) == ("3", "properties.price")
    assert reason in error.reason
    record = {"id": "3", "name": "n", "description": "d", "currency": "USD", "price": price}
    vambe_error = rejection(build_mapper(vambe(), "id").map, record)
    assert (vambe_error.key, vambe_error.field) == ("3", "price")
    assert reason in vambe_error.reason


def test_the_mapping_key_overrides_the_source_key() -> None:
    mapper = build_mapper(userflux(key={"template": "woo-{ID}"}), "SKU")
    assert mapper.map(woocommerce_row()).key == "woo-46"


def test_a_rejection_names_the_key_and_the_document_field() -> None:
    mapper = build_mapper(userflux(properties={"price": {"path": "price", "type": "number"}}), "id")
    error = rejection(mapper.map, {"id": 3, "price": "call us"})
    assert (error.key, error.field) == ("3", "properties.price")
    assert str(error) == "properties.price: not a number: 'call us'"


def test_a_rejection_lists_every_failing_field_of_the_record_in_order() -> None:
    mapper = build_mapper(
        userflux(properties={"price": {"path": "price", "type": "number"},
                             "stock": {"path": "stock", "type": "integer"},
                             "name": {"path": "title", "required": True},
                             "brand": "brand"}),
        "id",
    )  # fmt: skip

    error = rejection(mapper.map, {"id": "P3", "price": "abc", "stock": "1.5", "brand": "B"})

    assert error.key == "P3"
    assert error.problems == (
        ("properties.price", "not a number: 'abc'"),
        ("properties.stock", "not an integer: '1.5'"),
        ("properties.name", "missing (required)"),
    )
    assert str(error) == (
        "properties.price: not a number: 'abc'; properties.stock: not an integer: '1.5';"
        " properties.name: missing (required)"
    )


def test_vambe_lists_every_missing_and_unusable_field_at_once() -> None:
    mapper = build_mapper(vambe(metadata={"size": {"path": "size", "type": "integer"}}), "id")

    error = rejection(mapper.map, {"id": "P3", "price": "12,99 €uro", "size": "XL"})

    assert error.key == "P3"
    fields = [field for field, _ in error.problems]
    assert fields == ["name", "description", "price", "metadata.size"]  # currency: USD default


def test_a_keyless_record_lists_its_key_problem_and_the_others() -> None:
    mapper = build_mapper(userflux(properties={"price": {"path": "price", "type": "number"}}), "id")

    error = rejection(mapper.map, {"price": "abc"})

    assert error.key is None
    assert str(error) == "id: missing key; properties.price: not a number: 'abc'"


def test_a_woocommerce_csv_row_maps_with_its_literal_headers() -> None:
    mapper = build_mapper(
        userflux(
            key="SKU",
            properties={
                "name": "Name",
                "price": {"path": "Sale price", "fallback": ["Regular price"], "type": "number"},
                "weight_lbs": {"path": "Weight (lbs)", "type": "number"},
                "markdown": {"path": "Meta: _wpcom_is_markdown", "type": "boolean"},
                "colours": {"path": "Attribute 1 value(s)", "type": "list"},
            },
        ),
        "ID",
    )
    document = mapper.map(woocommerce_row())
    assert document.key == "woo-hoodie-with-logo"
    assert document.payload["properties"] == {
        "name": "Hoodie with Logo",
        "price": 45,
        "weight_lbs": 2,
        "markdown": True,
        "colours": ["Blue", "Green", "Red"],
    }


# --------------------------------------------------------------------------------------
# The callable escape hatch
# --------------------------------------------------------------------------------------


def test_a_shopify_grouped_record_maps_its_first_variant_and_the_lowest_price() -> None:
    properties = {
        "title": "Title",
        "body": {"path": "Body (HTML)", "html": True},
        "first_price": {"path": "variants.0.Variant Price", "type": "number"},
        "tags": {"path": "Tags", "type": "list"},
    }
    mapper = build_mapper(
        userflux(properties=properties, callable="tests.test_mapping:lowest_variant_price"),
        "Handle",
    )
    document = mapper.map(shopify_grouped_record())
    assert document.key == "classic-varsity-top"
    assert document.payload["properties"] == {
        "title": "Classic Varsity Top",
        "body": "Womens casual varsity top, grey & black.",
        "first_price": 60,
        "tags": ["women", "varsity"],
        "price": 55.5,
    }


def test_the_callable_rejects_a_record_with_its_message() -> None:
    mapper = build_mapper(userflux(callable="tests.test_mapping:reject_everything"), "id")
    error = rejection(mapper.map, {"id": 9})
    assert (error.reason, error.key) == ("9 is discontinued", "9")


def test_what_the_callable_returns_is_made_json_compatible_and_keyed() -> None:
    mapper = build_mapper(userflux(callable="tests.test_mapping:add_a_decimal"), "id")
    assert mapper.map({"id": 1}).payload["properties"] == {"cost": 12.5}
    mapper = build_mapper(userflux(callable="tests.test_mapping:forget_the_key"), "id")
    error = rejection(mapper.map, {"id": 1})
    assert (error.reason, error.field) == ("missing key", "id")


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("tests.no_such_module:f", "cannot import 'tests.no_such_module:f' (ModuleNotFoundError"),
        ("tests.test_mapping:no_such_function", "(AttributeError"),
        ("tests.test_mapping:not_callable", "is not callable"),
        ("no_colon", "expected 'module:function'"),
    ],
)
def test_a_callable_that_cannot_be_imported_is_a_config_error(reference: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_mapper(userflux(callable=reference), "id")
    assert "target 'uf' mapping.callable: " in str(caught.value)
    assert message in str(caught.value)


# --------------------------------------------------------------------------------------
# Vambe products
# --------------------------------------------------------------------------------------


def test_a_vambe_product_has_every_field_of_the_contract() -> None:
    mapper = build_mapper(
        vambe(name="title", sku="sku", file_url="images.0", currency={"const": "usd"}), "id"
    )
    assert mapper.map(dummyjson_product()).payload == {
        "external_id": "7",
        "name": "Chanel Coco Noir Eau De",
        "description": "Coco Noir is an elegant and mysterious fragrance.",
        "price": 129.99,
        "currency": "USD",
        "type": "vambe",
        "metadata": [],
        "sku": "FRA-CHA-CHA-007",
        "file_url": "https://cdn.example.com/7/1.webp",
    }


def test_vambe_cleans_description_and_price_from_a_shopify_record() -> None:
    mapper = build_mapper(
        vambe(
            name="Title",
            description={"path": "Body (HTML)", "html": True, "max_length": 35},
            price="variants.0.Variant Price",
            currency={"const": "clp"},
        ),
        "Handle",
    )
    payload = mapper.map(shopify_grouped_record()).payload
    assert payload["description"] == "Womens casual varsity top, grey &"
    assert payload["price"] == 60
    assert payload["currency"] == "CLP"
    assert "file_url" not in payload and "sku" not in payload


def test_vambe_keeps_contract_checks_for_the_target_but_rejects_missing_fields() -> None:
    mapper = build_mapper(vambe(name="title", description="d"), "id")
    payload = mapper.map({"id": 1, "title": "Free", "d": "x", "price": "0"}).payload
    assert payload["price"] == 0  # price > 0 is the Vambe target's rule, not the mapping's
    error = rejection(mapper.map, {"id": 1, "title": "No price", "d": "x"})
    assert (error.reason, error.key, error.field) == ("missing (required)", "1", "price")


def test_vambe_metadata_is_flattened_stringified_and_ordered_as_configured() -> None:
    mapper = build_mapper(
        vambe(name="title", metadata=["weight", "dimensions", "tags", "brand", "missing", "meta"]),
        "id",
    )
    record = {**dummyjson_product(), "meta": {"flags": {"new": True, "sale": None}, "n": 5.0}}
    assert mapper.map(record).payload["metadata"] == [
        {"key": "weight", "value": "7"},
        {"key": "dimensions.depth", "value": "25.9"},
        {"key": "dimensions.height", "value": "25.7"},
        {"key": "dimensions.width", "value": "24.5"},
        {"key": "tags.0", "value": "fragrances"},
        {"key": "tags.1", "value": "perfumes"},
        {"key": "brand", "value": "Chanel"},
        {"key": "meta.flags.new", "value": "true"},
        {"key": "meta.n", "value": "5"},
    ]


def test_vambe_metadata_by_label_uses_field_specs() -> None:
    mapper = build_mapper(
        vambe(
            name="title",
            metadata={
                "Brand": "brand",
                "In stock": {"path": "stock", "type": "boolean", "default": False},
                "Cost": {"path": "cost"},
                "Summary": {"template": "{category} / {availabilityStatus}"},
            },
        ),
        "id",
    )
    record = {**dummyjson_product(), "stock": 0, "cost": Decimal("3.10")}
    assert mapper.map(record).payload["metadata"] == [
        {"key": "Brand", "value": "Chanel"},
        {"key": "In stock", "value": "false"},
        {"key": "Cost", "value": "3.1"},
        {"key": "Summary", "value": "fragrances / In Stock"},
    ]


def test_vambe_metadata_rejects_a_value_that_is_not_finite() -> None:
    mapper = build_mapper(vambe(name="title", metadata=["rating"]), "id")
    error = rejection(mapper.map, {**dummyjson_product(), "rating": float("nan")})
    assert (error.field, error.key) == ("metadata.rating", "7")


def test_a_saleor_like_price_string_becomes_a_number() -> None:
    mapper = build_mapper(vambe(price="price_amount", currency="currency"), "pk")
    record = {"pk": 72, "name": "Monospace Tee", "description": "A tee.", "price_amount": "240.000",
              "currency": "pln"}  # fmt: skip
    payload = mapper.map(record).payload
    assert (payload["price"], payload["currency"]) == (240, "PLN")


# --------------------------------------------------------------------------------------
# Hash stability
# --------------------------------------------------------------------------------------


def reordered(value: Any) -> Any:
    if isinstance(value, dict):
        return {name: reordered(value[name]) for name in reversed(list(value))}
    return value


@pytest.mark.parametrize(
    "target",
    [
        userflux(properties={"title": "title", "dims": "dimensions", "meta.code": "meta.barcode"}),
        vambe(name="title", metadata=["dimensions", "tags", "meta"]),
    ],
    ids=["userflux", "vambe"],
)
def test_the_same_record_hashes_the_same_whatever_its_key_order(target: Any) -> None:
    mapper = build_mapper(target, "id")
    first = mapper.map(dummyjson_product())
    assert mapper.map(dummyjson_product()).hash == first.hash
    assert mapper.map(reordered(dummyjson_product())).hash == first.hash
    changed = {**dummyjson_product(), "dimensions": {"width": 1.0, "height": 25.7, "depth": 25.9}}
    assert mapper.map(changed).hash != first.hash


def test_equal_numbers_written_differently_hash_the_same() -> None:
    mapper = build_mapper(userflux(properties={"price": {"path": "p", "type": "number"}}), "id")
    hashes = {mapper.map({"id": 1, "p": p}).hash for p in (45, 45.0, "45.000", Decimal("45"))}
    assert len(hashes) == 1


@pytest.mark.parametrize(
    "digits", [str(2**53 + 1), "12345678901234567890", "9" * 30, "9" * 5000, "1e5000"]
)
def test_an_integer_a_double_cant_hold_is_rejected_not_rounded_by_the_target(digits) -> None:
    with pytest.raises(RecordError, match=r"can't be sent exactly|too large for an integer"):
        coerce(digits, "integer")
    assert coerce(str(2**53), "integer") == 2**53


def test_a_huge_integer_is_rejected_naming_the_key_and_field_instead_of_crashing() -> None:
    mapper = build_mapper(userflux(properties={"n": {"path": "n", "type": "integer"}}), "id")
    error = rejection(mapper.map, {"id": 1, "n": "9" * 5000})
    assert error.key == "1"
    assert "properties.n: too large for an integer" in str(error)
