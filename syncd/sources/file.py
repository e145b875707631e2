"""The file source: a catalog export on disk in JSON Lines, JSON or CSV, in one file or
several (a list of files and glob patterns read one after another as one catalog).

JSON Lines and CSV stream line by line in bounded memory; a line or record over
``source.max_record_bytes`` is an unreadable row, skipped without being kept whole. A
whole-document JSON file is the exception: it is parsed at once (the standard library
has no streaming JSON parser), so it is refused over ``source.max_document_bytes``.

A short read is never taken for a complete one: a JSON Lines or CSV file whose last
record has no newline, a CSV quoted field left open at the end, a JSON document cut
anywhere all fail the read. Repeated keys in a JSON object and repeated CSV column
names are refused rather than resolved last-wins.
"""

from __future__ import annotations

import codecs
import csv
import glob
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate, islice
from pathlib import Path
from typing import Any, Literal, NamedTuple

from syncd.config import FileSourceConfig
from syncd.errors import SourceError
from syncd.model import SourceItem, UnreadableRow
from syncd.sources.base import loads_strict, quick_object, quick_objects

Format = Literal["jsonl", "json", "csv"]

_EXTENSIONS: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
}
_BOM = codecs.BOM_UTF8
_UTF8 = ("utf-8", "utf-8-sig")
"""The codecs whose lines ``quick_object`` may parse undecoded (``utf-8-sig`` only strips
the first line's byte order mark, in ``read_blocks``)."""
_PROBE = '\n\r,;"{}[]:az09'


_OVERSIZED = b"\x00syncd:oversized:"
"""Stands for a JSON Lines line over ``max_record_bytes`` in a ``LineBlock``, followed by
the line's length: never valid JSON (a raw NUL), so it can't hide a real record."""


def _oversized(size: int) -> bytes:
    return _OVERSIZED + str(size).encode()


class _Keys(dict[str, Any]):
    """An object of a JSON document that repeats a key (``_find_repeated_key``)."""

    repeated: str = ""


def _marking_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) == len(pairs):
        return record
    marked = _Keys(record)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.repeated = key
            break
        seen.add(key)
    return marked


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_MARKING_JSON = json.JSONDecoder(parse_constant=_no_constant, object_pairs_hook=_marking_object)
"""Parses a document known to repeat a key, marking each object that does (``_Keys``)."""


def _repeated_key(value: Any) -> str | None:
    """The first key repeated in an object of ``value`` (parsed with ``_marking_object``)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Keys):
            return item.repeated
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


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
    path: Path | None = None
    """The file the line is in (set by ``FileSource.read_blocks``)."""


BLOCK_BYTES = 1 << 22
"""Bytes read at a time by ``FileSource.read_blocks`` (a block is then split on newlines)."""
QUICK_BATCH = 128
"""Lines ``parse_rows`` hands to ``quick_objects`` at a time (their records held at once)."""


class LineBlock:
    """Consecutive lines of a JSON Lines file, undecoded (``FileSource.read_blocks``).

    Holds the lines as one list of bytes, so a reader can fingerprint a block with a
    few list operations and make a ``RawLine`` only of the lines it parses.
    """

    __slots__ = ("_starts", "ended", "first", "lines", "path", "start")

    def __init__(
        self, first: int, start: int, lines: list[bytes], *, ended: bool, path: Path | None = None
    ) -> None:
        self.first = first
        """1-based line number of ``lines[0]``."""
        self.start = start
        """Byte offset of ``lines[0]`` in the file."""
        self.lines = lines
        """Each line's bytes, newline removed (and a leading byte order mark)."""
        self.ended = ended
        """Whether the last line ended with a newline (False: the file's cut-off tail)."""
        self._starts: list[int] | None = None
        self.path = path
        """The file the lines are in."""

    def row(self, index: int) -> RawLine:
        """``lines[index]`` as a ``RawLine`` (its newline put back, when it had one)."""
        if self._starts is None:
            self._starts = list(
                accumulate((len(line) + 1 for line in self.lines), initial=self.start)
            )
        last = index == len(self.lines) - 1
        data = self.lines[index] if last and not self.ended else self.lines[index] + b"\n"
        return RawLine(self.first + index, self._starts[index], data, self.path)


def _without_oversized(block: LineBlock, limit: int) -> LineBlock:
    """The block with each line over ``limit`` bytes replaced by ``_oversized(size)``."""
    starts = list(accumulate((len(line) + 1 for line in block.lines), initial=block.start))
    lines = [_oversized(len(line)) if len(line) > limit else line for line in block.lines]
    kept = LineBlock(block.first, block.start, lines, ended=block.ended, path=block.path)
    kept._starts = starts
    return kept


class _Lines:
    """The decoded lines of a text file, counting them (1-based) as they are taken."""

    def __init__(self, path: Path, encoding: str, limit: int | None = None) -> None:
        self.path = path
        self.encoding = encoding
        self.limit = limit
        """Longest line kept (bytes; characters for wide encodings); a longer one is
        replaced by an empty line and noted in ``oversized``."""
        self.oversized: list[tuple[int, int]] = []
        """(line number, size) of each line over ``limit`` taken so far."""
        self.size = 0
        """Bytes (characters for wide encodings) taken so far."""
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
        limit = self.limit
        with self.path.open("rb") as handle:
            while raw := handle.readline() if limit is None else handle.readline(limit + 1):
                if limit is not None and len(raw) > limit:
                    raw = self._skip_rest(handle, raw, offset)
                start = offset
                offset += len(raw)
                self.size = offset
                if strip_bom and self.count == 0 and raw.startswith(_BOM):
                    raw = raw[len(_BOM) :]
                    start += len(_BOM)
                self.count += 1
                self.last_ended = raw.endswith(b"\n")
                yield RawLine(self.count, start, raw)

    def _skip_rest(self, handle: Any, head: bytes, offset: int) -> bytes:
        """Read past a line over the limit without keeping it; an empty line in its place."""
        size, ended = len(head), head.endswith(b"\n")
        while not ended:
            chunk = handle.readline(BLOCK_BYTES)
            if not chunk:
                break
            size += len(chunk)
            ended = chunk.endswith(b"\n")
        self.oversized.append((self.count + 1, size))
        self.size = offset + size
        return b"\n" if ended else b""

    def _skip_text(self, handle: Any, head: str) -> str:
        """``_skip_rest`` for a wide encoding's decoded text (the limit counts characters)."""
        size, ended = len(head), head.endswith(("\n", "\r"))
        while not ended:
            chunk = handle.readline(BLOCK_BYTES)
            if not chunk:
                break
            size += len(chunk)
            ended = chunk.endswith(("\n", "\r"))
        self.oversized.append((self.count, size))
        self.size += size - len(head)
        return "\n" if ended else ""

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
            limit = self.limit
            try:
                while text := handle.readline() if limit is None else handle.readline(limit + 1):
                    self.count += 1
                    self.size += len(text)
                    if limit is not None and len(text) > limit:
                        text = self._skip_text(handle, text)
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


class _FileReader:
    """Reads one JSON Lines, JSON or CSV file (format by extension unless configured)."""

    def __init__(self, config: FileSourceConfig, path: Path, *, named: bool = False) -> None:
        self.config = config
        self.path = path
        self.named = named
        """Whether rows are placed as ``file:line`` (one of several files), not ``line N``."""
        self._raw_lines = _Lines(path, config.encoding)
        self._codec = "utf-8"
        self._identity: tuple[int, int, int, int] | None = None
        """The file's (device, inode, size, mtime_ns) when the last read began."""
        self.last_place: str | None = None
        """Where the record ``read`` yielded last begins (``file:line`` or ``line N``)."""

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

    @property
    def can_prove_complete(self) -> bool:
        """Always: a file cut short, or with a record that can't be read, fails the read."""
        return True

    def unchanged(self) -> bool:
        """Whether the file is still the one the last read began on (same inode, size and
        modification time); False when it changed since or was never read."""
        return self._identity is not None and self._identity == self._stat()

    def _stat(self) -> tuple[int, int, int, int] | None:
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)

    def read(self) -> Iterator[SourceItem]:
        """Yield the file's records; every failure is raised while iterating."""
        fmt = self.format
        if not self.path.is_file():
            what = "is not a file" if self.path.exists() else "does not exist"
            raise SourceError(f"{self.path}: {what}")
        if fmt != "jsonl" or not self.can_read_lines():  # read_blocks notes it itself
            self._identity = self._stat()
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
        self._identity = self._stat()
        self._raw_lines = _Lines(self.path, self.config.encoding)
        strip_bom = self._codec == "utf-8-sig"
        limit = self.config.max_record_bytes
        number, offset = 1, 0
        for lines, ended, size in self._whole_lines():
            start = offset
            if number == 1 and strip_bom and lines[0].startswith(_BOM):
                lines[0] = lines[0][len(_BOM) :]
                start += len(_BOM)
            block = LineBlock(number, start, lines, ended=ended, path=self.path)
            if size >= 0 and max(map(len, lines)) > limit:
                block = _without_oversized(block, limit)
            yield block
            number += len(lines)
            offset += abs(size) + 1

    def _whole_lines(self) -> Iterator[tuple[list[bytes], bool, int]]:
        """The file a run of whole lines at a time, split on newlines (the run's last
        newline cut off), whether that newline was there (False only for the file's
        cut-off tail), and the run's size in the file. A line growing past
        ``max_record_bytes`` is not kept: it comes as a run of its own, ``_oversized(size)``
        standing for it, its size negated. Each byte is copied once, by the split."""
        limit = self.config.max_record_bytes
        pending: list[bytes] = []  # the start of a line not ended yet
        pending_size = 0
        skipped: int | None = None  # the size so far of an oversized line being skipped
        try:
            with self.path.open("rb", buffering=0) as handle:
                while data := handle.read(BLOCK_BYTES):
                    if skipped is not None:
                        end = data.find(b"\n")
                        if end < 0:
                            skipped += len(data)
                            continue
                        skipped += end
                        yield [_oversized(skipped)], True, -skipped
                        skipped, data = None, data[end + 1 :]
                    lines = data.split(b"\n")
                    if len(lines) == 1:  # no newline: the line goes on
                        pending.append(data)
                        pending_size += len(data)
                        if pending_size > limit:
                            skipped, pending, pending_size = pending_size, [], 0
                        continue
                    rest = lines.pop()
                    if pending:
                        lines[0] = b"".join([*pending, lines[0]])
                    yield lines, True, pending_size + len(data) - len(rest) - 1
                    pending = [rest] if rest else []
                    pending_size = len(rest)
                if skipped is not None:
                    yield [_oversized(skipped)], False, -skipped
                elif pending:
                    head = b"".join(pending)
                    yield [head], False, len(head)
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot read: {exc.strerror or exc}") from exc

    def parse_line(self, line: RawLine) -> SourceItem | None:
        """The record of a line from ``read_lines`` (None: a blank line, not a record)."""
        if self._codec in _UTF8:
            record = quick_object(line.data)
            if record is not None:
                return record
        return self._parse_raw(line)

    def parse_rows(self, block: LineBlock, indexes: Iterable[int]) -> Iterator[SourceItem | None]:
        """``parse_line`` of the block's rows at ``indexes``, in order; a row that
        ``quick_object`` parses is not made a ``RawLine`` first (its newline, JSON
        whitespace, changes nothing to the parse)."""
        quick = self._codec in _UTF8
        lines = block.lines
        rows = iter(indexes)
        while batch := list(islice(rows, QUICK_BATCH)):
            records = quick_objects([lines[i] for i in batch]) if quick else [None] * len(batch)
            for index, record in zip(batch, records, strict=True):
                yield self._parse_raw(block.row(index)) if record is None else record

    def _parse_raw(self, line: RawLine) -> SourceItem | None:
        """``parse_line`` the general way: decoded, parsed by ``loads_strict``."""
        if line.data.startswith(_OVERSIZED):
            size = int(line.data[len(_OVERSIZED) :].rstrip(b"\n"))
            return self._over_limit(line.number, size, ended=line.data.endswith(b"\n"))
        text = self._raw_lines.decode(line, self._codec)
        return self._parse_jsonl(text, line.number, ended=line.data.endswith(b"\n"))

    def _place(self, number: int) -> str:
        return f"{self.path}:{number}" if self.named else f"line {number}"

    def _parse_jsonl(self, text: str, number: int, *, ended: bool) -> SourceItem | None:
        if not text.strip():
            return None
        place = self._place(number)
        try:
            value = loads_strict(text)
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

    def _over_limit(self, number: int, size: int, *, ended: bool) -> UnreadableRow:
        if not ended:
            raise SourceError(
                f"{self.path}: the last line ({number}) is cut short without a newline "
                f"(and over source.max_record_bytes={self.config.max_record_bytes}): "
                "the file looks truncated"
            )
        return UnreadableRow(
            self._place(number),
            f"{size} bytes, over source.max_record_bytes={self.config.max_record_bytes}; "
            "not parsed",
        )

    def _read_jsonl(self) -> Iterator[SourceItem]:
        if self.can_read_lines():
            for line in self.read_lines():
                item = self.parse_line(line)
                if item is not None:
                    self.last_place = self._place(line.number)
                    yield item
            return
        # UTF-16 and other wide encodings
        lines = _Lines(self.path, self.config.encoding, self.config.max_record_bytes)
        for text in lines:
            if lines.oversized and lines.oversized[-1][0] == lines.count:
                yield self._over_limit(lines.count, lines.oversized[-1][1], ended=bool(text))
                continue
            item = self._parse_jsonl(text, lines.count, ended=lines.last_ended)
            if item is not None:
                self.last_place = self._place(lines.count)
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
            document = loads_strict(text)
        except json.JSONDecodeError as exc:
            ending = text.rstrip()[-1:]
            hint = "" if ending in ("]", "}") else " (the file looks truncated)"
            raise SourceError(
                f"{self.path}: not valid JSON at line {exc.lineno} column {exc.colno}: "
                f"{exc.msg}{hint}"
            ) from exc
        except ValueError as exc:
            if str(exc).startswith("duplicate key"):
                raise self._repeated_key_error(text) from exc
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
                self.last_place = f"{self.path}: item {index}" if self.named else f"item {index}"
                yield value
            else:
                place = f"{self.path}: item {index}" if self.named else f"item {index}"
                yield UnreadableRow(place, f"a JSON {type(value).__name__}, not an object")

    def _repeated_key_error(self, text: str) -> SourceError:
        """The error naming the record of a JSON document in which an object repeats a key."""
        try:
            document = _MARKING_JSON.decode(text)
            records = (
                _walk(document, self.config.records_path or "")
                if self.config.records_path
                else document
            )
        except (ValueError, KeyError, RecursionError):
            records = None
        if isinstance(records, list):
            for index, value in enumerate(records):
                repeated = _repeated_key(value)
                if repeated is not None:
                    key = value.get(self.config.key) if isinstance(value, dict) else None
                    named = "" if key is None else f" ({self.config.key} {key!r})"
                    return SourceError(
                        f"{self.path}: item {index}{named} repeats the key {repeated!r} in one "
                        "object; which copy is meant is unknown, the read is refused"
                    )
        return SourceError(
            f"{self.path}: an object outside the records repeats a key; the read is refused"
        )

    def _read_bytes(self) -> bytes:
        limit = self.config.max_document_bytes
        try:
            with self.path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                data = b"" if size > limit else handle.read(limit + 1)
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot read: {exc.strerror or exc}") from exc
        if size > limit or len(data) > limit:
            raise SourceError(
                f"{self.path}: {max(size, len(data))} bytes, over source.max_document_bytes="
                f"{limit}; a JSON document is parsed whole: convert it to JSON Lines or "
                "raise the limit"
            )
        return data

    def _read_csv(self) -> Iterator[SourceItem]:
        limit = self.config.max_record_bytes
        delimiter = self.config.csv_delimiter
        if delimiter == "auto":
            delimiter = self._sniffed_delimiter()
        lines = _Lines(self.path, self.config.encoding, limit)
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        field_limit = csv.field_size_limit(limit)  # process-wide: put back when done
        try:
            yield from self._csv_records(lines, reader)
        finally:
            csv.field_size_limit(field_limit)

    def _csv_records(self, lines: _Lines, reader: Any) -> Iterator[SourceItem]:
        limit = self.config.max_record_bytes
        try:
            header: list[str] = next(reader)
        except StopIteration:
            raise SourceError(f"{self.path}: empty CSV file, not even a header line") from None
        except csv.Error as exc:
            raise SourceError(f"{self.path}: line {lines.count}: bad CSV header: {exc}") from exc
        if lines.oversized:
            raise SourceError(
                f"{self.path}: line 1: the header is over source.max_record_bytes={limit}"
            )
        if not lines.last_ended:
            raise SourceError(
                f"{self.path}: the header (line {lines.count}) is cut short without a newline "
                "and no record follows: the file looks truncated"
            )
        self._check_header(header)
        width = len(header)
        while True:
            first_line, first_byte, oversized = lines.count + 1, lines.size, len(lines.oversized)
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
                if "field larger than field limit" in str(exc):
                    raise SourceError(
                        f"{self.path}: line {lines.count}: a field opened at line {first_line} "
                        f"grows over source.max_record_bytes={limit}; the rest of the file "
                        "can't be parsed reliably"
                    ) from exc
                yield UnreadableRow(self._place(first_line), f"bad CSV: {exc}")
                continue
            if not lines.last_ended:
                checked = self._unterminated(
                    row, first_line, width, oversized < len(lines.oversized)
                )
                if checked is None:
                    continue
                row = checked
            if len(lines.oversized) > oversized or lines.size - first_byte > limit:
                size = (
                    lines.oversized[oversized][1]
                    if len(lines.oversized) > oversized
                    else lines.size - first_byte
                )
                yield UnreadableRow(
                    self._place(first_line),
                    f"{size} bytes or more, over source.max_record_bytes={limit}; not parsed",
                )
                continue
            if not row:
                continue
            if len(row) != width:
                more_or_fewer = "more" if len(row) > width else "fewer"
                yield UnreadableRow(
                    self._place(first_line),
                    f"{len(row)} fields, {more_or_fewer} than the {width} of the header",
                )
                continue
            self.last_place = self._place(first_line)
            yield dict(zip(header, row, strict=True))

    def _sniffed_delimiter(self) -> str:
        """``csv_delimiter = "auto"``: the one of ``_DELIMITERS`` the header line holds most
        often outside quotes; ``SourceError`` when none does or two tie."""
        try:
            with open(self.path, encoding=self.config.encoding, newline="") as handle:
                header = handle.readline(self.config.max_record_bytes)
        except (OSError, UnicodeDecodeError, LookupError) as exc:
            raise SourceError(f"{self.path}: can't read the CSV header: {exc}") from exc
        counts = dict.fromkeys(_DELIMITERS, 0)
        quoted = False
        for char in header:
            if char == '"':
                quoted = not quoted
            elif not quoted and char in counts:
                counts[char] += 1
        best = max(counts.values())
        found = [char for char, count in counts.items() if count == best]
        if best == 0 or len(found) > 1:
            named = " or ".join(repr(c) for c in found) if best else "none of , ; tab |"
            raise SourceError(
                f'{self.path}: line 1: csv_delimiter = "auto" can\'t tell the delimiter from '
                f"the header ({named}): set source.csv_delimiter"
            )
        return found[0]

    def _check_header(self, header: Sequence[str]) -> None:
        seen: set[str] = set()
        for column, name in enumerate(header, start=1):
            if name in seen:
                raise SourceError(
                    f"{self.path}: line 1: the header names column {name!r} more than once "
                    f"(again as column {column}); which one is meant is unknown: rename one"
                )
            seen.add(name)

    def _unterminated(
        self, row: list[str], number: int, width: int, oversized: bool
    ) -> list[str] | None:
        """The file's last record, which has no newline: kept only when
        ``csv_require_final_newline`` is off and it is whole (None: blank, no record)."""
        if not row and not oversized:
            return None
        if self.config.csv_require_final_newline or oversized or len(row) != width:
            raise SourceError(
                f"{self.path}: the last record (line {number}) is cut short without a "
                "newline: the file looks truncated"
                + (
                    ""
                    if self.config.csv_require_final_newline
                    else f" ({len(row)} fields, not the {width} of the header)"
                )
            )
        return row


_GLOB_MAGIC = frozenset("*?[")
_DELIMITERS = (",", ";", "\t", "|")
"""The delimiters ``csv_delimiter = "auto"`` tells apart."""


def match_files(patterns: Sequence[Path]) -> list[Path]:
    """The files a ``source.path`` names, in order: each plain path as it is, each glob
    pattern's matches sorted by name; a file named twice is read once.

    ``SourceError`` naming the path for a missing file, a directory, or a pattern
    matching no file: a catalog with a part missing is not a complete read.
    """
    found: dict[Path, None] = {}
    for pattern in patterns:
        if pattern.exists() or not _GLOB_MAGIC.intersection(str(pattern)):
            if not pattern.is_file():
                what = "is not a file" if pattern.exists() else "does not exist"
                raise SourceError(f"{pattern}: {what}")
            found.setdefault(pattern, None)
            continue
        matches = sorted(
            Path(name) for name in glob.glob(str(pattern), recursive=True) if Path(name).is_file()
        )
        if not matches:
            raise SourceError(
                f"{pattern}: the pattern matches no file; a part of the catalog is missing"
            )
        for match in matches:
            found.setdefault(match, None)
    return list(found)


class FileSource:
    """Reads a catalog export on disk: one file, or several (``source.path`` a list or a
    glob pattern) read one after another as one catalog, each with its own header and
    format, its rows placed as ``file:line``."""

    def __init__(self, config: FileSourceConfig) -> None:
        self.config = config
        self.patterns = config.paths
        """The configured files and glob patterns."""
        self.several = isinstance(config.path, tuple) or any(
            _GLOB_MAGIC.intersection(str(p)) and not p.exists() for p in self.patterns
        )
        """Whether the catalog may span several files (rows are then placed ``file:line``)."""
        self._readers: dict[Path, _FileReader] = {}
        self._reading: _FileReader | None = None
        self._matched: list[Path] | None = None
        """The files the last read began on, in order (None: no read yet)."""

    @property
    def path(self) -> Path:
        """The first configured file or pattern (for messages)."""
        return self.patterns[0]

    def _open(self) -> list[_FileReader]:
        """A reader per file ``source.path`` names now; ``SourceError`` when one is missing."""
        files = match_files(self.patterns)
        readers = {
            path: self._readers.get(path) or _FileReader(self.config, path, named=self.several)
            for path in files
        }
        self._readers = readers
        return list(readers.values())

    @property
    def format(self) -> Format:
        """The format of the (first) file: configured, or picked by its extension."""
        return self._open()[0].format

    def describe(self) -> str:
        named = ", ".join(str(p) for p in self.patterns)
        return f"file {named} ({self.config.format})"

    @property
    def can_prove_complete(self) -> bool:
        """Always: a file cut short, or with a record that can't be read, a missing file or
        a pattern matching nothing, fails the read."""
        return True

    def confirm_absent(self, keys: Sequence[str]) -> set[str]:
        """Every key, when ``source.path`` names the same files as when the last read
        began and each is still the one read (same inode, size and modification time):
        that read was whole, so what it missed is gone. None of them when a file changed,
        appeared or disappeared since (or there was no read): look again next run."""
        if self._matched is None:
            return set()
        try:
            now = match_files(self.patterns)
        except SourceError:
            return set()
        if now != self._matched:
            return set()
        readers = [self._readers.get(path) for path in now]
        if not all(reader is not None and reader.unchanged() for reader in readers):
            return set()
        return set(keys)

    def read(self) -> Iterator[SourceItem]:
        """Yield every file's records, one file after another; every failure is raised
        while iterating, naming the file."""
        self._matched = None
        readers = self._open()
        self._matched = [reader.path for reader in readers]
        for reader in readers:
            self._reading = reader
            yield from reader.read()

    def place(self) -> str | None:
        """Where the record ``read`` yielded last begins: ``file:line`` when the catalog
        may span several files, ``line N`` in a single one (JSON: ``item N``)."""
        return self._reading.last_place if self._reading is not None else None

    def can_read_lines(self) -> bool:
        """Whether ``read_blocks`` works here: every file JSON Lines in an ASCII-compatible
        encoding. ``SourceError`` when a file is missing or of an unknown format."""
        return all(reader.can_read_lines() for reader in self._open())

    def read_lines(self) -> Iterator[RawLine]:
        """Every file's non-blank lines, undecoded (``_FileReader.read_lines``)."""
        for block in self.read_blocks():
            for index, line in enumerate(block.lines):
                if line.strip():
                    yield block.row(index)

    def read_blocks(self) -> Iterator[LineBlock]:
        """Every JSON Lines file as blocks of whole lines, one file after another; each
        block (and each of its rows) names its file for ``parse_line``."""
        self._matched = None
        readers = self._open()
        self._matched = [reader.path for reader in readers]
        for reader in readers:
            yield from reader.read_blocks()

    def parse_line(self, line: RawLine) -> SourceItem | None:
        """The record of a line from ``read_blocks`` (None: a blank line, not a record)."""
        return self._reader_of(line.path).parse_line(line)

    def parse_rows(self, block: LineBlock, indexes: Iterable[int]) -> Iterator[SourceItem | None]:
        """The records of the block's rows at ``indexes`` (``parse_line`` of each)."""
        return self._reader_of(block.path).parse_rows(block, indexes)

    def _reader_of(self, path: Path | None) -> _FileReader:
        reader = self._readers.get(path) if path is not None else None
        if reader is None:
            raise SourceError(f"{path}: a line of a file this read did not open")
        return reader
