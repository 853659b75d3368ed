"""The Microsoft identity platform's v2.0 endpoints in the Graph fake: token and device code.

The grants MSAL uses: client_credentials, refresh_token, authorization_code (with PKCE and
the OpenID nonce) and the device code flow, with the errors Entra ID answers. The caller
holds the fake's lock.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import string
import time
from urllib.parse import urlencode

from .graph_identity import (
    DEVICE_CODE_GRANT,
    GRAPH_AUDIENCE,
    RESERVED_SCOPES,
    SPECIAL_TENANTS,
    AccessGrant,
    App,
    AuthCode,
    DeviceCode,
    Directory,
    LoginRequired,
    RefreshGrant,
    Tenant,
    TokenError,
    User,
    app_not_found,
    b64url,
    fake_jwt,
    loopback_match,
    split_scopes,
)
from .graph_values import Json, new_guid

REDEEMED = "OAuth2 Authorization code was already redeemed, please retry with a new valid code."


class Identity(Directory):
    """The login endpoints on top of the directory."""

    # -- endpoints ----------------------------------------------------------------------------
    def token(self, path: str, form: dict[str, str], base: str) -> Json:
        """``POST /{tenant}/oauth2/v2.0/token``."""
        tenant = self._tenant_or_error(path)
        grant = form.get("grant_type", "")
        app = self._app(form.get("client_id"), path)
        if grant == "client_credentials":
            if tenant is None:
                raise TokenError(
                    400,
                    "invalid_request",
                    50059,
                    "No tenant-identifying information found in either the request or implied "
                    "by any provided credentials.",
                )
            self._authenticate(app, form, confidential=True)
            if tenant.id != app.tenant_id and not app.multi_tenant:
                raise app_not_found(app.client_id, path)
            scopes = split_scopes(form.get("scope"))
            if len(scopes) != 1 or not scopes[0].endswith("/.default"):
                raise TokenError(
                    400,
                    "invalid_scope",
                    1002012,
                    f"The provided value for scope {form.get('scope')} is not valid. Client "
                    "credential flows must have a scope value with /.default suffixed to the "
                    "resource identifier (application ID URI).",
                )
            return self._issue(app, tenant.id, None, scopes, form, base)
        if grant == "refresh_token":
            self._authenticate(app, form, confidential=False)
            rt = self.refresh.get(form.get("refresh_token", ""))
            if rt is None:
                raise TokenError(
                    400,
                    "invalid_grant",
                    9002313,
                    "Invalid request. Request is malformed or invalid.",
                )
            if rt.revoked:
                raise TokenError(
                    400,
                    "invalid_grant",
                    50173,
                    "The provided grant has expired due to it being revoked, a fresh auth token "
                    "is needed. The user might have changed or reset their password.",
                )
            if rt.client_id != app.client_id:
                raise TokenError(
                    400, "invalid_grant", 70000, "Provided grant is invalid or malformed."
                )
            return self._delegated(
                app, rt.upn, split_scopes(form.get("scope")) or rt.scopes, form, base, tenant
            )
        if grant == DEVICE_CODE_GRANT:
            self._authenticate(app, form, confidential=False)
            dc = self.device_codes.get(form.get("device_code", ""))
            if dc is None or dc.client_id != app.client_id or dc.redeemed:
                raise TokenError(
                    400,
                    "invalid_grant",
                    54005,
                    REDEEMED,
                )
            if time.time() > dc.expires_at:
                raise TokenError(400, "expired_token", 70019, "Verification code expired.")
            if dc.denied:
                raise TokenError(
                    400, "authorization_declined", 70000, "The user declined the sign-in request."
                )
            if dc.approved_upn is None:
                raise TokenError(
                    400,
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                )
            dc.redeemed = True
            return self._delegated(app, dc.approved_upn, dc.scopes, form, base, tenant)
        if grant == "authorization_code":
            self._authenticate(app, form, confidential=False)
            code = self.auth_codes.get(form.get("code", ""))
            if (
                code is None
                or code.used
                or code.client_id != app.client_id
                or time.time() > code.expires_at
            ):
                raise TokenError(
                    400,
                    "invalid_grant",
                    54005,
                    REDEEMED,
                )
            if form.get("redirect_uri") != code.redirect_uri:
                raise TokenError(
                    400,
                    "invalid_grant",
                    50148,
                    "The redirect_uri doesn't match the one used in the authorization request.",
                )
            if code.challenge is not None:
                verifier = form.get("code_verifier", "")
                digest = (
                    b64url(hashlib.sha256(verifier.encode()).digest())
                    if code.method == "S256"
                    else verifier
                )
                if not verifier or digest != code.challenge:
                    raise TokenError(
                        400,
                        "invalid_grant",
                        501481,
                        "The Code_Verifier does not match the code_challenge supplied in the "
                        "authorization request.",
                    )
            code.used = True
            return self._delegated(app, code.upn, code.scopes, form, base, tenant, nonce=code.nonce)
        raise TokenError(
            400,
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{grant}'.",
        )

    def device_code(self, path: str, form: dict[str, str], base: str) -> Json:
        """``POST /{tenant}/oauth2/v2.0/devicecode``: a user code for a person to type."""
        self._tenant_or_error(path)
        app = self._app(form.get("client_id"), path)
        if path.lower() in SPECIAL_TENANTS and not app.multi_tenant:
            raise TokenError(
                400,
                "invalid_request",
                50059,
                "No tenant-identifying information found in either the request or implied by "
                "any provided credentials.",
            )
        alphabet = string.ascii_uppercase + string.digits
        user_code = "".join(secrets.choice(alphabet) for _ in range(9))
        dc = DeviceCode(
            secrets.token_urlsafe(48),
            user_code,
            app.client_id,
            split_scopes(form.get("scope")),
            time.time() + self.device_code_ttl,
        )
        self.device_codes[dc.device_code] = dc
        uri = f"{base}/devicelogin"
        return {
            "user_code": user_code,
            "device_code": dc.device_code,
            "verification_uri": uri,
            "expires_in": self.device_code_ttl,
            "interval": self.device_code_interval,
            "message": f"To sign in, use a web browser to open the page {uri} and enter the code "
            f"{user_code} to authenticate.",
        }

    def authorize(self, path: str, query: dict[str, str], upn: str | None = None) -> str:
        """``GET /{tenant}/oauth2/v2.0/authorize``: the URL the browser is redirected to."""
        self._tenant_or_error(path)
        app = self._app(query.get("client_id"), path)
        redirect = query.get("redirect_uri", "")
        if app.redirect_uris and not any(loopback_match(redirect, r) for r in app.redirect_uris):
            raise TokenError(
                400,
                "invalid_request",
                50011,
                f"The redirect URI '{redirect}' specified in the request does not match the "
                f"redirect URIs configured for the application '{app.client_id}'.",
            )
        self._single_tenant_on_common(app, path)
        who = upn or query.get("login_hint") or self.browser_user
        if who is None or who.lower() not in self.users:
            raise LoginRequired()
        user = self.users[who.lower()]
        code = AuthCode(
            secrets.token_urlsafe(48),
            app.client_id,
            redirect,
            user.upn,
            split_scopes(query.get("scope")),
            query.get("code_challenge"),
            query.get("code_challenge_method", "plain"),
            query.get("nonce"),
            time.time() + 600,
        )
        self.auth_codes[code.code] = code
        params = {"code": code.code, "client_info": self._client_info(user)}
        if "state" in query:
            params["state"] = query["state"]
        params["session_state"] = new_guid()
        return f"{redirect}{'&' if '?' in redirect else '?'}{urlencode(params)}"

    @staticmethod
    def _single_tenant_on_common(app: App, path: str) -> None:
        if path.lower() in SPECIAL_TENANTS and not app.multi_tenant:
            raise TokenError(
                400,
                "invalid_request",
                50194,
                f"Application '{app.client_id}'({app.name}) is not configured as a multi-tenant "
                "application. Usage of the /common endpoint is not supported for such "
                "applications created after '10/15/2018'. Use a tenant-specific endpoint or "
                "configure the application to be multi-tenant.",
            )

    # -- issuing ------------------------------------------------------------------------------
    @staticmethod
    def _client_info(user: User) -> str:
        return b64url(json.dumps({"uid": user.oid, "utid": user.tenant_id}).encode())

    def _delegated(
        self,
        app: App,
        upn: str,
        scopes: list[str],
        form: dict[str, str],
        base: str,
        tenant: Tenant | None,
        *,
        nonce: str | None = None,
    ) -> Json:
        user = self.users[upn.lower()]
        if tenant is None:
            self._single_tenant_on_common(app, "common")
        elif tenant.id != user.tenant_id:
            raise TokenError(
                400,
                "invalid_grant",
                50020,
                f"User account '{upn}' from identity provider does not exist in tenant "
                f"'{tenant.domain}'.",
            )
        return self._issue(app, user.tenant_id, user, scopes, form, base, nonce=nonce)

    def _issue(
        self,
        app: App,
        tenant_id: str,
        user: User | None,
        scopes: list[str],
        form: dict[str, str],
        base: str,
        *,
        nonce: str | None = None,
    ) -> Json:
        now = int(time.time())
        resource_scopes = [s for s in scopes if s not in RESERVED_SCOPES]
        claims: Json = {
            "aud": GRAPH_AUDIENCE,
            "iss": f"https://sts.windows.net/{tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + self.access_token_ttl,
            "appid": app.client_id,
            "tid": tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
        }
        if user is None:
            claims.update(idtyp="app", oid=new_guid(), roles=list(app.roles))
        else:
            claims.update(idtyp="user", oid=user.oid, upn=user.upn, name=user.name)
            claims["scp"] = " ".join(s.rsplit("/", 1)[-1] for s in resource_scopes)
        access = fake_jwt(claims)
        self.access[access] = AccessGrant(
            access,
            app.client_id,
            tenant_id,
            user.upn if user else None,
            resource_scopes,
            now + self.access_token_ttl,
        )
        out: Json = {
            "token_type": "Bearer",
            "scope": " ".join(resource_scopes) if user else scopes[0],
            "expires_in": self.access_token_ttl,
            "ext_expires_in": self.access_token_ttl,
            "access_token": access,
        }
        if user is not None:
            if "offline_access" in scopes:
                rt = RefreshGrant(
                    "0.AQ" + secrets.token_urlsafe(96), app.client_id, user.upn, scopes
                )
                self.refresh[rt.token] = rt
                out["refresh_token"] = rt.token
            if "openid" in scopes:
                id_claims: Json = {
                    "aud": app.client_id,
                    "iss": f"{base}/{tenant_id}/v2.0",
                    "iat": now,
                    "nbf": now,
                    "exp": now + 3600,
                    "name": user.name,
                    "oid": user.oid,
                    "preferred_username": user.upn,
                    "sub": b64url(hashlib.sha256(f"{user.oid}{app.client_id}".encode()).digest()),
                    "tid": tenant_id,
                    "ver": "2.0",
                }
                if nonce is not None:
                    id_claims["nonce"] = nonce
                out["id_token"] = fake_jwt(id_claims)
            if form.get("client_info") == "1":
                out["client_info"] = self._client_info(user)
        return out
