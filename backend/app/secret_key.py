"""The fallback SECRET_KEY: generated once into a file next to the database and reused."""

from __future__ import annotations

import logging
import os
import secrets
import stat
import string

FILE_NAME = ".secret_key"

log = logging.getLogger(__name__)


def _read(path: str) -> str:
    # newline="" and only ASCII whitespace stripped: the key is exactly what the file holds,
    # less the line ending an editor adds (str.strip() would also take \x1c-\x1f and such).
    with open(path, encoding="ascii", newline="") as stream:
        key = stream.read().strip(string.whitespace)
    if not key:
        raise RuntimeError(f"{path} is empty: delete it to generate a new key, or set SECRET_KEY")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        log.warning("%s is accessible to other users (mode %04o): chmod 600 it", path, mode)
    return key


def load_or_create(directory: str) -> str:
    """The key stored in ``directory``/.secret_key, created with mode 0600 if missing.

    Safe when several workers start at once: each writes a complete candidate to its own
    file (O_CREAT | O_EXCL, mode 0600), then hard-links it into place. link() fails if the
    key already exists, so exactly one candidate wins and nobody can read a partial key.
    """
    path = os.path.join(directory, FILE_NAME)
    try:
        return _read(path)
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
            pass  # another worker won the race; use its key
        else:
            log.info("generated a new secret key in %s", path)
    finally:
        os.unlink(candidate)
    return _read(path)
