"""Access tokens for Microsoft Graph through msal: app-only (client credentials) or delegated.

- **App-only** (an organization): a confidential client with a client secret, on a tenant id
  or domain (Entra refuses client credentials on ``common``/``organizations``/``consumers``).
- **Delegated** (one person, Outlook.com or Microsoft 365): a public client and msal's token
  cache, serialized by the core (``syncd auth microsoft``) and handed in as text; when msal
  refreshes it, the new cache text goes to ``on_cache_change`` — adapters never persist.

msal keeps app tokens in memory until they expire: after a Graph 401 the backend calls
:meth:`TokenSource.drop` before asking again, or the process would keep sending a dead
token. With an overridden authority msal never does instance discovery against the real
cloud (``instance_discovery=False``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import msal
import requests

from syncd.errors import ConfigError
from syncd.ports import AuthRevoked, Transient

GRAPH_DEFAULT_SCOPE = "https://graph.microsoft.com/.default"
DELEGATED_SCOPES = ("Calendars.ReadWrite",)
GENERIC_TENANTS = frozenset({"common", "organizations", "consumers"})
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down"})
SIGN_IN_AGAIN = "run 'syncd auth microsoft {who}' again"
APP_HINT = "check [microsoft] client_id, tenant and the client secret (a new secret may be due)"


class TokenSource(Protocol):
    """Gives a bearer token for Graph; forgets its cached ones on :meth:`drop`."""

    def token(self) -> str:
        """A valid access token; AuthRevoked when the credentials are refused."""
        ...

    def drop(self) -> None:
        """Forget cached access tokens (Graph answered 401)."""
        ...


def authority_url(endpoint: str, tenant: str) -> str:
    """msal's authority: ``<authority_endpoint>/<tenant>``."""
    return f"{endpoint.rstrip('/')}/{tenant.strip('/') or 'common'}"


def _fail(result: Mapping[str, Any], what: str, hint: str) -> Exception:
    """The ports' error for an msal error result; ``hint`` says what to do about it."""
    error = str(result.get("error") or "")
    detail = str(result.get("error_description") or error).split("\r\n")[0]
    if error in TRANSIENT_ERRORS:
        return Transient(f"Microsoft sign-in ({what}) failed for now: {detail}")
    if "AADSTS50059" in detail or "AADSTS90002" in detail:
        return ConfigError(
            f"Microsoft sign-in ({what}): {detail} — set [microsoft] tenant to your tenant id "
            "or domain (app-only access cannot use 'common')."
        )
    return AuthRevoked(f"Microsoft refused syncd's credentials ({what}): {detail}; {hint}")


def _call(what: str, fn: Callable[[], Any], refused: str = "") -> Any:
    """Run an msal call; network failures are Transient.

    msal raises ValueError when discovery got a 4xx (an unknown tenant): with ``refused``
    given, that is this ConfigError sentence.
    """
    try:
        return fn()
    except (requests.RequestException, OSError) as err:
        raise Transient(f"Microsoft sign-in ({what}): {type(err).__name__}: {err}") from err
    except ValueError as err:  # msal refuses an authority it cannot read
        if refused:
            raise ConfigError(refused) from err
        raise Transient(f"Microsoft sign-in ({what}): {err}") from err


def _unknown_authority(authority: str) -> str:
    """The sentence for an authority whose discovery was refused."""
    return (
        f"The Microsoft identity platform does not know the authority {authority}: set "
        "[microsoft] tenant to your tenant id or domain (and check authority_endpoint)."
    )


class AppTokens:
    """Client-credentials tokens for one app registration (app-only access)."""

    def __init__(
        self, client_id: str, tenant: str, secret: str, authority_endpoint: str, timeout: float
    ) -> None:
        if not client_id:
            raise ConfigError("[microsoft] client_id is not set (the app registration's id).")
        if not secret:
            raise ConfigError(
                "App-only Microsoft access needs [microsoft] client_secret_file "
                "(or client_secret_credential)."
            )
        if tenant.strip().lower() in GENERIC_TENANTS or not tenant.strip():
            raise ConfigError(
                f"App-only Microsoft access needs a tenant id or domain in [microsoft] tenant, "
                f"not {tenant!r}: Entra refuses client credentials on 'common'."
            )
        self._authority = authority_url(authority_endpoint, tenant)
        self._client_id, self._secret, self._timeout = client_id, secret, timeout
        self._app: Any = None

    def _application(self) -> Any:
        if self._app is None:
            self._app = _call(
                "discovery",
                lambda: msal.ConfidentialClientApplication(
                    self._client_id,
                    client_credential=self._secret,
                    authority=self._authority,
                    instance_discovery=False,
                    timeout=self._timeout,
                ),
                _unknown_authority(self._authority),
            )
        return self._app

    def token(self) -> str:
        """acquire_token_for_client (msal answers from its cache while the token lives)."""
        app = self._application()
        result = _call(
            "client credentials", lambda: app.acquire_token_for_client([GRAPH_DEFAULT_SCOPE])
        )
        if isinstance(result, Mapping) and result.get("access_token"):
            return str(result["access_token"])
        raise _fail(result or {}, "client credentials", APP_HINT)

    def drop(self) -> None:
        """Remove msal's cached app tokens."""
        if self._app is None:
            return
        cache = self._app.token_cache
        for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
            cache.remove_at(item)


class DelegatedTokens:
    """A signed-in person's tokens, from a serialized msal token cache."""

    def __init__(
        self,
        client_id: str,
        tenant: str,
        authority_endpoint: str,
        cache_text: str,
        username: str,
        timeout: float,
        on_cache_change: Callable[[str], None] | None = None,
    ) -> None:
        if not client_id:
            raise ConfigError("[microsoft] client_id is not set (the app registration's id).")
        self._cache = msal.SerializableTokenCache()
        if cache_text:
            self._cache.deserialize(cache_text)
        self._authority = authority_url(authority_endpoint, tenant)
        self._client_id, self._timeout = client_id, timeout
        self._username = username
        self._on_change = on_cache_change
        self._app: Any = None

    def application(self) -> Any:
        """The msal public client (also used by ``syncd auth microsoft`` to sign in)."""
        if self._app is None:
            self._app = _call(
                "discovery",
                lambda: msal.PublicClientApplication(
                    self._client_id,
                    authority=self._authority,
                    token_cache=self._cache,
                    instance_discovery=False,
                    timeout=self._timeout,
                ),
                _unknown_authority(self._authority),
            )
        return self._app

    def serialized(self) -> str:
        """The token cache as text (what the core stores, mode 0600)."""
        return str(self._cache.serialize())

    def token(self) -> str:
        """acquire_token_silent: a cached token, or one refreshed with the refresh token."""
        app = self.application()
        who = self._username or "EMAIL"
        accounts = _call("accounts", lambda: app.get_accounts(username=self._username or None))
        if not accounts:
            raise AuthRevoked(
                f"No Microsoft sign-in stored for {who}; " + SIGN_IN_AGAIN.format(who=who)
            )
        result = _call(
            "refresh",
            lambda: app.acquire_token_silent_with_error(
                list(DELEGATED_SCOPES), account=accounts[0]
            ),
        )
        if self._cache.has_state_changed and self._on_change is not None:
            self._on_change(self.serialized())
            self._cache.has_state_changed = False
        if isinstance(result, Mapping) and result.get("access_token"):
            return str(result["access_token"])
        if result is None:
            raise AuthRevoked(
                f"The Microsoft sign-in of {who} has no usable token; "
                + SIGN_IN_AGAIN.format(who=who)
            )
        raise _fail(result, "refresh token", SIGN_IN_AGAIN.format(who=who))

    def drop(self) -> None:
        """Remove cached access tokens (the refresh token stays)."""
        for item in list(self._cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
            self._cache.remove_at(item)
