"""Every error answer has one shape: {"error": message, "status": code}, as JSON."""

from __future__ import annotations

from app import db, lifecycle
from app.factory import create_app


def assert_error(response, status: int) -> dict:
    assert response.status_code == status
    assert response.content_type == "application/json"
    body = response.get_json()
    assert body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    return body


def test_werkzeug_errors(client):
    assert_error(client.get("/no/such/path"), 404)
    response = client.get("/api/webhooks/github")
    assert_error(response, 405)
    assert "POST" in response.headers["Allow"]
    assert_error(client.get("/api/executions?limit=0"), 400)


def test_an_unhandled_exception_is_a_500_without_its_traceback(tmp_path, caplog):
    app = create_app(
        {
            "TESTING": True,
            "PROPAGATE_EXCEPTIONS": False,  # as in production, not as in tests
            "SECRET_KEY": "k",
            "BACKGROUND_JOBS": False,
            "AGENTED_DB_PATH": str(tmp_path / "agented.db"),
        }
    )

    @app.get("/boom")
    def boom():
        raise RuntimeError("a detail only the log may show")

    response = app.test_client().get("/boom")
    body = assert_error(response, 500)
    text = response.get_data(as_text=True)
    assert "a detail only the log may show" not in text and "Traceback" not in text
    assert set(body) == {"error", "status"}
    assert "a detail only the log may show" in caplog.text  # logged, with its traceback


def test_the_apps_own_refusals(app, client):
    body = assert_error(client.post("/api/webhooks/github", data=b"{}"), 401)
    assert set(body) == {"error", "status"}

    connection = db.connect(app.config["AGENTED_DB_PATH"])
    connection.execute("PRAGMA user_version = 99")
    connection.execute("UPDATE schema_compatibility SET version = 99")  # incompatible with us
    connection.close()
    body = assert_error(client.get("/health/readiness"), 503)
    assert body["reason"] == body["error"]

    lifecycle.get(app).attach(lambda: False)
    body = assert_error(client.get("/health/readiness"), 503)
    assert body == {"error": "shutting down", "status": 503, "reason": "shutting down"}
