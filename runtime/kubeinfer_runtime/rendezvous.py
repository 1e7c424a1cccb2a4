"""Wait for the master before anything heavy: its DNS name first, then its port.

A worker pod can start before the master's DNS record exists, or after the record exists but before
the master listens (pytorch-operator #125, #333); torchrun then fails with an obscure error. Here the
wait is bounded by spec.rendezvous.timeoutSeconds and ends in one specific message, also written to
/dev/termination-log so the operator shows it as the failure reason.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)
TERMINATION_LOG = "/dev/termination-log"


class RendezvousTimeout(RuntimeError):
    """The master stayed unreachable for the whole rendezvous timeout."""


def write_termination_message(message: str) -> None:
    """Best effort: outside Kubernetes the file usually is not writable ($KUBEINFER_TERMINATION_LOG overrides)."""
    try:
        with open(os.environ.get("KUBEINFER_TERMINATION_LOG") or TERMINATION_LOG, "w") as handle:
            handle.write(message[-4000:])
    except OSError:
        pass


def _resolves(addr: str) -> bool:
    try:
        socket.getaddrinfo(addr, None)
    except (socket.gaierror, UnicodeError):
        return False
    return True


def _accepts(addr: str, port: int) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=2):
            return True
    except OSError:
        return False


def wait_for_master(addr: str, port: int, timeout_s: float, check_port: bool = True,
                    poll_s: float = 1.0) -> float:
    """Block until `addr` resolves (and accepts TCP on `port` if `check_port`); return seconds waited.

    Node rank 0 passes check_port=False: its own torchrun opens the port after this returns.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        resolved = _resolves(addr)
        if resolved and (not check_port or _accepts(addr, port)):
            waited = time.monotonic() - started
            if waited >= poll_s:
                log.info("rendezvous: %s:%d reachable after %.0f s", addr, port, waited)
            return waited
        if time.monotonic() >= deadline:
            what = "does not accept connections" if resolved else "does not resolve"
            message = (f"RendezvousTimeout: {addr}:{port} unreachable after {timeout_s:.0f} s ({what}); "
                       "check that the master pod runs and spec.rendezvous.port/timeoutSeconds")
            write_termination_message(message)
            raise RendezvousTimeout(message)
        time.sleep(poll_s)
