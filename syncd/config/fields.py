"""Field specs: how one value of a document is taken from a record (``path``, ``const``,
``template``, and how a value is coerced, cleaned and unpacked)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from syncd.config.base import _Model

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


def _path_shorthand(value: Any) -> Any:
    return {"path": value} if isinstance(value, str) else value


Spec = Annotated[FieldSpec, BeforeValidator(_path_shorthand)]
