"""Which releases and wheelhouses a prune removes: shared by the prune module, which removes them,
and the host module, which tells a play that changes nothing whether it has anything to prune."""

from __future__ import annotations

import os


def directories(path: str) -> list[str]:
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return []
    # As find(1) -type d: a link to a directory is not one.
    return [
        n
        for n in names
        if os.path.isdir(os.path.join(path, n)) and not os.path.islink(os.path.join(path, n))
    ]


def built_from(release: str, marker: str) -> str:
    try:
        with open(os.path.join(release, marker), encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def plan(
    releases_dir: str,
    keep: int,
    kept: list[str],
    *,
    wheelhouses_dir: str,
    release_wheelhouse: str,
    shipped: str,
) -> tuple[list[str], list[str]]:
    """(releases, wheelhouses) to remove: the releases beyond the `keep` newest (by modification
    time) that are not in `kept`, then the wheelhouses that no remaining release was built from,
    other than `shipped`."""
    releases = sorted(
        directories(releases_dir),
        key=lambda n: os.stat(os.path.join(releases_dir, n)).st_mtime,
        reverse=True,
    )
    kept = {name for name in kept if name}
    removed = [n for n in releases[max(keep, 0) :] if n not in kept]
    used = {
        built_from(os.path.join(releases_dir, n), release_wheelhouse)
        for n in releases
        if n not in removed
    }
    used.add(shipped)
    unused = sorted(n for n in directories(wheelhouses_dir) if n not in used)
    return removed, unused
