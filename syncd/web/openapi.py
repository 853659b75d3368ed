"""The OpenAPI 3 document of the REST API, written by hand (``GET /api/v1/openapi.json``).

Keep it in step with ``syncd/web/api.py``: the integration tests fuzz the running API
against this document with schemathesis.
"""

from __future__ import annotations

from typing import Any

JSON = "application/json"

_DATETIME_OUT = {"type": "string", "format": "date-time", "example": "2026-12-01T15:00:00Z"}
_DATETIME_IN = {
    "type": "string",
    "format": "date-time",
    "description": "ISO 8601 / RFC 3339 with an offset (Z or +01:00); a local time is refused.",
    "example": "2026-12-01T15:00:00Z",
}
_AS = {
    "type": "string",
    "enum": ["customer", "admin"],
    "description": (
        'Who acts. "customer" (the default with the platform token): the admin\'s cut-offs '
        'apply. "admin" (the default with the admin token, and only with it: else 403): '
        "cut-offs and overlap checks are bypassed."
    ),
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref("Error")}}}


def _session_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref("Session")}}}


def _errors(*codes: int) -> dict[str, Any]:
    names = {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        409: "Conflict",
        422: "Invalid",
        503: "Unavailable",
    }
    return {str(c): {"$ref": f"#/components/responses/{names[c]}"} for c in codes}


_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The session id, e.g. s_7kq2ab3cd4ef5gh6.",
    "schema": {"type": "string", "minLength": 1},
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "One sentence a person can act on."}
        },
    },
    "Customer": {
        "type": "object",
        "required": ["email", "name", "tz"],
        "properties": {
            "email": {"type": "string"},
            "name": {"type": "string"},
            "tz": {"type": "string", "description": "IANA time zone, e.g. Europe/Berlin."},
        },
    },
    "CustomerIn": {
        "type": "object",
        "required": ["email", "name"],
        "properties": {
            "email": {"type": "string", "description": "Not an email address: 422."},
            "name": {"type": "string", "description": "One line; empty or a line break: 422."},
            "tz": {
                "type": "string",
                "default": "UTC",
                "description": "IANA time zone; an unknown zone is refused with 400.",
            },
        },
    },
    "HistoryEntry": {
        "type": "object",
        "required": ["at", "actor", "action", "from", "to", "detail"],
        "properties": {
            "at": _DATETIME_OUT,
            "actor": {
                "type": "string",
                "enum": ["customer", "admin", "admin-calendar", "api", "system"],
            },
            "action": {"type": "string"},
            "from": {**_DATETIME_OUT, "nullable": True},
            "to": {**_DATETIME_OUT, "nullable": True},
            "detail": {"type": "string", "nullable": True},
        },
    },
    "Session": {
        "type": "object",
        "required": [
            "id",
            "admin",
            "customer",
            "start",
            "end",
            "status",
            "sequence",
            "cancel_reason",
            "history",
        ],
        "properties": {
            "id": {"type": "string"},
            "admin": {"type": "string", "description": "The admin's email."},
            "customer": _ref("Customer"),
            "start": _DATETIME_OUT,
            "end": _DATETIME_OUT,
            "status": {"type": "string", "enum": ["booked", "awaiting_customer", "canceled"]},
            "sequence": {"type": "integer", "minimum": 0},
            "cancel_reason": {"type": "string", "nullable": True},
            "choose_message": {"type": "string", "nullable": True},
            "history": {"type": "array", "items": _ref("HistoryEntry")},
        },
    },
    "BookRequest": {
        "type": "object",
        "required": ["admin", "customer", "start", "duration_minutes"],
        "properties": {
            "admin": {"type": "string", "minLength": 1, "pattern": r"\S"},
            "customer": _ref("CustomerIn"),
            "start": _DATETIME_IN,
            "duration_minutes": {"type": "integer", "minimum": 1, "maximum": 1440},
            "as": _AS,
        },
    },
    "RescheduleRequest": {
        "type": "object",
        "description": (
            'Either {"to": TIME, "as": ...} ("Choose New Time"), or '
            '{"let_customer_choose": true, "message": TEXT} (admin only: the customer gets '
            "an email with a single-use link to pick a new time). Giving both, or neither, "
            "is refused with 400."
        ),
        "properties": {
            "to": _DATETIME_IN,
            "as": _AS,
            "let_customer_choose": {"type": "boolean", "default": False},
            "message": {"type": "string", "description": "For the customer (with the link)."},
        },
    },
    "CancelRequest": {
        "type": "object",
        "required": ["reason"],
        "properties": {
            "reason": {
                "type": "string",
                "description": "Told to the customer; required (non-empty) when as=admin.",
            },
            "as": _AS,
        },
    },
}

_RESPONSES: dict[str, Any] = {
    "BadRequest": _error_response(
        "Malformed request: bad JSON, a missing or mistyped field, a time without an offset, "
        "an unknown time zone or status."
    ),
    "Unauthorized": {
        "description": "No bearer token, or a wrong one.",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
        "content": {JSON: {"schema": _ref("Error")}},
    },
    "Forbidden": _error_response(
        'The platform token asked to act as the admin ("as": "admin"): only the admin token '
        "([web] admin_token_file) may."
    ),
    "Invalid": _error_response(
        "A value that can never be right: a line break or control character in a name, a "
        "reason or a message; an empty name; not an email address; a session longer than "
        "24 hours."
    ),
    "NotFound": _error_response("No such session (or admin)."),
    "Conflict": _error_response(
        "Refused by a rule: a customer action inside the cut-off, an overlap with another "
        "session, a time in the past, or a canceled session."
    ),
    "Unavailable": _error_response(
        "The database did not answer, or the API is disabled (no [web] api_token_file)."
    ),
}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": _ref(schema)}}}


_PATHS: dict[str, Any] = {
    "/api/v1/sessions": {
        "post": {
            "operationId": "bookSession",
            "summary": "Book a session (history actor: api; admin with the admin token).",
            "requestBody": _body("BookRequest"),
            "responses": {
                "201": _session_response("The booked session."),
                **_errors(400, 401, 403, 404, 409, 422, 503),
            },
        },
        "get": {
            "operationId": "listSessions",
            "summary": "Sessions by start time, optionally of one admin and one status.",
            "parameters": [
                {
                    "name": "admin",
                    "in": "query",
                    "required": False,
                    "description": "The admin's email; unknown: 404.",
                    "schema": {"type": "string"},
                },
                {
                    "name": "status",
                    "in": "query",
                    "required": False,
                    "schema": {
                        "type": "string",
                        "enum": ["booked", "awaiting_customer", "canceled"],
                    },
                },
            ],
            "responses": {
                "200": {
                    "description": "The sessions (a JSON array, as `syncd session list --json`).",
                    "content": {JSON: {"schema": {"type": "array", "items": _ref("Session")}}},
                },
                **_errors(400, 401, 404, 503),
            },
        },
    },
    "/api/v1/sessions/{id}": {
        "get": {
            "operationId": "getSession",
            "summary": "One session with its history.",
            "parameters": [_ID],
            "responses": {
                "200": _session_response("The session."),
                **_errors(401, 404, 503),
            },
        }
    },
    "/api/v1/sessions/{id}/reschedule": {
        "post": {
            "operationId": "rescheduleSession",
            "summary": 'Move a session, or let the customer choose ("Let Customer Choose").',
            "parameters": [_ID],
            "requestBody": _body("RescheduleRequest"),
            "responses": {
                "200": _session_response("The session after the change."),
                **_errors(400, 401, 403, 404, 409, 422, 503),
            },
        }
    },
    "/api/v1/sessions/{id}/cancel": {
        "post": {
            "operationId": "cancelSession",
            "summary": "Cancel a session with a reason for the customer.",
            "parameters": [_ID],
            "requestBody": _body("CancelRequest"),
            "responses": {
                "200": _session_response("The canceled session."),
                **_errors(400, 401, 403, 404, 409, 422, 503),
            },
        }
    },
}


def build_openapi(public_url: str) -> dict[str, Any]:
    """The whole OpenAPI 3.0 document, with ``public_url`` as the server."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "syncd REST API",
            "version": "1",
            "description": (
                "For booking platforms: book, list, show, reschedule and cancel 1-to-1 "
                "sessions. Every request needs `Authorization: Bearer <token>`: the booking "
                "platform's token ([web] api_token_file; acts as the customer or api, bound "
                "by cut-offs and availability) or the admin token ([web] admin_token_file). "
                'Errors are `{"error": "<sentence>"}` with 400 (malformed), 401 (token), '
                "403 (not the admin), 404 (unknown), 409 (refused by a rule such as a "
                "cut-off or an overlap), 422 (a value that can never be right) or 503 "
                "(database down, or API disabled)."
            ),
        },
        "servers": [{"url": public_url.rstrip("/") or "/"}],
        "security": [{"bearerAuth": []}],
        "paths": _PATHS,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The token in [web] api_token_file (or _credential).",
                }
            },
            "schemas": _SCHEMAS,
            "responses": _RESPONSES,
        },
    }
