"""The TOML configuration, validated; every error names the file and the key.

Search order: ``--config PATH``, ``$SYNCD_CONFIG``, ``./syncd.toml``,
``/etc/syncd/syncd.toml``; with none of them the embedded defaults apply. Secrets are never
inline: ``*_file`` keys name a file, a bare name in ``*_credential`` is read from
``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``).
"""

from __future__ import annotations

import os
import secrets
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from syncd.domain.durations import parse_duration
from syncd.domain.model import Policy
from syncd.errors import ConfigError

EXAMPLE = Path(__file__).parent / "example.toml"
SEARCH = (Path("syncd.toml"), Path("/etc/syncd/syncd.toml"))


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError("is not a duration (use 90s, 2m, 24h, 7d)")
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError("is not a duration (use 90s, 2m, 24h, 7d)") from None


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def read_secret(path: str = "", credential: str = "", what: str = "secret") -> str:
    """A secret from a file or a systemd credential; "" when neither is set."""
    if credential:
        base = os.environ.get("CREDENTIALS_DIRECTORY")
        if not base and "/" not in credential:
            raise ConfigError(
                f"{what}: credential {credential!r} needs $CREDENTIALS_DIRECTORY "
                "(systemd LoadCredential=)"
            )
        path = credential if "/" in credential else os.path.join(base or "", credential)
    if not path:
        return ""
    try:
        return Path(path).read_text().strip()
    except OSError as err:
        raise ConfigError(f"{what}: cannot read {path}: {err.strerror}") from err


class DatabaseConfig(_Section):
    url: str = "sqlite:////var/lib/syncd/syncd.db"


class WebConfig(_Section):
    listen: str = "127.0.0.1:8080"
    public_url: str = "http://127.0.0.1:8080"
    api_token_file: str = ""
    api_token_credential: str = ""
    admin_token_file: str = ""
    admin_token_credential: str = ""
    link_secret_file: str = ""
    link_secret_credential: str = ""
    rate_limit_per_minute: int = Field(default=30, ge=1)

    def api_token(self) -> str:
        """The booking platform's bearer token (acts as the customer or ``api``), or ""."""
        return read_secret(self.api_token_file, self.api_token_credential, "[web] api_token")

    def admin_token(self) -> str:
        """The bearer token that may act as the admin (bypasses cut-offs), or ""."""
        return read_secret(self.admin_token_file, self.admin_token_credential, "[web] admin_token")

    def link_secret(self, state_dir: str) -> bytes:
        """The secret "choose a new time" links are derived under.

        From ``link_secret_file`` / ``link_secret_credential``; with neither, the file
        ``<state_dir>/link-secret``, created on first use (mode 0600, 256 random bits).
        Every process of one installation must see the same secret.
        """
        what = "[web] link_secret"
        value = read_secret(self.link_secret_file, self.link_secret_credential, what)
        if not value:
            value = _state_secret(Path(state_dir) / "link-secret", what)
        if len(value) < 32:
            raise ConfigError(f"{what}: the secret is too short (at least 32 characters)")
        return value.encode()


def _state_secret(path: Path, what: str) -> str:
    """The secret kept in ``path``, created atomically (mode 0600) when it is missing."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    except OSError as err:
        raise ConfigError(f"{what}: cannot read {path}: {err.strerror}") from err
    if not path.parent.is_dir():
        raise ConfigError(
            f"{what}: neither link_secret_file nor link_secret_credential is set and the state "
            f"folder {path.parent} does not exist (create it or set [sync] state_dir)"
        )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(tmp, path)  # fails if another process made it first: use theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return path.read_text().strip()
    except OSError as err:
        raise ConfigError(f"{what}: cannot create {path}: {err.strerror}") from err


class SmtpConfig(_Section):
    host: str = "localhost"
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    username: str = ""
    password_file: str = ""
    password_credential: str = ""
    from_: str = Field(default="Bookings <bookings@example.com>", alias="from")
    timeout: Duration = timedelta(seconds=30)
    max_attempts: int = Field(default=8, ge=1)
    backoff: Duration = timedelta(seconds=30)
    templates: str = ""

    def password(self) -> str:
        """The SMTP password, or "" for no login."""
        return read_secret(self.password_file, self.password_credential, "[smtp] password")


class SyncConfig(_Section):
    poll_interval: Duration = timedelta(seconds=60)
    settle: Duration = timedelta(minutes=2)
    workers: int = Field(default=16, ge=1, le=64)
    timeout: Duration = timedelta(seconds=20)
    lease: Duration = timedelta(minutes=5)
    reconcile_interval: Duration = timedelta(hours=24)
    state_dir: str = "/var/lib/syncd"


class PolicyConfig(_Section):
    reschedule_cutoff: Duration = timedelta(hours=24)
    cancel_cutoff: Duration = timedelta(hours=24)
    min_notice: Duration = timedelta(hours=2)
    choose_link_ttl: Duration = timedelta(days=7)
    default_cancel_reason: str = "Your host had to cancel this session."

    def to_policy(self) -> Policy:
        """The domain policy these defaults give a new admin."""
        return Policy(
            self.reschedule_cutoff,
            self.cancel_cutoff,
            self.min_notice,
            self.choose_link_ttl,
            self.default_cancel_reason,
        )


class GesturesConfig(_Section):
    cancel_keywords: list[str] = Field(default_factory=lambda: ["cancel:"], min_length=1)
    reschedule_keywords: list[str] = Field(
        default_factory=lambda: ["reschedule:", "new time:"], min_length=1
    )
    summary_template: str = "{customer_name} — 1:1 session"


class BreakerConfig(_Section):
    min_sessions: int = Field(default=3, ge=0)
    fraction: float = Field(default=0.3, ge=0.0, le=1.0)
    on_empty: bool = True


class GoogleConfig(_Section):
    api_endpoint: str = "https://www.googleapis.com/calendar/v3/"
    token_uri: str = "https://oauth2.googleapis.com/token"
    client_secrets_file: str = ""


class MicrosoftConfig(_Section):
    """``[microsoft]``: the Entra ID app registration and the endpoints (tests override them)."""

    client_id: str = ""
    tenant: str = "common"
    client_secret_file: str = ""
    client_secret_credential: str = ""
    authority_endpoint: str = "https://login.microsoftonline.com/"
    graph_endpoint: str = "https://graph.microsoft.com/v1.0/"


class Config(BaseModel):
    """The whole configuration; ``source`` is the file it came from (or "defaults")."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    database: DatabaseConfig = DatabaseConfig()
    web: WebConfig = WebConfig()
    smtp: SmtpConfig = SmtpConfig()
    sync: SyncConfig = SyncConfig()
    policy: PolicyConfig = PolicyConfig()
    gestures: GesturesConfig = GesturesConfig()
    breaker: BreakerConfig = BreakerConfig()
    google: GoogleConfig = GoogleConfig()
    microsoft: MicrosoftConfig = MicrosoftConfig()
    source: str = "defaults"


def _describe(err: dict[str, Any], raw: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if len(loc) == 1:
        if err["type"] == "extra_forbidden":
            return f"[{loc[0]}] is not a known section"
        return f"[{loc[0]}] {msg}"
    section, key = loc[0], ".".join(loc[1:])
    if err["type"] == "extra_forbidden":
        model = Config.model_fields[section].annotation
        fields = (
            model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else {}
        )
        known = ", ".join(sorted(f.alias or n for n, f in fields.items()))
        return f"[{section}] {key} is not a known key (known: {known})"
    value = raw.get(section, {}).get(loc[1]) if isinstance(raw.get(section), dict) else None
    shown = f'"{value}"' if isinstance(value, str) else repr(value)
    if value is None:
        return f"[{section}] {key} {msg}"
    if not msg.startswith("is "):
        msg = f"is not accepted: {msg[0].lower()}{msg[1:]}"
    return f"[{section}] {key} = {shown} {msg}"


def parse(text: str, source: str) -> Config:
    """Validate TOML text; ConfigError names ``source``, the section and the key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from err
    try:
        return Config.model_validate({**raw, "source": source})
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigError(f"{source}: {_describe(dict(first), raw)}") from err


def load(path: str | None = None) -> Config:
    """Find and load the configuration (see the module docstring for the search order)."""
    candidates = [Path(path)] if path else []
    if not path and os.environ.get("SYNCD_CONFIG"):
        candidates = [Path(os.environ["SYNCD_CONFIG"])]
    if candidates:
        target = candidates[0]
        if not target.is_file():
            raise ConfigError(f"{target}: no such configuration file (create one: syncd init)")
    else:
        target = next((p for p in SEARCH if p.is_file()), Path())
        if target == Path():
            return Config()
    try:
        text = target.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{target}: cannot read: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{target}: not UTF-8 text (byte {err.start} cannot be read); save it as UTF-8"
        ) from err
    return parse(text, str(target))


def write_example(path: Path) -> Path:
    """Write the commented example configuration; refuses to overwrite."""
    if path.exists():
        raise ConfigError(f"{path}: already exists; not overwriting it")
    path.write_text(EXAMPLE.read_text())
    return path
