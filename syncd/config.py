"""The configuration: models that mirror the TOML tables, loaded and validated once.

Every problem is reported at once with its TOML path (``targets[0].type_id: missing``).
Secrets never live in the file: it names environment variables (``*_env`` keys), and
a variable ``NAME_FILE`` holding a path is read when ``NAME`` itself is not set.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from syncd.errors import ConfigError, ConfigProblem

CONFIG_ENV = "SYNCD_CONFIG"
"""Environment variable naming the config file when ``--config`` is not given."""


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, validate_default=True
    )


# --------------------------------------------------------------------------------------
# Field specs: how one value of a document is taken from a record
# --------------------------------------------------------------------------------------

ValueType = Literal["string", "number", "integer", "boolean", "json", "list"]
Aggregate = Literal["min", "max", "sum", "count", "first", "last", "join"]
"""How ``aggregate`` reduces a list to one value."""


def _separators(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


Separators = Annotated[
    tuple[Annotated[str, Field(min_length=1)], ...],
    BeforeValidator(_separators),
    Field(min_length=1),
]
"""One separator or several (a value is cut at any of them); a bare string is one."""


class PairsSpec(_Model):
    """How a cell of packed ``key=value`` pairs is cut (``sku=A-XS,size=XS|sku=A-S,size=S``).

    The value becomes a list of objects, one per item; a fragment without ``kv`` belongs
    to the value before it (``color=Black,Gray`` is ``{"color": "Black,Gray"}``), a key
    given twice in one item keeps every value as a list.
    """

    items: str = "|"
    """Separator between items (each one object); ``""``: the whole cell is one object."""
    fields: str = Field(default=",", min_length=1)
    """Separator between the pairs of one item."""
    kv: str = Field(default="=", min_length=1)
    """Separator between a key and its value (the first one in a pair counts)."""

    @model_validator(mode="after")
    def _distinct_separators(self) -> PairsSpec:
        named = [(n, v) for n, v in (("items", self.items), ("fields", self.fields),
                                     ("kv", self.kv)) if v]  # fmt: skip
        for i, (name, value) in enumerate(named):
            for other, other_value in named[i + 1 :]:
                if value == other_value:
                    raise ValueError(f"{name} and {other} are both {value!r}: use distinct ones")
        return self


class SplitStep(_Model):
    """A nested split: every item of a list cut again (``then = { split = "/" }`` turns
    ``"Women/Tops, Sale"`` split on ``,`` into ``[["Women", "Tops"], ["Sale"]]``)."""

    split: Separators
    """Separator(s) cutting each item into parts."""
    index: int | None = None
    """Keep only this part of each item (0 the first, -1 the last: a category path's leaf)."""
    then: SplitStep | None = None
    """Cut every part again, the same way."""


class FieldSpec(_Model):
    """Where a value comes from. A bare string in the TOML is shorthand for ``{path = "..."}``.

    Exactly one of ``path``, ``const`` or ``template`` gives the value; the other keys
    shape it. A value that is missing, ``null`` or an empty string counts as missing.
    """

    path: str | None = None
    """Dotted path into the record (``images.0.src``, ``meta.brand``)."""
    const: Any = None
    """A constant value."""
    template: str | None = None
    """A string with ``{dotted.path}`` placeholders filled from the record."""
    fallback: tuple[str, ...] = ()
    """Paths tried in order when the main value is missing (an empty list counts as
    missing when fallbacks are given). A fallback's single value skips ``pick`` (the other
    steps apply): ``{ path = "variants", pick = "price", aggregate = "min", fallback =
    ["price"] }`` is the lowest variant price, or the product's own price."""
    default: Any = None
    """The value used when the record has none (after fallbacks)."""
    type: ValueType | None = None
    """Coerce to this type; a value that can't be coerced rejects the record."""
    decimal_separator: Literal[".", ","] = "."
    """For ``number``: which character separates decimals (the other groups thousands)."""
    html: bool = False
    """Turn HTML into plain text (tags dropped, entities decoded, whitespace folded)."""
    max_length: int | None = Field(default=None, ge=1)
    """Truncate longer strings at a word boundary to at most this many characters."""
    required: bool = False
    """Reject the record when the value is missing (instead of omitting it)."""
    index: int | None = None
    """When the value is a list (after ``type``): keep only the item at this position
    (0 the first, -1 the last); missing when the list is shorter. For comma lists such
    as WooCommerce's ``Images``, whose first URL is the main image."""
    split: Separators | None = None
    """Cut a text value into a list at any of these separators (``"\\n"`` for one item per
    line, ``[",", ";"]``); items trimmed, empty ones dropped. A list value is taken as
    already cut."""
    pairs: PairsSpec | None = None
    """Unpack ``key=value`` pairs into a list of objects (``pairs = {}``: ``|``, ``,``, ``=``)."""
    then: SplitStep | None = None
    """Cut every item of the list again (``{ split = "/" }``; ``index = -1`` keeps each leaf)."""
    trim: bool | str = True
    """Strip whitespace around the value and each unpacked item, key and value; a string
    strips these characters too (``"•*"`` for bullets); ``false`` keeps whitespace."""
    pick: str | None = None
    """From a list of objects (``pairs``, a JSON array, joined variants): each one's value
    at this dotted path, objects without it skipped."""
    distinct: bool = False
    """Drop repeated items of a list, keeping the first of each."""
    exclude: tuple[str, ...] = ()
    """Drop list items (or a single value) equal to one of these texts after trimming, such
    as Shopify's placeholder option ``["Default Title"]``; applied after ``distinct``."""
    aggregate: Aggregate | None = None
    """Reduce a list to one value, after ``pick``/``distinct``/``exclude``: ``min``,
    ``max``, ``sum`` (items read as numbers as ``type = "number"`` reads them, with this
    field's ``decimal_separator``; one that isn't a number rejects the record), ``count``,
    ``first``, ``last`` or ``join`` (texts joined with ``join_with``). A list left empty
    gives no value (like a missing one). For a "from" price: ``{ path = "variants", pick =
    "price", aggregate = "min", type = "number" }``."""
    join_with: str = ", "
    """With ``aggregate = "join"``: what goes between the items."""

    @model_validator(mode="after")
    def _aggregating(self) -> FieldSpec:
        if self.aggregate is not None and self.index is not None:
            raise ValueError("give index or aggregate, not both (aggregate gives one value)")
        if self.aggregate is not None and self.type in ("list", "json"):
            raise ValueError(f'aggregate gives one value: type = "{self.type}" can\'t follow it')
        if self.join_with != ", " and self.aggregate != "join":
            raise ValueError('join_with needs aggregate = "join"')
        if any(not item.strip() for item in self.exclude):
            raise ValueError("exclude: an empty text can't be excluded (empty items are dropped)")
        return self

    @model_validator(mode="after")
    def _unpacking(self) -> FieldSpec:
        if self.split is not None and self.pairs is not None:
            raise ValueError("give split or pairs, not both")
        if self.then is not None and self.pairs is not None:
            raise ValueError("then cuts text items: it can't follow pairs (use pick)")
        return self

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        given = [
            name
            for name, value in (
                ("path", self.path),
                ("const", self.const),
                ("template", self.template),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of path, const or template"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


def _has_password(url: str) -> bool:
    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return False


def _path_shorthand(value: Any) -> Any:
    return {"path": value} if isinstance(value, str) else value


Spec = Annotated[FieldSpec, BeforeValidator(_path_shorthand)]


# --------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------


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
    url_env: str | None = None
    """Environment variable holding the whole URL (use instead of ``url``)."""
    password_env: str | None = None
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
    token_env: str | None = None
    """bearer/header: environment variable holding the token."""
    header: str = "Authorization"
    """header: the header's name (``X-Api-Key``)."""
    username: str | None = None
    """basic: the user name."""
    password_env: str | None = None
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


# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------


class RetryConfig(_Model):
    """Retries of one request on 429, 5xx, timeouts and dropped connections."""

    max_attempts: int = Field(default=6, ge=1)
    """Tries per request, the first included."""
    initial_delay_s: float = Field(default=0.5, ge=0)
    """First back-off; doubles each try, with full jitter."""
    max_delay_s: float = Field(default=60.0, ge=0)
    """Longest single wait. A ``Retry-After`` asking for longer leaves the request for the
    next run instead of holding the run up."""
    budget_s: float = Field(default=900.0, ge=0)
    """Seconds from the run's start during which retries may start (a deadline, whatever the
    number of workers); past it, a failing target gets no further request that run."""


class GuardConfig(_Model):
    """Checks on a plan before any delete or full upsert is sent."""

    max_delete_fraction: float = Field(default=0.2, ge=0, le=1)
    """Hold deletes when they exceed this fraction of the target's products."""
    max_delete_count: int | None = Field(default=None, ge=0)
    """Hold deletes when they exceed this count (none: no count limit)."""
    min_source_count: int = Field(default=1, ge=0)
    """Hold deletes when the source read returned fewer records."""
    min_source_fraction: float = Field(default=0.5, ge=0, le=1)
    """Hold deletes when the read is smaller than this fraction of the last complete read."""
    max_reject_fraction: float = Field(default=0.5, ge=0, le=1)
    """A run rejecting more than this fraction of the records read is ``blocked`` (exit 1)
    and sends no deletes or withdrawals: a broken mapping or a wrong constant looks like
    this. The products it could send are still sent."""


class UserfluxMappingConfig(_Model):
    """How a source record becomes a UserFlux product."""

    key: Spec | None = None
    """The product ``id``; default the source's key."""
    properties: dict[str, Spec] = Field(default_factory=dict)
    """Property name → value. A dotted name (``description.full``) builds a nested object."""
    ai_property_overrides: dict[str, Spec] = Field(default_factory=dict)
    """Property path → value that overrides what UserFlux's AI would generate."""
    callable: str | None = None
    """``module:function`` called as ``f(record, document) -> document`` after the declarative
    mapping, for what it can't express; raise ``ValueError`` to reject the record."""


class VambeMappingConfig(_Model):
    """How a source record becomes a Vambe product."""

    key: Spec | None = None
    """The ``external_id``; default the source's key."""
    name: Spec = Field(default_factory=lambda: FieldSpec(path="name"))
    """The product name (default: the ``name`` field)."""
    description: Spec = Field(
        default_factory=lambda: FieldSpec(path="description", html=True, max_length=8192)
    )
    """Natural language for AI search; HTML stripped and truncated at 8192 by default."""
    price: Spec = Field(default_factory=lambda: FieldSpec(path="price", type="number"))
    """The price, a number > 0 (default: the ``price`` field)."""
    currency: Spec = Field(default_factory=lambda: FieldSpec(const="USD"))
    """One of CLP ARS COP MXN EUR USD UF PEN BRL HNL (default: USD)."""
    file_url: Spec | None = None
    """An image or file URL (optional)."""
    sku: Spec | None = None
    """The SKU (optional; newer API versions only)."""
    metadata: list[str] | dict[str, Spec] = Field(default_factory=list)
    """Fields kept as metadata: a list of paths, or label → spec. Values are stringified,
    nested ones flattened to dotted keys."""
    callable: str | None = None
    """``module:function`` called as ``f(record, product) -> product`` after the mapping."""


class AlertsConfig(_Model):
    """Where a target's outcome changing (ok -> failed, blocked, partial, rejecting, and
    back) is announced, once per change. The URLs are secrets: named by variables."""

    webhook_url_env: str | None = None
    """Environment variable holding a URL that gets a JSON POST per change."""
    slack_webhook_url_env: str | None = None
    """Environment variable holding a Slack incoming-webhook URL (``{"text": ...}``)."""
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    """Per delivery attempt: seconds to wait for the endpoint."""
    attempts: int = Field(default=3, ge=1, le=10)
    """Attempts per alert before it is given up (logged)."""
    backoff_s: float = Field(default=1.0, ge=0, le=60)
    """Seconds before the second attempt, doubled for each further one."""


class _TargetBase(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    """Unique name of the target (used in state, logs, metrics, ``--target``)."""
    enabled: bool = True
    """A disabled target is skipped by every run (its state is kept)."""
    api_key_env: str
    """Environment variable holding the API key."""
    concurrency: int = Field(default=8, ge=1, le=256)
    """Requests in flight at once."""
    rate_limit_per_s: float = Field(default=20.0, ge=0)
    """Requests per second at most (0: unlimited)."""
    timeout_s: float = Field(default=30.0, gt=0)
    """Per request: read/write timeout in seconds."""
    retry: RetryConfig = Field(default_factory=RetryConfig)
    """Retries of one request."""
    guards: GuardConfig = Field(default_factory=GuardConfig)
    """Delete guards of this target."""
    rejection_backoff_s: float = Field(default=86_400.0, ge=0)
    """A product the target refused is re-sent unchanged only after this long."""
    rejected: Literal["withdraw", "keep"] = "withdraw"
    """What happens on the target to a product that was pushed and can't be pushed any more
    (rejected by the mapping, the target's contract or the target itself, or a duplicate
    key): ``withdraw`` deletes it from the target, so shoppers never see its old data;
    ``keep`` leaves the last acknowledged version there and reports it as stale on every
    run. Withdrawals count as deletes for the guards."""
    in_doubt_window_s: float = Field(default=600.0, ge=0)
    """A write the target may have applied after syncd gave up on it (a timeout, a dropped
    connection, a 5xx) can land late and undo a newer one. Such products are re-sent whole
    by the first run after this many seconds."""
    alerts: AlertsConfig | None = None
    """This target's own alert channels, instead of the global ``[alerts]`` table."""
    where: Where = Field(default_factory=dict)
    """Send this target only the records passing these conditions (the operators of
    ``source.where``). A record left out is absent from this target only: a product pushed
    before is deleted there, within the guards, never rejected; other targets still get
    it."""


class UserfluxTargetConfig(_TargetBase):
    """UserFlux's Products API: one request per product."""

    kind: Literal["userflux"]
    """Selects this target kind."""
    base_url: str = "https://integration-api.userflux.co"
    """The API's base URL (a fake's URL to try a config)."""
    type_id: str = Field(min_length=1)
    """The product schema's ID (slug), created beforehand in UserFlux."""
    mapping: UserfluxMappingConfig = Field(default_factory=UserfluxMappingConfig)
    """How records become UserFlux products."""


VAMBE_TYPES = ("vambe", "shopify", "woocommerce", "axis", "vtex", "PRODUCT", "SERVICE")


class VambeTargetConfig(_TargetBase):
    """A Vambe product block: batched creates and deletes, optional whole-block upsert."""

    kind: Literal["vambe"]
    """Selects this target kind."""
    base_url: str = "https://api.vambe.me"
    """The API's base URL (some accounts use https://api.vambe.ai)."""
    block_id: str = Field(min_length=1)
    """The ``promptBlockId`` (a UUID) of the product block."""
    batch_size: int = Field(default=2000, ge=1, le=2000)
    """Products per create/delete request."""
    product_type: Literal[
        "vambe", "shopify", "woocommerce", "axis", "vtex", "PRODUCT", "SERVICE"
    ] = "vambe"
    """The ``type`` sent with every product (the server's rule is unknown; see TARGETS.md)."""
    mirror_block: bool = False
    """On a full refresh, replace the whole block with ``upsert`` (deletes what we did not send)."""
    mapping: VambeMappingConfig = Field(default_factory=VambeMappingConfig)
    """How records become Vambe products."""
    concurrency: int = Field(default=2, ge=1, le=64)
    """Batches in flight at once (each carries up to ``batch_size`` products)."""


TargetConfig = Annotated[UserfluxTargetConfig | VambeTargetConfig, Field(discriminator="kind")]


# --------------------------------------------------------------------------------------
# The rest
# --------------------------------------------------------------------------------------


class StateConfig(_Model):
    """Where syncd keeps what each target acknowledged."""

    url: str = "sqlite:///syncd-state.db"
    """SQLAlchemy URL; a relative SQLite path is relative to the config file (the default:
    ``syncd-state.db`` next to it)."""
    url_env: str | None = None
    """Environment variable holding the URL instead (when it carries a password)."""

    @field_validator("url")
    @classmethod
    def _no_password(cls, url: str) -> str:
        if _has_password(url):
            raise ValueError("holds a password: give the whole URL in url_env instead")
        return url

    def resolved_url(self, environ: Mapping[str, str] | None = None) -> str:
        """The URL to open: from ``url_env`` when set, else ``url``."""
        if self.url_env:
            value = resolve_secret(self.url_env, environ)
            if value is None:
                raise ConfigError(f"state.url_env: environment variable {self.url_env} is not set")
            return value
        return self.url

    keep_runs_days: float = Field(default=90.0, ge=0)
    """Runs older than this many days are pruned after each daemon run (0: no age limit);
    a target's latest run is always kept."""
    keep_runs: int = Field(default=1000, ge=0)
    """At most this many runs kept per target (0: no count limit)."""


class ScheduleConfig(_Model):
    """When ``syncd run`` syncs."""

    cron: str | None = "0 3 * * *"
    """Crontab (5 fields) of the incremental sync; default nightly at 03:00."""
    interval_s: float | None = Field(default=None, gt=0)
    """Sync every N seconds instead of the cron."""
    full_refresh_cron: str | None = "0 4 * * 0"
    """Crontab of the full refresh (drift repair); default Sundays 04:00. Empty: never."""
    timezone: str = "UTC"
    """Time zone of the crontabs (an IANA name)."""
    run_at_start: bool = False
    """Run one sync as soon as the daemon starts."""
    catch_up: bool = True
    """At start, run a sync (or full refresh) whose scheduled time passed while no daemon ran,
    judged by the runs recorded in state (none recorded at all: nothing is caught up)."""
    misfire_grace_s: float = Field(default=3600.0, ge=1)
    """A run missed by up to this long (daemon was busy or down) still runs, once."""
    lease_ttl_s: float = Field(default=60.0, ge=1)
    """How long a target's lock outlives a holder that stopped renewing it (seconds, on
    the state database's clock); also how long a replica that stopped renewing its
    heartbeat keeps its share of the targets."""
    share_targets: bool = True
    """Daemons on one state database divide the enabled targets between them (each runs
    its fair share); false: every daemon tries every target and the lease lets one in."""
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    """On SIGTERM: how long in-flight requests may take to finish."""
    max_run_s: float | None = Field(default=None, gt=0)
    """A run's time budget in seconds, reading included (None: no limit). When it runs out
    no request starts any more: acknowledgements are kept, the run is recorded as
    ``incomplete`` with what is left, and the next run carries on (``--max-run-s``)."""


class HealthConfig(_Model):
    """The HTTP listener with /healthz, /readyz and /metrics."""

    enabled: bool = True
    """Serve it in ``syncd run`` (``syncd sync`` never does unless asked)."""
    host: str = "0.0.0.0"  # noqa: S104 (the container's port is published on purpose)
    """Address to listen on (all interfaces, for the container)."""
    port: int = Field(default=9102, ge=0, le=65535)
    """Port to listen on."""
    max_failing_s: float = Field(default=2 * 86_400.0, gt=0)
    """Ignored since readiness no longer depends on runs (failing runs are metrics and
    alerts: ``syncd_runs_total``, ``[alerts]``); kept so older configs still load."""


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level written."""
    format: Literal["auto", "json", "console"] = "auto"
    """``auto``: coloured console on a terminal, JSON lines otherwise."""


class HttpConfig(_Model):
    """Settings of every HTTP client syncd opens."""

    connect_timeout_s: float = Field(default=10.0, gt=0)
    """Seconds to establish a connection."""
    ca_bundle: Path | None = None
    """A PEM file of extra CA certificates (a relative path is relative to the config
    file); TLS verification itself can't be turned off."""


class SyncdConfig(_Model):
    """The whole configuration file."""

    source: SourceConfig
    """The source of truth (``kind`` = file, sql or http)."""
    targets: list[TargetConfig] = Field(min_length=1)
    """The product APIs to mirror into (``kind`` = userflux or vambe)."""
    state: StateConfig = Field(default_factory=StateConfig)
    """Where acknowledged state lives."""
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    """When ``syncd run`` syncs."""
    health: HealthConfig = Field(default_factory=HealthConfig)
    """The health and metrics listener."""
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    """Log level and format."""
    http: HttpConfig = Field(default_factory=HttpConfig)
    """Settings of every HTTP client."""
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    """Alerts on a target's outcome changing (for targets without their own ``alerts``)."""

    def target(self, name: str) -> TargetConfig:
        for target in self.targets:
            if target.name == name:
                return target
        raise ConfigError(
            f"no target named {name!r}; configured: {', '.join(t.name for t in self.targets)}"
        )


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------

_MESSAGES = {
    "missing": "missing",
    "extra_forbidden": "unknown key",
}
_UNION_TAGS = {
    "file",
    "sql",
    "http",
    "userflux",
    "vambe",
    "function-after[_one_source(), FieldSpec]",
}


def _toml_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _UNION_TAGS and (previous == "source" or isinstance(previous, int)):
            pass  # the discriminator pydantic inserts: `source.file.path` is `source.path`
        elif part.startswith(("function-", "list[", "dict[")):
            pass
        else:
            out += f".{part}" if out else str(part)
        previous = part
    return out


def _problems(error: ValidationError) -> list[ConfigProblem]:
    problems = []
    for item in error.errors(include_url=False):
        message = _MESSAGES.get(item["type"], item["msg"])
        message = message.removeprefix("Value error, ")
        problems.append(ConfigProblem(_toml_path(tuple(item["loc"])), message))
    return problems


def resolve_secret(env_name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of a secret named by an environment variable (or ``NAME_FILE``)."""
    environ = os.environ if environ is None else environ
    value = environ.get(env_name)
    if value:
        return value
    file_name = environ.get(f"{env_name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").strip() or None
        except OSError:
            return None
    return None


def secret_names(config: SyncdConfig) -> list[tuple[str, str]]:
    """Every secret the config names: (TOML path, environment variable)."""
    return _raw_secret_names(config.model_dump())


def _table(data: Any, name: str) -> Mapping[str, Any]:
    value = data.get(name) if isinstance(data, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value else None


def _raw_targets(data: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    targets = data.get("targets")
    if not isinstance(targets, list):
        return []
    return [(i, t) for i, t in enumerate(targets) if isinstance(t, Mapping)]


def _raw_secret_names(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The secrets a (possibly invalid) parsed document names: read defensively, so a
    file with other problems still gets its missing variables reported in the same pass."""
    wanted: list[tuple[str, str]] = []
    for index, target in _raw_targets(data):
        name = _text(target, "api_key_env")
        if name and target.get("enabled", True) is not False:
            wanted.append((f"targets[{index}].api_key_env", name))
    source = _table(data, "source")
    if source.get("kind") == "sql":
        for key in ("url_env", "password_env"):
            if name := _text(source, key):
                wanted.append((f"source.{key}", name))
    if source.get("kind") == "http":
        auth = _table(source, "auth")
        kind = auth.get("kind", "none")
        if kind in ("bearer", "header") and (name := _text(auth, "token_env")):
            wanted.append(("source.auth.token_env", name))
        if kind == "basic" and (name := _text(auth, "password_env")):
            wanted.append(("source.auth.password_env", name))
    if name := _text(_table(data, "state"), "url_env"):
        wanted.append(("state.url_env", name))
    alert_tables = [("alerts", _table(data, "alerts"))] + [
        (f"targets[{index}].alerts", _table(target, "alerts"))
        for index, target in _raw_targets(data)
        if target.get("enabled", True) is not False
    ]
    for path, table in alert_tables:
        for key in ("webhook_url_env", "slack_webhook_url_env"):
            if name := _text(table, key):
                wanted.append((f"{path}.{key}", name))
    return wanted


def alert_secret_names(config: SyncdConfig) -> list[tuple[str, str]]:
    """The alert webhook URLs the config names: (TOML path, environment variable)."""
    tables = [("alerts", config.alerts)] + [
        (f"targets[{index}].alerts", target.alerts)
        for index, target in enumerate(config.targets)
        if target.alerts is not None and target.enabled
    ]
    return [
        (f"{path}.{key}", name)
        for path, table in tables
        for key in ("webhook_url_env", "slack_webhook_url_env")
        if (name := getattr(table, key))
    ]


def _secret_problems(
    data: Mapping[str, Any], environ: Mapping[str, str], *, require_secrets: bool = True
) -> list[ConfigProblem]:
    problems = []
    source = _table(data, "source")
    if source.get("kind") == "http":
        auth = _table(source, "auth")
        kind = auth.get("kind", "none")
        if kind in ("bearer", "header") and not _text(auth, "token_env"):
            problems.append(ConfigProblem("source.auth.token_env", f"missing (needed by {kind})"))
        if kind == "basic" and not (_text(auth, "username") and _text(auth, "password_env")):
            problems.append(ConfigProblem("source.auth", "basic needs username and password_env"))
    if not require_secrets:
        return problems
    return problems + [
        ConfigProblem(path, f"environment variable {name} is not set (nor {name}_FILE)")
        for path, name in _raw_secret_names(data)
        if resolve_secret(name, environ) is None
    ]


def _cross_problems(data: Mapping[str, Any]) -> list[ConfigProblem]:
    """Problems across tables, read from the parsed document (valid or not), so they are
    reported with the validation problems in one pass."""
    problems = []
    seen: dict[str, int] = {}
    for index, target in _raw_targets(data):
        name = target.get("name")
        if not isinstance(name, str):
            continue
        if name in seen:
            problems.append(
                ConfigProblem(
                    f"targets[{index}].name",
                    f"duplicate target name {name!r} (also targets[{seen[name]}])",
                )
            )
        seen.setdefault(name, index)
    schedule = _table(data, "schedule")
    for key, default in (("cron", "0 3 * * *"), ("full_refresh_cron", "0 4 * * 0")):
        value = schedule.get(key, default)
        if isinstance(value, str) and value and len(value.split()) != 5:
            problems.append(ConfigProblem(f"schedule.{key}", "a crontab needs 5 fields"))
    return problems


_SQLITE_URL = re.compile(r"^(sqlite(?:\+\w+)?):///(?P<database>[^?]*)(?P<query>\?.*)?$")


def resolve_sqlite_url(url: str, base_dir: Path) -> str:
    """A SQLite URL whose file path is relative, made absolute against ``base_dir`` (the
    config file's folder). Other URLs, absolute paths, ``:memory:`` and ``file:`` URIs
    are returned unchanged."""
    match = _SQLITE_URL.match(url)
    if match is None:
        return url
    database = match["database"]
    if not database or database == ":memory:" or database.startswith(("/", "file:")):
        return url
    located = Path(os.path.abspath(base_dir / database))
    return f"{match[1]}:///{located}{match['query'] or ''}"


def _resolved_paths(config: SyncdConfig, base_dir: Path) -> SyncdConfig:
    """Every path option of the file made absolute against the config file's folder:
    ``source.path``, a SQLite ``source.url``, a SQLite ``state.url``, ``http.ca_bundle``.
    (URLs from environment variables are used as given.)"""
    base_dir = Path(os.path.abspath(base_dir))  # ``..`` folded, symlinks kept
    update: dict[str, Any] = {}
    source = config.source
    if isinstance(source, FileSourceConfig):
        update["source"] = source.resolved(base_dir)  # absolute paths stay as they are
    if isinstance(source, SqlSourceConfig) and source.url is not None:
        url = resolve_sqlite_url(source.url, base_dir)
        if url != source.url:
            update["source"] = source.model_copy(update={"url": url})
    state_url = resolve_sqlite_url(config.state.url, base_dir)
    if state_url != config.state.url:
        update["state"] = config.state.model_copy(update={"url": state_url})
    bundle = config.http.ca_bundle
    if bundle is not None and not bundle.is_absolute():
        update["http"] = config.http.model_copy(update={"ca_bundle": base_dir / bundle})
    return config.model_copy(update=update) if update else config


def parse_config(
    data: Mapping[str, Any],
    *,
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    source: str = "",
    require_secrets: bool = True,
) -> SyncdConfig:
    """Validate a parsed TOML document; raise ``ConfigError`` listing every problem.

    Every problem comes in one pass: the models' own, those across tables, and the
    environment variables that are not set. ``require_secrets=False`` (the read-only
    commands) does not ask for the secrets. With ``base_dir``, every path option is
    resolved against it (see ``_resolved_paths``).
    """
    environ = os.environ if environ is None else environ
    problems: list[ConfigProblem] = []
    config: SyncdConfig | None = None
    try:
        config = SyncdConfig.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc)
    reported = {str(p) for p in problems}
    problems += [
        p
        for p in _cross_problems(data)
        + _secret_problems(data, environ, require_secrets=require_secrets)
        if str(p) not in reported
    ]
    if problems or config is None:
        raise ConfigError(problems, source=source)
    if base_dir is not None:
        config = _resolved_paths(config, base_dir)
    return config


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    require_secrets: bool = True,
) -> SyncdConfig:
    """Read and validate the config file named by ``path`` or ``$SYNCD_CONFIG``.

    ``require_secrets=False``: the environment variables holding secrets need not be set
    (for the commands that only read the state database)."""
    environ = os.environ if environ is None else environ
    if path is None:
        path = environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"no config file: pass --config PATH or set {CONFIG_ENV}")
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {file} is not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from None
    return parse_config(
        data,
        base_dir=file.parent,
        environ=environ,
        source=str(file),
        require_secrets=require_secrets,
    )
