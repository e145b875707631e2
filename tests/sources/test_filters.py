"""``where`` filters: the old forms, every operator, and validation at config load."""

from __future__ import annotations

from typing import Any

import pytest

from syncd.config import parse_config
from syncd.errors import ConfigError, RecordError
from syncd.model import UnreadableRow
from syncd.sources.base import compile_where, filter_records


def passes(where: dict[str, Any], record: dict[str, Any]) -> bool:
    return compile_where(parse_config(config_with(where), environ={"K": "x"}).source.where)(record)


def config_with(where: Any, target_where: Any = None) -> dict[str, Any]:
    target: dict[str, Any] = {"kind": "userflux", "name": "uf", "api_key_env": "K", "type_id": "p"}
    if target_where is not None:
        target["where"] = target_where
    return {"source": {"kind": "file", "path": "c.jsonl", "where": where}, "targets": [target]}


def problems_of(where: Any, target_where: Any = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(where, target_where), environ={"K": "x"})
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("where", "record", "kept"),
    [
        # the old forms: a value, a list of values
        ({"status": "publish"}, {"status": "publish"}, True),
        ({"status": "publish"}, {"status": "draft"}, False),
        ({"status": ["publish", "private"]}, {"status": "private"}, True),
        ({"status": ["publish", "private"]}, {"status": "draft"}, False),
        ({"meta.brand": "acme"}, {"meta": {"brand": "acme"}}, True),
        # eq / ne
        ({"status": {"eq": "publish"}}, {"status": "publish"}, True),
        ({"brand": {"ne": ""}}, {"brand": "acme"}, True),
        ({"brand": {"ne": ""}}, {"brand": ""}, False),
        ({"brand": {"ne": "acme"}}, {}, True),
        # in / not in
        ({"category": {"in": ["a", "b"]}}, {"category": "b"}, True),
        ({"category": {"not_in": ["parts", ""]}}, {"category": "shirts"}, True),
        ({"category": {"not_in": ["parts", ""]}}, {"category": "parts"}, False),
        ({"category": {"not_in": ["parts", ""]}}, {"category": ""}, False),
        # missing / present
        ({"discontinued": {"missing": True}}, {}, True),
        ({"discontinued": {"missing": True}}, {"discontinued": None}, True),
        ({"discontinued": {"missing": True}}, {"discontinued": "  "}, True),
        ({"discontinued": {"missing": True}}, {"discontinued": []}, True),
        ({"discontinued": {"missing": True}}, {"discontinued": "2024-01-01"}, False),
        ({"discontinued": {"missing": False}}, {"discontinued": "yes"}, True),
        ({"image": {"present": True}}, {"image": "a.jpg"}, True),
        ({"image": {"present": True}}, {"image": ""}, False),
        ({"image": {"present": False}}, {}, True),
        # numeric comparisons, on numbers and texts of numbers
        ({"price": {"gt": 0}}, {"price": 12.5}, True),
        ({"price": {"gt": 0}}, {"price": 0}, False),
        ({"price": {"gt": 0}}, {"price": "12.50"}, True),
        ({"price": {"gt": 0}}, {"price": " 0.00 "}, False),
        ({"price": {"ge": 0}}, {"price": "0"}, True),
        ({"price": {"lt": 10}}, {"price": "9.99"}, True),
        ({"price": {"le": 10}}, {"price": 10}, True),
        ({"price": {"le": 10}}, {"price": 10.01}, False),
        ({"price": {"gt": 0, "le": 100}}, {"price": 150}, False),
        # numbers read as type = "number" reads them: currency signs, thousands groups
        ({"price": {"gt": 0}}, {"price": "$12"}, True),
        ({"price": {"gt": 1000}}, {"price": "1,299.00 EUR"}, True),
        ({"price": {"gt": 1000, "decimal_separator": ","}}, {"price": "1.234,50"}, True),
        ({"price": {"lt": 13, "decimal_separator": ","}}, {"price": "12,50"}, True),
        # a missing value never matches a comparison
        ({"price": {"lt": 10}}, {"price": ""}, False),
        ({"price": {"lt": 10}}, {}, False),
        # regular expressions search texts (anchor them to match whole)
        ({"sku": {"regex": "^A-"}}, {"sku": "A-100"}, True),
        ({"sku": {"regex": "^A-"}}, {"sku": "B-A-100"}, False),
        ({"sku": {"regex": "X"}}, {"sku": "aXb"}, True),
        ({"sku": {"regex": "^1"}}, {"sku": 123}, True),
        ({"sku": {"regex": "."}}, {}, False),
        # a text equals the number or boolean it spells (CSV cells are text)
        ({"stock": 0}, {"stock": "0"}, True),
        ({"stock": {"ne": 0}}, {"stock": "0.0"}, False),
        ({"published": True}, {"published": "yes"}, True),
        ({"published": True}, {"published": "0"}, False),
        ({"code": "1"}, {"code": "001"}, False),
        # every field must pass
        ({"status": "publish", "price": {"gt": 0}}, {"status": "publish", "price": 0}, False),
    ],
)
def test_a_record_is_kept_only_when_every_condition_holds(
    where: dict[str, Any], record: dict[str, Any], kept: bool
) -> None:
    assert passes(where, record) is kept


def test_unreadable_rows_pass_through_the_filter_to_fail_the_read() -> None:
    bad = UnreadableRow("line 2", "not JSON")
    items = [{"price": "0"}, bad, {"price": "5"}]

    kept = list(filter_records(items, {"price": {"gt": 0}}))

    assert kept == [bad, {"price": "5"}]


def test_every_bad_condition_is_reported_at_once_with_its_toml_path() -> None:
    problems = problems_of(
        {
            "price": {"gt": "cheap"},
            "sku": {"regex": "(["},
            "brand": {"like": "a%"},
            "stock": {"missing": "yes"},
            "category": {"not_in": "parts"},
            "tags": {},
        },
        target_where={"price": {"lt": [1]}},
    )

    assert any(p.startswith("source.where.price: gt: wants a number") for p in problems)
    assert any(p.startswith("source.where.sku: regex: bad regular expression") for p in problems)
    assert any(p.startswith("source.where.brand: unknown operator 'like'") for p in problems)
    assert any(p.startswith("source.where.stock: missing: wants true or false") for p in problems)
    assert any(p.startswith("source.where.category: not_in: wants a list") for p in problems)
    assert any(p.startswith("source.where.tags: an empty table tests nothing") for p in problems)
    assert any(p.startswith("targets[0].where.price: lt: wants a number") for p in problems)
    assert len(problems) == 7


def test_a_boolean_is_not_a_number_to_compare_with() -> None:
    assert problems_of({"price": {"gt": True}}) == [
        "source.where.price: gt: wants a number, got True"
    ]


def test_a_changed_filter_changes_the_config_it_is_part_of() -> None:
    first = parse_config(config_with({"price": {"gt": 0}}), environ={"K": "x"})
    second = parse_config(config_with({"price": {"gt": 1}}), environ={"K": "x"})

    assert first.source.model_dump_json() != second.source.model_dump_json()
    assert '"where":{"price":{"gt":0}}' in first.source.model_dump_json()


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ({"gt": 0}, "59.9x"),
        ({"gt": 0}, "1.234,50"),  # a decimal comma without decimal_separator = ","
        ({"lt": 10, "decimal_separator": ","}, "12.5.0"),
        ({"lt": 10}, True),
        ({"lt": 10}, "nan"),
        ({"ge": 1}, ["1", "2"]),
    ],
)
def test_a_comparison_on_a_present_value_that_is_not_a_number_raises_naming_the_field(
    where: dict[str, Any], value: Any
) -> None:
    with pytest.raises(RecordError) as caught:
        passes({"price": where}, {"price": value})

    assert caught.value.field == "price"


def test_a_record_source_where_can_not_test_is_an_unreadable_row_named_by_its_key() -> None:
    where = parse_config(config_with({"price": {"gt": 0}}), environ={"K": "x"}).source.where
    records = [{"id": "A", "price": "5"}, {"id": "B", "price": "59.9x"}, {"id": "C", "price": "0"}]

    items = list(filter_records(records, where, "id"))

    assert items[0] == {"id": "A", "price": "5"}
    (row,) = items[1:]
    assert isinstance(row, UnreadableRow)
    assert row.place == "product 'B'"
    assert "price: not a number: '59.9x'" in row.reason


def test_decimal_separator_alone_tests_nothing_and_must_be_a_dot_or_a_comma() -> None:
    assert any("no test" in p for p in problems_of({"price": {"decimal_separator": ","}}))
    assert any(
        "decimal_separator" in p
        for p in problems_of({"price": {"gt": 0, "decimal_separator": ";"}})
    )
