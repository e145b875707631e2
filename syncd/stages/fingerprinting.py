"""Raw-row fingerprints: what lets a run skip the rows whose product state already knows.

A row's fingerprint for a target is the XXH3-128 of its bytes (``row_digest``) XOR the
target's ``mapping_fingerprint``; equal to a product's ``source_hash``, the row is
unchanged for that target and is neither parsed nor mapped.
"""

from __future__ import annotations

import hashlib
import json
import os

from xxhash import xxh3_128_digest

from syncd import __version__
from syncd.config import SourceConfig, TargetConfig
from syncd.model import Record

_ROW_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""A record's raw bytes, for sources that have no raw rows (SQL, HTTP, JSON, CSV)."""


def mapping_fingerprint(source: SourceConfig, target: TargetConfig) -> bytes | None:
    """What a raw row's fingerprint is keyed with for a target, or None: no skipping.

    Covers the target's config but for its ``transport_fields()`` (mapping, type, ...),
    syncd's version and the source's key, grouping and filter. None when
    ``source.skip_unchanged_rows`` is off, with ``group_by`` (a product spans rows), or
    for a mapping with a callable (it may read anything).
    """
    mapping = getattr(target, "mapping", None)
    if (
        not source.skip_unchanged_rows
        or source.group_by
        or source.variant is not None
        or mapping is None
        or getattr(mapping, "callable", None)
    ):
        return None
    shared = json.dumps(
        {
            "version": __version__,
            "key": source.key,
            "group_by": source.group_by,
            "group_into": source.group_into,
            "where": source.where,
        },
        sort_keys=True,
        default=str,
    ).encode()
    digest = hashlib.blake2b(
        target.model_dump_json(exclude=set(target.transport_fields())).encode(), digest_size=16
    )
    digest.update(shared)
    return digest.digest()


def record_row(record: Record) -> bytes:
    """The raw row of a record from a source without raw rows (SQL, HTTP, JSON, CSV): the
    record as JSON, in the order the source gave its fields (a SQL row's columns). One JSON
    can't encode gets random bytes, so its row is never found unchanged."""
    try:
        return _ROW_JSON.encode(record).encode()
    except (TypeError, ValueError):
        return os.urandom(16)


def row_digest(stripped: bytes) -> bytes:
    """XXH3-128 of a raw row's bytes (surrounding whitespace stripped), once per row.

    A fast non-cryptographic hash is enough: it only tells whether a row is byte for byte
    the one a product was mapped from (an accidental collision is ~2**-128; whoever could
    craft one writes the catalog anyway), and it costs ~0.2 µs a row where BLAKE2b cost
    ~3. Fingerprints stored by a syncd that used BLAKE2b match nothing (``mapping_fingerprint``
    changes with every version too): their rows are mapped once more, and found unchanged
    by their payload's hash."""
    return xxh3_128_digest(stripped)


def row_fingerprint(digest: bytes, fingerprint: bytes) -> bytes:
    """A row's ``row_digest`` XOR a target's ``mapping_fingerprint``: equal to a product's
    ``source_hash``, the row is unchanged for that target.

    XOR with a per-target constant is a bijection, so two rows collide for one target
    only when their BLAKE2b digests do (2**-128); it costs a tenth of a second hash.
    (``reading.read_rows`` computes the same a block at a time, on NumPy arrays.)
    """
    value = int.from_bytes(digest, "big") ^ int.from_bytes(fingerprint, "big")
    return value.to_bytes(16, "big")
