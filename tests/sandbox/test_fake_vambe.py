"""The fake Vambe server: product blocks, create/upsert/delete semantics, strict
batch validation (rejected whole, offending index named), 404 and 401."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from syncd.sandbox import FakeServer, FakeVambe, Fault, serve

KEY = "vambe-key"
API = "/api/public/product"


def connect(url: str, headers: dict[str, str] | None = None) -> httpx.Client:
    """A client for a fake; plain HTTP on loopback, so no CA bundle is loaded."""
    headers = {"x-api-key": KEY} if headers is None else headers
    return httpx.Client(base_url=url, headers=headers, timeout=5, verify=False)


@pytest.fixture
def fake() -> Iterator[FakeVambe]:
    with FakeVambe(api_key=KEY) as server:
        yield server


@pytest.fixture
def block(fake: FakeVambe) -> str:
    return fake.add_block(name="catalog")


@pytest.fixture
def client(fake: FakeVambe) -> Iterator[httpx.Client]:
    with connect(fake.url) as http:
        yield http


def item(external_id: str = "e1", **changes: object) -> dict[str, object]:
    product: dict[str, object] = {
        "name": "Trail shoe",
        "description": "A light shoe for running on mountain trails.",
        "price": 49.9,
        "currency": "USD",
        "type": "vambe",
        "external_id": external_id,
        "metadata": [{"key": "color", "value": "red"}],
    }
    product.update(changes)
    return product


def without(field: str) -> dict[str, object]:
    product = item()
    del product[field]
    return product


def error_of(response: httpx.Response) -> str:
    return str(response.json()["error"])


# -- blocks ---------------------------------------------------------------------------


def test_product_blocks_lists_every_block_with_its_count(fake, client):
    first = fake.add_block("11111111-1111-4111-8111-111111111111", name="shoes")
    second = fake.add_block(name="hats")
    client.post(f"{API}/create/{first}", json=[item("a"), item("b")])

    response = client.get(f"{API}/product-blocks")

    assert response.status_code == 200
    assert response.json() == [
        {"id": first, "name": "shoes", "count": 2},
        {"id": second, "name": "hats", "count": 0},
    ]


def test_add_block_makes_a_uuid_and_refuses_a_duplicate(fake):
    block_id = fake.add_block()

    assert len(block_id) == 36
    assert fake.blocks == {block_id: {}}
    with pytest.raises(ValueError, match="already exists"):
        fake.add_block(block_id)


@pytest.mark.parametrize("action", ["create", "upsert", "delete"])
def test_an_unknown_block_is_404_on_every_endpoint(fake, client, block, action):
    body = [{"external_id": "e1"}] if action == "delete" else [item()]

    response = client.post(f"{API}/{action}/no-such-block", json=body)

    assert response.status_code == 404
    assert response.json() == {"error": "product block not found"}


# -- create ---------------------------------------------------------------------------


def test_create_adds_new_products_and_updates_existing_ones_by_external_id(fake, client, block):
    client.post(f"{API}/create/{block}", json=[item("a"), item("b")])

    response = client.post(f"{API}/create/{block}", json=[item("b", name="New B"), item("c")])

    assert response.status_code == 201
    assert response.json() == {"created": 1, "updated": 1}
    products = fake.block_products(block)
    assert sorted(products) == ["a", "b", "c"]
    assert products["a"] == item("a")
    assert products["b"]["name"] == "New B"


def test_create_replaces_the_whole_stored_product(fake, client, block):
    client.post(f"{API}/create/{block}", json=[item("a", sku="S-1", file_url="https://x/a.png")])

    client.post(f"{API}/create/{block}", json=[item("a")])

    assert fake.blocks[block]["a"] == item("a")


def test_create_never_touches_other_blocks(fake, client, block):
    other = fake.add_block(name="other")
    client.post(f"{API}/create/{other}", json=[item("a")])

    client.post(f"{API}/create/{block}", json=[item("a", name="Mine")])

    assert fake.block_products(other)["a"]["name"] == "Trail shoe"
    assert fake.upsert_calls == {block: 0, other: 0}


def test_create_accepts_exactly_the_maximum_batch_and_rejects_one_more(fake, client, block):
    full = [item(str(i)) for i in range(2000)]

    ok = client.post(f"{API}/create/{block}", json=full)
    over = client.post(f"{API}/create/{block}", json=[*full, item("2000")])

    assert ok.status_code == 201
    assert over.status_code == 400
    assert "2001 products exceeds the maximum of 2000" in error_of(over)
    assert len(fake.block_products(block)) == 2000


def test_the_maximum_batch_is_configurable():
    with FakeVambe(api_key=KEY, max_batch=2) as fake, connect(fake.url) as client:
        block = fake.add_block()
        response = client.post(f"{API}/create/{block}", json=[item("a"), item("b"), item("c")])

    assert response.status_code == 400
    assert "maximum of 2" in error_of(response)
    assert fake.block_products(block) == {}


# -- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("product", "reason"),
    [
        ("not an object", "product must be a JSON object"),
        (without("name"), "name is required"),
        (item(name=""), "name must be a string of at least 1 character"),
        (item(name=5), "name must be a string"),
        (without("description"), "description is required"),
        (item(description=""), "description must be a string of 1 to 8192 characters"),
        (item(description="x" * 8193), "description must be a string of 1 to 8192"),
        (item(description=["words"]), "description must be a string"),
        (without("price"), "price is required"),
        (item(price=0), "price must be greater than 0"),
        (item(price=-1.5), "price must be greater than 0"),
        (item(price="10"), "price must be a number"),
        (item(price=True), "price must be a number"),
        (item(price=None), "price must be a number"),
        (without("currency"), "currency is required"),
        (item(currency="GBP"), "currency must be one of"),
        (item(currency="usd"), "currency must be one of"),
        (without("type"), "type is required"),
        (item(type="PRODUCT"), "type must be one of"),
        (without("external_id"), "external_id is required"),
        (item(external_id=""), "external_id must be a non-empty string"),
        (item(external_id=12), "external_id must be a non-empty string"),
        (without("metadata"), "metadata is required"),
        (item(metadata={"color": "red"}), "metadata must be an array"),
        (item(metadata=[{"key": "color"}]), "metadata[0] must be exactly"),
        (item(metadata=[{"key": "a", "value": "b", "x": "y"}]), "metadata[0] must be exactly"),
        (item(metadata=[{"key": "size", "value": 42}]), "metadata[0] key and value must"),
        (item(metadata=["color=red"]), "metadata[0] must be exactly"),
        (item(file_url=None), "file_url must be a string"),
        (item(file_url=3), "file_url must be a string"),
        (item(sku=123), "sku must be a string"),
        (item(stock=4), "unknown field(s) stock"),
    ],
)
def test_every_product_rule_is_rejected_with_400_and_a_reason(fake, client, block, product, reason):
    for action in ("create", "upsert"):
        response = client.post(f"{API}/{action}/{block}", json=[product])

        assert response.status_code == 400
        assert reason in error_of(response)
        assert "product 0" in error_of(response)
    assert fake.block_products(block) == {}


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_a_price_that_is_not_finite_is_rejected(fake, client, block, number):
    body = json.dumps([item()]).replace("49.9", number)

    response = client.post(
        f"{API}/create/{block}", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert "price must be" in error_of(response)


def test_a_product_at_the_limits_is_accepted(fake, client, block):
    edge = item("x", name="A", description="d" * 8192, price=0.01, currency="UF", sku="S")
    edge["file_url"] = "https://cdn.example/x.png"
    edge["metadata"] = []

    response = client.post(f"{API}/create/{block}", json=[edge, item("y", price=10**30)])

    assert response.status_code == 201
    assert fake.block_products(block)["x"] == edge


@pytest.mark.parametrize(
    "currency", ["CLP", "ARS", "COP", "MXN", "EUR", "USD", "UF", "PEN", "BRL", "HNL"]
)
def test_every_documented_currency_is_accepted(client, block, currency):
    response = client.post(f"{API}/create/{block}", json=[item(currency=currency)])

    assert response.status_code == 201


@pytest.mark.parametrize("kind", ["shopify", "vambe", "woocommerce", "axis", "vtex"])
def test_every_published_type_is_accepted_by_default(client, block, kind):
    assert client.post(f"{API}/create/{block}", json=[item(type=kind)]).status_code == 201


def test_the_allowed_types_are_configurable():
    with FakeVambe(api_key=KEY, allowed_types=("PRODUCT", "SERVICE")) as fake:
        block = fake.add_block()
        with connect(fake.url) as client:
            ok = client.post(f"{API}/create/{block}", json=[item(type="SERVICE")])
            bad = client.post(f"{API}/create/{block}", json=[item("e2", type="vambe")])

    assert ok.status_code == 201
    assert bad.status_code == 400
    assert "type must be one of PRODUCT, SERVICE" in error_of(bad)


def test_one_invalid_product_rejects_the_whole_batch_naming_its_index(fake, client, block):
    batch = [item("good-1"), item("bad-one", price=0), item("good-2")]

    response = client.post(f"{API}/create/{block}", json=batch)

    assert response.status_code == 400
    reason = error_of(response)
    assert "product 1" in reason
    assert "'bad-one'" in reason
    assert "price must be greater than 0" in reason
    assert fake.block_products(block) == {}


def test_a_rejected_batch_says_how_many_more_products_are_invalid(client, block):
    batch = [item("a", currency="GBP"), item("b"), item("c", name=""), item("d", price=-1)]

    reason = error_of(client.post(f"{API}/create/{block}", json=batch))

    assert reason.startswith("invalid product data: product 0 (external_id 'a')")
    assert "and 2 more invalid products" in reason


def test_a_duplicate_external_id_in_one_batch_is_rejected(fake, client, block):
    response = client.post(f"{API}/create/{block}", json=[item("a"), item("b"), item("a")])

    assert response.status_code == 400
    assert "product 2 (external_id 'a')" in error_of(response)
    assert "duplicate external_id" in error_of(response)
    assert fake.block_products(block) == {}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "at least 1 product"),
        (item(), "JSON array"),
        (None, "JSON array"),
    ],
)
def test_a_batch_that_is_not_a_non_empty_array_is_rejected(client, block, body, reason):
    for action in ("create", "upsert"):
        response = client.post(f"{API}/{action}/{block}", json=body)

        assert response.status_code == 400
        assert reason in error_of(response)


def test_a_body_that_is_not_json_is_rejected(client, block):
    response = client.post(
        f"{API}/create/{block}", content=b"[{", headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert "not valid JSON" in error_of(response)


# -- upsert ---------------------------------------------------------------------------


def test_upsert_leaves_the_block_holding_exactly_the_products_sent(fake, client, block):
    client.post(f"{API}/create/{block}", json=[item("a"), item("b"), item("c")])

    response = client.post(f"{API}/upsert/{block}", json=[item("b", name="B"), item("d")])

    assert response.status_code == 201
    assert response.json() == {"count": 2}
    products = fake.block_products(block)
    assert sorted(products) == ["b", "d"]
    assert products["b"]["name"] == "B"
    assert fake.upsert_calls == {block: 1}


def test_upsert_has_no_batch_cap():
    with FakeVambe(api_key=KEY, max_batch=2) as fake, connect(fake.url) as client:
        block = fake.add_block()
        response = client.post(f"{API}/upsert/{block}", json=[item(str(i)) for i in range(5)])

    assert response.status_code == 201
    assert len(fake.block_products(block)) == 5


def test_a_rejected_upsert_deletes_nothing_and_is_not_counted(fake, client, block):
    client.post(f"{API}/create/{block}", json=[item("a")])

    response = client.post(f"{API}/upsert/{block}", json=[item("b", price=-1)])

    assert response.status_code == 400
    assert list(fake.block_products(block)) == ["a"]
    assert fake.upsert_calls == {block: 0}


# -- delete ---------------------------------------------------------------------------


def test_delete_removes_the_products_present_and_reports_only_those(fake, client, block):
    client.post(f"{API}/create/{block}", json=[item("a"), item("b"), item("c")])

    response = client.post(
        f"{API}/delete/{block}",
        json=[{"external_id": "a"}, {"external_id": "zzz"}, {"external_id": "c"}],
    )

    assert response.status_code == 200
    assert response.json() == {"deleted": 2, "external_ids": ["a", "c"]}
    assert list(fake.block_products(block)) == ["b"]


def test_deleting_the_same_id_twice_in_one_body_counts_it_once(client, block):
    client.post(f"{API}/create/{block}", json=[item("a")])

    response = client.post(
        f"{API}/delete/{block}", json=[{"external_id": "a"}, {"external_id": "a"}]
    )

    assert response.json() == {"deleted": 1, "external_ids": ["a"]}


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"external_id": "a"},
        ["a"],
        [{"external_id": ""}],
        [{"external_id": 1}],
        [{"external_id": "a", "name": "x"}],
        [{"id": "a"}],
    ],
)
def test_a_malformed_delete_body_is_rejected_and_deletes_nothing(fake, client, block, body):
    client.post(f"{API}/create/{block}", json=[item("a")])

    response = client.post(f"{API}/delete/{block}", json=body)

    assert response.status_code == 400
    assert "external_id" in error_of(response)
    assert list(fake.block_products(block)) == ["a"]


# -- auth, routing, faults, inspection -----------------------------------------------


@pytest.mark.parametrize(
    "headers", [{}, {"x-api-key": "wrong"}, {"Authorization": f"Bearer {KEY}"}]
)
def test_a_missing_or_wrong_key_is_answered_401_and_nothing_changes(fake, block, headers):
    with connect(fake.url, headers=headers) as client:
        listing = client.get(f"{API}/product-blocks")
        create = client.post(f"{API}/create/{block}", json=[item()])

    assert listing.status_code == 401
    assert create.status_code == 401
    assert fake.block_products(block) == {}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", f"{API}/product-blocks", 405),
        ("GET", f"{API}/create/BLOCK", 405),
        ("PUT", f"{API}/upsert/BLOCK", 405),
        ("POST", f"{API}/replace/BLOCK", 404),
        ("POST", f"{API}/create/", 404),
        ("POST", f"{API}/create/BLOCK/extra", 404),
        ("GET", "/api/public/other", 404),
    ],
)
def test_unknown_routes_and_methods_are_refused(client, block, method, path, status):
    response = client.request(method, path.replace("BLOCK", block), json=[item()])

    assert response.status_code == status


def test_apply_then_fail_writes_the_batch_but_answers_500(fake, client, block):
    fake.inject(Fault(500, apply_then_fail=True, match=lambda m, path, body: "/create/" in path))

    response = client.post(f"{API}/create/{block}", json=[item("a")])

    assert response.status_code == 500
    assert list(fake.block_products(block)) == ["a"]


def test_a_fault_is_recorded_on_the_vambe_fake_too(fake, client, block):
    fake.inject(Fault(429, retry_after="3"))

    response = client.post(f"{API}/create/{block}", json=[item("a")])

    assert response.headers["Retry-After"] == "3"
    assert fake.request_count("POST", f"{API}/create/") == 1
    assert fake.requests[0].status == 429
    assert fake.requests[0].json == [item("a")]
    assert fake.block_products(block) == {}


def test_the_inspected_blocks_are_copies(fake, client, block):
    client.post(f"{API}/create/{block}", json=[item("a")])

    fake.blocks[block]["a"]["name"] = "changed"
    fake.block_products(block)["a"]["name"] = "changed"

    assert fake.block_products(block)["a"]["name"] == "Trail shoe"


def test_block_products_of_an_unknown_block_is_a_key_error(fake):
    with pytest.raises(KeyError):
        fake.block_products("nope")


def test_binding_a_non_loopback_host_is_refused():
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        FakeVambe(api_key=KEY, host="0.0.0.0")


def test_serve_creates_the_requested_blocks():
    ready: list[FakeServer] = []
    stop = threading.Event()
    runner = threading.Thread(
        target=serve,
        args=("vambe", "localhost", 0, KEY, ["b-1", "b-2"]),
        kwargs={"on_ready": ready.append, "stop_event": stop},
    )
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while not ready and time.monotonic() < deadline:
            time.sleep(0.01)
        (fake,) = ready
        with connect(fake.url) as client:
            listing = client.get(f"{API}/product-blocks").json()
    finally:
        stop.set()
        runner.join(timeout=5)

    assert [entry["id"] for entry in listing] == ["b-1", "b-2"]
    assert fake.url.startswith("http://127.0.0.1:")
