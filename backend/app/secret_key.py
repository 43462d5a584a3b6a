"""Secrets the backend keeps for itself when they are not configured: SECRET_KEY and
API_TOKEN, each generated once into its own file next to the database and reused."""

from __future__ import annotations

import logging
import os
import secrets
import stat
import string

# Setting -> the file its generated value is kept in, in the database's directory.
FILES = {"SECRET_KEY": ".secret_key", "API_TOKEN": ".api_token"}

log = logging.getLogger(__name__)


class SecretFileError(RuntimeError):
    """A kept secret's file that cannot serve; the message is one line saying what to do."""


def _read(path: str, setting: str) -> str:
    """The value in ``path``; FileNotFoundError when there is none yet, SecretFileError when the
    file is there but cannot serve (the service then stops with one line, never guesses)."""
    remedy = f"delete it to generate a new one, or set {setting}"
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise SecretFileError(f"{path} is not a regular file: {remedy}")
        if info.st_uid != os.geteuid():
            raise SecretFileError(
                f"{path} belongs to uid {info.st_uid}, not to this service (uid {os.geteuid()}):"
                f" chown it, or {remedy}"
            )
        # newline="" and only ASCII whitespace stripped: the value is exactly what the file
        # holds, less the line ending an editor adds (str.strip() would also take \x1c-\x1f).
        with open(path, encoding="ascii", newline="") as stream:
            value = stream.read().strip(string.whitespace)
    except UnicodeDecodeError:
        raise SecretFileError(f"{path} holds bytes that are not ASCII: {remedy}") from None
    except PermissionError as error:
        raise SecretFileError(f"{path} cannot be read ({error.strerror}): {remedy}") from None
    if not value:
        raise SecretFileError(f"{path} is empty: {remedy}")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        log.warning("%s is accessible to other users (mode %04o): chmod 600 it", path, mode)
    return value


def load_or_create(directory: str, setting: str = "SECRET_KEY") -> str:
    """The value of ``setting`` stored in ``directory`` (FILES names the file), created with
    mode 0600 if missing.

    Safe when several workers start at once: each writes a complete candidate to its own
    file (O_CREAT | O_EXCL, mode 0600), then hard-links it into place. link() fails if the
    file already exists, so exactly one candidate wins and nobody can read a partial value.
    """
    path = os.path.join(directory, FILES[setting])
    try:
        return _read(path, setting)
    except FileNotFoundError:
        pass
    os.makedirs(directory, mode=0o700, exist_ok=True)
    candidate = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
    descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as stream:
            stream.write(secrets.token_urlsafe(48) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(candidate, path)
        except FileExistsError:
            pass  # another worker won the race; use its value
        else:
            log.info("generated a new %s in %s", setting, path)
    finally:
        os.unlink(candidate)
    return _read(path, setting)
