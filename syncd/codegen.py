"""Python source written once and compiled into a function: what makes a mapper flat.

A mapper writes its ``map`` as lines of Python (``Source``), naming the objects those
lines use (compiled fields, labels) instead of looping over tuples of them for every
record; ``Source.compile`` turns the lines into the function. The text stays inspectable:
``source_of(function)`` returns it, tracebacks show its lines (it is registered with
``linecache``), and ``SYNCD_SHOW_CODE=1`` prints each function's text to stderr when it is
compiled. Pure: no I/O but that debug print.
"""

from __future__ import annotations

import contextlib
import linecache
import os
import sys
from collections.abc import Callable, Iterator
from itertools import count
from types import CodeType
from typing import Any

SHOW_CODE_ENV = "SYNCD_SHOW_CODE"
"""Set to ``1``: every generated function's text is printed to stderr when compiled."""

_COMPILED = count(1)
"""Numbers the generated functions' file names (``<syncd-code-3 UserfluxMapper>``)."""


class Source:
    """The lines of one generated function and the objects they name."""

    def __init__(self, name: str, arguments: str, namespace: dict[str, Any]) -> None:
        self.name = name
        self.lines = [f"def {name}({arguments}):"]
        self.namespace = dict(namespace)
        self._depth = 1
        self._named: dict[int, str] = {}
        self._compiled: tuple[str, str, CodeType] | None = None  # text, file name, code

    def line(self, text: str) -> None:
        """Append ``text`` at the current indentation."""
        self.lines.append("    " * self._depth + text)

    @contextlib.contextmanager
    def block(self, header: str) -> Iterator[None]:
        """``header`` (``if ...:``, ``try:``) and the lines written inside the ``with``."""
        self.line(header)
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def name_of(self, value: object, hint: str) -> str:
        """A name the code can use for ``value`` (the same name for the same object)."""
        known = self._named.get(id(value))
        if known is not None:
            return known
        name = f"{hint}_{len(self._named)}"
        self._named[id(value)] = name
        self.namespace[name] = value
        return name

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def compile(self, owner: str, **names: Any) -> Callable[..., Any]:
        """The function these lines define; ``owner`` names it in its file name, ``names``
        are objects its lines name that this function binds differently (the same lines
        made into two functions that end two ways: compiled once, bound twice)."""
        text = self.text
        if self._compiled is None or self._compiled[0] != text:
            filename = f"<syncd-code-{next(_COMPILED)} {owner}>"
            self._compiled = (text, filename, compile(text, filename, "exec"))
            linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
            if os.environ.get(SHOW_CODE_ENV) == "1":
                print(f"# {filename}\n{text}", file=sys.stderr)
        _, filename, code = self._compiled
        namespace = {**self.namespace, **names}
        exec(code, namespace)  # noqa: S102 (text made by syncd from the config's names, quoted)
        function: Callable[..., Any] = namespace[self.name]
        function.__syncd_source__ = text  # type: ignore[attr-defined]
        return function


def source_of(function: Callable[..., Any]) -> str:
    """The text of a function ``Source.compile`` made (``AttributeError`` for another)."""
    return function.__syncd_source__  # type: ignore[attr-defined, no-any-return]
