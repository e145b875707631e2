"""Escape-hatch callables for the Shopify product CSV example (see README.md).

Shopify spreads a product over consecutive rows sharing its ``Handle``: the source's
``group_by = "Handle"`` merges them into one record (the first row's fields) whose
``variants`` lists every row. What the declarative mapping can't say is an aggregate
over those rows: the lowest variant price, and the list of options. That is all these
functions add. They are imported by module name, so the folder holding this file must
be on ``PYTHONPATH`` (``PYTHONPATH=examples/shopify syncd --config ...``).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

OPTION_NAMES = {"Colour": "Color"}
"""Option names spelled differently across products, and the spelling used here."""


def _rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    return record.get("variants") or [record]


def _price(text: str) -> Decimal | None:
    try:
        return Decimal(text.strip()) if text and text.strip() else None
    except InvalidOperation:
        raise ValueError(f"Variant Price {text!r} is not a number") from None


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def variants(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The sellable variants of a grouped record: rows with a price (image-only rows have
    none). Each is ``{"options": {name: value}, "price": n, "compare_at_price": n}``."""
    names = [
        OPTION_NAMES.get(record.get(f"Option{i} Name", ""), record.get(f"Option{i} Name", ""))
        for i in (1, 2, 3)
    ]
    found = []
    for row in _rows(record):
        price = _price(row.get("Variant Price", ""))
        if price is None:
            continue
        options = {
            name: row[f"Option{i} Value"]
            for i, name in enumerate(names, start=1)
            if name and name != "Title" and row.get(f"Option{i} Value")
        }
        variant: dict[str, Any] = {"options": options, "price": _number(price)}
        compare_at = _price(row.get("Variant Compare At Price", ""))
        if compare_at is not None:
            variant["compare_at_price"] = _number(compare_at)
        found.append(variant)
    return found


def _option_summary(found: list[dict[str, Any]]) -> dict[str, str]:
    values: dict[str, list[str]] = {}
    for variant in found:
        for name, value in variant["options"].items():
            if value not in values.setdefault(name, []):
                values[name].append(value)
    return {name: ", ".join(items) for name, items in values.items()}


def _images(record: dict[str, Any]) -> list[str]:
    rows = [row for row in _rows(record) if row.get("Image Src")]
    rows.sort(key=lambda row: int(row.get("Image Position") or 0))
    return list(dict.fromkeys(row["Image Src"] for row in rows))


def userflux(record: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """Add ``price`` (the lowest), ``variants``, ``options`` and every image."""
    found = variants(record)
    if not found:
        raise ValueError("no row of this handle has a Variant Price")
    properties = document["properties"]
    properties["price"] = min(variant["price"] for variant in found)
    properties["variants"] = found
    options = _option_summary(found)
    if options:
        properties["options"] = options
    images = _images(record)
    if images:
        properties["images"] = images
    return document


def vambe(record: dict[str, Any], product: dict[str, Any]) -> dict[str, Any]:
    """Set ``price`` to the lowest variant price ("from ..."), and list the options."""
    found = variants(record)
    if not found:
        raise ValueError("no row of this handle has a Variant Price")
    prices = [variant["price"] for variant in found]
    product["price"] = min(prices)
    metadata = product["metadata"]
    if max(prices) != min(prices):
        metadata.append({"key": "max_price", "value": str(max(prices))})
    for name, values in _option_summary(found).items():
        metadata.append({"key": f"option.{name}", "value": values})
    return product
