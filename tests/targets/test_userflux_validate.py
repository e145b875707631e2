"""UserFlux's check of a mapped payload: what the mapper vouches for (``Mapper.well_formed``)
and a typeId found safe once are not looked at again, yet every payload is refused as
``validate_payload`` refuses it, in the same words."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.config import HttpConfig, UserfluxTargetConfig
from syncd.errors import RecordError
from syncd.mapping import WELL_FORMED_PRODUCT, build_mapper
from syncd.targets import open_target
from syncd.targets.userflux.contract import SAFE_SEGMENT, unsafe_segment, validate_payload

_SEGMENT_TEXT = st.text(
    alphabet=st.sampled_from("aZ09-_. /\\?#%\x00\x1f\x7f\x85é\u2028"), max_size=6
)


def _config(type_id: str = "shoes", **mapping: Any) -> UserfluxTargetConfig:
    return UserfluxTargetConfig.model_validate(
        {"kind": "userflux", "name": "uf", "api_key_env": "UF_KEY", "type_id": type_id,
         "mapping": {"properties": {"name": "title"}, **mapping}}
    )  # fmt: skip


@contextmanager
def _target(type_id: str) -> Iterator[Any]:
    target = open_target(_config(type_id), HttpConfig(), api_key="k")
    try:
        yield target
    finally:
        target.close()


def _verdict(check: Any, *args: Any) -> str | None:
    try:
        check(*args)
    except RecordError as exc:
        return f"{exc.key!r} {exc}"
    return None


def _hook_with_a_list_of_overrides(record: dict[str, Any], product: dict[str, Any]) -> Any:
    return {**product, "aiPropertyOverrides": ["not", "an", "object"]}


def test_a_userflux_mapper_vouches_for_its_objects_only_without_a_callable() -> None:
    assert build_mapper(_config(), "id").well_formed == WELL_FORMED_PRODUCT
    hooked = _config(callable=f"{__name__}:_hook_with_a_list_of_overrides")
    assert build_mapper(hooked, "id").well_formed == frozenset()


@given(st.text(alphabet=st.sampled_from("aZ09-_. /\\?#%\x00\x7fé"), max_size=5))
@settings(max_examples=500, deadline=None)
def test_a_segment_the_one_match_passes_is_one_unsafe_segment_finds_safe(value: str) -> None:
    if SAFE_SEGMENT.fullmatch(value) is not None:
        assert unsafe_segment(value) is None
    elif value.isascii() and value.isprintable():  # all but the ASCII it can't pass
        assert unsafe_segment(value) is not None


@given(
    type_id=st.sampled_from(["shoes", "a b", " shoes", "..", "a/b", "x%2F", "é", "a\x85"]),
    product_id=_SEGMENT_TEXT,
    overrides=st.sampled_from([None, {"a": 1}]),
)
@settings(max_examples=400, deadline=None)
def test_a_mapped_payload_is_refused_as_validate_payload_refuses_it(
    type_id: str, product_id: str, overrides: dict[str, Any] | None
) -> None:
    payload: dict[str, Any] = {"id": product_id, "typeId": type_id, "properties": {"n": 1}}
    if overrides is not None:
        payload["aiPropertyOverrides"] = overrides
    expected = _verdict(validate_payload, "K-1", payload)
    with _target(type_id) as target:
        assert _verdict(target.validate, "K-1", payload, WELL_FORMED_PRODUCT) == expected
        assert _verdict(target.validate, "K-1", payload) == expected
        other = {**payload, "typeId": "other"}  # not the configured typeId: checked
        assert _verdict(target.validate, "K-1", other, WELL_FORMED_PRODUCT) == _verdict(
            validate_payload, "K-1", other
        )


def test_what_a_callable_returns_has_every_rule_checked() -> None:
    hooked = _config(callable=f"{__name__}:_hook_with_a_list_of_overrides")
    mapper = build_mapper(hooked, "id")
    document = mapper.map({"id": "A-1", "title": "Shoe"})
    with _target("shoes") as target:
        verdict = _verdict(target.validate, document.key, document.payload, mapper.well_formed)
    assert verdict is not None and "aiPropertyOverrides must be an object" in verdict


def test_a_mapped_payload_with_an_unsafe_id_or_type_id_is_still_refused() -> None:
    for type_id, record_id, words in (
        ("shoes", "a/b", "id 'a/b' contains '/'"),
        ("shoes", "..", "id '..' is '..'"),
        ("sh/oes", "A-1", "typeId 'sh/oes' contains '/'"),
    ):
        mapper = build_mapper(_config(type_id), "id")
        key, payload, _ = mapper.encode({"id": record_id, "title": "Shoe"})
        with _target(type_id) as target:
            verdict = _verdict(target.validate, key, payload, mapper.well_formed)
        assert verdict is not None and words in verdict, (type_id, record_id)
