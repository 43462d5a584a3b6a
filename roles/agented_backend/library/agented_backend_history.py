#!/usr/bin/python
"""Append one record to the deploy history of a host."""

from __future__ import annotations

DOCUMENTATION = r"""
module: agented_backend_history
short_description: Append one deploy record to the agented backend's deploy history
description:
  - Appends the record as one JSON line to C(path) and, where systemd's journal runs, logs it as one
    entry tagged C(tag) with the record's fields as C(AGENTED_<FIELD>).
  - The file is root's and sits in the service's own directory, which the service could fill with a
    link to any file; it is opened without following links and written only if it is a plain file of
    root's with no other name.
  - A line of history is no change of the host's configuration, so it reports no change.
options:
  path:
    description: The history file; nothing is written to it when its directory does not exist.
    type: path
    required: true
  record:
    description: The record, one flat mapping.
    type: dict
    required: true
  tag:
    description: The journal entry's SYSLOG_IDENTIFIER.
    type: str
    required: true
  lock:
    description: >-
      The deploy lock this play holds (C(path), and the C(record) it wrote into it), released once
      the record is written, or when writing it fails: the play's last round trip does both.
    type: dict
    default: {}
"""

RETURN = r"""
file:
  description: The file the record was appended to, "" when its directory does not exist.
  type: str
journal:
  description: Whether the record went to the journal.
  type: bool
lock_released:
  description: Whether C(lock) was given and is released (gone, or taken over by another play).
  type: bool
"""

import json
import os
import shutil
import stat
import subprocess

from ansible.module_utils.basic import AnsibleModule


def append(module: AnsibleModule, path: str, line: str) -> str:
    if not os.path.isdir(os.path.dirname(path)):
        return ""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != 0 or info.st_nlink != 1:
            module.fail_json(
                msg=f"{path} is not a plain file of root's: the deploy history was not written"
            )
        os.fchmod(fd, 0o644)
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return path


def to_journal(record: dict, tag: str) -> bool:
    logger = shutil.which("logger")
    if not logger or not os.path.exists("/run/systemd/journal/socket"):
        return False
    summary = (
        f"{record['action']} {record['from'] or '-'} -> {record['to'] or '-'}: {record['result']}"
        f" (by {record['user']}@{record['controller']}, commit {record['commit'] or '-'})"
    )
    fields = [f"MESSAGE={summary}", f"SYSLOG_IDENTIFIER={tag}", "PRIORITY=5"]
    for key, value in record.items():
        text = " ".join(str(value).split())  # a journal field of logger(1) is one line
        fields.append(f"AGENTED_{key.upper()}={text}")
    # logger(1) from PATH; the fields go on stdin.
    subprocess.run(  # noqa: S603
        [logger, "--journald"],
        input="\n".join(fields) + "\n",
        text=True,
        check=True,
    )
    return True


def release(lock: dict) -> bool:
    """Remove the lock if it still holds this play's record, as tasks/unlock.yml does."""
    if not lock:
        return False
    try:
        with open(lock["path"], encoding="utf-8") as f:
            held = f.read().strip()
    except FileNotFoundError:
        return True
    if held == lock["record"].strip():
        os.unlink(lock["path"])
    return True


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "record": {"type": "dict", "required": True},
            "tag": {"type": "str", "required": True},
            "lock": {"type": "dict", "default": {}},
        },
    )
    record = module.params["record"]
    line = json.dumps(record, separators=(",", ":")) + "\n"
    try:
        written = append(module, module.params["path"], line)
        journal = to_journal(record, module.params["tag"])
    finally:
        released = release(module.params["lock"])
    module.exit_json(changed=False, file=written, journal=journal, lock_released=released)


if __name__ == "__main__":
    main()
