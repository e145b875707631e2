"""Plain text from HTML, cutting text on a word boundary, and unpacking packed cells.

Pure functions over strings, used by the mapping (``html = true``, ``max_length``,
``split``, ``pairs``) and offered to hooks by ``syncd.toolbox``. Bad text is ``ValueError``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from html import unescape
from html.parser import HTMLParser
from typing import cast

_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "dd", "details", "div", "dl", "dt",
        "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
        "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary",
        "table", "tbody", "thead", "tfoot", "tr", "ul", "caption",
    }
)  # fmt: skip
"""Tags that start and end a line."""
_CELL_TAGS = frozenset({"td", "th"})
"""Tags that stand apart from their neighbours by a space."""
_SKIPPED_TAGS = frozenset({"script", "style", "template", "noscript", "head"})
"""Tags whose content is not text meant for a reader."""

_BREAK = None
"""Marks a line break among the collected text pieces."""


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str | None] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self.skipping += 1
        elif tag == "br" or tag in _BLOCK_TAGS:
            self.pieces.append(_BREAK)
        elif tag in _CELL_TAGS:
            self.pieces.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.pieces.append(_BREAK)
        elif tag in _CELL_TAGS:
            self.pieces.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.pieces.append(data)


def html_to_text(html: str) -> str:
    """The text a reader sees in ``html``: tags dropped (script and style with their
    content), entities decoded, block tags and ``<br>`` as line breaks, runs of
    whitespace folded into one space, blank lines dropped, ends stripped.
    """
    if "<" not in html and "&" not in html:
        return " ".join(html.split())
    fast = _bare_html_text(html)
    if fast is None:
        fast = _simple_html_text(html)
    return fast if fast is not None else _parsed_html_text(html)


def _parsed_html_text(html: str) -> str:
    """``html_to_text`` by the standard library's HTML parser: any HTML."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    lines: list[str] = []
    line: list[str] = []
    for piece in parser.pieces:
        if piece is _BREAK:
            text = " ".join("".join(line).split())
            if text:
                lines.append(text)
            line.clear()
        else:
            line.append(piece)
    text = " ".join("".join(line).split())
    if text:
        lines.append(text)
    return "\n".join(lines)


_SPACE = "[ \t\n\r\f]"
_SIMPLE_TAG = re.compile(
    rf"<(?:([a-zA-Z][a-zA-Z0-9]*)"  # a start tag's name
    rf"(?:{_SPACE}+[a-zA-Z_:][-a-zA-Z0-9_:.]*"  # its attributes, values quoted or not
    rf"(?:{_SPACE}*={_SPACE}*(?:\"[^\"<>]*\"|'[^'<>]*'|[^ \t\n\r\f\"'<>=`]+))?)*"
    rf"{_SPACE}*(/?)"  # self-closing
    rf"|/([a-zA-Z][a-zA-Z0-9]*){_SPACE}*)>"  # an end tag's name
)
"""A start or end tag that every HTML parser reads alike: a plain name, plain attributes
(no ``<`` or ``>`` inside their values)."""
_RAW_TEXT_TAGS = _SKIPPED_TAGS | {
    "textarea", "title", "xmp", "iframe", "noembed", "noframes", "plaintext",
}  # fmt: skip
"""Tags whose content a parser may read as raw text (not tags): left to the parser."""


_LATIN1_PRINTABLE = bytes(c if chr(c).isprintable() else 0x3F for c in range(0x100))
"""Each Latin-1 character ``str.isprintable`` takes as itself, each other as ``?``: the
controls, among them every whitespace character but the space, DEL, U+0080 to U+00A0
and the soft hyphen."""


def printable(text: str) -> bool:
    """``text.isprintable()``, by a table of bytes when ``text`` is Latin-1 (a copy of its
    characters, one byte each, as descriptions are): a translation that changes nothing
    is the bytes themselves (CPython returns the same object, which ``==`` sees at once),
    ~5.7k instructions for a 450-character description where ``isprintable`` takes ~11.2k
    and deleting the unprintable bytes (``translate(None, ...)``) ~8.5k."""
    try:
        data = text.encode("latin-1")
    except UnicodeEncodeError:
        return text.isprintable()
    return data.translate(_LATIN1_PRINTABLE) == data


def _folded(text: str) -> str:
    """``text`` with runs of whitespace as one space, ends stripped (``" ".join(split())``):
    text without any whitespace but single spaces only needs its ends stripped (every
    other whitespace character is unprintable)."""
    if printable(text) and "  " not in text:
        return text.strip()
    return " ".join(text.split())


def _simple_html_text(html: str) -> str | None:
    """``html_to_text`` without the parser, for HTML made only of ``_SIMPLE_TAG`` tags and
    text (what product descriptions mostly are): the same text, several times faster;
    None for anything else (a comment, a stray ``<``, a script), which the parser reads.
    """
    lines: list[str] = []
    line: list[str] = []
    position = 0
    for tag in _SIMPLE_TAG.finditer(html):
        start = tag.start()
        if start != position:
            data = html[position:start]
            if "<" in data:
                return None
            line.append(unescape(data) if "&" in data else data)
        position = tag.end()
        name, closing, end_name = tag.groups()
        if name is None:
            name = end_name.lower()
            if name == "br":
                continue  # only a start tag breaks a line
        else:
            name = name.lower()
        if name in _RAW_TEXT_TAGS:
            return None
        if name in _BLOCK_TAGS or (name == "br" and end_name is None):
            # a break, twice for a self-closing block tag (its start and its end)
            if line:
                text = _folded("".join(line))
                if text:
                    lines.append(text)
                line.clear()
        elif name in _CELL_TAGS:
            line.append("  " if closing else " ")
    data = html[position:]
    if data:
        if "<" in data:
            return None
        line.append(unescape(data) if "&" in data else data)
    if line:
        text = _folded("".join(line))
        if text:
            lines.append(text)
    return "\n".join(lines)


_BARE_TAG = re.compile(r"(</?[a-zA-Z][a-zA-Z0-9]*)>")
"""A tag without attributes or spaces (``<p>``, ``</LI>``): what most descriptions hold;
its group is the tag without its ``>``, as ``_bare_html_text`` cuts the HTML."""
_BARE_NAME = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*")
_BREAK_MARK = "\u00b6"
"""Stands for a line break while ``_bare_html_text`` works (``¶``: printable, so the
text with its marks is printable when the text is; HTML holding one is left to the
other paths)."""


class _BareTags(dict[str, str | None]):
    """What each bare tag (without its ``>``: ``<p``, ``</LI``) becomes in
    ``_simple_html_text``, worked out once per tag seen: a break, a space (a cell),
    nothing; None for a tag whose content a parser may read as raw text, or for a piece
    of ``_bare_html_text``'s cut HTML that is no bare tag."""

    def __missing__(self, tag: str) -> str | None:
        if _BARE_NAME.fullmatch(tag) is None:
            return None
        closing = tag[1] == "/"
        name = (tag[2:] if closing else tag[1:]).lower()
        if name in _RAW_TEXT_TAGS:
            found = None
        elif name in _BLOCK_TAGS:
            found = _BREAK_MARK
        elif name == "br":
            found = "" if closing else _BREAK_MARK  # only a start tag breaks a line
        else:
            found = " " if name in _CELL_TAGS else ""
        if len(self) < 4096:  # tag names are few; a flood of made-up ones is not kept
            self[tag] = found
        return found


_BARE_TAGS = _BareTags()
_BREAK_TAGS = frozenset(
    tag
    for name in (*_BLOCK_TAGS, "br")
    for case in (name, name.upper())
    for tag in (f"<{case}", f"</{case}")
    if tag != "</br" and tag != "</BR"
)
"""The bare tags (without their ``>``) that break a line, in lower and upper case (a
mixed case one takes ``_BARE_TAGS``)."""


def _bare_html_text(html: str) -> str | None:
    """``_simple_html_text`` for HTML whose every ``<`` starts a bare tag and that has no
    entity, by C loops (``replace``, ``split``, ``join``, ``map``) instead of a Python step
    per tag; None for any other HTML (left to ``_simple_html_text``).

    Each ``<`` becomes ``><`` and the HTML is cut at every ``>``: when the HTML has as
    many ``>`` as ``<``, and every other piece starts with ``<`` (as only a piece after a
    ``<`` can, the text having none left) and is a bare tag, the HTML is text, tag, ...,
    text, with no ``<`` or ``>`` in its text. When every tag breaks a line (paragraphs and
    lists, as most descriptions), the texts are the lines: ~41k instructions a bench
    description where cutting it by ``_BARE_TAG`` and joining the lines back took ~65k.
    A ``>`` in the text (``7 > 3``) leaves the cutting to ``_BARE_TAG``."""
    if "&" in html:
        return None
    cut = html.replace("<", "><")
    parts = cut.split(">")  # text, tag, text, ..., text when the HTML is made so
    if len(parts) == 2 * (len(cut) - len(html)) + 1:
        if _BREAK_TAGS.issuperset(parts[1::2]):
            lines = parts[0::2]
            if printable(html) and "  " not in html:  # no line needs more than a strip (the
                return "\n".join(filter(None, map(str.strip, lines)))  # tags hold no space)
            return "\n".join(filter(None, map(_folded, lines)))
    else:  # a ">" in the text, or a "<" without one
        parts = _BARE_TAG.split(html)
    if _BREAK_MARK in html:
        return None
    texts = list(map(_BARE_TAGS.__getitem__, parts[1::2]))
    if None in texts:
        return None
    parts[1::2] = cast("list[str]", texts)  # none of them None, as just seen
    text = "".join(parts)
    if "<" in text:  # (a ``memchr``, where ``html.count("<")`` steps through every character)
        return None  # a "<" that is not a bare tag (a tag's text has none, and a tag one only)
    if printable(text) and "  " not in text:  # no line needs more than a strip
        return "\n".join(filter(None, map(str.strip, text.split(_BREAK_MARK))))
    return "\n".join(filter(None, map(_folded, text.split(_BREAK_MARK))))


def truncate_words(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, nothing appended.

    A single word longer than ``limit`` is cut inside, since nothing else fits.
    """
    if len(text) <= limit:
        return text
    head = text[:limit]
    if text[limit].isspace() or head[-1].isspace():
        return head.rstrip()
    words = head.rsplit(None, 1)
    if len(words) == 2:
        return words[0]
    return head


# --------------------------------------------------------------------------------------
# Unpacking: lists and key=value pairs packed into one cell
# --------------------------------------------------------------------------------------

Trim = bool | str
"""``True``: strip whitespace; a string: strip whitespace and these characters; ``False``: keep."""


def trimmed(text: str, trim: Trim = True) -> str:
    """``text`` stripped as ``trim`` says (see ``Trim``)."""
    if trim is False:
        return text
    if trim is True or not trim:
        return text.strip()
    return text.strip().strip(trim).strip()


@functools.lru_cache(maxsize=256)
def _separator_pattern(separators: tuple[str, ...]) -> re.Pattern[str]:
    longest_first = sorted(set(separators), key=len, reverse=True)
    return re.compile("|".join(re.escape(s) for s in longest_first))


def split_text(text: str, separators: str | Sequence[str] = ",", *, trim: Trim = True) -> list[str]:
    """The items of ``text`` cut at any of ``separators`` (one string, or several), each
    trimmed (see ``Trim``); blank items are dropped.

    ``split_text("a\\nb\\r\\n\\nc", "\\n") == ["a", "b", "c"]``.
    """
    if isinstance(separators, str):
        separators = (separators,)
    if not separators or not all(separators):
        raise ValueError("give at least one non-empty separator")
    pattern = _separator_pattern(tuple(separators))
    items = (trimmed(item, trim) for item in pattern.split(text))
    return [item for item in items if item and not item.isspace()]


PairValue = str | list[str]


def split_pairs(
    text: str, *, items: str = "|", fields: str = ",", kv: str = "=", trim: Trim = True
) -> list[dict[str, PairValue]]:
    """The objects packed in ``text`` as ``key=value`` pairs: one per item (cut at
    ``items``), pairs cut at ``fields``, key and value at the first ``kv``.

    ``split_pairs("sku=A-XS,size=XS|sku=A-S,size=S")`` is
    ``[{"sku": "A-XS", "size": "XS"}, {"sku": "A-S", "size": "S"}]``. A fragment
    without ``kv`` belongs to the value before it (``color=Black,Gray``: ``"Black,Gray"``);
    a key given twice in one item keeps its values as a list; an empty value is left
    out. ``ValueError`` for an item that starts with a fragment that is not a pair, or
    a pair without a key. With ``items=""`` the whole text is one object.
    """
    chunks = [text] if not items else text.split(items)
    out = []
    for chunk in chunks:
        if chunk.strip():
            found = parse_pairs(chunk, fields=fields, kv=kv, trim=trim)
            if found:
                out.append(found)
    return out


def parse_pairs(
    text: str, *, fields: str = ",", kv: str = "=", trim: Trim = True
) -> dict[str, PairValue]:
    """One object packed as ``key=value`` pairs (``split_pairs`` without items)."""
    if not fields or not kv:
        raise ValueError("the fields and kv separators can't be empty")
    pairs: list[list[str]] = []
    for fragment in text.split(fields):
        name, found, value = fragment.partition(kv)
        if found:
            name = name.strip()
            if not name:
                raise ValueError(f"no key before {kv!r} in {_shown(fragment)}")
            pairs.append([name, value])
        elif not fragment.strip():
            continue  # "a=1,,b=2" or a trailing separator
        elif pairs:
            pairs[-1][1] += fields + fragment
        else:
            raise ValueError(f"{_shown(fragment)} is not a key{kv}value pair (in {_shown(text)})")
    out: dict[str, PairValue] = {}
    for name, raw in pairs:
        value = trimmed(raw, trim)
        if not value or value.isspace():
            continue
        before = out.get(name)
        if before is None:
            out[name] = value
        elif isinstance(before, list):
            before.append(value)
        else:
            out[name] = [before, value]
    return out


def _shown(text: str) -> str:
    text = text.strip()
    return repr(text if len(text) <= 40 else text[:39] + "…")
