"""The tables of the state database, as SQLAlchemy Core objects.

The migrations in ``migrations/versions`` create exactly this schema (a test compares
them); the store only queries through these objects. ``HEAD_REVISION`` names the newest
migration, so that an empty database is created at it and a database at it is recognised
without loading Alembic.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# On MySQL/MariaDB every table is utf8mb4 with a binary, no-pad collation (chosen per
# server by ``mysql_collation``), so keys compare byte for byte as everywhere else.
MYSQL_TABLE_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}

# The MySQL dialect (~50 M instructions, 2% of an empty ``syncd plan``) is loaded only for a
# MySQL/MariaDB state: SQLAlchemy loads a dialect to check any ``mysql_*`` argument of a
# table, so the tables below get ``MYSQL_TABLE_OPTIONS`` only when created on MySQL
# (``_mysql_table_options``), and their JSON columns ask for LONGTEXT only there (``_Json``).
# The variants' types are SQLAlchemy's generic VARCHAR and VARBINARY (the very classes the
# PostgreSQL and MySQL dialects export under those names): a SQLite state then never loads
# the PostgreSQL dialect (~30 ms) either.
Target = sa.String(128)
Key = sa.String(512).with_variant(sa.VARCHAR(512, collation="C"), "postgresql")
"""A product key; compared byte for byte on every backend (PostgreSQL: ``COLLATE "C"``)."""
Hash = sa.LargeBinary(16).with_variant(sa.VARBINARY(16), "mysql", "mariadb")
"""A 16-byte digest (a payload's XXH3-128 since revision 0007, BLAKE2b-128 before; a source
row's fingerprint), or a marker (``UNACKNOWLEDGED``, empty; ``SEEN_ONLY``; a rolling
refresh's 9 bytes): VARBINARY on MySQL, never padded."""


class _Json(sa.types.TypeDecorator[str]):
    """``Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")`` without the MySQL
    dialect loaded to write it; values pass through as the TEXT's or LONGTEXT's."""

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            from sqlalchemy.dialects import mysql  # loaded already: it is this dialect's

            return mysql.LONGTEXT()
        return super().load_dialect_impl(dialect)


Json = _Json()
"""Canonical JSON as UTF-8 text; LONGTEXT on MySQL so big payloads fit."""
Seconds: sa.Double[float] = sa.Double()
"""POSIX seconds (UTC), double precision."""

products = sa.Table(
    "products",
    metadata,
    sa.Column("target", Target, primary_key=True),
    sa.Column("key", Key, primary_key=True),
    sa.Column("hash", Hash, nullable=False),
    sa.Column("payload", Json, nullable=False),
    sa.Column("acked_at", Seconds, nullable=False),
    sa.Column("source_hash", Hash, nullable=True),
    sa.Index(None, "target", "source_hash", "key"),  # covers the fingerprint lookups
    sa.Index(None, "target", "acked_at", "key"),  # the rolling refresh: oldest acks first
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("target", Target, nullable=False),
    sa.Column("started_at", Seconds, nullable=False),
    sa.Column("finished_at", Seconds, nullable=True),
    sa.Column("mode", sa.String(32), nullable=False),
    sa.Column("mode_reason", sa.Text, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("created", sa.Integer, nullable=False),
    sa.Column("updated", sa.Integer, nullable=False),
    sa.Column("deleted", sa.Integer, nullable=False),
    sa.Column("unchanged", sa.Integer, nullable=False),
    sa.Column("rejected", sa.Integer, nullable=False),
    sa.Column("failed", sa.Integer, nullable=False),
    sa.Column("held", sa.Integer, nullable=False),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("retries", sa.Integer, nullable=False),
    sa.Column("source_count", sa.Integer, nullable=True),
    sa.Column("source_complete", sa.Boolean, nullable=False),
    sa.Column("drift", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("details", Json, nullable=True),
    sa.Index(None, "target", "id"),
)

rejections = sa.Table(
    "rejections",
    metadata,
    sa.Column("target", Target, primary_key=True),
    sa.Column("key", Key, primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("first_seen", Seconds, nullable=False),
    sa.Column("last_seen", Seconds, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("hash", Hash, nullable=True),
    sa.Column("by_target", sa.Boolean, nullable=False),
)

doubts = sa.Table(
    "doubts",
    metadata,
    sa.Column("target", Target, primary_key=True),
    sa.Column("key", Key, primary_key=True),
    sa.Column("until", Seconds, nullable=False),
    sa.Column("payload", Json, nullable=True),
)
"""Products whose last write is in doubt: a request the server may have applied after
syncd gave up on it. Re-asserted by the first run after ``until`` (``payload``: what
state held when the doubt arose, to re-delete a product deleted since)."""

absences = sa.Table(
    "absences",
    metadata,
    sa.Column("target", Target, primary_key=True),
    sa.Column("key", Key, primary_key=True),
    sa.Column("runs", sa.Integer, nullable=False),
    sa.Column("since", Seconds, nullable=False),
)
"""Products absent from the last ``runs`` consecutive complete reads, not yet deleted
(``delete_after_missing_runs``)."""

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("target", Target, primary_key=True),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("expires_at", Seconds, nullable=False),
)
"""One writer per target: ``expires_at`` is on the database server's clock."""

replicas = sa.Table(
    "replicas",
    metadata,
    sa.Column("replica", sa.String(255), primary_key=True),
    sa.Column("started_at", Seconds, nullable=False),
    sa.Column("expires_at", Seconds, nullable=False),
)
"""The daemons sharing this state database, each renewing its row while it lives
(``expires_at`` on the database server's clock): they divide the targets between them."""


def _mysql_table_options(target: sa.MetaData, connection: Connection, **_: Any) -> None:
    """Every table InnoDB and utf8mb4 when created on MySQL/MariaDB (see above)."""
    if connection.dialect.name in ("mysql", "mariadb"):
        for table in target.tables.values():
            table.dialect_kwargs.update(MYSQL_TABLE_OPTIONS)


sa.event.listen(metadata, "before_create", _mysql_table_options)


HEAD_REVISION = "0007"
"""The newest migration in ``migrations/versions``: a database at it has exactly the tables
above. Bump it with each new migration (a test checks it is Alembic's head)."""

alembic_version = sa.Table(
    "alembic_version",
    sa.MetaData(),
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)
"""Alembic's own table (as Alembic defines it), one row: the revision the database is at.
Outside ``metadata``: it belongs to Alembic, not to syncd's schema."""


def create_at_head(connection: Connection) -> None:
    """Create syncd's schema in an empty database and record it at ``HEAD_REVISION``: the
    database ``alembic upgrade head`` leaves (a test compares the two), without loading
    Alembic (~0.1 s) and running each migration."""
    metadata.create_all(connection)
    alembic_version.create(connection)
    connection.execute(alembic_version.insert().values(version_num=HEAD_REVISION))


def stamped_revisions(connection: Connection) -> list[str]:
    """The revisions recorded in ``alembic_version`` (none when the table is missing), read
    as Alembic reads them."""
    if not sa.inspect(connection).has_table(alembic_version.name):
        return []
    return list(connection.execute(sa.select(alembic_version.c.version_num)).scalars())


def mysql_collation(dialect: Dialect) -> str:
    """The binary, no-pad utf8mb4 collation of this MySQL or MariaDB server.

    Binary so keys are case-sensitive; no-pad so ``"a"`` and ``"a "`` stay two keys.
    """
    return "utf8mb4_nopad_bin" if getattr(dialect, "is_mariadb", False) else "utf8mb4_0900_bin"


def staging_table(name: str, dialect: Dialect) -> sa.Table:
    """A temporary table for one run's (seq, key, hash, source_hash), typed like ``products``.

    Same key type and collation as ``products.key``, so the joins use its index.
    """
    options: dict[str, Any] = {}
    if dialect.name in ("mysql", "mariadb"):
        options = {**MYSQL_TABLE_OPTIONS, "mysql_collate": mysql_collation(dialect)}
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("key", Key, nullable=False),
        sa.Column("hash", Hash, nullable=False),
        sa.Column("source_hash", Hash, nullable=True),
        prefixes=["TEMPORARY"],
        **options,
    )


def fingerprint_table(name: str, dialect: Dialect) -> sa.Table:
    """A temporary table for one run's (seq, source_hash): the raw rows' fingerprints."""
    options: dict[str, Any] = {}
    if dialect.name in ("mysql", "mariadb"):
        options = {**MYSQL_TABLE_OPTIONS, "mysql_collate": mysql_collation(dialect)}
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("source_hash", Hash, nullable=False),
        prefixes=["TEMPORARY"],
        **options,
    )


def key_table(name: str, dialect: Dialect) -> sa.Table:
    """A temporary table of product keys (the candidates for deletion of a run)."""
    options: dict[str, Any] = {}
    if dialect.name in ("mysql", "mariadb"):
        options = {**MYSQL_TABLE_OPTIONS, "mysql_collate": mysql_collation(dialect)}
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("key", Key, nullable=False),
        prefixes=["TEMPORARY"],
        **options,
    )
