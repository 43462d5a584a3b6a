"""The current request's database connection: opened on first use, closed at teardown.

Apart from :mod:`app.db` because it needs Flask, and the Gunicorn master imports app.db
to migrate without loading Flask.
"""

from __future__ import annotations

import sqlite3

from flask import Flask, current_app, g

from . import db


def get_db() -> sqlite3.Connection:
    """The current request's connection, opened on first use."""
    if "db" not in g:
        g.db = db.connect(current_app.config["AGENTED_DB_PATH"])
    return g.db


def close_db(_error: BaseException | None = None) -> None:
    connection = g.pop("db", None)
    if connection is not None:
        connection.close()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(close_db)
