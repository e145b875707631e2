"""Vambe: one folder holds the target (``target``), its planner (``planner``) and its
contract (``contract``: the product object's rules, what each HTTP status means). Its
config model is ``syncd.config.VambeTargetConfig``; its mapper ``syncd.mapping.VambeMapper``."""

from syncd.targets.vambe.contract import CURRENCIES, DESCRIPTION_MAX, STATUSES, validate_product
from syncd.targets.vambe.planner import (
    CREATE,
    DELETE,
    UPSERT,
    encode_body,
    plan_vambe,
    split_batch,
)
from syncd.targets.vambe.target import VambeTarget, inspect_policy

__all__ = [
    "CREATE",
    "CURRENCIES",
    "DELETE",
    "DESCRIPTION_MAX",
    "STATUSES",
    "UPSERT",
    "VambeTarget",
    "encode_body",
    "inspect_policy",
    "plan_vambe",
    "split_batch",
    "validate_product",
]
