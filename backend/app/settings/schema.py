"""What a declaration and a value may be: the Setting record, its kinds, validation, the
parser of GUNICORN_BIND and the quoting of .env values.

Standard library only and relative imports only, like the rest of the package: deployment
tooling loads the package by path under its own name on a controller without the backend's
dependencies.
"""

# No `from __future__ import annotations`: dataclasses then never has to resolve string
# annotations through sys.modules, whatever name a loader gives this module.
import dataclasses
import ipaddress
import os
import re
import urllib.parse

SECTIONS = (
    "Security",
    "Server",
    "CORS",
    "Database",
    "GitHub",
    "AI/LLM",
    "Plugins",
    "Tuning",
    "Experimental",
)

# Kind -> what a valid value looks like. The text is the legend printed at the
# top of .env.example; the rules themselves are in check().
KINDS = {
    "string": "any text on one line",
    "int": "a whole number from MIN to MAX (written int MIN..MAX)",
    "choice": "one of the listed words (written choice a,b,c)",
    "flag": "0 (off) or 1 (on)",
    "bind": "HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N",
    "path": "a file system path, relative to the backend directory unless absolute",
    "socket-path": "off, or an absolute path",
    "url": "an http:// or https:// URL",
    "origins": "* or a comma-separated list of origins such as https://app.example.com",
    "timezone": "a time zone name from the tz database, such as UTC or Europe/Berlin",
    "networks": "a comma-separated list of IP addresses and networks such as"
    " 127.0.0.1,::1,10.0.0.0/8 (empty: none)",
}

_NAME_RE = re.compile(r"[A-Z][A-Z0-9_]*")
SPEC_SEPARATOR = " | "


class SettingsError(ValueError):
    """Invalid configuration. The message is one line meant for the user."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """One environment variable: what it is for, where it is documented, what is valid."""

    name: str
    section: str
    kind: str
    default: str | None
    description: str
    secret: bool = False
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if not _NAME_RE.fullmatch(self.name):
            problems.append("the name must be upper case letters, digits and _")
        if self.section not in SECTIONS:
            problems.append(f"unknown section {self.section!r}")
        if self.kind not in KINDS:
            problems.append(f"unknown kind {self.kind!r}")
        if self.kind == "int" and (self.minimum is None or self.maximum is None):
            problems.append("an int needs a minimum and a maximum")
        if self.kind != "int" and (self.minimum is not None or self.maximum is not None):
            problems.append("only an int has a minimum and a maximum")
        if self.kind in ("choice", "flag") and not self.choices:
            problems.append(f"a {self.kind} needs choices")
        if self.kind == "flag" and self.choices != ("0", "1"):
            problems.append("a flag's choices are 0 and 1")
        if self.kind not in ("choice", "flag") and self.choices:
            problems.append("only a choice or a flag has choices")
        if any("," in choice or not choice or choice != choice.strip() for choice in self.choices):
            problems.append("a choice must be a non-empty word without commas")
        if " ".join(self.description.split()) != self.description or not self.description:
            problems.append("the description must be one paragraph with single spaces")
        if self.description.startswith("type: "):
            problems.append("the description must not start with 'type: '")
        if self.default is not None:
            if (
                not self.default
                or self.default != self.default.strip()
                or SPEC_SEPARATOR in self.default
            ):
                problems.append("a default must be non-empty, without surrounding spaces or ' | '")
            elif self.secret:
                problems.append("a secret has no default")
            elif (problem := _check(self, self.default)) is not None:
                problems.append(f"the default is invalid: {problem}")
        if problems:
            raise ValueError(f"setting {self.name}: " + "; ".join(problems))

    @property
    def spec(self) -> str:
        """The machine-readable line of .env.example, without the leading '# '."""
        rule = self.kind
        if self.kind == "int":
            rule += f" {self.minimum}..{self.maximum}"
        elif self.choices:
            rule += " " + ",".join(self.choices)
        parts = [f"type: {rule}"]
        parts.append("no default" if self.default is None else f"default: {self.default}")
        if self.secret:
            parts.append("secret")
        return SPEC_SEPARATOR.join(parts)


# --- GUNICORN_BIND ----------------------------------------------------------------------------

_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_PORT_RE = re.compile(r"[0-9]{1,5}")
_FD_RE = re.compile(r"[0-9]{1,9}")
_BIND_NAME = "GUNICORN_BIND"


@dataclasses.dataclass(frozen=True)
class Bind:
    """Where Gunicorn listens, as GUNICORN_BIND says: a TCP address, a unix socket or an
    inherited file descriptor. Built by :func:`parse_bind`, which has checked every field."""

    kind: str  # "tcp", "unix" or "fd"
    host: str | None = None  # tcp: a hostname, IPv4 or IPv6 address, without brackets
    port: int | None = None  # tcp
    path: str | None = None  # unix
    fd: int | None = None  # fd

    @property
    def address(self) -> str:
        """HOST:PORT or [IPv6]:PORT for tcp, the path for unix: what systemd's ListenStream=
        takes. An fd has no address of its own (the socket is inherited)."""
        if self.kind == "tcp":
            return f"{_bracketed(self.host)}:{self.port}"
        if self.kind == "unix":
            return str(self.path)
        raise SettingsError(f"{_BIND_NAME}='fd://{self.fd}' names no address: it is inherited")

    @property
    def local_url(self) -> str:
        """The base URL a client on this host uses: a wildcard address (0.0.0.0, ::) is not
        one a client can connect to, so it becomes the loopback address of its family."""
        if self.kind != "tcp":
            shown = f"unix:{self.path}" if self.kind == "unix" else f"fd://{self.fd}"
            raise SettingsError(
                f"{_BIND_NAME}={shown!r} has no http:// URL: use HOST:PORT or [IPv6]:PORT"
            )
        host = str(self.host)
        try:
            if ipaddress.ip_address(host).is_unspecified:
                host = "::1" if ":" in host else "127.0.0.1"
        except ValueError:
            pass  # a hostname
        return f"http://{_bracketed(host)}:{self.port}"


def _bracketed(host: str | None) -> str:
    """The host as it is written before :PORT: an IPv6 address needs brackets."""
    text = str(host)
    return f"[{text}]" if ":" in text else text


def _valid_port(text: str) -> bool:
    return bool(_PORT_RE.fullmatch(text)) and 1 <= int(text) <= 65535


def _bind_or_none(value: str) -> Bind | None:
    """The Bind that ``value`` describes, or None; the forms Gunicorn accepts that we refuse
    (a host or port left out, tcp://) are refused so that every consumer agrees."""
    if any(character in value for character in "\n\r\0"):
        return None
    if value.startswith("unix:"):
        # Gunicorn takes unix:PATH and unix://PATH alike.
        path = value[len("unix:") :]
        path = path[2:] if path.startswith("//") else path
        return Bind("unix", path=path) if path else None
    if value.startswith("fd://"):
        number = value[len("fd://") :]
        return Bind("fd", fd=int(number)) if _FD_RE.fullmatch(number) else None
    if value.startswith("["):
        host, _, port = value[1:].partition("]:")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
        return Bind("tcp", host=host, port=int(port)) if _valid_port(port) else None
    host, _, port = value.rpartition(":")
    if not _valid_port(port):
        return None
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return None
    elif not _HOSTNAME_RE.fullmatch(host):
        return None
    return Bind("tcp", host=host, port=int(port))


def parse_bind(value: str) -> Bind:
    """The one reading of GUNICORN_BIND. Raises SettingsError, one line naming the variable,
    the value and what is allowed."""
    bind = _bind_or_none(value)
    if bind is None:
        raise SettingsError(f"{_BIND_NAME}={value!r} is not allowed: use {KINDS['bind']}")
    return bind


# --- Validation -------------------------------------------------------------------------------

# At most 18 digits: every range fits, and int() of a 5000-digit text would raise (Python's
# limit on digits) instead of being refused.
_INT_RE = re.compile(r"[+-]?[0-9]{1,18}")


def _http_url(value: str) -> urllib.parse.SplitResult | None:
    """``value`` split as an http:// or https:// URL with a host and a valid port, else None."""
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        return None
    return parts


def _valid_url(value: str) -> bool:
    return _http_url(value) is not None


def _valid_origin(origin: str) -> bool:
    parts = _http_url(origin)
    return (
        parts is not None
        and not parts.path
        and not parts.query
        and not parts.fragment
        and "@" not in parts.netloc
    )


def split_origins(value: str) -> tuple[str, ...]:
    return tuple(origin.strip() for origin in value.split(","))


def split_networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The networks of a comma-separated list (a lone address is a /32 or /128); empty items
    are skipped. ValueError naming the first item that is neither."""
    networks = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(networks)


def _valid_networks(value: str) -> bool:
    try:
        split_networks(value)
    except ValueError:
        return False
    return True


def _valid_timezone(value: str) -> bool:
    import zoneinfo  # noqa: PLC0415 -- only needed when TZ is set

    try:
        zoneinfo.ZoneInfo(value)
    except Exception:
        return False
    return True


def _allowed(setting: Setting) -> str:
    """What a valid value of this setting looks like, as the end of an error message."""
    if setting.kind == "int":
        return f"use a whole number from {setting.minimum} to {setting.maximum}"
    if setting.kind in ("choice", "flag"):
        return "use one of " + ", ".join(setting.choices)
    return "use " + KINDS[setting.kind]


def _check(setting: Setting, value: str) -> str | None:
    kind = setting.kind
    if kind == "int":
        ok = bool(_INT_RE.fullmatch(value)) and (
            setting.minimum <= int(value) <= setting.maximum  # type: ignore[operator]
        )
    elif kind in ("choice", "flag"):
        ok = value in setting.choices
    elif kind == "bind":
        ok = _bind_or_none(value) is not None
    elif kind == "path":
        ok = "\0" not in value and value == value.strip()
    elif kind == "socket-path":
        ok = value == "off" or (os.path.isabs(value) and "\0" not in value)
    elif kind == "url":
        ok = _valid_url(value)
    elif kind == "origins":
        ok = value == "*" or all(_valid_origin(origin) for origin in split_origins(value))
    elif kind == "timezone":
        ok = _valid_timezone(value)
    elif kind == "networks":
        ok = _valid_networks(value)
    else:  # string
        ok = "\0" not in value
    if ok:
        return None
    return f"{_show(setting, value)} is not allowed: {_allowed(setting)}"


# --- Credentials in URLs ----------------------------------------------------------------------

# Anything that starts like a URL, up to whitespace. Quotes do not end it: RFC 3986 allows ' in
# a password, and a message quotes the raw value only after it was masked.
_URL_TOKEN_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")
# user:password@ is everything up to the LAST @ before the query or fragment: a password may
# hold an unencoded @ or / (invalid, but then an error message shows it).
_USERINFO_RE = re.compile(r"(?<=://)[^?#]*@")
# A query or fragment parameter whose name says it holds a credential, and its value.
_CREDENTIAL_PARAMETER_RE = re.compile(
    r"(?<=[?&#;])([^=&#?;\s]*(?:token|key|secret|pass|pwd|auth|sig|credential|session)"
    r"[^=&#?;\s]*=)[^&#;\s]*",
    re.IGNORECASE,
)
MASK = "***"


def _mask_url(match: "re.Match[str]") -> str:
    url = _USERINFO_RE.sub(MASK + "@", match.group(0), count=1)
    return _CREDENTIAL_PARAMETER_RE.sub(lambda parameter: parameter.group(1) + MASK, url)


def mask_url_credentials(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ***: user:password@ (or a
    lone user@) and the values of query or fragment parameters named like credentials (token,
    key, api_key, access_token, secret, password, signature, ...). Anything else is unchanged,
    and masking twice gives the same text. For showing values, never for using them."""
    return _URL_TOKEN_RE.sub(_mask_url, text)


def _show(setting: Setting, value: str) -> str:
    if setting.secret:
        return f"{setting.name}=<hidden>"
    shown = mask_url_credentials(value)
    if setting.kind == "url" and "://" not in value:
        # A URL missing its scheme is still read as one, so that its credentials are masked.
        shown = mask_url_credentials("x://" + value).removeprefix("x://")
    text = repr(shown)
    if len(text) > 80:
        text = text[:76] + "...'"
    return f"{setting.name}={text}"


# A blank or one-character secret is a mistake, not a secret.
SECRET_MIN_LENGTH = 8


def check(setting: Setting, value: str) -> str | None:
    """Validate one value. None when valid, else ONE line naming the variable, the bad value
    (hidden for secrets) and what is allowed.

    An empty value means unset and is valid. Values containing a line break are refused for
    every kind: .env files and unit files cannot carry them faithfully.
    """
    if value == "":
        return None
    if "\n" in value or "\r" in value:
        return f"{_show(setting, value)} is not allowed: values cannot contain a line break"
    if setting.secret and len(value.strip()) < SECRET_MIN_LENGTH:
        return (
            f"{_show(setting, value)} is not allowed: a secret needs at least"
            f" {SECRET_MIN_LENGTH} characters besides spaces"
        )
    return _check(setting, value)


# --- .env values ------------------------------------------------------------------------------


def dotenv_quote(value: str) -> str:
    """Quote ``value`` so that python-dotenv's parser returns it exactly: single quotes, with
    backslash and single quote escaped by a backslash. Spaces, #, quotes, $ and = survive
    (load() reads without interpolation). A line break cannot be written; check() refuses it."""
    if "\n" in value or "\r" in value:
        raise ValueError("a value with a line break cannot be written to a .env file")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def dotenv_unquote(text: str) -> str:
    """The value dotenv_quote() wrote as ``text``; the Ansible role reads its rendered .env back."""
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return re.sub(r"\\([\\'])", r"\1", text[1:-1])
    return text
