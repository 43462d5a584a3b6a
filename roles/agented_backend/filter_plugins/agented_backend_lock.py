"""Whether a deploy lock's holder is gone: decided on the controller, where its pid lives."""

import json
import os
import socket


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def agented_backend_lock_read(text):
    """The holder a lock file names: {} for no lock, {'unreadable': text} for one that is not a
    lock record (a stale lock of some other making, taken over like any other)."""
    text = (text or "").strip()
    if not text:
        return {}
    try:
        holder = json.loads(text)
    except ValueError:
        holder = None
    return holder if isinstance(holder, dict) else {"unreadable": text}


def agented_backend_lock_stale(holder, timeout, now, host=None):
    """Why the lock `holder` (the dict tasks/lock.yml writes) may be taken over, or '' while it
    holds: its play ran on this controller and its ansible-playbook is gone, or it is older than
    `timeout` seconds at `now` (unix seconds)."""
    if not holder:
        return ""
    if "unreadable" in holder:
        return "its lock file is not a lock record"
    host = host or socket.gethostname()
    try:
        age = float(now) - float(holder.get("epoch", 0))
        pid = int(holder.get("pid", 0))
    except (TypeError, ValueError):
        return "its lock file is unreadable"
    if holder.get("controller") == host and pid > 0 and not _alive(pid):
        return f"ansible-playbook (pid {pid}) on {host} is gone"
    if age > float(timeout):
        return f"it is {age:.0f} s old, more than agented_backend_deploy_lock_timeout ({timeout} s)"
    return ""


class FilterModule:
    def filters(self):
        return {
            "agented_backend_lock_read": agented_backend_lock_read,
            "agented_backend_lock_stale": agented_backend_lock_stale,
        }
