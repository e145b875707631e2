"""The HTTP source against a real loopback catalog API: pagination, auth, retries, damage."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from syncd.config import HttpAuthConfig, HttpConfig, HttpSourceConfig, PaginationConfig
from syncd.errors import SourceError
from syncd.httpclient import parse_retry_after
from syncd.model import UnreadableRow
from syncd.sandbox.catalog import FakeCatalogApi
from syncd.sources import open_source
from syncd.sources.http import HttpSource

TOKEN = "tok-very-secret-123"


def catalog(n: int) -> list[dict[str, Any]]:
    return [{"id": f"p{i}", "name": f"Product {i}", "price": i + 0.5} for i in range(1, n + 1)]


def http_source(
    url: str,
    sleeps: list[float] | None = None,
    transport: httpx.BaseTransport | None = None,
    **options: Any,
) -> HttpSource:
    options.setdefault("records_path", "products")
    config = HttpSourceConfig(kind="http", url=url, **options)
    record_sleep = sleeps.append if sleeps is not None else _no_sleep
    return HttpSource(config, HttpConfig(), transport=transport, sleep=record_sleep)


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected sleep of {seconds} s")


@pytest.fixture
def api() -> Iterator[FakeCatalogApi]:
    with FakeCatalogApi(catalog(250), style="page") as fake:
        yield fake


def read_until_failure(source: HttpSource) -> tuple[list[Any], SourceError]:
    items: list[Any] = []
    with pytest.raises(SourceError) as raised:
        items.extend(source.read())
    return items, raised.value


# --- Pagination ------------------------------------------------------------------------

STYLES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # style: (fake options, source options)
    "none": ({}, {"pagination": PaginationConfig(style="none")}),
    "page": ({}, {"pagination": PaginationConfig(style="page", page_size=40)}),
    "offset": (
        {},
        {"pagination": PaginationConfig(style="offset", size_param="limit", page_size=40)},
    ),
    "cursor": ({"page_size_default": 40}, {"pagination": PaginationConfig(style="cursor")}),
    "next_url": ({"page_size_default": 40}, {"pagination": PaginationConfig(style="next_url")}),
    "link": (
        {"page_size_default": 40, "records_path": None},
        {"pagination": PaginationConfig(style="link"), "records_path": None},
    ),
}
PAGES = {"none": 1, "page": 7, "offset": 7, "cursor": 7, "next_url": 7, "link": 7}
"""Requests for 250 records at 40 a page: 6 full pages, a short one."""


@pytest.mark.parametrize("style", list(STYLES))
def test_every_pagination_style_reads_every_record_exactly_once(style: str) -> None:
    fake_options, source_options = STYLES[style]
    records = catalog(250)

    with FakeCatalogApi(records, style=style, **fake_options) as fake:
        items = list(http_source(fake.url, **source_options).read())

    assert items == records
    assert fake.requests == PAGES[style]


@pytest.mark.parametrize("style", ["page", "offset"])
def test_a_full_last_page_is_followed_by_one_empty_page(style: str) -> None:
    _, source_options = STYLES[style]

    with FakeCatalogApi(catalog(80), style=style) as fake:
        items = list(http_source(fake.url, **source_options).read())

    assert len(items) == 80
    assert fake.requests == 3


@pytest.mark.parametrize("style", ["cursor", "next_url", "link"])
def test_a_configured_page_size_is_asked_for_by_the_other_styles(style: str) -> None:
    pagination = PaginationConfig(style=style, page_size=50)

    with FakeCatalogApi(catalog(250), style=style, page_size_default=10) as fake:
        items = list(http_source(fake.url, pagination=pagination).read())

    assert len(items) == 250
    assert fake.requests == 5


def test_an_empty_catalog_is_a_complete_read_of_nothing() -> None:
    with FakeCatalogApi([], style="page") as fake:
        assert list(http_source(fake.url, pagination=PaginationConfig(style="page")).read()) == []


def test_each_read_sees_the_catalog_as_it_is_now(api: FakeCatalogApi) -> None:
    source = http_source(api.url, pagination=PaginationConfig(style="page"))
    first = list(source.read())

    del api.records[10:]
    api.records.append({"id": "new"})

    assert len(first) == 250
    assert list(source.read()) == [*catalog(10), {"id": "new"}]


def test_extra_params_go_with_every_page(api: FakeCatalogApi) -> None:
    seen: list[httpx.URL] = []

    def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json={"products": []})

    source = http_source(
        "https://shop.test/products",
        transport=httpx.MockTransport(spy),
        params={"status": "active"},
        pagination=PaginationConfig(style="page"),
    )
    list(source.read())

    assert seen[0].params["status"] == "active"
    assert seen[0].params["page"] == "1"


def test_the_total_is_checked_against_what_was_read(api: FakeCatalogApi) -> None:
    source = http_source(api.url, pagination=PaginationConfig(style="page", total_path="total"))

    assert len(list(source.read())) == 250


def test_a_total_that_disagrees_with_the_records_read_fails_the_read() -> None:
    def lying(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"products": catalog(3), "meta": {"count": 10}})

    source = http_source(
        "https://shop.test/products",
        transport=httpx.MockTransport(lying),
        pagination=PaginationConfig(style="none", total_path="meta.count"),
    )

    items, error = read_until_failure(source)

    assert len(items) == 3
    assert "announced 10 records (meta.count) but 3 were read" in str(error)


# --- Auth ------------------------------------------------------------------------------


def test_a_bearer_token_from_the_environment_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOG_TOKEN", TOKEN)
    auth = HttpAuthConfig(kind="bearer", token_env="CATALOG_TOKEN")

    with FakeCatalogApi(catalog(5), auth=("Authorization", f"Bearer {TOKEN}")) as fake:
        items = list(http_source(fake.url, auth=auth).read())

    assert len(items) == 5
    assert fake.headers[0]["authorization"] == f"Bearer {TOKEN}"
    assert fake.headers[0]["user-agent"].startswith("syncd/")


def test_a_named_header_carries_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOG_TOKEN", TOKEN)
    auth = HttpAuthConfig(kind="header", header="X-Api-Key", token_env="CATALOG_TOKEN")

    with FakeCatalogApi(catalog(5), auth=("X-Api-Key", TOKEN)) as fake:
        assert len(list(http_source(fake.url, auth=auth).read())) == 5


def test_basic_auth_sends_the_user_and_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOG_PASSWORD", TOKEN)
    auth = HttpAuthConfig(kind="basic", username="shop", password_env="CATALOG_PASSWORD")
    expected = httpx.BasicAuth("shop", TOKEN)._auth_header

    with FakeCatalogApi(catalog(5), auth=("Authorization", expected)) as fake:
        assert len(list(http_source(fake.url, auth=auth).read())) == 5


def test_a_refused_token_fails_at_once_naming_its_variable_not_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CATALOG_TOKEN", TOKEN)
    auth = HttpAuthConfig(kind="bearer", token_env="CATALOG_TOKEN")

    with FakeCatalogApi(catalog(5), auth=("Authorization", "Bearer other")) as fake:
        items, error = read_until_failure(http_source(fake.url, auth=auth))

    assert items == []
    assert fake.requests == 1, "401 is not retried"
    assert "HTTP 401" in str(error)
    assert "$CATALOG_TOKEN" in str(error)
    assert TOKEN not in str(error)


def test_an_unset_token_variable_fails_the_read_before_any_request(
    monkeypatch: pytest.MonkeyPatch, api: FakeCatalogApi
) -> None:
    monkeypatch.delenv("CATALOG_TOKEN", raising=False)
    auth = HttpAuthConfig(kind="bearer", token_env="CATALOG_TOKEN")

    with pytest.raises(SourceError, match="CATALOG_TOKEN is not set"):
        list(http_source(api.url, auth=auth).read())

    assert api.requests == 0


# --- Retries and failures --------------------------------------------------------------


def test_a_page_failing_twice_is_retried_then_read(api: FakeCatalogApi) -> None:
    api.fail_on_page(2, status=503, times=2)
    sleeps: list[float] = []

    items = list(http_source(api.url, sleeps, pagination=PaginationConfig(style="page")).read())

    assert items == catalog(250)
    assert api.requests == 3 + 2
    assert len(sleeps) == 2
    assert sleeps[1] > sleeps[0] / 2, "the back-off grows"


def test_retry_after_is_honoured(api: FakeCatalogApi) -> None:
    api.fail_on_page(1, status=429, times=1, retry_after="7")
    sleeps: list[float] = []

    list(http_source(api.url, sleeps, pagination=PaginationConfig(style="page")).read())

    assert sleeps == [7.0]


def test_a_page_that_keeps_failing_fails_the_read_after_the_earlier_pages_were_yielded() -> None:
    sleeps: list[float] = []
    with FakeCatalogApi(catalog(500), style="page") as fake:
        fake.fail_on_page(3, status=500)
        source = http_source(
            fake.url, sleeps, max_attempts=3, pagination=PaginationConfig(style="page")
        )

        items, error = read_until_failure(source)

    assert items == catalog(200), "two pages came out; the exception says the read failed"
    assert fake.requests == 2 + 3
    assert len(sleeps) == 2
    message = str(error)
    assert "page 3" in message
    assert "page=3" in message
    assert "HTTP 500 Internal Server Error" in message
    assert "after 3 attempts" in message


def test_a_malformed_page_fails_the_read_naming_it(api: FakeCatalogApi) -> None:
    api.malformed_page(2)

    items, error = read_until_failure(
        http_source(api.url, pagination=PaginationConfig(style="page"))
    )

    assert len(items) == 100
    assert "page 2" in str(error)
    assert "not valid JSON" in str(error)


def test_a_page_that_vanishes_mid_read_fails_the_read(api: FakeCatalogApi) -> None:
    api.vanish_from_page(2)

    items, error = read_until_failure(
        http_source(api.url, pagination=PaginationConfig(style="page"))
    )

    assert len(items) == 100
    assert "page 2" in str(error)
    assert "HTTP 404 Not Found" in str(error)
    assert api.requests == 2, "404 is not retried"


def test_records_path_that_is_not_a_list_fails_the_read(api: FakeCatalogApi) -> None:
    with pytest.raises(SourceError, match=r"page 1 .*: total is a JSON int, not an array"):
        list(http_source(api.url, records_path="total").read())


def test_a_missing_records_path_fails_the_read(api: FakeCatalogApi) -> None:
    with pytest.raises(SourceError, match=r"page 1 .*no 'items' in the body"):
        list(http_source(api.url, records_path="items").read())


def test_an_item_that_is_not_an_object_is_an_unreadable_row() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"products": [{"id": "1"}, "oops"]})

    source = http_source("https://shop.test/p", transport=httpx.MockTransport(answer))

    assert list(source.read()) == [
        {"id": "1"},
        UnreadableRow("page 1 item 1", "a JSON str, not an object"),
    ]


def test_dropped_connections_and_timeouts_are_retried() -> None:
    failures: list[Exception] = [
        httpx.ConnectError("connection reset"),
        httpx.ReadTimeout("too slow"),
    ]

    def flaky(request: httpx.Request) -> httpx.Response:
        if failures:
            raise failures.pop(0)
        return httpx.Response(200, json={"products": [{"id": "1"}]})

    sleeps: list[float] = []
    source = http_source("https://shop.test/p", sleeps, transport=httpx.MockTransport(flaky))

    assert list(source.read()) == [{"id": "1"}]
    assert len(sleeps) == 2


def test_an_unreachable_server_fails_the_read_after_its_attempts() -> None:
    sleeps: list[float] = []
    source = http_source("http://127.0.0.1:1/products", sleeps, max_attempts=2)

    items, error = read_until_failure(source)

    assert items == []
    assert "ConnectError after 2 attempts" in str(error)
    assert isinstance(error.__cause__, httpx.ConnectError)
    assert len(sleeps) == 1


def test_a_redirect_is_not_followed(api: FakeCatalogApi) -> None:
    def moved(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"Location": "https://elsewhere.test/products"})

    source = http_source("https://shop.test/p", transport=httpx.MockTransport(moved))

    with pytest.raises(SourceError, match=r"HTTP 301.*elsewhere\.test"):
        list(source.read())


# --- Loop guards -----------------------------------------------------------------------


def answering(body: Callable[[httpx.Request], Any]) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(200, json=body(request)))


def test_a_cursor_that_repeats_fails_the_read_as_a_loop() -> None:
    cursors = iter(["a", "b", "a"])
    transport = answering(lambda request: {"products": [{"id": "x"}], "next": next(cursors)})
    source = http_source(
        "https://shop.test/p", transport=transport, pagination=PaginationConfig(style="cursor")
    )

    items, error = read_until_failure(source)

    assert len(items) == 3
    assert "'a' was already read: a pagination loop" in str(error)


def test_a_next_url_pointing_back_to_itself_fails_the_read_as_a_loop() -> None:
    served = iter(range(100))
    transport = answering(lambda request: {"products": [{"id": next(served)}], "next": "/p?page=2"})
    source = http_source(
        "https://shop.test/p", transport=transport, pagination=PaginationConfig(style="next_url")
    )

    items, error = read_until_failure(source)

    assert len(items) == 2
    assert "pagination loop" in str(error)


def test_an_api_ignoring_the_page_parameter_fails_the_read() -> None:
    transport = answering(lambda request: {"products": catalog(100)})
    source = http_source(
        "https://shop.test/p", transport=transport, pagination=PaginationConfig(style="page")
    )

    items, error = read_until_failure(source)

    assert len(items) == 100
    assert "the same page again" in str(error)


def test_max_pages_stops_an_endless_read(api: FakeCatalogApi) -> None:
    source = http_source(api.url, pagination=PaginationConfig(style="page", max_pages=2))

    items, error = read_until_failure(source)

    assert len(items) == 200
    assert "more than 2 pages" in str(error)
    assert api.requests == 2


# --- The rest --------------------------------------------------------------------------


def test_describe_leaves_credentials_out_of_the_url() -> None:
    source = http_source("https://user:pw@shop.test/products")

    assert source.describe() == "http https://shop.test/products (none pagination)"


def test_open_source_builds_an_http_source() -> None:
    config = HttpSourceConfig(kind="http", url="https://shop.test/products")

    assert isinstance(open_source(config), HttpSource)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=lambda: 1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_the_fake_serves_bare_lists_and_nested_records_paths() -> None:
    with FakeCatalogApi(catalog(3), style="none", records_path="data.items") as fake:
        body = json.loads(httpx.get(fake.url).content)

    assert body["data"]["items"] == catalog(3)
    assert body["total"] == 3


# --- Trust at the edges ----------------------------------------------------------------

AUTHS = {
    "bearer": HttpAuthConfig(kind="bearer", token_env="CATALOG_TOKEN"),
    "header": HttpAuthConfig(kind="header", header="X-Api-Key", token_env="CATALOG_TOKEN"),
    "basic": HttpAuthConfig(kind="basic", username="shop", password_env="CATALOG_TOKEN"),
}


def two_origins(style: str, other: str) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """Page 1 on shop.test points its next page at ``other``; every request is kept."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host != "shop.test" or request.url.params.get("page") == "2":
            return httpx.Response(200, json={"products": [{"id": "p2"}]})
        next_page = f"{other}/p?page=2"
        if style == "link":
            return httpx.Response(
                200,
                json={"products": [{"id": "p1"}]},
                headers={"Link": f'<{next_page}>; rel="next"'},
            )
        return httpx.Response(200, json={"products": [{"id": "p1"}], "next": next_page})

    return httpx.MockTransport(answer), seen


@pytest.mark.parametrize("auth", list(AUTHS))
@pytest.mark.parametrize("style", ["next_url", "link"])
@pytest.mark.parametrize(
    "other",
    ["https://evil.test", "http://shop.test", "https://shop.test:8443"],
    ids=["host", "scheme", "port"],
)
def test_a_next_page_on_another_origin_is_refused_and_never_sees_the_credentials(
    monkeypatch: pytest.MonkeyPatch, auth: str, style: str, other: str
) -> None:
    monkeypatch.setenv("CATALOG_TOKEN", TOKEN)
    transport, seen = two_origins(style, other)
    source = http_source(
        "https://shop.test/p",
        transport=transport,
        auth=AUTHS[auth],
        pagination=PaginationConfig(style=style),
    )

    items, error = read_until_failure(source)

    assert items == [{"id": "p1"}]
    assert "another origin" in str(error) and other.split("://")[0] in str(error)
    assert TOKEN not in str(error)
    assert [r.url.host for r in seen] == ["shop.test"]
    assert all(r.url.scheme == "https" and r.url.port in (None, 443) for r in seen)


def test_a_next_page_on_the_same_origin_with_its_default_port_spelt_out_is_followed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CATALOG_TOKEN", TOKEN)
    transport, seen = two_origins("next_url", "https://SHOP.test:443")
    source = http_source(
        "https://shop.test/p",
        transport=transport,
        auth=AUTHS["bearer"],
        pagination=PaginationConfig(style="next_url"),
    )

    assert list(source.read()) == [{"id": "p1"}, {"id": "p2"}]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in seen)


@pytest.mark.parametrize(
    "body",
    [
        '{"products": [{"id": "p1", "id": "p2"}]}',
        '{"products": [{"id": "p1", "meta": {"a": 1, "a": 2}}]}',
        '{"products": [], "products": [{"id": "p1"}]}',
    ],
    ids=["record", "nested", "envelope"],
)
def test_a_page_with_an_object_repeating_a_key_fails_the_read(body: str) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body.encode()))
    source = http_source("https://shop.test/p", transport=transport)

    _, error = read_until_failure(source)

    assert "page 1" in str(error) and "duplicate key" in str(error)


def test_a_page_body_over_max_page_bytes_is_refused_while_it_streams() -> None:
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        yield b'{"products": ['
        for i in range(1000):
            sent.append(i)
            yield b'{"id": "p%d", "pad": "%s"},' % (i, b"x" * 100)
        yield b'{"id": "last"}]}'

    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=chunks()))
    source = http_source("https://shop.test/p", transport=transport, max_page_bytes=5000)

    _, error = read_until_failure(source)

    assert "page 1" in str(error) and "over source.max_page_bytes=5000" in str(error)
    assert len(sent) < 100


def test_a_page_declaring_a_length_over_max_page_bytes_is_not_downloaded() -> None:
    body = json.dumps({"products": catalog(200)}).encode()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    source = http_source("https://shop.test/p", transport=transport, max_page_bytes=1000)

    _, error = read_until_failure(source)

    assert f"{len(body)} bytes (Content-Length)" in str(error)


@pytest.mark.parametrize(
    ("pagination", "provable"),
    [
        (PaginationConfig(style="none"), True),
        (PaginationConfig(style="page"), False),
        (PaginationConfig(style="offset"), False),
        (PaginationConfig(style="page", total_path="total"), True),
        (PaginationConfig(style="offset", total_path="total"), True),
        (PaginationConfig(style="cursor"), True),
        (PaginationConfig(style="next_url"), True),
        (PaginationConfig(style="link"), True),
    ],
)
def test_only_pagination_that_announces_its_end_can_prove_a_read_complete(
    pagination: PaginationConfig, provable: bool
) -> None:
    assert http_source("https://shop.test/p", pagination=pagination).can_prove_complete is provable


def item_api(
    answers: dict[str, int | dict[str, Any]],
) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        key = request.url.raw_path.decode().rsplit("/", 1)[1]
        found = answers.get(key, 404)
        if isinstance(found, dict):
            return httpx.Response(200, json=found)
        return httpx.Response(found, text="no such product")

    return httpx.MockTransport(answer), seen


def test_the_second_look_confirms_gone_only_the_keys_answered_404_or_410(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CATALOG_TOKEN", TOKEN)
    transport, seen = item_api(
        {"p1": 404, "p2": 410, "p3": {"id": "p3"}, "p4": 500, "p5": 403, "a%2Fb%20c": 404}
        | {"p0": {"id": "p0"}}
    )
    source = http_source(
        "https://shop.test/p",
        transport=transport,
        auth=AUTHS["bearer"],
        max_attempts=1,
        item_url="https://shop.test/items/{key}",
    )
    source._present_key = "p0"  # as a read leaves it: a key it returned

    gone = source.confirm_absent(["p1", "p2", "p3", "p4", "p5", "a/b c"])

    assert gone == {"p1", "p2", "a/b c"}
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in seen)


def test_the_second_look_retries_like_the_read() -> None:
    answers = iter([200, 503, 404])  # the check of a present key, then p1

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers))

    sleeps: list[float] = []
    source = http_source(
        "https://shop.test/p",
        sleeps,
        transport=httpx.MockTransport(answer),
        item_url="https://shop.test/items/{key}",
    )
    source._present_key = "p0"

    assert source.confirm_absent(["p1"]) == {"p1"}
    assert len(sleeps) == 1


@pytest.mark.parametrize("present", [None, "p0"], ids=["no-read-yet", "template-answers-404"])
def test_an_item_url_that_misses_a_key_the_read_returned_confirms_nothing(present) -> None:
    transport, seen = item_api({"p1": 404, "p2": 404})  # p0 too: a wrong template
    source = http_source(
        "https://shop.test/p", transport=transport, item_url="https://shop.test/itms/{key}"
    )
    source._present_key = present

    with pytest.raises(SourceError, match="item_url"):
        source.confirm_absent(["p1", "p2"])
    assert len(seen) == (0 if present is None else 1)  # never asked about p1 or p2


def test_the_second_look_counts_an_item_left_out_by_where_as_gone() -> None:
    transport, _ = item_api(
        {"p1": {"id": "p1", "status": "draft"}, "p2": {"id": "p2", "status": "publish"}}
    )
    source = http_source(
        "https://shop.test/p",
        transport=transport,
        where={"status": "publish"},
        item_url="https://shop.test/items/{key}",
    )
    source._present_key = "p2"

    assert source.confirm_absent(["p1", "p2"]) == {"p1"}


def test_without_item_url_there_is_no_second_look() -> None:
    assert http_source("https://shop.test/p").confirm_absent(["p1"]) is None


@pytest.mark.parametrize(
    ("item_url", "problem"),
    [
        ("https://evil.test/items/{key}", "same origin"),
        ("http://shop.test/items/{key}", "same origin"),
        ("https://shop.test/items/", "must contain {key}"),
    ],
)
def test_an_item_url_off_the_source_origin_or_without_key_is_a_config_error(
    item_url: str, problem: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(problem)):
        HttpSourceConfig(kind="http", url="https://shop.test/p", item_url=item_url)
    same = "https://SHOP.test:443/items/{key}"
    assert HttpSourceConfig(kind="http", url="https://shop.test/p", item_url=same).item_url == same
