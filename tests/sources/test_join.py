"""Variant rows folded into their parent wherever they are in the read (``source.variant``)."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.config import parse_config
from syncd.errors import ConfigError, SourceError
from syncd.model import UnreadableRow
from syncd.reconcile import Reconciler, mapping_fingerprint
from syncd.sandbox import FakeUserflux
from syncd.sources import open_source, read_catalog
from syncd.sources.join import join_variants
from syncd.state import open_store
from tests.support import ENV, FAST_RETRY, KEY, write_jsonl

HEADER = ["sku", "name", "size", "color", "price", "parent_sku", "variants"]


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HEADER, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({name: row.get(name, "") for name in HEADER})
    path.write_text(out.getvalue(), encoding="utf-8")


def config_for(path: Path, **variant: Any) -> Any:
    raw = {
        "source": {"kind": "file", "path": str(path), "key": "sku", "variant": variant},
        "targets": [
            {"name": "uf", "kind": "userflux", "api_key_env": "UF_KEY", "type_id": "product"}
        ],
    }
    return parse_config(raw, environ=ENV)


def read(path: Path, **variant: Any) -> list[Any]:
    config = config_for(path, **variant)
    return list(read_catalog(open_source(config.source), config.source))


def products(items: list[Any]) -> dict[str, dict[str, Any]]:
    return {item["sku"]: item for item in items if isinstance(item, dict)}


def unreadable(items: list[Any]) -> list[UnreadableRow]:
    return [item for item in items if isinstance(item, UnreadableRow)]


# A jacket whose variant rows come before it, a plain product, then a shirt whose
# variants are split around it and around the jacket.
BY_PARENT = [
    {"sku": "J-S-BLK", "size": "S", "color": "Black", "price": "50", "parent_sku": "J"},
    {"sku": "S-M-RED", "size": "M", "color": "Red", "price": "20", "parent_sku": "S"},
    {"sku": "J-M-BLK", "size": "M", "color": "Black", "price": "50", "parent_sku": "J"},
    {"sku": "J", "name": "Jacket"},
    {"sku": "P", "name": "Plain", "price": "5"},
    {"sku": "J-S-GRY", "size": "S", "color": "Gray", "price": "55", "parent_sku": "J"},
    {"sku": "S", "name": "Shirt"},
]


def test_variant_rows_before_and_after_their_parent_are_folded_into_it_by_parent_key(
    tmp_path: Path,
):
    write_csv(tmp_path / "c.csv", BY_PARENT)

    items = read(tmp_path / "c.csv", parent_key="parent_sku")

    assert unreadable(items) == []
    assert [item["sku"] for item in items] == ["J", "P", "S"]  # the parents' read order
    jacket = products(items)["J"]
    # variants ordered by their own sku, not the file's order (stable across exports)
    assert [v["sku"] for v in jacket["variants"]] == ["J-M-BLK", "J-S-BLK", "J-S-GRY"]
    assert jacket["variants"][2]["price"] == "55"
    assert products(items)["P"]["variants"] == []
    assert [v["sku"] for v in products(items)["S"]["variants"]] == ["S-M-RED"]


def test_distinct_variant_values_become_lists_on_the_folded_product(tmp_path: Path):
    write_csv(tmp_path / "c.csv", BY_PARENT)

    named = products(
        read(
            tmp_path / "c.csv",
            parent_key="parent_sku",
            distinct={"sizes": "size", "colors": "color"},
        )
    )
    listed = products(
        read(tmp_path / "c.csv", parent_key="parent_sku", into="items", distinct=["size"])
    )

    assert named["J"]["sizes"] == ["M", "S"]  # in the variants' (sku) order
    assert named["J"]["colors"] == ["Black", "Gray"]
    assert named["P"]["sizes"] == []
    assert listed["J"]["items_size"] == ["M", "S"]
    assert len(listed["J"]["items"]) == 3


def test_a_parent_matched_by_another_field_than_the_key_gets_its_variants(tmp_path: Path):
    rows = [
        {"sku": "10", "name": "Mug red", "color": "Red", "parent_sku": "mug"},
        {"sku": "11", "name": "mug"},
    ]
    write_csv(tmp_path / "c.csv", rows)

    items = read(tmp_path / "c.csv", parent_key="parent_sku", match="name")

    assert [(p["sku"], [v["sku"] for v in p["variants"]]) for p in items] == [("11", ["10"])]


PACKED = [
    {"sku": "A-XS-Black", "size": "XS", "color": "Black", "price": "30"},
    {"sku": "A-XS-Gray", "size": "XS", "price": "31"},
    {"sku": "B", "name": "Socks", "price": "4"},
    {
        "sku": "A",
        "name": "Anorak",
        "variants": "sku=A-XS-Black,size=XS,color=Black|sku=A-XS-Gray,size=XS,color=Gray"
        "|sku=A-M-Gray,size=M,color=Gray, light",
    },
]


def test_a_packed_list_folds_the_rows_it_names_wherever_they_are(tmp_path: Path):
    write_csv(tmp_path / "c.csv", PACKED)

    items = read(tmp_path / "c.csv", listed_in="variants", distinct={"colors": "color"})

    assert unreadable(items) == []
    assert [item["sku"] for item in items] == ["B", "A"]  # listed rows are no products
    anorak = products(items)["A"]
    assert [v["sku"] for v in anorak["variants"]] == ["A-XS-Black", "A-XS-Gray", "A-M-Gray"]
    gray = anorak["variants"][1]
    assert (gray["price"], gray["color"]) == ("31", "Gray")  # the row, pairs filling gaps
    assert anorak["variants"][2] == {"sku": "A-M-Gray", "size": "M", "color": "Gray, light"}
    assert anorak["colors"] == ["Black", "Gray", "Gray, light"]


def test_a_plain_list_of_keys_with_other_separators_folds_the_rows_it_names(tmp_path: Path):
    rows = [
        {"sku": "K-1", "size": "1"},
        {"sku": "K", "name": "Kit", "variants": " K-1 ; K-2 "},
        {"sku": "K-2", "size": "2"},
    ]
    write_csv(tmp_path / "c.csv", rows)

    items = read(tmp_path / "c.csv", listed_in="variants", separator=";", distinct=["size"])

    assert [item["sku"] for item in items] == ["K"]
    assert [v["sku"] for v in items[0]["variants"]] == ["K-1", "K-2"]
    assert items[0]["variants_size"] == ["1", "2"]


def test_a_json_list_of_variant_objects_folds_like_a_packed_cell(tmp_path: Path):
    write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"sku": "V1", "stock": 3},
            {"sku": "T", "options": [{"code": "V1", "size": "L"}, "V2"]},
        ],
    )

    items = read(tmp_path / "c.jsonl", listed_in="options", listed_key="code")

    (tee,) = items
    assert tee["variants"] == [{"sku": "V1", "stock": 3, "code": "V1", "size": "L"}, {"code": "V2"}]


def test_an_orphan_variant_is_an_unreadable_row_naming_it_and_its_missing_parent(
    tmp_path: Path,
):
    rows = [*BY_PARENT, {"sku": "Z-S", "size": "S", "parent_sku": "Z"}]
    write_csv(tmp_path / "c.csv", rows)

    items = read(tmp_path / "c.csv", parent_key="parent_sku")

    (orphan,) = unreadable(items)
    assert orphan.place == "variant 'Z-S' (line 9)"  # the file's line, header included
    assert "parent_sku names 'Z', which is not in the read" in orphan.reason
    assert sorted(products(items)) == ["J", "P", "S"]  # not a product on its own


def test_orphans_can_be_skipped_with_a_warning_instead_of_holding_deletes(tmp_path: Path):
    from structlog.testing import capture_logs

    rows = [*BY_PARENT, {"sku": "Z-S", "size": "S", "parent_sku": "Z"}]
    write_csv(tmp_path / "c.csv", rows)

    with capture_logs() as logs:  # whatever logging an earlier test configured
        items = read(tmp_path / "c.csv", parent_key="parent_sku", orphans="skip")

    assert unreadable(items) == []
    assert sorted(products(items)) == ["J", "P", "S"]
    assert [e["event"] for e in logs if "orphans" in e["event"]] == ["syncd.source.orphans_skipped"]


def test_a_variant_listed_by_two_parents_holds_both_and_names_them(tmp_path: Path):
    rows = [
        {"sku": "X-1"},
        {"sku": "X", "variants": "X-1|X-2"},
        {"sku": "Y", "variants": "sku=X-1,size=M|sku=Y-1"},
        {"sku": "X-2"},
        {"sku": "Y-1"},
        {"sku": "W", "variants": "W-1"},
    ]
    write_csv(tmp_path / "c.csv", rows)

    items = read(tmp_path / "c.csv", listed_in="variants")

    (claim,) = unreadable(items)
    assert claim.place == "variant 'X-1'"
    assert "of 2 products ('X' (line 3), 'Y' (line 4))" in claim.reason
    # neither parent is read (nor deleted: the read is not clean), nor are their variants
    assert sorted(products(items)) == ["W"]


def test_a_packed_entry_without_the_variant_key_makes_its_parent_unreadable(tmp_path: Path):
    rows = [
        {"sku": "A-1"},
        {"sku": "A", "variants": "sku=A-1|size=M,color=Red"},
    ]
    write_csv(tmp_path / "c.csv", rows)

    items = read(tmp_path / "c.csv", listed_in="variants")

    (bad,) = unreadable(items)
    assert bad.place == "product 'A' (line 3)"
    assert "variants: entry 2 ('size=M,color=Red') has no 'sku'" in bad.reason
    assert products(items) == {}  # A-1 stays its variant, not a product


def test_where_applies_to_the_folded_product_and_unreadable_rows_pass_through(
    tmp_path: Path,
):
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"sku": "A-1", "parent_sku": "A"}\n{"sku": "A", "status": "on"}\nnot json\n'
        '{"sku": "B", "status": "off"}\n',
        encoding="utf-8",
    )
    raw = {
        "source": {
            "kind": "file",
            "path": str(path),
            "key": "sku",
            "where": {"status": "on"},
            "variant": {"parent_key": "parent_sku"},
        },
        "targets": [
            {"name": "uf", "kind": "userflux", "api_key_env": "UF_KEY", "type_id": "product"}
        ],
    }
    config = parse_config(raw, environ=ENV)

    items = list(read_catalog(open_source(config.source), config.source))

    assert [item.place for item in unreadable(items)] == ["line 3"]
    assert [(p["sku"], len(p["variants"])) for p in products(items).values()] == [("A", 1)]


def test_a_failed_read_fails_the_join_without_yielding_a_product():
    def failing() -> Iterator[dict[str, Any]]:
        yield {"sku": "A"}
        raise SourceError("connection lost")

    join = join_variants(failing(), config_for(Path("x.csv"), parent_key="p").source.variant, "sku")

    with pytest.raises(SourceError, match="connection lost"):
        next(join)


def test_a_join_holds_one_product_in_memory_not_the_catalog():
    from syncd.config import VariantJoinConfig

    def rows(n: int) -> Iterator[dict[str, Any]]:
        for i in range(n):  # every variant before every parent: the worst case for a dict
            yield {"sku": f"V{i}", "parent": f"P{i % (n // 4)}", "text": "x" * 200}
        for i in range(n // 4):
            yield {"sku": f"P{i}", "text": "y" * 200}

    config = VariantJoinConfig(parent_key="parent")
    tracemalloc.start()
    try:
        count = 0
        for item in join_variants(rows(12_000), config, "sku"):
            assert isinstance(item, dict) and len(item["variants"]) == 4
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert count == 3_000
    assert peak < 2_000_000  # the rows alone are over 4 MB


def test_the_variant_table_needs_exactly_one_link():
    for variant in ({}, {"parent_key": "p", "listed_in": "v"}):
        with pytest.raises(ConfigError) as caught:
            config_for(Path("c.csv"), **variant)
        assert "source.variant: give exactly one of parent_key or listed_in" in str(caught.value)


def test_unchanged_rows_are_never_skipped_by_fingerprint_when_variants_are_joined(
    tmp_path: Path,
):
    config = config_for(tmp_path / "c.jsonl", parent_key="parent_sku")
    plain = config.model_copy(update={"source": config.source.model_copy(update={"variant": None})})

    assert mapping_fingerprint(plain.source, plain.targets[0]) is not None
    assert mapping_fingerprint(config.source, config.targets[0]) is None


def test_an_edited_variant_line_before_its_parent_re_sends_the_parent_and_nothing_else(
    tmp_path: Path,
):
    path = tmp_path / "c.jsonl"
    lines = [
        {"sku": "J-S", "size": "S", "parent_sku": "J"},
        {"sku": "J-M", "size": "M", "parent_sku": "J"},
        {"sku": "J", "name": "Jacket"},
        {"sku": "P", "name": "Plain"},
    ]
    write_jsonl(path, lines)
    with FakeUserflux(api_key=KEY) as userflux:
        raw = {
            "source": {
                "kind": "file",
                "path": str(path),
                "key": "sku",
                "variant": {"parent_key": "parent_sku", "distinct": {"sizes": "size"}},
            },
            "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
            "targets": [
                {
                    "name": "uf",
                    "kind": "userflux",
                    "base_url": userflux.url,
                    "api_key_env": "UF_KEY",
                    "type_id": "product",
                    "rate_limit_per_s": 0,
                    "retry": FAST_RETRY,
                    "mapping": {
                        "properties": {"name": "name", "sizes": {"path": "sizes", "type": "list"}}
                    },
                }
            ],
        }
        config = parse_config(raw, environ=ENV)
        store = open_store(config.state.url)
        try:
            first = Reconciler(config, store, environ=ENV).sync()
            assert first.ok and first.source_count == 2
            assert userflux.products[("product", "J")]["properties"]["sizes"] == ["M", "S"]

            userflux.reset_requests()
            lines[1] = {"sku": "J-M", "size": "L", "parent_sku": "J"}
            write_jsonl(path, lines)
            second = Reconciler(config, store, environ=ENV).sync()

            assert second.ok
            assert [t.requests for t in second.targets] == [1]
            assert userflux.products[("product", "J")]["properties"]["sizes"] == ["L", "S"]
            assert set(userflux.products) == {("product", "J"), ("product", "P")}
        finally:
            store.close()


def test_an_orphan_holds_the_deletes_of_the_run(tmp_path: Path):
    path = tmp_path / "c.jsonl"
    write_jsonl(path, [{"sku": "A"}, {"sku": "B"}])
    with FakeUserflux(api_key=KEY) as userflux:
        raw = {
            "source": {
                "kind": "file",
                "path": str(path),
                "key": "sku",
                "variant": {"parent_key": "parent_sku"},
            },
            "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
            "targets": [
                {
                    "name": "uf",
                    "kind": "userflux",
                    "base_url": userflux.url,
                    "api_key_env": "UF_KEY",
                    "type_id": "product",
                    "rate_limit_per_s": 0,
                    "retry": FAST_RETRY,
                    "mapping": {"properties": {"sku": "sku"}},
                }
            ],
        }
        config = parse_config(raw, environ=ENV)
        store = open_store(config.state.url)
        try:
            assert Reconciler(config, store, environ=ENV).sync().ok
            # B's parent row is gone, its variant is still there: B is not deleted
            path.write_text(
                json.dumps({"sku": "A"})
                + "\n"
                + json.dumps({"sku": "B-1", "parent_sku": "B"})
                + "\n",
                encoding="utf-8",
            )
            second = Reconciler(config, store, environ=ENV).sync()

            assert not second.source_complete
            assert ("product", "B") in userflux.products
            assert "variant 'B-1' (line 2)" in (second.targets[0].error or str(second))
        finally:
            store.close()


def test_a_variant_row_given_twice_is_reported_with_both_places_and_its_parent_not_read(
    tmp_path: Path,
):
    write_csv(tmp_path / "a.csv", BY_PARENT)
    write_csv(tmp_path / "b.csv", [{"sku": "J-M-BLK", "size": "M", "parent_sku": "J"}])
    config = parse_config(
        {
            "source": {
                "kind": "file",
                "path": [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")],
                "key": "sku",
                "variant": {"parent_key": "parent_sku"},
            },
            "targets": [
                {"name": "uf", "kind": "userflux", "api_key_env": "UF_KEY", "type_id": "p"}
            ],
        },
        environ=ENV,
    )

    items = list(read_catalog(open_source(config.source), config.source))

    (repeated,) = unreadable(items)
    assert repeated.place == "variant 'J-M-BLK'"
    assert f"given 2 times ({tmp_path / 'a.csv'}:4, {tmp_path / 'b.csv'}:2)" in repeated.reason
    assert sorted(products(items)) == ["P", "S"]  # the jacket is not folded twice, nor once


def test_a_listed_variant_whose_row_is_given_twice_holds_the_product_listing_it(
    tmp_path: Path,
):
    rows = [
        {"sku": "X", "variants": "X-1|X-2"},
        {"sku": "X-1", "size": "S"},
        {"sku": "X-2", "size": "M"},
        {"sku": "X-1", "size": "L"},
        {"sku": "W", "variants": "W-1"},
    ]
    write_csv(tmp_path / "c.csv", rows)

    items = read(tmp_path / "c.csv", listed_in="variants")

    (repeated,) = unreadable(items)
    assert repeated.place == "variant 'X-1'"
    assert "given 2 times (line 3, line 5)" in repeated.reason
    assert sorted(products(items)) == ["W"]


def test_two_parents_sharing_a_match_value_are_a_double_claim_and_neither_is_read(
    tmp_path: Path,
):
    rows = [
        {"sku": "J-S", "size": "S", "parent_sku": "jacket"},
        {"sku": "J1", "name": "jacket"},
        {"sku": "J2", "name": "jacket"},
        {"sku": "P", "name": "plain"},
    ]
    write_csv(tmp_path / "c.csv", rows)

    items = read(tmp_path / "c.csv", parent_key="parent_sku", match="name")

    (claim,) = unreadable(items)
    assert claim.place == "variants of 'jacket'"
    assert "2 products have name 'jacket' ('J1' (line 3), 'J2' (line 4))" in claim.reason
    assert sorted(products(items)) == ["P"]


def test_re_ordered_variant_rows_give_the_same_folded_product(tmp_path: Path):
    write_csv(tmp_path / "a.csv", BY_PARENT)
    write_csv(tmp_path / "b.csv", list(reversed(BY_PARENT)))

    first = products(read(tmp_path / "a.csv", parent_key="parent_sku", distinct=["size"]))
    second = products(read(tmp_path / "b.csv", parent_key="parent_sku", distinct=["size"]))

    assert first == second
    assert first["J"]["variants_size"] == ["M", "S"]


def test_an_orphan_in_one_of_several_files_is_placed_by_file_and_line(tmp_path: Path):
    write_csv(tmp_path / "a.csv", BY_PARENT)
    write_csv(tmp_path / "b.csv", [{"sku": "P-2"}, {"sku": "Z-S", "parent_sku": "Z"}])
    config = parse_config(
        {
            "source": {
                "kind": "file",
                "path": [str(tmp_path / "*.csv")],
                "key": "sku",
                "variant": {"parent_key": "parent_sku"},
            },
            "targets": [
                {"name": "uf", "kind": "userflux", "api_key_env": "UF_KEY", "type_id": "p"}
            ],
        },
        environ=ENV,
    )

    items = list(read_catalog(open_source(config.source), config.source))

    (orphan,) = unreadable(items)
    assert orphan.place == f"variant 'Z-S' ({tmp_path / 'b.csv'}:3)"


def test_rows_of_a_source_without_places_are_named_by_their_number_in_the_read():
    config = config_for(Path("unused.csv"), parent_key="parent_sku")
    rows = [{"sku": "A"}, {"sku": "B-1", "parent_sku": "B"}]

    items = list(join_variants(rows, config.source.variant, "sku"))

    (orphan,) = unreadable(items)
    assert orphan.place == "variant 'B-1' (record 2)"
