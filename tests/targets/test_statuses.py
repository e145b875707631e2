"""One table from HTTP status to error: defaults in ``targets.base``, overrides per
target, consulted by ``check_response``."""

from __future__ import annotations

import httpx
import pytest

from syncd.errors import TargetFatalError, TargetRejectedError, TargetRetriableError
from syncd.targets import userflux, vambe
from syncd.targets.base import (
    DEFAULT_STATUSES,
    OK,
    Answer,
    answer_for,
    check_response,
)


def answer(status: int, body: str = "", **headers: str) -> httpx.Response:
    request = httpx.Request("POST", "https://api.test/x", headers={"x-api-key": "k-123456"})
    return httpx.Response(status, text=body, headers=headers, request=request)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "ok"),
        (204, "ok"),
        (301, "rejected"),
        (400, "rejected"),
        (401, "fatal"),
        (403, "fatal"),
        (404, "rejected"),
        (408, "retriable"),
        (418, "rejected"),
        (425, "retriable"),
        (429, "retriable"),
        (500, "retriable"),
        (599, "retriable"),
    ],
)
def test_the_default_table_sorts_every_status(status, outcome):
    assert answer_for(status, DEFAULT_STATUSES).outcome == outcome


def test_vambe_says_a_404_is_a_missing_block_and_userflux_a_delete_already_done():
    assert answer_for(404, vambe.STATUSES).outcome == "fatal"
    assert answer_for(404, userflux.STATUSES).outcome == "rejected"
    assert answer_for(404, userflux.DELETE_STATUSES) is OK


def test_a_fatal_answer_fills_its_message_from_the_targets_fields():
    with pytest.raises(TargetFatalError) as caught:
        check_response(
            answer(404), "POST /create/b1", vambe.STATUSES, env="VB_KEY", block_id="b1", name="vb"
        )
    assert str(caught.value) == (
        "POST /create/b1: HTTP 404 Not Found: product block b1 not found; "
        "check block_id of target 'vb'"
    )


def test_an_unnamed_refusal_hints_at_the_base_url_and_a_documented_one_does_not():
    with pytest.raises(TargetRejectedError) as odd:
        check_response(answer(418), "POST /p", DEFAULT_STATUSES, base_url="https://api.test")
    assert "check base_url (https://api.test)" in str(odd.value)
    with pytest.raises(TargetRejectedError) as plain:
        check_response(answer(422), "POST /p", DEFAULT_STATUSES, base_url="https://api.test")
    assert "base_url" not in str(plain.value)


def test_a_retriable_answer_carries_retry_after_and_whether_it_may_have_been_applied():
    with pytest.raises(TargetRetriableError) as throttled:
        check_response(answer(429, **{"Retry-After": "3"}), "POST /p", DEFAULT_STATUSES)
    assert (throttled.value.retry_after, throttled.value.maybe_applied) == (3.0, False)
    with pytest.raises(TargetRetriableError) as failed:
        check_response(answer(502), "POST /p", DEFAULT_STATUSES)
    assert failed.value.maybe_applied is True


def test_a_new_targets_table_overrides_a_status_without_touching_the_function():
    table = {**DEFAULT_STATUSES, 409: OK, 429: Answer("fatal", "{what}: quota gone ({reason})")}
    check_response(answer(409), "POST /p", table)  # acknowledged: no error
    with pytest.raises(TargetFatalError, match="POST /p: quota gone"):
        check_response(answer(429), "POST /p", table)


def test_a_key_echoed_in_the_body_never_reaches_the_message():
    with pytest.raises(TargetFatalError) as caught:
        check_response(answer(401, "bad key k-123456"), "POST /p", vambe.STATUSES, env="VB_KEY")
    assert "k-123456" not in str(caught.value)
    assert "$VB_KEY" in str(caught.value)
