"""Copy the benchmarks' tables and charts into docs/BENCHMARKS.md and docs/bench/.

docs/BENCHMARKS.md holds the method and the conclusions; every table in it sits between
`<!-- bench:NAME -->` and `<!-- /bench:NAME -->` and is replaced here by
bench/results/NAME/tables.md, and every chart bench/results/NAME/*.png is copied to docs/bench/.
The machine block (`<!-- bench:machine -->`) lists the machine and the load each benchmark ran
under. A benchmark without results leaves its section as it was.

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
NAMES = ["crash", "coldstart", "reload", "streams", "deploy_speed", "rolling"]


def replace(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{DOC.relative_to(ROOT)} has no <!-- bench:{name} --> section")
    return pattern.sub(lambda m: m[1] + body.rstrip() + "\n" + m[2], text)


def machine_block() -> str:
    rows, first = [], None
    for name in NAMES:
        path = RESULTS / name / "results.json"
        if path.exists():
            info = json.loads(path.read_text())["machine"]
            first = first or info
            start = " / ".join(map(str, info.get("load_average_at_start", ["?"])))
            rows.append(
                f"| {name} | {info.get('commit', '?')} | {info['date']} | {start} | "
                f"{' / '.join(map(str, info['load_average']))} |"
            )
    if first is None:
        return ""
    return (
        f"{first['cores']} cores ({first['cpu']}), {first['memory_mb'] / 1024:.0f} GB of memory "
        f"(`nproc`, `free`), Linux {first['kernel']}.\n\n"
        "| benchmark | commit | finished "
        "| load average at its start (1 / 5 / 15 min) | at its end |\n"
        "| --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"
    )


def summary_block() -> str:
    rows = []
    for name in NAMES:
        path = RESULTS / name / "results.json"
        if path.exists():
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
    summary = summary_block()
    if summary:
        text = replace(text, "summary", summary)
    machine = machine_block()
    if machine:
        text = replace(text, "machine", machine)
    DOC.write_text(text)


if __name__ == "__main__":
    main()
