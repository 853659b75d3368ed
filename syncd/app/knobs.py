"""The daemon's knobs from the configuration: engine settings, lease, budget, worker id."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from syncd.app.leases import HEARTBEAT_LEASE
from syncd.config import Config
from syncd.engine.desired import GestureRules
from syncd.engine.planner import BreakerRules
from syncd.engine.runner import EngineSettings


def engine_settings(cfg: Config) -> EngineSettings:
    """The engine's knobs from the configuration."""
    g = cfg.gestures
    return EngineSettings(
        settle=cfg.sync.settle,
        rules=GestureRules(
            tuple(g.cancel_keywords), tuple(g.reschedule_keywords), g.summary_template
        ),
        breaker=BreakerRules(cfg.breaker.min_sessions, cfg.breaker.fraction, cfg.breaker.on_empty),
        reconcile=cfg.sync.reconcile_interval,
    )


def claim_lease(cfg: Config) -> timedelta:
    """The lease a claim takes: short, renewed by the heartbeat, never above ``[sync] lease``."""
    return min(cfg.sync.lease, HEARTBEAT_LEASE)


def cycle_budget(cfg: Config) -> float:
    """Seconds one calendar's cycle may take: half the lease, and half the watchdog."""
    budget = cfg.sync.lease.total_seconds() / 2
    watchdog = os.environ.get("WATCHDOG_USEC", "")
    if watchdog.isdigit() and int(watchdog) > 0:
        budget = min(budget, int(watchdog) / 1e6 / 2)
    return budget


def worker_id() -> str:
    """host:pid, unique enough among workers sharing a database."""
    return f"{socket.gethostname()}:{os.getpid()}"
