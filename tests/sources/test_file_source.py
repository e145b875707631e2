"""The file source: JSON Lines, JSON and CSV exports, their damage and their encodings."""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

import pytest

from syncd.config import FileSourceConfig
from syncd.errors import SourceError
from syncd.model import UnreadableRow
from syncd.sources import file as file_source
from syncd.sources import open_source
from syncd.sources.file import FileSource


def source(path: Path, **options: Any) -> FileSource:
    return FileSource(FileSourceConfig(kind="file", path=path, **options))


def catalog(n: int = 3) -> list[dict[str, Any]]:
    return [
        {"id": f"p{i}", "name": f"Product {i}", "price": 10.5 + i, "tags": ["a", "b"][: i % 3]}
        for i in range(1, n + 1)
    ]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# --- JSON Lines ------------------------------------------------------------------------


def test_jsonl_yields_every_record_in_order(tmp_path: Path) -> None:
    records = catalog(50)
    path = write_jsonl(tmp_path / "catalog.jsonl", records)

    assert list(source(path).read()) == records


def test_ndjson_extension_is_read_as_json_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "catalog.ndjson", catalog())

    assert list(source(path).read()) == catalog()


def test_blank_jsonl_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text('{"id": "1"}\n\n   \n{"id": "2"}\r\n', encoding="utf-8")

    assert list(source(path).read()) == [{"id": "1"}, {"id": "2"}]


def test_a_jsonl_line_that_is_not_json_is_an_unreadable_row_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text('{"id": "1"}\n{"id": \n{"id": "3"}\n', encoding="utf-8")

    items = list(source(path).read())

    assert items[0] == {"id": "1"}
    assert isinstance(items[1], UnreadableRow)
    assert items[1].place == "line 2"
    assert items[2] == {"id": "3"}


def test_a_jsonl_line_that_is_not_an_object_is_an_unreadable_row(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text('["id", "1"]\n42\n{"id": "3"}\n', encoding="utf-8")

    items = list(source(path).read())

    assert items[:2] == [
        UnreadableRow("line 1", "a JSON list, not an object"),
        UnreadableRow("line 2", "a JSON int, not an object"),
    ]
    assert items[2] == {"id": "3"}


def test_a_jsonl_line_with_nan_is_an_unreadable_row(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text('{"id": "1", "price": NaN}\n', encoding="utf-8")

    (item,) = source(path).read()

    assert isinstance(item, UnreadableRow)
    assert "NaN" in item.reason


def test_a_jsonl_file_cut_mid_object_raises_instead_of_yielding_an_unreadable_row(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text('{"id": "1"}\n{"id": "2"}\n{"id": "3", "na', encoding="utf-8")
    items: list[Any] = []

    with pytest.raises(SourceError, match=r"catalog.jsonl.*line \(3\).*truncated"):
        items.extend(source(path).read())

    assert items == [{"id": "1"}, {"id": "2"}]


def test_a_complete_last_jsonl_line_without_a_newline_is_read(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text('{"id": "1"}\n{"id": "2"}', encoding="utf-8")

    assert list(source(path).read()) == [{"id": "1"}, {"id": "2"}]


def test_invalid_utf8_fails_the_read_naming_the_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_bytes(b'{"id": "1"}\n{"id": "2"}\n{"id": "\xff3"}\n')
    items: list[Any] = []

    with pytest.raises(SourceError, match=r"line 3 \(byte 32\) is not valid utf-8"):
        items.extend(source(path).read())

    assert items == [{"id": "1"}, {"id": "2"}], "lines before the damage stream out first"


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "1", "name": "Caf\xc3\xa9"}\n')

    assert list(source(path).read()) == [{"id": "1", "name": "Café"}]


def test_a_missing_file_fails_the_read_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.jsonl"

    with pytest.raises(SourceError, match=r"nowhere\.jsonl: does not exist"):
        list(source(path).read())


def test_an_unknown_extension_fails_the_read_asking_for_the_format(tmp_path: Path) -> None:
    path = tmp_path / "catalog.txt"
    path.write_text("{}\n", encoding="utf-8")

    with pytest.raises(SourceError, match=r"set source\.format"):
        list(source(path).read())
    assert list(source(path, format="jsonl").read()) == [{}]


@pytest.mark.parametrize("block_bytes", [1, 7, 64, 1 << 20])
def test_blocks_give_every_line_with_its_number_and_offset_whatever_the_block_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_bytes: int
) -> None:
    monkeypatch.setattr(file_source, "BLOCK_BYTES", block_bytes)
    body = b'{"id":"a"}\n\n{"id":"b",\r"x":"' + b"y" * 100 + b'"}\r\n  \n{"id":"c"}'
    path = tmp_path / "catalog.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + body)
    expected, offset = [], len(codecs.BOM_UTF8)
    for number, data in enumerate(body.split(b"\n"), start=1):
        expected.append((number, offset, data))
        offset += len(data) + 1

    blocks = list(source(path, encoding="utf-8-sig").read_blocks())
    rows = [block.row(i) for block in blocks for i in range(len(block.lines))]

    assert [(r.number, r.start, r.data.rstrip(b"\n")) for r in rows] == expected
    assert [r.data.endswith(b"\n") for r in rows] == [True] * 4 + [False]
    # the same lines as read_lines (which leaves the blank ones out) and read
    read = source(path, encoding="utf-8-sig")
    assert [r.number for r in read.read_lines()] == [1, 3, 5]
    assert [r["id"] for r in read.read()] == ["a", "b", "c"]


# --- JSON ------------------------------------------------------------------------------


def test_a_json_array_at_the_root_is_read(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(catalog()), encoding="utf-8")

    assert list(source(path).read()) == catalog()


def test_records_path_walks_to_a_nested_array(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"data": {"products": catalog()}, "count": 3}), encoding="utf-8")

    assert list(source(path, records_path="data.products").read()) == catalog()


def test_a_missing_records_path_fails_the_read_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"data": {"items": []}}), encoding="utf-8")

    with pytest.raises(SourceError, match=r"records_path 'data.products' not found"):
        list(source(path, records_path="data.products").read())


def test_a_records_path_that_is_not_an_array_fails_the_read(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"data": {"products": {"id": "1"}}}), encoding="utf-8")

    with pytest.raises(SourceError, match=r"data\.products is a JSON dict, not an array"):
        list(source(path, records_path="data.products").read())


def test_a_truncated_json_document_fails_the_read(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(catalog())[:-10], encoding="utf-8")

    with pytest.raises(SourceError, match=r"catalog\.json: not valid JSON at line 1.*truncated"):
        list(source(path).read())


def test_a_json_item_that_is_not_an_object_is_an_unreadable_row(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text('[{"id": "1"}, "oops"]', encoding="utf-8")

    assert list(source(path).read()) == [
        {"id": "1"},
        UnreadableRow("item 1", "a JSON str, not an object"),
    ]


def test_invalid_utf8_in_a_json_document_names_the_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_bytes(b'[\n{"id": "1"},\n{"id": "\xc3("}\n]')

    with pytest.raises(SourceError, match=r"line 3 \(byte 23\) is not valid utf-8"):
        list(source(path).read())


# --- CSV -------------------------------------------------------------------------------


def test_csv_rows_become_records_keyed_by_the_header(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text("id,name,price\r\n1,Mug,9.90\r\n2,Cup,4\r\n", encoding="utf-8")

    assert list(source(path).read()) == [
        {"id": "1", "name": "Mug", "price": "9.90"},
        {"id": "2", "name": "Cup", "price": "4"},
    ]


def test_quoted_newlines_and_delimiters_stay_inside_their_field(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text(
        'id,description\n1,"two\nlines, with a comma"\n2,"say ""hi"""\n', encoding="utf-8"
    )

    assert list(source(path).read()) == [
        {"id": "1", "description": "two\nlines, with a comma"},
        {"id": "2", "description": 'say "hi"'},
    ]


def test_empty_csv_cells_stay_empty_strings(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text("id,name,brand\n1,,\n", encoding="utf-8")

    assert list(source(path).read()) == [{"id": "1", "name": "", "brand": ""}]


def test_a_csv_row_with_more_fields_than_the_header_is_unreadable_naming_its_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text('id,name\n1,"Mug\nlarge"\n2,Cup,extra\n3,Plate\n', encoding="utf-8")

    items = list(source(path).read())

    assert items[0] == {"id": "1", "name": "Mug\nlarge"}
    assert items[1] == UnreadableRow("line 4", "3 fields, more than the 2 of the header")
    assert items[2] == {"id": "3", "name": "Plate"}


def test_a_csv_row_with_fewer_fields_than_the_header_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text("id,name,price\n1,Mug\n", encoding="utf-8")

    assert list(source(path).read()) == [
        UnreadableRow("line 2", "2 fields, fewer than the 3 of the header")
    ]


def test_a_csv_cut_inside_a_quoted_field_fails_the_read(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text('id,name\n1,Mug\n2,"Cup with a lo', encoding="utf-8")

    with pytest.raises(SourceError, match=r"opened at line 3 never closes.*truncated"):
        list(source(path).read())


def test_a_csv_with_a_byte_order_mark_keeps_the_first_column_name_clean(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_bytes(b"\xef\xbb\xbfid,name\n1,Caf\xc3\xa9\n")

    assert list(source(path).read()) == [{"id": "1", "name": "Café"}]


def test_an_empty_csv_file_fails_the_read(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_bytes(b"")

    with pytest.raises(SourceError, match="not even a header"):
        list(source(path).read())


def test_csv_takes_the_configured_delimiter_and_encoding(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_bytes("id;name\n1;Café\n".encode("latin-1"))

    items = list(source(path, csv_delimiter=";", encoding="latin-1").read())

    assert items == [{"id": "1", "name": "Café"}]


def test_a_utf16_csv_is_read_when_configured(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_bytes('id,name\n1,"Café\nau lait"\n'.encode("utf-16"))

    items = list(source(path, encoding="utf-16").read())

    assert items == [{"id": "1", "name": "Café\nau lait"}]


def test_open_source_builds_a_file_source_that_describes_its_path(tmp_path: Path) -> None:
    config = FileSourceConfig(kind="file", path=tmp_path / "catalog.csv")

    built = open_source(config)

    assert isinstance(built, FileSource)
    assert "catalog.csv" in built.describe()
