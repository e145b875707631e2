"""Values that flow through a run: documents, acknowledged entries, rejections.

Also the canonical form of a payload and its hash, which every layer must agree on, and
the spool where a run's planned payloads wait on disk until they are sent.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import math
import os
import re
import struct
import tempfile
import threading
import weakref
from collections.abc import Callable, Collection, Mapping
from dataclasses import MISSING as MISSING_FIELD
from dataclasses import dataclass, field, fields
from typing import IO, Any, NoReturn, TypeVar

import orjson
import xxhash

from syncd.errors import StateError

Record = dict[str, Any]
"""One row of the source catalog, as read."""

_Slotted = TypeVar("_Slotted")


def quick_init(cls: type[_Slotted]) -> type[_Slotted]:
    """Make a frozen, slotted dataclass's instances without its ``__init__``.

    The dataclass's own goes through ``object.__setattr__`` for every field (to get past
    the frozen ``__setattr__``): ~0.56 µs for a ``Document``. Here the class's ``__new__``
    is a twin class with the same slots and no frozen ``__setattr__``, whose ``__init__``
    fills them as plain attributes (a specialized store each) and then makes the instance
    one of ``cls`` (``__class__`` assignment, allowed between classes of the same slots):
    ~40% less than setting each slot through its descriptor's ``__set__``, and a first
    sync makes half a dozen such objects per product and target. ``cls(...)`` keeps the
    signature and defaults (its own ``__init__`` is then ``object``'s, which ignores the
    arguments ``__new__`` took); only for classes without ``__post_init__`` or default
    factories, and with a ``__reduce__`` (pickle would otherwise make one bare).
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {}
    params = []
    for f in fields(cls):  # type: ignore[arg-type]
        if f.default_factory is not MISSING_FIELD or hasattr(cls, "__post_init__"):
            raise TypeError(f"quick_init can't build {cls.__name__}.{f.name}")
        if f.default is MISSING_FIELD:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    if "__reduce__" not in cls.__dict__:
        raise TypeError(f"quick_init needs {cls.__name__}.__reduce__")
    body = "".join(f"    self.{name} = {name}\n" for name in names)
    exec(  # noqa: S102 (our names)
        f"def __init__(self, cls, {', '.join(params)}):\n{body}    self.__class__ = cls\n",
        namespace,
    )
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__new__.__init__"
    twin = type(
        cls.__name__,
        (),
        {
            "__slots__": cls.__slots__,  # type: ignore[attr-defined]
            "__init__": init,
            "__module__": cls.__module__,
            "__qualname__": f"{cls.__qualname__}.__new__",
        },
    )
    del cls.__init__
    cls.__new__ = twin  # type: ignore[method-assign]
    return cls


def quick_new(cls: type[_Slotted]) -> Callable[..., _Slotted]:
    """The maker of a ``quick_init`` class's instances, for a loop making one per product:
    ``new(cls, *fields)`` makes what ``cls(*fields)`` does, without the ``type.__call__``
    around it (the class's ``__new__`` and an ``__init__`` to skip: ~3.1k against ~3.7k
    instructions a ``Change``, callgrind)."""
    new = cls.__dict__.get("__new__")
    if not isinstance(new, type):
        raise TypeError(f"{cls.__name__} is not made by quick_init")
    return new


Payload = dict[str, Any]
"""The document a target receives for one product (JSON-compatible)."""


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
"""Built once: ``json.dumps`` with options builds a new encoder on every call. The
reference: ``canonical_json`` gives its bytes (UTF-8)."""

_ORJSON_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
)
"""Keys sorted; a subclass of str, int, dict or list, a dataclass or a date goes to
``_not_plain`` (so to ``_CANONICAL``, which encodes or refuses them its own way)."""

_SHORT_EXPONENT = re.compile(rb"e-\d(?!\d)")
"""With ``0.0000``, where orjson's text may differ from ``_CANONICAL``'s: a float under
1e-4 (``repr`` writes ``1e-05`` and ``1.5e-08``, orjson ``0.00001`` and ``1.5e-8``). Such
text inside a string only costs the slower encoder. (Separate searches: one regex with
every alternative is several times slower than all of them.)"""


_INF = math.inf
"""For ``canonical_json``'s test of a float, one lookup where ``math.inf`` takes two."""


def _not_plain(value: object) -> NoReturn:
    raise TypeError(type(value).__name__)


def canonical_json(
    payload: Mapping[str, Any], floats: Collection[Any] | None = None, finite: bool = False
) -> bytes:
    """The canonical JSON of a payload: sorted keys, no whitespace, UTF-8, no NaN.

    orjson writes it, byte for byte what ``_CANONICAL`` writes for JSON data; whatever it
    may write otherwise goes to ``_CANONICAL``: what orjson refuses (an integer past 64
    bits, a non-str key, a lone surrogate, a subclass), ``null`` (NaN and infinities,
    which ``_CANONICAL`` refuses, are ``null`` to orjson) and a float under 1e-4
    (``_SHORT_EXPONENT``).

    ``floats``: every value of ``payload`` that can be a float, when the caller knows them
    (a mapper whose fields are typed does, and a UserFlux mapper notes the floats of the
    rest as it reads them): each is then checked instead of orjson's text being searched
    three times over for what they may write. orjson and ``_CANONICAL`` write a float
    alike when it is 0 or finite and at least 1e-4 in magnitude (the text searched for
    is that of the others); anything else (an int, a str) is written alike or refused.
    A ``null`` then stands for a None, which ``_CANONICAL`` writes so too.

    ``finite``: the caller knows every float of ``payload`` is finite (a mapper's payload,
    made JSON data by ``jsonable`` and the typed coercions, which refuse the others): a
    ``null`` is then a None too, and only the small floats' text is searched for."""
    try:
        out = orjson.dumps(payload, default=_not_plain, option=_ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError too
        return _CANONICAL.encode(payload).encode()
    if floats is not None:
        for value in floats:  # the test inline, not a call each (~0.1 µs less a float)
            if value.__class__ is float and not (value == 0.0 or 1e-4 <= abs(value) < _INF):
                return _CANONICAL.encode(payload).encode()
        return out
    if (  # find, not ``in`` (which first tries the needle as an int, an exception each)
        (not finite and out.find(b"null") >= 0)
        or out.find(b"0.0000") >= 0
        or (out.find(b"e-") >= 0 and _SHORT_EXPONENT.search(out) is not None)  # find first
    ):
        return _CANONICAL.encode(payload).encode()
    return out


payload_hash: Callable[[bytes], bytes] = xxhash.xxh3_128_digest
"""The 128-bit XXH3 digest of a canonical payload (16 bytes, big-endian): whether a target
already holds the same payload. Not cryptographic, and needn't be: an accidental collision
is ~2**-128, and whoever could craft one already controls the catalog's content. (Bound
directly, no Python frame of ours: it runs once per product and target.) BLAKE2b-128 until
migration 0007, which rewrote the stored hashes."""


FEED_MODE = "feed"
"""The ``mode`` a change feed's targeted sync is recorded with in ``runs``."""
UNACKNOWLEDGED = b""
"""The hash of a state row whose last write was sent but not acknowledged: it matches no
payload, so the product is re-sent (in full) until the target answers 2xx for it."""
SEEN_ONLY = b"\x00"
"""The hash a run stages for a key it must not delete but has no document for and must not
count as a product of its own (the visible twin of a key refused for an invisible
character): never a duplicate of a real row with that key, never a change."""
REFRESH_DUE = b"\x01"
"""How the hash of a state row marked for the rolling refresh begins (see
``refresh_marker``): it matches no payload, so the product is re-sent whole."""


def refresh_marker(age_s: float) -> bytes:
    """The hash a rolling refresh gives a state row acknowledged ``age_s`` seconds ago:
    ``REFRESH_DUE`` and the age (9 bytes, never a 16-byte digest), so the planner can say
    why the product is re-sent without a clock of its own."""
    return REFRESH_DUE + struct.pack(">d", max(age_s, 0.0))


def refresh_age(hash_: bytes) -> float | None:
    """The age a ``refresh_marker`` carries (seconds), or None for any other hash."""
    if len(hash_) != 9 or not hash_.startswith(REFRESH_DUE):
        return None
    return float(struct.unpack(">d", hash_[1:])[0])


def describe_age(age_s: float) -> str:
    """``6 days``, ``1 day``, ``5 hours``, ``12 minutes``: an age as a person says it."""
    for unit, seconds in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if age_s >= seconds:
            count = round(age_s / seconds)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{round(age_s)} seconds"


def refresh_reason(age_s: float) -> str:
    """Why a product is re-sent whole by the rolling refresh."""
    return f"rolling refresh: last acknowledged {describe_age(age_s)} ago"


def refresh_slice_size(count: int, elapsed_s: float, period_s: float, due: int = 0) -> int:
    """How many products a run re-asserts: ``count x elapsed / period`` (rounded down; the
    elapsed time since the target's last completed run, capped at the period), or more when
    ``due`` products would pass the period before the next run if it comes as late (see
    ``syncd.state.refresh``).

    Runs that far apart then re-send every product once a period at a cost proportional to
    their spacing, and runs so frequent that the share rounds to nothing still re-send each
    product in time.
    """
    if count <= 0 or period_s <= 0 or elapsed_s < 0:
        return 0
    share = math.floor(count * min(elapsed_s, period_s) / period_s + 1e-6)
    return min(count, max(share, due))


@dataclass(frozen=True, slots=True)
class RefreshSlice:
    """A run's share of the rolling refresh for one target: the products whose last
    acknowledgement is oldest, re-sent whole so each is re-sent within ``period_s``."""

    size: int
    """Products re-asserted (or, for a plan, that the next sync re-asserts)."""
    count: int
    """Products state holds for the target."""
    period_s: float
    elapsed_s: float | None
    """Seconds since the target's last completed run started (None: no such run)."""
    oldest_age_s: float = 0.0
    """How long ago the oldest product of the slice was last acknowledged."""
    newest_age_s: float = 0.0
    """How long ago the most recently acknowledged product of the slice was."""

    def note(self, *, batch_size: int = 1, rate_per_s: float = 0.0, planned: bool) -> str:
        """What the slice is and costs, for the plan's notes (``planned``: a plan, which
        writes nothing, tells what the next sync does)."""
        who = "the next sync re-asserts" if planned else "re-asserted"
        assert self.elapsed_s is not None
        requests = math.ceil(self.size / max(batch_size, 1))
        cost = f"{requests} requests"
        if rate_per_s > 0:
            cost += f", at least {requests / rate_per_s:.1f} s at {rate_per_s:g}/s"
        ages = describe_age(self.newest_age_s)
        if describe_age(self.oldest_age_s) != ages:
            ages += f" to {describe_age(self.oldest_age_s)}"
        return (
            f"rolling refresh: {who} {self.size} of {self.count} products whole, those last "
            f"acknowledged longest ago ({ages} ago), as {describe_age(self.elapsed_s)} passed "
            f"since the last run of a {describe_age(self.period_s)} refresh_period ({cost})"
        )


SEGMENT_BYTES = 64 << 20
"""A spool's file is cut into segments of about this size (a put never spans two): a
segment is deleted once ``release`` passes its end, so what a run has sent stops taking
disk space while the rest is still being sent."""


class Spool:
    """Bytes appended to unnamed temporary files and read back by offset.

    A run puts the canonical payload of every change it plans here, so a plan holds
    where each payload is (a ``Spooled``, ~100 bytes) instead of the payload, which on a
    first sync means instead of the whole catalog.
    The files are in ``TMPDIR`` (``/tmp`` by default; it should be on disk, not tmpfs)
    and have no name: they are gone when the spool is closed or collected, crash or not.
    The offsets run on across the files (segments of ``SEGMENT_BYTES``); ``release``
    deletes the segments wholly below an offset, so a sending run's spool holds what is
    planned and not sent yet, not everything the run planned (``size`` counts all that
    was ever put, ``live`` what is still on disk, ``peak`` the most it ever was).

    ``put`` and ``release`` are called by one thread at a time (the planning thread, the
    target's sender); ``read`` by any thread (``os.pread``).
    """

    def __init__(self, directory: str | None = None) -> None:
        self._directory = directory or tempfile.gettempdir()
        self._lock = threading.Lock()
        self._starts: list[int] = []
        """Where each segment begins (offsets, in order)."""
        self._files: list[IO[bytes] | None] = []
        """Each segment's file; None once released."""
        self._closers: list[weakref.finalize[Any, Any]] = []
        self._released = 0
        """Offsets below this were released: their segments are gone."""
        self._size = 0
        self._flushed = 0
        """Bytes written through to the files, where ``os.pread`` sees them."""
        self.peak = 0
        """The most bytes the spool ever held on disk at once."""
        self._file = self._segment()
        with _SPOOLS_LOCK:
            global _SPOOLS_MADE
            _SPOOLS_MADE += 1
            self._number = _SPOOLS_MADE
            _SPOOLS[self._number] = self

    def _segment(self) -> IO[bytes]:
        """A new segment file, beginning at the current size."""
        try:
            file = tempfile.TemporaryFile(dir=self._directory, buffering=1 << 20)  # noqa: SIM115 (closed by close, release or the finalizer)
        except OSError as exc:
            raise self._error("create", exc) from None
        self._starts.append(self._size)
        self._files.append(file)
        self._closers.append(weakref.finalize(self, _close_quietly, file))
        return file

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        """Pickled as its number in this process: a ``Spooled`` pickled into the spool
        (a planned change, see ``syncd.stages.spill``) is read back pointing at it."""
        return _spool_numbered, (self._number,)

    def put(self, data: bytes) -> Spooled:
        return Spooled(self, self.put_all([data]), len(data))

    def put_all(self, data: list[bytes]) -> int:
        """Append every piece of ``data`` with one write; where the first begins (each of
        the others begins where the one before it ends). A chunk's payloads cost one lock
        and one write instead of one each (and no ``Spooled`` until they are read back)."""
        joined = b"".join(data)
        with self._lock:
            if self._size - self._starts[-1] >= SEGMENT_BYTES:
                self._flush()  # the segment is complete: readable without the lock
                self._file = self._segment()
            offset = self._size
            try:
                self._file.write(joined)
            except (OSError, ValueError) as exc:  # ValueError: write after close
                raise self._error("write", exc) from None
            self._size += len(joined)
            self.peak = max(self.peak, self._size - self._released)
        return offset

    def read(self, offset: int, length: int) -> bytes:
        if offset < self._released:
            raise self._error(
                "read", OSError(f"bytes at {offset} were released (sent) and are gone")
            )
        number = bisect.bisect_right(self._starts, offset) - 1
        try:
            if offset + length > self._flushed:
                with self._lock:
                    self._flush()
            file = self._files[number]
            if file is None:
                raise OSError(f"bytes at {offset} were released (sent) and are gone")
            data = os.pread(file.fileno(), length, offset - self._starts[number])
        except (OSError, ValueError) as exc:  # ValueError: read after close
            raise self._error("read", exc) from None
        if len(data) != length:
            raise self._error("read", OSError(f"{len(data)} of {length} bytes at {offset}"))
        return data

    def _flush(self) -> None:
        """Write the current segment's buffer through (the lock held)."""
        self._file.flush()
        self._flushed = self._size

    def release(self, below: int) -> None:
        """Delete the segments that end at or below ``below`` (never the one being
        written): what they hold was sent and is not read again."""
        with self._lock:
            for number in range(len(self._files) - 1):
                end = self._starts[number + 1]
                if end > below:
                    break
                if self._files[number] is not None:
                    self._files[number] = None
                    self._closers[number]()
                self._released = max(self._released, end)

    @property
    def size(self) -> int:
        """Bytes ever put (the next offset)."""
        return self._size

    @property
    def directory(self) -> str:
        return self._directory

    @property
    def live(self) -> int:
        """Bytes still on disk (not released)."""
        return self._size - self._released

    def close(self) -> None:
        """Close and so delete the files; never raises (a full disk already failed the
        write or read that needed the bytes: what is still buffered is not needed)."""
        for closer in self._closers:
            closer()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _error(self, what: str, exc: Exception) -> StateError:
        return StateError(f"payload spool (a temporary file in {self._directory}): {what}: {exc}")


_SPOOLS: weakref.WeakValueDictionary[int, Spool] = weakref.WeakValueDictionary()
"""The spools of this process by number, for unpickling (``Spool.__reduce__``)."""
_SPOOLS_MADE = 0
_SPOOLS_LOCK = threading.Lock()


def _spool_numbered(number: int) -> Spool:
    try:
        return _SPOOLS[number]
    except KeyError:
        raise StateError(
            f"payload spool {number} is closed or belongs to another process"
        ) from None


def _close_quietly(file: IO[bytes]) -> None:
    """Close a spool's file; a flush failing again (disk still full) is not an error:
    the file is closed anyway, and it is being thrown away."""
    try:
        file.close()
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError):
            file.close()


@quick_init
@dataclass(frozen=True, slots=True, eq=False)
class Spooled:
    """Where one canonical payload is in a ``Spool``."""

    spool: Spool
    offset: int
    length: int

    def read(self) -> bytes:
        return self.spool.read(self.offset, self.length)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return Spooled, (self.spool, self.offset, self.length)


@quick_init
@dataclass(frozen=True, slots=True)
class Document:
    """A record mapped for one target: its key, canonical payload and the payload's hash.

    ``source_hash`` is the fingerprint of the raw source row it was mapped from, when
    skipping unchanged rows is on.

    The payload is kept as its canonical bytes (``body``, or where they are in a
    ``Spool`` once the document is a planned change); ``canonical`` returns them and
    ``payload`` decodes them. ``decoded`` keeps the dict the mapping built until the
    document has been validated (``slim`` drops it).
    """

    key: str
    body: bytes | Spooled
    hash: bytes
    source_hash: bytes | None = None
    decoded: Payload | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, key: str, payload: Payload, floats: Collection[Any] | None = None) -> Document:
        """The document of ``payload`` (``floats``: see ``canonical_json``)."""
        canonical = canonical_json(payload, floats)
        return cls(key, canonical, payload_hash(canonical), None, payload)

    @classmethod
    def encoded(cls, key: str, canonical: bytes, source_hash: bytes | None = None) -> Document:
        """The document of a payload's ``canonical_json`` bytes, without its dict (what
        ``of(...).slim(source_hash)`` gives, made once)."""
        return cls(key, canonical, payload_hash(canonical), source_hash)

    @property
    def canonical(self) -> bytes:
        body = self.body
        return body if isinstance(body, bytes) else body.read()

    @property
    def size(self) -> int:
        """The canonical payload's length in bytes."""
        body = self.body
        return len(body) if isinstance(body, bytes) else body.length

    @property
    def payload(self) -> Payload:
        """The payload as a dict (decoded anew on each call once ``slim``)."""
        if self.decoded is not None:
            return self.decoded
        return json.loads(self.canonical)  # type: ignore[no-any-return]

    def slim(self, source_hash: bytes | None = None) -> Document:
        """This document without its decoded dict (and with ``source_hash``, if given)."""
        return Document(self.key, self.body, self.hash, source_hash or self.source_hash)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # the fields as a tuple: the dataclass's own pickling of slots is several times slower
        return Document, (self.key, self.body, self.hash, self.source_hash, self.decoded)

    def spooled(self, spool: Spool) -> Document:
        """This document with its canonical bytes moved to ``spool`` (and no dict)."""
        if isinstance(self.body, Spooled):
            return self
        return Document(self.key, spool.put(self.body), self.hash, self.source_hash)


@quick_init
@dataclass(frozen=True, slots=True)
class Acked:
    """What the target last acknowledged for a key: the hash and the payload sent
    (its canonical bytes, as state keeps them; ``payload`` decodes them)."""

    key: str
    hash: bytes
    canonical: bytes

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return Acked, (self.key, self.hash, self.canonical)

    @classmethod
    def of(cls, key: str, digest: bytes, payload: Payload) -> Acked:
        return cls(key, digest, canonical_json(payload))

    @property
    def payload(self) -> Payload:
        return json.loads(self.canonical)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Rejection:
    """A product refused, locally or by the target, with the reason."""

    key: str
    reason: str
    hash: bytes | None = None
    by_target: bool = False


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of one target, as kept in the ``runs`` table.

    ``outcome`` is one of: running, ok, partial (some products failed or were
    rejected by the target), blocked (a guard held deletes back), failed,
    interrupted (the process died mid-run).
    """

    id: int
    target: str
    started_at: float
    finished_at: float | None
    mode: str
    mode_reason: str
    outcome: str
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    rejected: int = 0
    failed: int = 0
    held: int = 0
    requests: int = 0
    retries: int = 0
    source_count: int | None = None
    source_complete: bool = False
    drift: int | None = None
    error: str | None = None
    holder: str = ""
    details: dict[str, Any] | None = None
    """What the plan was: requests per endpoint and mode, notes on choices, guard reasons."""


@dataclass(frozen=True, slots=True)
class RejectionRecord:
    """An open rejection as kept in the ``rejections`` table."""

    target: str
    key: str
    reason: str
    first_seen: float
    last_seen: float
    count: int
    hash: bytes | None
    by_target: bool


@dataclass(frozen=True, slots=True)
class UnreadableRow:
    """A piece of the source that could not be parsed into a record at all.

    Its key is unknown, so the product it held might look deleted: a read that
    yields one is not clean, and the run holds its deletes back.
    """

    place: str
    reason: str


SourceItem = Record | UnreadableRow
"""What a source yields: a record, or a row it could not parse."""
