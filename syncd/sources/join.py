"""Variant rows folded into the parent product that references them, in any order.

The read is spilled to a private SQLite database on disk (stdlib ``sqlite3``, in
``TMPDIR``, gone when the join ends) and read back one product with its variants at a
time: memory holds one product, never the catalog. A variant whose parent is not in the
read (an orphan), a variant claimed by two parents and a variant row given twice are
reported as unreadable rows, so the run holds its deletes rather than trust a doubtful
read. A product's variants are listed in a stable order: by their ``match`` value with
``parent_key`` (re-ordering an export's rows changes nothing), in the parent's own order
with ``listed_in``.
"""

from __future__ import annotations

import itertools
import pickle
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import structlog

from syncd.config import VariantJoinConfig
from syncd.errors import SourceError
from syncd.model import Record, SourceItem, UnreadableRow

log = structlog.get_logger("syncd.source")

_BATCH = 2000
"""Rows written to the spill per transaction."""

_Row = tuple[int, str | None, str | None, str | None, int, str, bytes]
"""(seq, key, match, parent, bad, place, pickled record) as spilled."""
Place = Callable[[], "str | None"]
"""Where the record the source yielded last is (``file.csv:12``), or None: unknown."""
_Claim = tuple[int, int, str, bytes | None]
"""(parent seq, position in its list, variant's match, pickled packed pairs)."""


def join_variants(
    items: Iterable[SourceItem],
    config: VariantJoinConfig,
    key: str,
    place: Place | None = None,
) -> Iterator[SourceItem]:
    """Every product of ``items`` with its variant records in ``config.into`` (and the
    distinct values of ``config.distinct``), in the order the products were read.

    Unreadable rows pass through first; orphans, double claims and repeated variant rows
    come after the products. ``key`` is the source's key path, used to name rows in
    reports and as the default ``match``; ``place`` (the source's) names where a row is
    (``file.csv:12``), else rows are named by their number in the read (``record 8``).
    The read is only over once ``items`` is exhausted, so nothing is yielded but
    unreadable rows until then; a ``SourceError`` from ``items`` propagates.
    """
    with _Spill() as spill:
        numbered = _numbered(items, place)
        if config.parent_key is not None:
            yield from _join_by_parent_key(numbered, config, key, spill)
        else:
            yield from _join_by_list(numbered, config, key, spill)


# --------------------------------------------------------------------------------------
# Variants naming their parent
# --------------------------------------------------------------------------------------

_PRODUCTS_BY_PARENT_KEY = """
SELECT p.seq, p.data, v.data FROM rows p
LEFT JOIN rows v ON v.parent = p.match AND v.parent IS NOT NULL
WHERE p.parent IS NULL AND p.bad = 0
ORDER BY p.seq, v.match, v.key, v.seq
"""

_ORPHANS = """
SELECT v.seq, v.key, v.parent, v.place FROM rows v
WHERE v.parent IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM rows p WHERE p.match = v.parent AND p.parent IS NULL)
ORDER BY v.seq
"""

_SHARED_MATCHES = """
SELECT p.match, p.seq, p.key, p.place FROM rows p
WHERE p.parent IS NULL AND p.match IN (
    SELECT match FROM rows WHERE parent IS NULL AND match IS NOT NULL
    GROUP BY match HAVING COUNT(DISTINCT COALESCE(key, '')) > 1
)
  AND EXISTS (SELECT 1 FROM rows v WHERE v.parent = p.match)
ORDER BY p.match, p.seq
"""
"""Parents (rows of different keys) sharing one ``match`` value that variants name."""

_REPEATED_VARIANTS = """
SELECT v.key, v.seq, v.place, v.parent FROM rows v
WHERE v.parent IS NOT NULL AND v.key IN (
    SELECT key FROM rows WHERE parent IS NOT NULL AND key IS NOT NULL
    GROUP BY key HAVING COUNT(*) > 1
)
ORDER BY v.key, v.seq
"""
"""Variant rows whose key is given more than once (in two files, or twice in one)."""


def _join_by_parent_key(
    items: Iterable[tuple[int, str, SourceItem]],
    config: VariantJoinConfig,
    key: str,
    spill: _Spill,
) -> Iterator[SourceItem]:
    parent_key = config.parent_key or ""
    match = config.match or key
    rows: list[_Row] = []
    for seq, place, item in items:
        if isinstance(item, UnreadableRow):
            yield item
            continue
        parent = _text(_lookup(item, parent_key))
        own = _text(_lookup(item, key))
        matched = _text(_lookup(item, match))
        rows.append((seq, own, matched, parent, 0, place, _dump(item)))
        if len(rows) >= _BATCH:
            spill.add_rows(rows)
            rows = []
    spill.add_rows(rows)
    spill.index()
    problems = [*_shared_matches(spill, match), *_repeated_variants(spill)]
    current: int | None = None
    head: Record = {}
    variants: list[Record] = []
    for seq, data, variant in spill.query(_PRODUCTS_BY_PARENT_KEY):
        if seq != current:
            if current is not None:
                yield _folded(head, variants, config)
            current, head, variants = seq, _load(data), []
        if variant is not None:
            variants.append(_load(variant))
    if current is not None:
        yield _folded(head, variants, config)
    yield from problems
    orphans = (
        UnreadableRow(
            f"variant {row_key!r} ({place})",
            f"its {parent_key} names {parent!r}, which is not in the read ({match} of no "
            "product): a variant is not a product on its own, and its parent may be "
            "missing by mistake",
        )
        for _seq, row_key, parent, place in spill.query(_ORPHANS)
    )
    yield from _orphans(orphans, config)


def _shared_matches(spill: _Spill, match: str) -> list[UnreadableRow]:
    """A report per ``match`` value two parents share (their variants could be either's),
    those parents marked unreadable so that neither is pushed."""
    found = list(spill.query(_SHARED_MATCHES))
    spill.mark_bad(seq for _, seq, _, _ in found)
    return [
        UnreadableRow(
            f"variants of {value!r}",
            f"{len(parents)} products have {match} {value!r} "
            f"({', '.join(f'{k!r} ({p})' for _, _, k, p in parents)}): which one the "
            "variants naming it belong to is unknown, so none of them is read",
        )
        for value, group in itertools.groupby(found, key=lambda row: row[0])
        for parents in [list(group)]
    ]


def _repeated_variants(spill: _Spill) -> list[UnreadableRow]:
    """A report per variant row given twice, its parent marked unreadable (which copy is
    right is unknown); found before the products are read back."""
    found = list(spill.query(_REPEATED_VARIANTS))
    spill.mark_bad_parents({parent for _, _, _, parent in found})
    return [
        UnreadableRow(
            f"variant {variant!r}",
            f"given {len(copies)} times ({', '.join(p for _, _, p, _ in copies)}): which "
            "copy is right is unknown, so the product it belongs to is not read",
        )
        for variant, group in itertools.groupby(found, key=lambda row: row[0])
        for copies in [list(group)]
    ]


def _orphans(
    orphans: Iterator[UnreadableRow], config: VariantJoinConfig
) -> Iterator[UnreadableRow]:
    if config.orphans == "hold":
        yield from orphans
        return
    first = next(orphans, None)
    if first is not None:
        log.warning(
            "syncd.source.orphans_skipped",
            count=1 + sum(1 for _ in orphans),
            first=f"{first.place}: {first.reason}",
        )


# --------------------------------------------------------------------------------------
# Parents listing their variants
# --------------------------------------------------------------------------------------

_DOUBLE_CLAIMS = """
SELECT c.variant, r.seq, r.key, r.place FROM claims c JOIN rows r ON r.seq = c.parent_seq
WHERE c.variant IN (SELECT variant FROM doubled)
GROUP BY c.variant, r.seq
ORDER BY c.variant, r.seq
"""

_REPEATED_LISTED = """
SELECT r.match, r.seq, r.place FROM rows r
WHERE r.match IN (SELECT variant FROM claims) AND r.match IN (
    SELECT match FROM rows WHERE match IS NOT NULL GROUP BY match HAVING COUNT(*) > 1
)
ORDER BY r.match, r.seq
"""
"""Variant rows (rows a parent lists) whose ``match`` value is given more than once."""

_PRODUCTS_BY_LIST = """
SELECT p.seq, p.data, c.pos, c.variant, c.attrs, v.data FROM rows p
LEFT JOIN claims c ON c.parent_seq = p.seq
LEFT JOIN rows v ON v.match = c.variant AND v.seq <> p.seq
WHERE p.bad = 0
  AND NOT EXISTS (SELECT 1 FROM claims x WHERE x.variant = p.match AND x.parent_seq <> p.seq)
  AND NOT EXISTS (
    SELECT 1 FROM claims y JOIN doubled d ON d.variant = y.variant WHERE y.parent_seq = p.seq
  )
ORDER BY p.seq, c.pos, v.seq
"""


def _join_by_list(
    items: Iterable[tuple[int, str, SourceItem]],
    config: VariantJoinConfig,
    key: str,
    spill: _Spill,
) -> Iterator[SourceItem]:
    listed_in = config.listed_in or ""
    match = config.match or key
    rows: list[_Row] = []
    claims: list[_Claim] = []
    for seq, place, item in items:
        if isinstance(item, UnreadableRow):
            yield item
            continue
        row_key = _text(_lookup(item, key))
        own = _text(_lookup(item, match))
        entries, problem = _entries(_lookup(item, listed_in), config)
        if problem is not None:
            yield UnreadableRow(
                f"product {row_key!r} ({place})",
                f"{listed_in}: {problem}; the product is not read",
            )
        rows.append((seq, row_key, own, None, int(problem is not None), place, _dump(item)))
        claims.extend(
            (seq, position, variant, _dump(attrs) if attrs else None)
            for position, (variant, attrs) in enumerate(entries)
            if variant != own
        )
        if len(rows) >= _BATCH or len(claims) >= _BATCH:
            spill.add_rows(rows)
            spill.add_claims(claims)
            rows, claims = [], []
    spill.add_rows(rows)
    spill.add_claims(claims)
    spill.index()
    spill.find_double_claims()
    repeated = _repeated_listed(spill, match)

    current: int | None = None
    head: Record = {}
    variants: list[Record] = []
    taken: set[str] = set()  # one product's variants, against a list naming one twice
    for seq, data, _position, variant, attrs, row in spill.query(_PRODUCTS_BY_LIST):
        if seq != current:
            if current is not None:
                yield _folded(head, variants, config)
            current, head, variants, taken = seq, _load(data), [], set()
        if variant is None or variant in taken:
            continue
        taken.add(variant)
        pairs: Record = _load(attrs) if attrs is not None else {config.listed_key: variant}
        variants.append(_variant_record(_load(row) if row is not None else None, pairs))
    if current is not None:
        yield _folded(head, variants, config)
    yield from _double_claims(spill, listed_in)
    yield from repeated


def _double_claims(spill: _Spill, listed_in: str) -> Iterator[UnreadableRow]:
    for variant, claims in itertools.groupby(spill.query(_DOUBLE_CLAIMS), key=lambda c: c[0]):
        parents = [f"{parent!r} ({place})" for _, _, parent, place in claims]
        yield UnreadableRow(
            f"variant {variant!r}",
            f"listed in {listed_in} of {len(parents)} products ({', '.join(parents)}): "
            "which one it belongs to is unknown, so none of them is read",
        )


def _repeated_listed(spill: _Spill, match: str) -> list[UnreadableRow]:
    """A report per listed variant whose row is given twice, the products listing it
    marked unreadable (which copy is right is unknown); found before products are read."""
    found = list(spill.query(_REPEATED_LISTED))
    spill.mark_bad_claimers({variant for variant, _, _ in found})
    return [
        UnreadableRow(
            f"variant {variant!r}",
            f"a row with {match} {variant!r} is given {len(copies)} times "
            f"({', '.join(p for _, _, p in copies)}): which copy is right is unknown, so "
            "the product listing it is not read",
        )
        for variant, group in itertools.groupby(found, key=lambda row: row[0])
        for copies in [list(group)]
    ]


def _entries(
    value: object, config: VariantJoinConfig
) -> tuple[list[tuple[str, Record]], str | None]:
    """A parent's list of variants as (match, packed pairs) entries, and the first
    problem found (the entries that could be read are still returned: they are claimed)."""
    if value is None or value == "":
        return [], None
    if isinstance(value, str):
        parts: list[Any] = value.split(config.separator)
    elif isinstance(value, list):
        parts = value
    else:
        return [], f"a {type(value).__name__}, not a list of variants"
    entries: list[tuple[str, Record]] = []
    problems: list[str] = []
    for number, part in enumerate(parts, 1):
        shown = f" ({part.strip()!r})" if isinstance(part, str) else ""
        if isinstance(part, dict):
            pairs: Record = part
        elif isinstance(part, str) and config.assign in part:
            parsed = _pairs(part, config)
            if isinstance(parsed, str):
                problems.append(f"entry {number}{shown}: {parsed}")
                continue
            pairs = parsed
        elif isinstance(part, str | int) and not isinstance(part, bool):
            plain = str(part).strip()
            if plain:
                entries.append((plain, {}))
            continue
        else:
            problems.append(f"entry {number} is a {type(part).__name__}")
            continue
        variant = _text(pairs.get(config.listed_key))
        if variant is None:
            problems.append(f"entry {number}{shown} has no {config.listed_key!r}")
            continue
        entries.append((variant, pairs))
    return entries, "; ".join(problems) or None


def _pairs(text: str, config: VariantJoinConfig) -> Record | str:
    """``name=value`` pairs; a piece without ``=`` continues the value before it
    (``color=Black, Gray``). A problem as text."""
    pairs: Record = {}
    last: str | None = None
    for piece in text.split(config.pair_separator):
        name, assign, value = piece.partition(config.assign)
        if not assign:
            if last is None:
                if not piece.strip():
                    continue
                return f"{piece.strip()!r} is not name{config.assign}value"
            pairs[last] = f"{pairs[last]}{config.pair_separator}{piece}".strip()
            continue
        last = name.strip()
        if not last:
            return f"{piece.strip()!r} has no name"
        pairs[last] = value.strip()
    return pairs


def _variant_record(row: Record | None, pairs: Record) -> Record:
    """The variant's row, the packed pairs filling the fields it lacks (or the pairs alone)."""
    if row is None:
        return pairs
    merged = dict(row)
    for name, value in pairs.items():
        if merged.get(name) in (None, ""):
            merged[name] = value
    return merged


# --------------------------------------------------------------------------------------
# Shared
# --------------------------------------------------------------------------------------


def _folded(head: Record, variants: list[Record], config: VariantJoinConfig) -> Record:
    """The parent's record with its variants and their distinct values."""
    record = dict(head)
    record[config.into] = variants
    for field, path in config.distinct_fields().items():
        values: list[Any] = []
        for variant in variants:
            value = _lookup(variant, path)
            for each in value if isinstance(value, list) else [value]:
                item = each.strip() if isinstance(each, str) else each
                if item not in (None, "") and item not in values:
                    values.append(item)
        record[field] = values
    return record


def _numbered(
    items: Iterable[SourceItem], place: Place | None
) -> Iterator[tuple[int, str, SourceItem]]:
    """Items with the ordinal of each record in the read (unreadable rows: 0) and where
    it is: the source's ``place`` when it knows, else ``record N``."""
    seq = 0
    for item in items:
        if isinstance(item, UnreadableRow):
            yield 0, "", item
        else:
            seq += 1
            where = place() if place is not None else None
            yield seq, where or f"record {seq}", item


def _lookup(record: Record, path: str) -> object:
    value: object = record
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _text(value: object) -> str | None:
    """A link value as text (``12`` and ``"12"`` match); None when missing or empty."""
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def _dump(record: Record) -> bytes:
    return pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)


def _load(data: bytes) -> Any:
    return pickle.loads(data)  # noqa: S301 (our own bytes, written by this join)


class _Spill:
    """A private on-disk SQLite database: ``sqlite3.connect("")`` is a temporary file in
    ``TMPDIR``, deleted when closed. Its errors (a full disk) fail the read."""

    def __init__(self) -> None:
        self._where = tempfile.gettempdir()
        try:
            self._db = sqlite3.connect("", check_same_thread=False)
            self._db.executescript(
                """
                PRAGMA journal_mode = OFF;
                PRAGMA synchronous = OFF;
                PRAGMA temp_store = FILE;
                CREATE TABLE rows (
                    seq INTEGER PRIMARY KEY, key TEXT, match TEXT, parent TEXT,
                    bad INTEGER NOT NULL, place TEXT NOT NULL, data BLOB NOT NULL
                );
                CREATE TABLE claims (
                    parent_seq INTEGER NOT NULL, pos INTEGER NOT NULL,
                    variant TEXT NOT NULL, attrs BLOB
                );
                CREATE TABLE doubled (variant TEXT PRIMARY KEY);
                """
            )
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def add_rows(self, rows: list[_Row]) -> None:
        self._write("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def add_claims(self, claims: list[_Claim]) -> None:
        self._write("INSERT INTO claims VALUES (?, ?, ?, ?)", claims)

    def index(self) -> None:
        self._script(
            """
            CREATE INDEX rows_parent ON rows (parent, seq);
            CREATE INDEX rows_match ON rows (match, seq);
            CREATE INDEX rows_key ON rows (key, seq);
            CREATE INDEX claims_parent ON claims (parent_seq, pos);
            CREATE INDEX claims_variant ON claims (variant, parent_seq);
            """
        )

    def find_double_claims(self) -> None:
        self._script(
            """
            INSERT INTO doubled SELECT variant FROM claims
            GROUP BY variant HAVING COUNT(DISTINCT parent_seq) > 1;
            """
        )

    def mark_bad(self, seqs: Iterable[int]) -> None:
        """Mark these rows unreadable: they are not read back as products."""
        self._write("UPDATE rows SET bad = 1 WHERE seq = ?", [(seq,) for seq in seqs])

    def mark_bad_parents(self, matches: Iterable[str | None]) -> None:
        """Mark unreadable the products whose ``match`` is one of ``matches``."""
        self._write(
            "UPDATE rows SET bad = 1 WHERE parent IS NULL AND match = ?",
            [(m,) for m in matches if m is not None],
        )

    def mark_bad_claimers(self, variants: Iterable[str]) -> None:
        """Mark unreadable the products whose list names one of ``variants``."""
        self._write(
            "UPDATE rows SET bad = 1 WHERE seq IN "
            "(SELECT parent_seq FROM claims WHERE variant = ?)",
            [(v,) for v in variants],
        )

    def query(self, sql: str) -> Iterator[Any]:
        try:
            yield from self._db.execute(sql)
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def _write(self, sql: str, rows: list[Any]) -> None:
        if not rows:
            return
        try:
            with self._db:
                self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def _script(self, sql: str) -> None:
        try:
            self._db.executescript(sql)
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def _error(self, exc: sqlite3.Error) -> SourceError:
        return SourceError(f"joining variants (a temporary database in {self._where}): {exc}")

    def __enter__(self) -> _Spill:
        return self

    def __exit__(self, *_: object) -> None:
        self._db.close()
