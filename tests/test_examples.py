"""The configs in ``examples/`` sync real third-party catalogs to both fakes.

Each example is loaded as shipped, aimed at a fake UserFlux and a fake Vambe block
started here, and synced twice: the first run leaves each fake holding exactly the
mapped products that were not rejected (every rejection with its reason), the second
sends nothing. The counts asserted are the ones ``examples/README.md`` reports.

This module reads the data sets in ``../shared/datasets`` (a folder next to the
repository, not inside it: their licenses differ, so they are never copied here) and
is skipped, with that reason, when the folder is absent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from syncd.config import (
    RetryConfig,
    SyncdConfig,
    UserfluxTargetConfig,
    VambeTargetConfig,
    load_config,
)
from syncd.errors import RecordError
from syncd.mapping import build_mapper
from syncd.model import UnreadableRow
from syncd.reconcile import Reconciler
from syncd.sandbox import FakeUserflux, FakeVambe
from syncd.sources import open_source, read_catalog
from syncd.state import open_store
from syncd.targets.vambe import validate_product
from tests.support import FAST_RETRY, KEY

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
DATASETS = REPO.parent / "shared" / "datasets"
ENV = {"USERFLUX_API_KEY": KEY, "VAMBE_API_KEY": KEY}


@dataclass(frozen=True)
class Case:
    """One example run on one data file, with the counts measured for the README."""

    example: str
    records: int
    userflux_pushed: int
    vambe_pushed: int
    data_file: str | None = None
    """Another file of the same data set than the config's ``source.path``."""
    vambe_rejected: tuple[str, ...] = ()
    """Keys Vambe's rules reject (beyond rows that are not products at all)."""

    @property
    def id(self) -> str:
        return self.example + (f"-{Path(self.data_file).stem}" if self.data_file else "")


CASES = [
    Case("dummyjson", records=194, userflux_pushed=194, vambe_pushed=194),
    Case(
        "woocommerce",
        records=18,  # 25 rows, the 7 variations folded into their 2 parents
        userflux_pushed=18,
        vambe_pushed=17,
        vambe_rejected=("87",),  # the grouped parent: no price of its own, no variations
    ),
    Case("shopify", records=20, userflux_pushed=20, vambe_pushed=20),
    Case("shopify", 20, 20, 20, data_file="shopify/apparel.csv"),
    Case("shopify", 20, 20, 20, data_file="shopify/home-and-garden.csv"),
    Case("saleor", records=32, userflux_pushed=32, vambe_pushed=32),  # 721 rows, `where`
]


@pytest.fixture(autouse=True)
def datasets() -> Path:
    if not DATASETS.is_dir():
        pytest.skip(f"the third-party data sets are not at {DATASETS} (a sibling of the repo)")
    return DATASETS


def load_example(case: Case, monkeypatch: pytest.MonkeyPatch) -> SyncdConfig:
    """The example's config as shipped (its hooks importable), on ``case``'s data file."""
    folder = EXAMPLES / case.example
    monkeypatch.syspath_prepend(str(folder))  # mapping.callable imports the hooks by name
    config = load_config(folder / "syncd.toml", environ=ENV)
    if case.data_file:
        source = config.source.model_copy(update={"path": DATASETS / case.data_file})
        config = config.model_copy(update={"source": source})
    return config


def aimed_at_fakes(
    config: SyncdConfig, tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe, block: str
) -> SyncdConfig:
    """The config with its targets pointed at the fakes, unthrottled, state in tmp_path."""
    targets: list[UserfluxTargetConfig | VambeTargetConfig] = []
    for target in config.targets:
        update: dict[str, Any] = {"rate_limit_per_s": 0, "retry": RetryConfig(**FAST_RETRY)}
        if isinstance(target, UserfluxTargetConfig):
            update["base_url"] = userflux.url
        else:
            update.update(base_url=vambe.url, block_id=block)
        targets.append(target.model_copy(update=update))
    state = config.state.model_copy(update={"url": f"sqlite:///{tmp_path / 'state.db'}"})
    return config.model_copy(update={"targets": targets, "state": state})


def the_target(config: SyncdConfig, kind: type) -> Any:
    (target,) = [t for t in config.targets if isinstance(t, kind)]
    return target


def records(config: SyncdConfig) -> Iterator[dict[str, Any]]:
    for item in read_catalog(open_source(config.source), config.source):
        assert not isinstance(item, UnreadableRow), item
        yield item


def mapped(config: SyncdConfig, kind: type) -> tuple[dict[str, Any], dict[str, str]]:
    """What the example's mapping makes of its source for one target, read here on its
    own: payloads by key, and rejection reasons by key."""
    target = the_target(config, kind)
    mapper = build_mapper(target, config.source.key)
    payloads: dict[str, Any] = {}
    rejected: dict[str, str] = {}
    for record in records(config):
        try:
            document = mapper.map(record)
            if kind is VambeTargetConfig:
                validate_product(document.key, document.payload)
        except RecordError as exc:
            assert exc.key, exc
            rejected[exc.key] = str(exc)
        else:
            payloads[document.key] = document.payload
    return payloads, rejected


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_each_example_converges_both_fakes_on_the_first_run_and_sends_nothing_on_the_second(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = load_example(case, monkeypatch)
    with FakeUserflux(api_key=KEY) as userflux, FakeVambe(api_key=KEY) as vambe:
        block = vambe.add_block(name=case.id)
        config = aimed_at_fakes(shipped, tmp_path, userflux, vambe, block)
        uf_name = the_target(config, UserfluxTargetConfig).name
        vb_name = the_target(config, VambeTargetConfig).name
        store = open_store(config.state.url)
        try:
            first = Reconciler(config, store, environ=ENV).sync()

            assert first.ok, [(t.target, t.error) for t in first.targets]
            assert first.source_complete
            assert first.source_count == case.records
            uf_docs, uf_rejected = mapped(config, UserfluxTargetConfig)
            vb_docs, vb_rejected = mapped(config, VambeTargetConfig)
            assert userflux.products == {
                ("product", key): {
                    "properties": payload["properties"],
                    "aiPropertyOverrides": payload.get("aiPropertyOverrides", {}),
                }
                for key, payload in uf_docs.items()
            }
            assert vambe.block_products(block) == vb_docs
            assert len(uf_docs) == case.userflux_pushed
            assert len(vb_docs) == case.vambe_pushed
            for name, rejected, docs in (
                (uf_name, uf_rejected, uf_docs),
                (vb_name, vb_rejected, vb_docs),
            ):
                held = {r.key: r.reason for r in store.open_rejections(name)}
                assert set(held) == set(rejected)
                assert all(reason.strip() for reason in held.values())
                assert not set(held) & set(docs)
                assert len(docs) + len(held) == case.records
            refused = {k: why for k, why in vb_rejected.items() if "not a product" not in why}
            assert set(refused) == set(case.vambe_rejected)
            assert all("price" in why for why in refused.values())

            userflux.reset_requests()
            vambe.reset_requests()
            second = Reconciler(config, store, environ=ENV).sync()

            assert second.ok
            assert [t.requests for t in second.targets] == [0, 0]
            assert userflux.request_count() == 0
            assert vambe.request_count(method="POST") == 0  # only the GET of block counts
            assert len(userflux.products) == case.userflux_pushed
            assert len(vambe.block_products(block)) == case.vambe_pushed
        finally:
            store.close()


def payloads_of(example: str, kind: type, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    config = load_example(Case(example, 0, 0, 0), monkeypatch)
    return mapped(config, kind)[0]


def test_woocommerce_folds_variations_into_their_parent_with_a_from_price(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    userflux = payloads_of("woocommerce", UserfluxTargetConfig, monkeypatch)
    vambe = payloads_of("woocommerce", VambeTargetConfig, monkeypatch)

    assert sorted(userflux, key=int)[:2] == ["44", "45"]  # "ID", not "\ufeffID"
    assert "79" not in userflux and "79" not in vambe  # a variation is not a product
    vneck = userflux["44"]["properties"]
    assert vneck["variations"] == ["woo-vneck-tee-blue", "woo-vneck-tee-green", "woo-vneck-tee-red"]
    assert vneck["price"] == {"from": 15}  # the cheapest of 20, 20 and 15
    assert vambe["44"]["price"] == 15
    assert {"key": "colors", "value": "Blue, Green, Red"} in vambe["45"]["metadata"]
    assert vambe["48"]["price"] == 18  # a simple product: its sale price, over the regular 20
    assert userflux["44"]["properties"]["shipping"]["weight_lbs"] == 0.5  # written ".5"


def test_shopify_takes_the_lowest_variant_price_and_ignores_image_only_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    userflux = payloads_of("shopify", UserfluxTargetConfig, monkeypatch)
    vambe = payloads_of("shopify", VambeTargetConfig, monkeypatch)

    anchor = userflux["leather-anchor"]["properties"]  # 69.99 Gold, 55 Silver, an image row
    assert anchor["price"] == 55
    assert [v["options"] for v in anchor["variants"]] == [{"Color": "Gold"}, {"Color": "Silver"}]
    assert len(anchor["images"]) == 3
    assert vambe["leather-anchor"]["price"] == 55
    assert {"key": "option.Color", "value": "Blue, Purple"} in vambe["gemstone"]["metadata"]
    choker = vambe["choker-with-gold-pendant"]["description"]  # holds U+00A0 and U+2028
    assert "\u2028" not in choker and "\xa0" not in choker


def test_saleor_products_are_joined_with_their_prices_per_channel_and_category(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    userflux = payloads_of("saleor", UserfluxTargetConfig, monkeypatch)
    vambe = payloads_of("saleor", VambeTargetConfig, monkeypatch)

    pill = userflux["126"]["properties"]
    assert pill["price"] == {"USD": 10, "PLN": 40}
    assert pill["category"] == "Accessories > Audiobooks"
    assert vambe["126"]["price"] == 10 and vambe["126"]["currency"] == "USD"
    assert {"key": "price_PLN", "value": "40"} in vambe["126"]["metadata"]
    assert "&nbsp;" not in userflux["130"]["properties"]["description"]
    assert vambe["131"]["description"] == "Grey Hoodie"  # no description at all: the name


def test_dummyjson_leaves_out_the_brand_of_products_that_have_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    userflux = payloads_of("dummyjson", UserfluxTargetConfig, monkeypatch)

    without = [key for key, payload in userflux.items() if "brand" not in payload["properties"]]
    assert len(without) == 92
    assert userflux["96"]["properties"]["name"] == userflux["191"]["properties"]["name"]
