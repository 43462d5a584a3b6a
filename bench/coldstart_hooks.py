"""Gunicorn configuration of bench/coldstart.py: the backend's own gunicorn.conf.py, plus marks.

Runs the real configuration file (BENCH_GUNICORN_CONF) and adds hooks that append
"<mark> <CLOCK_MONOTONIC seconds> <pid>" lines to BENCH_MARKS, one per step of a cold start:
configuration loaded, database migrated (by the master, before any worker), master listening,
worker forked, gevent patched, app imported, app created, worker serving. The app is loaded
through this module's create_app(), which times the import and create_app() in the worker.
"""

import os
import runpy
import time

_MARKS = os.environ["BENCH_MARKS"]


def mark(name: str) -> None:
    with open(_MARKS, "a") as stream:
        stream.write(f"{name} {time.monotonic():.6f} {os.getpid()}\n")


if __name__ != "coldstart_hooks":  # loaded by Gunicorn as its configuration file, not imported
    _conf = runpy.run_path(os.environ["BENCH_GUNICORN_CONF"])
    globals().update({k: v for k, v in _conf.items() if not k.startswith("__")})
    mark("config_loaded")

    def on_starting(server):
        mark("migrations_start")
        _conf["on_starting"](server)
        mark("migrations_done")

    pythonpath = os.path.dirname(os.path.abspath(__file__))
    wsgi_app = "coldstart_hooks:create_app()"

    def when_ready(server):
        mark("master_listening")

    def post_fork(server, worker):
        mark("worker_forked")
        _conf["post_fork"](server, worker)

    def post_worker_init(worker):
        _conf["post_worker_init"](worker)
        mark("worker_serving")


def create_app():
    """Called in the worker after gevent's monkey-patching, where Gunicorn would load
    app.factory:create_app()."""
    mark("gevent_patched")
    import app.factory  # noqa: PLC0415

    mark("app_imported")
    application = app.factory.create_app()
    mark("app_created")
    return application
