"""Gunicorn configuration of the agented backend.

    gunicorn -c gunicorn.conf.py

Every value comes from app.settings: the process environment, then backend/.env, then the
declared default (see .env.example). An invalid value stops Gunicorn at start with one line
naming the variable, the value and what is allowed, and a non-zero exit status.

The master imports only the standard-library parts of the ``app`` package (the settings, and
the migrations in on_starting) and forgets them again at once; the app is not preloaded. So
the master holds no application code: every worker imports the app fresh after fork, and a
reload (SIGHUP) brings new workers with the current code and configuration.

Under systemd socket activation (LISTEN_FDS) Gunicorn serves the inherited socket and ignores
``bind``. Never set Gunicorn's own user/group here: the service manager switches user.
"""

import contextlib
import ctypes
import importlib
import os
import signal
import sys

_BACKEND_DIR = os.path.dirname(os.path.abspath(__file__))


def _forget_app_modules():
    """Drop ``app`` and every ``app.*`` module from sys.modules.

    The master must hold no application code: workers are forked from it, and a worker that
    found ``app`` already imported would run the master's copy, not the code on disk. Without
    it in sys.modules, every worker imports the app fresh after fork, and a reload (SIGHUP)
    brings workers with the current code and settings.
    """
    for name in [name for name in sys.modules if name == "app" or name.startswith("app.")]:
        del sys.modules[name]


@contextlib.contextmanager
def _app_modules_for_the_master():
    """Within it, the master may import app's standard-library modules (settings, db,
    secret_key) as they are on disk now; they are forgotten again at its end. A reload may
    follow a `current` symlink to another release, hence the fresh look at the files."""
    importlib.invalidate_caches()
    _forget_app_modules()
    try:
        yield
    finally:
        _forget_app_modules()


if _BACKEND_DIR not in sys.path:
    sys.path.insert(0, _BACKEND_DIR)
with _app_modules_for_the_master():
    from app import settings as _settings

    try:
        _config = _settings.load()
    except _settings.SettingsError as _error:
        # Gunicorn prints a traceback for an Exception raised here but lets SystemExit through:
        # Python prints the message as one line on stderr and exits with status 1.
        raise SystemExit(f"agented: invalid configuration: {_error}") from None
del _settings


#
# Server socket
#

bind = [_config["GUNICORN_BIND"]]

#
# Worker processes
#
# gevent: one greenlet per connection, so a worker holds thousands of idle event streams.
# graceful_timeout stays short and below systemd's TimeoutStopSec: event streams end as soon
# as a worker starts to stop (see post_worker_init), so only ordinary requests use it.

workers = _config["GUNICORN_WORKERS"]
worker_class = "gevent"
worker_connections = _config["GUNICORN_WORKER_CONNECTIONS"]
timeout = _config["GUNICORN_TIMEOUT"]
graceful_timeout = _config["GUNICORN_GRACEFUL_TIMEOUT"]
keepalive = _config["GUNICORN_KEEPALIVE"]

#
# Server mechanics
#

wsgi_app = "app.factory:create_app()"
# Not the resolved path: with a `current` symlink to the release, a reload follows the link.
chdir = _BACKEND_DIR
# Off on purpose: workers import the app after fork, so a reload picks up new code.
preload_app = False
proc_name = "agented"

if _config["GUNICORN_CONTROL_SOCKET"] == "off":
    control_socket_disable = True
elif _config["GUNICORN_CONTROL_SOCKET"]:
    control_socket = _config["GUNICORN_CONTROL_SOCKET"]
# else: Gunicorn's default, $XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl

#
# Logging
#

loglevel = _config["LOG_LEVEL"]
accesslog = "-"  # stdout
errorlog = "-"  # stderr
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms'

#
# Server hooks
#

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# The largest request body the app accepts (a webhook delivery).
_MAX_BODY_BYTES = _config["GITHUB_WEBHOOK_MAX_BYTES"]
_EVENT_STREAM_PATH = "/api/events"


def on_starting(server):
    """Runs in the master before it listens and forks any worker."""
    _share_the_instance_stop(server)
    _empty_metrics_directory(_METRICS_DIR)
    _raise_open_files_limit(server)
    _migrate(server)
    _keep_secrets()


def on_reload(server):
    """A reload may bring a release with new migrations: apply them before the new workers
    start, as at start."""
    _migrate(server)


def when_ready(server):
    """Runs in the master once it listens, before it forks the first worker."""
    _feed_the_watchdog_from_the_main_loop(server)
    _announce_the_instance_stop(server)


def _share_the_instance_stop(server):
    """One byte of memory shared by the master and every worker it will fork: 1 once the
    whole instance stops (SIGTERM, SIGINT or SIGQUIT to the master). Workers stop for a
    reload (SIGHUP) too, on the very same SIGTERM from the master; only this byte tells
    readiness, in a draining worker, whether the instance goes on serving."""
    import mmap  # noqa: PLC0415 -- only the master creates it, once

    server.agented_instance_stop = mmap.mmap(-1, 1)  # anonymous, shared across fork


def _announce_the_instance_stop(server):
    """Set the shared byte before the master passes a stop on to its workers."""
    for name in ("handle_term", "handle_int", "handle_quit"):
        handler = getattr(server, name)

        def announce_then_handle(handler=handler):
            server.agented_instance_stop[0] = 1
            handler()

        setattr(server, name, announce_then_handle)


def _feed_the_watchdog_from_the_main_loop(server):
    """Under systemd's WatchdogSec= (WATCHDOG_USEC is set), tell systemd the master is alive on
    every turn of its main loop, which wakes at least once a second and calls murder_workers()
    each time. A master that stops turning (hung, stopped) stops feeding the watchdog, and
    systemd kills and restarts the service; a thread would go on feeding it regardless."""
    if not os.environ.get("WATCHDOG_USEC"):
        return
    if os.environ.get("WATCHDOG_PID", str(os.getpid())) != str(os.getpid()):
        return
    from gunicorn import systemd  # noqa: PLC0415 -- only under a watchdog

    murder_workers = server.murder_workers

    def murder_workers_and_feed_the_watchdog():
        systemd.sd_notify("WATCHDOG=1", server.log)
        murder_workers()

    server.murder_workers = murder_workers_and_feed_the_watchdog
    server.log.info(
        "feeding systemd's watchdog (%g s) from the main loop",
        int(os.environ["WATCHDOG_USEC"]) / 1e6,
    )


def _keep_secrets():
    """Read, or generate once, the secrets the backend keeps for itself when they are not set
    (SECRET_KEY, API_TOKEN), here in the master and before any worker: a key file that cannot
    serve, or a state directory that cannot hold one, stops Gunicorn with one line, where every
    worker would fail to boot with a traceback."""
    directory = os.path.dirname(_config["AGENTED_DB_PATH"])
    with _app_modules_for_the_master():
        from app import secret_key  # noqa: PLC0415 -- standard library only, forgotten below

        for name in secret_key.FILES:
            if _config[name]:
                continue
            try:
                secret_key.load_or_create(directory, name)
            except secret_key.SecretFileError as error:
                raise SystemExit(f"agented: {error}") from None
            except OSError as error:
                raise SystemExit(
                    f"agented: {name} is not set and cannot be kept in {directory}"
                    f" ({error.strerror}): set {name}, or AGENTED_DB_PATH to a writable place"
                ) from None


def _migrate(server):
    """Bring the database to this release's schema, once, before any worker serves: workers
    never migrate and readiness only reads. A failure stops Gunicorn with one line (SystemExit,
    like an invalid setting); a database newer than the code is left alone, and readiness
    answers 503 on it unless this release is compatible with it."""
    import sqlite3  # noqa: PLC0415 -- only the master needs it, and only here

    path = _config["AGENTED_DB_PATH"]
    with _app_modules_for_the_master():
        from app import db  # noqa: PLC0415 -- standard library only, forgotten again below

        try:
            version = db.migrate(path)
            problem = _compatibility_problem(db, path)
        except (sqlite3.Error, OSError) as error:
            raise SystemExit(f"agented: cannot migrate the database {path}: {error}") from None
    if problem:
        server.log.error("database %s: %s: not ready", path, problem)
    else:
        server.log.info("database %s at schema version %d", path, version)


def _compatibility_problem(db, path):
    connection = db.connect_read_only(path)
    try:
        return db.compatibility_problem(connection)
    finally:
        connection.close()


def _raise_open_files_limit(server):
    """Make room for GUNICORN_WORKER_CONNECTIONS open sockets per worker."""
    try:
        import resource  # noqa: PLC0415 -- not on every platform
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = worker_connections + 256  # plus listeners, database files, logs
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as error:
        server.log.warning("cannot raise the open files limit to %d: %s", target, error)
        return
    if target < needed:
        server.log.warning(
            "open files limit %d (hard) is below GUNICORN_WORKER_CONNECTIONS=%d plus margin",
            target,
            worker_connections,
        )


def post_fork(server, worker):
    """On Linux, have the kernel send this worker SIGTERM the instant the master dies.

    Orphaned workers then start their graceful shutdown at once: event streams end and the
    worker leaves, so the service manager, which waits for every process of the service to
    exit before it restarts it, is not held up by workers that only notice the dead master at
    their next heartbeat.
    """
    _answer_unparsable_requests_in_json()
    worker.agented_instance_stop = getattr(server, "agented_instance_stop", None)
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        server.log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != server.pid:
        sys.exit(0)  # the master died before prctl took effect: no signal will come


def _answer_unparsable_requests_in_json():
    """Gunicorn answers requests it cannot parse (400, 414 for a long request line, 431 for
    headers too large) and errors outside the app (500) itself, with an HTML page. Give them the
    app's JSON error shape instead; what was wrong stays in Gunicorn's log, not in the answer."""
    from gunicorn import util  # noqa: PLC0415 -- only the workers need it

    def write_json_error(sock, status_int, reason, mesg):
        util.write_nonblock(sock, _json_error_response(status_int, reason))

    util.write_error = write_json_error


def post_worker_init(worker):
    """Tell the app when this worker stops (worker.alive turns false) so that its event
    streams end at once; clients resume on a live worker with Last-Event-ID."""
    extensions = getattr(worker.wsgi, "extensions", {})
    lifecycle = extensions.get("agented_lifecycle")
    if lifecycle is not None:
        lifecycle.attach(lambda: worker.alive, _instance_serving(worker))
    _stop_accepting_at_once(worker)
    _notice_stops_promptly(worker, lifecycle)
    _bound_connections(worker)


def _instance_serving(worker):
    """Whether the instance this worker belongs to goes on serving: its master is alive and
    has not been told to stop. A worker drained by a reload belongs to a serving instance."""
    stop = worker.agented_instance_stop

    def serving():
        return os.getppid() == worker.ppid and (stop is None or stop[0] == 0)

    return serving


def _stop_accepting_at_once(worker):
    """Stop taking connections off the listening socket the moment a stop signal arrives.

    Gunicorn's gevent worker only stops its servers when its main loop next looks at
    worker.alive; until then it goes on accepting connections it will serve while it drains.
    The listening socket stays open (systemd, the master or the new workers hold it), so a
    connection not taken here waits in the backlog for a live worker.
    """
    try:
        import gevent  # noqa: PLC0415 -- only in gevent workers
        from gunicorn.workers import ggevent  # noqa: PLC0415
    except ImportError:
        return
    servers = []

    class _RecordedStreamServer(ggevent.StreamServer):
        def start(self):
            super().start()
            servers.append(self)

    ggevent.StreamServer = _RecordedStreamServer

    def leave_if_idle():
        if not any(_connections(server) for server in servers):
            _leave_now(worker, "the master is gone and no connection is open")

    def stopping_first(handler):
        def handle(signum, frame):
            for server in servers:
                server.stop_accepting()
            if os.getppid() != worker.ppid:
                # The master died (PR_SET_PDEATHSIG): with nothing in hand there is no drain to
                # wait for, and systemd restarts the service only once every process has left.
                # Asked on the event loop's next turn, not here: the signal may have interrupted
                # the server between accepting a connection and spawning its greenlet, and leaving
                # now would reset that connection (1 of 13,422 requests in docs/BENCHMARKS.md §1).
                gevent.get_hub().loop.run_callback(leave_if_idle)
            handler(signum, frame)

        return handle

    for signum, handler in (
        (signal.SIGTERM, worker.handle_exit),
        (signal.SIGQUIT, worker.handle_quit),
        (signal.SIGINT, worker.handle_quit),
    ):
        signal.signal(signum, stopping_first(handler))
    signal.siginterrupt(signal.SIGTERM, False)


def _connections(server):
    """Connections a gevent server holds (each one a greenlet of its pool), idle ones included."""
    pool = getattr(server, "pool", None)
    return 0 if pool is None else pool.size - pool.free_count()


def _leave_now(worker, why):
    """Exit this worker at once, without the interpreter's teardown of every module (tenths of a
    second on a loaded host, during which the service cannot restart)."""
    worker.log.info("worker leaving at once: %s", why)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)


def worker_exit(server, worker):
    """A worker that has drained for a stop leaves without the interpreter's teardown; one that
    failed (to boot, or later) exits the usual way, with its status for the master."""
    error = sys.exc_info()[1]  # the SystemExit on its way out of the worker
    if worker.booted and not worker.alive and isinstance(error, SystemExit) and not error.code:
        _leave_now(worker, "drained")


def _bound_connections(worker):
    """Keep one client from taking every connection of the worker (each one a greenlet of
    GUNICORN_WORKER_CONNECTIONS): at most GUNICORN_CONNECTIONS_PER_CLIENT per client address,
    the rest answered 429 at once, and GUNICORN_HEADER_TIMEOUT_SECS for a new connection's
    first request head. Gunicorn itself bounds the heads of later requests by its keep-alive
    timeout, but not the first one, and none at all when GUNICORN_KEEPALIVE is 0."""
    import collections  # noqa: PLC0415 -- only the workers need these
    import socket  # noqa: PLC0415

    import gevent  # noqa: PLC0415

    per_client = _config["GUNICORN_CONNECTIONS_PER_CLIENT"]
    header_timeout = _config["GUNICORN_HEADER_TIMEOUT_SECS"]
    open_by_address = collections.Counter()
    head_deadlines = {}  # id(client socket) -> what ends it, until its first request head

    def end_connection(client, address):
        # Shutting the socket down ends the parser's wait as a client disconnection would
        # (Gunicorn logs it at debug level); raising into the greenlet would be a 500.
        worker.log.debug("closing a connection from %s that sent no request head", address)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)

    handle, handle_request = worker.handle, worker.handle_request

    def bounded_handle(listener, client, addr):
        address = addr[0] if isinstance(addr, tuple) else ""  # unix sockets have no address
        if open_by_address[address] >= per_client:
            _refuse_connection(client, 429, "Too many connections from this address")
            return
        open_by_address[address] += 1
        head_deadlines[id(client)] = gevent.spawn_later(
            header_timeout, end_connection, client, address
        )
        try:
            handle(listener, client, addr)
        finally:
            deadline = head_deadlines.pop(id(client), None)
            if deadline is not None:
                deadline.kill(block=False)
            open_by_address[address] -= 1
            if not open_by_address[address]:
                del open_by_address[address]

    def handle_request_once_its_head_arrived(listener_name, req, sock, addr):
        deadline = head_deadlines.pop(id(sock), None)
        if deadline is not None:
            deadline.kill(block=False)
        return handle_request(listener_name, req, sock, addr)

    worker.handle = bounded_handle
    worker.handle_request = handle_request_once_its_head_arrived


def _json_error_response(status, reason, headers=""):
    """A whole HTTP response in the app's JSON error shape, for answers Gunicorn's worker writes
    itself; ``headers`` are extra header lines, each ending in CRLF."""
    import json  # noqa: PLC0415 -- only the workers need it

    body = json.dumps({"error": reason, "status": status}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n{headers}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _refuse_connection(client, status, reason):
    """Answer a connection with a JSON error and close it, before reading anything from it."""
    try:
        client.settimeout(1)
        client.sendall(_json_error_response(status, reason, "Retry-After: 1\r\n"))
    except OSError:
        pass  # the client went away: nothing to tell it
    finally:
        client.close()


_STOP_CHECK_SECS = 0.1


def _notice_stops_promptly(worker, lifecycle):
    """Have the gevent worker's main loop check for a stop ten times a second.

    Gunicorn's gevent worker sleeps a whole second between looks at worker.alive, so a stop
    (SIGTERM from the master, or the master's death through PR_SET_PDEATHSIG) waited up to a
    second before the worker drained and left, and the service manager restarts only after
    every worker has left. The loop looks the module `gevent` up in gunicorn's ggevent module
    at each turn; this gives it one whose sleep is at most _STOP_CHECK_SECS.

    Once the loop sees the stop, the app ends its event streams at once and gets one more
    short sleep to finish them: Gunicorn's drain then finds no open request, whereas an
    orphaned worker would otherwise exit mid-stream at its first heartbeat.
    """
    try:
        import gevent  # noqa: PLC0415 -- only in gevent workers, after their monkey-patching
        from gunicorn.workers import ggevent  # noqa: PLC0415
    except ImportError:
        return

    stop_seen = []

    class _GeventWithShortSleeps:
        def __getattr__(self, name):
            return getattr(gevent, name)

        @staticmethod
        def sleep(seconds=0, ref=True):
            gevent.sleep(min(seconds, _STOP_CHECK_SECS), ref)
            if not worker.alive and lifecycle is not None and not stop_seen:
                stop_seen.append(True)
                lifecycle.stopped()
                gevent.sleep(_STOP_CHECK_SECS, ref)

    if getattr(ggevent, "gevent", None) is gevent:
        ggevent.gevent = _GeventWithShortSleeps()


def pre_request(worker, req):
    """Close the connection after the response, instead of keeping it alive, for:

    - an event stream: when it ends (the worker stops), the client reconnects on a new
      connection, which reaches a live worker, and the stopping one is not kept waiting;
    - a body larger than the app accepts, or of unknown length (chunked): the app answers
      413 without reading it, and Gunicorn would otherwise read the rest to reuse the
      connection.
    """
    if req.path == _EVENT_STREAM_PATH:
        req.force_close()
        return
    for name, value in req.headers:
        if name == "TRANSFER-ENCODING" or (
            name == "CONTENT-LENGTH" and value.isdigit() and int(value) > _MAX_BODY_BYTES
        ):
            req.force_close()
            return


#
# Metrics (prometheus_client's multiprocess mode)
#
# Each worker keeps its metric values in files of one directory, and GET /metrics sums them
# over all workers. The directory is under the service's runtime directory (systemd's
# RUNTIME_DIRECTORY, emptied by systemd when the service stops), else a new one in the
# temporary directory, and it is emptied here at every start: values of workers of an earlier
# run would otherwise be summed in. It must be set before any worker imports prometheus_client.


def _metrics_directory():
    """The directory, and whether it is a temporary one of this server's own."""
    import tempfile  # noqa: PLC0415 -- only here

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return os.environ["PROMETHEUS_MULTIPROC_DIR"], False
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return os.path.join(runtime, "metrics"), False
    # Never shared with another server: each would empty the other's values.
    return tempfile.mkdtemp(prefix="agented-metrics-"), True


def _empty_metrics_directory(directory):
    import shutil  # noqa: PLC0415 -- only here

    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, mode=0o700, exist_ok=True)


_METRICS_DIR, _METRICS_DIR_IS_TEMPORARY = _metrics_directory()
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _METRICS_DIR


def on_exit(server):
    """A directory of our own in the temporary directory goes with the server that made it."""
    if _METRICS_DIR_IS_TEMPORARY:
        import shutil  # noqa: PLC0415 -- only here

        shutil.rmtree(_METRICS_DIR, ignore_errors=True)


def child_exit(server, worker):
    """A worker that left: its live gauges (open streams, build info) stop counting."""
    from prometheus_client import multiprocess  # noqa: PLC0415 -- the master needs it only here

    multiprocess.mark_process_dead(worker.pid, _METRICS_DIR)
