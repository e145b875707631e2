"""The naive baseline, run in a fresh process: what a nightly cron script does.

``python -m bench.naive CONFIG``: read the whole catalog, map it with the same
mapping, and push everything, one target after the other: one UserFlux
``POST /product`` (FULL_UPDATE) per product, Vambe ``create`` batches of 2000 of
every product; no state, no diff. Same concurrency as syncd's targets, so only the
strategy differs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.child import peak_rss_mb
from syncd.config import TargetConfig, UserfluxTargetConfig, load_config
from syncd.mapping import build_mapper
from syncd.model import UnreadableRow
from syncd.sources import open_source

BATCH = 2000


def _bodies(config_path: str, target: TargetConfig) -> Iterator[tuple[str, bytes]]:
    """(path, body) of every request the naive push sends to ``target``."""
    config = load_config(config_path)
    mapper = build_mapper(target, config.source.key)
    batch: list[bytes] = []
    for record in open_source(config.source, config.http).read():
        if isinstance(record, UnreadableRow):
            continue
        document = mapper.map(record)
        if isinstance(target, UserfluxTargetConfig):
            body = dict(document.payload, propertiesUpdateType="FULL_UPDATE")
            yield "/product", json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
            continue
        batch.append(document.canonical)
        if len(batch) == BATCH:
            yield f"/api/public/product/create/{target.block_id}", b"[" + b",".join(batch) + b"]"
            batch = []
    if batch and not isinstance(target, UserfluxTargetConfig):
        yield f"/api/public/product/create/{target.block_id}", b"[" + b",".join(batch) + b"]"


def push(config_path: str, target: TargetConfig) -> int:
    key = os.environ[target.api_key_env]
    auth = {"x-api-key": key}
    if isinstance(target, UserfluxTargetConfig):
        auth = {"Authorization": f"Bearer {key}"}
    client = httpx.Client(
        base_url=target.base_url,
        headers={**auth, "Content-Type": "application/json"},
        timeout=120,
        limits=httpx.Limits(max_connections=target.concurrency),
    )
    sent = 0
    with client, ThreadPoolExecutor(target.concurrency) as pool:

        def post(path: str, body: bytes) -> None:
            client.post(path, content=body).raise_for_status()

        inflight = []
        for path, body in _bodies(config_path, target):
            inflight.append(pool.submit(post, path, body))
            sent += 1
            if len(inflight) >= target.concurrency * 4:
                for future in inflight:
                    future.result()
                inflight.clear()
        for future in inflight:
            future.result()
    return sent


def main(argv: list[str]) -> int:
    config = load_config(argv[0])
    sent = sum(push(argv[0], target) for target in config.targets)
    print(json.dumps({"requests": sent, "peak_rss_mb": peak_rss_mb()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
