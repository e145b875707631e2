"""Security: secrets only from the environment (or ``NAME_FILE``) and never in logs, errors,
``plan`` output or the state database; TLS verification always on; the SQL source
read-only; the state database owner-only; the fakes bound to loopback only."""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import re
import shutil
import sqlite3
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd import logs
from syncd.config import HttpConfig, SqlSourceConfig, parse_config
from syncd.errors import ConfigError, SourceError
from syncd.sandbox import FakeUserflux, FakeVambe, Fault, serve
from syncd.sandbox.catalog import FakeCatalogApi
from tests.robustness.helpers import (
    UF_KEY,
    UF_KEY_ENV,
    UF_NAME,
    VB_KEY,
    VB_KEY_ENV,
    Sandbox,
    box,
    make_records,
    sandbox,
    touches,
)

__all__ = ["box"]

DB_PASSWORD = "pg-pass-5e1d77aa"
SOURCE_TOKEN = "src-token-93b0c4e1"


def sqlite_dump(path: Path) -> str:
    """Every table of the state database, as the ``sqlite3`` shell dumps it."""
    if shutil.which("sqlite3"):
        result = subprocess.run(
            ["sqlite3", str(path), ".dump"], capture_output=True, text=True, check=True
        )
        return result.stdout
    with contextlib.closing(sqlite3.connect(path)) as db:
        return "\n".join(db.iterdump())


def assert_no_secret(where: str, text: str, secrets: tuple[str, ...]) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} found in {where}: …{_around(text, secret)}…"


def _around(text: str, secret: str) -> str:
    at = text.index(secret)
    return text[max(0, at - 200) : at + len(secret) + 40]


def cli_transcript(box: Sandbox) -> str:
    """plan, sync, history and rejections at debug level: everything printed."""
    out = []
    for args in (["plan"], ["sync"], ["history"], ["rejections"]):
        result = box.cli("--log-level", "debug", *args)
        out.append(f"$ syncd {' '.join(args)}\n{result.stdout}\n{result.stderr}")
    return "\n".join(out)


# -- secrets ----------------------------------------------------------------------------


@pytest.mark.slow
def test_api_keys_never_appear_in_output_logs_or_the_state_database(box: Sandbox) -> None:
    box.write_catalog(make_records(12))
    box.configure(log_level="debug")
    assert box.userflux is not None and box.vambe is not None
    box.userflux.inject(Fault(status=401, times=None))  # a target refusing the key
    box.vambe.inject(Fault(status=500, times=None, match=touches("P00004")))
    box.vambe.inject(Fault(status=400, times=None, match=touches("P00007")))

    transcript = cli_transcript(box)

    assert "UserFlux refused the API key" in transcript  # the failures did happen
    assert "still failing after retries" in transcript
    secrets = (UF_KEY, VB_KEY)
    assert_no_secret("the CLI output and logs", transcript, secrets)
    assert_no_secret("the state database", sqlite_dump(box.state_path), secrets)


@pytest.mark.slow
def test_an_error_body_echoing_the_api_key_does_not_leak_it(box: Sandbox) -> None:
    box.write_catalog(make_records(12))
    box.configure(log_level="debug")
    assert box.userflux is not None and box.vambe is not None
    box.userflux.inject(Fault(status=401, times=None, body=f'{{"error": "bad key {UF_KEY}"}}'))
    echo = f"gateway: x-api-key {VB_KEY} rejected"
    box.vambe.inject(Fault(status=500, times=None, match=touches("P00004"), body=echo))
    box.vambe.inject(Fault(status=400, times=None, match=touches("P00007"), body=echo))

    transcript = cli_transcript(box)

    secrets = (UF_KEY, VB_KEY)
    assert_no_secret("the CLI output and logs", transcript, secrets)
    assert_no_secret("the state database", sqlite_dump(box.state_path), secrets)


def test_api_keys_can_come_from_a_file_named_by_NAME_FILE(box: Sandbox, tmp_path: Path) -> None:
    records = make_records(5)
    box.write_catalog(records)
    box.configure()
    for env, key in ((UF_KEY_ENV, UF_KEY), (VB_KEY_ENV, VB_KEY)):
        secret_file = tmp_path / f"{env.lower()}.txt"
        secret_file.write_text(key + "\n", encoding="utf-8")
        secret_file.chmod(0o600)
        del box.environ[env]
        box.environ[f"{env}_FILE"] = str(secret_file)

    result = box.cli("sync")

    assert result.returncode == 0, result.stderr
    box.assert_converged(records)
    assert_no_secret("the CLI output", result.stdout + result.stderr, (UF_KEY, VB_KEY))


def test_the_config_file_cannot_hold_an_api_key() -> None:
    data = {
        "source": {"kind": "file", "path": "catalog.jsonl"},
        "targets": [
            {
                "name": "uf",
                "kind": "userflux",
                "type_id": "p",
                "api_key": UF_KEY,
                "api_key_env": "K",
            }
        ],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ={"K": UF_KEY})
    assert "targets[0].api_key: unknown key" in str(caught.value)
    assert UF_KEY not in str(caught.value)


@pytest.mark.parametrize("where", ["source", "state"])
def test_a_database_password_written_in_the_config_is_refused(where: str) -> None:
    url = f"postgresql://syncd:{DB_PASSWORD}@db.internal/shop"
    data: dict[str, Any] = {
        "source": {"kind": "file", "path": "catalog.jsonl"},
        "targets": [{"name": "uf", "kind": "userflux", "type_id": "p", "api_key_env": "K"}],
    }
    if where == "source":
        data["source"] = {"kind": "sql", "url": url, "query": "SELECT 1"}
    else:
        data["state"] = {"url": url}
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ={"K": "k"})
    assert f"{where}.url" in str(caught.value)
    assert DB_PASSWORD not in str(caught.value)


@pytest.mark.slow
def test_a_state_database_password_never_shows_when_the_database_fails(box: Sandbox) -> None:
    box.write_catalog(make_records(3))
    box.configure(state='url_env = "ROBUST_STATE_URL"')
    box.environ["ROBUST_STATE_URL"] = f"postgresql+psycopg://syncd:{DB_PASSWORD}@127.0.0.1:9/state"

    results = [box.cli(*args) for args in (["sync"], ["history"])]

    for result in results:
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert "postgresql+psycopg://syncd:***@127.0.0.1:9/state" in result.stderr
        assert_no_secret("the CLI output", result.stdout + result.stderr, (DB_PASSWORD,))


@pytest.mark.slow
def test_a_source_token_never_shows_in_output_or_state(box: Sandbox) -> None:
    records = make_records(30)
    with FakeCatalogApi(
        records,
        style="page",
        page_size_default=10,
        auth=("authorization", f"Bearer {SOURCE_TOKEN}"),
    ) as api:
        api.fail_on_page(2, status=503)
        box.environ["ROBUST_SOURCE_TOKEN"] = SOURCE_TOKEN
        box.configure(
            source=(
                "[source]\n"
                'kind = "http"\n'
                f'url = "{api.url}"\n'
                'records_path = "products"\n'
                "max_attempts = 2\n"
                'pagination = { style = "page", page_size = 10 }\n'
                'auth = { kind = "bearer", token_env = "ROBUST_SOURCE_TOKEN" }\n'
            ),
            log_level="debug",
        )

        transcript = cli_transcript(box)

    assert "HTTP 503" in transcript  # the read failed on page 2
    secrets = (SOURCE_TOKEN, UF_KEY, VB_KEY)
    assert_no_secret("the CLI output and logs", transcript, secrets)
    assert_no_secret("the state database", sqlite_dump(box.state_path), secrets)


# -- TLS --------------------------------------------------------------------------------


def _ssl_context_of(client: Any) -> ssl.SSLContext:
    return client._transport._pool._ssl_context  # type: ignore[no-any-return]


def test_every_http_client_verifies_certificates_and_hostnames() -> None:
    import certifi

    from syncd.httpclient import make_client

    for http in (HttpConfig(), HttpConfig(ca_bundle=Path(certifi.where()))):
        with make_client(http, base_url="https://example.invalid") as client:
            context = _ssl_context_of(client)
            assert context.verify_mode is ssl.CERT_REQUIRED
            assert context.check_hostname is True


def test_tls_verification_can_not_be_turned_off_in_the_config() -> None:
    data = {
        "source": {"kind": "file", "path": "catalog.jsonl"},
        "targets": [{"name": "uf", "kind": "userflux", "type_id": "p", "api_key_env": "K"}],
        "http": {"verify": False},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ={"K": "k"})
    assert "verify: unknown key" in str(caught.value)


@pytest.mark.parametrize("bundle", ["missing", "not-pem"])
def test_a_bad_ca_bundle_is_a_config_error(tmp_path: Path, bundle: str) -> None:
    from syncd.httpclient import make_client

    path = tmp_path / "ca.pem"
    if bundle == "not-pem":
        path.write_text("this is not a certificate\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        make_client(HttpConfig(ca_bundle=path))
    assert "http.ca_bundle: cannot load" in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.mark.slow
def test_a_bad_ca_bundle_stops_the_cli_with_exit_2_before_sending(box: Sandbox) -> None:
    box.write_catalog(make_records(3))
    box.configure()
    text = box.config_path.read_text()
    box.config_path.write_text(
        text.replace("[logging]", '[http]\nca_bundle = "/nonexistent/ca.pem"\n\n[logging]')
    )

    result = box.cli("sync")

    assert result.returncode == 2, result.stderr
    assert "http.ca_bundle: cannot load /nonexistent/ca.pem" in result.stderr
    assert box.new_requests() == ([], [])


@contextlib.contextmanager
def https_userflux(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A TLS server on 127.0.0.1 with a fresh self-signed certificate; yields its URL,
    the certificate (to use as ca_bundle) and the paths it was asked for."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert, seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_a_target_with_an_untrusted_certificate_gets_nothing_until_its_ca_is_configured(
    tmp_path: Path,
) -> None:
    with (
        https_userflux(tmp_path) as (url, cert, seen),
        sandbox(tmp_path / "box", vambe=False) as box,
    ):
        box.write_catalog(make_records(2))
        assert box.userflux is not None  # its URL is replaced by the TLS server's
        box.configure(targets=[UF_NAME])
        text = box.config_path.read_text().replace(box.userflux.url, url)
        box.config_path.write_text(text)

        refused = box.sync()

        [target] = refused.targets
        assert target.outcome != "ok"
        assert (
            "CERTIFICATE_VERIFY_FAILED" in (target.error or "")
            or "certificate" in (target.error or "").lower()
        )
        assert seen == []

        box.config_path.write_text(
            text.replace("[logging]", f'[http]\nca_bundle = "{cert}"\n\n[logging]')
        )
        trusted = box.sync()

        assert trusted.ok, [(t.outcome, t.error) for t in trusted.targets]
        assert seen == ["/product", "/product"]


# -- the SQL source is read-only ------------------------------------------------------


WRITES = [
    "DELETE FROM items RETURNING id, title",
    "UPDATE items SET title = 'gone' RETURNING id, title",
]


def _items(conn: Any) -> None:
    conn.execute("CREATE TABLE items (id VARCHAR(20) PRIMARY KEY, title VARCHAR(50))")
    conn.execute("INSERT INTO items VALUES ('P1', 'one'), ('P2', 'two')")


def _read_with(url: str, query: str) -> None:
    from syncd.sources.sql import SqlSource

    list(SqlSource(SqlSourceConfig(kind="sql", url=url, query=query)).read())


@pytest.mark.parametrize("query", WRITES)
def test_the_sqlite_source_can_not_write(tmp_path: Path, query: str) -> None:
    path = tmp_path / "shop.db"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        _items(db)

    with pytest.raises(SourceError) as caught:
        _read_with(f"sqlite:///{path}", query)

    assert "readonly" in str(caught.value).replace("-", "").replace(" ", "")
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT id, title FROM items ORDER BY id").fetchall() == [
            ("P1", "one"),
            ("P2", "two"),
        ]


def _server_read_only(url: str, query: str, expect: str, setup: tuple[str, ...] = ()) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE items (id VARCHAR(20) PRIMARY KEY, title VARCHAR(50))"
            )
            conn.exec_driver_sql("INSERT INTO items VALUES ('P1', 'one'), ('P2', 'two')")
            for statement in setup:
                conn.exec_driver_sql(statement)
        with pytest.raises(SourceError) as caught:
            _read_with(url, query)
        assert expect in str(caught.value).lower()
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT id, title FROM items ORDER BY id").all()
        assert [tuple(r) for r in rows] == [("P1", "one"), ("P2", "two")]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_postgresql_source_can_not_write(pg_url: str) -> None:
    """A plain DELETE can't even be a cursor's query; a function hides one: the
    read-only transaction still refuses it."""
    wipe = (
        "CREATE FUNCTION wipe() RETURNS TABLE (id varchar, title varchar) "
        "LANGUAGE sql AS $$ DELETE FROM items RETURNING id, title $$"
    )
    _server_read_only(pg_url, "SELECT * FROM wipe()", "read-only transaction", setup=(wipe,))


@pytest.mark.mariadb
def test_the_mariadb_source_can_not_write(mariadb_url: str) -> None:
    _server_read_only(mariadb_url, WRITES[0], "read only transaction")


# -- the state database file ----------------------------------------------------------


def test_the_state_database_is_created_readable_by_its_owner_only(box: Sandbox) -> None:
    box.write_catalog(make_records(3))
    box.configure(state=f'url = "sqlite:///{box.root / "private" / "state.db"}"')
    previous = os.umask(0o022)
    try:
        result = box.cli("sync")
    finally:
        os.umask(previous)

    assert result.returncode == 0, result.stderr
    folder = box.root / "private"
    assert folder.stat().st_mode & 0o777 == 0o700
    files = [p for p in folder.iterdir() if p.name.startswith("state.db")]
    assert files
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o600, path


# -- the fakes ----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_the_fake_servers_refuse_to_bind_anything_but_loopback(host: str) -> None:
    for fake in (FakeUserflux, FakeVambe):
        with pytest.raises(ValueError, match=r"127\.0\.0\.1 only"):
            fake("key", host=host)
    with pytest.raises(ValueError, match=r"127\.0\.0\.1 only"):
        serve("userflux", host, 0, "key", stop_event=threading.Event())


def test_the_fakes_listen_on_loopback() -> None:
    with FakeUserflux("key") as uf, FakeVambe("key", host="localhost") as vb:
        assert uf.url.startswith("http://127.0.0.1:")
        assert vb.url.startswith("http://127.0.0.1:")


@pytest.mark.slow
def test_the_sandbox_command_refuses_a_public_host_with_a_clear_message(box: Sandbox) -> None:
    box.environ["SANDBOX_API_KEY"] = "key"
    command = [sys.executable, "-m", "syncd", "sandbox", "userflux", "--host", "0.0.0.0"]
    result = subprocess.run(
        command, env=box.cli_env(), capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--host" in result.stderr and "127.0.0.1" in result.stderr


# -- the scrubber: every form a secret takes, before any cut ---------------------------

SHAPES = [
    "s3cr3t-token-value",
    "p@ss:w0rd+with/slash=",
    'quote"and\\backslash',
    "ümlaut-pässwörd-ñ",
    "a b c d e f",
    "tab\tand\nnewline!",
    "==++//::",
]
"""Secret shapes: URL, JSON and base64 special characters, non-ASCII, whitespace."""

secrets_st = st.one_of(
    st.sampled_from(SHAPES),
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",)),
        min_size=6,
        max_size=40,
    ).filter(lambda s: "*" not in s and len(set(s)) >= 4),
)


@pytest.fixture
def fresh_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty registry, put back afterwards: a test's secrets don't blank other tests."""
    monkeypatch.setattr(logs, "_secrets", set())
    monkeypatch.setattr(logs, "_by_length", ())


def every_form(secret: str) -> list[str]:
    raw = secret.encode()
    return [
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        # as other software writes it: lower-case percent-encoding, PHP's json_encode
        # (``\/``), JSON escaping every punctuation character, HTML
        re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), quote(secret, safe="")),
        json.dumps(secret)[1:-1].replace("/", "\\/"),
        "".join(c if c.isalnum() else f"\\u{ord(c):04x}" for c in secret),
        html.escape(secret),
    ]


def _reset() -> None:
    logs._secrets.clear()
    logs._by_length = ()


@settings(max_examples=150, deadline=None)
@given(secret=secrets_st, before=st.text(max_size=30), after=st.text(max_size=30))
def test_no_form_of_a_registered_secret_survives_scrub(
    secret: str, before: str, after: str
) -> None:
    _reset()
    try:
        logs.register_secret(secret)
        for form in every_form(secret):
            if len(form) < logs.MIN_SECRET:
                continue
            scrubbed = logs.scrub(f"{before}{form}{after}")
            assert form not in scrubbed, (form, scrubbed)
    finally:
        _reset()


@settings(max_examples=100, deadline=None)
@given(
    user=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12).filter(
        lambda u: ":" not in u
    ),
    password=secrets_st,
)
def test_a_basic_auth_pair_is_scrubbed_in_every_form(user: str, password: str) -> None:
    _reset()
    try:
        logs.register_credentials(user, password)
        pair = f"{user}:{password}"
        token = base64.b64encode(pair.encode()).decode()
        texts = [
            f"Authorization: Basic {token}",
            f'{{"headers": {{"authorization": {json.dumps("Basic " + token)}}}}}',
            f"echo user={quote_plus(user)}&password={quote_plus(password)}",
            f"credentials {json.dumps(pair)}",
            f"url https://{quote(user, safe='')}:{quote(password, safe='')}@host/",
        ]
        for text in texts:
            scrubbed = logs.scrub(text)
            for form in (token, *every_form(password)):
                if len(form) >= logs.MIN_SECRET:
                    assert form not in scrubbed, (form, scrubbed)
    finally:
        _reset()


def test_the_password_inside_a_registered_url_is_scrubbed_with_its_basic_form(
    fresh_secrets: None,
) -> None:
    logs.register_secret("postgresql://syncd:p%40ss%2Fw0rd@db.internal/shop")
    token = base64.b64encode(b"syncd:p@ss/w0rd").decode()

    for leak in ("p@ss/w0rd", "p%40ss%2Fw0rd", token):
        assert leak not in logs.scrub(f"error: {leak}!")


@settings(max_examples=60, deadline=None)
@given(secret=secrets_st, pad=st.text(alphabet="abcdefgh ", max_size=3))
def test_a_secret_straddling_a_cut_leaks_no_prefix_at_any_offset(secret: str, pad: str) -> None:
    _reset()
    try:
        logs.register_secret(secret)
        limit = 20
        for form in every_form(secret):
            for offset in range(0, limit + 1):
                text = "x" * offset + pad + form + " tail of the message"
                for source in (text, text[: offset + len(pad) + len(form) // 2]):
                    snippet = logs.scrub_snippet(source, limit)
                    _assert_no_prefix(snippet, form)
    finally:
        _reset()


def _assert_no_prefix(snippet: str, form: str) -> None:
    body = snippet.removesuffix(logs.ELLIPSIS)
    for size in range(logs.MIN_SECRET, len(form) + 1):
        assert not body.endswith(form[:size]), (form, snippet)
    assert form not in body or len(form) < logs.MIN_SECRET


def test_scrub_snippet_keeps_a_short_clean_text_whole_and_marks_a_cut(
    fresh_secrets: None,
) -> None:
    logs.register_secret("tok-1234567890")

    assert logs.scrub_snippet("all fine", 200) == "all fine"
    assert logs.scrub_snippet("abcdefghij", 5) == "abcde…"
    assert logs.scrub_snippet("bad token tok-1234567890 here", 200) == "bad token *** here"
    assert logs.scrub_snippet("bad token tok-12", 200) == "bad token …"


BASIC_USER = "feed-reader"
BASIC_PASSWORD = 'pä:ss+w/rd="x%7e'


@contextlib.contextmanager
def echoing_source() -> Iterator[str]:
    """A catalog API answering 500 with a body that echoes the password URL-encoded,
    JSON-escaped and raw, then the request's Authorization header (its token straddling
    the 200th character); yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            header = self.headers.get("Authorization", "")
            head = (
                f"form password={quote_plus(BASIC_PASSWORD)}; "
                f"json {json.dumps(BASIC_PASSWORD)}; raw {BASIC_PASSWORD}; "
            )
            echo = " echo: Authorization: "
            # the header's token starts 12 characters before the 200-character cut
            pad = "." * (200 - 12 - len("Basic ") - len(echo) - len(head))
            body = (head + pad + echo + header).encode()
            self.send_response(500)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/products"
    finally:
        server.shutdown()
        server.server_close()


def state_bytes(box: Sandbox) -> bytes:
    """The state database's files, as stored (the WAL too)."""
    return b"".join(
        p.read_bytes() for p in sorted(box.root.iterdir()) if p.name.startswith("state.db")
    )


@pytest.mark.slow
def test_basic_auth_echoed_in_a_source_error_body_leaks_nowhere(box: Sandbox) -> None:
    token = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
    leaks = (
        BASIC_PASSWORD,
        token,
        token[:12],  # the part of the header before the 200-character cut
        quote_plus(BASIC_PASSWORD),
        quote(BASIC_PASSWORD, safe=""),
        json.dumps(BASIC_PASSWORD)[1:-1],
        json.dumps(BASIC_PASSWORD, ensure_ascii=False)[1:-1],
    )
    with echoing_source() as url:
        box.environ["ROBUST_SOURCE_PASSWORD"] = BASIC_PASSWORD
        box.configure(
            source=(
                "[source]\n"
                'kind = "http"\n'
                f'url = "{url}"\n'
                'records_path = "products"\n'
                "max_attempts = 1\n"
                f'auth = {{ kind = "basic", username = "{BASIC_USER}", '
                'password_env = "ROBUST_SOURCE_PASSWORD" }\n'
            ),
            log_level="debug",
        )
        results = [
            box.cli("--log-level", "debug", *args)
            for args in (
                ["sync", "--json"],
                ["sync"],
                ["history", "--json"],
                ["history"],
                ["status", "--json"],
                ["status"],
                ["plan", "--json"],
            )
        ]

    transcript = "\n".join(r.stdout + r.stderr for r in results)
    assert "HTTP 500" in transcript  # the read did fail, with the body's snippet
    assert "echo: Authorization" in transcript
    assert_no_secret("the CLI output and logs", transcript, leaks)
    stored = state_bytes(box)
    assert b"HTTP 500" in stored
    for leak in leaks:
        assert leak.encode() not in stored, f"{leak!r} found in the state database file"


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_traceback_logged_with_a_secret_in_it_is_scrubbed(fresh_secrets: None, fmt: str) -> None:
    import io
    import logging

    import structlog

    secret = 'tb-secret:"ü+/='
    logs.register_secret(secret)
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure_logging("info", fmt, stream)
        try:
            raise RuntimeError(f"connect failed for {secret} ({quote_plus(secret)})")
        except RuntimeError:
            structlog.get_logger("syncd.test").error("syncd.test.failed", exc_info=True)
            logging.getLogger("some.library").exception("library saw %s", secret)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)

    output = stream.getvalue()
    assert "Traceback" in output and "RuntimeError" in output
    assert_no_secret("the log lines", output, tuple(every_form(secret)))
