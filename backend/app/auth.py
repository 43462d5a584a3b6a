"""The API token: every request under /api/ must carry API_TOKEN as a bearer token
(``Authorization: Bearer <token>``), or it is answered 401 before any view runs.

Deny by default: a new route under /api/ needs the token without anyone remembering it.
Only views marked with :func:`no_token` are exempt, and only the GitHub webhook is, because
it proves itself with its HMAC signature. /health/ is outside /api/ and stays open for
probes.

The token is accepted in the Authorization header only, never in the query string: URLs
end up in access logs (Gunicorn's logs the request line), proxies and browser history. A
browser front end reads the event stream with fetch(), which can send the header, rather
than EventSource, which cannot.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TypeVar

from flask import Flask, Response, current_app, request

from . import errors

View = TypeVar("View", bound=Callable[..., object])

_ATTRIBUTE = "api_token_not_required"
_REALM = 'Bearer realm="agented"'


def no_token(view: View) -> View:
    """Mark a view under /api/ as answering without the token (it must authenticate its
    callers another way)."""
    setattr(view, _ATTRIBUTE, True)
    return view


def _is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def _exempt() -> bool:
    rule = request.url_rule
    if rule is None:
        return False  # no such route (404/405): still no answer without the token
    if request.method == "OPTIONS" and getattr(rule, "provide_automatic_options", False):
        return True  # a CORS preflight carries no credentials; Flask answers it, no view runs
    view = current_app.view_functions.get(rule.endpoint)
    return bool(getattr(view, _ATTRIBUTE, False))


def _presented(header: str) -> bytes | None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    # The WSGI server decoded the header as latin-1; this gives back the bytes sent.
    return token.encode("latin-1")


def _check() -> Response | None:
    if not _is_api(request.path) or _exempt():
        return None
    header = request.headers.get("Authorization")
    token = _presented(header) if header else None
    expected = str(current_app.config["API_TOKEN"]).encode()
    if token is not None and hmac.compare_digest(token, expected):
        return None
    response = errors.error_response(
        401, "this API needs a token: send Authorization: Bearer <API_TOKEN>"
    )
    # RFC 6750: a request that sent credentials is told they are invalid.
    response.headers["WWW-Authenticate"] = (
        _REALM if header is None else f'{_REALM}, error="invalid_token"'
    )
    return response


def init_app(app: Flask) -> None:
    """Check the token before anything else runs for the request (database, streams)."""
    if not app.config.get("API_TOKEN"):
        raise RuntimeError("API_TOKEN must be set (or generated) before the app serves")
    app.before_request(_check)
