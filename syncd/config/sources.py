"""Source config: the ``[source]`` table of each kind (file, sql, http), its ``where``
filters and its variant join."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    PlainSerializer,
    PlainValidator,
    field_validator,
    model_validator,
)

from syncd.config.base import SECRET, Secret, _Model
from syncd.config.base import has_password as _has_password

FILTER_OPERATORS = (
    "eq",
    "ne",
    "in",
    "not_in",
    "missing",
    "present",
    "gt",
    "ge",
    "lt",
    "le",
    "regex",
)
"""The operators of a ``where`` condition (``{ price = { gt = 0 } }``)."""

_COMPARISONS = ("gt", "ge", "lt", "le")

CONDITION_OPTIONS = ("decimal_separator",)
"""Keys of a ``where`` condition that shape its tests rather than test: ``decimal_separator``
(``"."`` or ``","``) says how comparisons read a text number (``{ gt = 0,
decimal_separator = "," }`` for ``"12,50"``), as a field's ``decimal_separator`` does."""


@dataclass(frozen=True, slots=True)
class Condition:
    """One field's test in a ``where`` table: every (operator, value) pair must hold.

    Validated at load (``parse_condition``); matched by ``syncd.sources.base``. A value
    of ``in``/``not_in`` is a tuple.
    """

    tests: tuple[tuple[str, Any], ...]

    def as_toml(self) -> dict[str, Any]:
        """The condition as its TOML table (lists for ``in``/``not_in``)."""
        return {op: list(value) if isinstance(value, tuple) else value for op, value in self.tests}


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, (list, tuple, dict))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_condition(value: Any) -> Condition:
    """A ``where`` entry as a ``Condition``: a value (equal), a list (one of) or a table of
    operators. ``ValueError`` listing every problem of the entry."""
    if isinstance(value, Condition):
        return value
    if isinstance(value, list | tuple):
        value = {"in": value}
    elif not isinstance(value, dict):
        value = {"eq": value}
    if not value:
        raise ValueError(f"an empty table tests nothing: give one of {', '.join(FILTER_OPERATORS)}")
    problems: list[str] = []
    tests: list[tuple[str, Any]] = []
    if all(op in CONDITION_OPTIONS for op in value):
        problems.append(f"no test: give one of {', '.join(FILTER_OPERATORS)}")
    for op, operand in value.items():
        if (problem := _operand_problem(op, operand)) is not None:
            problems.append(problem)
        else:
            tests.append((op, tuple(operand) if isinstance(operand, list | tuple) else operand))
    if problems:
        raise ValueError("; ".join(problems))
    return Condition(tuple(tests))


def _operand_problem(op: str, operand: Any) -> str | None:
    """What is wrong with one operator of a ``where`` condition, or None."""
    if op == "decimal_separator":
        return None if operand in (".", ",") else f'{op}: "." or ",", not {operand!r}'
    if op not in FILTER_OPERATORS:
        return f"unknown operator {op!r} (known: {', '.join(FILTER_OPERATORS)})"
    if op in ("eq", "ne") and not _is_scalar(operand):
        return f"{op}: wants a single value, not {type(operand).__name__}"
    if op in ("in", "not_in") and not (
        isinstance(operand, list | tuple) and all(_is_scalar(item) for item in operand)
    ):
        return f"{op}: wants a list of values, got {operand!r}"
    if op in ("missing", "present") and not isinstance(operand, bool):
        return f"{op}: wants true or false, got {operand!r}"
    if op in _COMPARISONS and not _is_number(operand):
        return f"{op}: wants a number, got {operand!r}"
    if op == "regex":
        if not isinstance(operand, str):
            return f"regex: wants a string, got {operand!r}"
        try:
            re.compile(operand)
        except re.error as exc:
            return f"regex: bad regular expression {operand!r}: {exc}"
    return None


WhereCondition = Annotated[
    Condition,
    PlainValidator(parse_condition),
    PlainSerializer(Condition.as_toml, return_type=dict[str, Any]),
]
Where = dict[str, WhereCondition]
"""A ``where`` table: dotted field path -> condition; a record must pass every one."""


class VariantJoinConfig(_Model):
    """Variant rows folded into the parent product that references them, wherever they
    are in the read (before the parent, after it, in another file). Exactly one of
    ``parent_key`` or ``listed_in`` says how a variant and its parent are linked."""

    parent_key: str | None = None
    """Dotted path of the field of a variant row that holds its parent's ``match`` value
    (``parent_sku``). A row with it set is a variant; a row without it is a product."""
    listed_in: str | None = None
    """Dotted path of the parent's field listing its variants: packed entries
    (``sku=A-XS-Black,size=XS,color=Black|sku=A-XS-Gray,...``), plain keys
    (``A-XS-Black|A-XS-Gray``) or a JSON list of strings or objects. A row listed by a
    parent is a variant; every other row is a product."""
    match: str | None = None
    """Dotted path of the field that links the two: the value a variant's ``parent_key``
    names, or that a parent's list names. Default ``source.key``."""
    separator: str = Field(default="|", min_length=1)
    """With ``listed_in``: what separates the entries of the list."""
    pair_separator: str = Field(default=",", min_length=1)
    """With ``listed_in``: what separates the ``name=value`` pairs of one entry."""
    assign: str = Field(default="=", min_length=1)
    """With ``listed_in``: what separates a pair's name from its value."""
    listed_key: str = "sku"
    """With ``listed_in``: the pair of a packed entry that holds the variant's ``match``."""
    into: str = "variants"
    """The field of the folded product listing its variant records (the variant's row,
    its packed pairs filling the fields the row lacks), in the parent's order."""
    distinct: dict[str, str] | list[str] = Field(default_factory=dict)
    """Fields of the folded product listing the distinct values of a variant field, in
    first-seen order, empty values left out: ``{ sizes = "size", colors = "color" }``; a
    list of paths names each ``<into>_<path>`` (``["size"]`` -> ``variants_size``)."""
    orphans: Literal["hold", "skip"] = "hold"
    """A variant whose parent is not in the read: ``hold`` reports it as an unreadable row,
    so the run holds its deletes (its parent may be missing by mistake); ``skip`` leaves
    it out with a warning (exports that keep variants of removed products)."""

    @model_validator(mode="after")
    def _one_link(self) -> VariantJoinConfig:
        if (self.parent_key is None) == (self.listed_in is None):
            raise ValueError("give exactly one of parent_key or listed_in")
        return self

    def distinct_fields(self) -> dict[str, str]:
        """Output field -> variant path, the list form named ``<into>_<path>``."""
        if isinstance(self.distinct, dict):
            return dict(self.distinct)
        return {f"{self.into}_{path.replace('.', '_')}": path for path in self.distinct}


class _SourceBase(_Model):
    key: str = "id"
    """Dotted path of the field that identifies a product in the source."""
    group_by: str | None = None
    """Merge consecutive records sharing this field into one (variants over several rows)."""
    group_into: str = "variants"
    """With ``group_by``: the field of the merged record that lists every row of the group."""
    min_records: int = Field(default=0, ge=0)
    """A read returning fewer records than this is treated as failed."""
    confirm_deletes: bool = True
    """Before deleting products a complete read did not return, take a second look where
    the source can: a SQL query restricted to their keys, an HTTP ``item_url`` answering
    404, a file unchanged since the read began. A product found again, or that the look
    could not reach, is not deleted."""
    delete_after_missing_runs: int | None = Field(default=None, ge=1)
    """Delete a product only once it has been missing from this many consecutive complete
    reads. Default: 1 when the read proves itself complete or a second look confirms
    each delete; 3 for a source that can do neither (an HTTP list paged by number or
    offset with no ``total_path`` and no ``item_url``)."""
    where: Where = Field(default_factory=dict)
    """Keep only records whose every field (dotted path) passes its condition: a value
    (equal), a list (one of) or a table of operators ``eq ne in not_in missing present gt
    ge lt le regex`` (``{ status = "publish", price = { gt = 0 }, sku = { regex = "^A-" }
    }``). Records left out count as absent from the catalog: products already pushed are
    deleted, within the guards. Applied after ``group_by``."""
    variant: VariantJoinConfig | None = None
    """Fold variant rows into their parent product wherever they are in the read
    (``[source.variant]``); off by default. Applied after ``group_by``, before ``where``."""
    skip_unchanged_rows: bool = True
    """Skip mapping a row whose raw bytes (with the target's mapping settings and syncd's
    version; not the URL, concurrency, rate limit and other settings of how requests are
    sent) match what produced a product already pushed, unchanged. A JSON Lines line is
    its own raw bytes (and is not even parsed); a record of any other source (SQL row,
    HTTP, JSON, CSV) is fingerprinted as its JSON. Off for ``group_by``, a callable
    mapping and a full refresh."""
    max_record_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    """Longest record accepted, in bytes (default 10 MiB): a JSON Lines line or a CSV
    record over it is an unreadable row (the read is incomplete), refused before it is
    parsed. SQL rows are not measured."""


class FileSourceConfig(_SourceBase):
    """A catalog export on disk: JSON Lines, JSON or CSV."""

    kind: Literal["file"]
    """Selects this source kind."""
    path: Path | tuple[Path, ...]
    """The file to read, or a list of files and glob patterns (``["exports/*.csv",
    "extra.jsonl"]``) read one after another as one catalog, each with its own header
    and format. Relative paths are relative to the config file. Every file must be read
    whole, and every pattern must match a file, or the read fails."""
    format: Literal["auto", "jsonl", "json", "csv"] = "auto"
    """``auto`` picks by extension: .jsonl/.ndjson, .json, .csv (each file by its own)."""
    records_path: str | None = None
    """JSON only: dotted path to the array of records (``data.products``); default the root."""
    encoding: str = "utf-8-sig"
    """Text encoding; the default also accepts a UTF-8 byte order mark."""
    csv_delimiter: Literal["auto"] | Annotated[str, Field(min_length=1, max_length=1)] = ","
    """CSV only: the field delimiter; ``"auto"`` tells each file's own from its header line
    (the one of ``,`` ``;`` tab ``|`` it holds most often, outside quotes); a header where
    none or two of them tie fails the read naming the file."""
    csv_require_final_newline: bool = True
    """CSV only: a last record without a newline fails the read as a truncated file. Set
    false for exporters that omit the final newline (Shopify): the last record is then
    kept when it has the header's field count and closes its quotes, so a cut inside its
    last field goes unseen."""
    max_document_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    """JSON only: a whole-document file bigger than this (bytes, default 512 MiB) fails the
    read before it is loaded (parsing takes ~10x its size in memory; use JSON Lines)."""

    @field_validator("path")
    @classmethod
    def _some_path(cls, path: Path | tuple[Path, ...]) -> Path | tuple[Path, ...]:
        if isinstance(path, tuple) and not path:
            raise ValueError("give at least one file or pattern")
        return path

    @property
    def paths(self) -> tuple[Path, ...]:
        """``path`` as a tuple of files and glob patterns."""
        return self.path if isinstance(self.path, tuple) else (self.path,)

    def resolved(self, base_dir: Path) -> FileSourceConfig:
        """This config with relative paths made relative to ``base_dir`` (the config's)."""
        if isinstance(self.path, tuple):
            return self.model_copy(update={"path": tuple(base_dir / p for p in self.path)})
        return self.model_copy(update={"path": base_dir / self.path})


class SqlSourceConfig(_SourceBase):
    """A SQL database read through SQLAlchemy (PostgreSQL, MySQL/MariaDB, SQLite)."""

    kind: Literal["sql"]
    """Selects this source kind."""
    url: str | None = None
    """SQLAlchemy URL without the password (``postgresql+psycopg://syncd@db/shop``); a
    relative SQLite path is relative to the config file."""
    url_env: Annotated[str | None, SECRET] = None
    """Environment variable holding the whole URL (use instead of ``url``)."""
    password_env: Annotated[str | None, SECRET] = None
    """Environment variable holding the password to put into ``url``."""
    query: str | None = None
    """The SELECT that yields one row per product."""
    table: str | None = None
    """A table (or view) to read whole, instead of ``query``."""
    statement_timeout_s: float = Field(default=600.0, gt=0)
    """Abort the read when one statement runs longer (seconds)."""
    fetch_size: int = Field(default=5000, ge=1)
    """Rows fetched per round trip from the server-side cursor."""
    connect_timeout_s: float = Field(default=10.0, gt=0)
    """Give up connecting to the database server after this long (seconds)."""
    fingerprint_rows: bool = True
    """PostgreSQL and MariaDB/MySQL: the database hashes each row, and only the rows a
    target does not know are fetched whole (with ``skip_unchanged_rows``). Turn off for a
    query that is not deterministic (``now()``, ``random()``): every row is then fetched
    whole and hashed by syncd, as on SQLite."""

    @field_validator("url")
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        if url is not None and _has_password(url):
            raise ValueError("holds a password: put it in password_env (or the URL in url_env)")
        return url

    @model_validator(mode="after")
    def _one_of(self) -> SqlSourceConfig:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url or url_env")
        if (self.query is None) == (self.table is None):
            raise ValueError("give exactly one of query or table")
        if self.table is not None and not re.fullmatch(r"[A-Za-z_][\w.]*", self.table):
            raise ValueError("table must be a plain (optionally schema-qualified) name")
        return self


class PaginationConfig(_Model):
    """How the HTTP source walks pages."""

    style: Literal["none", "page", "offset", "cursor", "next_url", "link"] = "none"
    """``page``: page/per_page; ``offset``: offset/limit; ``cursor``: a cursor from the body;
    ``next_url``: the next page's URL from the body; ``link``: RFC 8288 ``Link: rel=next``."""
    page_param: str = "page"
    """Query parameter carrying the page number (``page`` style)."""
    size_param: str = "per_page"
    """Query parameter carrying the page size (``limit`` for offset style)."""
    offset_param: str = "offset"
    """Query parameter carrying the offset (``offset`` style)."""
    cursor_param: str = "cursor"
    """Query parameter carrying the cursor (``cursor`` style)."""
    page_size: int = Field(default=100, ge=1)
    """Records asked for per page."""
    first_page: int = 1
    """Number of the first page (``page`` style; some APIs start at 0)."""
    next_path: str = "next"
    """Dotted path in the body to the next cursor or URL (``meta.next_cursor``)."""
    total_path: str | None = None
    """Dotted path in the body to the total record count, checked at the end when set."""
    max_pages: int = Field(default=100_000, ge=1)
    """Fail the read after this many pages (a loop guard)."""


class HttpAuthConfig(_Model):
    """Authentication of the HTTP source; secrets come from the environment."""

    kind: Literal["none", "bearer", "header", "basic"] = "none"
    """How to authenticate: none, bearer token, a named header, or HTTP basic."""
    token_env: Annotated[str | None, Secret(kinds=("bearer", "header"))] = None
    """bearer/header: environment variable holding the token."""
    header: str = "Authorization"
    """header: the header's name (``X-Api-Key``)."""
    username: str | None = None
    """basic: the user name."""
    password_env: Annotated[str | None, Secret(kinds=("basic",), user_field="username")] = None
    """basic: environment variable holding the password."""


class HttpSourceConfig(_SourceBase):
    """A paginated JSON API of the backend."""

    kind: Literal["http"]
    """Selects this source kind."""
    url: str
    """The first page's URL."""
    records_path: str | None = None
    """Dotted path in each page's body to the array of records; default the root."""
    params: dict[str, str] = Field(default_factory=dict)
    """Extra query parameters sent with every page."""
    pagination: PaginationConfig = Field(default_factory=PaginationConfig)
    """How pages are walked (default: a single page)."""
    auth: HttpAuthConfig = Field(default_factory=HttpAuthConfig)
    """Authentication (default: none)."""
    timeout_s: float = Field(default=30.0, gt=0)
    """Per page: read timeout in seconds."""
    max_attempts: int = Field(default=4, ge=1)
    """Tries per page on 429/5xx/timeouts before the read fails."""
    max_page_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    """A page body longer than this (bytes, default 64 MiB) fails the read; the body is
    streamed and the download stopped past the limit."""
    item_url: str | None = None
    """URL template of one product (``https://shop/api/products/{key}``), for the second
    look at products a read did not find: 404/410 confirms one gone. Same origin as
    ``url`` (the credentials go only there); unset: no second look."""

    @model_validator(mode="after")
    def _item_url_same_origin(self) -> HttpSourceConfig:
        if self.item_url is None:
            return self
        if "{key}" not in self.item_url:
            raise ValueError("item_url must contain {key}")
        if url_origin(self.item_url) != url_origin(self.url):
            raise ValueError(
                "item_url must be on the same origin (scheme, host, port) as url: "
                "the source's credentials go only there"
            )
        return self


def url_origin(url: str) -> tuple[str, str, int | None]:
    """A URL's origin: scheme, host (lowercase) and port (the scheme's default filled in)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return (url, "", None)
    scheme = parts.scheme.lower()
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
    return (scheme, (parts.hostname or "").lower(), port)


SourceConfig = Annotated[
    FileSourceConfig | SqlSourceConfig | HttpSourceConfig, Field(discriminator="kind")
]
