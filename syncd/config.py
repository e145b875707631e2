"""The configuration: models that mirror the TOML tables, loaded and validated once.

Every problem is reported at once with its TOML path (``targets[0].type_id: missing``).
Secrets never live in the file: it names environment variables (``*_env`` keys), and
a variable ``NAME_FILE`` holding a path is read when ``NAME`` itself is not set.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
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
    """Paths tried in order when the main value is missing."""
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
    where: dict[str, Any] = Field(default_factory=dict)
    """Keep only records whose field (dotted path) equals the value, or one of a list of
    values (``{ model = "product.product", status = ["publish", "private"] }``). Records
    left out count as absent from the catalog: products already pushed are deleted,
    within the guards. Applied after ``group_by``."""
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
    path: Path
    """The file to read (relative paths are relative to the config file)."""
    format: Literal["auto", "jsonl", "json", "csv"] = "auto"
    """``auto`` picks by extension: .jsonl/.ndjson, .json, .csv."""
    records_path: str | None = None
    """JSON only: dotted path to the array of records (``data.products``); default the root."""
    encoding: str = "utf-8-sig"
    """Text encoding; the default also accepts a UTF-8 byte order mark."""
    csv_delimiter: str = Field(default=",", min_length=1, max_length=1)
    """CSV only: the field delimiter."""
    csv_require_final_newline: bool = True
    """CSV only: a last record without a newline fails the read as a truncated file. Set
    false for exporters that omit the final newline (Shopify): the last record is then
    kept when it has the header's field count and closes its quotes, so a cut inside its
    last field goes unseen."""
    max_document_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    """JSON only: a whole-document file bigger than this (bytes, default 512 MiB) fails the
    read before it is loaded (parsing takes ~10x its size in memory; use JSON Lines)."""


class SqlSourceConfig(_SourceBase):
    """A SQL database read through SQLAlchemy (PostgreSQL, MySQL/MariaDB, SQLite)."""

    kind: Literal["sql"]
    """Selects this source kind."""
    url: str | None = None
    """SQLAlchemy URL without the password (``postgresql+psycopg://syncd@db/shop``)."""
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
    """SQLAlchemy URL; a relative SQLite path is relative to the working directory."""
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
    misfire_grace_s: float = Field(default=3600.0, ge=1)
    """A run missed by up to this long (daemon was busy or down) still runs, once."""
    lease_ttl_s: float = Field(default=60.0, ge=5)
    """How long a target's lock outlives a holder that stopped renewing it."""
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    """On SIGTERM: how long in-flight requests may take to finish."""


class HealthConfig(_Model):
    """The HTTP listener with /healthz, /readyz and /metrics."""

    enabled: bool = True
    """Serve it in ``syncd run`` (``syncd sync`` never does unless asked)."""
    host: str = "0.0.0.0"  # noqa: S104 (the container's port is published on purpose)
    """Address to listen on (all interfaces, for the container)."""
    port: int = Field(default=9102, ge=0, le=65535)
    """Port to listen on."""
    max_failing_s: float = Field(default=2 * 86_400.0, gt=0)
    """/readyz fails when no run succeeded for this long while the last one failed."""


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
    """A PEM file of extra CA certificates; TLS verification itself can't be turned off."""


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
    wanted: list[tuple[str, str]] = []
    for index, target in enumerate(config.targets):
        if target.enabled:
            wanted.append((f"targets[{index}].api_key_env", target.api_key_env))
    source = config.source
    if isinstance(source, SqlSourceConfig):
        if source.url_env:
            wanted.append(("source.url_env", source.url_env))
        if source.password_env:
            wanted.append(("source.password_env", source.password_env))
    if isinstance(source, HttpSourceConfig):
        if source.auth.kind in ("bearer", "header") and source.auth.token_env:
            wanted.append(("source.auth.token_env", source.auth.token_env))
        if source.auth.kind == "basic" and source.auth.password_env:
            wanted.append(("source.auth.password_env", source.auth.password_env))
    if config.state.url_env:
        wanted.append(("state.url_env", config.state.url_env))
    return wanted


def _secret_problems(config: SyncdConfig, environ: Mapping[str, str]) -> list[ConfigProblem]:
    problems = []
    source = config.source
    if isinstance(source, HttpSourceConfig):
        auth = source.auth
        if auth.kind in ("bearer", "header") and not auth.token_env:
            problems.append(
                ConfigProblem("source.auth.token_env", f"missing (needed by {auth.kind})")
            )
        if auth.kind == "basic" and not (auth.username and auth.password_env):
            problems.append(ConfigProblem("source.auth", "basic needs username and password_env"))
    return problems + [
        ConfigProblem(path, f"environment variable {name} is not set (nor {name}_FILE)")
        for path, name in secret_names(config)
        if resolve_secret(name, environ) is None
    ]


def _cross_problems(config: SyncdConfig) -> list[ConfigProblem]:
    problems = []
    seen: dict[str, int] = {}
    for index, target in enumerate(config.targets):
        if target.name in seen:
            problems.append(
                ConfigProblem(
                    f"targets[{index}].name",
                    f"duplicate target name {target.name!r} (also targets[{seen[target.name]}])",
                )
            )
        seen.setdefault(target.name, index)
    schedule = config.schedule
    for key in ("cron", "full_refresh_cron"):
        value = getattr(schedule, key)
        if value and len(value.split()) != 5:
            problems.append(ConfigProblem(f"schedule.{key}", "a crontab needs 5 fields"))
    return problems


def parse_config(
    data: Mapping[str, Any],
    *,
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    source: str = "",
) -> SyncdConfig:
    """Validate a parsed TOML document; raise ``ConfigError`` listing every problem."""
    try:
        config = SyncdConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc), source=source) from None
    problems = _cross_problems(config) + _secret_problems(
        config, os.environ if environ is None else environ
    )
    if problems:
        raise ConfigError(problems, source=source)
    source_config = config.source
    if (
        base_dir is not None
        and isinstance(source_config, FileSourceConfig)
        and not source_config.path.is_absolute()
    ):
        resolved = source_config.model_copy(update={"path": base_dir / source_config.path})
        config = config.model_copy(update={"source": resolved})
    return config


def load_config(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> SyncdConfig:
    """Read and validate the config file named by ``path`` or ``$SYNCD_CONFIG``."""
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
    return parse_config(data, base_dir=file.parent, environ=environ, source=str(file))
