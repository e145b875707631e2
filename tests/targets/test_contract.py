"""The contract every registered target passes, run against each one's loopback fake
(as the state store's contract suite runs over SQLite, PostgreSQL and MariaDB).

A new target registered in ``syncd.targets.BACKENDS`` must add its rig here: a fake
server, a config, a valid and an invalid product, and its status table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from syncd.config import HttpConfig, TargetConfig, UserfluxTargetConfig, VambeTargetConfig
from syncd.diff import Change, ChangeKind, Operation
from syncd.errors import RecordError, TargetFatalError, TargetRejectedError, TargetRetriableError
from syncd.model import Acked, Document
from syncd.sandbox import FakeServer, FakeUserflux, FakeVambe, Fault
from syncd.targets import BACKENDS, Target, open_target, userflux, vambe
from syncd.targets.base import StatusTable, answer_for

KEY = "sk-contract-7Hq2-SECRET"
ENV = "CONTRACT_API_KEY"


@dataclass
class Rig:
    fake: FakeServer
    config: TargetConfig
    good: Callable[[str], dict]
    bad: dict
    statuses: StatusTable

    def target(self) -> Target:
        return open_target(self.config, HttpConfig(), api_key=KEY)


def _userflux() -> Rig:
    fake = FakeUserflux(api_key=KEY).start()
    config = UserfluxTargetConfig(
        kind="userflux", name="uf", api_key_env=ENV, type_id="shoes", base_url=fake.url
    )

    def good(key: str) -> dict:
        return {"id": key, "typeId": "shoes", "properties": {"title": f"shoe {key}"}}

    return Rig(
        fake, config, good, {"id": "", "typeId": "shoes", "properties": []}, userflux.STATUSES
    )


def _vambe() -> Rig:
    fake = FakeVambe(api_key=KEY).start()
    block = fake.add_block(name="catalog")
    config = VambeTargetConfig(
        kind="vambe", name="vb", api_key_env=ENV, block_id=block, base_url=fake.url
    )

    def good(key: str) -> dict:
        return {
            "name": f"Shoe {key}",
            "description": "A light shoe for running on mountain trails.",
            "price": 49.9,
            "currency": "USD",
            "type": "vambe",
            "external_id": key,
            "metadata": [{"key": "color", "value": "red"}],
        }

    bad = {**good("x"), "price": 0, "currency": "XXX"}
    return Rig(fake, config, good, bad, vambe.STATUSES)


RIGS: dict[str, Callable[[], Rig]] = {"userflux": _userflux, "vambe": _vambe}


def test_every_registered_target_has_a_rig_in_this_suite():
    assert sorted(RIGS) == sorted(BACKENDS)


@pytest.fixture(params=sorted(BACKENDS))
def rig(request) -> Iterator[Rig]:
    made = RIGS[request.param]()
    try:
        yield made
    finally:
        made.fake.stop()


def create(rig: Rig, key: str) -> Change:
    return Change(ChangeKind.CREATE, key, Document.of(key, rig.good(key)))


def update(rig: Rig, key: str) -> Change:
    before = Document.of(key, rig.good(key))
    after = Document.of(key, {**rig.good(key), **_changed(rig.good(key))})
    return Change(ChangeKind.UPDATE, key, after, Acked(key, before.hash, before.canonical))


def delete(rig: Rig, key: str) -> Change:
    before = Document.of(key, rig.good(key))
    return Change(ChangeKind.DELETE, key, None, Acked(key, before.hash, before.canonical))


def _changed(payload: dict) -> dict:
    if "properties" in payload:
        return {"properties": {**payload["properties"], "title": "changed"}}
    return {"name": "changed"}


def keys_of(operations: tuple[Operation, ...]) -> list[str]:
    return sorted(change.key for operation in operations for change in operation.changes)


def test_the_plan_covers_every_create_update_and_delete_once(rig):
    target = rig.target()
    planned = target.plan(
        [create(rig, "a"), update(rig, "b")], [delete(rig, "c")], full=False, deletes_allowed=True
    )
    assert keys_of(planned.operations) == ["a", "b", "c"]
    assert planned.held == ()
    target.close()


def test_deletes_the_guards_hold_are_held_and_never_planned(rig):
    target = rig.target()
    planned = target.plan([create(rig, "a")], [delete(rig, "c")], full=False, deletes_allowed=False)
    assert keys_of(planned.operations) == ["a"]
    assert [change.key for change in planned.held] == ["c"]
    target.close()


def test_a_2xx_acknowledges_every_planned_request(rig):
    target = rig.target()
    for operation in target.plan(
        [create(rig, "a"), create(rig, "b")], [], full=False, deletes_allowed=True
    ).operations:
        target.send(operation)
    gone = target.plan([], [delete(rig, "a")], full=False, deletes_allowed=True)
    for operation in gone.operations:
        target.send(operation)
    assert rig.fake.request_count("POST") >= 1
    target.close()


def _one(rig: Rig, target: Target, key: str = "a") -> Operation:
    (operation,) = target.plan([create(rig, key)], [], full=False, deletes_allowed=True).operations
    return operation


def test_a_400_rejects_only_that_request_and_the_target_goes_on(rig):
    target = rig.target()
    rig.fake.inject(Fault(status=400))
    with pytest.raises(TargetRejectedError) as caught:
        target.send(_one(rig, target, "a"))
    assert caught.value.status == 400
    target.send(_one(rig, target, "b"))  # the next request is sent and acknowledged
    target.close()


@pytest.mark.parametrize("status", [401, 403])
def test_an_auth_failure_is_fatal_naming_the_variable_never_the_key(rig, status):
    target = rig.target()
    rig.fake.inject(Fault(status=status, body=f'{{"error": "bad key {KEY}"}}'))
    with pytest.raises(TargetFatalError) as caught:
        target.send(_one(rig, target))
    assert caught.value.status == status
    assert f"${ENV}" in str(caught.value)
    assert KEY not in str(caught.value)
    target.close()


def test_a_429_is_retriable_not_applied_and_carries_retry_after(rig):
    target = rig.target()
    rig.fake.inject(Fault(status=429, retry_after="7"))
    with pytest.raises(TargetRetriableError) as caught:
        target.send(_one(rig, target))
    assert caught.value.retry_after == 7.0
    assert caught.value.maybe_applied is False
    target.close()


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_is_retriable_and_may_have_been_applied(rig, status):
    target = rig.target()
    rig.fake.inject(Fault(status=status))
    with pytest.raises(TargetRetriableError) as caught:
        target.send(_one(rig, target))
    assert caught.value.maybe_applied is True
    target.close()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 413, 418, 422, 429, 500, 507])
def test_the_error_of_each_status_is_the_one_the_targets_table_gives(rig, status):
    expected = {
        "retriable": TargetRetriableError,
        "rejected": TargetRejectedError,
        "fatal": TargetFatalError,
    }[answer_for(status, rig.statuses).outcome]
    target = rig.target()
    rig.fake.inject(Fault(status=status))
    with pytest.raises(expected):
        target.send(_one(rig, target))
    target.close()


def test_validate_accepts_a_valid_product_and_refuses_what_the_contract_refuses(rig):
    target = rig.target()
    target.validate("a", rig.good("a"))
    with pytest.raises(RecordError):
        target.validate("x", rig.bad)
    target.close()


def test_a_target_can_split_a_refused_request_down_to_single_products(rig):
    target = rig.target()
    planned = target.plan(
        [create(rig, str(i)) for i in range(4)], [], full=False, deletes_allowed=True
    )
    pending = list(planned.operations)
    singles = []
    while pending:
        operation = pending.pop()
        halves = target.split(operation)
        if halves is None:
            singles.append(operation)
        else:
            pending.extend(halves)
    assert all(len(operation.changes) == 1 for operation in singles)
    assert keys_of(tuple(singles)) == ["0", "1", "2", "3"]
    target.close()
