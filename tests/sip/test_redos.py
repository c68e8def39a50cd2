"""Hostile shapes do not make any parser path super-linear (regex backtracking, rescans).

Generous bounds (seconds, on inputs at the size limits) - these are DoS guards, not speed
targets; a catastrophic regex takes minutes on the same inputs.
"""

from __future__ import annotations

import contextlib
import time

import pytest

from sipwarden.sip import SipParseError, parse_message, parse_uri

HEAD = (
    b"INVITE sip:bob@example.com SIP/2.0\r\nFrom: <sip:a@example.com>;tag=1\r\n"
    b"To: <sip:b@example.com>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
)


def _hostile(header: bytes) -> bytes:
    return HEAD + header + b"\r\nContent-Length: 0\r\n\r\n"


CASES = {
    "via_branch_run": b"Via: SIP/2.0/UDP h" + b";branch=a" * 200 + b" !",
    "via_param_run": b"Via: SIP/2.0/UDP h" + b";a=b" * 400 + b"\x01",
    "via_host_labels": b"Via: SIP/2.0/UDP " + b"a-" * 900 + b"!",
    "contact_display_tokens": b"Contact: " + b"a " * 900 + b"!",
    "contact_params": b"Contact: <sip:a@b>" + b";a=b" * 400 + b'"',
    "contact_quotes": b'Contact: "' + b'\\"' * 900,
    "contact_list": b"Contact: " + b"<sip:a@b>," * 180 + b",",
    "authorization": b"Authorization: Digest " + b'a="b",' * 300 + b'"',
    "identity": b"Identity: " + b"a." * 900 + b"!",
    "user_agent_comments": b"User-Agent: " + b"(" * 900,
    "cseq_digits": b"CSeq: " + b"1" * 1900 + b" INVITE",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_header_is_linear(name: str) -> None:
    data = _hostile(CASES[name])
    started = time.perf_counter()
    with contextlib.suppress(SipParseError):
        parse_message(data).defects  # noqa: B018 - runs every typed parser and check
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    "uri",
    [
        "sip:" + "a-" * 240 + "!",
        "sip:" + "a." * 240 + "-",
        "sip:" + "%41" * 150 + "@" + "b" * 40 + "!",
        "sip:a@b" + ";x=y" * 120 + "?",
    ],
)
def test_hostile_uri_is_linear(uri: str) -> None:
    started = time.perf_counter()
    with contextlib.suppress(ValueError):
        parse_uri(uri)
    assert time.perf_counter() - started < 1.0
