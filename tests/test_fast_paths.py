"""The fast paths of mapping give what the general ones give: HTML to text without the
parser, canonical JSON by orjson, and the mappers, over generated input and the
benchmark's catalog (the general path is the reference, kept in the package)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bench import catalog
from syncd.text import _parsed_html_text, _simple_html_text, html_to_text

# --------------------------------------------------------------------------------------
# HTML to text
# --------------------------------------------------------------------------------------

_NAMES = st.sampled_from(
    [
        "p", "P", "div", "li", "ul", "h2", "br", "BR", "b", "i", "span", "a", "td", "th",
        "tr", "table", "script", "style", "template", "noscript", "head", "textarea",
        "title", "hr", "img", "x-y", "h1", "em",
    ]
)  # fmt: skip
_ATTR_VALUES = st.sampled_from(
    ['"x"', "'y z'", "plain", '"a>b"', "'<'", "/path/", '""', "x/", '"&amp;"', "=x", "`v`"]
)
_SPACES = st.sampled_from(["", " ", "  ", "\n", "\t", "\u00a0", "\f", "\r"])


@st.composite
def _tags(draw: st.DrawFn) -> str:
    name = draw(_NAMES)
    if draw(st.booleans()):
        return f"</{name}{draw(_SPACES)}>"
    attrs = "".join(
        f"{draw(st.sampled_from([' ', '  ', chr(10), chr(160)]))}"
        f"{draw(st.sampled_from(['class', 'href', 'data-x', 'on:y', 'ÄB', '1a']))}"
        f"{draw(st.sampled_from(['', '=', ' = ']))}"
        f"{draw(_ATTR_VALUES)}"
        for _ in range(draw(st.integers(0, 2)))
    )
    return f"<{name}{attrs}{draw(_SPACES)}{draw(st.sampled_from(['', '/']))}>"


_PIECES = [
    "Durable", " design ", "a  b", "\u2028", "\u00a0", "&amp;", "&lt;3", "&eacute;",
    "&#233;", "&#x2019;", "&bogus;", "&", "&amp", "5 < 6", "7 > 3", "<", "<!-- c -->",
    "<!DOCTYPE html>", "<?pi?>", "</ >", "<3", "\n\n", "&nbsp;", "x&#0;y", "é",
]  # fmt: skip
_TEXT = st.one_of(st.sampled_from(_PIECES), st.text(max_size=6))


@given(st.lists(st.one_of(_tags(), _TEXT), max_size=14).map("".join))
@settings(max_examples=800, deadline=None)
def test_html_to_text_without_the_parser_gives_the_parsers_text(html: str) -> None:
    assert html_to_text(html) == _parsed_html_text(html)
    fast = _simple_html_text(html)
    assert fast is None or fast == _parsed_html_text(html)


_SIMPLE_NAMES = st.sampled_from(["p", "LI", "div", "br", "b", "td", "h2", "span", "ul"])
_SIMPLE_TEXT = st.sampled_from(
    ["Durable", " de sign ", "\u2028", "\u00a0", "&amp;", "&lt;3", "&#x2019;", "&bogus", "7 > 3"]
)


@given(
    st.lists(
        st.one_of(
            _SIMPLE_NAMES.map(lambda name: f"<{name}>"),
            _SIMPLE_NAMES.map(lambda name: f"</{name}>"),
            _SIMPLE_NAMES.map(lambda name: f'<{name} class="c" />'),
            _SIMPLE_TEXT,
        ),
        max_size=20,
    ).map("".join)
)
@settings(max_examples=300, deadline=None)
def test_simple_html_takes_the_fast_path(html: str) -> None:
    assert _simple_html_text(html) == _parsed_html_text(html)


def test_the_benchmark_descriptions_take_the_fast_path_and_give_the_parsers_text() -> None:
    for record in catalog.products(2000):
        html = record["description"]
        assert _simple_html_text(html) == _parsed_html_text(html) != ""


def test_html_the_fast_path_leaves_to_the_parser_is_still_converted() -> None:
    html = "<p>a <!-- no --> b</p><script>if (a < b) x()</script><p>5 < 6</p>"
    assert _simple_html_text(html) is None
    assert html_to_text(html) == "a b\n5 < 6"
