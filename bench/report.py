"""Copy the benchmarks' tables and charts into docs/BENCHMARKS.md and docs/bench/.

docs/BENCHMARKS.md holds the method and the conclusions; every table in it sits between
`<!-- bench:NAME -->` and `<!-- /bench:NAME -->` and is replaced here by
bench/results/NAME/tables.md, and every chart bench/results/NAME/*.png is copied to docs/bench/.
The machine block (`<!-- bench:machine -->`) lists the machine and the load each benchmark ran
under. A benchmark without results leaves its section, its lines of the summary and of the machine
block as they were.

    python3 bench/report.py          (`just bench` runs it last)
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "BENCHMARKS.md"
CHARTS = ROOT / "docs" / "bench"
NAMES = [
    "crash",
    "coldstart",
    "reload",
    "streams",
    "deploy_speed",
    "rolling",
    "hostile",
    "fleet",
    "backup",
]
# The section of docs/BENCHMARKS.md each benchmark's lines of the summary belong to.
SECTIONS = {name: f"\N{SECTION SIGN}{n}" for n, name in enumerate(NAMES, 1)}


def kept_rows(text: str, block: str, first_cell: str) -> list[str]:
    """The table lines of a block of the doc as it is whose first cell is first_cell."""
    match = re.search(rf"<!-- bench:{block} -->\n(.*?)<!-- /bench:{block} -->", text, re.DOTALL)
    body = match[1] if match else ""
    return [line for line in body.splitlines() if line.startswith(f"| {first_cell} |")]


def replace(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{DOC.relative_to(ROOT)} has no <!-- bench:{name} --> section")
    return pattern.sub(lambda m: m[1] + body.rstrip() + "\n" + m[2], text)


def describe(info: dict) -> str:
    return (
        f"{info['cores']} cores ({info['cpu']}), {info['memory_mb'] / 1024:.0f} GB of memory "
        f"(`nproc`, `free`), Linux {info['kernel']}."
    )


def machine_block(text: str) -> str:
    rows, first, machines = [], None, {}
    for name in NAMES:
        path = RESULTS / name / "results.json"
        if not path.exists():
            rows += kept_rows(text, "machine", name)
        else:
            info = json.loads(path.read_text())["machine"]
            first = first or info
            machines[name] = describe(info)
            start = " / ".join(map(str, info.get("load_average_at_start", ["?"])))
            rows.append(
                f"| {name} | {info.get('commit', '?')} | {info['date']} | {start} | "
                f"{' / '.join(map(str, info['load_average']))} |"
            )
    if first is None:
        return ""
    if len(rows) > sum((RESULTS / name / "results.json").exists() for name in NAMES):
        # Some lines were kept: so is the line about the machine they were taken on.
        match = re.search(r"<!-- bench:machine -->\n(.*?)\n\n", text, re.DOTALL)
        if match:
            kept, *notes = match[1].split("\n", 1)[0].split(" For ")
            # A note about benchmarks that were not run again stays, as their rows do.
            old = [
                f"For {note}"
                for note in notes
                if not any(n in machines for n in note.split(": ", 1)[0].split(" and "))
            ]
            others = [f"For {n}: {d}" for n, d in machines.items() if d != kept]
            return " ".join([kept, *old, *others]) + "\n\n" + machine_table(rows)
    return describe(first) + "\n\n" + machine_table(rows)


def machine_table(rows: list[str]) -> str:
    return (
        "| benchmark | commit | finished "
        "| load average at its start (1 / 5 / 15 min) | at its end |\n"
        "| --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"
    )


def summary_block(text: str) -> str:
    rows = []
    for name in NAMES:
        path = RESULTS / name / "results.json"
        if not path.exists():
            rows += kept_rows(text, "summary", SECTIONS[name])
        else:
            for goal in json.loads(path.read_text()).get("goals", []):
                met = {True: "**met**", False: "**not met**", None: "(figure)"}[goal["met"]]
                rows.append(f"| {goal['section']} | {goal['goal']} | {goal['measured']} | {met} |")
    if not rows:
        return ""
    return "| | goal | measured | |\n| --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"


def main() -> None:
    text = DOC.read_text()
    CHARTS.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        tables = RESULTS / name / "tables.md"
        if not tables.exists():
            print(f"{name}: no results, section left as it was")
            continue
        text = replace(text, name, tables.read_text())
        for chart in (RESULTS / name).glob("*.png"):
            shutil.copy(chart, CHARTS / chart.name)
        print(f"{name}: tables and charts copied")
    summary = summary_block(text)
    if summary:
        text = replace(text, "summary", summary)
    machine = machine_block(text)
    if machine:
        text = replace(text, "machine", machine)
    DOC.write_text(text)


if __name__ == "__main__":
    main()
