"""Append one deploy record to the deploy history: argv[1] is the history file, argv[2] the
record (a JSON object), argv[3] the journal's SYSLOG_IDENTIFIER. Prints where it was written.

The file is root's and sits in the service's own directory, which the service could fill with a
link to any file: it is opened without following links and written only if it is a plain file of
root's with no other name."""

import json
import os
import shutil
import stat
import subprocess
import sys

path, record, tag = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
line = json.dumps(record, separators=(",", ":")) + "\n"
written = {"file": "", "journal": False}

if os.path.isdir(os.path.dirname(path)):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != 0 or info.st_nlink != 1:
            sys.exit(f"{path} is not a plain file of root's: the deploy history was not written")
        os.fchmod(fd, 0o644)
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    written["file"] = path

# One journal entry with the record's fields as AGENTED_<FIELD>, where systemd runs.
logger = shutil.which("logger")
if logger and os.path.exists("/run/systemd/journal/socket"):
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
    written["journal"] = True

print(json.dumps(written))
