#!/usr/bin/env python3
"""Ansible inventory script: how to reach the field hosts over SSH.

create.yml writes the hosts' addresses and the deploy user's key into ssh_inventory.json in the
scenario's ephemeral directory; this prints it (nothing before create). Its host variables
override the `docker` connection of molecule's inventory for the same host names.
"""

import json
import os
import pathlib
import sys

EMPTY = {"_meta": {"hostvars": {}}}

if "--host" in sys.argv:
    print("{}")
    sys.exit(0)
state = pathlib.Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
path = state / "ssh_inventory.json"
print(path.read_text() if path.is_file() else json.dumps(EMPTY))
