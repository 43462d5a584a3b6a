"""``GET /metrics``: the backend's counters in Prometheus text format.

Under Gunicorn every worker is its own process: prometheus_client's multiprocess mode keeps
each worker's values in files under PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py points it into
the service's runtime directory and empties it at every start), and a scrape sums them over
all workers, whichever worker answers it. Without that variable (run.py, tests) the values
are this process's own.

Two Gunicorn instances may serve one socket (the role's standby): each keeps its own directory,
and AGENTED_METRICS_DIRS, which their systemd units set, names all of them (separated by ":"),
so that a scrape sums the workers of every instance, whichever instance answers it. A directory
that is missing (its instance is stopped or restarting) counts nothing.

Only the addresses in METRICS_ALLOWED_IPS may read it; others get 403. Labels are bounded:
an endpoint is the route's rule (or "unmatched"), never the raw path.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import struct
import time
from collections.abc import Iterable

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from . import errors, settings

bp = Blueprint("metrics", __name__)

_MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
_INSTANCE_DIRS = "AGENTED_METRICS_DIRS"
_NETWORKS_KEY = "agented_metrics_networks"
# Workers import the app right after fork: close enough to the process's own start.
_STARTED_AT = time.time()
_STARTED = "metrics_started"  # flask.g: when the request began (perf_counter)

HTTP_REQUESTS = Counter(
    "agented_http_requests", "HTTP requests answered", ["endpoint", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "agented_http_request_duration_seconds",
    "Time from the start of a request to its response (an event stream: to its headers)",
    ["endpoint"],
)
# One of WEBHOOK_OUTCOMES; deliveries refused for load (429, 503 busy, 408) count as "refused".
WEBHOOK_DELIVERIES = Counter(
    "agented_webhook_deliveries", "GitHub webhook deliveries by outcome", ["outcome"]
)
WEBHOOK_OUTCOMES = (
    "stored",
    "duplicate",
    "bad_signature",
    "too_large",
    "bad_json",
    "no_secret",
    "bad_headers",
    "refused",
)
EVENT_STREAMS_OPEN = Gauge(
    "agented_event_streams_open", "Event streams open now", multiprocess_mode="livesum"
)
EVENTS_SENT = Counter("agented_events_sent", "Events written to live event streams")
EVENTS_REPLAYED = Counter(
    "agented_events_replayed", "Events read from the database for (re)connecting streams"
)
SQLITE_WRITE_LATENCY = Histogram(
    "agented_sqlite_write_seconds",
    "Time of a write transaction, the wait for SQLite's write lock included",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BUILD_INFO = Gauge(
    "agented_build_info",
    "1, labelled with the release id and version this process runs",
    ["release", "version"],
    multiprocess_mode="liveall",
)
PROCESS_START = Gauge(
    "agented_process_start_time_seconds",
    "Start of the process, in seconds since the epoch",
    multiprocess_mode="liveall",
)

for _outcome in WEBHOOK_OUTCOMES:
    WEBHOOK_DELIVERIES.labels(_outcome)  # every outcome is exported from 0 on


def parse_networks(value: str | None) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The networks of METRICS_ALLOWED_IPS (settings check it at load already); ValueError
    naming the setting and what is wrong."""
    try:
        return settings.split_networks(value or "")
    except ValueError as error:
        raise ValueError(
            f"METRICS_ALLOWED_IPS: {error}; use {settings.KINDS['networks']}"
        ) from None


def release_id() -> str:
    """The release the backend runs from (the role's releases/<id>, which `current` points
    to), else "dev"."""
    release = os.path.realpath(settings.BACKEND_DIR)
    if os.path.basename(os.path.dirname(release)) == "releases":
        return os.path.basename(release)
    return "dev"


def init_app(app: Flask) -> None:
    try:
        app.extensions[_NETWORKS_KEY] = parse_networks(app.config["METRICS_ALLOWED_IPS"])
    except ValueError as error:
        raise RuntimeError(str(error)) from None
    BUILD_INFO.labels(release_id(), app.config["VERSION"]).set(1)
    PROCESS_START.set(_STARTED_AT)
    app.before_request(_start_timer)
    app.after_request(_count_request)


def _start_timer() -> None:
    setattr(g, _STARTED, time.perf_counter())


def _count_request(response: Response) -> Response:
    started = g.get(_STARTED)
    rule = request.url_rule
    endpoint = rule.rule if rule is not None else "unmatched"
    HTTP_REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
    if started is not None:
        HTTP_LATENCY.labels(endpoint).observe(time.perf_counter() - started)
    return response


def count_delivery(outcome: str) -> None:
    WEBHOOK_DELIVERIES.labels(outcome).inc()


def _allowed(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False  # a unix socket has no address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in current_app.extensions[_NETWORKS_KEY])


@bp.get("/metrics")
def metrics() -> Response:
    if not _allowed(request.remote_addr):
        return errors.error_response(
            403, "This address may not read /metrics: see METRICS_ALLOWED_IPS"
        )
    if _MULTIPROCESS:
        registry = CollectorRegistry()
        registry.register(_InstancesCollector(metrics_directories()))
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def metrics_directories() -> list[str]:
    """This instance's metrics directory and those of the instances beside it."""
    own = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    named = [path for path in os.environ.get(_INSTANCE_DIRS, "").split(":") if path]
    return list(dict.fromkeys([own, *named]))


class _InstancesCollector:
    """prometheus_client's MultiProcessCollector over the files of several directories.

    An instance (re)starting empties its directory and its new workers create their files while
    another instance answers a scrape: a file removed between the glob and its read belongs to
    values that are gone, and a file created but not yet sized holds none, so both count nothing.
    Files are read one by one for that; the merge is prometheus_client's own.
    """

    def __init__(self, directories: Iterable[str]):
        self._directories = tuple(directories)

    def collect(self):
        metrics: dict = {}
        for directory in self._directories:
            for path in glob.glob(os.path.join(directory, "*.db")):
                try:
                    read = multiprocess.MultiProcessCollector._read_metrics([path])
                except (FileNotFoundError, struct.error):
                    continue
                for name, metric in read.items():
                    if name in metrics:
                        metrics[name].samples.extend(metric.samples)
                    else:
                        metrics[name] = metric
        return multiprocess.MultiProcessCollector._accumulate_metrics(metrics, accumulate=True)
