"""The fake UserFlux server: validation, update semantics, auth, and the shared
server plumbing (recording, faults, latency, rate limit, lifecycle, serve)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from syncd.sandbox import FakeServer, FakeUserflux, Fault, serve

KEY = "secret"
AUTH = {"Authorization": f"Bearer {KEY}"}


def connect(url: str, headers: dict[str, str] | None = None, **kwargs: object) -> httpx.Client:
    """A client for a fake; plain HTTP on loopback, so no CA bundle is loaded."""
    options: dict = {"timeout": 5, **kwargs}
    return httpx.Client(
        base_url=url, headers=AUTH if headers is None else headers, verify=False, **options
    )


@pytest.fixture
def fake() -> Iterator[FakeUserflux]:
    with FakeUserflux(api_key=KEY) as server:
        yield server


@pytest.fixture
def client(fake: FakeUserflux) -> Iterator[httpx.Client]:
    with connect(fake.url) as http:
        yield http


def product(pid: str = "p1", type_id: str = "shoe", **extra: object) -> dict[str, object]:
    body: dict[str, object] = {"id": pid, "typeId": type_id, "properties": {}}
    body.update(extra)
    return body


def error_of(response: httpx.Response) -> str:
    return str(response.json()["error"])


# -- upsert and validation ------------------------------------------------------------


def test_upsert_answers_204_with_an_empty_body_and_stores_the_product(fake, client):
    response = client.post("/product", json=product(properties={"name": "Boot"}))

    assert response.status_code == 204
    assert response.content == b""
    assert fake.products == {
        ("shoe", "p1"): {"properties": {"name": "Boot"}, "aiPropertyOverrides": {}}
    }


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([product()], "JSON object"),
        ("just a string", "JSON object"),
        ({"typeId": "shoe", "properties": {}}, "id is required"),
        (product(pid=""), "id must be a non-empty string"),
        (product(pid=7), "id must be a non-empty string"),
        ({"id": "p1", "properties": {}}, "typeId is required"),
        (product(type_id=""), "typeId must be a non-empty string"),
        (product(type_id=None), "typeId must be a non-empty string"),
        ({"id": "p1", "typeId": "shoe"}, "properties is required"),
        (product(properties=[]), "properties must be a JSON object"),
        (product(properties=None), "properties must be a JSON object"),
        (product(propertiesUpdateType="FULL"), "propertiesUpdateType"),
        (product(propertiesUpdateType=None), "propertiesUpdateType"),
        (product(propertiesUpdateType="full_update"), "propertiesUpdateType"),
        (product(aiPropertyOverrides=[]), "aiPropertyOverrides must be a JSON object"),
        (product(name="Boot"), "unknown field(s) name"),
    ],
)
def test_every_upsert_rule_is_rejected_with_400_and_a_reason(fake, client, body, reason):
    response = client.post("/product", json=body)

    assert response.status_code == 400
    assert reason in error_of(response)
    assert fake.products == {}


def test_a_body_that_is_not_json_is_rejected(fake, client):
    response = client.post(
        "/product", content=b"{not json", headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert "not valid JSON" in error_of(response)


def test_a_body_without_json_content_type_is_rejected(fake, client):
    response = client.post(
        "/product",
        content=b'{"id":"p1","typeId":"shoe","properties":{}}',
        headers={"Content-Type": "text/plain"},
    )

    assert response.status_code == 400
    assert "Content-Type" in error_of(response)
    assert fake.products == {}


def test_all_problems_of_one_request_are_named_together(client):
    response = client.post("/product", json={"typeId": "", "extra": 1})

    reason = error_of(response)
    assert "id is required" in reason
    assert "typeId must be a non-empty string" in reason
    assert "properties is required" in reason
    assert "extra" in reason


def test_an_unknown_type_id_is_rejected_when_types_are_known():
    with FakeUserflux(api_key=KEY, known_type_ids={"shoe"}) as fake, connect(fake.url) as client:
        ok = client.post("/product", json=product())
        bad = client.post("/product", json=product(type_id="hat"))

    assert ok.status_code == 204
    assert bad.status_code == 400
    assert "typeId 'hat' is not a known product type" in error_of(bad)
    assert list(fake.products) == [("shoe", "p1")]


# -- update semantics -----------------------------------------------------------------


def test_full_update_removes_properties_not_sent(fake, client):
    client.post("/product", json=product(properties={"name": "Boot", "color": "red"}))
    client.post(
        "/product", json=product(properties={"name": "Boot 2"}, propertiesUpdateType="FULL_UPDATE")
    )

    assert fake.products[("shoe", "p1")]["properties"] == {"name": "Boot 2"}
    assert fake.last_update_type("shoe", "p1") == "FULL_UPDATE"


def test_incremental_update_merges_top_level_keys(fake, client):
    client.post("/product", json=product(properties={"name": "Boot", "color": "red"}))
    client.post(
        "/product",
        json=product(properties={"color": "blue"}, propertiesUpdateType="INCREMENTAL_UPDATE"),
    )

    assert fake.products[("shoe", "p1")]["properties"] == {"name": "Boot", "color": "blue"}
    assert fake.last_update_type("shoe", "p1") == "INCREMENTAL_UPDATE"


def test_a_missing_update_type_counts_as_incremental(fake, client):
    client.post("/product", json=product(properties={"name": "Boot"}))
    client.post("/product", json=product(properties={"color": "red"}))

    assert fake.products[("shoe", "p1")]["properties"] == {"name": "Boot", "color": "red"}
    assert fake.last_update_type("shoe", "p1") == "INCREMENTAL_UPDATE"


def test_shallow_incremental_update_replaces_a_nested_object_whole(fake, client):
    client.post("/product", json=product(properties={"description": {"full": "A", "short": "a"}}))
    client.post("/product", json=product(properties={"description": {"full": "B"}}))

    assert fake.products[("shoe", "p1")]["properties"] == {"description": {"full": "B"}}


def test_deep_incremental_update_merges_nested_objects():
    with FakeUserflux(api_key=KEY, merge="deep") as fake, connect(fake.url) as client:
        client.post(
            "/product",
            json=product(properties={"d": {"full": "A", "short": "a", "x": {"y": 1, "z": 2}}}),
        )
        client.post("/product", json=product(properties={"d": {"full": "B", "x": {"z": 3}}}))

    assert fake.products[("shoe", "p1")]["properties"] == {
        "d": {"full": "B", "short": "a", "x": {"y": 1, "z": 3}}
    }


def test_an_unknown_merge_mode_is_refused():
    with pytest.raises(ValueError, match="merge"):
        FakeUserflux(api_key=KEY, merge="sideways")


def test_full_update_sets_ai_overrides_to_exactly_those_sent(fake, client):
    client.post("/product", json=product(aiPropertyOverrides={"a": 1, "b": 2}))
    client.post("/product", json=product(propertiesUpdateType="FULL_UPDATE"))

    assert fake.products[("shoe", "p1")]["aiPropertyOverrides"] == {}

    client.post(
        "/product", json=product(propertiesUpdateType="FULL_UPDATE", aiPropertyOverrides={"c": 3})
    )
    assert fake.products[("shoe", "p1")]["aiPropertyOverrides"] == {"c": 3}


def test_incremental_update_merges_the_ai_overrides_sent(fake, client):
    client.post("/product", json=product(aiPropertyOverrides={"a": 1, "b": 2}))
    client.post("/product", json=product(aiPropertyOverrides={"b": 9}))
    client.post("/product", json=product())

    assert fake.products[("shoe", "p1")]["aiPropertyOverrides"] == {"a": 1, "b": 9}


def test_products_are_keyed_by_type_and_id(fake, client):
    client.post("/product", json=product(type_id="shoe", properties={"n": 1}))
    client.post("/product", json=product(type_id="hat", properties={"n": 2}))

    assert fake.products[("shoe", "p1")]["properties"] == {"n": 1}
    assert fake.products[("hat", "p1")]["properties"] == {"n": 2}


def test_the_inspected_catalog_is_a_copy(fake, client):
    client.post("/product", json=product(properties={"tags": ["a"]}))

    fake.products[("shoe", "p1")]["properties"]["tags"].append("b")

    assert fake.products[("shoe", "p1")]["properties"] == {"tags": ["a"]}


# -- delete and routing ---------------------------------------------------------------


def test_delete_answers_204_when_the_product_existed_and_404_when_not(fake, client):
    client.post("/product", json=product())

    first = client.delete("/product/shoe/p1")
    second = client.delete("/product/shoe/p1")

    assert first.status_code == 204
    assert first.content == b""
    assert second.status_code == 404
    assert fake.products == {}


def test_delete_url_decodes_its_path_segments(fake, client):
    client.post("/product", json=product(pid="a/b c", type_id="shoe type"))

    response = client.delete("/product/shoe%20type/a%2Fb%20c")

    assert response.status_code == 204
    assert fake.products == {}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/product", 405),
        ("PUT", "/product", 405),
        ("POST", "/product/shoe/p1", 405),
        ("GET", "/product/shoe/p1", 405),
        ("DELETE", "/product/shoe", 404),
        ("DELETE", "/product/shoe/p1/extra", 404),
        ("GET", "/products", 404),
        ("POST", "/", 404),
    ],
)
def test_unknown_routes_and_methods_are_refused(client, method, path, status):
    response = client.request(method, path, json={})

    assert response.status_code == status
    assert error_of(response)


# -- auth -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"x-api-key": KEY}],
)
def test_a_missing_or_wrong_key_is_answered_401_and_nothing_is_stored(fake, headers):
    with connect(fake.url, headers=headers) as client:
        response = client.post("/product", json=product())
        delete = client.delete("/product/shoe/p1")

    assert response.status_code == 401
    assert delete.status_code == 401
    assert "API key" in error_of(response)
    assert fake.products == {}


def test_a_wrong_key_family_can_be_simulated_with_a_403_fault(fake, client):
    fake.inject(Fault(403, body='{"error": "forbidden"}'))

    response = client.post("/product", json=product())

    assert response.status_code == 403
    assert error_of(response) == "forbidden"
    assert fake.products == {}


# -- recording ------------------------------------------------------------------------


def test_requests_are_recorded_with_lowercased_headers_body_json_and_status(fake, client):
    client.post("/product", json=product(), headers={"X-Trace": "t1"})
    client.delete("/product/shoe/missing")

    first, second = fake.requests
    assert first.method == "POST"
    assert first.path == "/product"
    assert first.headers["x-trace"] == "t1"
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.json == product()
    assert first.body == httpx.Request("POST", "/", json=product()).content
    assert first.status == 204
    assert (second.method, second.path, second.status, second.json) == (
        "DELETE",
        "/product/shoe/missing",
        404,
        None,
    )
    assert fake.bytes_received == len(first.body)


def test_request_count_filters_by_method_and_path_prefix_and_reset_clears(fake, client):
    client.post("/product", json=product())
    client.post("/product", json=product(pid="p2"))
    client.delete("/product/shoe/p1")

    assert fake.request_count() == 3
    assert fake.request_count("POST") == 2
    assert fake.request_count(method="delete") == 1
    assert fake.request_count(path_prefix="/product/shoe/") == 1

    fake.reset_requests()

    assert fake.request_count() == 0
    assert fake.bytes_received == 0
    assert fake.requests == []
    assert len(fake.products) == 1


# -- faults ---------------------------------------------------------------------------


def test_a_fault_answers_its_status_with_retry_after_and_applies_nothing(fake, client):
    fake.inject(Fault(503, retry_after="2"))

    response = client.post("/product", json=product())

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert "injected" in error_of(response)
    assert fake.products == {}
    assert fake.requests[0].status == 503


def test_retry_after_can_be_an_http_date(client, fake):
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    fake.inject(Fault(429, retry_after=date))

    response = client.post("/product", json=product())

    assert response.status_code == 429
    assert response.headers["Retry-After"] == date


def test_a_fault_without_retry_after_sends_no_such_header(fake, client):
    fake.inject(Fault(500))

    response = client.post("/product", json=product())

    assert response.status_code == 500
    assert "Retry-After" not in response.headers


def test_a_fault_applies_to_its_number_of_times_then_the_server_recovers(fake, client):
    fake.inject(Fault(500, times=2))

    statuses = [client.post("/product", json=product()).status_code for _ in range(3)]

    assert statuses == [500, 500, 204]
    assert fake.pending_faults == []


def test_a_fault_with_times_none_applies_until_cleared(fake, client):
    fake.inject(Fault(503, times=None))

    statuses = [client.post("/product", json=product()).status_code for _ in range(4)]
    fake.clear_faults()

    assert statuses == [503] * 4
    assert client.post("/product", json=product()).status_code == 204


def test_faults_are_consumed_in_order_of_injection(fake, client):
    fake.inject(Fault(429))
    fake.inject(Fault(500))
    fake.inject(Fault(503))

    statuses = [client.post("/product", json=product()).status_code for _ in range(4)]

    assert statuses == [429, 500, 503, 204]


def test_a_fault_only_hits_requests_it_matches(fake, client):
    fake.inject(Fault(500, match=lambda method, path, body: body == product(pid="bad")))

    good = client.post("/product", json=product(pid="good"))
    bad = client.post("/product", json=product(pid="bad"))
    again = client.post("/product", json=product(pid="bad"))

    assert (good.status_code, bad.status_code, again.status_code) == (204, 500, 204)


def test_a_fault_can_match_on_method_and_path(fake, client):
    client.post("/product", json=product())
    fake.inject(Fault(500, match=lambda method, path, body: method == "DELETE"))

    assert client.post("/product", json=product()).status_code == 204
    assert client.delete("/product/shoe/p1").status_code == 500
    assert client.delete("/product/shoe/p1").status_code == 204


def test_a_fault_body_is_sent_as_given(fake, client):
    fake.inject(Fault(400, body="plain words"))

    response = client.post("/product", json=product())

    assert response.text == "plain words"
    assert response.headers["Content-Type"].startswith("text/plain")


def test_apply_then_fail_stores_the_write_but_answers_the_fault(fake, client):
    fake.inject(Fault(500, apply_then_fail=True))

    response = client.post("/product", json=product(properties={"name": "Boot"}))

    assert response.status_code == 500
    assert fake.products[("shoe", "p1")]["properties"] == {"name": "Boot"}


def test_apply_then_fail_deletes_but_answers_the_fault(fake, client):
    client.post("/product", json=product())
    fake.inject(Fault(503, apply_then_fail=True))

    assert client.delete("/product/shoe/p1").status_code == 503
    assert fake.products == {}
    assert client.delete("/product/shoe/p1").status_code == 404


def test_a_dropped_connection_gets_no_answer_and_applies_nothing(fake, client):
    fake.inject(Fault(drop_connection=True))

    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/product", json=product())

    assert fake.products == {}
    assert fake.requests[0].status == 0
    assert client.post("/product", json=product()).status_code == 204


def test_apply_then_drop_stores_the_write_and_gives_no_answer(fake, client):
    fake.inject(Fault(drop_connection=True, apply_then_fail=True))

    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/product", json=product())

    assert ("shoe", "p1") in fake.products


def test_a_delayed_fault_answers_slowly(fake, client):
    fake.inject(Fault(503, delay=0.3))

    started = time.monotonic()
    response = client.post("/product", json=product())

    assert response.status_code == 503
    assert time.monotonic() - started >= 0.3


def test_a_delay_alone_answers_for_real_and_can_time_a_client_out(fake, client):
    fake.inject(Fault(delay=0.5))

    with pytest.raises(httpx.ReadTimeout):
        client.post("/product", json=product(), timeout=0.1)

    assert ("shoe", "p1") in fake.products


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"times": 0}, {"status": 500, "delay": -1}, {"apply_then_fail": True}],
)
def test_a_fault_that_cannot_mean_anything_is_refused(kwargs):
    with pytest.raises(ValueError):
        Fault(**kwargs)


def test_latency_is_added_to_every_answer(fake, client):
    fake.latency = 0.15

    started = time.monotonic()
    client.post("/product", json=product())
    client.delete("/product/shoe/p1")

    assert time.monotonic() - started >= 0.3


def test_the_rate_limit_answers_429_with_retry_after_one(fake, client):
    fake.rate_limit_per_second = 3

    responses = [client.post("/product", json=product(pid=str(i))) for i in range(5)]

    assert [r.status_code for r in responses] == [204, 204, 204, 429, 429]
    assert responses[3].headers["Retry-After"] == "1"
    assert len(fake.products) == 3


# -- lifecycle ------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com", ""])
def test_binding_a_non_loopback_host_is_refused(host):
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        FakeUserflux(api_key=KEY, host=host)


def test_explicit_start_and_stop_serve_on_an_ephemeral_loopback_port():
    fake = FakeUserflux(api_key=KEY)
    fake.start()
    try:
        assert fake.url == f"http://127.0.0.1:{fake.port}"
        assert fake.port > 0
        with connect(fake.url) as client:
            assert client.post("/product", json=product()).status_code == 204
    finally:
        fake.stop()

    assert not fake.running
    with pytest.raises(httpx.ConnectError), connect(fake.url) as client:
        client.post("/product", json=product())


def test_a_restarted_fake_keeps_its_port_and_catalog(fake, client):
    client.post("/product", json=product())
    url = fake.url

    fake.stop()
    fake.start()

    assert fake.url == url
    assert list(fake.products) == [("shoe", "p1")]
    with connect(url) as fresh:
        assert fresh.delete("/product/shoe/p1").status_code == 204


def test_stopping_closes_open_keep_alive_connections(fake, client):
    client.post("/product", json=product())

    fake.stop()

    with pytest.raises(httpx.TransportError):
        client.post("/product", json=product())


def test_the_url_of_a_fake_never_started_is_an_error():
    with pytest.raises(RuntimeError):
        _ = FakeUserflux(api_key=KEY).url


def test_many_concurrent_keep_alive_clients_are_all_answered(fake):
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    with connect(fake.url, limits=limits, timeout=10) as client:

        def push(i: int) -> int:
            return client.post("/product", json=product(pid=str(i))).status_code

        with ThreadPoolExecutor(100) as pool:
            statuses = list(pool.map(push, range(600)))

    assert set(statuses) == {204}
    assert len(fake.products) == 600
    assert fake.request_count("POST") == 600


# -- serve ----------------------------------------------------------------------------


def test_serve_runs_a_fake_in_the_foreground_until_stopped():
    ready: list[FakeServer] = []
    stop = threading.Event()
    runner = threading.Thread(
        target=serve,
        args=("userflux", "127.0.0.1", 0, KEY),
        kwargs={"on_ready": ready.append, "stop_event": stop},
    )
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while not ready and time.monotonic() < deadline:
            time.sleep(0.01)
        (fake,) = ready
        with connect(fake.url) as client:
            assert client.post("/product", json=product()).status_code == 204
    finally:
        stop.set()
        runner.join(timeout=5)

    assert not runner.is_alive()
    assert not fake.running


def test_serve_refuses_a_non_loopback_host_and_an_unknown_kind():
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        serve("userflux", "0.0.0.0", 0, KEY)
    with pytest.raises(ValueError, match="unknown sandbox kind"):
        serve("shopify", "127.0.0.1", 0, KEY)
