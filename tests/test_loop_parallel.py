"""Targets in parallel from one read: a slow target never delays another."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from syncd.reconcile import Reconciler, RunOptions
from syncd.sandbox import FakeUserflux, FakeVambe
from tests.support import (
    KEY,
    Harness,
    catalog,
    expected_userflux,
    expected_vambe,
    userflux_target,
    vambe_target,
)


class _Waiting(httpx.HTTPTransport):
    """A real transport whose first request waits (at most ``timeout_s``) for ``go``."""

    def __init__(self, go: threading.Event, timeout_s: float) -> None:
        super().__init__()
        self.go = go
        self.timeout_s = timeout_s
        self.waited_for_go: bool | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.waited_for_go is None:
            self.waited_for_go = self.go.wait(self.timeout_s)
        return super().handle_request(request)


class _Signalling(httpx.HTTPTransport):
    """A real transport that sets ``sent`` once its target's requests have been answered."""

    def __init__(self, sent: threading.Event) -> None:
        super().__init__()
        self.sent = sent

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST":
            self.sent.set()
        return response


def test_a_slow_target_does_not_delay_the_other_target_of_the_same_run(tmp_path: Path):
    with FakeUserflux(api_key=KEY) as userflux, FakeVambe(api_key=KEY) as vambe:
        block = vambe.add_block(name="catalog")
        h = Harness(tmp_path, [userflux_target(userflux.url), vambe_target(vambe.url, block)])
        records = catalog(5)
        h.write(records)
        vambe_sent = threading.Event()
        # UserFlux (first in the config) hangs until Vambe has been sent its products: run
        # one after the other, it would wait out its timeout first
        slow = _Waiting(vambe_sent, timeout_s=3)
        transports = {"uf": slow, "vb": _Signalling(vambe_sent)}

        report = Reconciler(h.config, h.store, environ=h.environ, transports=transports).sync(
            RunOptions()
        )

        assert report.ok, [t.error for t in report.targets]
        assert slow.waited_for_go is True
        assert userflux.products == expected_userflux(records)
        assert vambe.block_products(block) == expected_vambe(records)
        assert [t.target for t in report.targets] == ["uf", "vb"]
        h.close()
