"""Golden end-to-end cases in the suricata-verify shape: one folder per capture, checked as a user.

Each folder under ``tests/golden/`` holds:

``test.toml``
    ``description``; ``[capture]`` with ``shared`` (a path under ``../shared``, read through
    :func:`need_shared`, so non-MIT corpus files never enter the repo) **or** ``repo`` (a path in
    this repository, e.g. ``examples/captures/…``); optional ``config`` (a TOML file in the case
    folder, passed as ``--config``); ``benign = true`` adds the rule "no finding of severity
    medium or above"; optional ``[stats]`` compared key by key with the document's ``stats``
(``stats_pending = "why"`` makes a known gap an xfail);
    and ``[[checks]]``: a filter over the findings plus the number of findings it must match.
``expected.json``
    The snapshot: the sorted ``[detector, key, severity, count]`` of every finding, compared
    exactly. ``SIPWARDEN_UPDATE_GOLDEN=1 pytest tests/golden`` rewrites the snapshots (and only
    those) after a deliberate change; review the diff like code.

The capture is analysed once per case by ``python -m sipwarden analyze --format json`` in a
subprocess, as a user would run it. A check's filter keys (all optional, all must hold):
``detector``, ``detector_not``, ``threat``, ``severity_min``, ``severity_max``, ``source_ip``,
``target_ip``, ``target_user``, ``count_min``/``count_max`` (the finding's own episode count).
Its expectation: ``matches`` (exact), ``matches_min``, ``matches_max`` (number of matching
findings) and ``sources`` (distinct source IPs among them). A check with ``pending = "why"``
states what must hold once a known gap closes: an xfail until then, a pass after.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import subprocess
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, need_shared

HERE = Path(__file__).resolve().parent
UPDATE = os.environ.get("SIPWARDEN_UPDATE_GOLDEN", "") not in ("", "0")
SEVERITIES = ("info", "low", "medium", "high", "critical")
FILTER_KEYS = {
    "detector",
    "detector_not",
    "threat",
    "severity_min",
    "severity_max",
    "source_ip",
    "target_ip",
    "target_user",
    "count_min",
    "count_max",
}
EXPECT_KEYS = {"matches", "matches_min", "matches_max", "sources"}
CHECK_KEYS = FILTER_KEYS | EXPECT_KEYS | {"name", "pending"}
CASE_KEYS = {"description", "capture", "config", "benign", "stats", "stats_pending", "checks"}
# A hung analysis must fail the case, not the whole CI job.
TIMEOUT_S = 600


@dataclass(frozen=True)
class Case:
    name: str
    folder: Path
    spec: dict[str, Any]
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def capture(self) -> dict[str, str]:
        capture: dict[str, str] = self.spec["capture"]
        return capture


def _load_cases() -> list[Case]:
    cases = []
    for spec_path in sorted(HERE.glob("*/test.toml")):
        spec = tomllib.loads(spec_path.read_text(encoding="utf-8"))
        unknown = set(spec) - CASE_KEYS
        assert not unknown, f"{spec_path}: unknown keys {sorted(unknown)}"
        checks = list(spec.get("checks", []))
        for check in checks:
            assert "name" in check, f"{spec_path}: every check needs a name"
            unknown = set(check) - CHECK_KEYS
            assert not unknown, f"{spec_path}: check {check['name']!r}: unknown {sorted(unknown)}"
            assert set(check) & EXPECT_KEYS, f"{spec_path}: check {check['name']!r} expects nothing"
        if spec.get("benign"):
            checks.append(
                {"name": "benign: nothing medium or above", "severity_min": "medium", "matches": 0}
            )
        cases.append(Case(spec_path.parent.name, spec_path.parent, spec, checks))
    return cases


CASES = _load_cases()


def _capture_path(case: Case) -> Path:
    capture = case.capture
    if "shared" in capture:
        return need_shared(capture["shared"])
    path = REPO / capture["repo"]
    assert path.exists(), f"{case.name}: repo capture {capture['repo']} is missing"
    return path


@functools.cache
def _run(case_name: str) -> tuple[dict[str, Any] | None, str]:
    """The analysis document of a case, or why there is none; one subprocess per case."""
    case = next(c for c in CASES if c.name == case_name)
    capture = _capture_path(case)
    command = [sys.executable, "-m", "sipwarden", "analyze", "--format", "json", str(capture)]
    if "config" in case.spec:
        command += ["--config", str(case.folder / case.spec["config"])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    if done.returncode != 0:
        why = f"sipwarden analyze exited {done.returncode} on {capture}"
        return None, f"{why}:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout), ""


def _document(case: Case) -> dict[str, Any]:
    document, error = _run(case.name)
    assert document is not None, error
    return document


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def _holds(finding: dict[str, Any], key: str, want: Any) -> bool:
    source = finding.get("source") or {}
    target = finding.get("target") or {}
    match key:
        case "detector":
            return bool(finding["detector"] == want)
        case "detector_not":
            return bool(finding["detector"] != want)
        case "threat":
            return bool(finding["threat"] == want)
        case "severity_min":
            return _rank(finding["severity"]) >= _rank(want)
        case "severity_max":
            return _rank(finding["severity"]) <= _rank(want)
        case "source_ip":
            return bool(source.get("ip") == want)
        case "target_ip":
            return bool(target.get("ip") == want)
        case "target_user":
            return bool(target.get("user") == want)
        case "count_min":
            return bool(finding["count"] >= want)
        case "count_max":
            return bool(finding["count"] <= want)
    raise AssertionError(f"unknown filter key {key!r}")


def _matches(finding: dict[str, Any], check: dict[str, Any]) -> bool:
    return all(_holds(finding, key, check[key]) for key in FILTER_KEYS if key in check)


def _check_failure(findings: list[dict[str, Any]], check: dict[str, Any]) -> str | None:
    """Why a check fails on these findings, or None when it holds."""
    hits = [f for f in findings if _matches(f, check)]
    n = len(hits)
    problems = []
    if "matches" in check and n != check["matches"]:
        problems.append(f"{n} findings match, expected {check['matches']}")
    if "matches_min" in check and n < check["matches_min"]:
        problems.append(f"{n} findings match, expected at least {check['matches_min']}")
    if "matches_max" in check and n > check["matches_max"]:
        problems.append(f"{n} findings match, expected at most {check['matches_max']}")
    if "sources" in check:
        sources = {(f.get("source") or {}).get("ip") for f in hits}
        if len(sources) != check["sources"]:
            problems.append(f"{len(sources)} distinct sources, expected {check['sources']}")
    if not problems:
        return None
    shown = "\n".join(
        f"  {f['detector']} {f['severity']} x{f['count']}: {f['summary']}" for f in hits[:10]
    )
    return "; ".join(problems) + (f"\nmatching:\n{shown}" if shown else "")


def _snapshot_key(finding: dict[str, Any]) -> str:
    """The JSON has no aggregation key, so source, target and user stand in for it."""
    source = finding.get("source") or {}
    target = finding.get("target") or {}
    user = target.get("user")
    where = f"{source.get('ip', '-')}>{target.get('ip', '-')}"
    return f"{where}/{user}" if user else where


def snapshot(document: dict[str, Any]) -> list[list[str | int]]:
    rows: list[list[str | int]] = [
        [f["detector"], _snapshot_key(f), f["severity"], f["count"]] for f in document["findings"]
    ]
    return sorted(rows, key=lambda row: [str(x) for x in row])


# --- the tests ---------------------------------------------------------------------------------


def test_cases_exist() -> None:
    assert len(CASES) >= 30, "the golden folders went missing"


def test_every_corpus_capture_has_a_case() -> None:
    """Every capture listed in ../shared/corpus/pcap/INDEX.tsv is some case's capture."""
    index = need_shared("corpus/pcap/INDEX.tsv")
    with index.open(encoding="utf-8", newline="") as handle:
        listed = {f"corpus/pcap/{row['file']}" for row in csv.DictReader(handle, delimiter="\t")}
    covered = {c.capture["shared"] for c in CASES if "shared" in c.capture}
    assert not listed - covered, f"captures without a golden case: {sorted(listed - covered)}"
    assert not covered - listed, f"cases naming captures not in INDEX.tsv: {covered - listed}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_analyze_runs(case: Case) -> None:
    document = _document(case)
    assert document["inputs"] == [str(_capture_path(case))]
    for finding in document["findings"]:
        assert finding["severity"] in SEVERITIES
        assert finding["count"] >= 1


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_stats(case: Case) -> None:
    expected = case.spec.get("stats")
    if not expected:
        pytest.skip("no [stats] in test.toml")
    stats = _document(case)["stats"]
    actual = {k: stats.get(k) for k in expected}
    if actual != expected and "stats_pending" in case.spec:
        pytest.xfail(f"pending: {case.spec['stats_pending']} ({actual} != {expected})")
    assert actual == expected


CHECKS = [(case, check) for case in CASES for check in case.checks]


@pytest.mark.parametrize(
    ("case", "check"), CHECKS, ids=[f"{c.name}:{k['name']}" for c, k in CHECKS]
)
def test_check(case: Case, check: dict[str, Any]) -> None:
    failure = _check_failure(_document(case)["findings"], check)
    if failure is not None and "pending" in check:
        pytest.xfail(f"pending: {check['pending']} ({failure.splitlines()[0]})")
    assert failure is None, f"{case.name}: {check['name']}: {failure}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_snapshot(case: Case) -> None:
    actual = snapshot(_document(case))
    path = case.folder / "expected.json"
    if UPDATE:
        path.write_text(json.dumps(actual, indent=1) + "\n", encoding="utf-8")
        return
    assert path.exists(), f"{path} missing: run SIPWARDEN_UPDATE_GOLDEN=1 pytest tests/golden"
    expected = json.loads(path.read_text(encoding="utf-8"))
    assert actual == expected, (
        f"{case.name}: findings changed; if on purpose, SIPWARDEN_UPDATE_GOLDEN=1 pytest "
        f"tests/golden and review the diff\n{_row_diff(expected, actual)}"
    )


def _row_diff(expected: list[list[Any]], actual: list[list[Any]]) -> str:
    """The rows only one side has (as a multiset), at most 20 each, for the failure message."""
    gone = Counter(map(tuple, expected)) - Counter(map(tuple, actual))
    new = Counter(map(tuple, actual)) - Counter(map(tuple, expected))
    lines = [f"- {list(row)}" for row in list(gone.elements())[:20]]
    lines += [f"+ {list(row)}" for row in list(new.elements())[:20]]
    return "\n".join(lines)


# --- the harness's own logic, without a capture -----------------------------------------------

_FINDING = {
    "detector": "recon.scanner_user_agent",
    "threat": "recon",
    "severity": "high",
    "count": 3,
    "summary": "s",
    "source": {"ip": "192.0.2.1", "port": 5060, "transport": "udp"},
    "target": {"ip": "198.51.100.1", "user": "100"},
}


def test_filters_and_expectations() -> None:
    findings = [_FINDING, {**_FINDING, "severity": "low", "source": {"ip": "192.0.2.2"}}]
    assert _check_failure(findings, {"threat": "recon", "matches": 2, "sources": 2}) is None
    assert _check_failure(findings, {"severity_min": "medium", "matches": 1}) is None
    low_one = {"severity_max": "low", "source_ip": "192.0.2.2", "matches": 1}
    assert _check_failure(findings, low_one) is None
    assert _check_failure(findings, {"count_min": 4, "matches": 0}) is None
    assert _check_failure(findings, {"target_user": "100", "matches_min": 3}) is not None
    assert _check_failure(findings, {"detector": "x.y", "matches_max": 0}) is None
    failure = _check_failure(findings, {"severity_min": "medium", "matches": 0})
    assert failure is not None
    assert "recon.scanner_user_agent high x3" in failure


def test_snapshot_rows_are_sorted_and_keyed() -> None:
    no_target = {**_FINDING, "detector": "a.b", "target": None}
    rows = snapshot({"findings": [_FINDING, no_target]})
    assert rows == [
        ["a.b", "192.0.2.1>-", "high", 3],
        ["recon.scanner_user_agent", "192.0.2.1>198.51.100.1/100", "high", 3],
    ]
