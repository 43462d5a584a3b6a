"""Health checks: ``/health/liveness`` (the process answers) and ``/health/readiness`` (it
can do its job: database reachable, schema this release can read and write, the instance not
shutting down)."""

from __future__ import annotations

import os
import sqlite3

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from . import db, errors, lifecycle

bp = Blueprint("health", __name__, url_prefix="/health")


@bp.get("/liveness")
def liveness() -> ResponseReturnValue:
    return jsonify(status="ok", pid=os.getpid(), version=current_app.config["VERSION"])


def _not_ready(reason: str) -> ResponseReturnValue:
    # "reason" as well as "error": probes and operators read the reason under that name.
    return errors.error_response(503, reason, reason=reason)


@bp.get("/readiness")
def readiness() -> ResponseReturnValue:
    """Only reads, with a connection that cannot write: a probe must never change the
    database, and migrations belong to the start of the service, not to whoever probes."""
    # Not ``stopping``: a worker drained by a reload still answers its kept-alive connections,
    # and the instance is as ready as before; only a stop of the whole instance is "not ready".
    if lifecycle.get().instance_stopping:
        return _not_ready("shutting down")
    path = current_app.config["AGENTED_DB_PATH"]
    try:
        connection = db.connect_read_only(path)
        try:
            version = db.schema_version(connection)
            problem = db.compatibility_problem(connection)
        finally:
            connection.close()
    except sqlite3.Error as error:
        # Anyone can probe readiness: the path and SQLite's message are for the log only.
        current_app.logger.warning("readiness: database %s unavailable: %s", path, error)
        return _not_ready("database unavailable")
    if problem is not None:
        return _not_ready(problem)
    return jsonify(status="ready", schema_version=version, pid=os.getpid())
