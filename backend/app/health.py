"""Health checks: ``/health/liveness`` (the process answers) and ``/health/readiness`` (it
can do its job: database reachable, schema current, not shutting down)."""

from __future__ import annotations

import os
import sqlite3

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from . import db, lifecycle

bp = Blueprint("health", __name__, url_prefix="/health")


@bp.get("/liveness")
def liveness() -> ResponseReturnValue:
    return jsonify(status="ok", pid=os.getpid(), version=current_app.config["VERSION"])


def _not_ready(reason: str) -> ResponseReturnValue:
    return jsonify(status="unavailable", reason=reason), 503


@bp.get("/readiness")
def readiness() -> ResponseReturnValue:
    if lifecycle.get().stopping:
        return _not_ready("shutting down")
    path = current_app.config["AGENTED_DB_PATH"]
    try:
        try:
            version = db.schema_version(db.get_db())
        except sqlite3.OperationalError:
            version = 0  # cannot even open it: let migrate() create what is missing
        if version < db.SCHEMA_VERSION:
            # Migrations failed at start (say, the volume was not mounted yet): retry.
            version = db.migrate(path)
    except (sqlite3.Error, OSError) as error:
        return _not_ready(f"database {path} unavailable: {error}")
    if version != db.SCHEMA_VERSION:
        return _not_ready(
            f"database schema version {version} is newer than this release's ({db.SCHEMA_VERSION})"
        )
    return jsonify(status="ready", schema_version=version, pid=os.getpid())
