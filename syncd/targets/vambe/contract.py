"""What Vambe's contract refuses (its product object's rules, TARGETS.md), checked
before anything is sent, and what each HTTP status of its answers means (``STATUSES``)."""

from __future__ import annotations

import math
from collections.abc import Collection

from syncd.errors import record_error
from syncd.model import Payload
from syncd.targets.base import DEFAULT_STATUSES, Answer, StatusTable

STATUSES: StatusTable = {
    **DEFAULT_STATUSES,
    401: Answer("fatal", "Vambe refused the API key ({reason}): check ${env}"),
    403: Answer(
        "fatal",
        "Vambe forbade the request ({reason}): the key in ${env} lacks access to block {block_id}",
    ),
    404: Answer(
        "fatal",
        "{what}: {reason}: product block {block_id} not found; check block_id of target {name!r}",
    ),
}
"""Vambe's answers: the defaults, with 401/403 naming the key and 404 the block (a 404
never means "product not found")."""

CURRENCIES = frozenset({"CLP", "ARS", "COP", "MXN", "EUR", "USD", "UF", "PEN", "BRL", "HNL"})
DESCRIPTION_MAX = 8192
_FIELDS = frozenset(
    {
        "name",
        "description",
        "price",
        "currency",
        "type",
        "external_id",
        "metadata",
        "file_url",
        "sku",
    }
)
_REQUIRED = ("name", "description", "price", "currency", "type", "external_id", "metadata")


def validate_product(key: str, product: Payload, well_formed: Collection[str] = ()) -> None:
    """Every rule of Vambe's product object (TARGETS.md), checked before anything is sent;
    one ``RecordError`` lists every field that breaks one.

    ``well_formed`` holding ``metadata``: the mapping code built it (``Mapper.well_formed``),
    so its items are ``{"key": str, "value": str}`` and only the list itself is checked
    on the way that finds a product valid (~0.1 µs an item less); a product found
    otherwise has every rule checked, the metadata's items too."""
    if _plainly_valid(product, "metadata" in well_formed):
        return
    problems = _product_problems(product)
    if problems:
        raise record_error(problems, key=key)


def _plainly_valid(product: Payload, metadata_well_formed: bool = False) -> bool:
    """Whether ``product`` keeps every rule, told in one pass without building the list of
    problems: ~3.5 µs where ``_product_problems`` takes ~5.5. False means only "look
    closer": exact types are asked for where the rules take subclasses (a ``str``
    subclass in the metadata, say), which ``_product_problems`` then accepts."""
    if not product.keys() <= _FIELDS:
        return False
    try:
        name, external_id, kind = product["name"], product["external_id"], product["type"]
        description, price = product["description"], product["price"]
        currency, metadata = product["currency"], product["metadata"]
    except KeyError:
        return False
    if not (
        isinstance(name, str)
        and name
        and isinstance(external_id, str)
        and external_id
        and isinstance(kind, str)
        and kind
        and isinstance(description, str)
        and 0 < len(description) <= DESCRIPTION_MAX
        and (price.__class__ is float or price.__class__ is int)
        and 0 < price < math.inf  # False for NaN
        and isinstance(currency, str)
        and currency in CURRENCIES
        and isinstance(metadata, list)
        and isinstance(product.get("file_url", ""), str)
        and isinstance(product.get("sku", ""), str)
    ):
        return False
    if metadata_well_formed:
        return True
    for item in metadata:  # exactly "key" and "value" (two entries, both strings)
        if (
            item.__class__ is not dict
            or len(item) != 2
            or item.get("key").__class__ is not str
            or item.get("value").__class__ is not str
        ):
            return False
    return True


def _product_problems(product: Payload) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    missing = {name for name in _REQUIRED if name not in product or product[name] is None}
    problems.extend((name, "missing (required by Vambe)") for name in _REQUIRED if name in missing)
    problems.extend(
        (name, "not a field of Vambe's product object") for name in sorted(set(product) - _FIELDS)
    )
    for name in ("name", "external_id", "type"):
        if name not in missing and (not isinstance(product[name], str) or not product[name]):
            problems.append((name, "must be a non-empty string"))
    if "description" not in missing:
        description = product["description"]
        if not isinstance(description, str) or not description:
            problems.append(("description", "must be a non-empty string (1 to 8192 characters)"))
        elif len(description) > DESCRIPTION_MAX:
            problems.append(
                ("description", f"is {len(description)} characters, over {DESCRIPTION_MAX}")
            )
    if "price" not in missing:
        price = product["price"]
        if isinstance(price, bool) or not isinstance(price, int | float):
            problems.append(("price", f"must be a number, not {type(price).__name__}"))
        elif not math.isfinite(price) or price <= 0:
            problems.append(("price", f"must be greater than 0 (got {price})"))
    if "currency" not in missing:
        currency = product["currency"]
        if not isinstance(currency, str) or currency not in CURRENCIES:
            problems.append(
                ("currency", f"{currency!r} is not one of {', '.join(sorted(CURRENCIES))}")
            )
    if "metadata" not in missing:
        metadata = product["metadata"]
        if not isinstance(metadata, list):
            problems.append(("metadata", "must be a list of {key, value} objects"))
        else:
            problems.extend(
                (f"metadata[{index}]", 'must be {"key": string, "value": string}')
                for index, item in enumerate(metadata)
                if not isinstance(item, dict)
                or len(item) != 2  # with both below: exactly "key" and "value"
                or not isinstance(item.get("key"), str)
                or not isinstance(item.get("value"), str)
            )
    for name in ("file_url", "sku"):
        if name in product and not isinstance(product[name], str):
            problems.append((name, "must be a string"))
    return problems
