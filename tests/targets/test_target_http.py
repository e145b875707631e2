"""Target HTTP behaviour against the loopback fakes: how each answer becomes an ack or an error."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from syncd import httpclient
from syncd.config import HttpConfig, UserfluxTargetConfig, VambeTargetConfig
from syncd.diff import Change, ChangeKind, Operation
from syncd.errors import (
    RecordError,
    TargetError,
    TargetFatalError,
    TargetRejectedError,
    TargetRetriableError,
)
from syncd.httpclient import USER_AGENT
from syncd.model import Acked, Document
from syncd.sandbox import FakeServer, FakeUserflux, FakeVambe, Fault
from syncd.targets.base import TargetInfo
from syncd.targets.userflux import FULL, INCREMENTAL, UserfluxTarget, plan_delete, plan_update
from syncd.targets.vambe import VambeTarget, plan_vambe

KEY = "sk-live-7Hq2-SECRET-do-not-log"
UF_ENV = "USERFLUX_API_KEY"
VB_ENV = "VAMBE_API_KEY"
TYPE = "shoes"


# -- helpers ----------------------------------------------------------------------------


def uf_payload(key: str = "p1", type_id: str = TYPE, **properties: object) -> dict:
    return {"id": key, "typeId": type_id, "properties": dict(properties)}


def vb_product(key: str = "e1", **changes: object) -> dict:
    body: dict = {
        "name": "Trail shoe",
        "description": "A light shoe for running on mountain trails.",
        "price": 49.9,
        "currency": "USD",
        "type": "vambe",
        "external_id": key,
        "metadata": [{"key": "color", "value": "red"}],
    }
    body.update(changes)
    return body


def acked(body: dict, key: str | None = None) -> Acked:
    document = Document.of(key or body.get("id") or body["external_id"], body)
    return Acked(document.key, document.hash, document.canonical)


def new(key: str, body: dict) -> Change:
    return Change(ChangeKind.CREATE, key, Document.of(key, body))


def userflux_target(fake: FakeServer, api_key: str = KEY, **config: object) -> UserfluxTarget:
    values: dict = {
        "kind": "userflux",
        "name": "uf",
        "api_key_env": UF_ENV,
        "type_id": TYPE,
        "base_url": fake.url,
        "timeout_s": 5,
    }
    values.update(config)
    return UserfluxTarget(UserfluxTargetConfig(**values), HttpConfig(), api_key=api_key)


def vambe_target(
    fake: FakeServer, block_id: str, api_key: str = KEY, **config: object
) -> VambeTarget:
    values: dict = {
        "kind": "vambe",
        "name": "vb",
        "api_key_env": VB_ENV,
        "block_id": block_id,
        "base_url": fake.url,
        "timeout_s": 5,
    }
    values.update(config)
    return VambeTarget(
        VambeTargetConfig(**values), HttpConfig(), api_key=api_key, inspect_retry_delay_s=0
    )


def vambe_plan(changes, deletes=(), *, block_id: str, **options):
    values = {"batch_size": 2000, "full": False, "mirror_block": False, "deletes_allowed": True}
    values.update(options)
    return plan_vambe(list(changes), list(deletes), block_id=block_id, **values)


def messages(error: BaseException) -> str:
    """Every text an error carries, its causes included."""
    texts = []
    current: BaseException | None = error
    while current is not None:
        texts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


@pytest.fixture(scope="module", autouse=True)
def one_tls_context() -> Iterator[None]:
    """Build the (unused, loopback is plain HTTP) TLS context once: it costs ~50 ms a client."""
    context = httpclient._ssl_context(HttpConfig())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpclient, "_ssl_context", lambda http: context)
        yield


@pytest.fixture
def userflux() -> Iterator[FakeUserflux]:
    with FakeUserflux(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def vambe() -> Iterator[FakeVambe]:
    with FakeVambe(api_key=KEY) as fake:
        yield fake


@dataclass
class Rig:
    """One target wired to its fake, and a valid operation to send."""

    fake: FakeServer
    target: UserfluxTarget | VambeTarget
    operation: Operation
    env: str


@pytest.fixture(params=["userflux", "vambe"])
def rig(request, userflux, vambe) -> Iterator[Rig]:
    if request.param == "userflux":
        target = userflux_target(userflux)
        operation = plan_update(new("p1", uf_payload(title="Shoe")))
        built = Rig(userflux, target, operation, UF_ENV)
    else:
        block = vambe.add_block(name="catalog")
        target = vambe_target(vambe, block)
        (operation,) = vambe_plan([new("e1", vb_product("e1"))], block_id=block).operations
        built = Rig(vambe, target, operation, VB_ENV)
    yield built
    built.target.close()


# -- UserFlux: acknowledgements ---------------------------------------------------------


def test_userflux_upsert_answered_204_is_acknowledged_and_stored(userflux):
    target = userflux_target(userflux)
    body = uf_payload(title="Shoe", description={"full": "Long"})

    target.send(plan_update(new("p1", body)))

    assert userflux.products == {
        (TYPE, "p1"): {"properties": body["properties"], "aiPropertyOverrides": {}}
    }
    (request,) = userflux.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert request.json["propertiesUpdateType"] == FULL
    target.close()


def test_userflux_incremental_update_merges_only_the_changed_properties(userflux):
    target = userflux_target(userflux)
    before = uf_payload(title="Shoe", price=10)
    after = uf_payload(title="Shoe", price=12)
    target.send(plan_update(new("p1", before)))

    update = Change(ChangeKind.UPDATE, "p1", Document.of("p1", after), acked(before))
    target.send(plan_update(update))

    assert userflux.requests[-1].json == {
        "id": "p1",
        "typeId": TYPE,
        "properties": {"price": 12},
        "propertiesUpdateType": INCREMENTAL,
    }
    assert userflux.products[(TYPE, "p1")]["properties"] == {"title": "Shoe", "price": 12}
    target.close()


@pytest.mark.parametrize("exists", [True, False])
def test_userflux_delete_is_done_whether_the_product_existed_or_was_already_gone(userflux, exists):
    target = userflux_target(userflux)
    body = uf_payload("a b+ü", title="Shoe")
    if exists:
        target.send(plan_update(new("a b+ü", body)))

    target.send(plan_delete(Change(ChangeKind.DELETE, "a b+ü", None, acked(body))))

    assert userflux.products == {}
    assert userflux.requests[-1].method == "DELETE"
    assert userflux.requests[-1].path == f"/product/{TYPE}/a%20b%2B%C3%BC"
    assert userflux.requests[-1].status == (204 if exists else 404)
    target.close()


@pytest.mark.parametrize("key", ["..a", "a.", "a:b;c", "a+b=c", "ü€", "a b", "~x", "@x"])
def test_userflux_ids_with_unusual_but_safe_characters_are_deleted_at_their_own_path(userflux, key):
    target = userflux_target(userflux)
    body = uf_payload(key, title="Shoe")
    target.validate(key, body)
    target.send(plan_update(new(key, body)))
    target.send(plan_update(new("other", uf_payload("other"))))

    target.send(plan_delete(Change(ChangeKind.DELETE, key, None, acked(body))))

    assert userflux.requests[-1].status == 204
    assert set(userflux.products) == {(TYPE, "other")}
    target.close()


UNSAFE_SEGMENTS = [
    "",
    ".",
    "..",
    "a/b",
    "a\\b",
    "a?b",
    "a#b",
    "a%2Fb",
    "100%",
    "a\x00b",
    "a\nb",
    "\x7f",
    "a\x85b",
    " a",
    "a ",
    "\ta",
    "a\u3000",
]


@pytest.mark.parametrize("field", ["id", "typeId"])
@pytest.mark.parametrize("value", UNSAFE_SEGMENTS)
def test_userflux_refuses_an_id_or_type_id_that_is_not_a_safe_url_path_segment(
    userflux, field, value
):
    target = userflux_target(userflux)
    payload = uf_payload("p1", title="Shoe")
    payload[field] = value

    with pytest.raises(RecordError) as caught:
        target.validate("p1", payload)

    assert caught.value.key == "p1"
    assert caught.value.field == field
    assert field in str(caught.value)
    assert userflux.requests == []
    target.close()


@pytest.mark.parametrize("value", [".", "..", "a/b", "a%2Fb", "a?b"])
def test_userflux_never_sends_a_delete_for_a_stored_id_that_is_not_a_safe_segment(userflux, value):
    target = userflux_target(userflux)
    stored = uf_payload(value, title="Shoe")

    with pytest.raises(TargetRejectedError) as caught:
        target.send(plan_delete(Change(ChangeKind.DELETE, value, None, acked(stored, value))))

    assert userflux.requests == [], "no request reaches another resource"
    assert repr(value) in str(caught.value)
    assert "UI" in str(caught.value)
    target.close()


def test_userflux_dot_segments_would_be_resolved_by_the_http_client():
    """Why ``.``/``..`` are refused: quoting leaves them as they are and httpx resolves them."""
    client = httpx.Client(base_url="http://uf.test")

    dotdot = client.build_request("DELETE", plan_delete_path(TYPE, ".."))
    dot = client.build_request("DELETE", plan_delete_path(TYPE, "."))

    assert dotdot.url.raw_path == b"/product"
    assert dot.url.raw_path == f"/product/{TYPE}".encode()
    client.close()


def plan_delete_path(type_id: str, key: str) -> str:
    return plan_delete(Change(ChangeKind.DELETE, key, None, acked(uf_payload(key, type_id)))).path


@pytest.mark.parametrize("old_exists", [True, False])
def test_userflux_type_change_deletes_the_product_under_the_old_type(userflux, old_exists):
    target = userflux_target(userflux)
    before = uf_payload(type_id="boots", title="Shoe")
    after = uf_payload(type_id=TYPE, title="Shoe")
    if old_exists:
        target.send(plan_update(new("p1", before)))

    change = Change(ChangeKind.UPDATE, "p1", Document.of("p1", after), acked(before))
    target.send(plan_update(change))

    assert set(userflux.products) == {(TYPE, "p1")}
    assert [(r.method, r.path) for r in userflux.requests[-2:]] == [
        ("POST", "/product"),
        ("DELETE", "/product/boots/p1"),
    ]
    target.close()


def test_userflux_inspect_sends_nothing(userflux):
    target = userflux_target(userflux)

    assert target.inspect() == TargetInfo()
    assert userflux.requests == []
    target.close()


# -- UserFlux: errors -------------------------------------------------------------------


def test_userflux_400_is_a_rejection_carrying_the_servers_reason(userflux):
    target = userflux_target(userflux)
    bad = Operation("product.upsert", FULL, "r", (new("p1", {}),), {"id": "p1"}, "/product")

    with pytest.raises(TargetRejectedError) as caught:
        target.send(bad)

    assert caught.value.status == 400
    assert "typeId is required" in str(caught.value)
    assert "properties is required" in str(caught.value)
    target.close()


def test_userflux_401_is_fatal_naming_the_env_var(userflux):
    target = userflux_target(userflux, api_key="wrong-key")

    with pytest.raises(TargetFatalError) as caught:
        target.send(plan_update(new("p1", uf_payload())))

    assert caught.value.status == 401
    assert f"${UF_ENV}" in str(caught.value)
    assert "wrong-key" not in messages(caught.value)
    assert userflux.products == {}
    target.close()


def test_userflux_403_is_fatal_naming_the_key_family_and_the_ip_allow_list(userflux):
    target = userflux_target(userflux)
    userflux.inject(Fault(status=403))

    with pytest.raises(TargetFatalError) as caught:
        target.send(plan_update(new("p1", uf_payload())))

    message = str(caught.value)
    assert caught.value.status == 403
    assert UF_ENV in message
    assert "Product Read + Write" in message
    assert "Write Only" in message
    assert "IP allow-list" in message
    target.close()


ODD_ANSWERS = [301, 404, 405, 409, 410, 413, 414, 418, 422, 451]


@pytest.mark.parametrize("status", ODD_ANSWERS)
def test_userflux_an_odd_answer_to_an_upsert_rejects_that_product_only(userflux, status):
    target = userflux_target(userflux)
    userflux.inject(Fault(status=status, body=json.dumps({"error": "no such thing"})))

    with pytest.raises(TargetRejectedError) as caught:
        target.send(plan_update(new("p1", uf_payload())))
    target.send(plan_update(new("p2", uf_payload("p2"))))

    assert caught.value.status == status
    assert f"HTTP {status}" in str(caught.value)
    assert "no such thing" in str(caught.value)
    assert "'p1'" in str(caught.value)
    assert "base_url" in str(caught.value) or status in (413, 422)
    assert set(userflux.products) == {(TYPE, "p2")}, "the target goes on"
    target.close()


@pytest.mark.parametrize("status", [405, 409, 410, 422])
def test_userflux_an_odd_answer_to_a_delete_rejects_that_delete_only(userflux, status):
    target = userflux_target(userflux)
    userflux.inject(Fault(status=status))

    with pytest.raises(TargetRejectedError) as caught:
        target.send(plan_delete(Change(ChangeKind.DELETE, "p1", None, acked(uf_payload()))))

    assert caught.value.status == status
    assert f"DELETE /product/{TYPE}/p1" in str(caught.value)
    target.close()


@pytest.mark.parametrize("status", [401, 403, 500])
def test_userflux_delete_errors_other_than_404_are_not_treated_as_done(userflux, status):
    target = userflux_target(userflux)
    userflux.inject(Fault(status=status))
    body = uf_payload()

    with pytest.raises(TargetError):
        target.send(plan_delete(Change(ChangeKind.DELETE, "p1", None, acked(body))))
    target.close()


# -- Vambe: acknowledgements ------------------------------------------------------------


def test_vambe_create_and_delete_batches_are_acknowledged_and_applied(vambe):
    block = vambe.add_block(name="catalog")
    target = vambe_target(vambe, block)
    products = {key: vb_product(key) for key in ("a", "b", "c")}
    changes = [new(key, body) for key, body in products.items()]
    removals = [Change(ChangeKind.DELETE, "b", None, acked(products["b"], "b"))]

    for operation in vambe_plan(changes, block_id=block).operations:
        target.send(operation)
    for operation in vambe_plan([], removals, block_id=block).operations:
        target.send(operation)

    assert vambe.block_products(block) == {"a": products["a"], "c": products["c"]}
    assert vambe.requests[0].headers["x-api-key"] == KEY
    assert vambe.requests[0].headers["content-type"] == "application/json"
    target.close()


def test_vambe_upsert_leaves_the_block_holding_exactly_the_catalog(vambe):
    block = vambe.add_block(name="catalog")
    target = vambe_target(vambe, block, mirror_block=True)
    stale = vb_product("stale")
    for operation in vambe_plan([new("stale", stale)], block_id=block).operations:
        target.send(operation)
    removals = [Change(ChangeKind.DELETE, "stale", None, acked(stale, "stale"))]

    planned = target.plan([new("a", vb_product("a"))], removals, full=True, deletes_allowed=True)
    (operation,) = planned.operations
    target.send(operation)

    assert set(vambe.block_products(block)) == {"a"}
    assert vambe.upsert_calls[block] == 1
    target.close()


def test_vambe_inspect_returns_the_block_count(vambe):
    block = vambe.add_block(name="catalog")
    vambe.add_block(name="other")
    target = vambe_target(vambe, block)
    for operation in vambe_plan([new("a", vb_product("a"))], block_id=block).operations:
        target.send(operation)

    assert target.inspect() == TargetInfo(count=1)
    target.close()


def test_vambe_inspect_retries_a_transient_failure_before_giving_up(vambe):
    block = vambe.add_block(name="catalog")
    target = vambe_target(vambe, block)
    vambe.inject(Fault(status=503, times=2))

    assert target.inspect() == TargetInfo(count=0)
    assert vambe.request_count("GET") == 3
    target.close()


def test_vambe_inspect_gives_up_after_three_tries_as_fatal_without_writing(vambe):
    block = vambe.add_block(name="catalog")
    target = vambe_target(vambe, block)
    vambe.inject(Fault(status=503, times=None))

    with pytest.raises(TargetFatalError) as caught:
        target.inspect()

    assert "3 tries" in str(caught.value)
    assert vambe.request_count("GET") == 3
    assert vambe.request_count("POST") == 0
    target.close()


def test_vambe_inspect_on_a_missing_block_is_fatal_listing_the_blocks_the_key_sees(vambe):
    vambe.add_block("11111111-aaaa-4000-8000-000000000000", name="shoes")
    vambe.add_block("22222222-bbbb-4000-8000-000000000000", name="boots")
    target = vambe_target(vambe, "99999999-dead-4000-8000-000000000000")

    with pytest.raises(TargetFatalError) as caught:
        target.inspect()

    message = str(caught.value)
    assert "99999999-dead-4000-8000-000000000000" in message
    assert "'shoes' (11111111-aaaa-4000-8000-000000000000)" in message
    assert "'boots' (22222222-bbbb-4000-8000-000000000000)" in message
    assert "block_id" in message
    assert "'vb'" in message
    target.close()


def test_vambe_inspect_with_a_wrong_key_is_fatal_naming_the_env_var(vambe):
    block = vambe.add_block(name="catalog")
    target = vambe_target(vambe, block, api_key="wrong-key")

    with pytest.raises(TargetFatalError) as caught:
        target.inspect()

    assert f"${VB_ENV}" in str(caught.value)
    assert vambe.request_count("GET") == 1, "a 401 is not retried"
    target.close()


# -- Vambe: errors ----------------------------------------------------------------------


def test_vambe_404_is_fatal_naming_the_block(vambe):
    vambe.add_block(name="catalog")
    missing = "99999999-dead-4000-8000-000000000000"
    target = vambe_target(vambe, missing)
    (operation,) = vambe_plan([new("a", vb_product("a"))], block_id=missing).operations

    with pytest.raises(TargetFatalError) as caught:
        target.send(operation)

    assert caught.value.status == 404
    assert missing in str(caught.value)
    assert "block_id" in str(caught.value)
    target.close()


def test_vambe_400_is_a_rejection_carrying_the_servers_reason(vambe):
    block = vambe.add_block(name="catalog")
    target = vambe_target(vambe, block)
    bad = vb_product("bad", type="PRODUCT")  # valid locally, refused by this fake's type list
    (operation,) = vambe_plan(
        [new("ok", vb_product("ok")), new("bad", bad)], block_id=block
    ).operations

    with pytest.raises(TargetRejectedError) as caught:
        target.send(operation)

    assert caught.value.status == 400
    assert "type must be one of" in str(caught.value)
    assert "'bad'" in str(caught.value)
    assert vambe.block_products(block) == {}
    target.close()


@pytest.mark.parametrize("status", [*(s for s in ODD_ANSWERS if s != 404), 400])
def test_vambe_an_odd_answer_to_a_batch_rejects_that_batch_not_the_target(vambe, status):
    block = vambe.add_block(name="catalog")
    target = vambe_target(vambe, block)
    (operation,) = vambe_plan(
        [new("a", vb_product("a")), new("b", vb_product("b"))], block_id=block
    ).operations
    vambe.inject(Fault(status=status))

    with pytest.raises(TargetRejectedError) as caught:
        target.send(operation)

    assert caught.value.status == status
    assert f"HTTP {status}" in str(caught.value)
    halves = target.split(operation)
    assert halves is not None and [h.keys for h in halves] == [("a",), ("b",)]
    target.close()


def test_vambe_an_odd_answer_to_the_block_listing_is_fatal_naming_base_url(vambe):
    block = vambe.add_block(name="catalog")
    target = vambe_target(vambe, block)
    vambe.inject(Fault(status=405))

    with pytest.raises(TargetFatalError) as caught:
        target.inspect()

    assert caught.value.status == 405
    assert "base_url" in str(caught.value) and vambe.url in str(caught.value)
    target.close()


def test_vambe_401_and_403_are_fatal_naming_the_env_var(vambe):
    block = vambe.add_block(name="catalog")
    (operation,) = vambe_plan([new("a", vb_product("a"))], block_id=block).operations

    wrong = vambe_target(vambe, block, api_key="wrong-key")
    with pytest.raises(TargetFatalError) as unauthorized:
        wrong.send(operation)
    wrong.close()
    target = vambe_target(vambe, block)
    vambe.inject(Fault(status=403))
    with pytest.raises(TargetFatalError) as forbidden:
        target.send(operation)
    target.close()

    assert unauthorized.value.status == 401
    assert f"${VB_ENV}" in str(unauthorized.value)
    assert "wrong-key" not in messages(unauthorized.value)
    assert forbidden.value.status == 403
    assert f"${VB_ENV}" in str(forbidden.value)
    assert block in str(forbidden.value)


# -- both targets: retriable answers ----------------------------------------------------


def test_a_2xx_is_acknowledged_by_returning(rig):
    assert rig.target.send(rig.operation) is None
    assert rig.fake.requests[-1].status in (201, 204)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_are_retriable_with_their_status(rig, status):
    rig.fake.inject(Fault(status=status))

    with pytest.raises(TargetRetriableError) as caught:
        rig.target.send(rig.operation)

    assert caught.value.status == status
    assert caught.value.retry_after is None
    assert str(status) in str(caught.value)


@pytest.mark.parametrize(("header", "expected"), [("7", 7.0), ("0", 0.0), ("2.5", 2.5)])
def test_429_with_retry_after_in_seconds_is_retriable_with_the_delay(rig, header, expected):
    rig.fake.inject(Fault(status=429, retry_after=header))

    with pytest.raises(TargetRetriableError) as caught:
        rig.target.send(rig.operation)

    assert caught.value.status == 429
    assert caught.value.retry_after == expected


def test_429_with_retry_after_as_an_http_date_is_retriable_with_the_seconds_left(rig):
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    rig.fake.inject(Fault(status=429, retry_after=when))

    with pytest.raises(TargetRetriableError) as caught:
        rig.target.send(rig.operation)

    assert caught.value.retry_after is not None
    assert 110 <= caught.value.retry_after <= 121


def test_503_with_a_past_http_date_retries_without_a_negative_wait(rig):
    rig.fake.inject(Fault(status=503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"))

    with pytest.raises(TargetRetriableError) as caught:
        rig.target.send(rig.operation)

    assert caught.value.retry_after == 0.0


def test_429_without_retry_after_is_still_retriable(rig):
    rig.fake.inject(Fault(status=429))

    with pytest.raises(TargetRetriableError) as caught:
        rig.target.send(rig.operation)

    assert caught.value.retry_after is None


def test_a_dropped_connection_is_retriable(rig):
    rig.fake.inject(Fault(drop_connection=True))

    with pytest.raises(TargetRetriableError):
        rig.target.send(rig.operation)


def test_a_write_that_landed_but_lost_its_answer_is_not_acknowledged(rig):
    rig.fake.inject(Fault(drop_connection=True, apply_then_fail=True))

    with pytest.raises(TargetRetriableError):
        rig.target.send(rig.operation)


def test_a_timeout_is_retriable(rig, request):
    config = {"timeout_s": 0.1}
    target = (
        userflux_target(rig.fake, **config)
        if isinstance(rig.fake, FakeUserflux)
        else vambe_target(rig.fake, rig.operation.path.rsplit("/", 1)[1], **config)
    )
    rig.fake.inject(Fault(delay=0.4))
    started = time.monotonic()

    with pytest.raises(TargetRetriableError) as caught:
        target.send(rig.operation)

    assert "timed out" in str(caught.value)
    assert time.monotonic() - started < 0.35
    target.close()


# -- the API key never appears in an error ----------------------------------------------


FAULTS = [
    pytest.param(Fault(status=400), id="400"),
    pytest.param(Fault(status=401), id="401"),
    pytest.param(Fault(status=403), id="403"),
    pytest.param(Fault(status=404), id="404"),
    pytest.param(Fault(status=429, retry_after="1"), id="429"),
    pytest.param(Fault(status=500, body=json.dumps({"detail": "boom"})), id="500"),
    pytest.param(Fault(status=502, body="<html>bad gateway</html>"), id="502-html"),
    pytest.param(Fault(drop_connection=True), id="dropped"),
]


@pytest.mark.parametrize("fault", FAULTS)
def test_the_api_key_never_appears_in_any_error(rig, fault):
    rig.fake.inject(fault)

    with pytest.raises(TargetError) as caught:
        rig.target.send(rig.operation)

    assert KEY not in messages(caught.value)


def test_a_refused_request_never_reaches_the_fakes_catalog(rig):
    rig.fake.inject(Fault(status=500))

    with pytest.raises(TargetRetriableError):
        rig.target.send(rig.operation)

    if isinstance(rig.fake, FakeUserflux):
        assert rig.fake.products == {}
    else:
        assert all(products == {} for products in rig.fake.blocks.values())


# -- whether a failed request may have been applied -------------------------------------


@pytest.mark.parametrize(
    ("fault", "maybe_applied"),
    [
        pytest.param(Fault(status=500), True, id="500"),
        pytest.param(Fault(status=503), True, id="503"),
        pytest.param(Fault(status=500, apply_then_fail=True), True, id="applied-then-500"),
        pytest.param(Fault(drop_connection=True), True, id="dropped-after-sending"),
        pytest.param(Fault(status=429, retry_after="1"), False, id="429"),
        pytest.param(Fault(status=408), False, id="408"),
    ],
)
def test_a_retriable_answer_says_whether_the_server_may_have_applied_the_request(
    rig, fault, maybe_applied
):
    rig.fake.inject(fault)

    with pytest.raises(TargetRetriableError) as caught:
        rig.target.send(rig.operation)

    assert caught.value.maybe_applied is maybe_applied


def test_a_read_timeout_may_have_been_applied(userflux):
    target = userflux_target(userflux, timeout_s=0.1)
    userflux.inject(Fault(delay=0.4))

    with pytest.raises(TargetRetriableError) as caught:
        target.send(plan_update(new("p1", uf_payload())))
    target.close()

    assert caught.value.maybe_applied is True


def test_a_refused_connection_was_not_applied():
    with FakeUserflux(api_key=KEY) as fake:
        url = fake.url  # the port is closed once the fake stops
    target = userflux_target(fake, base_url=url)

    with pytest.raises(TargetRetriableError) as caught:
        target.send(plan_update(new("p1", uf_payload())))
    target.close()

    assert caught.value.maybe_applied is False
    assert "ConnectError" in str(caught.value)


def test_userflux_validation_lists_every_broken_field_in_one_rejection(userflux):
    target = userflux_target(userflux)
    payload = uf_payload("p1", title="Shoe") | {
        "typeId": "",
        "properties": [],
        "aiPropertyOverrides": 1,
    }

    with pytest.raises(RecordError) as caught:
        target.validate("p1", payload)

    assert caught.value.key == "p1"
    assert [field for field, _ in caught.value.problems] == [
        "typeId",
        "properties",
        "aiPropertyOverrides",
    ]
    assert str(caught.value).startswith("typeId: typeId must be a non-empty string; properties: ")
    assert userflux.requests == []
    target.close()
