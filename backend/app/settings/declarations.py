"""The declaration of every environment variable the agented backend reads.

Only data: what each variable is for, where .env.example documents it and what is valid. The
rules for a declaration and for a value are in :mod:`.schema`; loading, the .env file and
the rendering of .env.example are in the package itself.
"""

from .schema import Setting


def _setting(*, description: str, **fields: object) -> Setting:
    """A Setting whose description may be wrapped over several lines in the source."""
    return Setting(description=" ".join(description.split()), **fields)  # type: ignore[arg-type]


SETTINGS: tuple[Setting, ...] = (
    # --- Security ---
    _setting(
        name="SECRET_KEY",
        section="Security",
        kind="string",
        default=None,
        description="""Key that signs sessions and tokens (Flask's SECRET_KEY). Unset: a random
        key is generated once into .secret_key next to the database (mode 0600) and reused; set
        it explicitly when several hosts must share it.""",
        secret=True,
    ),
    _setting(
        name="API_TOKEN",
        section="Security",
        kind="string",
        default=None,
        description="""Token every request under /api/ must send as Authorization: Bearer
        <token>, the event stream included (not accepted in the URL, which logs keep); without
        it the answer is 401. Only the GitHub webhook, which is signed, needs none; /health/ is
        open. Unset: a random token is generated once into .api_token next to the database
        (mode 0600) and reused; read it on the host, e.g. sudo cat /var/lib/agented/.api_token
        where the Ansible role deployed the backend.""",
        secret=True,
    ),
    # --- Server ---
    _setting(
        name="GUNICORN_BIND",
        section="Server",
        kind="bind",
        default="0.0.0.0:20000",
        description="""Address Gunicorn listens on; run.py uses it too (HOST:PORT forms only).
        Ignored when systemd hands over the listening socket (socket activation).""",
    ),
    _setting(
        name="LOG_LEVEL",
        section="Server",
        kind="choice",
        default="info",
        description="Verbosity of the application and Gunicorn logs.",
        choices=("debug", "info", "warning", "error", "critical"),
    ),
    _setting(
        name="GUNICORN_CONTROL_SOCKET",
        section="Server",
        kind="socket-path",
        default=None,
        description="""Where Gunicorn puts its control socket (for gunicornc). Unset: Gunicorn's
        default, $XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl; off: no control
        socket; otherwise an absolute path, e.g. /run/agented/gunicorn.ctl under systemd.""",
    ),
    _setting(
        name="TZ",
        section="Server",
        kind="timezone",
        default=None,
        description="""Time zone of the process (log timestamps, agent runs). Unset: the
        system's time zone. Timestamps in the API are always UTC.""",
    ),
    _setting(
        name="METRICS_ALLOWED_IPS",
        section="Server",
        kind="networks",
        default="127.0.0.1,::1",
        description="""Addresses and networks (comma-separated, e.g. 127.0.0.1,::1,10.0.0.0/8)
        that may read GET /metrics, the Prometheus counters; any other client gets 403. Empty:
        nobody.""",
    ),
    # --- CORS ---
    _setting(
        name="CORS_ALLOWED_ORIGINS",
        section="CORS",
        kind="origins",
        default=None,
        description="""Browser origins allowed to call the API and open the event stream, e.g.
        your front end's https://app.example.com. Unset: no cross-origin access, no origin gets
        Access-Control-Allow-Origin (same-origin pages and non-browser clients are unaffected). *
        allows any origin and logs a warning at start.""",
    ),
    # --- Database ---
    _setting(
        name="AGENTED_DB_PATH",
        section="Database",
        kind="path",
        default="agented.db",
        description="""SQLite database file; its directory is created if missing and also holds
        .secret_key and .api_token. The default resolves to backend/agented.db; deployments point
        it at a state directory such as /var/lib/agented/agented.db.""",
    ),
    _setting(
        name="AGENTED_DB_LOCK_WAIT_SECS",
        section="Database",
        kind="int",
        default="5",
        description="""Seconds a webhook delivery waits for the database's write lock while
        another connection holds it. The worker keeps serving meanwhile; past it the delivery
        gets 503 with Retry-After, and is not stored, so it can be redelivered.""",
        minimum=1,
        maximum=60,
    ),
    # --- GitHub ---
    _setting(
        name="GITHUB_WEBHOOK_SECRET",
        section="GitHub",
        kind="string",
        default=None,
        description="""Secret of the GitHub webhook; every delivery must carry a valid
        X-Hub-Signature-256. Unset: the webhook answers 503 and accepts nothing.""",
        secret=True,
    ),
    _setting(
        name="GITHUB_WEBHOOK_MAX_BYTES",
        section="GitHub",
        kind="int",
        default="26214400",
        description="""Largest webhook body accepted, in bytes (GitHub caps payloads at 25 MB).
        Larger deliveries get 413 without the body being read.""",
        minimum=1024,
        maximum=1073741824,
    ),
    _setting(
        name="GITHUB_WEBHOOK_READ_TIMEOUT_SECS",
        section="GitHub",
        kind="int",
        default="30",
        description="""Seconds a client gets to send a whole webhook body. A body not complete by
        then is answered 408 and its connection closed, so a slow or stalled client cannot hold
        a worker's memory and connection indefinitely.""",
        minimum=1,
        maximum=3600,
    ),
    _setting(
        name="GITHUB_WEBHOOK_MEMORY_BUDGET_BYTES",
        section="GitHub",
        kind="int",
        default="67108864",
        description="""Bytes of webhook bodies one worker holds in memory at once, across all
        its requests (default 64 MiB). While its signature is checked a body takes 768 KiB of it
        at most (the rest is spooled to a temporary file in TMPDIR); only a verified body is
        read whole into memory. Beyond the budget a delivery gets 503 with Retry-After. Keep it at
        least GITHUB_WEBHOOK_MAX_BYTES, or the largest deliveries are always refused.""",
        minimum=1048576,
        maximum=68719476736,
    ),
    _setting(
        name="GITHUB_WEBHOOK_UNSIGNED_PER_CLIENT",
        section="GitHub",
        kind="int",
        default="4",
        description="""Webhook bodies one client address may have in flight at once, per
        worker, before their signature is verified; more get 429 with Retry-After. Behind a
        reverse proxy every client has the proxy's address (forwarding headers are not
        trusted): raise it there.""",
        minimum=1,
        maximum=100000,
    ),
    # --- AI/LLM ---
    _setting(
        name="ANTHROPIC_API_KEY",
        section="AI/LLM",
        kind="string",
        default=None,
        description="API key given to agent runs (as ANTHROPIC_API_KEY).",
        secret=True,
    ),
    _setting(
        name="ANTHROPIC_API_BASE",
        section="AI/LLM",
        kind="url",
        default=None,
        description="""Base URL of the Anthropic API or a compatible gateway, given to agent
        runs as ANTHROPIC_BASE_URL. Unset: the client's default.""",
    ),
    # --- Plugins ---
    _setting(
        name="CLAUDE_PLUGIN_ROOT",
        section="Plugins",
        kind="path",
        default=None,
        description="""Directory holding Claude Code plugins, given to agent runs as
        CLAUDE_PLUGIN_ROOT.""",
    ),
    _setting(
        name="SKILLS_PLAYGROUND_CWD",
        section="Plugins",
        kind="path",
        default=None,
        description="""Working directory of skill playground runs. Unset: the agent run's own
        working directory.""",
    ),
    # --- Tuning ---
    _setting(
        name="GUNICORN_WORKERS",
        section="Tuning",
        kind="int",
        default="2",
        description="""Gunicorn worker processes. Each is a gevent event loop holding many
        connections; one or two per core is plenty.""",
        minimum=1,
        maximum=64,
    ),
    _setting(
        name="GUNICORN_WORKER_CONNECTIONS",
        section="Tuning",
        kind="int",
        default="4096",
        description="""Simultaneous connections per worker, event streams included. Gunicorn
        raises the open-files limit to fit when the hard limit allows.""",
        minimum=1,
        maximum=100000,
    ),
    _setting(
        name="GUNICORN_TIMEOUT",
        section="Tuning",
        kind="int",
        default="30",
        description="""Seconds a worker may block its event loop before the master restarts it
        (0 disables).""",
        minimum=0,
        maximum=3600,
    ),
    _setting(
        name="GUNICORN_GRACEFUL_TIMEOUT",
        section="Tuning",
        kind="int",
        default="10",
        description="""Seconds a stopping worker gets to finish its requests (on stop, restart
        and reload). Event streams end at once and clients resume with Last-Event-ID. Keep it
        below the service manager's stop timeout (systemd TimeoutStopSec=30).""",
        minimum=0,
        maximum=3600,
    ),
    _setting(
        name="GUNICORN_KEEPALIVE",
        section="Tuning",
        kind="int",
        default="2",
        description=(
            "Seconds an idle keep-alive connection is held open for the next request. A stopping"
            " worker waits for idle connections this long, so a short value keeps restarts fast."
        ),
        minimum=0,
        maximum=300,
    ),
    _setting(
        name="GUNICORN_HEADER_TIMEOUT_SECS",
        section="Tuning",
        kind="int",
        default="10",
        description="""Seconds a new connection has to send its first request's line and
        headers, whatever GUNICORN_KEEPALIVE is; a client that takes longer is disconnected, so
        slow headers cannot hold the worker's connections.""",
        minimum=1,
        maximum=300,
    ),
    _setting(
        name="GUNICORN_CONNECTIONS_PER_CLIENT",
        section="Tuning",
        kind="int",
        default="128",
        description="""Connections one client address may hold open in a worker at once, event
        streams included; more get 429 with Retry-After at once. Behind a reverse proxy every
        client has the proxy's address: raise it there, or limit clients at the proxy.""",
        minimum=1,
        maximum=100000,
    ),
    _setting(
        name="GUNICORN_RESERVED_CONNECTIONS",
        section="Tuning",
        kind="int",
        default="64",
        description="""Connections of each worker that event streams may not take, kept for
        health checks, webhooks and API reads: a stream beyond GUNICORN_WORKER_CONNECTIONS less
        this many gets 503 with Retry-After.""",
        minimum=0,
        maximum=100000,
    ),
    _setting(
        name="STALE_CONVERSATION_THRESHOLD_SECS",
        section="Tuning",
        kind="int",
        default="1800",
        description="Seconds without activity after which an active conversation is marked stale.",
        minimum=1,
        maximum=31536000,
    ),
    _setting(
        name="STALE_EXECUTION_THRESHOLD_SECS",
        section="Tuning",
        kind="int",
        default="900",
        description="Seconds after which an execution still running is marked stale.",
        minimum=1,
        maximum=31536000,
    ),
    _setting(
        name="SSE_REPLAY_LIMIT",
        section="Tuning",
        kind="int",
        default="500",
        description="""Most missed events replayed to an event-stream client that reconnects
        with Last-Event-ID (the newest ones; 0 disables replay).""",
        minimum=0,
        maximum=100000,
    ),
    _setting(
        name="SSE_HEARTBEAT_SECS",
        section="Tuning",
        kind="int",
        default="15",
        description="Seconds between heartbeat comments on an idle event stream.",
        minimum=1,
        maximum=3600,
    ),
    _setting(
        name="SSE_POLL_INTERVAL_MS",
        section="Tuning",
        kind="int",
        default="100",
        description="""Milliseconds between two reads of new events from the database by each
        worker; the upper bound of the delay before an event written by another worker is
        delivered.""",
        minimum=10,
        maximum=10000,
    ),
    _setting(
        name="SSE_WRITE_TIMEOUT_SECS",
        section="Tuning",
        kind="int",
        default="30",
        description="""Seconds an event stream waits for its client to take what it sends
        before disconnecting it: a client that stops reading (its connection's buffers stay
        full) is dropped, and resumes with Last-Event-ID when it reconnects. Checked at every
        poll (SSE_POLL_INTERVAL_MS).""",
        minimum=1,
        maximum=3600,
    ),
    # --- Experimental ---
    _setting(
        name="CLAUDE_CODE_EXPERIMENTAL_AGENT_TEAMS",
        section="Experimental",
        kind="flag",
        default=None,
        description="""1 lets agent runs use Claude Code's experimental agent teams (passed
        through as CLAUDE_CODE_EXPERIMENTAL_AGENT_TEAMS=1).""",
        choices=("0", "1"),
    ),
)
