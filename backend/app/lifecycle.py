"""Whether this process is shutting down.

Under Gunicorn, the ``post_worker_init`` hook in gunicorn.conf.py attaches the worker's
``alive`` flag, which turns false on SIGTERM, SIGQUIT, SIGINT, a reload (SIGHUP to the
master) or when the master dies. Long responses (event streams) watch it and end at once,
so a stopping worker exits in about a second instead of holding the graceful timeout;
clients reconnect to a live worker and resume with Last-Event-ID.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, current_app

EXTENSION = "agented_lifecycle"


def _always_alive() -> bool:
    return True


class Lifecycle:
    def __init__(self) -> None:
        self._alive: Callable[[], bool] = _always_alive
        self._instance_serving: Callable[[], bool] = _always_alive
        self._on_stop: list[Callable[[], None]] = []

    def attach(
        self, alive: Callable[[], bool], instance_serving: Callable[[], bool] | None = None
    ) -> None:
        """Use ``alive()`` to learn whether this process still serves (e.g. lambda:
        worker.alive), and ``instance_serving()`` whether the whole instance does (a worker
        drained by a reload is stopping, but its instance serves on); by default the same."""
        self._alive = alive
        self._instance_serving = instance_serving or alive

    @property
    def stopping(self) -> bool:
        """This process stops: end long responses now."""
        return not self._alive()

    @property
    def instance_stopping(self) -> bool:
        """The whole instance stops: readiness says so."""
        return not self._instance_serving()

    def when_stopping(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` from stopped() (e.g. wake a poller that watches ``stopping``)."""
        self._on_stop.append(callback)

    def stopped(self) -> None:
        """The server saw its stop: act on it now rather than at the next poll."""
        for callback in self._on_stop:
            callback()


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION] = Lifecycle()


def get(app: Flask | None = None) -> Lifecycle:
    return (app or current_app).extensions[EXTENSION]
