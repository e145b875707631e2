"""The examples that ship their own sample data (``apparel-files``, ``sql-joined``).

Each is loaded as shipped, its data copied to a scratch folder (the CSV) or built there
(the SQLite database, from ``shop.sql``), aimed at the fakes and synced: the first run
leaves both fakes holding exactly the mapped catalog, the second sends nothing, and after
edits to the data a run sends exactly the diff.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from syncd.config import SyncdConfig, UserfluxTargetConfig, VambeTargetConfig, load_config
from syncd.reconcile import Reconciler
from syncd.sandbox import FakeUserflux, FakeVambe
from syncd.state import open_store
from tests.support import KEY
from tests.test_examples import aimed_at_fakes, mapped

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ENV = {"USERFLUX_API_KEY": KEY, "VAMBE_API_KEY": KEY}


def apparel(tmp_path: Path) -> tuple[SyncdConfig, Path]:
    """The example with its data folder copied to ``tmp_path`` (returned): three files."""
    config = load_config(EXAMPLES / "apparel-files" / "syncd.toml", environ=ENV)
    data = tmp_path / "data"
    shutil.copytree(EXAMPLES / "apparel-files" / "data", data)
    source = config.source.model_copy(update={"path": data / "*.csv"})
    return config.model_copy(update={"source": source}), data


def edit(path: Path, change: Any) -> None:
    path.write_text(change(path.read_text(encoding="utf-8")), encoding="utf-8")


def shop(tmp_path: Path) -> tuple[SyncdConfig, sqlite3.Connection]:
    config = load_config(EXAMPLES / "sql-joined" / "syncd.toml", environ=ENV)
    database = tmp_path / "shop.db"
    connection = sqlite3.connect(database)
    connection.executescript((EXAMPLES / "sql-joined" / "shop.sql").read_text(encoding="utf-8"))
    connection.commit()
    source = config.source.model_copy(update={"url": f"sqlite:///{database}"})
    return config.model_copy(update={"source": source}), connection


class Synced:
    """An example aimed at the fakes, with its state in a scratch folder."""

    def __init__(
        self, shipped: SyncdConfig, tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe
    ):
        self.userflux, self.vambe = userflux, vambe
        self.block = vambe.add_block()
        self.config = aimed_at_fakes(shipped, tmp_path, userflux, vambe, self.block)
        self.store = open_store(self.config.state.url)

    def sync(self) -> Any:
        self.userflux.reset_requests()
        self.vambe.reset_requests()
        report = Reconciler(self.config, self.store, environ=ENV).sync()
        assert report.ok, [(t.target, t.error) for t in report.targets]
        assert report.source_complete
        return report

    def assert_converged(self) -> None:
        uf_docs, uf_rejected = mapped(self.config, UserfluxTargetConfig)
        vb_docs, vb_rejected = mapped(self.config, VambeTargetConfig)
        assert (uf_rejected, vb_rejected) == ({}, {})
        assert self.userflux.products == {
            ("product", key): {
                "properties": payload["properties"],
                "aiPropertyOverrides": payload.get("aiPropertyOverrides", {}),
            }
            for key, payload in uf_docs.items()
        }
        assert self.vambe.block_products(self.block) == vb_docs

    def userflux_writes(self) -> list[tuple[str, str]]:
        return sorted(
            (r.method, r.path.rsplit("/", 1)[-1] if r.method == "DELETE" else r.json["id"])  # type: ignore[index]
            for r in self.userflux.requests
            if r.method in ("POST", "DELETE")
        )

    def vambe_writes(self) -> list[tuple[str, list[str]]]:
        """(action, keys) of each POST: every body is a list of ``{"external_id": ...}``."""
        return sorted(
            (
                r.path.split("/product/", 1)[1].split("/", 1)[0],
                sorted(item["external_id"] for item in r.json),  # type: ignore[union-attr]
            )
            for r in self.vambe.requests
            if r.method == "POST"
        )


@pytest.fixture
def fakes():
    with FakeUserflux(api_key=KEY) as userflux, FakeVambe(api_key=KEY) as vambe:
        yield userflux, vambe


def test_apparel_with_variants_before_their_parents_converges_then_sends_exactly_the_diff(
    tmp_path: Path, fakes: tuple[FakeUserflux, FakeVambe]
):
    shipped, data = apparel(tmp_path)
    synced = Synced(shipped, tmp_path, *fakes)
    try:
        first = synced.sync()
        assert first.source_count == 6  # 17 rows: 6 products, 11 variant rows folded in
        synced.assert_converged()
        anorak = synced.userflux.products[("product", "ANO")]["properties"]
        assert [v["SKU"] for v in anorak["variants"]] == ["ANO-XS-BLK", "ANO-XS-GRY", "ANO-M-BLK"]
        assert (anorak["sizes"], anorak["colors"]) == (["XS", "M"], ["Black", "Gray"])
        assert anorak["description"] == "Light shell in Lycra®, packs into its own pocket."
        tee = synced.userflux.products[("product", "TEE")]["properties"]
        assert tee["sizes"] == ["S", "M", "L"]  # TEE-L-* come after their parent

        assert synced.sync().targets[0].requests == 0
        assert synced.userflux_writes() == [] and synced.vambe_writes() == []

        edit(
            data / "outerwear.csv",
            lambda text: text.replace(
                "ANO-XS-GRY,Anorak - XS Gray,,59.90,XS,Gray",
                "ANO-XS-GRY,Anorak - XS Navy,,59.90,XS,Navy",
            ).replace(  # a new product's variant row, its parent in another file
                "variation,ANO-XS-BLK",
                "variation,HAT-S-GRN,Hat - S Green,,22.00,S,Green,1,,\nvariation,ANO-XS-BLK",
            ),
        )
        edit(
            data / "accessories.csv",
            lambda text: "".join(
                line for line in text.splitlines(keepends=True) if "SCK" not in line
            )
            + "HAT,variable,Bucket hat,22.00,,,,Accessories/Hats,<p>Waxed cotton.</p>,HAT-S-GRN\n",
        )
        edited = synced.sync()

        assert edited.source_count == 6
        synced.assert_converged()
        assert synced.userflux_writes() == [("DELETE", "SCK"), ("POST", "ANO"), ("POST", "HAT")]
        assert synced.vambe_writes() == [("create", ["ANO", "HAT"]), ("delete", ["SCK"])]
        assert synced.userflux.products[("product", "ANO")]["properties"]["colors"] == [
            "Black",
            "Navy",
        ]
    finally:
        synced.store.close()


def test_a_shop_joined_in_sql_converges_then_sends_exactly_the_diff(
    tmp_path: Path, fakes: tuple[FakeUserflux, FakeVambe]
):
    shipped, database = shop(tmp_path)
    synced = Synced(shipped, tmp_path, *fakes)
    try:
        first = synced.sync()
        assert first.source_count == 6  # the inactive kettle is left out by the query
        synced.assert_converged()
        pan = synced.userflux.products[("product", "PAN-24")]["properties"]
        assert pan["category"] == "Kitchen > Cookware > Pans"
        assert pan["price"] == 34.9  # the latest of two prices
        assert pan["description"] == {
            "en": "Pre-seasoned, oven safe to 260 °C.",
            "es": "Curada, apta para horno hasta 260 °C.",
        }
        pot = synced.vambe.block_products(synced.block)["POT-5L"]
        assert pot["description"] == "Olla de acero inoxidable."  # only in Spanish
        assert {"key": "category", "value": "Kitchen > Cookware"} in pot["metadata"]

        assert synced.sync().targets[0].requests == 0
        assert synced.userflux_writes() == [] and synced.vambe_writes() == []

        database.executescript(
            """
            INSERT INTO prices VALUES (2, '2025-01-01', 44.90, 'EUR');
            UPDATE product_descriptions SET description = '<p>Hoja de 21 cm.</p>'
              WHERE product_id = 3 AND locale = 'es';
            UPDATE products SET active = 0 WHERE sku = 'RAKE-01';
            INSERT INTO products VALUES (8, 'HOE-01', 'Hoe', 6, 1);
            INSERT INTO prices VALUES (8, '2025-01-01', 15.00, 'EUR');
            """
        )
        database.commit()
        edited = synced.sync()

        assert edited.source_count == 6
        synced.assert_converged()
        # the Spanish description is a UserFlux property only: Vambe shows the English one
        assert synced.userflux_writes() == [
            ("DELETE", "RAKE-01"),
            ("POST", "HOE-01"),
            ("POST", "KNF-CHEF"),
            ("POST", "PAN-28"),
        ]
        assert synced.vambe_writes() == [("create", ["HOE-01", "PAN-28"]), ("delete", ["RAKE-01"])]
    finally:
        synced.store.close()
        database.close()
