"""A source that can hand over raw rows says so through ``RawRows``, not by its class."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from syncd.config import parse_config
from syncd.reconcile import Reconciler
from syncd.sandbox import FakeUserflux
from syncd.sources import open_source
from syncd.sources.base import RawRows, raw_rows
from syncd.sources.file import FileSource
from tests.support import KEY, Harness, catalog, userflux_target


class _Wrapped:
    """Any source (not a ``FileSource``) that can hand over raw rows: it delegates to one,
    counting how the run reads it."""

    def __init__(self, inner: FileSource) -> None:
        self.inner = inner
        self.reads = 0
        self.parsed = 0

    def read(self) -> Iterator[Any]:
        self.reads += 1
        return self.inner.read()

    def describe(self) -> str:
        return "wrapped " + self.inner.describe()

    @property
    def can_prove_complete(self) -> bool:
        return True

    def confirm_absent(self, keys: Sequence[str]) -> set[str] | None:
        return None

    def can_read_lines(self) -> bool:
        return self.inner.can_read_lines()

    def read_blocks(self) -> Iterator[Any]:
        return self.inner.read_blocks()

    def parse_rows(self, block: Any, indexes: Iterable[int]) -> Iterator[Any]:
        indexes = list(indexes)
        self.parsed += len(indexes)
        return self.inner.parse_rows(block, indexes)


def test_a_json_lines_file_source_hands_over_raw_rows_and_a_csv_one_does_not(tmp_path: Path):
    lines = tmp_path / "c.jsonl"
    lines.write_text('{"sku": "A"}\n', encoding="utf-8")
    table = tmp_path / "c.csv"
    table.write_text("sku\nA\n", encoding="utf-8")

    def source(path: Path) -> Any:
        raw = {
            "source": {"kind": "file", "path": str(path), "key": "sku"},
            "targets": [userflux_target("http://127.0.0.1:9")],
        }
        return open_source(parse_config(raw, environ={"UF_KEY": KEY}).source)

    assert isinstance(source(lines), RawRows)
    assert raw_rows(source(lines)) is not None
    assert raw_rows(source(table)) is None


def test_any_source_offering_raw_rows_has_its_unchanged_rows_skipped_unparsed(tmp_path: Path):
    with FakeUserflux(api_key=KEY) as userflux:
        h = Harness(tmp_path, [userflux_target(userflux.url)])
        h.write(catalog(8))
        first = Reconciler(h.config, h.store, environ=h.environ).sync()
        assert first.ok
        wrapped = _Wrapped(open_source(h.config.source))  # type: ignore[arg-type]

        report = Reconciler(h.config, h.store, environ=h.environ, source=wrapped).sync()

        assert report.ok
        assert report.targets[0].unchanged == 8
        assert wrapped.reads == 0  # read as raw rows, not record by record
        assert wrapped.parsed == 0  # every row known by its fingerprint: none parsed
        h.close()
