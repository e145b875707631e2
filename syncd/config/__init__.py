"""The configuration: models that mirror the TOML tables, loaded and validated once.

Every problem is reported at once with its TOML path (``targets[0].type_id: missing``).
Secrets never live in the file: it names environment variables (``*_env`` keys), and
a variable ``NAME_FILE`` holding a path is read when ``NAME`` itself is not set.

One module per concern (``sources``, ``targets``, ``state``, ``schedule``, ``service``,
``fields``, ``loading``), all re-exported here: ``from syncd.config import X`` works for
every name.
"""

from __future__ import annotations

from syncd.config.base import (
    SECRET,
    TRANSPORT,
    Secret,
    Transport,
    raw_secret_fields,
    raw_secret_names,
    resolve_secret,
    secret_fields,
)
from syncd.config.document import SyncdConfig
from syncd.config.feeds import FeedConfig, FeedSyncConfig, WebhookFeedConfig
from syncd.config.fields import FieldSpec, PairsSpec, Separators, Spec, SplitStep, ValueType
from syncd.config.loading import (
    CONFIG_ENV,
    alert_secret_names,
    credential_names,
    load_config,
    parse_config,
    resolve_sqlite_url,
    secret_names,
)
from syncd.config.schedule import ScheduleConfig
from syncd.config.service import HealthConfig, HttpConfig, LoggingConfig
from syncd.config.sources import (
    CONDITION_OPTIONS,
    FILTER_OPERATORS,
    Condition,
    FileSourceConfig,
    HttpAuthConfig,
    HttpSourceConfig,
    PaginationConfig,
    SourceConfig,
    SqlSourceConfig,
    VariantJoinConfig,
    Where,
    WhereCondition,
    parse_condition,
    url_origin,
)
from syncd.config.state import StateConfig
from syncd.config.targets import (
    VAMBE_TYPES,
    AlertsConfig,
    GuardConfig,
    RetryConfig,
    TargetConfig,
    UserfluxMappingConfig,
    UserfluxTargetConfig,
    VambeMappingConfig,
    VambeTargetConfig,
)

__all__ = [
    "CONDITION_OPTIONS",
    "CONFIG_ENV",
    "FILTER_OPERATORS",
    "SECRET",
    "TRANSPORT",
    "VAMBE_TYPES",
    "AlertsConfig",
    "Condition",
    "FeedConfig",
    "FeedSyncConfig",
    "FieldSpec",
    "FileSourceConfig",
    "GuardConfig",
    "HealthConfig",
    "HttpAuthConfig",
    "HttpConfig",
    "HttpSourceConfig",
    "LoggingConfig",
    "PaginationConfig",
    "PairsSpec",
    "RetryConfig",
    "ScheduleConfig",
    "Secret",
    "Separators",
    "SourceConfig",
    "Spec",
    "SplitStep",
    "SqlSourceConfig",
    "StateConfig",
    "SyncdConfig",
    "TargetConfig",
    "Transport",
    "UserfluxMappingConfig",
    "UserfluxTargetConfig",
    "ValueType",
    "VambeMappingConfig",
    "VambeTargetConfig",
    "VariantJoinConfig",
    "WebhookFeedConfig",
    "Where",
    "WhereCondition",
    "alert_secret_names",
    "credential_names",
    "load_config",
    "parse_condition",
    "parse_config",
    "raw_secret_fields",
    "raw_secret_names",
    "resolve_secret",
    "resolve_sqlite_url",
    "secret_fields",
    "secret_names",
    "url_origin",
]
