"""HTML to plain text, truncation on a word boundary, and unpacking packed cells."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.text import (
    html_to_text,
    parse_pairs,
    printable,
    split_pairs,
    split_text,
    truncate_words,
)


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("plain text stays", "plain text stays"),
        ("  folds \t runs\nof   whitespace  ", "folds runs of whitespace"),
        ("<p>Launch <b>new markets <i>fast</i></b></p>", "Launch new markets fast"),
        ("Fish &amp; chips &lt;3 &eacute;t&#233; &#x2019;", "Fish & chips <3 été \u2019"),
        ("a&nbsp;b\u00a0c", "a b c"),
        ("one\u2028two", "one two"),
        ("<p>First</p><p>Second</p>", "First\nSecond"),
        ("line one<br>line two<br/>line three", "line one\nline two\nline three"),
        ("<div><p>  </p><p>kept</p></div>", "kept"),
        ("<ul><li>Gold</li><li>Silver</li></ul>", "Gold\nSilver"),
        ("<table><tr><td>a</td><td>b</td></tr></table>", "a b"),
        ("before<script>var x = '<p>no</p>';</script>after", "beforeafter"),
        ("<style>p { color: red }</style><p>shown</p>", "shown"),
        ("<p>unclosed <b>bold", "unclosed bold"),
        ("5 < 6 and 7 > 3", "5 < 6 and 7 > 3"),
        ("<p></p>", ""),
    ],
)
def test_html_becomes_the_text_a_reader_sees(html: str, text: str) -> None:
    assert html_to_text(html) == text


@pytest.mark.parametrize(
    ("text", "limit", "cut"),
    [
        ("short", 10, "short"),
        ("exactly ten", 11, "exactly ten"),
        ("hello world again", 11, "hello world"),
        ("hello world again", 12, "hello world"),
        ("hello world again", 14, "hello world"),
        ("hello   world", 7, "hello"),
        ("supercalifragilistic word", 5, "super"),
        ("a b", 1, "a"),
    ],
)
def test_truncation_cuts_on_a_word_boundary_and_appends_nothing(
    text: str, limit: int, cut: str
) -> None:
    assert truncate_words(text, limit) == cut
    assert len(truncate_words(text, limit)) <= limit


def test_split_text_cuts_at_the_longest_matching_separator_first() -> None:
    assert split_text("a -> b->c", ["->", " -> "]) == ["a", "b", "c"]
    assert split_text("a\r\nb", "\n", trim=False) == ["a\r", "b"]
    with pytest.raises(ValueError, match="non-empty separator"):
        split_text("a", [""])


def test_split_pairs_gives_one_object_per_item_and_drops_blank_items() -> None:
    assert split_pairs("a=1,b=2||a=3,") == [{"a": "1", "b": "2"}, {"a": "3"}]
    assert split_pairs("a=1,b=2", items="") == [{"a": "1", "b": "2"}]
    assert split_pairs("  ") == []


def test_parse_pairs_keeps_the_value_after_the_first_kv_whole() -> None:
    assert parse_pairs("url=https://x/?a=b, note = fits, and more") == {
        "url": "https://x/?a=b",
        "note": "fits, and more",
    }
    with pytest.raises(ValueError, match="is not a key=value pair"):
        parse_pairs("loose,a=1")


# -- printable: str.isprintable by a table of bytes --------------------------------------


def test_printable_is_isprintable_for_every_latin1_character_and_beyond() -> None:
    for code in [*range(0x100), 0x100, 0x2028, 0x3164, 0xFEFF, 0x1F600, 0x10FFFF]:
        char = chr(code)
        for text in (char, f"a{char}b", f"plain words {char}¶more"):
            assert printable(text) is text.isprintable(), repr(text)


@given(st.text(alphabet=st.characters(max_codepoint=0x2FF)) | st.text())
def test_printable_agrees_with_isprintable(text: str) -> None:
    assert printable(text) is text.isprintable()
