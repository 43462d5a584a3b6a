"""Development server for the agented backend.

    uv run python run.py            # Flask's development server on GUNICORN_BIND
    uv run python run.py --debug    # with the interactive debugger and the code reloader

It reads the same configuration as Gunicorn (app.settings: environment, then .env) and
serves with one thread per request. Production runs Gunicorn: gunicorn -c gunicorn.conf.py
"""

from __future__ import annotations

import argparse
import sqlite3
import sys

from app import settings
from app.factory import create_app


def tcp_address(bind: str) -> tuple[str, int]:
    """(host, port) of a HOST:PORT or [IPv6]:PORT bind; the development server has no other."""
    parsed = settings.parse_bind(bind)
    if parsed.kind != "tcp":
        raise settings.SettingsError(
            f"GUNICORN_BIND={bind!r} is not allowed for run.py: use HOST:PORT or [IPv6]:PORT "
            "(unix: and fd:// need Gunicorn)"
        )
    return str(parsed.host), int(parsed.port)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--debug", action="store_true", help="debug mode: interactive debugger and reloader"
    )
    args = parser.parse_args(argv)
    try:
        # No Gunicorn master here to migrate before serving: the app does it at start.
        app = create_app(migrate=True)
        host, port = tcp_address(app.config["GUNICORN_BIND"])
    except settings.SettingsError as error:
        raise SystemExit(f"agented: invalid configuration: {error}") from None
    except (sqlite3.Error, OSError) as error:
        raise SystemExit(f"agented: cannot migrate the database: {error}") from None
    app.run(host=host, port=port, debug=args.debug, use_reloader=args.debug, threaded=True)


if __name__ == "__main__":
    main(sys.argv[1:])
