"""recon detectors that do not trust the User-Agent: tool fingerprints, host sweep, extension
enumeration. Each fires at its threshold and not one below, forgets what left the window,
honours the allow-list, keeps its state bounded against a hostile key space, and stays silent on
the benign corpus."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwarden.detect import DETECTORS, Engine
from sipwarden.detect.base import Detector
from sipwarden.detect.detectors.recon import (
    ExtensionEnumeration,
    ExtensionEnumerationConfig,
    HostSweep,
    HostSweepConfig,
    ScannerFingerprint,
    ScannerFingerprintConfig,
    ScannerUserAgent,
)
from sipwarden.detect.finding import Finding
from sipwarden.detect.observation import Observation
from sipwarden.detect.taxonomy import Severity
from sipwarden.detect.tracker import Transaction
from sipwarden.net import Endpoint
from sipwarden.sources.capture import iter_observations
from tests.conftest import CORPUS, need_shared
from tests.detect import observe

SERVER = "198.51.100.5"
SCANNER = "203.0.113.7"


def ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def sv_tag(data: str, rnd: int = 1234567890) -> str:
    """SIPVicious' createTag(): hex of data + \\x01 + a random decimal."""
    return (data.encode() + b"\x01" + str(rnd).encode()).hex()


def sip_request(
    method: str = "OPTIONS",
    ruri: str = f"sip:100@{SERVER}",
    via: str = "192.0.2.10:5060",
    branch: str = "z9hG4bKa7c3f1",
    from_: str = '"Alice" <sip:alice@example.com>',
    from_tag: str = "a1b2c3",
    to: str = f"<sip:100@{SERVER}>",
    to_tag: str = "",
    call_id: str = "f81d4fae-7dec-11d0-a765@example.com",
    user_agent: str = "Yealink SIP-T46S 66.86.0.15",
    body: str = "",
    extra_via: str = "",
) -> bytes:
    tag = f";tag={to_tag}" if to_tag else ""
    return (
        f"{method} {ruri} SIP/2.0\r\n{extra_via}Via: SIP/2.0/UDP {via};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: {from_};tag={from_tag}\r\nTo: {to}{tag}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nUser-Agent: {user_agent}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def svmap_options(
    user_agent: str = "Zeeko", display: str = "Zeeko", via: str = "127.0.0.1"
) -> bytes:
    """svmap's OPTIONS probe as svhelper.makeRequest builds it, UA and From name renamed."""
    addr = f'"{display}"<sip:100@1.1.1.1>'
    return sip_request(
        ruri=f"sip:100@{SERVER}",
        via=f"{via}:5060",
        branch="z9hG4bK-2649134055",
        from_=addr,
        from_tag=sv_tag("c633640513c4"),
        to=addr,
        call_id="287088969372871597469812",
        user_agent=user_agent,
    )


def fingerprints(
    data: bytes, detector: ScannerFingerprint | None = None, src: str = SCANNER
) -> list[Finding]:
    return (detector or ScannerFingerprint()).observe(observe(data, src=src, dst=SERVER))


# -- registry and config --------------------------------------------------------------------------


def test_registered_with_recon_ids() -> None:
    assert DETECTORS["recon.scanner_fingerprint"] is ScannerFingerprint
    assert DETECTORS["recon.host_sweep"] is HostSweep
    assert DETECTORS["recon.extension_enumeration"] is ExtensionEnumeration


def test_defaults_match_their_anchors() -> None:
    assert ScannerFingerprintConfig().weak_habits_needed == 3
    sweep = HostSweepConfig()
    assert (sweep.window_s, sweep.hosts_per_window) == (300.0, 25)  # Zeek scan.zeek
    enum = ExtensionEnumerationConfig()
    assert (enum.window_s, enum.users_per_window) == (120.0, 20)  # Elastic
    assert "Zeek" in (HostSweepConfig.model_fields["hosts_per_window"].description or "")
    assert "Elastic" in (ExtensionEnumerationConfig.model_fields["window_s"].description or "")
    for cls in (ScannerFingerprint, HostSweep, ExtensionEnumeration):
        for name, info in cls.Config.model_fields.items():
            assert info.description, f"{cls.id}.{name} has no description"
        assert cls.__doc__ and "Known false positives" in cls.__doc__
    with pytest.raises(pydantic.ValidationError, match="window"):
        HostSweepConfig(window=1.0)  # type: ignore[call-arg]


# -- recon.scanner_fingerprint --------------------------------------------------------------------


def test_renamed_svmap_probe_is_caught_by_its_habits() -> None:
    [hit] = fingerprints(svmap_options())
    assert hit.detector == "recon.scanner_fingerprint"
    assert hit.severity is Severity.HIGH and hit.confidence == 95
    assert hit.indicators["tool"] == "sipvicious"
    habits = hit.indicators["habits"].split(",")
    assert {"sipvicious_tag", "sipvicious_branch", "decimal_call_id", "to_equals_from"} <= set(
        habits
    )
    assert "via_sent_by_mismatch" in habits  # loopback sent-by from a public source
    # The tag carries svmap's target: 198.51.100.5:5060 in '%02x'*4 + '%04x'.
    assert "198.51.100.5:5060" in hit.indicators["sipvicious_tag"]
    assert hit.indicators["user_agent"] == "Zeeko"


def test_svwar_calibration_probe_to_a_random_user() -> None:
    user = "3405653166"  # random.getrandbits(32), the user svwar probes first
    addr = f'"{user}"<sip:{user}@{SERVER}>'
    data = sip_request(
        ruri=f"sip:{user}@{SERVER}",
        branch="z9hG4bK-1187",
        from_=addr,
        from_tag=sv_tag(user),
        to=addr,
        call_id="1455410143",
    )
    [hit] = fingerprints(data)
    assert "calibration_probe" in hit.indicators["habits"]
    assert hit.indicators["calibration_probe"] == user


def test_sipvicious_tag_needs_its_random_number() -> None:
    """createTag() appends getrandbits(32) in decimal; a hex tag ending in 01 + 4 digits is
    what a random phone tag can look like, so it is not the habit."""
    assert fingerprints(sip_request(from_tag=sv_tag("abc", 1234))) == []
    [hit] = fingerprints(sip_request(from_tag=sv_tag("abc", 12345)))
    assert hit.indicators["habits"] == "sipvicious_tag" and hit.severity is Severity.MEDIUM


def test_sippts_branch_and_sdp_are_strong_habits() -> None:
    branch = "a" * 40 + "0123456789abcdefghijklmnopqrstu"  # 71 chars, no z9hG4bK cookie
    [hit] = fingerprints(sip_request(branch=branch, via="10.0.0.1:5060", call_id="0" * 32))
    assert hit.indicators["tool"] == "sippts"
    assert set(hit.indicators["habits"].split(",")) == {
        "sippts_branch",
        "hex32_call_id",
        "via_placeholder",
    }
    [sdp] = fingerprints(sip_request(method="INVITE", body="v=0\r\ns=SIPPTS\r\n"))
    assert sdp.indicators["tool"] == "sippts"
    assert sdp.severity is Severity.MEDIUM  # one strong habit, nothing corroborating


def test_sipsak_and_smap_from_users() -> None:
    [sipsak] = fingerprints(sip_request(from_="<sip:sipsak@192.0.2.10>"))
    assert sipsak.indicators["tool"] == "sipsak"
    [smap] = fingerprints(sip_request(from_="<sip:smap@192.0.2.10>"))
    assert smap.indicators["tool"] == "smap"


def test_weak_habits_fire_at_n_not_below() -> None:
    """Weak SIPVicious habits without its tag: a patched tool. Three fire, two do not."""
    same = '"x"<sip:100@1.1.1.1>'
    three = sip_request(branch="z9hG4bK-77", call_id="123456789012", from_=same, to=same)
    [hit] = fingerprints(three)
    assert hit.severity is Severity.MEDIUM and hit.confidence == 70
    two = sip_request(branch="z9hG4bK-77", call_id="123456789012")
    assert fingerprints(two) == []
    # A fourth weak habit makes it high.
    four = sip_request(
        branch="z9hG4bK-77", call_id="123456789012", from_=same, to=same, via="127.0.0.1:5060"
    )
    assert fingerprints(four)[0].severity is Severity.HIGH
    strict = ScannerFingerprint(ScannerFingerprintConfig(weak_habits_needed=4))
    assert fingerprints(three, strict) == []


def test_nat_phone_private_via_is_not_a_habit() -> None:
    """A phone behind NAT: private sent-by, public source. Alone or with a numeric Call-ID it
    stays silent; the private Via never counts."""
    phone = sip_request(method="REGISTER", via="192.168.1.20:5060", call_id="9876543210")
    assert fingerprints(phone, src="198.51.100.77") == []
    same = '"x"<sip:100@1.1.1.1>'
    data = sip_request(via="192.168.1.20:5060", call_id="9876543210", from_=same, to=same)
    assert fingerprints(data, src="198.51.100.77") == []  # 2 weak habits, Via not counted


def test_proxied_request_public_via_is_not_a_mismatch() -> None:
    """A request relayed by a proxy carries the proxy's Via on top of the phone's."""
    same = '"x"<sip:100@1.1.1.1>'
    relayed = sip_request(
        via="198.51.100.99:5060",
        call_id="9876543210",
        from_=same,
        to=same,
        extra_via="Via: SIP/2.0/UDP 192.0.2.200:5060;branch=z9hG4bKproxy\r\n",
    )
    assert fingerprints(relayed) == []


def test_ordinary_phones_are_silent() -> None:
    assert fingerprints(sip_request()) == []
    assert fingerprints(sip_request(method="REGISTER", to="<sip:alice@example.com>")) == []


def test_allow_listed_source_is_silent() -> None:
    trusted = ScannerFingerprint(ScannerFingerprintConfig(allow_sources=("203.0.113.0/24",)))
    assert fingerprints(svmap_options(), trusted) == []


def test_fingerprint_leaves_a_named_tool_to_the_user_agent_detector() -> None:
    named = svmap_options(user_agent="friendly-scanner")
    assert fingerprints(named) == []
    assert fingerprints(svmap_options(display="sipvicious")) == []  # From name names it too
    ua_hits = ScannerUserAgent().observe(observe(named, src=SCANNER))
    assert [h.detector for h in ua_hits] == ["recon.scanner_user_agent"]
    both = ScannerFingerprint(ScannerFingerprintConfig(silent_when_user_agent_names_tool=False))
    assert [h.indicators["tool"] for h in fingerprints(named, both)] == ["sipvicious"]


def test_fingerprint_aggregates_per_source_and_tool_in_the_engine() -> None:
    engine = Engine([ScannerFingerprint()])
    for i in range(5):
        engine.observe(observe(svmap_options(), ts=i * 0.1, frame=i + 1, src=SCANNER))
    [finding] = engine.finish()
    assert finding.key == f"{SCANNER}|sipvicious" and finding.count == 5
    assert finding.evidence.frames[:5] == (1, 2, 3, 4, 5)


@settings(max_examples=200, deadline=None)
@given(tag=st.text(alphabet="0123456789abcdefABCDEF-.xyz", max_size=80))
def test_arbitrary_tags_never_break_the_fingerprint(tag: str) -> None:
    data = sip_request(from_tag=tag or "t")
    assert isinstance(fingerprints(data), list)


_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=4, max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    branch=_TOKEN,
    call_id=_TOKEN,
    tag=_TOKEN | st.text(alphabet="0123456789abcdef", min_size=8, max_size=32),
    method=st.sampled_from(["INVITE", "REGISTER"]),
)
def test_phone_like_requests_never_fire(branch: str, call_id: str, tag: str, method: str) -> None:
    """Phones' usual shapes: cookie + token branch, Call-ID with @host, token tags, a private
    Via behind NAT: at most two weak habits, never a finding."""
    data = sip_request(
        method=method,
        via="192.168.1.20:5060",
        branch=f"z9hG4bK{branch}",
        call_id=f"{call_id}@192.168.1.20",
        from_tag=tag,
    )
    assert fingerprints(data, src="198.51.100.77") == []


# -- recon.host_sweep -----------------------------------------------------------------------------


def sweep_probe(dst: str, ts: float, src: str = SCANNER, to_tag: str = "") -> Observation:
    return observe(
        sip_request(ruri=f"sip:{dst}", to=f"<sip:{dst}>", to_tag=to_tag), ts=ts, src=src, dst=dst
    )


def sweep(detector: HostSweep, hosts: int, ts: float = 0.0, src: str = SCANNER) -> list[Finding]:
    hits: list[Finding] = []
    for i in range(hosts):
        hits += detector.observe(sweep_probe(ip(i + 1), ts + i * 0.1, src))
    return hits


def test_host_sweep_fires_at_n_not_below() -> None:
    n = HostSweepConfig().hosts_per_window
    assert sweep(HostSweep(), n - 1) == []
    hits = sweep(HostSweep(), n)
    assert len(hits) == 1
    assert hits[0].severity is Severity.HIGH and hits[0].count == n
    assert hits[0].indicators["distinct_hosts_at_least"] == str(n)


def test_host_sweep_counts_later_probes_once_each() -> None:
    detector = HostSweep(HostSweepConfig(hosts_per_window=3))
    hits = sweep(detector, 5)
    assert [h.count for h in hits] == [3, 1, 1]


def test_host_sweep_window_slides() -> None:
    detector = HostSweep(HostSweepConfig(hosts_per_window=3, window_s=10.0))
    hits = detector.observe(sweep_probe(ip(1), 0.0))
    hits += detector.observe(sweep_probe(ip(2), 5.0))
    hits += detector.observe(sweep_probe(ip(3), 10.0))  # ip(1) left
    assert hits == []
    assert detector.observe(sweep_probe(ip(4), 11.0)) != []


def test_host_sweep_ignores_in_dialog_requests_and_allow_list() -> None:
    detector = HostSweep(HostSweepConfig(hosts_per_window=3))
    for i in range(5):
        assert detector.observe(sweep_probe(ip(i), i, to_tag="x")) == []
    trusted = HostSweep(HostSweepConfig(hosts_per_window=3, allow_sources=(SCANNER,)))
    assert sweep(trusted, 10) == []


def test_registrar_qualifying_its_phones_is_not_a_sweep() -> None:
    """Phones register with the PBX first; its OPTIONS to them are keepalives."""
    pbx = "192.0.2.1"
    detector = HostSweep(HostSweepConfig(hosts_per_window=3))
    for i in range(10):
        register = sip_request(method="REGISTER", ruri=f"sip:{pbx}", to=f"<sip:{i}@{pbx}>")
        detector.observe(observe(register, ts=i, src=ip(i + 1), dst=pbx))
    assert sweep(detector, 10, ts=20.0, src=pbx) == []


def test_host_sweep_state_is_bounded_against_many_sources() -> None:
    detector = HostSweep(HostSweepConfig(max_sources=50, max_peers=60))
    for i in range(1000):
        detector.observe(sweep_probe(SERVER, i * 0.01, src=ip(i)))
    stats = detector.stats()
    assert stats.entries <= 50 + 60 + 50
    assert detector.evictions() > 0
    assert detector.state_size() == stats.entries


# -- recon.extension_enumeration ------------------------------------------------------------------


def tx(
    user: str,
    ts: float,
    status: int | None = 404,
    method: str = "OPTIONS",
    client: str = SCANNER,
    server: str = SERVER,
    credentials: str | None = None,
) -> Transaction:
    return Transaction(
        method=method,
        client=Endpoint(client, 5060),
        server=Endpoint(server, 5060),
        call_id=f"c-{user}-{ts}",
        request_uri_user=user,
        request_uri_host=server,
        from_user=user,
        to_user=user,
        credentials_user=credentials,
        user_agent="",
        request_ts=ts,
        request_frame=1,
        status=status,
        response_ts=ts + 0.01,
        response_frame=2,
        to_tag="t",
    )


def enumerate_users(
    detector: ExtensionEnumeration, users: int, status: int | None = 404, **kw: Any
) -> list[Finding]:
    hits: list[Finding] = []
    for i in range(users):
        hits += detector.on_transaction(tx(str(100 + i), i * 0.5, status, **kw))
    return hits


def test_enumeration_fires_at_n_not_below() -> None:
    n = ExtensionEnumerationConfig().users_per_window
    assert enumerate_users(ExtensionEnumeration(), n - 1) == []
    [hit] = enumerate_users(ExtensionEnumeration(), n)
    assert hit.severity is Severity.HIGH and hit.count == n
    assert hit.indicators["distinct_users_at_least"] == str(n)


def test_enumeration_reads_the_response_mix() -> None:
    detector = ExtensionEnumeration(ExtensionEnumerationConfig(users_per_window=4))
    hits: list[Finding] = []
    for i, status in enumerate((404, 404, 200, 404)):
        hits += detector.on_transaction(tx(str(100 + i), i, status))
    [hit] = hits
    assert hit.indicators["response_difference"] == "yes" and hit.confidence == 90
    assert hit.indicators["responses"] == "404×3, 2xx×1"


def test_enumeration_against_a_server_that_challenges_everyone() -> None:
    """Asterisk PJSIP answers every user with 401: the distinct-user count alone speaks."""
    detector = ExtensionEnumeration()
    hits = enumerate_users(detector, 20, status=401, method="REGISTER")
    [hit] = hits
    assert hit.severity is Severity.HIGH and hit.confidence == 75
    assert hit.indicators["response_difference"] == "no"
    assert hit.indicators["responses"] == "challenge×20"


def test_enumeration_counts_unanswered_probes_and_skips_provisional() -> None:
    detector = ExtensionEnumeration(ExtensionEnumerationConfig(users_per_window=3))
    assert detector.on_transaction(tx("1", 0, 180)) == []  # not final
    assert detector.on_transaction(tx("1", 0, None)) == []
    assert detector.on_transaction(tx("2", 1, None)) == []
    assert detector.on_transaction(tx("3", 2, None)) != []


def test_enumeration_window_slides() -> None:
    detector = ExtensionEnumeration(ExtensionEnumerationConfig(users_per_window=3, window_s=10))
    assert detector.on_transaction(tx("1", 0.0)) == []
    assert detector.on_transaction(tx("2", 5.0)) == []
    assert detector.on_transaction(tx("3", 10.0)) == []  # user 1 left the window
    assert detector.on_transaction(tx("4", 11.0)) != []


def test_enumeration_allow_listed_source_is_silent() -> None:
    trusted = ExtensionEnumeration(ExtensionEnumerationConfig(allow_sources=(SCANNER,)))
    assert enumerate_users(trusted, 50) == []


def test_pbx_keepalives_to_its_own_phones_are_not_enumeration() -> None:
    """detection-anchors §3: a FreePBX qualifying 2000 extensions got pike-banned. Phones behind
    one NAT address register from their own ports; the PBX then OPTIONS each of them."""
    pbx, office = "192.0.2.1", "198.51.100.80"
    engine = Engine([ExtensionEnumeration()])
    for i in range(40):
        register = sip_request(method="REGISTER", ruri=f"sip:{pbx}", to=f"<sip:{i}@{pbx}>")
        obs = observe(register, ts=i * 0.1, src=office, dst=pbx)
        engine.observe(obs._replace(src=Endpoint(office, 40000 + i)))
    for i in range(40):
        keepalive = sip_request(ruri=f"sip:{i}@{office}:{40000 + i}", call_id=f"ka{i}")
        obs = observe(keepalive, ts=10 + i * 0.1, src=pbx, dst=office)
        engine.observe(obs._replace(dst=Endpoint(office, 40000 + i)))
    assert engine.finish() == []


def test_proxy_whose_logins_succeed_is_low() -> None:
    detector = ExtensionEnumeration(ExtensionEnumerationConfig(users_per_window=4))
    hits = enumerate_users(detector, 4, status=200, method="REGISTER", credentials="u")
    [hit] = hits
    assert hit.severity is Severity.LOW
    assert hit.recommended_action is not None and hit.recommended_action.action_code == "MONITOR"


def test_one_owned_account_does_not_make_an_enumerator_look_like_a_proxy() -> None:
    # Regression: every successful login counted, so 10 REGISTERs of an account the attacker
    # owns turned its enumeration of 20 users LOW. Now distinct users that logged in count.
    detector = ExtensionEnumeration()
    for i in range(10):
        detector.on_transaction(
            tx("owned", i * 0.1, status=200, method="REGISTER", credentials="owned")
        )
    hits = enumerate_users(detector, 25)
    assert hits and all(h.severity is Severity.HIGH for h in hits)


def test_enumeration_through_the_engine_and_tracker() -> None:
    engine = Engine([ExtensionEnumeration(ExtensionEnumerationConfig(users_per_window=5))])
    frame = 0
    for i in range(5):
        user, branch = str(200 + i), f"z9hG4bK{i}"
        request = sip_request(ruri=f"sip:{user}@{SERVER}", branch=branch, call_id=f"e{i}")
        response = (
            f"SIP/2.0 404 Not Found\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n"
            f"From: <sip:alice@example.com>;tag=a\r\nTo: <sip:{user}@{SERVER}>;tag=s\r\n"
            f"Call-ID: e{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        frame += 1
        engine.observe(observe(request, ts=i, frame=frame, src=SCANNER, dst=SERVER))
        frame += 1
        engine.observe(observe(response, ts=i + 0.01, frame=frame, src=SERVER, dst=SCANNER))
    [finding] = engine.finish()
    assert finding.detector == "recon.extension_enumeration" and finding.key == SCANNER
    assert finding.indicators["responses"] == "404×5"


def _in_dialog_engine(answered: bool, to_tag: str) -> list[Finding]:
    engine = Engine([ExtensionEnumeration(ExtensionEnumerationConfig(users_per_window=5))])
    for i in range(8):  # 8 dialogs, each with its own Contact user: a re-INVITE in each
        user, branch = f"contact{i}", f"z9hG4bKre{i}"
        request = sip_request(
            method="INVITE", ruri=f"sip:{user}@{SERVER}", branch=branch, call_id=f"d{i}",
            to=f"<sip:{user}@{SERVER}>", to_tag=to_tag,
        )  # fmt: skip
        engine.observe(observe(request, ts=i, frame=2 * i + 1, src=SCANNER, dst=SERVER))
        if answered:
            response = (
                f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n"
                f"From: <sip:alice@example.com>;tag=a\r\nTo: <sip:{user}@{SERVER}>;tag=s\r\n"
                f"Call-ID: d{i}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            engine.observe(observe(response, ts=i + 0.01, frame=2 * i + 2, src=SERVER))
    return engine.finish()


@pytest.mark.parametrize("answered", [True, False])
def test_in_dialog_requests_are_not_probes(answered: bool) -> None:
    # Regression: re-INVITEs (To tag) to many dialogs' Contact users counted as users probed;
    # the unanswered ones are reported by the tracker after Timer F and must be recognised too.
    assert _in_dialog_engine(answered, to_tag="peer") == []
    # The same requests outside a dialog are probes.
    assert [f.detector for f in _in_dialog_engine(answered, to_tag="")] == [
        "recon.extension_enumeration"
    ]


def test_enumeration_state_is_bounded_against_many_sources() -> None:
    detector = ExtensionEnumeration(ExtensionEnumerationConfig(max_sources=40, max_peers=40))
    for i in range(1000):
        detector.on_transaction(tx("100", i * 0.01, client=ip(i)))
    assert detector.stats().entries <= 40 * 3 + 40
    assert detector.evictions() > 0


# -- corpus ---------------------------------------------------------------------------------------


def run(path: Path, *detectors: Detector) -> list[Finding]:
    engine = Engine(list(detectors))
    for obs in iter_observations(path):
        engine.observe(obs)
    return engine.finish()


def test_corpus_every_sipvicious_source_caught_without_the_user_agent() -> None:
    path = need_shared("corpus/pcap/attack/initconf--BadUserAgent-sipvicious.pcap")
    sources = {o.src.ip for o in iter_observations(path) if o.request is not None}
    config = ScannerFingerprintConfig(silent_when_user_agent_names_tool=False)
    findings = run(path, ScannerFingerprint(config))
    caught = {f.source.ip for f in findings if f.source is not None}
    assert len(sources) == 11 and caught == sources
    assert all(f.severity is Severity.HIGH for f in findings)
    renamed = [f for f in findings if f.indicators.get("user_agent") == "Zeeko"]
    assert renamed and renamed[0].indicators["tool"] == "sipvicious"


def test_corpus_one_finding_per_scanner_source_not_two() -> None:
    # Regression: fingerprint and user-agent both fired on every packet (52 findings for the
    # 26 OPTIONS). The User-Agent (or the From name "sipvicious" the renamed one kept) names
    # the tool, so only recon.scanner_user_agent reports; nothing is lost.
    path = need_shared("corpus/pcap/attack/initconf--BadUserAgent-sipvicious.pcap")
    findings = run(path, ScannerUserAgent(), ScannerFingerprint())
    assert {f.detector for f in findings} == {"recon.scanner_user_agent"}
    assert len({f.source.ip for f in findings if f.source is not None}) == 11


def test_corpus_register_guessing_is_enumeration() -> None:
    path = need_shared("corpus/pcap/attack/initconf--SIP-212.32.250.134.pcap")
    findings = run(path, ExtensionEnumeration(), HostSweep(), ScannerFingerprint())
    enum = [f for f in findings if f.detector == "recon.extension_enumeration"]
    assert len(enum) == 1 and enum[0].severity is Severity.HIGH
    assert enum[0].key == "206.55.185.163"


def test_corpus_benign_captures_give_nothing_medium_or_above() -> None:
    need_shared("corpus/pcap/normal")
    captures = sorted((CORPUS / "pcap" / "normal").glob("*.pcap*"))
    assert captures
    seen: collections.Counter[str] = collections.Counter()
    for path in captures:
        for f in run(path, ScannerFingerprint(), HostSweep(), ExtensionEnumeration()):
            if f.severity.rank >= Severity.MEDIUM.rank:
                seen[f"{path.name}:{f.detector}"] += 1
    assert not seen, seen


def answers(detector: Detector, server: str, clients: int, ts: float = 0.0) -> None:
    """``server`` answers one request of each of ``clients`` distinct clients."""
    for i in range(clients):
        response = (
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.9.0.1;branch=z9hG4bKa\r\n"
            b"From: <sip:a@x>;tag=1\r\nTo: <sip:a@x>;tag=2\r\nCall-ID: r\r\n"
            b"CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
        )
        detector.observe(observe(response, ts=ts, src=server, dst=f"10.9.{i}.1"))


def test_sweep_by_a_source_that_serves_sip_is_low() -> None:
    """A PBX qualifying phones whose REGISTERs came before the capture began: it answers other
    clients' requests, which no scanner does."""
    detector = HostSweep()
    answers(detector, SCANNER, 3)
    (hit,) = sweep(detector, HostSweepConfig().hosts_per_window, ts=1.0)
    assert hit.severity is Severity.LOW and hit.recommended_action is not None
    assert hit.recommended_action.action_code == "MONITOR"
    assert "PBX or SBC at work" in hit.summary


def test_two_answered_clients_do_not_make_a_server() -> None:
    detector = HostSweep()
    answers(detector, SCANNER, 2)
    (hit,) = sweep(detector, HostSweepConfig().hosts_per_window, ts=1.0)
    assert hit.severity is Severity.HIGH


def test_enumeration_by_a_source_that_serves_sip_is_low() -> None:
    """An SBC delivering trunk calls to many numbers of a PBX also answers the PBX's calls."""
    detector = ExtensionEnumeration()
    answers(detector, SCANNER, 3)
    hits = [h for i in range(20) for h in detector.on_transaction(tx(str(100 + i), 1.0 + i, 404))]
    assert [h.severity for h in hits][:1] == [Severity.LOW]


def test_enumeration_whose_requests_mostly_reach_users_is_low() -> None:
    """A trunk delivering calls to many numbers: answered, busy or cancelled. A toll-fraud
    dialler walking numbers gets mostly 404 and stays high."""
    trunk = ExtensionEnumeration()
    outcomes = (200, 486, 404, 487)
    hits = [
        h
        for i in range(20)
        for h in trunk.on_transaction(tx(str(100 + i), float(i), outcomes[i % 4], "INVITE"))
    ]
    assert hits[0].severity is Severity.LOW and "trunk" in hits[0].summary
    walker = ExtensionEnumeration()
    hits = [
        h
        for i in range(20)
        for h in walker.on_transaction(tx(str(100 + i), float(i), 200 if i % 4 == 0 else 404))
    ]
    assert hits[0].severity is Severity.HIGH
