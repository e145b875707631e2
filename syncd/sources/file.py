"""The file source: a catalog export on disk in JSON Lines, JSON or CSV.

JSON Lines and CSV stream line by line in bounded memory. A whole-document JSON file
is the exception: it is parsed at once (the standard library has no streaming JSON
parser), so its size is bounded by memory; prefer JSON Lines for big catalogs.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from itertools import accumulate
from pathlib import Path
from typing import Any, Literal, NamedTuple

from syncd.config import FileSourceConfig
from syncd.errors import SourceError
from syncd.model import SourceItem, UnreadableRow

Format = Literal["jsonl", "json", "csv"]

_EXTENSIONS: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
}
_BOM = codecs.BOM_UTF8
_PROBE = '\n\r,;"{}[]:az09'


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str) -> Any:
    """``json.loads`` refusing NaN and Infinity, which no target accepts."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply to parse") from None


def _ascii_compatible(codec: str) -> bool:
    """Whether lines can be split on ``\\n`` bytes before decoding (UTF-8, Latin-1, ...)."""
    try:
        return _PROBE.encode("ascii").decode(codec) == _PROBE
    except UnicodeDecodeError:
        return False


class RawLine(NamedTuple):
    """One line of a JSON Lines file as bytes, before decoding (``FileSource.read_lines``)."""

    number: int
    """1-based line number in the file."""
    start: int
    """Byte offset of ``data`` in the file."""
    data: bytes
    """The line's bytes (a leading byte order mark removed), its newline included."""


BLOCK_BYTES = 1 << 20
"""Bytes read at a time by ``FileSource.read_blocks`` (a block is then split on newlines)."""


class LineBlock:
    """Consecutive lines of a JSON Lines file, undecoded (``FileSource.read_blocks``).

    Holds the lines as one list of bytes, so a reader can fingerprint a block with a
    few list operations and make a ``RawLine`` only of the lines it parses.
    """

    __slots__ = ("_starts", "ended", "first", "lines", "start")

    def __init__(self, first: int, start: int, lines: list[bytes], *, ended: bool) -> None:
        self.first = first
        """1-based line number of ``lines[0]``."""
        self.start = start
        """Byte offset of ``lines[0]`` in the file."""
        self.lines = lines
        """Each line's bytes, newline removed (and a leading byte order mark)."""
        self.ended = ended
        """Whether the last line ended with a newline (False: the file's cut-off tail)."""
        self._starts: list[int] | None = None

    def row(self, index: int) -> RawLine:
        """``lines[index]`` as a ``RawLine`` (its newline put back, when it had one)."""
        if self._starts is None:
            self._starts = list(
                accumulate((len(line) + 1 for line in self.lines), initial=self.start)
            )
        last = index == len(self.lines) - 1
        data = self.lines[index] if last and not self.ended else self.lines[index] + b"\n"
        return RawLine(self.first + index, self._starts[index], data)


class _Lines:
    """The decoded lines of a text file, counting them (1-based) as they are taken."""

    def __init__(self, path: Path, encoding: str) -> None:
        self.path = path
        self.encoding = encoding
        self.count = 0
        self.last_ended = True
        """Whether the last line taken ended with a newline (False: the file's cut-off tail)."""
        self.done = False
        """Whether every line has been taken."""

    def __iter__(self) -> Iterator[str]:
        try:
            codec = codecs.lookup(self.encoding).name
        except LookupError:
            raise SourceError(f"{self.path}: unknown encoding {self.encoding!r}") from None
        try:
            if _ascii_compatible(codec):
                yield from self._split_bytes(codec)
            else:
                yield from self._split_text()
            self.done = True
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot read: {exc.strerror or exc}") from exc

    def raw(self) -> Iterator[RawLine]:
        """The undecoded lines (ASCII-compatible encodings only); ``OSError`` passes."""
        strip_bom = codecs.lookup(self.encoding).name == "utf-8-sig"
        offset = 0
        with self.path.open("rb") as handle:
            for raw in handle:
                start = offset
                offset += len(raw)
                if strip_bom and self.count == 0 and raw.startswith(_BOM):
                    raw = raw[len(_BOM) :]
                    start += len(_BOM)
                self.count += 1
                self.last_ended = raw.endswith(b"\n")
                yield RawLine(self.count, start, raw)

    def decode(self, line: RawLine, codec: str) -> str:
        """A raw line as text; ``SourceError`` naming the line and byte when it isn't valid."""
        try:
            return line.data.decode("utf-8" if codec == "utf-8-sig" else codec)
        except UnicodeDecodeError as exc:
            raise SourceError(
                f"{self.path}: line {line.number} (byte {line.start + exc.start}) is not valid "
                f"{self.encoding}: {exc.reason}"
            ) from exc

    def _split_bytes(self, codec: str) -> Iterator[str]:
        for line in self.raw():
            yield self.decode(line, codec)

    def _split_text(self) -> Iterator[str]:
        with self.path.open(encoding=self.encoding, newline="") as handle:
            try:
                for text in handle:
                    self.count += 1
                    self.last_ended = text.endswith(("\n", "\r"))
                    yield text
            except UnicodeDecodeError as exc:
                raise SourceError(
                    f"{self.path}: not valid {self.encoding} near line {self.count + 1}: "
                    f"{exc.reason}"
                ) from exc


def _walk(document: Any, dotted: str) -> Any:
    """The value at a dotted path (list items by index); ``KeyError`` naming the missing part."""
    value = document
    walked: list[str] = []
    for part in dotted.split("."):
        walked.append(part)
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(".".join(walked))
    return value


class FileSource:
    """Reads a JSON Lines, JSON or CSV export (format by extension unless configured)."""

    def __init__(self, config: FileSourceConfig) -> None:
        self.config = config
        self.path = config.path
        self._raw_lines = _Lines(config.path, config.encoding)
        self._codec = "utf-8"

    @property
    def format(self) -> Format:
        """The file's format: configured, or picked by its extension."""
        if self.config.format != "auto":
            return self.config.format
        found = _EXTENSIONS.get(self.path.suffix.lower())
        if found is None:
            raise SourceError(
                f"{self.path}: cannot tell the format from the extension "
                f"{self.path.suffix or '(none)'!r}; set source.format to jsonl, json or csv"
            )
        return found

    def describe(self) -> str:
        return f"file {self.path} ({self.config.format})"

    def read(self) -> Iterator[SourceItem]:
        """Yield the file's records; every failure is raised while iterating."""
        fmt = self.format
        if not self.path.is_file():
            what = "is not a file" if self.path.exists() else "does not exist"
            raise SourceError(f"{self.path}: {what}")
        if fmt == "jsonl":
            yield from self._read_jsonl()
        elif fmt == "json":
            yield from self._read_json()
        else:
            yield from self._read_csv()

    # ----------------------------------------------------------------------------------

    def can_read_lines(self) -> bool:
        """Whether ``read_lines`` works here: JSON Lines in an ASCII-compatible encoding."""
        try:
            codec = codecs.lookup(self.config.encoding).name
        except LookupError:
            return False
        return self.format == "jsonl" and _ascii_compatible(codec)

    def read_lines(self) -> Iterator[RawLine]:
        """Yield the JSON Lines file's non-blank lines, undecoded; ``parse_line`` reads one.

        ``read()`` is ``parse_line`` over these, so both apply the same rules: a line is
        decoded, checked for truncation and parsed only in ``parse_line``.
        """
        for block in self.read_blocks():
            for index, line in enumerate(block.lines):
                if line.strip():
                    yield block.row(index)

    def read_blocks(self) -> Iterator[LineBlock]:
        """Yield the JSON Lines file as blocks of whole lines, blank lines included.

        Reads ``BLOCK_BYTES`` at a time and splits on ``\\n`` only (a ``\\r`` inside a
        line is JSON whitespace); a line longer than a block spans several reads.
        """
        if not self.path.is_file():
            what = "is not a file" if self.path.exists() else "does not exist"
            raise SourceError(f"{self.path}: {what}")
        try:
            self._codec = codecs.lookup(self.config.encoding).name
        except LookupError:
            raise SourceError(f"{self.path}: unknown encoding {self.config.encoding!r}") from None
        self._raw_lines = _Lines(self.path, self.config.encoding)
        strip_bom = self._codec == "utf-8-sig"
        number, offset = 1, 0
        for head, ended in self._whole_lines():
            lines = head.split(b"\n")
            start = offset
            if number == 1 and strip_bom and lines[0].startswith(_BOM):
                lines[0] = lines[0][len(_BOM) :]
                start += len(_BOM)
            yield LineBlock(number, start, lines, ended=ended)
            number += len(lines)
            offset += len(head) + 1

    def _whole_lines(self) -> Iterator[tuple[bytes, bool]]:
        """The file a run of whole lines at a time, each run's last newline cut off, and
        whether that newline was there (False only for the file's cut-off tail)."""
        pending: list[bytes] = []  # the start of a line not ended yet
        try:
            with self.path.open("rb") as handle:
                while data := handle.read(BLOCK_BYTES):
                    cut = data.rfind(b"\n")
                    if cut < 0:
                        pending.append(data)
                        continue
                    yield b"".join([*pending, data[:cut]]), True
                    pending = [data[cut + 1 :]] if cut + 1 < len(data) else []
                if pending:
                    yield b"".join(pending), False
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot read: {exc.strerror or exc}") from exc

    def parse_line(self, line: RawLine) -> SourceItem | None:
        """The record of a line from ``read_lines`` (None: a blank line, not a record)."""
        text = self._raw_lines.decode(line, self._codec)
        return self._parse_jsonl(text, line.number, ended=line.data.endswith(b"\n"))

    def _parse_jsonl(self, text: str, number: int, *, ended: bool) -> SourceItem | None:
        if not text.strip():
            return None
        place = f"line {number}"
        try:
            value = _loads(text)
        except ValueError as exc:
            if not ended:
                raise SourceError(
                    f"{self.path}: the last line ({number}) is cut short without a "
                    "newline: the file looks truncated"
                ) from exc
            return UnreadableRow(place, f"not JSON: {exc}")
        if isinstance(value, dict):
            return value
        return UnreadableRow(place, f"a JSON {type(value).__name__}, not an object")

    def _read_jsonl(self) -> Iterator[SourceItem]:
        if self.can_read_lines():
            for line in self.read_lines():
                item = self.parse_line(line)
                if item is not None:
                    yield item
            return
        lines = _Lines(self.path, self.config.encoding)  # UTF-16 and other wide encodings
        for text in lines:
            item = self._parse_jsonl(text, lines.count, ended=lines.last_ended)
            if item is not None:
                yield item

    def _read_json(self) -> Iterator[SourceItem]:
        encoding = self.config.encoding
        try:
            codec = codecs.lookup(encoding).name
        except LookupError:
            raise SourceError(f"{self.path}: unknown encoding {encoding!r}") from None
        data = self._read_bytes()
        bom = 0
        if codec == "utf-8-sig" and data.startswith(_BOM):
            data, bom, encoding = data[len(_BOM) :], len(_BOM), "utf-8"
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise SourceError(
                f"{self.path}: line {line} (byte {bom + exc.start}) is not valid "
                f"{self.config.encoding}: {exc.reason}"
            ) from exc
        del data
        try:
            document = _loads(text)
        except json.JSONDecodeError as exc:
            ending = text.rstrip()[-1:]
            hint = "" if ending in ("]", "}") else " (the file looks truncated)"
            raise SourceError(
                f"{self.path}: not valid JSON at line {exc.lineno} column {exc.colno}: "
                f"{exc.msg}{hint}"
            ) from exc
        except ValueError as exc:
            raise SourceError(f"{self.path}: not valid JSON: {exc}") from exc
        del text
        records_path = self.config.records_path
        if records_path:
            try:
                document = _walk(document, records_path)
            except KeyError as exc:
                raise SourceError(
                    f"{self.path}: records_path {records_path!r} not found "
                    f"(no {exc.args[0]!r} in the document)"
                ) from None
        where = records_path or "the document root"
        if not isinstance(document, list):
            hint = "" if records_path else "; set source.records_path to the array"
            raise SourceError(
                f"{self.path}: {where} is a JSON {type(document).__name__}, "
                f"not an array of records{hint}"
            )
        for index, value in enumerate(document):
            if isinstance(value, dict):
                yield value
            else:
                yield UnreadableRow(
                    f"item {index}", f"a JSON {type(value).__name__}, not an object"
                )

    def _read_bytes(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot read: {exc.strerror or exc}") from exc

    def _read_csv(self) -> Iterator[SourceItem]:
        lines = _Lines(self.path, self.config.encoding)
        reader = csv.reader(lines, delimiter=self.config.csv_delimiter, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise SourceError(f"{self.path}: empty CSV file, not even a header line") from None
        except csv.Error as exc:
            raise SourceError(f"{self.path}: line {lines.count}: bad CSV header: {exc}") from exc
        width = len(header)
        while True:
            first_line = lines.count + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if lines.done:
                    raise SourceError(
                        f"{self.path}: a quoted field opened at line {first_line} never closes: "
                        "the file looks truncated"
                    ) from exc
                yield UnreadableRow(f"line {first_line}", f"bad CSV: {exc}")
                continue
            if not row:
                continue
            if len(row) != width:
                more_or_fewer = "more" if len(row) > width else "fewer"
                yield UnreadableRow(
                    f"line {first_line}",
                    f"{len(row)} fields, {more_or_fewer} than the {width} of the header",
                )
                continue
            yield dict(zip(header, row, strict=True))
