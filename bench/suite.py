"""The test suite's wall time and its slowest tests (issue 25), stored as a result the benchmark page
shows (``bench/results/<stamp>-suite-cpu.json``).

    python -m bench.suite                                  # runs make test's pytest command once
    python -m bench.suite --junit FILE --wall SECONDS      # records a run made by hand

The run uses ``make test``'s own command (``pytest -q``, one process: what ``.ci/run`` runs) with a JUnit
report, so the per-test times are pytest's (setup + call + teardown of each test; a session fixture's
build lands on the first test that asks for it). The figure is only as quiet as the machine: the load average at
start and end is recorded beside it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
COMMAND = [sys.executable, "-m", "pytest", "-q"]
TARGET_MINUTES = 30.0
SLOWEST = 20


def parse_junit(path: Path) -> dict[str, Any]:
    """Counts and per-test seconds from a JUnit XML report (pytest's ``--junitxml``)."""
    root = ET.parse(path).getroot()
    cases = []
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for tc in root.iter("testcase"):
        counts["tests"] += 1
        outcome = "passed"
        for kind, key in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
            if tc.find(kind) is not None:
                counts[key] += 1
                outcome = kind
        cases.append(
            {
                "test": f"{tc.get('classname', '')}::{tc.get('name', '')}",
                "seconds": float(tc.get("time") or 0.0),
                "outcome": outcome,
            }
        )
    cases.sort(key=lambda c: -c["seconds"])
    by_file: dict[str, float] = {}
    for c in cases:
        f = c["test"].rsplit("::", 1)[0].rsplit(".", 1)[0].replace(".", "/") + ".py"
        by_file[f] = by_file.get(f, 0.0) + c["seconds"]
    return {
        **counts,
        "test_seconds_sum": round(sum(c["seconds"] for c in cases), 1),
        "slowest": [{**c, "seconds": round(c["seconds"], 1)} for c in cases[:SLOWEST]],
        "slowest_files": [
            {"file": f, "seconds": round(s, 1)} for f, s in sorted(by_file.items(), key=lambda x: -x[1])[:10]
        ],
    }


def record(junit: Path, wall_s: float, command: list[str], load_start, load_end, commit: str) -> dict:
    from bench.common import machine_info

    return {
        "meta": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "mode": "suite",
            "device": "cpu",
            "parts": ["suite"],
            "machine": {**machine_info(), "load_avg_at_start": load_start},
            "load_avg_at_end": load_end,
        },
        "suite": {
            "command": " ".join(command),
            "commit": commit,
            "wall_s": round(wall_s, 1),
            **parse_junit(junit),
            "passed": wall_s / 60.0 < TARGET_MINUTES,
        },
    }


def rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    s = r.get("suite")
    if not s:
        return []
    return [
        {
            "name": f"Test suite wall time (`{s['command'].split('pytest', 1)[-1].strip()}`, commit {s['commit']})",
            "value": f"{s['wall_s'] / 60:.1f} min ({s['tests']} tests: {s['failures']} failed, {s['errors']} errors, "
            f"{s['skipped']} skipped; load average {r['meta']['machine'].get('load_avg_at_start') or r['meta'].get('load_avg_at_end')})"
            + (f". {s['note']}" if s.get("note") else ""),
            "target": f"< {TARGET_MINUTES:.0f} min (the whole .ci/run)",
            "status": "not determined" if s.get("note") else ("PASS" if s["passed"] else "FAIL"),
        }
    ]


def section(r: dict[str, Any], path: Path | None = None) -> list[str]:
    s = r.get("suite")
    if not s:
        return []
    src = f" (`bench/results/{path.name}`)" if path else ""
    L = [f"## The test suite: its {len(s['slowest'])} slowest tests{src}", ""]
    L.append(
        f"{r['meta']['date']}, `{s['command']}` at commit {s['commit']}: {s['wall_s'] / 60:.1f} min wall, "
        f"{s['test_seconds_sum'] / 60:.1f} min of test time summed over the tests (setup, call and teardown). Load average at start / "
        f"end {r['meta']['machine'].get('load_avg_at_start')} / {r['meta'].get('load_avg_at_end')}."
        + (f" {s['note']}" if s.get("note") else "")
    )
    L.append("")
    L.append("| test | seconds | outcome |")
    L.append("|---|---:|---|")
    L += [f"| `{c['test']}` | {c['seconds']:,.1f} | {c['outcome']} |" for c in s["slowest"]]
    L.append("")
    L.append("| file | seconds (sum of its tests) |")
    L.append("|---|---:|")
    L += [f"| `{f['file']}` | {f['seconds']:,.1f} |" for f in s["slowest_files"]]
    L.append("")
    return L


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__.splitlines()[0])
    p.add_argument("--junit", default=None, help="record this JUnit report instead of running the suite")
    p.add_argument("--wall", type=float, default=None, help="with --junit: the run's wall seconds")
    p.add_argument("--command", default=" ".join(COMMAND[1:]), help="with --junit: the command it ran")
    p.add_argument("--commit", default=None, help="with --junit: the commit it ran (default: HEAD)")
    p.add_argument("--note", default="", help="with --junit: what to know about the run (e.g. interrupted)")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = p.parse_args(argv)
    from bench.common import load_avg

    commit = (
        args.commit
        or subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
        ).stdout.strip()
    )
    if args.junit:
        if args.wall is None:
            p.error("--junit needs --wall")
        res = record(Path(args.junit), args.wall, ["python", *args.command.split()], None, load_avg(), commit)
        res["suite"]["note"] = args.note
        res["suite"]["passed"] = res["suite"]["passed"] and not args.note
    else:
        junit = Path(args.out) / ".suite-junit.xml"
        start = load_avg()
        t0 = time.perf_counter()
        subprocess.run([*COMMAND, f"--junitxml={junit}"], cwd=REPO)
        res = record(junit, time.perf_counter() - t0, ["python", *COMMAND[1:]], start, load_avg(), commit)
        junit.unlink()
    out = Path(args.out) / f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-suite-cpu.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"bench: wrote {out}", file=sys.stderr)
    for row in rows(res):
        print(f"{row['name']}: {row['value']} (target {row['target']}) {row['status']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
