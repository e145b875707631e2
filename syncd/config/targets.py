"""Target config: the ``[[targets]]`` tables of each kind (UserFlux, Vambe), with their
mappings, retries, guards and alerts.

Each model marks its own fields: ``Transport`` for how and where requests are sent (left
out of the mapping fingerprint), ``Secret`` for the variables holding secrets.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from syncd.config.base import SECRET, TRANSPORT, _Model
from syncd.config.fields import FieldSpec, Spec
from syncd.config.sources import Where


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

    webhook_url_env: Annotated[str | None, SECRET] = None
    """Environment variable holding a URL that gets a JSON POST per change."""
    slack_webhook_url_env: Annotated[str | None, SECRET] = None
    """Environment variable holding a Slack incoming-webhook URL (``{"text": ...}``)."""
    timeout_s: Annotated[float, TRANSPORT] = Field(default=5.0, gt=0, le=60)
    """Per delivery attempt: seconds to wait for the endpoint."""
    attempts: int = Field(default=3, ge=1, le=10)
    """Attempts per alert before it is given up (logged)."""
    backoff_s: float = Field(default=1.0, ge=0, le=60)
    """Seconds before the second attempt, doubled for each further one."""


class _TargetBase(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    """Unique name of the target (used in state, logs, metrics, ``--target``)."""
    enabled: Annotated[bool, TRANSPORT] = True
    """A disabled target is skipped by every run (its state is kept)."""
    api_key_env: Annotated[str, TRANSPORT, SECRET]
    """Environment variable holding the API key."""
    concurrency: Annotated[int, TRANSPORT] = Field(default=8, ge=1, le=256)
    """Requests in flight at once, at most. Above 64, a run starts with 64 and goes up to
    this while syncd's own process keeps up (see ``syncd.inflight``)."""
    rate_limit_per_s: Annotated[float, TRANSPORT] = Field(default=20.0, ge=0)
    """Requests per second at most (0: unlimited)."""
    timeout_s: Annotated[float, TRANSPORT] = Field(default=30.0, gt=0)
    """Per request: read/write timeout in seconds."""
    retry: Annotated[RetryConfig, TRANSPORT] = Field(default_factory=RetryConfig)
    """Retries of one request."""
    guards: Annotated[GuardConfig, TRANSPORT] = Field(default_factory=GuardConfig)
    """Delete guards of this target."""
    rejection_backoff_s: Annotated[float, TRANSPORT] = Field(default=86_400.0, ge=0)
    """A product the target refused is re-sent unchanged only after this long."""
    rejected: Annotated[Literal["withdraw", "keep"], TRANSPORT] = "withdraw"
    """What happens on the target to a product that was pushed and can't be pushed any more
    (rejected by the mapping, the target's contract or the target itself, or a duplicate
    key): ``withdraw`` deletes it from the target, so shoppers never see its old data;
    ``keep`` leaves the last acknowledged version there and reports it as stale on every
    run. Withdrawals count as deletes for the guards."""
    in_doubt_window_s: Annotated[float, TRANSPORT] = Field(default=600.0, ge=0)
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
    base_url: Annotated[str, TRANSPORT] = "https://integration-api.userflux.co"
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
    base_url: Annotated[str, TRANSPORT] = "https://api.vambe.me"
    """The API's base URL (some accounts use https://api.vambe.ai)."""
    block_id: Annotated[str, TRANSPORT] = Field(min_length=1)
    """The ``promptBlockId`` (a UUID) of the product block."""
    batch_size: Annotated[int, TRANSPORT] = Field(default=2000, ge=1, le=2000)
    """Products per create/delete request."""
    product_type: Literal[
        "vambe", "shopify", "woocommerce", "axis", "vtex", "PRODUCT", "SERVICE"
    ] = "vambe"
    """The ``type`` sent with every product (the server's rule is unknown; see TARGETS.md)."""
    mirror_block: Annotated[bool, TRANSPORT] = False
    """On a full refresh, replace the whole block with ``upsert`` (deletes what we did not send)."""
    mapping: VambeMappingConfig = Field(default_factory=VambeMappingConfig)
    """How records become Vambe products."""
    concurrency: Annotated[int, TRANSPORT] = Field(default=2, ge=1, le=64)
    """Batches in flight at once (each carries up to ``batch_size`` products)."""


TargetConfig = Annotated[UserfluxTargetConfig | VambeTargetConfig, Field(discriminator="kind")]
