"""Data follows the code: a snapshot before every release that migrates, rollbacks that refuse a
schema the older release cannot run on, backups under load, and restores that check first.

Fixture releases are copies of backend/ with migrations appended to MIGRATIONS (nothing ships in
the role). Sequence, on every host at once (one ansible-playbook run each), after N deliveries:
  R1  compatible migration, fails readiness       rolled back by itself: A on the migrated database
  R2  another compatible migration, good          deployed; rollback.yml: A on that database
  R3  incompatible migration, fails readiness     rollback refused, naming the snapshot
  restore.yml of that snapshot                    A again, on the data as of the snapshot
  backup.yml under steady webhook load            every delivery acknowledged before it is in it
  restore.yml of a truncated snapshot             refused, the service untouched
  restore.yml of the snapshot taken before R1     A on the repository's schema again
  converge with the repository's backend          A, nothing rebuilt
"""

import concurrent.futures
import shlex
import tempfile
import time
from pathlib import Path

import harness
import pytest

from app import db  # the repository's backend, on sys.path through conftest.py
from conftest import (
    CONVERGE,
    DATABASE,
    PROJECT_DIR,
    ROLLBACK,
    SERVICE,
    STATE_DIR,
    USER,
    ansible_playbook,
    current_release,
    figure,
    in_host_checks,
    name_of,
    on_all,
    post_webhook,
    ready,
    sh,
    show,
    stored,
    webhook_secret,
)

BACKUPS_DIR = f"{STATE_DIR}/backups"
BACKUP = PROJECT_DIR / "playbooks" / "backup.yml"
RESTORE = PROJECT_DIR / "playbooks" / "restore.yml"
DELIVERIES = 20
HEALTH_TIMEOUT = 10  # seconds the role waits for a failing release before rolling back
BROKEN_MODULE = "agented_molecule_missing_after_migration"
LOAD_FILE = "/root/agented-molecule-load.txt"
LOAD_UNIT = "agented-molecule-load"
BASE = db.SCHEMA_VERSION  # the repository's schema version, which the suite starts from

# Appended to MIGRATIONS in the copies, in this order: each release carries a prefix of them.
MIGRATIONS = [
    ("molecule notes", True, "CREATE TABLE molecule_notes (id INTEGER PRIMARY KEY, note TEXT)"),
    ("molecule tags", True, "CREATE TABLE molecule_tags (id INTEGER PRIMARY KEY, tag TEXT)"),
    ("molecule contract", False, "CREATE TABLE molecule_contract (id INTEGER PRIMARY KEY)"),
]


def release(scratch: str, name: str, migrations: int, *, broken: bool = False) -> Path:
    """A copy of backend/ with the first `migrations` of MIGRATIONS appended; a broken one
    cannot start its workers, after its master has migrated the database."""
    path = harness.copy_release(Path(scratch) / name)
    db_py = path / "app" / "db.py"
    added = "".join(
        f"    Migration(name={n!r}, compatible={c}, statements=({sql!r},)),\n"
        for n, c, sql in MIGRATIONS[:migrations]
    )
    text = db_py.read_text()
    marker = "\nSCHEMA_VERSION = len(MIGRATIONS)\n"
    assert marker in text, "app/db.py no longer ends MIGRATIONS where this suite expects"
    db_py.write_text(text.replace(marker, f"\nMIGRATIONS = (\n    *MIGRATIONS,\n{added}){marker}"))
    if broken:
        with open(path / "app" / "factory.py", "a") as stream:
            stream.write(f"import {BROKEN_MODULE}  # noqa: deliberately broken release\n")
    return path


def write(all_hosts, label: str, count: int = 1) -> dict[str, dict[str, int | None]]:
    """Post `count` signed deliveries to every host: {host: {delivery id: HTTP status}}."""
    deliveries = {
        name: [f"molecule-data-{label}-{name}-{n}-{time.time_ns()}" for n in range(count)]
        for name in all_hosts
    }

    def post(host):
        return {d: post_webhook(host, d)["status"] for d in deliveries[name_of(host)]}

    return on_all(all_hosts, post)


def refused(posts: dict[str, int | None]) -> dict[str, int | None]:
    """The deliveries of one host that were not acknowledged (2xx)."""
    return {d: status for d, status in posts.items() if not (status and 200 <= status < 300)}


def schema_version(host, path: str = DATABASE) -> int:
    code = (
        "import sqlite3, sys; c = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True);"
        " print(c.execute('PRAGMA user_version').fetchone()[0])"
    )
    return int(sh(host, f'runuser -u {USER} -- python3 -c "{code}" {path}').strip())


def backups(host) -> list[str]:
    """The snapshot files of backups/, oldest first."""
    return sh(host, f"ls -1tr {BACKUPS_DIR}/ | grep '\\.db$' || true").split()


def service(host) -> dict:
    return {
        "release": current_release(host),
        "master": show(host, SERVICE, "MainPID")["MainPID"],
        "inode": sh(host, f"stat -c %i {DATABASE}").strip(),
    }


def snapshot_contents(host, path: str, deliveries: list[str]) -> dict:
    """integrity_check and the deliveries of a snapshot, read from a scratch copy (a read-only
    connection would leave -wal and -shm files beside the snapshot)."""
    scratch = "/root/agented-molecule-snapshot.db"
    sh(host, f"cp {path} {scratch}")
    try:
        code = (
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
            " print(c.execute('PRAGMA integrity_check').fetchone()[0])"
        )
        integrity = sh(host, f'python3 -c "{code}" {scratch}').strip()
        found = in_host_checks(host, "find-deliveries", *deliveries, env={"AGENTED_DB": scratch})
    finally:
        sh(host, f"rm -f {scratch} {scratch}-wal {scratch}-shm")
    return {"integrity": integrity, "missing": found["missing"]}


def start_load(host) -> None:
    sh(host, f"rm -f {LOAD_FILE}")
    command = harness.in_host_checks_command(
        "post-webhooks",
        f"molecule-data-load-{name_of(host)}-{time.time_ns()}",
        "120",
        "5000",
        LOAD_FILE,
        env={"WEBHOOK_SECRET": webhook_secret()},
    )
    sh(host, f"systemd-run --quiet --collect --unit {LOAD_UNIT} sh -c {shlex.quote(command)}")


def stop_load(host) -> list[tuple[float, str, str]]:
    sh(host, f"systemctl stop {LOAD_UNIT} || true")
    lines = sh(host, f"cat {LOAD_FILE}").splitlines()
    sh(host, f"rm -f {LOAD_FILE}")
    return [(float(at), delivery, status) for at, delivery, status in (ln.split() for ln in lines)]


def restore_each(all_hosts, snapshots: dict[str, str]) -> dict:
    """playbooks/restore.yml of each host's own snapshot (the names differ by the time they were
    taken): one play per host, all at once."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(all_hosts)) as pool:
        runs = {
            name: pool.submit(
                ansible_playbook,
                RESTORE,
                "--limit",
                name,
                extra_vars={"agented_backend_restore": snapshots[name]},
            )
            for name in all_hosts
        }
        return {name: run.result() for name, run in runs.items()}


@pytest.fixture(scope="module")
def story(all_hosts):
    s = {"A": on_all(all_hosts, service), "backups before": on_all(all_hosts, backups)}
    s["deliveries"] = write(all_hosts, "before", DELIVERIES)
    assert all(not refused(posts) for posts in s["deliveries"].values()), s["deliveries"]
    with tempfile.TemporaryDirectory() as scratch:
        failing = {"agented_backend_health_timeout": HEALTH_TIMEOUT}
        r1 = release(scratch, "r1", 1, broken=True)
        s["R1 id"] = harness.release_id(r1)
        s["R1"] = ansible_playbook(CONVERGE, extra_vars={"agented_backend_src": str(r1), **failing})
        s["after R1"] = on_all(all_hosts, service)
        s["ready after R1"] = on_all(all_hosts, ready)
        s["version after R1"] = on_all(all_hosts, schema_version)
        s["backups after R1"] = on_all(all_hosts, backups)
        s["stored after R1"] = on_all(all_hosts, lambda h: stored(h, *s["deliveries"][name_of(h)]))
        s["snapshot modes"] = on_all(
            all_hosts, lambda h: sh(h, f"stat -c '%a %U' {BACKUPS_DIR}/*.db").splitlines()
        )

        r2 = release(scratch, "r2", 2)
        s["R2"] = ansible_playbook(CONVERGE, extra_vars={"agented_backend_src": str(r2)})
        s["after R2"] = on_all(all_hosts, service)
        s["backups after R2"] = on_all(all_hosts, backups)
        s["rollback"] = ansible_playbook(ROLLBACK)
        s["after rollback"] = on_all(all_hosts, service)
        s["ready after rollback"] = on_all(all_hosts, ready)
        s["version after rollback"] = on_all(all_hosts, schema_version)
        s["after rollback deliveries"] = write(all_hosts, "after-rollback", 2)

        r3 = release(scratch, "r3", 3, broken=True)
        s["R3"] = ansible_playbook(CONVERGE, extra_vars={"agented_backend_src": str(r3), **failing})
        s["after R3"] = on_all(all_hosts, service)
        s["backups after R3"] = on_all(all_hosts, backups)

    s["R3 snapshot"] = {name: b[-1] for name, b in s["backups after R3"].items()}
    started = time.monotonic()
    s["restore"] = restore_each(all_hosts, s["R3 snapshot"])
    s["restore seconds"] = time.monotonic() - started
    s["after restore"] = on_all(all_hosts, service)
    s["ready after restore"] = on_all(all_hosts, ready)
    s["version after restore"] = on_all(all_hosts, schema_version)
    s["stored after restore"] = on_all(
        all_hosts,
        lambda h: stored(
            h, *s["deliveries"][name_of(h)], *s["after rollback deliveries"][name_of(h)]
        ),
    )
    s["aside"] = on_all(
        all_hosts, lambda h: sh(h, f"ls -d {BACKUPS_DIR}/*-before-restore/agented.db || true")
    )
    s["after restore deliveries"] = write(all_hosts, "after-restore", 2)

    on_all(all_hosts, start_load)
    time.sleep(3)  # the load runs steadily before the backup begins
    with tempfile.TemporaryDirectory() as fetched:
        s["backup"] = ansible_playbook(
            BACKUP, extra_vars={"agented_backend_backup_fetch_to": fetched}
        )
        s["fetched"] = sorted(
            p.relative_to(fetched).as_posix() for p in Path(fetched).rglob("*.db")
        )
    time.sleep(1)
    s["load"] = on_all(all_hosts, stop_load)
    s["backup snapshot"] = on_all(all_hosts, lambda h: f"{BACKUPS_DIR}/{backups(h)[-1]}")
    s["backup contents"] = on_all(
        all_hosts,
        lambda h: snapshot_contents(
            h,
            s["backup snapshot"][name_of(h)],
            [
                d
                for at, d, st in s["load"][name_of(h)]
                if at < s["backup"].started and st.startswith("2")
            ],
        ),
    )

    def truncate(host):
        source = s["backup snapshot"][name_of(host)]
        size = int(sh(host, f"stat -c %s {source}"))
        target = f"{BACKUPS_DIR}/molecule-truncated.db"
        sh(
            host,
            f"head -c {size // 2} {source} > {target}"
            f" && chown {USER}: {target} && chmod 0600 {target}",
        )

    on_all(all_hosts, truncate)
    s["before truncated"] = on_all(all_hosts, service)
    s["truncated"] = ansible_playbook(
        RESTORE, extra_vars={"agented_backend_restore": "molecule-truncated.db"}
    )
    s["after truncated"] = on_all(all_hosts, service)
    s["ready after truncated"] = on_all(all_hosts, ready)
    on_all(all_hosts, lambda h: sh(h, f"rm -f {BACKUPS_DIR}/molecule-truncated.db"))

    # Back to the repository's schema and the data from before the suite: the snapshot taken
    # before R1 (A's own, which A runs on as it is), then the repository's backend.
    s["R1 snapshot"] = on_all(
        all_hosts, lambda h: next(b for b in backups(h) if b.endswith(f"-to-{s['R1 id']}.db"))
    )
    s["restore A"] = restore_each(all_hosts, s["R1 snapshot"])
    s["converge"] = ansible_playbook(CONVERGE)
    s["version at the end"] = on_all(all_hosts, schema_version)
    s["end"] = on_all(all_hosts, service)
    s["ready at the end"] = on_all(all_hosts, ready)

    for label in ("R1", "R2", "rollback", "R3", "backup", "truncated", "converge"):
        figure(
            "data suite wall time (both hosts at once)", label, "seconds", f"{s[label].seconds:.0f}"
        )
    figure(
        "data suite wall time (both hosts at once)",
        "restore",
        "seconds",
        f"{s['restore seconds']:.0f}",
    )
    for name in all_hosts:
        acked = sum(1 for _, _, st in s["load"][name] if st.startswith("2"))
        figure("webhooks acknowledged during the backup's load", "acknowledged", name, str(acked))
    return s


def test_failed_release_with_a_compatible_migration_rolls_back_onto_the_migrated_database(
    host, story
):
    name = name_of(host)
    assert story["R1"].rc != 0, f"a release that cannot start was accepted:\n{story['R1']}"
    assert story["after R1"][name]["release"] == story["A"][name]["release"], str(story["R1"])
    assert story["ready after R1"][name], "the old release is not ready on the migrated database"
    assert story["version after R1"][name] == BASE + 1, "the failing release did not migrate first"
    assert story["stored after R1"][name]["missing"] == [], story["stored after R1"][name]


def test_a_migrating_release_is_snapshotted_first_as_the_service_user(host, story):
    name = name_of(host)
    new = [b for b in story["backups after R1"][name] if b not in story["backups before"][name]]
    a = Path(story["A"][name]["release"]).name
    assert new == [f"{new[0][:16]}-{a}-to-{story['R1 id']}.db"], story["backups after R1"][name]
    assert set(story["snapshot modes"][name]) == {f"600 {USER}"}, story["snapshot modes"][name]


def test_rollback_playbook_onto_a_compatible_migration(host, story):
    name = name_of(host)
    assert story["R2"].rc == 0, str(story["R2"])
    assert story["after R2"][name]["release"] != story["A"][name]["release"]
    new = set(story["backups after R2"][name]) - set(story["backups after R1"][name])
    r2 = Path(story["after R2"][name]["release"]).name
    assert len(new) == 1 and new.pop().endswith(f"-to-{r2}.db"), story["backups after R2"][name]
    assert story["rollback"].rc == 0, str(story["rollback"])
    assert story["after rollback"][name]["release"] == story["A"][name]["release"]
    assert story["ready after rollback"][name]
    assert story["version after rollback"][name] == BASE + 2
    assert not refused(story["after rollback deliveries"][name]), "new deliveries refused"


def test_rollback_onto_an_incompatible_migration_is_refused_naming_the_snapshot(host, story):
    name = name_of(host)
    run = story["R3"]
    assert run.rc != 0, str(run)
    snapshot = f"{BACKUPS_DIR}/{story['R3 snapshot'][name]}"
    assert "Not rolling back" in run.output, str(run)
    assert snapshot in run.output, f"the refusal does not name {snapshot}:\n{run}"
    assert "molecule contract" in run.output, f"the refusal does not name the migration:\n{run}"
    assert "serves nothing" in run.output, str(run)
    assert story["after R3"][name]["release"] != story["A"][name]["release"], "it switched anyway"


def test_restore_brings_the_old_release_back_with_the_data_of_the_snapshot(host, story):
    name = name_of(host)
    run = story["restore"][name]
    assert run.rc == 0, str(run)
    assert story["after restore"][name]["release"] == story["A"][name]["release"]
    assert story["ready after restore"][name]
    assert story["version after restore"][name] == BASE + 2, "not the data as of the snapshot"
    assert story["stored after restore"][name]["missing"] == [], story["stored after restore"][name]
    assert story["aside"][name].strip(), "the database that ran before was not kept aside"
    assert not refused(story["after restore deliveries"][name]), "new deliveries refused"


def test_backup_under_load_holds_every_delivery_acknowledged_before_it(host, story):
    name = name_of(host)
    assert story["backup"].rc == 0, str(story["backup"])
    before = [d for at, d, st in story["load"][name] if at < story["backup"].started]
    assert len(before) > 10, f"the load was not running before the backup: {len(before)} posts"
    contents = story["backup contents"][name]
    assert contents["integrity"] == "ok", contents
    assert contents["missing"] == [], f"acknowledged but not in the backup: {contents['missing']}"
    assert f"{name}/{Path(story['backup snapshot'][name]).name}" in story["fetched"], story[
        "fetched"
    ]


def test_a_truncated_snapshot_is_refused_and_the_service_is_untouched(host, story):
    name = name_of(host)
    run = story["truncated"]
    assert run.rc != 0, str(run)
    assert "integrity check failed" in run.output, str(run)
    assert story["after truncated"][name] == story["before truncated"][name], (
        "the service was touched"
    )
    assert story["ready after truncated"][name]


def test_the_host_ends_on_the_repository_release_serving(host, story):
    name = name_of(host)
    assert story["restore A"][name].rc == 0, str(story["restore A"][name])
    assert story["converge"].rc == 0, str(story["converge"])
    assert story["version at the end"][name] == BASE, "not back on the data from before the suite"
    assert story["end"][name]["release"] == story["A"][name]["release"]
    assert story["ready at the end"][name]
