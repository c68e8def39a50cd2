"""``sipwarden blocklist`` run as an operator runs it, against a temporary database."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "SIPWARDEN_DB"}
    environment["PYTHONPATH"] = str(REPO / "src")
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sipwarden", "blocklist", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=environment,
    )


def test_add_list_export_remove(tmp_path: Path) -> None:
    db = str(tmp_path / "bl.db")
    before = time.time()
    added = run(
        "add", "192.0.2.7", "--ttl", "300", "--reason", "svwar scan", "--db", db, cwd=tmp_path
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("blocked 192.0.2.7 until ")
    assert run("add", "2001:DB8::/32", "--db", db, cwd=tmp_path).returncode == 0

    listed = run("list", "--format", "json", "--db", db, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    assert [e["network"] for e in doc] == ["192.0.2.7", "2001:db8::/32"]
    assert doc[0]["origin"] == "cli" and doc[0]["reason"] == "svwar scan"
    assert before + 300 <= doc[0]["expires"] <= time.time() + 300
    assert doc[1]["expires"] is None

    table = run("list", "--db", db, cwd=tmp_path)
    assert "NETWORK" in table.stdout and "svwar scan" in table.stdout and "never" in table.stdout

    plain = run("export", "--format", "plain", "--db", db, cwd=tmp_path)
    assert plain.stdout == "192.0.2.7\n2001:db8::/32\n"
    ipset = run("export", "--format", "ipset", "--name", "sip", "--db", db, cwd=tmp_path)
    assert "create sip-v4 hash:net family inet timeout 0 maxelem 65536\n" in ipset.stdout
    assert "add sip-v6 2001:db8::/32 timeout 0\n" in ipset.stdout
    nft = run("export", "--format", "nftables", "--db", db, cwd=tmp_path)
    assert "add element inet filter sipwarden_v6 { 2001:db8::/32 }\n" in nft.stdout
    assert "add element inet filter sipwarden_v4 { 192.0.2.7 timeout " in nft.stdout

    removed = run("remove", "2001:db8::/32", "--db", db, cwd=tmp_path)
    assert removed.returncode == 0 and removed.stdout == "unblocked 2001:db8::/32\n"
    assert run("export", "--format", "plain", "--db", db, cwd=tmp_path).stdout == "192.0.2.7\n"
    again = run("remove", "2001:db8::/32", "--db", db, cwd=tmp_path)
    assert again.returncode == 1 and "not on the blocklist" in again.stderr


def test_database_path_comes_from_env_then_cwd(tmp_path: Path) -> None:
    env_db = tmp_path / "env.db"
    assert run("add", "192.0.2.1", cwd=tmp_path, env={"SIPWARDEN_DB": str(env_db)}).returncode == 0
    assert env_db.exists() and not (tmp_path / "sipwarden.db").exists()
    assert run("add", "192.0.2.2", cwd=tmp_path).returncode == 0
    assert (tmp_path / "sipwarden.db").exists()
    assert run("export", "--format", "plain", cwd=tmp_path).stdout == "192.0.2.2\n"


def test_listing_a_missing_database_is_empty_and_creates_nothing(tmp_path: Path) -> None:
    result = run("list", "--db", str(tmp_path / "none.db"), cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == "the blocklist is empty\n"
    assert run("list", "--format", "json", cwd=tmp_path).stdout.strip() == "[]"
    assert list(tmp_path.iterdir()) == []


def test_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    db = str(tmp_path / "bl.db")
    foreign = tmp_path / "app.db"
    raw = sqlite3.connect(foreign)
    raw.execute("CREATE TABLE users (name TEXT)")
    raw.commit()
    raw.close()
    cases = [
        (("add", "not-a-network", "--db", db), "not an IP address or CIDR network"),
        (("add", "0.0.0.0/0", "--db", db), "refusing to block every address"),
        (("add", "192.0.2.1", "--ttl", "-5", "--db", db), "positive number of seconds"),
        (("add", "192.0.2.1", "--db", str(foreign)), "not a sipwarden database"),
        (("list", "--db", str(foreign)), "not a sipwarden database"),
        (("add", "192.0.2.1", "--db", str(tmp_path / "no" / "such" / "dir.db")), "cannot open"),
        (("export", "--format", "ipset", "--name", "bad name", "--db", db), "ipset name"),
    ]
    for args, message in cases:
        result = run(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_the_gateways_finding_bans_are_listed_exported_and_removable(tmp_path: Path) -> None:
    """A ban the gateway ordered from a finding reaches the shared file on its tick; the
    operator sees it with its reason, exports it, and removing it lifts it in the gateway on
    the next tick."""
    from sipwarden.detect.finding import Finding, RecommendedAction
    from sipwarden.detect.taxonomy import Severity, Threat
    from sipwarden.gateway.enforcer import Enforcer, SharedBlocklist
    from sipwarden.gateway.policy import Policy
    from sipwarden.net import Endpoint
    from tests.detect import observe

    db = tmp_path / "bl.db"
    now = time.time()
    flood = Finding(
        "tdos.request_flood",
        Threat.TDOS,
        Severity.HIGH,
        80,
        "test",
        "192.0.2.66",
        now,
        now,
        source=Endpoint("192.0.2.66", 5060),
        recommended_action=RecommendedAction("TEMP_BLOCK", 600),
    )
    request = (
        b"OPTIONS sip:100@198.51.100.5 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.66;branch=z9hG4bK1\r\n"
        b"From: <sip:a@192.0.2.66>;tag=1\r\nTo: <sip:100@198.51.100.5>\r\nCall-ID: c1\r\n"
        b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    enforcer = Enforcer(Policy())
    shared = SharedBlocklist(db, enforcer)
    try:
        enforcer(observe(request, now, "192.0.2.66"), now, [flood], request)
        shared(now)

        listed = run("list", "--format", "json", "--db", str(db), cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        [entry] = json.loads(listed.stdout)
        assert (entry["network"], entry["origin"], entry["reason"], entry["ref"]) == (
            "192.0.2.66",
            "finding",
            "tdos.request_flood",
            flood.id,
        )
        assert entry["expires"] == now + 600
        table = run("list", "--db", str(db), cwd=tmp_path).stdout
        assert "finding" in table and "tdos.request_flood" in table
        plain = run("export", "--format", "plain", "--db", str(db), cwd=tmp_path)
        assert plain.stdout == "192.0.2.66\n"

        removed = run("remove", "192.0.2.66", "--db", str(db), cwd=tmp_path)
        assert removed.returncode == 0, removed.stderr
        assert enforcer.is_blocked("192.0.2.66", now + 1)
        shared(now + 1)
        assert not enforcer.is_blocked("192.0.2.66", now + 1)
    finally:
        shared.close()
