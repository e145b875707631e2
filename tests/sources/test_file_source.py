"""The file source: JSON Lines, JSON and CSV exports, their damage and their encodings."""

from __future__ import annotations

import codecs
import json
import os
from pathlib import Path
from typing import Any

import pytest

from syncd.config import FileSourceConfig, load_config
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


# --- A short read is never taken for a complete one -------------------------------------


def csv_catalog(n: int, *, quoted_brand: bool = False) -> bytes:
    brand = '"Acme, Inc."' if quoted_brand else "Acme Brand"
    rows = ["id,title,brand"] + [f"p{i},Product {i},{brand}" for i in range(1, n + 1)]
    return ("\n".join(rows) + "\n").encode()


def read_or_error(path: Path, **options: Any) -> list[Any] | SourceError:
    try:
        return list(source(path, **options).read())
    except SourceError as exc:
        return exc


def is_short(outcome: list[Any] | SourceError) -> bool:
    """Whether a read told it was incomplete: it failed, or a row was unreadable."""
    return isinstance(outcome, SourceError) or any(isinstance(i, UnreadableRow) for i in outcome)


@pytest.mark.parametrize("quoted_brand", [False, True], ids=["plain", "quoted"])
def test_a_csv_cut_inside_its_last_field_without_a_newline_fails_the_read(
    tmp_path: Path, quoted_brand: bool
) -> None:
    full = csv_catalog(200, quoted_brand=quoted_brand)
    kept = b"".join(full.splitlines(keepends=True)[:171])  # the header and 170 rows
    path = tmp_path / "catalog.csv"
    path.write_bytes(kept[:-4])  # the newline and the last 3 characters gone

    with pytest.raises(SourceError, match=r"catalog\.csv: .*line 171.*truncated"):
        list(source(path).read())


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "json"])
def test_every_cut_of_a_file_is_a_short_read_unless_it_falls_between_records(
    tmp_path: Path, suffix: str
) -> None:
    records = [{"id": f"p{i}", "brand": "Acme", "note": 'x, "y"\nz'} for i in range(1, 5)]
    if suffix == "csv":
        text = "id,brand,note\n" + "".join(
            f'{r["id"]},{r["brand"]},"x, ""y""\nz"\n' for r in records
        )
    elif suffix == "jsonl":
        text = "".join(json.dumps(r) + "\n" for r in records)
    else:
        text = json.dumps({"data": records}, indent=1) + "\n"
    data = text.encode()
    boundaries = {i + 1 for i, b in enumerate(data) if b == ord("\n")}
    if suffix == "jsonl":  # an object is whole without its newline: it ends with its brace
        boundaries |= {i for i, b in enumerate(data) if b == ord("\n")}
    if suffix == "csv":  # the newlines inside quotes are no record boundary
        boundaries = (
            {len("id,brand,note\n")}
            | {data.index(f"{r['id']},".encode()) for r in records[1:]}
            | {len(data)}
        )
    path = tmp_path / f"catalog.{suffix}"
    options = {"records_path": "data"} if suffix == "json" else {}

    for cut in range(1, len(data)):
        path.write_bytes(data[:cut])
        outcome = read_or_error(path, **options)
        if cut in boundaries if suffix != "json" else not data[cut:].strip():
            continue  # whole records, or (JSON) only the trailing newline, were cut off
        assert is_short(outcome), f"a cut at byte {cut} was read as complete: {outcome}"


def test_a_csv_cut_inside_a_multibyte_character_fails_the_read(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_bytes("id,title\np1,Caf\u00e9\n".encode()[:-2])  # half of the é

    with pytest.raises(SourceError, match=r"catalog\.csv"):
        list(source(path).read())


def test_a_csv_whose_last_record_has_no_newline_is_kept_when_the_config_allows_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.csv"
    path.write_bytes(b"id,title,brand\np1,One,Acme\np2,Two,")  # Shopify's exports end so

    records = list(source(path, csv_require_final_newline=False).read())

    assert records[-1] == {"id": "p2", "title": "Two", "brand": ""}
    with pytest.raises(SourceError, match=r"last record \(line 3\).*truncated"):
        list(source(path).read())


def test_an_unterminated_last_csv_record_of_the_wrong_width_fails_even_when_allowed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.csv"
    path.write_bytes(b"id,title,brand\np1,One,Acme\np2,Tw")

    with pytest.raises(SourceError, match=r"line 3.*2 fields, not the 3"):
        list(source(path, csv_require_final_newline=False).read())


def test_a_csv_header_naming_a_column_twice_fails_the_read_naming_line_1_and_the_column(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.csv"
    path.write_bytes(b"id,title,price,title\np1,One,5,Uno\n")

    with pytest.raises(SourceError, match=r"catalog\.csv: line 1: .*'title' more than once"):
        list(source(path).read())


@pytest.mark.parametrize(
    "line",
    [
        '{"id": "p2", "title": "Two", "id": "p3"}',
        '{"id": "p2", "meta": {"brand": "A", "brand": "B"}}',
        '{"id": "p2", "variants": [{"sku": "1"}, {"sku": "2", "sku": "3"}]}',
    ],
    ids=["top", "nested", "in-a-list"],
)
def test_a_jsonl_object_repeating_a_key_at_any_depth_is_an_unreadable_row(
    tmp_path: Path, line: str
) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text('{"id": "p1"}\n' + line + '\n{"id": "p4"}\n', encoding="utf-8")

    items = list(source(path).read())

    assert items[0] == {"id": "p1"} and items[2] == {"id": "p4"}
    assert isinstance(items[1], UnreadableRow)
    assert items[1].place == "line 2"
    assert "duplicate key" in items[1].reason


def test_a_json_document_repeating_a_key_in_a_record_fails_naming_the_record(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(
        '{"data": [{"id": "p1"}, {"id": "p2", "meta": {"b": 1, "b": 2}}]}', encoding="utf-8"
    )

    with pytest.raises(SourceError, match=r"item 1 \(id 'p2'\) repeats the key 'b'"):
        list(source(path, records_path="data").read())


def big_line(size: int) -> str:
    return json.dumps({"id": "big", "title": "x" * size})


@pytest.mark.parametrize("block_bytes", [64, 1 << 20], ids=["streamed", "in-one-block"])
def test_a_jsonl_line_over_max_record_bytes_is_unreadable_and_never_kept_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_bytes: int
) -> None:
    monkeypatch.setattr(file_source, "BLOCK_BYTES", block_bytes)
    path = tmp_path / "catalog.jsonl"
    path.write_text(f'{{"id": "p1"}}\n{big_line(5000)}\n{{"id": "p3"}}\n', encoding="utf-8")
    reader = source(path, max_record_bytes=1000)

    longest = max(len(line) for block in reader.read_blocks() for line in block.lines)
    items = list(reader.read())

    assert longest < 1000
    assert items[0] == {"id": "p1"} and items[2] == {"id": "p3"}
    assert isinstance(items[1], UnreadableRow)
    assert items[1].place == "line 2"
    assert "over source.max_record_bytes=1000" in items[1].reason


def test_an_oversized_last_jsonl_line_without_a_newline_fails_as_truncated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_source, "BLOCK_BYTES", 64)
    path = tmp_path / "catalog.jsonl"
    path.write_text(f'{{"id": "p1"}}\n{big_line(5000)}', encoding="utf-8")

    with pytest.raises(SourceError, match=r"last line \(2\).*truncated"):
        list(source(path, max_record_bytes=1000).read())


def test_an_oversized_jsonl_line_in_a_wide_encoding_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text(f'{{"id": "p1"}}\n{big_line(5000)}\n{{"id": "p3"}}\n', encoding="utf-16")

    items = list(source(path, encoding="utf-16", max_record_bytes=1000).read())

    assert [type(i).__name__ for i in items] == ["dict", "UnreadableRow", "dict"]
    assert items[1].place == "line 2"


@pytest.mark.parametrize(
    "record",
    ["p2,Two," + "x" * 5000, 'p2,"Two' + "\n2" * 300 + '","' + "x\n" * 300 + '"'],
    ids=["one-line", "two-quoted-fields-over-lines"],
)
def test_a_csv_record_over_max_record_bytes_is_unreadable(tmp_path: Path, record: str) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text(f"id,title,brand\np1,One,A\n{record}\np3,Three,C\n", encoding="utf-8")

    items = list(source(path, max_record_bytes=1000).read())

    assert items[0] == {"id": "p1", "title": "One", "brand": "A"}
    assert items[-1] == {"id": "p3", "title": "Three", "brand": "C"}
    unreadable = [i for i in items if isinstance(i, UnreadableRow)]
    assert len(unreadable) == 1
    assert unreadable[0].place == "line 3"
    assert "over source.max_record_bytes=1000" in unreadable[0].reason


def test_a_json_document_over_max_document_bytes_fails_before_it_is_parsed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(catalog(50)), encoding="utf-8")

    with pytest.raises(
        SourceError, match=r"catalog\.json: \d+ bytes, over source.max_document_bytes=500"
    ):
        list(source(path, max_document_bytes=500).read())
    assert len(list(source(path).read())) == 50


def test_a_quoted_csv_field_growing_over_max_record_bytes_fails_the_read(tmp_path: Path) -> None:
    """The parser can't find where such a record ends without reading it whole."""
    path = tmp_path / "catalog.csv"
    field = "x\n" * 2500
    path.write_text(f'id,title,brand\np1,One,A\np2,Two,"{field}"\np3,C,C\n', encoding="utf-8")

    with pytest.raises(SourceError, match=r"field opened at line 3 grows over source.max_record"):
        list(source(path, max_record_bytes=1000).read())


# --- Completeness and the second look --------------------------------------------------


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv"])
def test_a_file_source_can_prove_a_read_complete(tmp_path: Path, suffix: str) -> None:
    assert source(tmp_path / f"catalog.{suffix}").can_prove_complete is True


@pytest.mark.parametrize("fast", [True, False], ids=["blocks", "read"])
def test_an_unchanged_file_confirms_every_absent_key_after_a_read(
    tmp_path: Path, fast: bool
) -> None:
    path = write_jsonl(tmp_path / "catalog.jsonl", catalog(3))
    reader = source(path)
    if fast:
        list(reader.read_blocks())
    else:
        list(reader.read())

    assert reader.confirm_absent(["p7", "p8"]) == {"p7", "p8"}


def test_a_file_changed_since_the_read_began_confirms_nothing(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_bytes(b"id,title\np1,One\n")
    reader = source(path)
    list(reader.read())
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))

    assert reader.confirm_absent(["p2"]) == set()


def test_a_file_replaced_by_one_of_the_same_size_confirms_nothing(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_bytes(b"id,title\np1,One\n")
    reader = source(path)
    list(reader.read())
    stat = path.stat()
    other = tmp_path / "new.csv"
    other.write_bytes(b"id,title\np2,Two\n")
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    other.replace(path)

    assert reader.confirm_absent(["p2"]) == set()


def test_a_file_never_read_confirms_nothing(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "catalog.jsonl", catalog(3))

    assert source(path).confirm_absent(["p9"]) == set()


# --- Several files as one catalog ------------------------------------------------------


def several(tmp_path: Path, *paths: str, **options: Any) -> FileSource:
    return FileSource(
        FileSourceConfig(kind="file", path=tuple(tmp_path / p for p in paths), **options)
    )


def write_exports(tmp_path: Path) -> None:
    """One CSV per category (each with its own header and column order) and a JSONL file."""
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "b-shirts.csv").write_text("title,id,size\nShirt,s1,M\nTee,s2,L\n", "utf-8")
    (exports / "a-shoes.csv").write_text("id;title\nh1;Boot\n".replace(";", ","), "utf-8")
    write_jsonl(tmp_path / "extra.jsonl", [{"id": "x1", "title": "Gift card"}])


def test_several_files_and_patterns_read_as_one_catalog_each_with_its_own_header(
    tmp_path: Path,
) -> None:
    write_exports(tmp_path)

    items = list(several(tmp_path, "exports/*.csv", "extra.jsonl").read())

    assert items == [
        {"id": "h1", "title": "Boot"},  # a-shoes.csv: the pattern's matches sorted by name
        {"title": "Shirt", "id": "s1", "size": "M"},
        {"title": "Tee", "id": "s2", "size": "L"},
        {"id": "x1", "title": "Gift card"},
    ]


def test_relative_files_and_patterns_are_relative_to_the_config_file(tmp_path: Path) -> None:
    write_exports(tmp_path)
    config = tmp_path / "syncd.toml"
    config.write_text(
        '[source]\nkind = "file"\npath = ["exports/*.csv", "extra.jsonl"]\n'
        '[[targets]]\nkind = "userflux"\nname = "uf"\napi_key_env = "K"\ntype_id = "p"\n',
        encoding="utf-8",
    )

    loaded = load_config(config, environ={"K": "x"})

    assert loaded.source.path == (tmp_path / "exports/*.csv", tmp_path / "extra.jsonl")
    assert len(list(open_source(loaded.source).read())) == 4


def test_a_single_glob_pattern_is_several_files(tmp_path: Path) -> None:
    write_exports(tmp_path)

    reader = source(tmp_path / "exports" / "*.csv")

    assert [item["id"] for item in reader.read() if isinstance(item, dict)] == ["h1", "s1", "s2"]


def test_a_file_named_twice_is_read_once(tmp_path: Path) -> None:
    write_exports(tmp_path)

    items = list(several(tmp_path, "exports/a-shoes.csv", "exports/*.csv").read())

    assert [item["id"] for item in items if isinstance(item, dict)] == ["h1", "s1", "s2"]


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (["exports/*.csv", "missing.jsonl"], r"missing\.jsonl: does not exist"),
        (["exports/*.csv", "other/*.csv"], r"other/\*\.csv: the pattern matches no file"),
        (["exports/*.csv", "exports"], r"exports: is not a file"),
    ],
)
def test_a_missing_file_or_an_empty_pattern_fails_the_read_naming_it(
    tmp_path: Path, paths: list[str], message: str
) -> None:
    write_exports(tmp_path)

    with pytest.raises(SourceError, match=message):
        list(several(tmp_path, *paths).read())


@pytest.mark.parametrize("fast", [True, False], ids=["blocks", "read"])
def test_a_truncated_file_among_several_fails_the_read_naming_that_file(
    tmp_path: Path, fast: bool
) -> None:
    write_jsonl(tmp_path / "a.jsonl", catalog(2))
    (tmp_path / "b.jsonl").write_text('{"id": "p9"}\n{"id": "p1', encoding="utf-8")
    reader = several(tmp_path, "a.jsonl", "b.jsonl")

    with pytest.raises(SourceError, match=r"b\.jsonl: the last line \(2\) is cut short"):
        if fast:
            for block in reader.read_blocks():
                for index in range(len(block.lines)):
                    reader.parse_line(block.row(index))
        else:
            list(reader.read())


def test_an_unreadable_row_of_one_of_several_files_is_placed_as_file_and_line(
    tmp_path: Path,
) -> None:
    write_jsonl(tmp_path / "a.jsonl", catalog(2))
    (tmp_path / "b.csv").write_text("id,title\nq1,One\nq2,Two,extra\n", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text('{"id": "r1"}\nnot json\n', encoding="utf-8")

    items = list(several(tmp_path, "a.jsonl", "b.csv", "c.jsonl").read())

    unreadable = [item for item in items if isinstance(item, UnreadableRow)]
    assert [u.place for u in unreadable] == [f"{tmp_path / 'b.csv'}:3", f"{tmp_path / 'c.jsonl'}:2"]


def test_json_lines_blocks_run_over_several_files_one_after_another(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", catalog(2))
    write_jsonl(tmp_path / "b.jsonl", [{"id": "q1"}, {"id": "q2"}, {"id": "q3"}])
    reader = several(tmp_path, "*.jsonl")

    assert reader.can_read_lines()
    rows = [block.row(i) for block in reader.read_blocks() for i in range(len(block.lines))]
    rows = [row for row in rows if row.data.strip()]

    assert [(row.path.name if row.path else None, row.number) for row in rows] == [
        ("a.jsonl", 1),
        ("a.jsonl", 2),
        ("b.jsonl", 1),
        ("b.jsonl", 2),
        ("b.jsonl", 3),
    ]
    parsed = [reader.parse_line(row) for row in rows]
    assert [item["id"] for item in parsed if isinstance(item, dict)] == [
        "p1",
        "p2",
        "q1",
        "q2",
        "q3",
    ]


def test_several_files_of_mixed_formats_take_no_line_fast_path(tmp_path: Path) -> None:
    write_exports(tmp_path)

    assert not several(tmp_path, "exports/*.csv", "extra.jsonl").can_read_lines()
    assert several(tmp_path, "extra.jsonl").can_read_lines()


@pytest.mark.parametrize("fast", [True, False], ids=["blocks", "read"])
def test_several_unchanged_files_confirm_every_absent_key(tmp_path: Path, fast: bool) -> None:
    write_jsonl(tmp_path / "a.jsonl", catalog(2))
    write_jsonl(tmp_path / "b.jsonl", [{"id": "q1"}])
    reader = several(tmp_path, "*.jsonl")
    list(reader.read_blocks() if fast else reader.read())

    assert reader.confirm_absent(["p7"]) == {"p7"}


def touch_later(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


@pytest.mark.parametrize(
    "change",
    [
        lambda tmp: touch_later(tmp / "b.jsonl"),  # the second file changed
        lambda tmp: write_jsonl(tmp / "c.jsonl", [{"id": "p7"}]),  # a new file matches
        lambda tmp: (tmp / "a.jsonl").unlink(),  # a file is gone
    ],
    ids=["changed", "appeared", "disappeared"],
)
def test_several_files_confirm_nothing_when_one_changed_or_the_pattern_matches_others(
    tmp_path: Path, change: Any
) -> None:
    write_jsonl(tmp_path / "a.jsonl", catalog(2))
    write_jsonl(tmp_path / "b.jsonl", [{"id": "q1"}])
    reader = several(tmp_path, "*.jsonl")
    list(reader.read())

    change(tmp_path)

    assert reader.confirm_absent(["p7"]) == set()


def test_a_read_that_failed_on_a_missing_file_confirms_nothing(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", catalog(2))
    reader = several(tmp_path, "a.jsonl", "b.jsonl")
    with pytest.raises(SourceError):
        list(reader.read())

    write_jsonl(tmp_path / "b.jsonl", [])

    assert reader.confirm_absent(["p7"]) == set()


def test_csv_delimiter_auto_tells_each_files_own_delimiter_from_its_header(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.csv").write_text('id,name,price\n1,"Tee; red",5\n', encoding="utf-8")
    (tmp_path / "b.csv").write_text('id;"name, long";price\n2;Mug;"1,50"\n', encoding="utf-8")
    (tmp_path / "c.csv").write_text("id\tname\n3\tCap|blue\n", encoding="utf-8")
    (tmp_path / "d.csv").write_text("id|name\n4|Hat\n", encoding="utf-8")
    config = FileSourceConfig(
        kind="file", path=(tmp_path / "*.csv",), csv_delimiter="auto", key="id"
    )

    items = list(FileSource(config).read())

    assert items == [
        {"id": "1", "name": "Tee; red", "price": "5"},
        {"id": "2", "name, long": "Mug", "price": "1,50"},
        {"id": "3", "name": "Cap|blue"},
        {"id": "4", "name": "Hat"},
    ]


@pytest.mark.parametrize("header", ["id\n", "id,name;price\n"])
def test_csv_delimiter_auto_fails_the_read_naming_the_file_when_the_header_cant_tell(
    tmp_path: Path, header: str
) -> None:
    path = tmp_path / "odd.csv"
    path.write_text(header + "1\n", encoding="utf-8")

    with pytest.raises(SourceError, match=r"odd\.csv: line 1: csv_delimiter = \"auto\" can't"):
        list(source(path, csv_delimiter="auto").read())


def test_csv_delimiter_is_one_character_or_auto() -> None:
    with pytest.raises(ValueError, match="csv_delimiter"):
        FileSourceConfig(kind="file", path=Path("c.csv"), csv_delimiter="tab")


_ODD_LINES = [
    b'{"id": "p1", "n": 1.5e3, "s": "a:b"}',
    b"",
    b"  \t",
    b"\x0c",
    b'{"id": "p2", "id": "p3"}',
    b'{"id": "p4", "n": 18446744073709551616}',
    b"not json",
    b"[1, 2]",
    b'{"s": "\\ud800"}',
    b'{"s": ":", "\\u003a": 1, ":": 2}',
    b'{"id": "' + b"x" * 200 + b'"}',
    '{"id": "é", "t": "\u2028"}'.encode(),
    b'\xef\xbb\xbf{"id": "bom"}',
    b'{"n": 1e400}',
]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8", "latin-1"])
@pytest.mark.parametrize("last", [b'{"id": "last"}', b'{"id": "last"', b""])
def test_a_block_of_rows_parses_as_each_line_alone_the_general_way(
    tmp_path: Path, encoding: str, last: bytes
) -> None:
    """``parse_rows`` (orjson where it can vouch for it) gives each line what the general
    way (decoded, ``loads_strict``) gives: the record, the unreadable row, or the error."""
    path = tmp_path / "catalog.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + b"\n".join([*_ODD_LINES, last]))
    reader = source(path, encoding=encoding, max_record_bytes=100)

    def outcome(parse: Any, *args: Any) -> Any:
        try:
            return parse(*args)
        except SourceError as exc:
            return f"SourceError: {exc}"

    for block in reader.read_blocks():
        general = reader._readers[path]._parse_raw
        indexes = range(len(block.lines))
        expected = [outcome(general, block.row(i)) for i in indexes]
        rows = reader.parse_rows(block, indexes)
        assert [outcome(next, rows) for _ in indexes] == expected
        assert [outcome(reader.parse_line, block.row(i)) for i in indexes] == expected
