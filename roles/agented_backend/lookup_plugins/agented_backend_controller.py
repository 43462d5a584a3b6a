DOCUMENTATION = r"""
name: agented_backend_controller
short_description: Who runs the play, from where, and at which commit of the playbooks
description:
  - Returns the controller's user, host name and the process id of ansible-playbook itself
    (not of the worker that evaluates the lookup), and the git commit of the given playbook
    directory, empty when it is not inside a git checkout.
  - The deploy lock (tasks/lock.yml) and the deploy history (tasks/history.yml) record them.
options:
  _terms:
    description: The playbook directory on the controller.
    required: true
"""

RETURN = r"""
_raw:
  description: One dict with C(user), C(host), C(pid) and C(commit).
  type: list
  elements: dict
"""

import getpass
import multiprocessing
import os
import socket
import subprocess

try:
    from ansible.plugins.lookup import LookupBase
except ImportError:
    LookupBase = object


def playbook_pid() -> int:
    """The pid of ansible-playbook: lookups run in a worker it forked, or in itself."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None else os.getpid()


def git_commit(directory: str) -> str:
    try:
        # git from the controller's PATH, with fixed arguments.
        completed = subprocess.run(  # noqa: S603
            ["git", "-C", directory, "rev-parse", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return completed.stdout.strip() if completed.returncode == 0 else ""


def controller(directory: str) -> dict:
    return {
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        "pid": playbook_pid(),
        "commit": git_commit(directory),
    }


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        return [controller(str(term)) for term in terms]
