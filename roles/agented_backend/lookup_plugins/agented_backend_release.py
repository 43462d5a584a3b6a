DOCUMENTATION = r"""
name: agented_backend_release
short_description: The files of a backend release and the id derived from their contents
description:
  - Walks the backend directory on the controller, leaving out what is generated or local to
    one machine (virtualenvs, caches, .env, databases, secret keys, tests), and returns the
    relative paths of the directories and files to ship together with a release id.
  - The id is the first 12 hex digits of a SHA-256 over every shipped path and its contents,
    so it changes exactly when the backend source or uv.lock changes.
options:
  _terms:
    description: The backend directory on the controller.
    required: true
"""

RETURN = r"""
_raw:
  description: One dict with C(id), C(dirs) and C(files) (paths relative to the backend directory).
  type: list
  elements: dict
"""

import fnmatch
import hashlib
import os
import shutil

try:
    from ansible.errors import AnsibleLookupError
    from ansible.plugins.lookup import LookupBase
except ImportError:
    # The backend's tests and the benchmarks copy a release with release() and copy(), and the
    # backend's environment has no Ansible: this list of what ships is the only one.
    AnsibleLookupError = ValueError
    LookupBase = object

# Never shipped: built on the host, private to one machine, or only for development.
EXCLUDED = (
    ".venv",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    ".env",
    ".secret_key",
    "*.log",
    "*.db",
    "*.db-wal",
    "*.db-shm",
    "tests",
)


def _excluded(name):
    return any(fnmatch.fnmatch(name, pattern) for pattern in EXCLUDED)


def release(src):
    root = os.path.abspath(os.path.expanduser(src))
    for required in ("pyproject.toml", "uv.lock", "gunicorn.conf.py"):
        if not os.path.isfile(os.path.join(root, required)):
            raise AnsibleLookupError(
                f"agented_backend_src: {src!r} has no {required}; point it at backend/"
            )
    digest = hashlib.sha256()
    dirs, files = [], []
    for current, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not _excluded(d))
        rel_dir = os.path.relpath(current, root)
        if rel_dir != ".":
            dirs.append(rel_dir)
        for name in sorted(n for n in names if not _excluded(n)):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            with open(os.path.join(current, name), "rb") as handle:
                content = handle.read()
            digest.update(rel.encode() + b"\0" + hashlib.sha256(content).digest())
            files.append(rel)
    return {"id": digest.hexdigest()[:12], "dirs": dirs, "files": files}


def copy(src, destination):
    """Copy exactly what a release of `src` ships into `destination` (a new directory)."""
    shipped = release(src)
    root = os.path.abspath(os.path.expanduser(src))
    os.makedirs(destination)
    for rel_dir in shipped["dirs"]:
        os.makedirs(os.path.join(destination, rel_dir), exist_ok=True)
    for rel in shipped["files"]:
        shutil.copy2(os.path.join(root, rel), os.path.join(destination, rel))
    return destination


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if len(terms) != 1:
            raise AnsibleLookupError("agented_backend_release takes one backend directory")
        return [release(terms[0])]
