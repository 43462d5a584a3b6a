"""Executions and conversations, and the job that marks them stale."""

from __future__ import annotations

import itertools
import json
import sqlite3
import time

import gevent
import pytest

from app import db, jobs
from app.executions import mark_stale
from app.factory import create_app
from helpers import api_client, deliver


def age(app, table: str, seconds: float) -> None:
    """Pretend every row of ``table`` was last updated ``seconds`` ago."""
    connection = db.connect(app.config["AGENTED_DB_PATH"])
    try:
        connection.execute(f"UPDATE {table} SET updated_at = updated_at - ?", (seconds,))  # noqa: S608
    finally:
        connection.close()


def events_of_type(app, event_type: str) -> list[dict]:
    connection = db.connect(app.config["AGENTED_DB_PATH"])
    try:
        return [
            json.loads(row[0])
            for row in connection.execute(
                "SELECT data FROM events WHERE type = ? ORDER BY id", (event_type,)
            )
        ]
    finally:
        connection.close()


def test_list_executions_newest_first_with_filters(client):
    for n in range(3):
        deliver(client, {"n": n}, guid=f"d{n}", event="ping" if n == 1 else "push")
    listed = client.get("/api/executions").get_json()["executions"]
    assert [e["delivery"] for e in listed] == ["d2", "d1", "d0"]
    assert [e["status"] for e in listed] == ["running", "succeeded", "running"]
    assert listed[0]["created_at"].endswith("+00:00")
    running = client.get("/api/executions?status=running&limit=1").get_json()["executions"]
    assert [e["delivery"] for e in running] == ["d2"]


@pytest.mark.parametrize("query", ["status=done", "limit=0", "limit=501", "limit=x"])
def test_bad_list_arguments_are_400(client, query):
    response = client.get(f"/api/executions?{query}")
    assert response.status_code == 400
    assert response.is_json


def test_get_one_execution(client):
    execution_id = deliver(client, {"action": "opened"}, event="issues").get_json()["execution_id"]
    response = client.get(f"/api/executions/{execution_id}")
    assert response.status_code == 200
    assert response.get_json()["delivery"]["event"] == "issues"
    assert response.get_json()["source"] == "github:issues.opened"
    assert client.get("/api/executions/999").status_code == 404


@pytest.mark.parametrize("execution_id", ["99999999999999999999", str(2**63), str(2**63 - 1)])
def test_an_id_beyond_sqlite_integers_is_404(client, execution_id):
    response = client.get(f"/api/executions/{execution_id}")
    assert response.status_code == 404
    assert response.get_json() == {"error": f"no execution {execution_id}", "status": 404}


def test_running_executions_become_stale_after_the_threshold(app, client):
    deliver(client, {}, guid="old")
    age(app, "executions", 901)
    deliver(client, {}, guid="new")
    deliver(client, {}, guid="pong", event="ping")
    connection = db.connect(app.config["AGENTED_DB_PATH"])
    try:
        changed = mark_stale(
            connection,
            app.config["STALE_EXECUTION_THRESHOLD_SECS"],
            app.config["STALE_CONVERSATION_THRESHOLD_SECS"],
        )
    finally:
        connection.close()
    assert changed == 1
    statuses = {
        e["delivery"]: e["status"] for e in client.get("/api/executions").get_json()["executions"]
    }
    assert statuses == {"old": "stale", "new": "running", "pong": "succeeded"}
    [stale] = events_of_type(app, "execution.stale")
    assert stale["execution"]["status"] == "stale"


def test_idle_conversations_become_stale_and_come_back(app, client):
    issue = {"issue": {"number": 1}, "repository": {"full_name": "o/r"}}
    deliver(client, issue, guid="a", event="issues")
    age(app, "conversations", 1801)
    assert jobs.sweep(app) == 1
    [conversation] = client.get("/api/conversations").get_json()["conversations"]
    assert conversation["status"] == "stale" and conversation["key"] == "o/r#1"
    assert len(events_of_type(app, "conversation.stale")) == 1
    deliver(client, issue, guid="b", event="issue_comment")
    [conversation] = client.get("/api/conversations?status=active").get_json()["conversations"]
    assert conversation["key"] == "o/r#1"


def test_old_events_are_pruned_but_never_below_the_events_kept(app, client):
    app.config["SSE_REPLAY_LIMIT"] = 500  # fewer than EVENTS_KEPT: that many are kept anyway
    connection = db.connect(app.config["AGENTED_DB_PATH"])
    try:
        with db.transaction(connection):
            connection.executemany(
                "INSERT INTO events (type, data, created_at) VALUES ('x', '{}', 0)",
                [()] * 10010,
            )
        jobs.sweep(app)
        kept = connection.execute("SELECT count(*), min(id) FROM events").fetchone()
    finally:
        connection.close()
    assert tuple(kept) == (10000, 11)


def test_marking_stale_waits_for_a_held_write_lock_without_blocking_other_greenlets(app):
    path = app.config["AGENTED_DB_PATH"]
    holder = sqlite3.connect(path, isolation_level=None)
    connection = db.connect(path)
    ticks: list[float] = []

    def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.02)

    ticker = gevent.spawn(tick)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        job = gevent.spawn(mark_stale, connection, 900, 1800)
        gevent.sleep(0.5)
        holder.execute("ROLLBACK")
        assert job.get(timeout=10) == 0  # done once the lock is free
    finally:
        ticker.kill()
        connection.close()
        holder.close()
    longest_gap = max(b - a for a, b in itertools.pairwise(ticks))
    assert longest_gap < 0.2, f"other greenlets were blocked for {longest_gap:.2f} s"


def test_marking_stale_gives_up_on_a_lock_held_too_long_with_an_sqlite_error(app):
    path = app.config["AGENTED_DB_PATH"]
    holder = sqlite3.connect(path, isolation_level=None)
    connection = db.connect(path)
    try:
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        # An sqlite3.Error: the housekeeping job logs it and tries again later.
        with pytest.raises(sqlite3.OperationalError):
            mark_stale(connection, 900, 1800, lock_wait_secs=0.3)
        assert time.monotonic() - started < 2.0
    finally:
        connection.close()
        holder.close()


def test_the_periodic_job_runs_in_the_background(tmp_path):
    app = create_app(
        {
            "TESTING": True,
            "AGENTED_DB_PATH": str(tmp_path / "a.db"),
            "GITHUB_WEBHOOK_SECRET": "s",
            "STALE_EXECUTION_THRESHOLD_SECS": 1,
        },
        migrate=True,
    )
    client = api_client(app)
    assert jobs.interval(app) == 1.0
    deliver(client, {}, guid="soon-stale", secret="s")  # the first request starts the job
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        [execution] = client.get("/api/executions").get_json()["executions"]
        if execution["status"] == "stale":
            break
        time.sleep(0.1)
    assert execution["status"] == "stale"
    app.extensions["agented_jobs"].set()  # stop it
