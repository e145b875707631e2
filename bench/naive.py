"""The naive baseline, run in a fresh process: what a nightly cron script does.

``python -m bench.naive CONFIG``: read the whole catalog, map it with the same
mapping, and push everything: one UserFlux ``POST /product`` (FULL_UPDATE) per
product, Vambe ``create`` batches of 2000 of every product; no state, no diff. Same
HTTP client settings and concurrency as syncd, so only the strategy differs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from syncd.config import UserfluxTargetConfig, load_config
from syncd.mapping import build_mapper
from syncd.model import UnreadableRow
from syncd.sources import open_source

BATCH = 2000


def _bodies(config_path: str) -> Iterator[tuple[int, bytes]]:
    """(target index, canonical JSON) of every product for every target."""
    config = load_config(config_path)
    mappers = [build_mapper(target, config.source.key) for target in config.targets]
    for record in open_source(config.source, config.http).read():
        if isinstance(record, UnreadableRow):
            continue
        for index, mapper in enumerate(mappers):
            document = mapper.map(record)
            yield index, document.canonical


def main(argv: list[str]) -> int:
    config = load_config(argv[0])
    clients = []
    for target in config.targets:
        key = os.environ[target.api_key_env]
        auth = (
            {"Authorization": f"Bearer {key}"} if target.kind == "userflux" else {"x-api-key": key}
        )
        clients.append(
            httpx.Client(
                base_url=target.base_url,
                headers={**auth, "Content-Type": "application/json"},
                timeout=120,
                limits=httpx.Limits(max_connections=target.concurrency),
            )
        )
    batches: list[list[bytes]] = [[] for _ in config.targets]
    sent = 0
    workers = sum(target.concurrency for target in config.targets)
    with ThreadPoolExecutor(workers) as pool:
        inflight: list[Any] = []

        def post(index: int, path: str, body: bytes) -> None:
            clients[index].post(path, content=body).raise_for_status()

        def submit(index: int, path: str, body: bytes) -> None:
            nonlocal sent
            inflight.append(pool.submit(post, index, path, body))
            sent += 1
            if len(inflight) >= workers * 4:
                for future in inflight:
                    future.result()
                inflight.clear()

        for index, canonical in _bodies(argv[0]):
            target = config.targets[index]
            if isinstance(target, UserfluxTargetConfig):
                payload = json.loads(canonical)
                payload["propertiesUpdateType"] = "FULL_UPDATE"
                body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
                submit(index, "/product", body)
            else:
                batch = batches[index]
                batch.append(canonical)
                if len(batch) == BATCH:
                    submit(index, f"/api/public/product/create/{target.block_id}", _join(batch))
                    batch.clear()
        for index, batch in enumerate(batches):
            if batch:
                block = config.targets[index].block_id  # type: ignore[union-attr]
                submit(index, f"/api/public/product/create/{block}", _join(batch))
        for future in inflight:
            future.result()
    for client in clients:
        client.close()
    print(json.dumps({"requests": sent}))
    return 0


def _join(batch: list[bytes]) -> bytes:
    return b"[" + b",".join(batch) + b"]"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
