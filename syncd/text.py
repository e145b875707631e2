"""Plain text from HTML, and cutting text on a word boundary.

Pure functions over strings, used by the mapping (``html = true`` and ``max_length``).
"""

from __future__ import annotations

from html.parser import HTMLParser

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
