"""The whole loop over a catalog spread over several files (``source.path`` a list or a
glob pattern): one catalog, duplicates across files, unchanged rows skipped in every file."""

from __future__ import annotations

from pathlib import Path

from syncd.sandbox import FakeUserflux
from tests.support import Harness, catalog, expected_userflux, userflux_target, write_jsonl


def harness(tmp_path: Path, userflux: FakeUserflux) -> Harness:
    (tmp_path / "parts").mkdir()
    return Harness(
        tmp_path,
        [userflux_target(userflux.url, guards={"max_delete_fraction": 0.5})],
        path=[str(tmp_path / "parts" / "*.jsonl"), str(tmp_path / "extra.jsonl")],
    )


def test_several_jsonl_files_converge_and_then_send_exactly_the_diff(
    tmp_path: Path, userflux: FakeUserflux
):
    h = harness(tmp_path, userflux)
    records = catalog(30)
    write_jsonl(tmp_path / "parts" / "a.jsonl", records[:10])
    write_jsonl(tmp_path / "parts" / "b.jsonl", records[10:25])
    write_jsonl(tmp_path / "extra.jsonl", records[25:])

    first = h.sync()
    assert first.ok and first.targets[0].created == 30
    assert userflux.products == expected_userflux(records)

    userflux.reset_requests()
    unchanged = h.sync()
    assert unchanged.ok and unchanged.targets[0].unchanged == 30
    assert userflux.request_count(method="POST") == 0

    records[12] = dict(records[12], price="99.50")  # in b.jsonl
    write_jsonl(tmp_path / "parts" / "b.jsonl", records[10:25])
    edited = h.sync()

    assert (edited.targets[0].updated, edited.targets[0].created) == (1, 0)
    assert userflux.request_count(method="POST") == 1
    assert userflux.products == expected_userflux(records)
    h.close()


def test_a_key_present_in_two_files_is_a_duplicate(tmp_path: Path, userflux: FakeUserflux):
    h = harness(tmp_path, userflux)
    records = catalog(6)
    write_jsonl(tmp_path / "parts" / "a.jsonl", records[:4])
    write_jsonl(tmp_path / "extra.jsonl", [*records[4:], dict(records[1], title="Other")])

    report = h.sync()

    assert report.targets[0].rejected == 1
    assert ("product", records[1]["sku"]) not in userflux.products
    assert len(userflux.products) == 5
    h.close()


def test_a_file_missing_from_the_catalog_fails_the_read_and_deletes_nothing(
    tmp_path: Path, userflux: FakeUserflux
):
    h = harness(tmp_path, userflux)
    records = catalog(10)
    write_jsonl(tmp_path / "parts" / "a.jsonl", records[:5])
    write_jsonl(tmp_path / "extra.jsonl", records[5:])
    assert h.sync().ok

    (tmp_path / "extra.jsonl").unlink()
    report = h.sync()

    assert not report.ok
    assert report.source_error is not None and "extra.jsonl: does not exist" in report.source_error
    assert report.targets[0].deleted == 0
    assert len(userflux.products) == 10
    h.close()
