"""Composition root for calendar backends: the one place that picks an adapter by name.

A new backend joins here: a branch in :func:`open_backend`, its name in :data:`BACKENDS`,
and, when its server can push, its notification reader in :func:`push_readers`.
"""

from __future__ import annotations

from typing import Any

from syncd.config import Config, read_secret
from syncd.errors import ConfigError
from syncd.ports import BackendFactory, CalendarBackend, NotificationReader

BACKENDS = ("caldav", "google", "microsoft")


def open_backend(backend: str, settings: dict[str, Any], cfg: Config) -> CalendarBackend:
    """A connected backend for one calendar row's ``backend`` and ``settings``."""
    timeout = cfg.sync.timeout.total_seconds()
    if backend == "caldav":
        from adapters.caldav.backend import CalDAVBackend

        password = read_secret(
            settings.get("password_file", ""),
            settings.get("password_credential", ""),
            f"calendar {settings.get('url')}: password",
        )
        return CalDAVBackend(
            settings["url"], settings.get("username", ""), password, timeout=timeout
        )
    if backend == "google":
        from adapters.google.backend import GoogleBackend
        from syncd.app.google_setup import google_options

        return GoogleBackend.from_settings(settings, google_options(cfg))
    if backend == "microsoft":
        from syncd.app.microsoft_setup import open_graph_backend

        return open_graph_backend(settings, cfg)
    raise ConfigError(f"unknown calendar backend {backend!r} (use one of {', '.join(BACKENDS)})")


def backend_factory(cfg: Config) -> BackendFactory:
    """:func:`open_backend` bound to ``cfg``: what the core is handed."""
    return lambda backend, settings: open_backend(backend, dict(settings), cfg)


def push_readers() -> dict[str, NotificationReader]:
    """The notification reader of every backend kind whose server can push."""
    from adapters.google.push import GoogleNotificationReader
    from adapters.microsoft.push import GraphNotificationReader

    return {"google": GoogleNotificationReader(), "microsoft": GraphNotificationReader()}
