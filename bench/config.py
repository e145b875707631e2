"""The syncd configs the benchmark runs: a source (JSONL file or PostgreSQL) fanned out
to one UserFlux and one Vambe target, with a mapping that uses every kind of field."""

from __future__ import annotations

from pathlib import Path

API_KEY = "bench-key-not-a-secret"
ENV = {"BENCH_UF_KEY": API_KEY, "BENCH_VB_KEY": API_KEY}

_SOURCES = {
    "jsonl": """\
[source]
kind = "file"
path = "{path}"
key = "id"
""",
    "postgres": """\
[source]
kind = "sql"
url = "{path}"
table = "{table}"
fetch_size = 5000
key = "id"
""",
}
_SOURCES["mariadb"] = _SOURCES["sqlite"] = _SOURCES["postgres"]

_USERFLUX = """\
[[targets]]
name = "userflux"
kind = "userflux"
base_url = "{url}"
api_key_env = "BENCH_UF_KEY"
type_id = "product"
concurrency = {concurrency}
rate_limit_per_s = 0
timeout_s = 60

[targets.guards]
max_delete_fraction = 0.5

[targets.mapping.properties]
name = "title"
"description.html" = "description"
"description.text" = {{ path = "description", html = true }}
price = {{ path = "price", type = "number" }}
compare_at_price = {{ path = "compare_at_price", type = "number" }}
brand = "brand"
category = "category"
tags = {{ path = "tags", type = "list" }}
stock = {{ path = "stock", type = "integer" }}
attributes = {{ path = "attributes", type = "json" }}
image = "image"
"""

_VAMBE = """\
[[targets]]
name = "vambe"
kind = "vambe"
base_url = "{url}"
api_key_env = "BENCH_VB_KEY"
block_id = "{block}"
batch_size = {batch}
concurrency = 4
rate_limit_per_s = 0
timeout_s = 120

[targets.guards]
max_delete_fraction = 0.5

[targets.mapping]
name = "title"
description = {{ path = "description", html = true, max_length = 8192 }}
price = {{ path = "price", type = "number" }}
currency = {{ const = "USD" }}
file_url = "image"
sku = "id"
metadata = ["brand", "category", "tags", "attributes"]
"""


def write_config(
    path: Path,
    *,
    source: str,
    location: str,
    state: Path,
    userflux: str | None,
    vambe: str | None,
    block: str = "",
    table: str = "",
    concurrency: int = 16,
    refresh_period: str = "",
    vambe_batch: int = 2000,
) -> Path:
    """Write a config to ``path``: ``source`` is ``jsonl`` (``location`` a file) or
    ``postgres`` (``location`` a URL, ``table`` the table); a target is left out when
    its URL is ``None``. ``refresh_period``: the rolling refresh's (off by default, so the
    no-change and 1% runs measure only the diff); ``vambe_batch``: Vambe's ``batch_size``."""
    parts = [
        _SOURCES[source].format(path=location, table=table),
        f'[state]\nurl = "sqlite:///{state}"\n',
        f'[schedule]\nrefresh_period = "{refresh_period}"\n',
        '[logging]\nlevel = "warning"\nformat = "json"\n',
    ]
    if userflux is not None:
        parts.append(_USERFLUX.format(url=userflux, concurrency=concurrency))
    if vambe is not None:
        parts.append(_VAMBE.format(url=vambe, block=block, batch=vambe_batch))
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
