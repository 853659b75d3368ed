"""Composition root for calendar backends: the one place that picks an adapter by name."""

from __future__ import annotations

from typing import Any

from syncd.config import Config, read_secret
from syncd.errors import ConfigError
from syncd.ports import CalendarBackend

BACKENDS = ("caldav", "google")


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

        return GoogleBackend.from_settings(settings, cfg, timeout=timeout)
    raise ConfigError(f"unknown calendar backend {backend!r} (use one of {', '.join(BACKENDS)})")
