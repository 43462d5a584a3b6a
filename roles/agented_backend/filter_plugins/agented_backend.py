"""Filters that check and render the service's configuration with the backend's own rules.

The backend declares every variable in backend/app/settings/ (standard library only, relative
imports within the package). Loading that package here means the role validates
`agented_backend_env` with exactly the code the service runs at start, so the two never disagree.
"""

import difflib
import importlib.util
import ipaddress
import os
import re
import sys

from ansible.errors import AnsibleFilterError

_PACKAGES = {}


def _settings(src):
    """The backend's app.settings package from `src`, under a private name, once per directory.

    The controller has none of the backend's dependencies and may deploy several backends (say, a
    fixture release beside the real one), so it is never imported as `app`.
    """
    root = os.path.abspath(os.path.expanduser(str(src)))
    if root not in _PACKAGES:
        package = os.path.join(root, "app", "settings")
        init = os.path.join(package, "__init__.py")
        if not os.path.isfile(init):
            raise AnsibleFilterError(
                f"agented_backend_src: {src!r} is not a backend directory (no app/settings/ there)"
            )
        name = f"_agented_backend_settings_{len(_PACKAGES)}"
        spec = importlib.util.spec_from_file_location(
            name, init, submodule_search_locations=[package]
        )
        module = importlib.util.module_from_spec(spec)
        # The package's relative imports and dataclasses look it up in sys.modules.
        sys.modules[name] = module
        spec.loader.exec_module(module)
        _PACKAGES[root] = module
    return _PACKAGES[root]


def _yaml_kind(value):
    """What YAML made of a value, for messages: a user who wrote 0777, 1.10, yes or off without
    quotes got a number or a boolean, not the text they typed."""
    if isinstance(value, bool):
        return "a YAML boolean"
    if isinstance(value, (int, float)):
        return "a YAML number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _yaml_shown(value):
    """The value as YAML read it (true, 1.1, [...]), for a message."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _as_text(value):
    """The string the service gets for a value that _env_type_error() accepted. None: unset."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, str)):
        return str(value)
    raise TypeError(type(value).__name__)


def _env_type_error(setting, value, shown):
    """Why YAML's type for `value` is wrong for `setting`, or None. Numbers are accepted where
    the setting is a whole number, booleans where it is a 0/1 flag; everywhere else a value
    must be a string, since YAML silently turns 0777 into 511, 1.10 into 1.1 and off into false."""
    if value is None or isinstance(value, str):
        return None
    if setting.kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return None
    if setting.kind == "flag" and (isinstance(value, bool) or value in (0, 1)):
        return None
    return f"{shown} ({_yaml_kind(value)}) is not text: quote it"


# Role-level rules beyond the backend's own checks: a path relative to the backend directory
# would point into one release and change with the next one.
_ROLE_ABSOLUTE_KINDS = ("path",)

# systemd's MemoryMax= values.
_MEMORY_RE = re.compile(r"[0-9]+[KMGT]?|[0-9]{1,2}%|100%|infinity")
# POSIX portable user and group names, as useradd accepts them by default.
_ACCOUNT_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# Characters a unit file or a plist would read differently: whitespace splits unit settings,
# % starts a systemd specifier, quotes and backslashes are escapes, < and & are XML.
_UNSAFE_PATH_RE = re.compile(r"[\s%\\'\"<>&]|[\x00-\x1f\x7f]")


def agented_backend_input_errors(options, values):
    """One message per role variable whose value does not fit its argument spec (`options`,
    the main entry point's) or the rules of what it names; an empty list when all fit.

    Ansible's own argument check converts values to the declared type without a word (1.10 to
    "1.1", true to 1), and the role would then render exactly that; this refuses them instead.
    """
    errors = []
    for name, spec in options.items():
        if name not in values:
            continue
        value = values[name]
        kind = spec.get("type", "str")
        if kind in ("str", "path") and not isinstance(value, str):
            errors.append(
                f"{name} is {_yaml_shown(value)} ({_yaml_kind(value)}) is not text: quote it"
            )
            continue
        # -e name=2 on the command line gives the text "2": a whole number all the same.
        if kind == "int" and not (
            (isinstance(value, int) and not isinstance(value, bool))
            or (isinstance(value, str) and re.fullmatch(r"[0-9]+", value))
        ):
            errors.append(
                f"{name} is {_yaml_shown(value)} ({_yaml_kind(value)}): use a whole number"
            )
            continue
        # The text "false" would be true in a condition: refuse it rather than guess.
        if kind == "bool" and not isinstance(value, bool):
            errors.append(
                f"{name} is {_yaml_shown(value)} ({_yaml_kind(value)}): use true or false"
                f" (on the command line as JSON: -e '{{\"{name}\": false}}')"
            )
            continue
        if kind == "dict" and not isinstance(value, dict):
            errors.append(f"{name} is {_yaml_shown(value)} ({_yaml_kind(value)}): use a mapping")
            continue
        if "choices" in spec and value not in spec["choices"]:
            allowed = ", ".join(str(choice) for choice in spec["choices"])
            errors.append(f"{name} is {value!r}: use one of {allowed}")
            continue
        if name.endswith(("_user", "_group")) and not _ACCOUNT_RE.fullmatch(value):
            errors.append(
                f"{name} is {value!r}: use a user or group name of lower-case letters, digits,"
                " _ and - (at most 32, not starting with a digit or -)"
            )
        elif name == "agented_backend_memory_max" and not _MEMORY_RE.fullmatch(value):
            errors.append(
                f"{name} is {value!r}: use bytes with an optional K, M, G or T suffix (such as"
                " 1G), a percentage of the host's memory (such as 50%) or infinity"
            )
        elif name.endswith("_dir") and not (
            os.path.isabs(value) and not _UNSAFE_PATH_RE.search(value)
        ):
            errors.append(
                f"{name} is {value!r}: use an absolute path without spaces, control characters,"
                " quotes, backslashes, %, <, > or &"
            )
    return errors


def agented_backend_settings(src):
    """The declared variables as plain dicts, in declared order: name, section, default, secret."""
    return [
        {
            "name": s.name,
            "section": s.section,
            "default": s.default,
            "secret": bool(s.secret),
            "description": s.description,
        }
        for s in _settings(src).SETTINGS
    ]


def agented_backend_env_errors(env, src, stop_timeout=30, socket_activation=True):
    """One message per problem in `env` (agented_backend_env); an empty list when it is valid.

    Messages never contain the value of a secret variable, nor credentials written into a URL
    (masked by the backend's own mask_url_credentials, as GET /api/config masks them).
    """
    settings = _settings(src)
    declared = {s.name: s for s in settings.SETTINGS}
    if not isinstance(env, dict):
        return ["agented_backend_env must be a dict of variable names to values"]
    errors = []
    for name, raw in env.items():
        setting = declared.get(name)
        if setting is None:
            close = difflib.get_close_matches(str(name), list(declared), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            errors.append(
                f"agented_backend_env: {name} is not a variable the backend declares"
                f" (backend/.env.example lists them){hint}"
            )
            continue
        shown = "(secret)" if setting.secret else settings.mask_url_credentials(_yaml_shown(raw))
        if (problem := _env_type_error(setting, raw, shown)) is not None:
            errors.append(f"agented_backend_env.{name}: {problem}")
            continue
        value = _as_text(raw)
        if value is None:
            continue
        if "\n" in value or "\r" in value:
            errors.append(
                f"agented_backend_env.{name}: the value contains a newline, which .env cannot hold"
            )
            continue
        # check() masks URL credentials in the value it quotes.
        problem = settings.check(setting, value)
        if not problem and setting.kind in _ROLE_ABSOLUTE_KINDS and not os.path.isabs(value):
            problem = (
                f"{value!r} is relative: use an absolute path (a relative one is inside a release)"
            )
        if problem:
            if setting.secret:
                problem = problem.replace(repr(value), "(secret)").replace(value, "(secret)")
            errors.append(f"agented_backend_env.{name}: {problem}")
    if not errors:
        values = agented_backend_env_values(env, src)
        errors += _timeout_errors(values, stop_timeout)
        try:
            agented_backend_listen(values["GUNICORN_BIND"], src, socket_activation)
        except AnsibleFilterError as error:
            errors.append(str(error))
    return errors


def _timeout_errors(values, stop_timeout):
    """A graceful timeout the service manager would cut short with a SIGKILL."""
    graceful = int(values["GUNICORN_GRACEFUL_TIMEOUT"] or 0)
    if graceful >= stop_timeout:
        return [
            f"agented_backend_env.GUNICORN_GRACEFUL_TIMEOUT: {graceful} is not below the service"
            f" manager's stop timeout ({stop_timeout} s): use at most {stop_timeout - 1}"
        ]
    return []


def agented_backend_env_values(env, src, defaults=None):
    """Every declared variable mapped to the string the service gets, or None when unset.

    Precedence: declared default < role-derived `defaults` < the user's `env`.
    """
    values = {s.name: s.default or None for s in _settings(src).SETTINGS}
    for layer in (defaults or {}, env or {}):
        for name, raw in layer.items():
            if name in values:
                values[name] = _as_text(raw)
    return values


def agented_backend_dotenv_quote(value, src):
    """Quote a value so that python-dotenv, the service's only .env parser, reads it exactly."""
    return _settings(src).dotenv_quote(_as_text(value))


def agented_backend_dotenv_read(text, name, src):
    """The value of `name` in .env text this role rendered, or None when it is absent or unset.

    Lines end at \\n alone: the role writes no other line break, and a value may hold any other
    character (str.splitlines() would also split at \\x0b, \\x1c, \\u2028, ...).
    """
    settings = _settings(src)
    prefix = f"{name}="
    for line in (text or "").split("\n"):
        if line.startswith(prefix):
            return settings.dotenv_unquote(line[len(prefix) :]) or None
    return None


def agented_backend_listen(bind, src, socket_activation=True):
    """Where systemd's socket listens (`listen`) and the URL the readiness check asks (`url`), from
    GUNICORN_BIND, parsed by the backend's own parser. systemd's ListenStream= takes an IP
    address, not a host name, so with socket activation the host must be one."""
    settings = _settings(src)
    try:
        parsed = settings.parse_bind(bind or "")
    except settings.SettingsError as error:
        raise AnsibleFilterError(f"agented_backend_env.GUNICORN_BIND: {error}") from None
    if parsed.kind != "tcp":
        raise AnsibleFilterError(
            f"agented_backend_env.GUNICORN_BIND: {bind!r} is not supported by the role:"
            " use HOST:PORT or [IPv6]:PORT"
        )
    if socket_activation:
        try:
            ipaddress.ip_address(parsed.host)
        except ValueError:
            raise AnsibleFilterError(
                f"agented_backend_env.GUNICORN_BIND: {bind!r} names a host, which systemd's"
                " socket activation cannot listen on: use an IP address such as"
                f" 127.0.0.1:{parsed.port} or 0.0.0.0:{parsed.port}, or set"
                " agented_backend_socket_activation: false"
            ) from None
    return {"listen": parsed.address, "url": parsed.local_url, "port": parsed.port}


class FilterModule:
    def filters(self):
        return {
            "agented_backend_settings": agented_backend_settings,
            "agented_backend_env_errors": agented_backend_env_errors,
            "agented_backend_input_errors": agented_backend_input_errors,
            "agented_backend_env_values": agented_backend_env_values,
            "agented_backend_dotenv_quote": agented_backend_dotenv_quote,
            "agented_backend_dotenv_read": agented_backend_dotenv_read,
            "agented_backend_listen": agented_backend_listen,
        }
