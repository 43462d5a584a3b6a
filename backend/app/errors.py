"""The one shape of an error answer: ``{"error": message, "status": code}``, JSON.

Every error the app answers goes through :func:`error_response`: its own refusals (the
webhook's, readiness's 503), HTTPExceptions from Flask and werkzeug (404, 405, 413, ...) and
unhandled exceptions, which Flask turns into a 500 InternalServerError after logging the
traceback: the body carries only the generic description, never the traceback.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

# Headers an HTTPException describes its own HTML body with; the JSON body replaces it.
_BODY_HEADERS = frozenset({"content-type", "content-length"})


def error_response(status: int, message: str, **extra: object) -> Response:
    """An error answer; ``extra`` adds fields for clients that read more than the message."""
    response = jsonify({"error": message, "status": status, **extra})
    response.status_code = status
    return response


def _http_error(error: HTTPException) -> Response:
    response = error_response(error.code or 500, error.description or error.name)
    for name, value in error.get_headers():  # keeps headers such as Allow on a 405
        if name.lower() not in _BODY_HEADERS:
            response.headers.add(name, value)
    return response


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
