"""GET /metrics: Prometheus counters summed over Gunicorn's workers, for allowed addresses only."""

from __future__ import annotations

import re
import shutil
import sys
import threading

import pytest

from app import metrics, settings
from app.factory import create_app
from app.metrics import parse_networks
from helpers import deliver, free_port

SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$")


def samples(text: str) -> dict[str, float]:
    """Every sample of a scrape, by its name and labels as written."""
    found = {}
    for line in text.splitlines():
        match = SAMPLE_RE.match(line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def value(scrape: dict[str, float], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for key, number in scrape.items():
        sample_name, _, label_text = key.partition("{")
        if sample_name != name:
            continue
        if all(f'{label}="{wanted}"' in label_text for label, wanted in labels.items()):
            total += number
    return total


def build_info_pids(scrape: dict[str, float]) -> set[int]:
    """The worker processes whose agented_build_info the scrape holds."""
    return {
        int(match.group(1))
        for key in scrape
        if key.startswith("agented_build_info{") and (match := re.search(r'pid="(\d+)"', key))
    }


def scrape(server) -> dict[str, float]:
    status, body = server.request("GET", "/metrics")
    assert status == 200, body
    return samples(body.decode())


@pytest.mark.skipif(sys.platform != "linux", reason="uses /proc")
def test_counters_change_with_traffic_and_sum_over_the_workers(gunicorn, tmp_path):
    server = gunicorn(RUNTIME_DIRECTORY=str(tmp_path / "run"), GITHUB_WEBHOOK_MAX_BYTES="1024")
    assert len(server.worker_pids()) == 2
    before = scrape(server)
    assert value(before, "agented_webhook_deliveries_total", outcome="stored") == 0
    assert value(before, "agented_build_info", version="0.1.0") >= 1
    assert value(before, "agented_process_start_time_seconds") > 1.7e9

    stream = server.stream()
    outcomes = {"stored": 0, "duplicate": 0, "bad_signature": 0, "bad_json": 0, "too_large": 0}
    for number in range(6):  # several connections: both workers answer some
        assert server.deliver({"n": number}, guid=f"m-{number}")[0] == 202
        outcomes["stored"] += 1
    assert server.deliver({"n": 0}, guid="m-0")[0] == 200
    outcomes["duplicate"] += 1
    assert server.deliver({}, guid="m-bad", secret="not-the-secret")[0] == 401
    outcomes["bad_signature"] += 1
    assert server.deliver(guid="m-json", body=b"[1, 2")[0] == 400
    outcomes["bad_json"] += 1
    assert server.deliver(guid="m-big", body=b"{}" + b" " * 3000)[0] == 413
    outcomes["too_large"] += 1
    stream.wait_for(lambda event: event.get("id") == "6")

    after = scrape(server)
    for outcome, count in outcomes.items():
        assert value(after, "agented_webhook_deliveries_total", outcome=outcome) == count, outcome
    assert value(after, "agented_event_streams_open") == 1
    assert value(after, "agented_events_sent_total") >= 6
    assert value(after, "agented_sqlite_write_seconds_count") >= 7
    webhook = {"endpoint": "/api/webhooks/github", "method": "POST"}
    assert value(after, "agented_http_requests_total", status="202", **webhook) == 6
    assert value(after, "agented_http_requests_total", status="401", **webhook) == 1
    latency = value(
        after, "agented_http_request_duration_seconds_count", endpoint="/api/webhooks/github"
    )
    assert latency == 10
    # A reconnecting stream replays what it missed.
    stream.close()
    replaying = server.stream(last_event_id="2")
    replaying.wait_for(lambda event: event.get("id") == "6")
    replaying.close()
    assert value(scrape(server), "agented_events_replayed_total") >= 4
    writes = value(after, "agented_sqlite_write_seconds_count")
    spent = value(after, "agented_sqlite_write_seconds_sum")
    print(f"\nmetrics: deliveries {outcomes}, {writes:.0f} SQLite writes in {spent:.4f} s")


def test_the_values_of_an_earlier_run_are_gone_after_a_restart(gunicorn, tmp_path):
    runtime = str(tmp_path / "run")
    server = gunicorn(RUNTIME_DIRECTORY=runtime)
    assert server.deliver({}, guid="r-1")[0] == 202
    assert value(scrape(server), "agented_webhook_deliveries_total", outcome="stored") == 1
    server.kill()  # no clean stop: the files stay behind
    again = gunicorn(RUNTIME_DIRECTORY=runtime)
    assert value(scrape(again), "agented_webhook_deliveries_total", outcome="stored") == 0


def two_instances(gunicorn, tmp_path):
    """Two Gunicorns on their own ports with one database, each naming both metrics
    directories, as the role's agented.service and agented-standby.service do."""
    ports = free_port(), free_port()
    runtimes = [tmp_path / f"run-{port}" for port in ports]
    shared = ":".join(str(runtime / "metrics") for runtime in runtimes)
    return [
        gunicorn(port=port, RUNTIME_DIRECTORY=str(runtime), AGENTED_METRICS_DIRS=shared)
        for port, runtime in zip(ports, runtimes, strict=True)
    ], runtimes


def test_a_scrape_of_either_instance_sums_the_workers_of_both(gunicorn, tmp_path):
    (first, second), runtimes = two_instances(gunicorn, tmp_path)
    for number in range(3):
        assert first.deliver({"n": number}, guid=f"a-{number}")[0] == 202
    for number in range(2):
        assert second.deliver({"n": number}, guid=f"b-{number}")[0] == 202
    stream = second.stream()
    stream.wait_for(lambda message: "comment" in message)  # open, and counted
    workers = first.worker_pids(), second.worker_pids()
    for server in (first, second):
        scraped = scrape(server)
        assert value(scraped, "agented_webhook_deliveries_total", outcome="stored") == 5
        assert value(scraped, "agented_event_streams_open") == 1
        reporting = build_info_pids(scraped)
        assert reporting & workers[0] and reporting & workers[1], (reporting, workers)

    # Stopped, an instance's runtime directory goes (systemd removes it): its values with it.
    stream.close()
    second.kill()
    shutil.rmtree(runtimes[1])
    alone = scrape(first)
    assert value(alone, "agented_webhook_deliveries_total", outcome="stored") == 3
    assert build_info_pids(alone) <= workers[0]


def test_a_scrape_meanwhile_the_other_instance_empties_its_directory_still_answers(
    gunicorn, tmp_path
):
    (first, second), runtimes = two_instances(gunicorn, tmp_path)
    assert second.deliver({}, guid="c-1")[0] == 202
    second.kill()  # its files stay, as they would until its restart empties them
    files = runtimes[1] / "metrics"
    kept = tmp_path / "kept"
    shutil.copytree(files, kept)
    stop = threading.Event()

    def restart_again_and_again() -> None:
        # As gunicorn.conf.py's on_starting empties it, then the new workers' files appear.
        while not stop.is_set():
            shutil.rmtree(files, ignore_errors=True)
            files.mkdir()
            for path in kept.iterdir():
                shutil.copy(path, files / f"{path.name}.new")
                (files / f"{path.name}.new").rename(files / path.name)

    churn = threading.Thread(target=restart_again_and_again)
    churn.start()
    try:
        statuses = [first.request("GET", "/metrics")[0] for _ in range(200)]
    finally:
        stop.set()
        churn.join()
    assert statuses == [200] * 200


def test_a_file_not_yet_sized_by_a_new_worker_counts_nothing(gunicorn, tmp_path):
    (first, second), runtimes = two_instances(gunicorn, tmp_path)
    assert first.deliver({}, guid="d-1")[0] == 202
    assert second.deliver({}, guid="d-2")[0] == 202
    # prometheus_client opens a worker's file and sizes it a moment later.
    (runtimes[1] / "metrics" / "counter_999999.db").touch()
    for server in (first, second):
        assert value(scrape(server), "agented_webhook_deliveries_total", outcome="stored") == 2


def test_an_address_outside_metrics_allowed_ips_gets_403(gunicorn):
    server = gunicorn(METRICS_ALLOWED_IPS="10.0.0.0/8, ::1")
    status, body = server.request("GET", "/metrics")
    assert status == 403
    assert "METRICS_ALLOWED_IPS" in body["error"]


def test_metrics_need_no_api_token(app):
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert b"agented_http_requests_total" in response.data


def test_no_secret_counts_as_its_own_outcome(tmp_path):
    app = create_app({"AGENTED_DB_PATH": str(tmp_path / "a.db"), "GITHUB_WEBHOOK_SECRET": None})
    client = app.test_client()
    before = samples(client.get("/metrics").data.decode())
    assert deliver(client).status_code == 503
    after = samples(client.get("/metrics").data.decode())
    key = 'agented_webhook_deliveries_total{outcome="no_secret"}'
    assert after[key] == before[key] + 1


@pytest.mark.parametrize("text", ["localhost", "10.0.0.0/33", "1.2.3.4.5", "::g"])
def test_a_malformed_allowed_address_is_refused_with_its_name(text):
    with pytest.raises(ValueError, match=f"METRICS_ALLOWED_IPS: '{re.escape(text)}'"):
        parse_networks(f"127.0.0.1,{text}")


def test_an_empty_list_allows_nobody():
    assert parse_networks(" , ") == ()


def test_build_info_names_the_release_current_points_to(tmp_path, monkeypatch):
    release = tmp_path / "backend" / "releases" / "3f2a9c"
    release.mkdir(parents=True)
    (tmp_path / "backend" / "current").symlink_to(release)
    monkeypatch.setattr(settings, "BACKEND_DIR", str(tmp_path / "backend" / "current"))
    assert metrics.release_id() == "3f2a9c"
    monkeypatch.setattr(settings, "BACKEND_DIR", str(tmp_path))
    assert metrics.release_id() == "dev"


def test_a_refusal_names_a_known_outcome():
    from app.webhooks import Refused  # noqa: PLC0415

    assert Refused(401, "bad", outcome="bad_signature").outcome == "bad_signature"
    assert Refused(429, "busy").outcome == "refused"
    with pytest.raises(ValueError, match="unknown webhook outcome"):
        Refused(400, "bad", outcome="bad_mood")
