"""Fake UserFlux and Vambe servers on loopback, for tests and ``syncd sandbox``.

Owns the public surface of the sandbox: the two fakes, faults, recorded requests,
and ``serve``, which runs one fake in the foreground until interrupted.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

from syncd.sandbox.server import FakeServer, Fault, RecordedRequest, require_loopback
from syncd.sandbox.userflux import FakeUserflux
from syncd.sandbox.vambe import FakeVambe

__all__ = ["FakeServer", "FakeUserflux", "FakeVambe", "Fault", "RecordedRequest", "serve"]

KINDS = ("userflux", "vambe")


def _announce(fake: FakeServer) -> None:
    print(f"syncd sandbox: fake {fake.kind} listening on {fake.url}", flush=True)
    if isinstance(fake, FakeVambe):
        for block_id in fake.blocks:
            print(f"syncd sandbox: product block {block_id}", flush=True)


def serve(
    kind: str,
    host: str,
    port: int,
    api_key: str,
    block_ids: list[str] | None = None,
    *,
    on_ready: Callable[[FakeServer], None] = _announce,
    stop_event: threading.Event | None = None,
) -> None:
    """Run one fake (``userflux`` or ``vambe``) in the foreground until SIGINT/SIGTERM.

    For Vambe, ``block_ids`` are created empty (one random block when none).
    ``on_ready`` is called once listening (default: print the URL and blocks);
    setting ``stop_event`` stops it too.
    """
    require_loopback(host)
    fake: FakeServer
    if kind == "userflux":
        fake = FakeUserflux(api_key, host=host, port=port)
    elif kind == "vambe":
        vambe = FakeVambe(api_key, host=host, port=port)
        wanted: list[str | None] = list(block_ids) if block_ids else [None]
        for block_id in wanted:
            vambe.add_block(block_id, name=block_id or "sandbox")
        fake = vambe
    else:
        raise ValueError(f"unknown sandbox kind {kind!r}: expected one of {', '.join(KINDS)}")

    stop = stop_event or threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_signal) if in_main_thread else None
    try:
        with fake:
            on_ready(fake)
            while not stop.wait(0.2):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
