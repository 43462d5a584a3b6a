"""Command line of the settings, run from the backend directory::

    python -m app.settings example            # print .env.example
    python -m app.settings example --check    # exit 1 if .env.example is stale
    python -m app.settings check              # validate the environment and .env
    python -m app.settings get NAME           # print one effective value (never a secret)
    python -m app.settings local-url          # http://HOST:PORT to reach GUNICORN_BIND locally

Every failure is one line on stderr and exit status 1.
"""

import argparse
import sys

from . import (
    EXAMPLE_FILE,
    SETTINGS,
    SETTINGS_BY_NAME,
    SettingsError,
    load,
    parse_bind,
    render_example,
    unknown_names,
)

_PROG = "python -m app.settings"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=_PROG, description="The agented backend's configuration.")
    commands = parser.add_subparsers(dest="command", required=True)
    example = commands.add_parser("example", help="print .env.example")
    example.add_argument(
        "--check", action="store_true", help="exit 1 if the committed .env.example differs"
    )
    commands.add_parser("check", help="validate the environment and .env; exit 1 if invalid")
    get = commands.add_parser("get", help="print the effective value of one variable")
    get.add_argument("name", choices=[setting.name for setting in SETTINGS], metavar="NAME")
    commands.add_parser(
        "local-url", help="print the http:// base URL a client on this host uses to reach Gunicorn"
    )
    return parser


def _example(check_only: bool) -> int:
    text = render_example()
    if not check_only:
        sys.stdout.write(text)
        return 0
    try:
        with open(EXAMPLE_FILE, encoding="utf-8") as stream:
            current = stream.read()
    except FileNotFoundError:
        current = ""
    if current == text:
        return 0
    print(
        f"{EXAMPLE_FILE} is out of date: regenerate it with {_PROG} example > .env.example",
        file=sys.stderr,
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "example":
        return _example(args.check)
    try:
        values = load()
    except SettingsError as error:
        print(f"agented: invalid configuration: {error}", file=sys.stderr)
        return 1
    if args.command == "local-url":
        try:
            print(parse_bind(str(values["GUNICORN_BIND"])).local_url)
        except SettingsError as error:
            print(f"agented: {error}", file=sys.stderr)
            return 1
        return 0
    if args.command == "get":
        if SETTINGS_BY_NAME[args.name].secret:
            print("agented: secrets are not printed", file=sys.stderr)
            return 1
        value = values[args.name]
        print("" if value is None else value)
        return 0
    for note in unknown_names():
        print(f"agented: warning: .env sets an unknown variable: {note}", file=sys.stderr)
    print("configuration OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
