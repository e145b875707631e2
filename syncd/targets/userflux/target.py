"""UserFlux's Products API: sends the planned requests (``Authorization: Bearer``)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import httpx

from syncd.config import HttpConfig, UserfluxTargetConfig
from syncd.diff import Change, Operation
from syncd.errors import TargetRejectedError, TargetRetriableError
from syncd.httpclient import ThreadClients, make_client
from syncd.model import Payload
from syncd.targets.base import (
    PlannedRequests,
    StatusTable,
    TargetInfo,
    check_response,
    fatal,
    response_reason,
    send_request,
)
from syncd.targets.userflux.contract import (
    DELETE_STATUSES,
    SAFE_SEGMENT,
    STATUSES,
    unsafe_segment,
    validate_payload,
)
from syncd.targets.userflux.planner import (
    DELETE,
    FULL,
    UPSERT,
    encode_body,
    plan_userflux,
    product_path,
    request_body,
)

_plainly_safe = SAFE_SEGMENT.fullmatch
"""Whether an id is plainly a safe URL segment (a match) or needs ``unsafe_segment``."""


class UserfluxTarget:
    """Sends products to UserFlux (``Authorization: Bearer``)."""

    kind = "userflux"

    def __init__(
        self,
        config: UserfluxTargetConfig,
        http: HttpConfig,
        *,
        api_key: str,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = config.name
        self._config = config
        self._mapped = config.mapping.callable is None
        """Payloads are the mapper's own (no hook): see ``encode_body``."""
        self._safe_type_id = config.type_id if unsafe_segment(config.type_id) is None else None
        """The configured typeId, when it is a safe URL segment (judged once): a payload
        that carries it needs no second look at it (``validate``)."""
        self._urls: dict[str, httpx.URL] = {}
        """Upsert paths (one: ``/product``) merged with ``base_url``."""
        self._clients = ThreadClients(
            lambda: make_client(
                http,
                base_url=config.base_url,
                headers={"Authorization": f"Bearer {api_key}"},
                timeout_s=config.timeout_s,
                max_connections=1,
                transport=transport,
            )
        )

    def inspect(self, *, probe: bool = False) -> TargetInfo:
        """UserFlux has no read endpoint: nothing to read before sending.

        With ``probe``, one request that writes nothing (``GET /product``, answered 405
        once past authentication) tells whether the API can be reached and takes the key:
        401 and 403 are fatal as for a write, and so are a connection that fails and a
        5xx (for a plan, the target's state is then unknown). Any other answer passes.
        """
        if not probe:
            return TargetInfo()
        what = "GET /product (a probe that writes nothing)"
        try:
            response = send_request(self._clients.get(), "GET", "/product", body=None, what=what)
        except TargetRetriableError as exc:
            raise fatal(f"UserFlux can't be reached at {self._config.base_url}: {exc}") from exc
        if response.status_code in (401, 403):
            self._check(response, what)
        if response.status_code >= 500:
            raise fatal(f"{what}: UserFlux answered {response_reason(response)}")
        return TargetInfo()

    def validate(self, key: str, payload: Payload, well_formed: Collection[str] = ()) -> None:
        """``validate_payload``; a mapped payload (``properties`` and ``aiPropertyOverrides``
        in ``well_formed``: objects the mapper built) with the configured typeId, found safe
        once, is left only its id to check: one C match for nearly every id. Whatever it
        doesn't pass has every rule checked, so the same payloads are refused alike."""
        if (
            "properties" in well_formed
            and "aiPropertyOverrides" in well_formed
            and payload["typeId"] == self._safe_type_id
            and _plainly_safe(payload["id"]) is not None
        ):
            return
        validate_payload(key, payload)

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
        return plan_userflux(
            changes, deletes, full=full, full_reason=full_reason, deletes_allowed=deletes_allowed
        )

    def send(self, operation: Operation) -> None:
        key = operation.changes[0].key
        if operation.endpoint == UPSERT:
            body = encode_body(operation, mapped=self._mapped)
            what = f"POST /product (id {key!r})"
            client = self._clients.get()
            url = self._urls.get(operation.path)
            if url is None:  # the path merged with base_url once, not on every request
                url = self._urls[operation.path] = client.build_request("POST", operation.path).url
            response = send_request(client, "POST", url, body=body, what=what)
            self._check(response, what)
            previous = operation.changes[0].previous
            if operation.mode == FULL and previous is not None:  # incremental keeps the type
                old_type = previous.payload.get("typeId")
                if old_type is not None and old_type != request_body(operation)["typeId"]:
                    self._delete_old_type(key, str(old_type))
        elif operation.endpoint == DELETE:
            what = f"DELETE {operation.path}"
            previous = operation.changes[0].previous
            stored = previous.payload if previous is not None else {}
            self._refuse_unsafe(
                key, str(stored.get("typeId", "")), str(stored.get("id", key)), what
            )
            response = send_request(
                self._clients.get(), "DELETE", operation.path, body=None, what=what
            )
            self._check(response, what, DELETE_STATUSES)  # 404: already gone
        else:
            raise ValueError(f"unknown UserFlux operation {operation.endpoint!r}")

    @staticmethod
    def _refuse_unsafe(key: str, type_id: str, product_id: str, what: str) -> None:
        """Refuse, without sending, a URL built from ids that aren't safe path segments
        (acknowledged before syncd checked them): the request would hit another resource."""
        for name, value in (("typeId", type_id), ("id", product_id)):
            problem = unsafe_segment(value)
            if problem is not None:
                raise TargetRejectedError(
                    f"{what} not sent for product {key!r}: {name} {value!r} {problem}; "
                    "remove the product in UserFlux's UI if it must go"
                )

    def _delete_old_type(self, key: str, old_type: str) -> None:
        path = product_path(old_type, key)
        what = f"DELETE {path} (typeId changed)"
        self._refuse_unsafe(key, old_type, key, what)
        response = send_request(self._clients.get(), "DELETE", path, body=None, what=what)
        self._check(response, what, DELETE_STATUSES)

    def _check(self, response: httpx.Response, what: str, table: StatusTable = STATUSES) -> None:
        check_response(
            response, what, table, env=self._config.api_key_env, base_url=self._config.base_url
        )

    def split(self, operation: Operation) -> tuple[Operation, ...] | None:
        return None  # one product per request already

    def close(self) -> None:
        self._clients.close()
