"""The SQL state store (SQLAlchemy Core): SQLite by default, PostgreSQL, MySQL/MariaDB.

Owns the engine (SQLite pragmas, an owner-only database file), the translation of
SQLAlchemy errors into ``StateError`` (never showing the password), the temp-table
staging of a run's keys, and the ``upgrade_database``/``current_revision`` helpers.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import sqlalchemy as sa
from alembic.util.exc import CommandError
from sqlalchemy import event
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError

from syncd.errors import StateError
from syncd.model import UNACKNOWLEDGED, Acked, Rejection, RejectionRecord, RunRecord
from syncd.state import migrate
from syncd.state.base import Staging, StateStore
from syncd.state.schema import (
    leases,
    products,
    runs,
    staging_table,
)
from syncd.state.schema import rejections as rejections_table

READ_BATCH = 2000
"""Rows fetched per round trip when streaming acknowledged entries or deletes."""
IN_BATCH = 500
"""Keys per ``IN (...)`` list when deleting by key."""
SQLITE_BUSY_TIMEOUT_MS = 30_000
ACK_COLUMNS = ("target", "key", "hash", "payload", "acked_at")
STAGED_COLUMNS = ("seq", "key", "hash")

_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
_DRIVER_EXTRAS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}


# -- engine and errors ---------------------------------------------------------


def normalize_url(url: str | URL) -> URL:
    """Parse a state URL, choosing psycopg 3 / PyMySQL when no driver is named."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StateError(f"invalid state database URL {safe_url(url)}: {exc}") from exc
    if parsed.drivername in _DEFAULT_DRIVERS:
        parsed = parsed.set(drivername=_DEFAULT_DRIVERS[parsed.drivername])
    if parsed.get_backend_name() in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL as it may be shown: password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return "<unparsable URL>"


def describe_failure(what: str, url: URL, exc: BaseException) -> str:
    """A one-line message for a failed operation, scrubbed of the URL's password."""
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    detail = " ".join(f"{type(cause).__name__}: {cause}".split())
    if url.password:
        for secret in {str(url.password), quote_plus(str(url.password))}:
            detail = detail.replace(secret, "***")
    if len(detail) > 400:
        detail = detail[:400] + "…"
    return f"state database {safe_url(url)}: {what} failed: {detail}"


@contextlib.contextmanager
def translated(what: str, url: URL) -> Iterator[None]:
    """Turn database and migration errors into ``StateError``, chained with ``from``."""
    try:
        yield
    except StateError:
        raise
    except (SQLAlchemyError, CommandError, OSError) as exc:
        raise StateError(describe_failure(what, url, exc)) from exc


def _create_sqlite_file(url: URL) -> None:
    """Create the database file (and its folder) readable by its owner only."""
    database = url.database
    if (
        not database
        or database == ":memory:"
        or url.query.get("uri")
        or database.startswith("file:")
    ):
        return
    path = Path(database)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def create_state_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """An engine for the state database; for SQLite, creates the file 0600 and sets WAL."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        _create_sqlite_file(parsed)
        engine = sa.create_engine(
            parsed, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        event.listen(engine, "connect", _set_sqlite_pragmas)
        return engine
    try:
        return sa.create_engine(parsed, echo=echo, pool_pre_ping=True)
    except ImportError as exc:
        extra = _DRIVER_EXTRAS.get(parsed.get_backend_name())
        hint = f": install syncd[{extra}]" if extra else ""
        raise StateError(
            f"state database {safe_url(parsed)} needs the {parsed.get_driver_name()} driver{hint}"
        ) from exc


def upgrade_database(url: str) -> str:
    """Bring the state database at ``url`` to the newest schema; return its revision."""
    parsed = normalize_url(url)
    with translated("upgrade", parsed):
        engine = create_state_engine(parsed)
        try:
            with engine.begin() as conn:
                return migrate.upgrade_connection(conn)
        finally:
            engine.dispose()


def current_revision(url: str) -> str | None:
    """The schema revision of the state database at ``url`` (None: never migrated)."""
    parsed = normalize_url(url)
    with translated("read the schema revision", parsed):
        engine = create_state_engine(parsed)
        try:
            with engine.connect() as conn:
                return migrate.current_revision_of(conn)
        finally:
            engine.dispose()


def _upsert(
    conn: Connection,
    table: sa.Table,
    keys: Sequence[str],
    updates: Callable[[Any], dict[str, Any]],
) -> sa.Insert:
    """``INSERT … ON CONFLICT/DUPLICATE KEY UPDATE`` for this connection's dialect.

    ``updates`` receives the row proposed for insertion (``excluded``/``inserted``).
    """
    name = conn.dialect.name
    if name == "sqlite":
        lite = sqlite.insert(table)
        return lite.on_conflict_do_update(index_elements=keys, set_=updates(lite.excluded))
    if name == "postgresql":
        pg = postgresql.insert(table)
        return pg.on_conflict_do_update(index_elements=keys, set_=updates(pg.excluded))
    if name in ("mysql", "mariadb"):
        my = mysql.insert(table)
        return my.on_duplicate_key_update(updates(my.inserted))
    raise StateError(f"unsupported state database dialect {name!r}")


def _executemany(
    conn: Connection,
    stmt: sa.Insert | sa.Delete,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """Run an INSERT, upsert or DELETE for many rows through the driver's ``executemany``.

    The hot paths (staging, acks) skip SQLAlchemy's per-row parameter processing,
    which costs several times what the database does; values must be driver-native.
    """
    if not rows:
        return
    compiled = stmt.compile(dialect=conn.dialect, column_keys=list(columns))
    params: Sequence[Any]
    if compiled.positiontup is None:
        params = [dict(zip(columns, row, strict=True)) for row in rows]
    else:
        order = [columns.index(name) for name in compiled.positiontup]
        params = (
            rows if order == list(range(len(order))) else [tuple(r[i] for i in order) for r in rows]
        )
    conn.exec_driver_sql(compiled.string, params)


def _delete_keys(conn: Connection, table: sa.Table, target: str, keys: Sequence[str]) -> None:
    """Delete the target's rows of these keys (``products`` or ``rejections``).

    SQLite runs one cheap in-process statement per key; a server gets one round trip
    per ``IN_BATCH`` keys.
    """
    if conn.dialect.name == "sqlite":
        by_key = table.delete().where(
            table.c.target == sa.bindparam("b_target"), table.c.key == sa.bindparam("b_key")
        )
        _executemany(conn, by_key, ("b_target", "b_key"), [(target, key) for key in keys])
        return
    for chunk in _chunks(keys):
        conn.execute(table.delete().where(table.c.target == target, table.c.key.in_(chunk)))


def _chunks(items: Sequence[str], size: int = IN_BATCH) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _acked(row: Sequence[Any]) -> Acked:
    """An ``Acked`` from a (key, hash, payload JSON text) row."""
    key, hash_, payload = row
    return Acked(key=key, hash=bytes(hash_), payload=json.loads(payload))


# -- the store -----------------------------------------------------------------


class SqlStateStore:
    """``StateStore`` on any SQLAlchemy URL; SQLite (``sqlite:///path``) by default."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalize_url(url)
        with self.translated("open"):
            self.engine = create_state_engine(self.url, echo=echo)

    def __repr__(self) -> str:
        return f"SqlStateStore({safe_url(self.url)!r})"

    def translated(self, what: str) -> contextlib.AbstractContextManager[None]:
        return translated(what, self.url)

    def upgrade(self) -> None:
        with self.translated("upgrade"), self.engine.begin() as conn:
            migrate.upgrade_connection(conn)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.translated("ping"), self.engine.connect() as conn:
            conn.execute(sa.select(1))

    # -- acknowledged products ----------------------------------------------

    def begin_staging(self, target: str) -> SqlStaging:
        return SqlStaging(self, target)

    def apply_acks(
        self,
        target: str,
        upserts: Sequence[tuple[str, bytes, bytes]],
        deletes: Sequence[str] = (),
    ) -> None:
        if not upserts and not deletes:
            return
        now = time.time()
        latest = {key: (hash_, canonical) for key, hash_, canonical in upserts}
        rows = [(target, key, h, c.decode(), now) for key, (h, c) in latest.items()]
        gone = [key for key in dict.fromkeys(deletes) if key not in latest]
        with self.translated("record acknowledgements"), self.engine.begin() as conn:
            if rows:
                stmt = _upsert(
                    conn,
                    products,
                    ["target", "key"],
                    lambda new: {
                        "hash": new.hash,
                        "payload": new.payload,
                        "acked_at": new.acked_at,
                    },
                )
                _executemany(conn, stmt, ACK_COLUMNS, rows)
            _delete_keys(conn, products, target, gone)
            _delete_keys(conn, rejections_table, target, [*latest, *gone])

    def mark_unacknowledged(self, target: str, entries: Sequence[tuple[str, bytes]]) -> None:
        if not entries:
            return
        now = time.time()
        latest = {key: canonical for key, canonical in entries}
        rows = [(target, key, UNACKNOWLEDGED, c.decode(), now) for key, c in latest.items()]
        with self.translated("mark writes in flight"), self.engine.begin() as conn:
            stmt = _upsert(conn, products, ["target", "key"], lambda new: {"hash": new.hash})
            _executemany(conn, stmt, ACK_COLUMNS, rows)

    def count(self, target: str) -> int:
        query = sa.select(sa.func.count()).select_from(products).where(products.c.target == target)
        with self.translated("count products"), self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def iter_acked(self, target: str) -> Iterator[Acked]:
        p = products.c
        query = sa.select(p.key, p.hash, p.payload).where(p.target == target).order_by(p.key)
        last: str | None = None
        while True:
            page = query if last is None else query.where(p.key > last)
            with self.translated("read products"), self.engine.connect() as conn:
                batch = conn.execute(page.limit(READ_BATCH)).all()
            for row in batch:
                yield _acked(row)
            if len(batch) < READ_BATCH:
                return
            last = batch[-1][0]

    def get(self, target: str, key: str) -> Acked | None:
        p = products.c
        query = sa.select(p.key, p.hash, p.payload).where(p.target == target, p.key == key)
        with self.translated("read a product"), self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _acked(row)

    def forget_target(self, target: str) -> int:
        with self.translated("forget a target"), self.engine.begin() as conn:
            return conn.execute(products.delete().where(products.c.target == target)).rowcount

    # -- runs ----------------------------------------------------------------

    def start_run(self, target: str, *, mode: str, mode_reason: str, holder: str) -> int:
        counters = dict.fromkeys(
            ("created", "updated", "deleted", "unchanged", "rejected", "failed", "held"), 0
        )
        values = {
            "target": target,
            "started_at": time.time(),
            "mode": mode,
            "mode_reason": mode_reason,
            "outcome": "running",
            "holder": holder,
            "requests": 0,
            "retries": 0,
            "source_complete": False,
            **counters,
        }
        with self.translated("start a run"), self.engine.begin() as conn:
            key = conn.execute(runs.insert().values(values)).inserted_primary_key
        assert key is not None
        return int(key[0])

    def finish_run(self, record: RunRecord) -> None:
        values = asdict(record)
        del values["id"]
        if record.details is not None:
            values["details"] = json.dumps(record.details, sort_keys=True)
        with self.translated("finish a run"), self.engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == record.id).values(values))

    def mark_interrupted(self, target: str) -> int:
        stmt = (
            runs.update()
            .where(runs.c.target == target, runs.c.outcome == "running")
            .values(outcome="interrupted", finished_at=time.time())
        )
        with self.translated("mark runs interrupted"), self.engine.begin() as conn:
            return conn.execute(stmt).rowcount

    def recent_runs(self, target: str | None = None, limit: int = 20) -> list[RunRecord]:
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if target is not None:
            query = query.where(runs.c.target == target)
        with self.translated("read runs"), self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            RunRecord(
                **{
                    **row,
                    "source_complete": bool(row["source_complete"]),
                    "details": json.loads(row["details"]) if row["details"] else None,
                }
            )
            for row in rows
        ]

    def last_complete_source_count(self, target: str) -> int | None:
        r = runs.c
        query = (
            sa.select(r.source_count)
            .where(
                r.target == target,
                r.source_complete.is_(True),
                r.outcome.not_in(("running", "interrupted")),
            )
            .order_by(r.id.desc())
            .limit(1)
        )
        with self.translated("read runs"), self.engine.connect() as conn:
            count = conn.execute(query).scalar_one_or_none()
        return None if count is None else int(count)

    # -- rejections ----------------------------------------------------------

    def record_rejections(self, target: str, rejections: Sequence[Rejection], now: float) -> None:
        if not rejections:
            return
        latest = {r.key: r for r in rejections}
        rows = [
            {
                "target": target,
                "key": r.key,
                "reason": r.reason,
                "first_seen": now,
                "last_seen": now,
                "count": 1,
                "hash": r.hash,
                "by_target": r.by_target,
            }
            for r in latest.values()
        ]
        with self.translated("record rejections"), self.engine.begin() as conn:
            stmt = _upsert(
                conn,
                rejections_table,
                ["target", "key"],
                lambda new: {
                    "reason": new.reason,
                    "last_seen": new.last_seen,
                    "count": rejections_table.c.count + sa.literal_column("1", sa.Integer),
                    "hash": new.hash,
                    "by_target": new.by_target,
                },
            )
            conn.execute(stmt, rows)

    def held_rejections(self, target: str, since: float) -> dict[str, bytes | None]:
        r = rejections_table.c
        query = sa.select(r.key, r.hash).where(
            r.target == target, r.by_target.is_(True), r.last_seen >= since
        )
        with self.translated("read rejections"), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {row[0]: None if row[1] is None else bytes(row[1]) for row in rows}

    def prune_rejections(self, target: str, keep: Collection[str]) -> int:
        r = rejections_table.c
        with self.translated("prune rejections"), self.engine.begin() as conn:
            keys: Sequence[str] = (
                conn.execute(sa.select(r.key).where(r.target == target)).scalars().all()
            )
            stale = [key for key in keys if key not in keep]
            for chunk in _chunks(stale):
                conn.execute(rejections_table.delete().where(r.target == target, r.key.in_(chunk)))
        return len(stale)

    def open_rejections(self, target: str | None = None) -> list[RejectionRecord]:
        query = sa.select(rejections_table).order_by(
            rejections_table.c.target, rejections_table.c.key
        )
        if target is not None:
            query = query.where(rejections_table.c.target == target)
        with self.translated("read rejections"), self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            RejectionRecord(
                **{
                    **row,
                    "hash": None if row["hash"] is None else bytes(row["hash"]),
                    "by_target": bool(row["by_target"]),
                }
            )
            for row in rows
        ]

    # -- leases --------------------------------------------------------------

    def acquire_lease(self, target: str, holder: str, ttl: float, now: float) -> bool:
        lease = leases.c
        take = (
            leases.update()
            .where(lease.target == target, sa.or_(lease.expires_at < now, lease.holder == holder))
            .values(holder=holder, expires_at=now + ttl)
        )
        with self.translated("acquire a lease"):
            with self.engine.begin() as conn:
                if conn.execute(take).rowcount == 1:
                    return True
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        leases.insert().values(target=target, holder=holder, expires_at=now + ttl)
                    )
                return True
            except IntegrityError:
                pass  # someone else inserted it first: their lease may still have expired
            with self.engine.begin() as conn:
                return conn.execute(take).rowcount == 1

    def renew_lease(self, target: str, holder: str, ttl: float, now: float) -> bool:
        stmt = (
            leases.update()
            .where(leases.c.target == target, leases.c.holder == holder)
            .values(expires_at=now + ttl)
        )
        with self.translated("renew a lease"), self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def release_lease(self, target: str, holder: str) -> None:
        stmt = leases.delete().where(leases.c.target == target, leases.c.holder == holder)
        with self.translated("release a lease"), self.engine.begin() as conn:
            conn.execute(stmt)

    def lease_holder(self, target: str, now: float) -> str | None:
        query = sa.select(leases.c.holder).where(
            leases.c.target == target, leases.c.expires_at >= now
        )
        with self.translated("read a lease"), self.engine.connect() as conn:
            return conn.execute(query).scalar_one_or_none()


# -- staging -------------------------------------------------------------------


class SqlStaging:
    """A run's (key, hash) pairs in a temporary table on a dedicated connection.

    Rows carry a sequence number, so ``compare`` joins only the chunk just staged
    against ``products``. Nothing is written to the real tables: a crash leaves
    nothing behind, the temporary table dies with the connection.
    """

    def __init__(self, store: SqlStateStore, target: str) -> None:
        self._store = store
        self._target = target
        self._staged = 0
        self._indexed = False
        self._conn: Connection | None = None
        with store.translated("begin staging"):
            conn = store.engine.connect()
            try:
                self._table = staging_table(f"syncd_staged_{uuid.uuid4().hex[:16]}", conn.dialect)
                self._table.create(conn)
                if conn.dialect.name == "postgresql":
                    # Fresh statistics, so the planner probes products by key (see
                    # _transaction); a large first load may not be analyzed yet.
                    conn.exec_driver_sql("ANALYZE products")
                conn.commit()
            except BaseException:
                conn.invalidate()
                conn.close()
                raise
        self._conn = conn

    def __enter__(self) -> SqlStaging:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[Connection]:
        """One short transaction on the staging connection, errors translated.

        On PostgreSQL, joins are forced to index probes: the temp table has no
        statistics, and a hash or merge join would read every product of the target
        for each chunk.
        """
        if self._conn is None:
            raise StateError("staging is closed")
        conn = self._conn
        with self._store.translated(what):
            try:
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql("SET LOCAL enable_hashjoin = off")
                    conn.exec_driver_sql("SET LOCAL enable_mergejoin = off")
                yield conn
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

    def compare(self, entries: Sequence[tuple[str, bytes]]) -> dict[str, Acked | None]:
        if not entries:
            return {}
        first = self._staged + 1
        rows = [(seq, key, hash_) for seq, (key, hash_) in enumerate(entries, start=first)]
        s, p = self._table.c, products.c
        changed = (
            sa.select(s.key, p.hash, p.payload)
            .select_from(
                self._table.outerjoin(products, sa.and_(p.target == self._target, p.key == s.key))
            )
            .where(
                s.seq.between(first, first + len(rows) - 1),
                sa.or_(p.hash.is_(None), p.hash != s.hash),
            )
        )
        with self._transaction("stage keys") as conn:
            _stage(conn, self._table, rows)
            found = conn.execute(changed).all()
        self._staged += len(rows)
        return {row[0]: None if row[1] is None else _acked(row) for row in found}

    def staged_count(self) -> int:
        return self._staged

    def duplicates(self) -> list[str]:
        s = self._table.c
        query = sa.select(s.key).group_by(s.key).having(sa.func.count() > 1).order_by(s.key)
        self._index()
        with self._transaction("find duplicate keys") as conn:
            return list(conn.execute(query).scalars())

    def unseen(self) -> Iterator[Acked]:
        """Stream the deletes in key order, one short query per batch (keyset paging)."""
        self._index()
        s, p = self._table.c, products.c
        query = (
            sa.select(p.key, p.hash, p.payload)
            .where(p.target == self._target, ~sa.exists().where(s.key == p.key))
            .order_by(p.key)
            .limit(READ_BATCH)
        )
        last: str | None = None
        while True:
            page = query if last is None else query.where(p.key > last)
            with self._transaction("find unseen keys") as conn:
                batch = conn.execute(page).all()
            for row in batch:
                yield _acked(row)
            if len(batch) < READ_BATCH:
                return
            last = batch[-1][0]

    def _index(self) -> None:
        """Index the staged keys once, before the set operations that need it."""
        if self._indexed:
            return
        with self._transaction("index staged keys") as conn:
            sa.Index(f"{self._table.name}_key", self._table.c.key).create(conn)
            if conn.dialect.name in ("postgresql", "sqlite"):
                conn.exec_driver_sql(f"ANALYZE {self._table.name}")
        self._indexed = True

    def close(self) -> None:
        """Drop the staged entries and give the connection back; never raises."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.rollback()
            self._table.drop(conn)
            conn.commit()
        except SQLAlchemyError:
            # The temporary table dies with its session: discard the connection.
            conn.invalidate()
        finally:
            conn.close()


def _stage(conn: Connection, table: sa.Table, rows: Sequence[tuple[int, str, bytes]]) -> None:
    """Append (seq, key, hash) rows to a staging table: COPY on PostgreSQL, else executemany."""
    if conn.dialect.name != "postgresql":
        _executemany(conn, table.insert(), STAGED_COLUMNS, rows)
        return
    driver = conn.connection.driver_connection
    assert driver is not None
    copy_sql = f"COPY {table.name} ({', '.join(STAGED_COLUMNS)}) FROM STDIN"
    try:
        with driver.cursor() as cursor, cursor.copy(copy_sql) as copy:
            for row in rows:
                copy.write_row(row)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(copy_sql, None, exc, conn.dialect.loaded_dbapi.Error) from exc


if TYPE_CHECKING:

    def _implements(store: SqlStateStore, staging: SqlStaging) -> tuple[StateStore, Staging]:
        """Let mypy check that the classes satisfy the protocols."""
        return store, staging
