"""Filters that let the role read backend/.env.example and check values with the backend's own rules.

The backend declares every variable in backend/app/settings.py and documents them in .env.example.
Loading that module here (it imports only the standard library) means the role validates
`agented_backend_env` with exactly the code the service runs at start, so the two never disagree.
"""

import difflib
import importlib.util
import os
import re
import sys

from ansible.errors import AnsibleFilterError

_MODULES = {}


def _settings_module(src):
    """The backend's app/settings.py, loaded by path (cached per source directory)."""
    path = os.path.join(os.path.abspath(os.path.expanduser(src)), "app", "settings.py")
    if path not in _MODULES:
        if not os.path.isfile(path):
            raise AnsibleFilterError(
                f"agented_backend_src: {src!r} is not a backend directory (no app/settings.py there)"
            )
        name = f"agented_backend_settings_{len(_MODULES)}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        # dataclasses look their module up in sys.modules while the class is being built.
        sys.modules[name] = module
        spec.loader.exec_module(module)
        _MODULES[path] = module
    return _MODULES[path]


def _documented(src):
    """The settings documented in <src>/.env.example, in documented order."""
    module = _settings_module(src)
    path = os.path.join(os.path.abspath(os.path.expanduser(src)), ".env.example")
    with open(path, encoding="utf-8") as handle:
        return module.parse_example(handle.read())


def _as_text(value):
    """YAML gives booleans and numbers; the service sees strings. None means unset."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise TypeError(type(value).__name__)


def agented_backend_settings(src):
    """Documented variables as plain dicts: name, section, default, secret, description."""
    return [
        {
            "name": s.name,
            "section": s.section,
            "default": s.default,
            "secret": bool(s.secret),
            "description": s.description,
        }
        for s in _documented(src)
    ]


def agented_backend_env_errors(env, src):
    """One message per problem in `env` (agented_backend_env); an empty list when it is valid.

    Messages never contain the value of a secret variable.
    """
    module = _settings_module(src)
    documented = {s.name: s for s in _documented(src)}
    errors = []
    if not isinstance(env, dict):
        return ["agented_backend_env must be a dict of variable names to values"]
    for name, raw in env.items():
        setting = documented.get(name)
        if setting is None:
            close = difflib.get_close_matches(str(name), list(documented), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            errors.append(
                f"agented_backend_env: {name} is not a variable documented in backend/.env.example{hint}"
            )
            continue
        shown = "(secret)" if setting.secret else repr(raw)
        try:
            value = _as_text(raw)
        except TypeError as exc:
            errors.append(
                f"agented_backend_env.{name}: {shown} is a {exc}; use a string, number or boolean"
            )
            continue
        if value is None:
            continue
        if "\n" in value or "\r" in value:
            errors.append(
                f"agented_backend_env.{name}: the value contains a newline, which .env cannot hold"
            )
            continue
        problem = module.check(setting, value)
        if problem:
            if setting.secret:
                problem = problem.replace(repr(value), "(secret)").replace(value, "(secret)")
            errors.append(f"agented_backend_env.{name}: {problem}")
    return errors


def agented_backend_env_values(env, src, defaults=None):
    """Every documented variable mapped to the string the service gets, or None when unset.

    Precedence: documented default < role-derived `defaults` < the user's `env`.
    """
    values = {s.name: (s.default if s.default != "" else None) for s in _documented(src)}
    for layer in (defaults or {}, env or {}):
        for name, raw in layer.items():
            if name in values:
                values[name] = _as_text(raw)
    return values


def agented_backend_dotenv_quote(value, src):
    """Quote a value so that python-dotenv, the service's only .env parser, reads it back exactly."""
    return _settings_module(src).dotenv_quote(_as_text(value))


_ASSIGNMENT = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")


def agented_backend_dotenv_read(text, name, src):
    """The value of `name` in .env text this role rendered, or None when it is absent or unset."""
    module = _settings_module(src)
    for line in (text or "").splitlines():
        match = _ASSIGNMENT.match(line)
        if match and match["name"] == name:
            value = module.dotenv_unquote(match["value"])
            return value or None
    return None


def agented_backend_listen(bind):
    """Split a HOST:PORT bind into the socket unit's address and the URL the health check uses."""
    match = re.fullmatch(
        r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d+)", bind or ""
    )
    if not match:
        raise AnsibleFilterError(
            f"agented_backend_env.GUNICORN_BIND: {bind!r} is not supported by the role: use HOST:PORT or [IPv6]:PORT"
        )
    port = int(match["port"])
    if match["v6"] is not None:
        host = match["v6"]
        probe = "::1" if host == "::" else host
        return {"listen": f"[{host}]:{port}", "url": f"http://[{probe}]:{port}", "port": port}
    host = match["host"]
    probe = "127.0.0.1" if host in ("0.0.0.0", "*") else host
    return {"listen": f"{host}:{port}", "url": f"http://{probe}:{port}", "port": port}


class FilterModule:
    def filters(self):
        return {
            "agented_backend_settings": agented_backend_settings,
            "agented_backend_env_errors": agented_backend_env_errors,
            "agented_backend_env_values": agented_backend_env_values,
            "agented_backend_dotenv_quote": agented_backend_dotenv_quote,
            "agented_backend_dotenv_read": agented_backend_dotenv_read,
            "agented_backend_listen": agented_backend_listen,
        }
