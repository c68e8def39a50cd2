"""malformed detectors for messages that parse but are abusive: each size and count limit fires
one past its default and not at it, a source reaching the repeat threshold within the window is
graded high (and forgotten once the window slides), the allow-list holds, state stays bounded
under hostile sources, and what the parser already refuses is not reported twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwarden.detect import DETECTORS, Engine
from sipwarden.detect.detectors.malformed import (
    HeaderBomb,
    HeaderBombConfig,
    Oversize,
    OversizeConfig,
    ParserDefect,
    ParserDefectConfig,
)
from sipwarden.detect.finding import Finding
from sipwarden.detect.taxonomy import Severity
from sipwarden.sources.capture import iter_observations
from tests.conftest import CORPUS, need_shared
from tests.detect import observe


def request(
    headers: tuple[str, ...] = (),
    body: bytes = b"",
    uri: str = "sip:100@198.51.100.5",
    via_host: str = "192.0.2.10",
    from_uri: str = "sip:200@192.0.2.10",
    pad_to: int | None = None,
) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    if body:
        extra += "Content-Type: text/plain\r\n"
    head = (
        f"MESSAGE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {via_host};branch=z9hG4bK1\r\n"
        f"From: <{from_uri}>;tag=1\r\nTo: <sip:100@198.51.100.5>\r\nCall-ID: c1\r\n"
        f"CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n{extra}"
    )
    tail = f"Content-Length: {len(body)}\r\n\r\n"
    if pad_to is not None:
        # One X-Pad header (filled over several lines) brings the header block to pad_to bytes.
        missing = pad_to - len(head) - len(tail) - len(body)
        lines = []
        while missing > 0:
            chunk = min(missing, 1000)
            assert chunk >= 10, "pad too small to form a header line"
            lines.append("X-Pad: " + "p" * (chunk - 9) + "\r\n")
            missing -= chunk
        head += "".join(lines)
    return (head + tail).encode() + body


def nth(data: bytes, i: int) -> bytes:
    """``data`` as the ``i``-th distinct message (its own Call-ID): a byte-identical copy is a
    retransmission, which the repeat grading does not count."""
    return data.replace(b"Call-ID: c1\r\n", f"Call-ID: c1-{i}\r\n".encode(), 1)


#: Bytes of request() without its body, when Content-Length has five digits.
HEAD_WITH_5_DIGIT_LENGTH = len(request(body=b"b" * 10000)) - 10000


def ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def test_registered_and_documented() -> None:
    assert DETECTORS["malformed.oversize"] is Oversize
    assert DETECTORS["malformed.header_bomb"] is HeaderBomb
    assert DETECTORS["malformed.parser_defect"] is ParserDefect
    size = OversizeConfig()
    assert (size.max_message_bytes, size.max_header_bytes, size.max_body_bytes) == (
        16384,
        8192,
        8192,
    )
    assert (size.max_uri_bytes, size.max_host_bytes) == (256, 255)
    assert (size.window_s, size.messages_per_window, size.block_ttl_s) == (30.0, 15, 60)
    bomb = HeaderBombConfig()
    assert (bomb.max_headers, bomb.max_entries_per_header) == (64, 20)
    assert "sanity" in (OversizeConfig.model_fields["max_message_bytes"].description or "")
    assert "No published anchor" in (HeaderBombConfig.model_fields["max_headers"].description or "")
    defect = ParserDefectConfig()
    assert (defect.window_s, defect.messages_per_window, defect.block_ttl_s) == (30.0, 15, 60)
    assert "AudioCodes" in (ParserDefectConfig.model_fields["window_s"].description or "")
    for cls in (ParserDefect, Oversize, HeaderBomb):
        for name, info in cls.Config.model_fields.items():
            assert info.description, f"{cls.id}.{name} has no description"
        assert cls.__doc__ is not None
        for part in ("Signal:", "Why:", "Defaults' anchor:", "Known false positives:"):
            assert part in cls.__doc__, f"{cls.id} docstring lacks {part}"
    with pytest.raises(pydantic.ValidationError, match="max_header_byte"):
        OversizeConfig(max_header_byte=1)  # type: ignore[call-arg]


# -- ParserDefect --------------------------------------------------------------------------------

#: Parses, but breaks RFC 3261 §8.1.1.5 (CSeq method differs from the request method).
CSEQ_MISMATCH = request().replace(b"CSeq: 1 MESSAGE", b"CSeq: 1 INVITE")
#: Parses with a tolerance only (bare LF line ends, RFC 3261 §7 - tolerated by most stacks).
BARE_LF = request().replace(b"\r\n", b"\n")


def test_parser_defect_reports_violations_and_refusals_not_tolerances() -> None:
    detector = ParserDefect()
    assert detector.observe(observe(request())) == []
    assert detector.observe(observe(BARE_LF)) == []
    (hit,) = detector.observe(observe(CSEQ_MISMATCH))
    assert hit.indicators["code"] == "cseq_method_mismatch"
    assert hit.severity is Severity.LOW and hit.key == "192.0.2.10"
    (hit,) = detector.observe(observe(b"\x16\x03\x01 not SIP\r\n\r\n"))
    assert hit.indicators["code"] == hit.indicators["codes"] == "invalid_start_line"


def test_parser_defect_unbracketed_ipv6_is_a_violation() -> None:
    """normal/heplify--sip_ipv6_udp: the caller writes IPv6 hosts without brackets in every
    URI and the Via; RFC 3261 §25.1 (IPv6reference) and RFC 5118 §4.1 require them. A real
    violation, reported low, with every violated code listed."""
    data = request(
        uri="sip:4321@fec0:0:0:0:216:d3ff:fe0d:22c:5060",
        via_host="fe80:0:0:0:21a:a0ff:fe07:32e0",
        from_uri="sip:9876@fe80:0:0:0:21a:a0ff:fe07:32e0",
    )
    (hit,) = ParserDefect().observe(observe(data, src="fe80::21a:a0ff:fe07:32e0"))
    assert hit.severity is Severity.LOW
    assert hit.indicators["codes"] == "invalid_header_value,invalid_request_uri"


def test_parser_defect_graded_high_at_threshold_not_before() -> None:
    detector = ParserDefect()
    hits = [detector.observe(observe(nth(CSEQ_MISMATCH, i), ts=i))[0] for i in range(15)]
    assert [h.severity for h in hits[:14]] == [Severity.LOW] * 14
    assert hits[14].severity is Severity.HIGH
    action = hits[14].recommended_action
    assert action is not None and (action.action_code, action.suggested_ttl_seconds) == (
        "TEMP_BLOCK",
        60,
    )


def test_parser_defect_window_slides() -> None:
    detector = ParserDefect(ParserDefectConfig(window_s=10.0, messages_per_window=3))
    grade = [
        detector.observe(observe(nth(CSEQ_MISMATCH, i), ts=t))[0].severity
        for i, t in enumerate((0.0, 5.0, 10.0, 11.0))
    ]
    # The message at t=0 leaves the window at t=10: two in the window at t=10, three at 11.
    assert grade == [Severity.LOW, Severity.LOW, Severity.LOW, Severity.HIGH]
    detector.advance(100.0)
    assert detector.state_size() == 0 and detector.next_deadline() is None


def test_parser_defect_allow_listed_and_bounded() -> None:
    allowed = ParserDefect(ParserDefectConfig(allow_sources=("192.0.2.0/24",)))
    assert allowed.observe(observe(CSEQ_MISMATCH)) == []
    detector = ParserDefect(ParserDefectConfig(max_sources=50))
    for i in range(500):
        assert len(detector.observe(observe(CSEQ_MISMATCH, ts=i * 0.001, src=ip(i)))) == 1
    assert detector.state_size() <= 2 * 50 and detector.evictions() == 2 * 450
    # One source, many distinct messages: the fingerprints stay within max_sources too.
    flood = ParserDefect(ParserDefectConfig(max_sources=50))
    for i in range(500):
        flood.observe(observe(nth(CSEQ_MISMATCH, i), ts=i * 0.001))
    assert flood.state_size() <= 15 + 50 and flood.evictions() == 450


def test_retransmissions_are_hits_but_do_not_count_towards_the_block() -> None:
    """Regression: one INVITE retransmitted by a benign phone with a broken header (UDP timer
    A: 7 copies in 32 s) counted as 7 malformed messages, two calls nearly a TEMP_BLOCK."""
    detector = ParserDefect()
    hits = [detector.observe(observe(CSEQ_MISMATCH, ts=i * 0.5))[0] for i in range(30)]
    assert all(h.severity is Severity.LOW for h in hits)
    assert {h.indicators["messages_in_window"] for h in hits} == {"1"}
    # The same bytes from another source, or after the window, are new messages.
    assert (
        detector.observe(observe(CSEQ_MISMATCH, ts=15.0, src="192.0.2.11"))[0].indicators[
            "messages_in_window"
        ]
        == "1"
    )
    detector.advance(100.0)
    (hit,) = detector.observe(observe(CSEQ_MISMATCH, ts=100.0))
    assert hit.indicators["messages_in_window"] == "1" and detector.state_size() == 2


# -- Oversize ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "config", "at_limit", "over_limit"),
    [
        (
            "headers",
            OversizeConfig(),
            request(pad_to=8192),
            request(pad_to=8193),
        ),
        (
            "body",
            OversizeConfig(),
            request(body=b"b" * 8192),
            request(body=b"b" * 8193),
        ),
        (
            "message",
            OversizeConfig(max_header_bytes=16384, max_body_bytes=16384),
            request(body=b"b" * (16384 - HEAD_WITH_5_DIGIT_LENGTH)),
            request(body=b"b" * (16385 - HEAD_WITH_5_DIGIT_LENGTH)),
        ),
        (
            "Request-URI",
            OversizeConfig(),
            request(uri="sip:" + "u" * 239 + "@198.51.100.5"),
            request(uri="sip:" + "u" * 240 + "@198.51.100.5"),
        ),
        (
            "From URI",
            OversizeConfig(),
            request(from_uri="sip:" + "u" * 252),
            request(from_uri="sip:" + "u" * 253),
        ),
        (
            "Contact URI",
            OversizeConfig(),
            request(headers=("Contact: sip:" + "c" * 252 + ";expires=60",)),
            request(headers=("Contact: sip:" + "c" * 253 + ";expires=60",)),
        ),
        (
            "Via host",
            OversizeConfig(),
            request(via_host="h" * 255 + ":5060"),
            request(via_host="h" * 256 + ":5060"),
        ),
    ],
)
def test_oversize_fires_past_each_limit_not_at_it(
    limit: str, config: OversizeConfig, at_limit: bytes, over_limit: bytes
) -> None:
    detector = Oversize(config)
    silent = observe(at_limit)
    assert silent.message is not None, silent.error
    assert detector.observe(silent) == []
    loud = observe(over_limit, frame=7)
    assert loud.message is not None, loud.error
    (hit,) = detector.observe(loud)
    assert hit.detector == "malformed.oversize" and hit.key == "192.0.2.10"
    assert hit.indicators["limit"] == limit and hit.indicators["code"] == "oversize"
    assert int(hit.indicators["size"]) == int(hit.indicators["max"]) + 1
    assert hit.severity is Severity.LOW and hit.evidence.frames == (7,)
    assert hit.recommended_action is not None
    assert hit.recommended_action.action_code == "MONITOR"


def test_oversize_repeat_offender_graded_high_at_threshold_not_before() -> None:
    detector = Oversize()
    big = request(body=b"b" * 9000)
    for i in range(14):
        (hit,) = detector.observe(observe(nth(big, i), ts=i * 1.0, frame=i + 1))
        assert hit.severity is Severity.LOW
    (hit,) = detector.observe(observe(nth(big, 14), ts=14.0, frame=15))
    assert hit.severity is Severity.HIGH and hit.indicators["messages_in_window"] == "15"
    assert hit.recommended_action is not None
    assert (hit.recommended_action.action_code, hit.recommended_action.suggested_ttl_seconds) == (
        "TEMP_BLOCK",
        60,
    )


def test_oversize_window_slides() -> None:
    detector = Oversize()
    big = request(body=b"b" * 9000)
    # 15 messages over 30 s exactly: the first has left the (t - 30, t] window at t = 30.
    grades = [detector.observe(observe(nth(big, i), ts=i * 30 / 14))[0].severity for i in range(15)]
    assert set(grades) == {Severity.LOW}
    assert detector.next_deadline() is not None
    detector.advance(1000.0)
    assert detector.state_size() == 0 and detector.next_deadline() is None


def test_oversize_allow_listed_source_is_silent() -> None:
    detector = Oversize(OversizeConfig(allow_sources=("192.0.2.0/24",)))
    for i in range(30):
        assert detector.observe(observe(request(body=b"b" * 9000), ts=i * 0.1)) == []
    assert detector.state_size() == 0


def test_oversize_state_bounded_under_hostile_sources() -> None:
    detector = Oversize(OversizeConfig(max_sources=10))
    big = request(body=b"b" * 9000)
    for i in range(100):
        (hit,) = detector.observe(observe(big, ts=i * 0.001, src=ip(i)))
        assert hit.severity is Severity.LOW
        assert detector.state_size() <= 2 * 10  # a count and a message fingerprint per source
    assert detector.evictions() == 2 * 90


def test_parser_refusals_are_not_reported_twice() -> None:
    """Beyond ParseLimits the parser raises; that is ParserDefect's hit, not Oversize's."""
    huge = request(body=b"b" * 70000)
    obs = observe(huge)
    assert obs.message is None and obs.error is not None
    assert Oversize().observe(obs) == [] and HeaderBomb().observe(obs) == []
    (hit,) = ParserDefect().observe(obs)
    assert hit.indicators["code"] == obs.error.code
    many = request(headers=tuple(f"X-H{i}: {i}" for i in range(130)))
    obs = observe(many)
    assert obs.error is not None and obs.error.code == "too_many_headers"
    assert HeaderBomb().observe(obs) == []


def test_oversize_through_engine_is_one_finding_per_source() -> None:
    engine = Engine([Oversize()])
    for i in range(20):
        engine.observe(observe(nth(request(body=b"b" * 9000), i), ts=i * 0.5, frame=i + 1))
    engine.observe(observe(request(), ts=11.0, frame=21))  # a normal message: no hit
    (finding,) = engine.finish()
    assert finding.count == 20 and finding.severity is Severity.HIGH
    assert finding.evidence.frames == tuple(range(1, 21))


# -- HeaderBomb ----------------------------------------------------------------------------------

BASE_FIELDS = 8  # Via, From, To, Call-ID, CSeq, Max-Forwards, Content-Length + 1 below


def test_header_bomb_fires_past_max_headers_not_at_it() -> None:
    detector = HeaderBomb()
    fill = 64 - (BASE_FIELDS - 1)
    at_limit = observe(request(headers=tuple(f"X-H{i}: {i}" for i in range(fill))))
    assert at_limit.message is not None and len(at_limit.message.headers) == 64
    assert detector.observe(at_limit) == []
    over = observe(request(headers=tuple(f"X-H{i}: {i}" for i in range(fill + 1))))
    (hit,) = detector.observe(over)
    assert hit.detector == "malformed.header_bomb"
    assert hit.indicators["code"] == "too_many_headers" and hit.indicators["count"] == "65"
    assert hit.severity is Severity.LOW


@pytest.mark.parametrize(
    ("make", "header"),
    [
        (lambda n: tuple(f"Route: <sip:r{i}.example.com;lr>" for i in range(n)), "Route"),
        (
            lambda n: ("Record-Route: " + ", ".join(f"<sip:p{i}.example;lr>" for i in range(n)),),
            "Record-Route",
        ),
        (lambda n: tuple("Supported: timer" for _ in range(n)), "Supported"),
    ],
)
def test_header_bomb_fires_past_repeated_entries_not_at_it(
    make: Callable[[int], tuple[str, ...]], header: str
) -> None:
    detector = HeaderBomb()
    assert detector.observe(observe(request(headers=make(20)))) == []
    (hit,) = detector.observe(observe(request(headers=make(21))))
    assert hit.indicators == {
        "code": "repeated_header",
        "header": header,
        "count": "21",
        "messages_in_window": "1",
    }


def test_header_bomb_counts_via_hops_across_lines_and_commas() -> None:
    hops = ", ".join(f"SIP/2.0/UDP p{i}.example;branch=z9hG4bK{i}" for i in range(10))
    data = request(headers=(f"Via: {hops}", f"Via: {hops}"))  # 1 + 20 hops
    (hit,) = HeaderBomb().observe(observe(data))
    assert hit.indicators["header"] == "Via" and hit.indicators["count"] == "21"
    assert HeaderBomb().observe(observe(request(headers=(f"Via: {hops}",)))) == []


def test_header_bomb_repeat_threshold_and_window() -> None:
    detector = HeaderBomb(HeaderBombConfig(messages_per_window=3, window_s=10.0))
    bomb = request(headers=tuple("Route: <sip:r.example;lr>" for _ in range(30)))
    grades = [
        detector.observe(observe(nth(bomb, i), ts=t))[0].severity
        for i, t in enumerate((0.0, 5.0, 9.9))
    ]
    assert grades == [Severity.LOW, Severity.LOW, Severity.HIGH]
    # At 15.0 the window (5.0, 15.0] holds 9.9 and 15.0 only: back to low.
    (hit,) = detector.observe(observe(nth(bomb, 3), ts=15.0))
    assert hit.severity is Severity.LOW and hit.indicators["messages_in_window"] == "2"


def test_header_bomb_allow_listed_and_bounded() -> None:
    bomb = request(headers=tuple("Route: <sip:r.example;lr>" for _ in range(30)))
    allowed = HeaderBomb(HeaderBombConfig(allow_sources=("192.0.2.10",)))
    assert allowed.observe(observe(bomb)) == []
    detector = HeaderBomb(HeaderBombConfig(max_sources=10))
    for i in range(100):
        assert detector.observe(observe(bomb, ts=i * 0.001, src=ip(i)))
        assert detector.state_size() <= 2 * 10
    assert detector.evictions() == 2 * 90


# -- corpus --------------------------------------------------------------------------------------


def _run(path: Path) -> list[Finding]:
    engine = Engine([Oversize(), HeaderBomb()])
    for obs in iter_observations(path):
        engine.observe(obs)
    return engine.finish()


def test_zeek_long_paths_is_oversize_headers() -> None:
    """Ten Via hops with 900-byte host names: 9.5 KB of headers, past sanity's 8192."""
    path = need_shared("corpus/pcap/edge/zeek--sip-long-request-response-paths.pcap")
    findings = _run(path)
    assert len(findings) == 2
    for finding in findings:
        assert finding.detector == "malformed.oversize"
        assert finding.indicators["limit"] == "headers"
        assert finding.severity is Severity.LOW


def _normal_captures() -> list[str]:
    return sorted(p.name for p in (CORPUS / "pcap" / "normal").glob("*.pcap*"))


@pytest.mark.parametrize("name", _normal_captures() or ["(corpus absent)"])
def test_benign_captures_yield_nothing(name: str) -> None:
    assert _run(need_shared(f"corpus/pcap/normal/{name}")) == []


_SAMPLE = request(
    headers=(
        "Contact: <sip:200@10.0.0.1:5060>;expires=60",
        "Record-Route: <sip:10.0.0.2;lr>, <sip:p.example;lr>",
        "User-Agent: Asterisk PBX 16.2.1",
    )
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_SAMPLE)), st.binary(max_size=300), st.integers(0, 40))
def test_detectors_never_raise_on_mutated_messages(at: int, junk: bytes, cut: int) -> None:
    """Whatever parses - mutated, truncated, stuffed - the detectors of this review (malformed,
    disclosure, injection) return hits, never raise."""
    from sipwarden.detect.detectors.disclosure import (
        PrivateAddressLeak,
        PrivateAddressLeakConfig,
        VersionDisclosure,
        VersionDisclosureConfig,
    )
    from sipwarden.detect.detectors.injection import PayloadInUserField

    inside = ("192.0.2.0/24",)
    detectors = [
        ParserDefect(),
        Oversize(OversizeConfig(max_uri_bytes=16, max_host_bytes=8, max_header_bytes=300)),
        HeaderBomb(HeaderBombConfig(max_headers=5, max_entries_per_header=1)),
        PrivateAddressLeak(PrivateAddressLeakConfig(inside_networks=inside)),
        VersionDisclosure(VersionDisclosureConfig(inside_networks=inside)),
        PayloadInUserField(),
    ]
    data = _SAMPLE[:at] + junk + _SAMPLE[at : len(_SAMPLE) - cut]
    obs = observe(data, src="192.0.2.10", dst="203.0.113.1")
    for detector in detectors:
        for hit in detector.observe(obs):
            assert hit.detector == detector.id
            assert hit.id  # the key hashes as UTF-8 even when the bytes were not
