"""Filters that check and render the service's configuration with the backend's own rules.

The backend declares every variable in backend/app/settings/ (standard library only, relative
imports within the package). Loading that package here means the role validates
`agented_backend_env` with exactly the code the service runs at start, so the two never disagree.
"""

import difflib
import importlib.util
import os
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


def agented_backend_env_errors(env, src):
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
        shown = "(secret)" if setting.secret else settings.mask_url_credentials(repr(raw))
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
        # check() masks URL credentials in the value it quotes.
        problem = settings.check(setting, value)
        if problem:
            if setting.secret:
                problem = problem.replace(repr(value), "(secret)").replace(value, "(secret)")
            errors.append(f"agented_backend_env.{name}: {problem}")
    return errors


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


def agented_backend_listen(bind, src):
    """Where systemd's socket listens (`listen`) and the URL the readiness check asks (`url`), from
    GUNICORN_BIND, parsed by the backend's own parser."""
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
    return {"listen": parsed.address, "url": parsed.local_url, "port": parsed.port}


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
