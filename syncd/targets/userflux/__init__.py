"""UserFlux: one folder holds the target (``target``), its planner (``planner``) and its
contract (``contract``: what it refuses, what each HTTP status means). Its config model
is ``syncd.config.UserfluxTargetConfig``; its mapper ``syncd.mapping.UserfluxMapper``."""

from syncd.targets.userflux.contract import (
    DELETE_STATUSES,
    STATUSES,
    unsafe_segment,
    validate_payload,
)
from syncd.targets.userflux.planner import (
    DELETE,
    FULL,
    INCREMENTAL,
    UPSERT,
    leaf_paths,
    plan_delete,
    plan_update,
    plan_userflux,
    product_path,
    request_body,
)
from syncd.targets.userflux.target import UserfluxTarget

__all__ = [
    "DELETE",
    "DELETE_STATUSES",
    "FULL",
    "INCREMENTAL",
    "STATUSES",
    "UPSERT",
    "UserfluxTarget",
    "leaf_paths",
    "plan_delete",
    "plan_update",
    "plan_userflux",
    "product_path",
    "request_body",
    "unsafe_segment",
    "validate_payload",
]
