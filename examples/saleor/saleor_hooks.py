"""Escape-hatch callables for the Saleor ``populatedb`` fixture example (see README.md).

The fixture is a Django ``dumpdata`` array: 721 rows of 32 models, normalized. A
product's price, category, type, variants and images live in other rows, joined on
primary keys, and the declarative mapping reads one record at a time. So these
callables:

- reject every row that is not a ``product.product`` (the file source has no filter),
- re-key products to their primary key,
- join the rest from an index of the same file, built once and rebuilt when the file
  changes (the daemon keeps this module imported between runs).

They are imported by module name: put this folder on ``PYTHONPATH``
(``PYTHONPATH=examples/saleor syncd --config examples/saleor/syncd.toml sync``).

Environment: ``SALEOR_FIXTURE`` overrides where the fixture is (default: the path the
example config reads, relative to this file); ``SALEOR_MEDIA_URL`` (``https://shop.example/media/``)
turns the fixture's relative image paths into URLs. Without it no image URL is sent.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

FIXTURE_ENV = "SALEOR_FIXTURE"
MEDIA_URL_ENV = "SALEOR_MEDIA_URL"
DEFAULT_FIXTURE = (
    Path(__file__).resolve().parent / "../../../shared/datasets/saleor/populatedb_data.json"
)
VAMBE_CURRENCY = "USD"
"""The channel currency sent to Vambe; the PLN channel's currency is not on Vambe's list."""


@dataclass
class _Index:
    """The rows a product is joined with, by the primary keys they are joined on."""

    channels: dict[Any, str] = field(default_factory=dict)
    categories: dict[Any, dict[str, Any]] = field(default_factory=dict)
    product_types: dict[Any, dict[str, Any]] = field(default_factory=dict)
    variants: dict[Any, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    prices: dict[Any, dict[str, tuple[Decimal, Decimal]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    media: dict[Any, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))


def _build(rows: list[dict[str, Any]]) -> _Index:
    index = _Index()
    listings = []
    for row in rows:
        model, pk, fields = row.get("model"), row.get("pk"), row.get("fields") or {}
        if model == "channel.channel":
            index.channels[pk] = fields["currency_code"]
        elif model == "product.category":
            index.categories[pk] = fields
        elif model == "product.producttype":
            index.product_types[pk] = fields
        elif model == "product.productvariant":
            index.variants[fields["product"]].append(dict(fields, pk=pk))
        elif model == "product.productvariantchannellisting":
            listings.append(fields)
        elif model == "product.productmedia" and fields.get("image"):
            index.media[fields["product"]].append((fields.get("sort_order") or 0, fields["image"]))
    for fields in listings:
        if fields.get("price_amount") is None:
            continue
        price = Decimal(fields["price_amount"])  # money is a string with 3 decimals
        discounted = Decimal(fields.get("discounted_price_amount") or fields["price_amount"])
        currency = fields.get("currency") or index.channels[fields["channel"]]
        index.prices[fields["variant"]][currency] = (price, discounted)
    for variants in index.variants.values():
        variants.sort(key=lambda variant: (variant.get("sort_order") or 0, variant["pk"]))
    return index


_lock = threading.Lock()
_loaded: tuple[tuple[str, int, int], _Index] | None = None


def _index() -> _Index:
    """The fixture's index, rebuilt when the file's path, size or mtime changes."""
    global _loaded
    path = Path(os.environ.get(FIXTURE_ENV) or DEFAULT_FIXTURE).resolve()
    try:
        stat = path.stat()
    except OSError as exc:
        raise ValueError(f"cannot read the Saleor fixture {path} ({exc.strerror})") from None
    stamp = (str(path), stat.st_size, stat.st_mtime_ns)
    with _lock:
        if _loaded is None or _loaded[0] != stamp:
            rows = json.loads(path.read_text(encoding="utf-8"))
            _loaded = (stamp, _build(rows))
        return _loaded[1]


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _product(record: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    model = record.get("model")
    if model != "product.product":
        raise ValueError(f"not a product: a {model} row (the fixture holds every model)")
    return record["pk"], record.get("fields") or {}


def _category_path(index: _Index, pk: Any) -> str | None:
    names: list[str] = []
    while pk is not None and pk in index.categories and len(names) < 32:
        category = index.categories[pk]
        names.append(category["name"])
        pk = category.get("parent")
    return " > ".join(reversed(names)) or None


def _variant_name(variant: dict[str, Any]) -> str | None:
    """The variant's name, or None when it is only a base64 GraphQL ID (``UHJv...``)."""
    name = variant.get("name") or ""
    try:
        decoded = base64.b64decode(name, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return name or None
    return None if decoded.startswith("ProductVariant:") else name


def _prices(index: _Index, product_pk: Any) -> dict[str, tuple[Decimal, Decimal]]:
    """Per currency: the lowest price and the lowest discounted price over the variants."""
    lowest: dict[str, tuple[Decimal, Decimal]] = {}
    for variant in index.variants.get(product_pk, []):
        for currency, (price, discounted) in index.prices.get(variant["pk"], {}).items():
            if currency in lowest:
                price = min(price, lowest[currency][0])
                discounted = min(discounted, lowest[currency][1])
            lowest[currency] = (price, discounted)
    return lowest


def _image_urls(index: _Index, product_pk: Any) -> tuple[list[str], list[str]]:
    paths = [path for _, path in sorted(index.media.get(product_pk, []))]
    base = os.environ.get(MEDIA_URL_ENV, "").strip()
    urls = [base.rstrip("/") + "/" + path.lstrip("/") for path in paths] if base else []
    return paths, urls


def userflux(record: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """Re-key to the product's pk; add prices per currency, category, type, variants, images."""
    pk, fields = _product(record)
    index = _index()
    properties = document["properties"]
    prices = _prices(index, pk)
    if prices:
        properties["price"] = {currency: _number(low) for currency, (low, _) in prices.items()}
        sale = {c: _number(d) for c, (low, d) in prices.items() if d < low}
        if sale:
            properties["sale_price"] = sale
    category = _category_path(index, fields.get("category"))
    if category:
        properties["category"] = category
    product_type = index.product_types.get(fields.get("product_type")) or {}
    if product_type:
        properties["product_type"] = product_type["name"]
        properties["gift_card"] = product_type.get("kind") == "gift_card"
        properties["shippable"] = bool(product_type.get("is_shipping_required"))
    variants = []
    for variant in index.variants.get(pk, []):
        item: dict[str, Any] = {
            "prices": {c: _number(p) for c, (p, _) in index.prices.get(variant["pk"], {}).items()}
        }
        if variant.get("sku"):
            item["sku"] = variant["sku"]
        name = _variant_name(variant)
        if name:
            item["name"] = name
        variants.append(item)
    if variants:
        properties["variants"] = variants
    paths, urls = _image_urls(index, pk)
    if urls:
        properties["images"] = urls
    elif paths:
        properties["image_paths"] = paths
    document["id"] = str(pk)
    return document


def vambe(record: dict[str, Any], product: dict[str, Any]) -> dict[str, Any]:
    """Re-key to the pk; the lowest price of the USD channel; category and sizes as metadata."""
    pk, fields = _product(record)
    index = _index()
    prices = _prices(index, pk)
    if VAMBE_CURRENCY not in prices:
        channels = ", ".join(sorted(prices)) or "none"
        raise ValueError(f"no price in the {VAMBE_CURRENCY} channel (channels: {channels})")
    low, discounted = prices[VAMBE_CURRENCY]
    product["external_id"] = str(pk)
    product["price"] = _number(discounted)  # what the customer pays in that channel
    product["currency"] = VAMBE_CURRENCY
    metadata = product["metadata"]
    if discounted < low:
        metadata.append({"key": "regular_price", "value": str(_number(low))})
    for currency, (other, _) in sorted(prices.items()):
        if currency != VAMBE_CURRENCY:
            metadata.append({"key": f"price_{currency}", "value": str(_number(other))})
    category = _category_path(index, fields.get("category"))
    if category:
        metadata.append({"key": "category", "value": category})
    product_type = index.product_types.get(fields.get("product_type")) or {}
    if product_type:
        metadata.append({"key": "product_type", "value": product_type["name"]})
    names = [name for v in index.variants.get(pk, []) if (name := _variant_name(v))]
    if len(names) > 1:
        metadata.append({"key": "variants", "value": ", ".join(names)})
    _, urls = _image_urls(index, pk)
    if urls:
        product["file_url"] = urls[0]
    return product
