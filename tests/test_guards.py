"""The guards: what holds deletes back, what the message says, what an operator may override."""

from __future__ import annotations

import dataclasses

import pytest

from syncd.config import GuardConfig
from syncd.guards import GuardInput, check_guards

TARGET = "targets[1]"
CLEAN = GuardInput(
    source_complete=True,
    source_error=None,
    source_count=100,
    last_source_count=100,
    state_count=100,
    deletes=0,
)


def figures(**changes: object) -> GuardInput:
    return dataclasses.replace(CLEAN, **changes)  # type: ignore[arg-type]


def check(inputs: GuardInput, config: GuardConfig | None = None, **kwargs: object):
    return check_guards(inputs, config or GuardConfig(), target_path=TARGET, **kwargs)  # type: ignore[arg-type]


def test_a_clean_run_is_allowed_without_reasons():
    verdict = check(figures(deletes=5, source_count=95))

    assert verdict.allowed
    assert verdict.reasons == ()
    assert not verdict.overridden


TRIPS = [
    pytest.param(
        figures(source_count=4, last_source_count=None),
        GuardConfig(min_source_count=5),
        "min_source_count",
    ),
    pytest.param(figures(source_count=49), GuardConfig(), "min_source_fraction"),
    pytest.param(figures(deletes=21), GuardConfig(), "max_delete_fraction"),
    pytest.param(figures(deletes=4), GuardConfig(max_delete_count=3), "max_delete_count"),
    pytest.param(
        figures(source_count=0, last_source_count=None, state_count=0),
        GuardConfig(),
        "min_source_count",
        id="first-run-empty-read",
    ),
]


@pytest.mark.parametrize(("inputs", "config", "key"), TRIPS)
def test_each_guard_trips_with_a_message_naming_its_config_key_and_the_override(
    inputs, config, key
):
    verdict = check(inputs, config)

    assert not verdict.allowed
    assert not verdict.overridden
    assert len(verdict.reasons) == 1
    (reason,) = verdict.reasons
    assert f"{TARGET}.guards.{key}" in reason
    assert "--allow-deletes" in reason


@pytest.mark.parametrize(("inputs", "config", "key"), TRIPS)
def test_allow_deletes_lets_a_size_guard_through_and_marks_it_overridden(inputs, config, key):
    verdict = check(inputs, config, allow_deletes=True)

    assert verdict.allowed
    assert verdict.overridden
    assert any(f"guards.{key}" in reason for reason in verdict.reasons)


@pytest.mark.parametrize("allow_deletes", [False, True])
def test_an_incomplete_read_is_never_overridable(allow_deletes):
    inputs = figures(source_complete=False, source_error="HTTP 502 on page 7", deletes=0)

    verdict = check(inputs, allow_deletes=allow_deletes)

    assert not verdict.allowed
    assert not verdict.overridden
    (reason,) = verdict.reasons
    assert "HTTP 502 on page 7" in reason
    assert "--allow-deletes" not in reason, "must not suggest an override that does nothing"


def test_an_incomplete_read_without_an_error_text_still_says_why():
    (reason,) = check(figures(source_complete=False, source_error=None)).reasons

    assert "did not complete" in reason


def test_an_incomplete_read_wins_over_every_size_guard():
    inputs = figures(source_complete=False, source_error="timeout", source_count=0, deletes=99)

    verdict = check(inputs, GuardConfig(max_delete_count=0))

    assert len(verdict.reasons) == 1
    assert "incomplete" in verdict.reasons[0]


def test_every_tripped_guard_is_listed_at_once():
    inputs = figures(source_count=10, deletes=90)
    config = GuardConfig(min_source_count=20, max_delete_count=50)

    verdict = check(inputs, config)

    keys = ("min_source_count", "min_source_fraction", "max_delete_fraction", "max_delete_count")
    assert not verdict.allowed
    assert len(verdict.reasons) == 4
    for key, reason in zip(keys, verdict.reasons, strict=True):
        assert f"guards.{key}" in reason


@pytest.mark.parametrize(
    ("inputs", "config"),
    [
        pytest.param(figures(source_count=50), GuardConfig(), id="exactly-min-fraction"),
        pytest.param(figures(deletes=20), GuardConfig(), id="exactly-max-delete-fraction"),
        pytest.param(figures(deletes=3), GuardConfig(max_delete_count=3), id="exactly-max-count"),
        pytest.param(
            figures(source_count=5, last_source_count=5),
            GuardConfig(min_source_count=5),
            id="exactly-min",
        ),
        pytest.param(
            figures(deletes=0), GuardConfig(max_delete_fraction=0, max_delete_count=0), id="no-del"
        ),
        pytest.param(
            figures(deletes=10_000, state_count=10_000),
            GuardConfig(max_delete_fraction=1.0),
            id="fraction-one-no-count",
        ),
    ],
)
def test_guards_do_not_trip_at_their_limits(inputs, config):
    verdict = check(inputs, config)

    assert verdict.allowed
    assert verdict.reasons == ()


@pytest.mark.parametrize(
    "inputs",
    [
        pytest.param(figures(last_source_count=None, source_count=1, state_count=0), id="first"),
        pytest.param(figures(last_source_count=0, source_count=1, state_count=0), id="last-zero"),
        pytest.param(
            figures(last_source_count=None, source_count=3, state_count=1000), id="state-only"
        ),
    ],
)
def test_a_first_run_has_no_previous_read_to_compare_with(inputs):
    assert check(inputs).allowed


def test_a_zero_fraction_holds_any_delete():
    verdict = check(figures(deletes=1), GuardConfig(max_delete_fraction=0))

    assert not verdict.allowed
    assert "max_delete_fraction" in verdict.reasons[0]


def test_the_reason_gives_the_figures_that_tripped_the_guard():
    (reason,) = check(figures(deletes=30, state_count=100)).reasons

    assert "30 deletes" in reason
    assert "100 products" in reason
    assert "30.0%" in reason


@pytest.mark.parametrize(("rejected", "allowed"), [(50, True), (51, False), (100, False)])
def test_a_run_rejecting_more_than_max_reject_fraction_is_held(rejected, allowed):
    verdict = check(figures(rejected=rejected, rejected_example="P1: price: not a number"))

    assert verdict.allowed is allowed
    if not allowed:
        [reason] = verdict.reasons
        assert f"{rejected} of the 100 records read ({rejected}%) were rejected" in reason
        assert "max_reject_fraction=50%" in reason and "P1: price" in reason


def test_allow_deletes_never_overrides_the_rejection_guard():
    verdict = check(figures(rejected=90, deletes=30), allow_deletes=True)

    assert not verdict.allowed and not verdict.overridden
    assert any("max_reject_fraction" in reason for reason in verdict.reasons)
