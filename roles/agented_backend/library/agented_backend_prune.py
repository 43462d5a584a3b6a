#!/usr/bin/python
"""Remove old releases of the agented backend and the wheelhouses no kept release uses."""

from __future__ import annotations

DOCUMENTATION = r"""
module: agented_backend_prune
short_description: Remove old releases of the agented backend and the wheelhouses none uses
description:
  - Keeps the C(keep) newest releases (by modification time) and every release of C(kept), then
    every wheelhouse that a kept release was built from (the id in its C(release_wheelhouse) file)
    and C(shipped). Everything else in the two directories goes.
  - One round trip for what would otherwise be a listing, a read and a removal per directory.
options:
  releases_dir:
    description: The directory of the releases.
    type: path
    required: true
  keep:
    description: How many of the newest releases to keep.
    type: int
    required: true
  kept:
    description: >-
      Releases never removed (the running one and the one a rollback returns to); empty names are
      ignored.
    type: list
    elements: str
    default: []
  wheelhouses_dir:
    description: The directory of the shipped wheelhouses.
    type: path
    required: true
  release_wheelhouse:
    description: The file in a release that names the wheelhouse it was built from.
    type: str
    required: true
  shipped:
    description: The wheelhouse this play shipped, kept even before a release names it.
    type: str
    default: ""
"""

RETURN = r"""
removed_releases:
  description: The releases removed (or that would be, in check mode).
  type: list
removed_wheelhouses:
  description: The wheelhouses removed (or that would be, in check mode).
  type: list
"""

import os
import shutil

from ansible.module_utils.agented_backend_prune import plan
from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "releases_dir": {"type": "path", "required": True},
            "keep": {"type": "int", "required": True},
            "kept": {"type": "list", "elements": "str", "default": []},
            "wheelhouses_dir": {"type": "path", "required": True},
            "release_wheelhouse": {"type": "str", "required": True},
            "shipped": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    p = module.params
    removed_releases, removed_wheelhouses = plan(
        p["releases_dir"],
        p["keep"],
        p["kept"],
        wheelhouses_dir=p["wheelhouses_dir"],
        release_wheelhouse=p["release_wheelhouse"],
        shipped=p["shipped"],
    )
    if not module.check_mode:
        for name in removed_releases:
            shutil.rmtree(os.path.join(p["releases_dir"], name))
        for name in removed_wheelhouses:
            shutil.rmtree(os.path.join(p["wheelhouses_dir"], name))
    module.exit_json(
        changed=bool(removed_releases or removed_wheelhouses),
        removed_releases=removed_releases,
        removed_wheelhouses=removed_wheelhouses,
    )


if __name__ == "__main__":
    main()
