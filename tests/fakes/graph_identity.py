"""The directory of the Graph fake's identity platform: tenants, users, apps, issued tokens.

Records, Entra-style errors (AADSTS codes), client authentication, OpenID discovery and the
bearer check Graph performs. The grants live in :mod:`graph_tokens`. The caller holds the lock.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .graph_values import GraphError, Json, new_guid

SPECIAL_TENANTS = frozenset({"common", "organizations", "consumers"})
GRAPH_AUDIENCE = "https://graph.microsoft.com"
RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class TokenError(Exception):
    """An OAuth error response from the token (or device code) endpoint."""

    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(f"{error}: AADSTS{code}: {description}")
        self.status, self.error, self.code, self.description = status, error, code, description

    def body(self) -> Json:
        """Entra ID's error JSON, AADSTS code first in the description."""
        trace, corr = new_guid(), new_guid()
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return {
            "error": self.error,
            "error_description": f"AADSTS{self.code}: {self.description} Trace ID: {trace} "
            f"Correlation ID: {corr} Timestamp: {stamp}",
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }


class LoginRequired(Exception):
    """The authorize endpoint has nobody signed in to its (imaginary) browser."""


@dataclass
class Tenant:
    """An Entra tenant: its GUID and verified domain."""

    id: str
    domain: str


@dataclass
class User:
    """A directory user (the owner of a mailbox)."""

    upn: str
    oid: str
    name: str
    tenant_id: str


@dataclass
class Secret:
    """A client secret of an app registration."""

    key_id: str
    value: str
    state: str = "active"  # active | expired | revoked


@dataclass
class App:
    """An app registration; ``public_client`` is "Allow public client flows"."""

    client_id: str
    tenant_id: str
    name: str
    public_client: bool = False
    multi_tenant: bool = False
    redirect_uris: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=lambda: ["Calendars.ReadWrite"])
    secrets: list[Secret] = field(default_factory=list)


@dataclass
class AccessGrant:
    """An issued access token; ``upn`` None for app-only tokens."""

    token: str
    client_id: str
    tenant_id: str
    upn: str | None
    scopes: list[str]
    expires_at: float
    revoked: bool = False


@dataclass
class RefreshGrant:
    """An issued refresh token."""

    token: str
    client_id: str
    upn: str
    scopes: list[str]
    revoked: bool = False


@dataclass
class DeviceCode:
    """A device authorization waiting for a person to type its user code."""

    device_code: str
    user_code: str
    client_id: str
    scopes: list[str]
    expires_at: float
    approved_upn: str | None = None
    denied: bool = False
    redeemed: bool = False


@dataclass
class AuthCode:
    """An authorization code with its PKCE challenge and OpenID nonce."""

    code: str
    client_id: str
    redirect_uri: str
    upn: str
    scopes: list[str]
    challenge: str | None
    method: str
    nonce: str | None
    expires_at: float
    used: bool = False


def b64url(data: bytes) -> str:
    """Unpadded URL-safe base64 (JWT parts, PKCE, client_info)."""
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def fake_jwt(claims: Json) -> str:
    """A JWT-shaped token (unsigned: the fake checks tokens by lookup, not signature)."""
    header = {"typ": "JWT", "alg": "RS256", "kid": "fake-graph-key"}
    parts = [b64url(json.dumps(p, separators=(",", ":")).encode()) for p in (header, claims)]
    return ".".join([*parts, b64url(secrets.token_bytes(32))])


def split_scopes(raw: str | None) -> list[str]:
    """The scopes of a space-separated scope parameter."""
    return [s for s in (raw or "").split() if s]


def loopback_match(uri: str, registered: str) -> bool:
    """Whether a redirect URI matches a registered one (loopback ports are free)."""
    a, b = urlsplit(uri), urlsplit(registered)
    if a.hostname in ("localhost", "127.0.0.1") and b.hostname == a.hostname:
        return (a.scheme, a.path) == (b.scheme, b.path)  # Entra ignores the loopback port
    return uri == registered


class Directory:
    """State of the identity platform: tenants, users, apps, issued tokens and codes."""

    def __init__(self) -> None:
        self.tenants: dict[str, Tenant] = {}
        self.users: dict[str, User] = {}
        self.apps: dict[str, App] = {}
        self.access: dict[str, AccessGrant] = {}
        self.refresh: dict[str, RefreshGrant] = {}
        self.device_codes: dict[str, DeviceCode] = {}
        self.auth_codes: dict[str, AuthCode] = {}
        self.access_token_ttl = 3599
        self.device_code_interval = 1  # Entra says 5; short so tests poll quickly
        self.device_code_ttl = 900
        self.browser_user: str | None = None  # who the authorize endpoint signs in

    # -- directory ----------------------------------------------------------------------------
    def add_tenant(self, domain: str) -> Tenant:
        """Register a tenant by its domain."""
        tenant = Tenant(new_guid(), domain)
        self.tenants[tenant.id] = tenant
        return tenant

    def tenant(self, path: str) -> Tenant | None:
        """A tenant by GUID or verified domain (case-insensitive)."""
        low = path.lower()
        return next((t for t in self.tenants.values() if low in (t.id, t.domain.lower())), None)

    def _tenant_or_error(self, path: str) -> Tenant | None:
        if path.lower() in SPECIAL_TENANTS:
            return None
        found = self.tenant(path)
        if found is None:
            raise TokenError(
                400,
                "invalid_request",
                90002,
                f"Tenant '{path}' not found. Check to make sure you have the correct tenant ID "
                "and are signing into the correct cloud.",
            )
        return found

    def openid_configuration(self, path: str, base: str) -> Json:
        """``/{tenant}/v2.0/.well-known/openid-configuration`` as MSAL reads it."""
        tenant = self._tenant_or_error(path)
        seg = tenant.id if tenant else path
        issuer_tid = tenant.id if tenant else "{tenantid}"
        return {
            "token_endpoint": f"{base}/{seg}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post", "private_key_jwt", "client_secret_basic",
            ],
            "jwks_uri": f"{base}/{seg}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{issuer_tid}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{base}/oidc/userinfo",
            "authorization_endpoint": f"{base}/{seg}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{seg}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{seg}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub", "iss", "aud", "exp", "iat", "nonce", "preferred_username", "name", "tid",
                "oid",
            ],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "msgraph_host": "graph.microsoft.com",
        }  # fmt: skip

    def _app(self, client_id: str | None, path: str) -> App:
        app = self.apps.get(client_id or "")
        if app is None:
            raise app_not_found(client_id, path)
        return app

    def _authenticate(self, app: App, form: dict[str, str], *, confidential: bool) -> None:
        secret = form.get("client_secret")
        if secret is None:
            if confidential or not app.public_client:
                raise TokenError(
                    401,
                    "invalid_client",
                    7000218,
                    "The request body must contain the following parameter: 'client_assertion' "
                    "or 'client_secret'.",
                )
            return
        if app.public_client and not app.secrets:
            raise TokenError(
                401,
                "invalid_client",
                700025,
                "Client is public so neither 'client_assertion' nor 'client_secret' should be "
                "presented.",
            )
        match = next((s for s in app.secrets if secrets.compare_digest(s.value, secret)), None)
        if match is None or match.state == "revoked":
            raise TokenError(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                f"the client secret value, not the client secret ID, for a secret added to app "
                f"'{app.client_id}'.",
            )
        if match.state == "expired":
            raise TokenError(
                401,
                "invalid_client",
                7000222,
                f"The provided client secret keys for app '{app.client_id}' are expired. Visit "
                "the Azure portal to create new keys for your app.",
            )

    # -- Graph side ---------------------------------------------------------------------------
    def check_access(self, header: str | None) -> AccessGrant:
        """Validate ``Authorization: Bearer ...``; 401 InvalidAuthenticationToken otherwise."""
        token = header[7:].strip() if header and header[:7].lower() == "bearer " else ""
        if not token:
            raise unauthorized("Access token is empty.")
        grant = self.access.get(token)
        if grant is None:
            raise unauthorized(
                "IDX14100: JWT is not well formed or was not issued by this authority."
            )
        if grant.revoked:
            raise unauthorized(
                "Continuous access evaluation resulted in challenge with result: "
                "InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp"
            )
        if time.time() >= grant.expires_at:
            raise unauthorized("Lifetime validation failed, the token is expired.")
        return grant


def app_not_found(client_id: str | None, path: str) -> TokenError:
    """AADSTS700016: no such app registration in this directory."""
    return TokenError(
        400,
        "unauthorized_client",
        700016,
        f"Application with identifier '{client_id}' was not found in the directory '{path}'. "
        "This can happen if the application has not been installed by the administrator of the "
        "tenant or consented to by any user in the tenant.",
    )


def unauthorized(message: str) -> GraphError:
    """Graph's 401, with the WWW-Authenticate challenge it sends."""
    challenge = (
        'Bearer realm="", '
        'authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
        'client_id="00000003-0000-0000-c000-000000000000"'
    )
    return GraphError(401, "InvalidAuthenticationToken", message, {"WWW-Authenticate": challenge})


def parse_form(raw: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body, last value wins."""
    return {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}


def auth_response(redirect_url: str) -> dict[str, Any]:
    """The query of a redirect as MSAL's ``acquire_token_by_auth_code_flow`` wants it."""
    return {k: v[-1] for k, v in parse_qs(urlsplit(redirect_url).query).items()}
