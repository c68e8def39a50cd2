"""``sipwarden`` run as a user runs it: exit codes, JSON on stdout, no traceback for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, need_shared

EXAMPLES = REPO / "examples" / "messages"


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sipwarden", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.decode().startswith("sipwarden ")


def test_valid_message_exits_0_with_json() -> None:
    result = run("parse", str(EXAMPLES / "invite-with-sdp.sip"), "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["valid"] is True and doc["method"] == "INVITE"
    assert doc["defects"] == []
    via = next(h for h in doc["headers"] if h["name"] == "Via")
    assert via["typed"]["value"][0]["branch"] == "z9hG4bK.proxy.7f3a9c"


def test_violation_exits_1() -> None:
    result = run("parse", str(EXAMPLES / "scanner-options-spoofed.sip"), "--format", "json")
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["valid"] is False
    assert [d["code"] for d in doc["defects"] if d["violation"]] == ["cseq_method_mismatch"]


def test_unparsable_input_from_stdin_exits_1_without_traceback() -> None:
    result = run("parse", "-", "--format", "json", stdin=b"\x16\x03\x01 binary junk\r\n")
    assert result.returncode == 1
    assert b"Traceback" not in result.stderr
    doc = json.loads(result.stdout)
    assert doc["error"]["code"] == "invalid_start_line"
    assert doc["error"]["offset"] == 0


def test_text_format_names_the_error_and_offset() -> None:
    result = run("parse", "-", stdin=b"INVITE sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n")
    assert result.returncode == 1
    out = result.stdout.decode()
    assert "invalid_content_length at byte 24" in out and "INVALID" in out


def test_oversize_stdin_is_refused_not_loaded(tmp_path: Path) -> None:
    result = run("parse", "-", stdin=b"A" * 200_000)
    assert result.returncode == 1
    assert b"message_too_large" in result.stdout
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("parse", "/nonexistent/file.sip"), b"error: /nonexistent/file.sip: no such file"),
        (("parse",), b"Missing argument"),
        (("parse", "x", "--format", "xml"), b"Invalid value"),
        (("frobnicate",), b"No such command"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], message: bytes) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["wsinv.dat", "intmeth.dat", "unreason.dat", "inv2543.dat"])
def test_tortuous_but_valid_messages_exit_0(name: str) -> None:
    path = need_shared("corpus/torture/rfc4475") / name
    assert run("parse", str(path)).returncode == 0


@pytest.mark.parametrize(
    "name",
    [
        "badinv01.dat",
        "clerr.dat",
        "lwsstart.dat",
        "mismatch01.dat",
        "multi01.dat",
        "mcl01.dat",
        "insuf.dat",
        "baddate.dat",
    ],
)
def test_invalid_torture_messages_exit_1(name: str) -> None:
    path = need_shared("corpus/torture/rfc4475") / name
    result = run("parse", str(path), "--format", "json")
    assert result.returncode == 1
    json.loads(result.stdout)
