"""Synthetic catalogs for the benchmark: N realistic products, and a 1% edit of them.

Products come from one seeded random stream, each taking the same number of draws,
so a catalog streams to disk in bounded memory and its edited copy is the same
stream with 1% of the products changed: price and stock changes, rewritten
descriptions, removed attributes (which force a UserFlux FULL_UPDATE), deletes and
new products.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BRANDS = (
    "Acme", "Northwind", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark",
    "Wayne", "Wonka", "Tyrell", "Cyberdyne", "Soylent", "Oscorp", "Aperture", "Monarch",
)  # fmt: skip
CATEGORIES = (
    "Home > Kitchen > Knives", "Home > Kitchen > Cookware", "Home > Bedding > Sheets",
    "Garden > Tools > Pruners", "Sports > Running > Shoes", "Sports > Cycling > Helmets",
    "Electronics > Audio > Headphones", "Electronics > Computers > Keyboards",
    "Fashion > Women > Dresses", "Fashion > Men > Jackets", "Toys > Puzzles", "Books > Cooking",
)  # fmt: skip
ADJECTIVES = (
    "Classic", "Ultra", "Compact", "Premium", "Everyday", "Pro", "Eco", "Vintage", "Smart",
    "Lightweight", "Heavy-Duty", "Deluxe", "Essential", "Modern", "Rustic", "Travel",
)  # fmt: skip
NOUNS = (
    "Chef Knife", "Skillet", "Sheet Set", "Pruner", "Running Shoe", "Helmet", "Headphones",
    "Keyboard", "Wrap Dress", "Rain Jacket", "Puzzle", "Cookbook", "Backpack", "Lamp",
)  # fmt: skip
COLORS = ("black", "white", "red", "navy", "olive", "sand", "grey", "teal", "plum", "rust")
SIZES = ("XS", "S", "M", "L", "XL", "One size", "10 in", "12 in", "Queen", "King")
MATERIALS = ("steel", "cotton", "linen", "aluminium", "leather", "bamboo", "polyester", "oak")
WORDS = (
    "durable", "design", "built", "for", "daily", "use", "with", "a", "comfortable", "grip",
    "and", "a", "finish", "that", "lasts", "crafted", "from", "carefully", "selected",
    "materials", "tested", "in", "real", "kitchens", "gardens", "and", "trails", "easy", "to",
    "clean", "store", "and", "carry", "a", "thoughtful", "gift", "for", "anyone", "who",
    "values", "quality", "tools", "balanced", "weight", "precise", "edges", "breathable",
    "fabric", "reinforced", "seams", "water", "resistant",
)  # fmt: skip
TAGS = ("new", "sale", "bestseller", "gift", "eco", "limited", "bundle", "clearance", "premium")


def product_id(i: int) -> str:
    return f"SKU-{i:07d}"


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choices(WORDS, k=words))
    return text[0].upper() + text[1:] + "."


def _description(rng: random.Random, title: str) -> str:
    paragraphs = "".join(f"<p>{_sentence(rng, rng.randint(12, 30))}</p>" for _ in range(2))
    bullets = "".join(f"<li>{_sentence(rng, rng.randint(3, 7))}</li>" for _ in range(3))
    return f"<h2>{title}</h2>{paragraphs}<ul>{bullets}</ul>"


def make_product(i: int, rng: random.Random) -> dict[str, Any]:
    """Product ``i``, drawing from ``rng`` (always the same number of draws)."""
    brand = rng.choice(BRANDS)
    title = f"{brand} {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {i % 997}"
    description = _description(rng, title)
    cents = rng.randint(199, 299_999)
    price = f"{cents // 100}.{cents % 100:02d}"
    attributes: dict[str, Any] = {
        "color": rng.choice(COLORS),
        "size": rng.choice(SIZES),
        "material": rng.choice(MATERIALS),
        "dimensions": {
            "width_cm": rng.randint(5, 120),
            "height_cm": rng.randint(1, 80),
            "weight_kg": round(rng.uniform(0.1, 25.0), 2),
        },
    }
    if rng.random() < 0.3:
        del attributes["size"]
    compare_at = rng.random() < 0.2
    return {
        "id": product_id(i),
        "title": title,
        "description": description,
        "price": price if cents < 100_000 else f"{cents // 100:,}.{cents % 100:02d}",
        "compare_at_price": f"{(cents * 5 // 4) // 100}.99" if compare_at else None,
        "brand": brand,
        "category": rng.choice(CATEGORIES),
        "tags": rng.sample(TAGS, rng.randint(0, 4)),
        "stock": rng.randint(0, 500),
        "attributes": attributes,
        "image": f"https://cdn.example.com/img/{i % 100_000:05d}/{product_id(i).lower()}.jpg",
        "updated_at": f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
    }


@dataclass(frozen=True)
class Edit:
    """Which products the 1% edit touches, by kind; all chosen from ``range(n)``."""

    prices: frozenset[int]
    descriptions: frozenset[int]
    removals: frozenset[int]
    deletes: frozenset[int]
    creates: tuple[int, ...]

    @property
    def changed(self) -> int:
        """Products whose document changes (creates and deletes included)."""
        return (
            len(self.prices)
            + len(self.descriptions)
            + len(self.removals)
            + len(self.deletes)
            + len(self.creates)
        )


def plan_edit(n: int, fraction: float = 0.01, seed: int = 42) -> Edit:
    """1% of the catalog: half price/stock changes, 15% new descriptions, 10% attribute
    removals, 15% deletes, 10% new products."""
    total = max(10, round(n * fraction))
    picked = random.Random(seed).sample(range(n), total - total // 10)
    cuts = [round(total * share) for share in (0.5, 0.65, 0.75)]
    return Edit(
        prices=frozenset(picked[: cuts[0]]),
        descriptions=frozenset(picked[cuts[0] : cuts[1]]),
        removals=frozenset(picked[cuts[1] : cuts[2]]),
        deletes=frozenset(picked[cuts[2] :]),
        creates=tuple(range(n, n + total // 10)),
    )


def edited(record: dict[str, Any], i: int, edit: Edit) -> dict[str, Any] | None:
    """Product ``i`` after the edit (``None``: deleted); ``record`` is not modified."""
    if i in edit.deletes:
        return None
    if i in edit.prices:
        cents = round(float(record["price"].replace(",", "")) * 100) + 100
        return {
            **record,
            "price": f"{cents // 100}.{cents % 100:02d}",
            "stock": record["stock"] + 3,
        }
    if i in edit.descriptions:
        rng = random.Random(i)
        return {**record, "description": _description(rng, record["title"])}
    if i in edit.removals:
        attributes = {k: v for k, v in record["attributes"].items() if k != "color"}
        return {**record, "attributes": attributes, "tags": []}
    return record


def products(n: int, edit: Edit | None = None, seed: int = 1) -> Iterator[dict[str, Any]]:
    """The catalog of ``n`` products, or its edited version."""
    rng = random.Random(seed)
    for i in range(n):
        record = make_product(i, rng)
        if edit is not None:
            changed = edited(record, i, edit)
            if changed is None:
                continue
            record = changed
        yield record
    if edit is not None:
        for i in edit.creates:
            yield make_product(i, rng)


def write_jsonl(path: Path, n: int, edit: Edit | None = None) -> int:
    """Write the catalog (or its edit) as JSON Lines; returns its size in bytes."""
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    size = 0
    with path.open("w", encoding="utf-8") as handle:
        lines: list[str] = []
        for record in products(n, edit):
            lines.append(dumps(record))
            if len(lines) == 10_000:
                size += handle.write("\n".join(lines) + "\n")
                lines.clear()
        if lines:
            size += handle.write("\n".join(lines) + "\n")
    return size
