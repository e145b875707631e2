"""Vambe product blocks: sends the planned batches to one block (``x-api-key``) and
reads the block's count before a run."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import httpx

from syncd.config import HttpConfig, VambeTargetConfig
from syncd.diff import Change, Operation
from syncd.errors import TargetRejectedError, TargetRetriableError
from syncd.httpclient import ThreadClients, make_client
from syncd.model import Payload
from syncd.retry import RetryPolicy, Sleep, real_sleep
from syncd.targets.base import (
    PlannedRequests,
    TargetInfo,
    check_response,
    fatal,
    response_reason,
    send_request,
)
from syncd.targets.vambe.contract import STATUSES, validate_product
from syncd.targets.vambe.planner import encode_body, plan_vambe, split_batch


def inspect_policy(delay_s: float) -> RetryPolicy:
    """Reading ``product-blocks`` before a run: 3 tries, ``delay_s`` then twice it."""
    return RetryPolicy(
        max_attempts=3,
        initial_delay_s=delay_s,
        max_delay_s=2 * delay_s,
        growth="linear",
        jitter=False,
    )


class VambeTarget:
    """Sends products to one Vambe product block (``x-api-key``)."""

    kind = "vambe"

    def __init__(
        self,
        config: VambeTargetConfig,
        http: HttpConfig,
        *,
        api_key: str,
        transport: httpx.BaseTransport | None = None,
        inspect_retry_delay_s: float = 1.0,
        sleep: Sleep = real_sleep,
    ) -> None:
        self.name = config.name
        self._config = config
        self._inspect_policy = inspect_policy(inspect_retry_delay_s)
        self._sleep = sleep
        self._clients = ThreadClients(
            lambda: make_client(
                http,
                base_url=config.base_url,
                headers={"x-api-key": api_key},
                timeout_s=config.timeout_s,
                max_connections=1,
                transport=transport,
            )
        )

    def inspect(self, *, probe: bool = False) -> TargetInfo:
        """Read ``product-blocks``: the block must exist; its count shows drift (a read,
        so every run probes)."""
        what = "GET /api/public/product/product-blocks"
        policy = self._inspect_policy
        for attempt in range(1, policy.max_attempts + 1):
            try:
                response = send_request(
                    self._clients.get(),
                    "GET",
                    "/api/public/product/product-blocks",
                    body=None,
                    what=what,
                )
                self._check(response, what)
                break
            except TargetRejectedError as exc:  # no products in this request: the URL is off
                raise fatal(
                    f"{what}: unexpected {response_reason(response)}: check base_url "
                    f"({self._config.base_url}) points at the Vambe API",
                    exc.status,
                ) from exc
            except TargetRetriableError as exc:
                if not policy.retries_after(attempt):
                    raise fatal(f"{exc} ({attempt} tries); the target was not touched") from exc
                self._sleep(policy.delay(attempt))
        try:
            blocks: Any = response.json()
        except ValueError as exc:
            raise fatal(f"{what}: the answer is not JSON") from exc
        if not isinstance(blocks, list):
            raise fatal(f"{what}: expected a list of blocks, got {type(blocks).__name__}")
        for block in blocks:
            if isinstance(block, dict) and block.get("id") == self._config.block_id:
                count = block.get("count")
                return TargetInfo(count=count if isinstance(count, int) else None)
        names = ", ".join(
            f"{b.get('name')!r} ({b.get('id')})" for b in blocks[:5] if isinstance(b, dict)
        )
        raise fatal(
            f"Vambe product block {self._config.block_id} not found among the {len(blocks)} "
            f"blocks this key sees ({names or 'none'}): check block_id of target {self.name!r}"
        )

    def validate(self, key: str, payload: Payload, well_formed: Collection[str] = ()) -> None:
        validate_product(key, payload, well_formed)

    def plan(
        self,
        changes: Sequence[Change],
        deletes: Sequence[Change],
        *,
        full: bool,
        deletes_allowed: bool,
        full_reason: str = "full refresh",
        keep: Collection[str] = (),
        upsert_refused: str | None = None,
    ) -> PlannedRequests:
        return plan_vambe(
            changes,
            deletes,
            block_id=self._config.block_id,
            batch_size=self._config.batch_size,
            full=full,
            full_reason=full_reason,
            mirror_block=self._config.mirror_block,
            deletes_allowed=deletes_allowed,
            keep=keep,
            upsert_refused=upsert_refused,
        )

    def send(self, operation: Operation) -> None:
        what = f"POST {operation.path} ({len(operation.changes)} products)"
        response = send_request(
            self._clients.get(), "POST", operation.path, body=encode_body(operation), what=what
        )
        self._check(response, what)

    def _check(self, response: httpx.Response, what: str) -> None:
        check_response(
            response,
            what,
            STATUSES,
            env=self._config.api_key_env,
            base_url=self._config.base_url,
            block_id=self._config.block_id,
            name=self.name,
        )

    def split(self, operation: Operation) -> tuple[Operation, ...] | None:
        return split_batch(operation, self._config.batch_size)

    def close(self) -> None:
        self._clients.close()
