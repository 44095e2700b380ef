#!/usr/bin/env python3
"""compat/report.py: the bookkeeping half of ci/compat.sh (the Kafka compatibility report card).

Lists librdkafka's broker tests from its tests/test.c table, turns the test-runner's summaries
and pytest's JUnit XML into one results file per suite (`name<TAB>STATE<TAB>seconds<TAB>note`),
and prints the report-card line against a checked-in allowlist. It never runs a test, never
starts a process and never touches the network; ci/compat.sh does all of that.

Usage:
  report.py rdk-tests TEST_C                      broker tests: `number name scenario flags`
  report.py rdk-local-tests TEST_C                local tests: `number name local flags`
  report.py rdk-results TEST_C LOGDIR OUT         runner logs (LOGDIR/<number>.<scenario>.log)
                                                  of the broker tests -> OUT
  report.py rdk-local-results TEST_C LOGDIR OUT   runner logs (LOGDIR/<number>.local.log) of the
                                                  local tests -> OUT
  report.py pytest-results [--skip=FILE] JUNIT_XML... OUT
  report.py failed-allowed RESULTS ALLOWLIST   (allowlisted tests that failed, as node ids)
                                                  pytest junit files (+ deselected) -> OUT
  report.py card SUITE RESULTS ALLOWLIST [--subset]
                                                  print the card; exit 1 iff an allowed test
                                                  did not pass (--subset: only those run)
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The name that opens one `_TEST(name, flags, ...)` entry of test.c's `tests[]` table.
ENTRY = re.compile(r"_TEST\(\s*(\d{4}_\w+)\s*,")
COMMENT = re.compile(r"/\*.*?\*/", re.S)
# A row of the runner's summary table: `| 0012_produce_consume | PASSED | 1.234s |`.
ROW = re.compile(r"^\|\s*(\d{4}_\w+)\s*\|\s*([A-Z_]+)\s*\|\s*([0-9.]+)s\s*\|\s*(.*)$")
MAX_NOTE = 160


def rdk_tests(test_c: Path, local: bool = False) -> list[tuple[str, str, str, str]]:
    """Every test of the table that needs a broker: not local-only (mock), not manual. With
    `local`, the other half: every `TEST_F_LOCAL` test (client unit tests and librdkafka's mock
    cluster; they never reach a broker), not manual, under the scenario name `local`."""
    text = test_c.read_text(errors="replace")
    start = text.index("struct test tests[]")
    end = text.index("{NULL}", start) + len("{NULL}")
    table = COMMENT.sub("", text[start:end])
    starts = list(ENTRY.finditer(table))
    out = []
    for i, match in enumerate(starts):
        # An entry runs to the next `_TEST(` (entries span lines and carry `#if` guards).
        stop = starts[i + 1].start() if i + 1 < len(starts) else len(table)
        name, rest = match.group(1), table[match.end():stop]
        flags = " ".join(sorted(set(re.findall(r"TEST_F_\w+", rest)))) or "-"
        if "TEST_F_MANUAL" in flags.split() or ("TEST_F_LOCAL" in flags.split()) != local:
            continue
        scen = re.search(r'\.scenario\s*=\s*"([^"]*)"', rest)
        if local:
            out.append((name[:4], name, "local", flags))
        else:
            out.append((name[:4], name, scen.group(1) if scen else "default", flags))
    return out


def parse_runner_log(log: Path) -> dict[str, tuple[str, str, str]]:
    """The summary rows of one test-runner log: name -> (state, seconds, note)."""
    rows: dict[str, tuple[str, str, str]] = {}
    if not log.exists():
        return rows
    for raw in log.read_text(errors="replace").splitlines():
        line = ANSI.sub("", raw).strip()
        match = ROW.match(line)
        if match:
            note = match.group(4).strip().strip("|").strip()
            rows[match.group(1)] = (match.group(2), match.group(3), note[:MAX_NOTE])
    return rows


def rdk_results(test_c: Path, logdir: Path, out: Path, local: bool = False) -> None:
    """One row per broker (or, with `local`, local) test; a test number may have one log per
    scenario (local tests: `<number>.local.log`)."""
    lines = []
    for number, name, scenarios, _flags in rdk_tests(test_c, local):
        # Only the logs of the scenarios the test belongs to (`default`, `noautocreate`, ...).
        logs = [logdir / f"{number}.{sc}.log" for sc in scenarios.split(",")]
        logs = [log for log in logs if log.exists()]
        rows: dict[str, tuple[str, str, str]] = {}
        for log in logs:
            for key, row in parse_runner_log(log).items():
                # A scenario that ran the test beats one that skipped it.
                if key not in rows or rows[key][0] in ("SKIPPED", "NOT_STARTED"):
                    rows[key] = row
        if name in rows:
            state, secs, note = rows[name]
        elif not logs:
            state, secs, note = "NOTRUN", "0", "not run (not selected or in the skip list)"
        else:
            state, secs, note = "FAILED", "0", "runner crashed or timed out before its summary"
        if state == "SKIPPED" and not note:
            note = "skipped by the test itself"
        lines.append(f"{name}\t{state}\t{secs}\t{note}")
    out.write_text("\n".join(lines) + "\n")


def pytest_results(junits: list[Path], out: Path, skip: Path | None = None) -> None:
    """One row per test case of the JUnit files, plus a NOTRUN row per deselected test."""
    lines = []
    if skip is not None and skip.exists():
        for raw in skip.read_text().splitlines():
            entry, _, reason = raw.partition("#")
            entry = entry.strip()
            if entry:
                # `test_x.py::test_y` as deselected -> `test_x::test_y` as JUnit names it.
                name = entry.replace(".py::", "::", 1)
                note = ("deselected: " + reason.strip())[:MAX_NOTE]
                lines.append(f"{name}\tNOTRUN\t0\t{note}")
    for junit in junits:
        if not junit.exists():
            continue
        for case in ET.parse(junit).getroot().iter("testcase"):
            module = case.get("classname", "").split(".")[-1]
            name = f"{module}::{case.get('name')}"
            secs = case.get("time", "0")
            state, note = "PASSED", ""
            for child in case:
                if child.tag in ("failure", "error"):
                    state = "FAILED"
                    note = (child.get("message") or child.tag).splitlines()[0] if (
                        child.get("message")) else child.tag
                    break
                if child.tag == "skipped":
                    state = "SKIPPED"
                    note = child.get("message") or "skipped"
            note = note.replace("\t", " ")[:MAX_NOTE]
            lines.append(f"{name}\t{state}\t{secs}\t{note}")
    out.write_text("\n".join(lines) + ("\n" if lines else ""))


def read_allowlist(path: Path) -> list[str]:
    names = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


def card(suite: str, results: Path, allowlist: Path, subset: bool = False) -> int:
    """Print the suite's line; 1 iff an allowlisted test did not pass. With `subset` (a
    `--tests` run) allowlisted tests that were not run are left out of the allowlist count."""
    states: dict[str, str] = {}
    for raw in results.read_text().splitlines():
        parts = raw.split("\t")
        if len(parts) >= 2:
            states[parts[0]] = parts[1]
    allowed = read_allowlist(allowlist)
    if subset:
        allowed = [n for n in allowed if states.get(n, "NOTRUN") != "NOTRUN"]
    total = len(states)
    passed = sum(1 for s in states.values() if s == "PASSED")
    allowed_passed = [n for n in allowed if states.get(n) == "PASSED"]
    broken = [n for n in allowed if states.get(n) != "PASSED"]
    for name in broken:
        print(f"compat {suite}: ALLOWLISTED TEST DID NOT PASS: {name} "
              f"({states.get(name, 'not run')})")
    print(f"compat {suite}: {passed} of {total} tests passed; "
          f"allowlist {len(allowed_passed)} of {len(allowed)}")
    return 1 if broken else 0


def failed_allowed(results: Path, allowlist: Path) -> list[str]:
    """Allowlisted tests the results file does not show as passed, as pytest node ids under
    test/integration/ (`test_x::test_y[p]` -> `test/integration/test_x.py::test_y[p]`)."""
    states: dict[str, str] = {}
    for raw in results.read_text().splitlines():
        parts = raw.split("\t")
        if len(parts) >= 2:
            states[parts[0]] = parts[1]
    ids = []
    for name in read_allowlist(allowlist):
        if states.get(name) == "FAILED":
            module, _, test = name.partition("::")
            ids.append(f"test/integration/{module}.py::{test}")
    return ids


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = argv[1]
    if cmd == "rdk-tests" and len(argv) == 3:
        for row in rdk_tests(Path(argv[2])):
            print(" ".join(row))
        return 0
    if cmd == "rdk-local-tests" and len(argv) == 3:
        for row in rdk_tests(Path(argv[2]), local=True):
            print(" ".join(row))
        return 0
    if cmd in ("rdk-results", "rdk-local-results") and len(argv) == 5:
        rdk_results(Path(argv[2]), Path(argv[3]), Path(argv[4]), cmd == "rdk-local-results")
        return 0
    if cmd == "pytest-results" and len(argv) >= 4:
        args = argv[2:]
        skip = None
        if args[0].startswith("--skip="):
            skip = Path(args.pop(0)[len("--skip="):])
        pytest_results([Path(p) for p in args[:-1]], Path(args[-1]), skip)
        return 0
    if cmd == "failed-allowed" and len(argv) == 4:
        for node in failed_allowed(Path(argv[2]), Path(argv[3])):
            print(node)
        return 0
    if cmd == "card" and len(argv) in (5, 6):
        subset = len(argv) == 6 and argv[5] == "--subset"
        return card(argv[2], Path(argv[3]), Path(argv[4]), subset)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
