"""The Flask application factory.

``create_app()`` reads the configuration through ``app.settings`` (the process environment
and backend/.env); tests pass ``test_config`` instead, which starts from the declared
defaults (a developer's .env never leaks into tests) and overrides them.
"""

from __future__ import annotations

import logging
import os
import time
import tomllib
from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask_cors import CORS

from . import (
    auth,
    config_api,
    db,
    errors,
    events,
    executions,
    health,
    jobs,
    lifecycle,
    metrics,
    request_db,
    secret_key,
    settings,
    webhooks,
)


def read_version() -> str:
    """The version from pyproject.toml, its one source."""
    with open(os.path.join(settings.BACKEND_DIR, "pyproject.toml"), "rb") as stream:
        return tomllib.load(stream)["project"]["version"]


def create_app(test_config: Mapping[str, Any] | None = None, *, migrate: bool = False) -> Flask:
    """The app, configured from the settings, or from the defaults and ``test_config``.

    ``migrate`` applies the schema migrations first. Under Gunicorn the master has done so
    before forking workers (gunicorn.conf.py), so workers leave it off; run.py and tests,
    which have no master, turn it on. Errors (sqlite3.Error, OSError) propagate.
    """
    app = Flask(__name__)
    if test_config is None:
        app.config.from_mapping(settings.load())
    else:
        app.config.from_mapping(settings.load(environ={}, env_file=None))
    app.config.update(
        VERSION=read_version(),
        BACKGROUND_JOBS=True,  # housekeeping thread, started by the first request
        ENV_FILE_READ=test_config is None,
    )
    if test_config is not None:
        app.config.update(test_config)

    configure_logger(app)
    configure_process(app)
    if migrate:
        db.migrate(app.config["AGENTED_DB_PATH"])
    register_extensions(app)
    register_blueprints(app)
    errors.init_app(app)
    return app


def configure_logger(app: Flask) -> None:
    """Log at LOG_LEVEL; under Gunicorn through its error log, so both share one format."""
    level = app.config["LOG_LEVEL"].upper()
    gunicorn_logger = logging.getLogger("gunicorn.error")
    if gunicorn_logger.handlers:
        app.logger.handlers = gunicorn_logger.handlers
        app.logger.propagate = False
    app.logger.setLevel(level)


def configure_process(app: Flask) -> None:
    """Time zone, secret key, API token and the checks worth a warning at start."""
    if app.config["TZ"]:
        os.environ["TZ"] = app.config["TZ"]
        time.tzset()
    for name in secret_key.FILES:
        own_secret(app, name)
    # The largest body the API accepts is a webhook's; Flask refuses anything larger.
    app.config["MAX_CONTENT_LENGTH"] = app.config["GITHUB_WEBHOOK_MAX_BYTES"]
    if "*" in (app.config["CORS_ALLOWED_ORIGINS"] or ()):
        app.logger.warning(
            "CORS_ALLOWED_ORIGINS is *: any web site can call this API from a browser; "
            "set it to your front end's origins"
        )
    if not app.config["GITHUB_WEBHOOK_SECRET"]:
        app.logger.warning("GITHUB_WEBHOOK_SECRET is not set: webhook deliveries get 503")
    if app.config["ENV_FILE_READ"]:
        for note in settings.unknown_names():
            app.logger.warning(".env sets an unknown variable: %s", note)


def own_secret(app: Flask, name: str) -> None:
    """``name`` from the configuration, else generated once next to the database, so that every
    host has one without anybody setting it; ``{name}_SOURCE`` says which."""
    if app.config[name]:
        app.config[f"{name}_SOURCE"] = "environment"
        return
    directory = os.path.dirname(app.config["AGENTED_DB_PATH"])
    try:
        app.config[name] = secret_key.load_or_create(directory, name)
    except OSError as error:
        raise RuntimeError(
            f"{name} is not set and cannot be kept in {directory} ({error}): "
            f"set {name}, or AGENTED_DB_PATH to a writable place"
        ) from error
    app.config[f"{name}_SOURCE"] = "file"


def register_extensions(app: Flask) -> None:
    origins = app.config["CORS_ALLOWED_ORIGINS"]
    # Unset means no cross-origin access: without flask-cors no answer carries
    # Access-Control-Allow-Origin, so browsers keep other sites' pages out.
    if origins:
        CORS(
            app,
            resources={r"/api/*": {}, r"/health/*": {}},
            origins=list(origins),
            expose_headers=["Content-Type"],
        )
    metrics.init_app(app)  # first: its timer sees every request, refused ones too
    auth.init_app(app)  # an unauthenticated request touches nothing else
    lifecycle.init_app(app)
    request_db.init_app(app)
    events.init_app(app)
    jobs.init_app(app)


def register_blueprints(app: Flask) -> None:
    for module in (health, webhooks, events, executions, config_api, metrics):
        app.register_blueprint(module.bp)
