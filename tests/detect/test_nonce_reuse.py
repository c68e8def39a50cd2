"""credential.nonce_reuse: distinct attempts per nonce. Password guessing (several responses for
identical digest inputs), replay (one nonce and user sent to one server from several sources) and
stale acceptance (a 2xx for a nonce older than nonce_expire) fire; legal reuse - the same client
with a rising nc, retransmissions, a proxy forwarding credentials - never does."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwarden.detect import DETECTORS, Engine, Observation
from sipwarden.detect.detectors.credential import NonceReuse, NonceReuseConfig
from sipwarden.detect.taxonomy import Severity
from sipwarden.net import Endpoint
from sipwarden.sip import parse_message
from tests.conftest import need_shared

SERVER = "198.51.100.5"
CLIENT = "192.0.2.10"
_frames = itertools.count(1)
_branches = itertools.count(1)


def auth_request(
    ts: float,
    response: str = "r0",
    user: str = "1001",
    nonce: str = "n1",
    nc: str | None = "00000001",
    cnonce: str = "c1",
    src: str = CLIENT,
    dst: str = SERVER,
    method: str = "REGISTER",
    call_id: str = "call-1",
    qop_value: str = "auth",
    body: str = "",
) -> Observation:
    qop = f', qop={qop_value}, nc={nc}, cnonce="{cnonce}"' if nc is not None else ""
    data = (
        f"{method} sip:{SERVER} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {src};branch=z9hG4bK{next(_branches)}\r\n"
        f"From: <sip:{user}@{SERVER}>;tag=1\r\nTo: <sip:{user}@{SERVER}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
        f'Authorization: Digest username="{user}", realm="pbx", nonce="{nonce}", '
        f'uri="sip:{SERVER}", response="{response}"{qop}\r\n'
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    return Observation(
        ts, next(_frames), Endpoint(src, 5060), Endpoint(dst, 5060),
        parse_message(data), None, len(data),
    )  # fmt: skip


def answer(request: Observation, ts: float, status: int = 200) -> Observation:
    message = request.request
    assert message is not None
    via = message.headers.get("via") or ""
    data = (
        f"SIP/2.0 {status} X\r\nVia: {via}\r\n"
        f"From: <sip:1001@{SERVER}>;tag=1\r\nTo: <sip:1001@{SERVER}>;tag=2\r\n"
        f"Call-ID: {message.call_id}\r\nCSeq: 1 {message.method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    return Observation(
        ts, next(_frames), request.dst, request.src, parse_message(data), None, len(data)
    )


def challenge(ts: float, nonce: str = "n1", client: str = CLIENT) -> Observation:
    data = (
        f"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP {client};branch=z9hG4bK0\r\n"
        f"From: <sip:1001@{SERVER}>;tag=1\r\nTo: <sip:1001@{SERVER}>;tag=2\r\n"
        f'Call-ID: call-0\r\nCSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm="pbx", '
        f'nonce="{nonce}"\r\nContent-Length: 0\r\n\r\n'
    ).encode()
    return Observation(
        ts, next(_frames), Endpoint(SERVER, 5060), Endpoint(client, 5060),
        parse_message(data), None, len(data),
    )  # fmt: skip


def keys(detector: NonceReuse, observations: list[Observation]) -> list[str]:
    return [hit.key for obs in observations for hit in detector.observe(obs)]


def test_registered_with_anchored_defaults() -> None:
    assert DETECTORS["credential.nonce_reuse"] is NonceReuse
    cfg = NonceReuseConfig()
    assert (cfg.guesses_per_nonce, cfg.sources_per_nonce, cfg.nonce_expire_s) == (3, 2, 300.0)
    assert "nonce_expire" in (NonceReuseConfig.model_fields["nonce_expire_s"].description or "")
    for name, info in NonceReuseConfig.model_fields.items():
        assert info.description, name


def test_guessing_fires_at_n_distinct_responses_not_below() -> None:
    detector = NonceReuse()
    assert keys(detector, [auth_request(0.0, "a"), auth_request(0.1, "b")]) == []
    (hit,) = detector.observe(auth_request(0.2, "c"))
    assert hit.key == f"guessing|{CLIENT}" and hit.severity is Severity.HIGH
    assert hit.indicators["responses_for_same_inputs"] == "3"
    assert hit.recommended_action is not None
    assert hit.recommended_action.action_code == "TEMP_BLOCK"
    # Each further guess is one more hit (the engine adds them up into one episode).
    assert keys(detector, [auth_request(0.3, "d"), auth_request(0.4, "d")]) == [
        f"guessing|{CLIENT}"
    ]


def test_guessing_episode_counts_every_guess() -> None:
    # Regression: the crossing hit counted 1, so 5 guesses made a finding of count 3.
    engine = Engine([NonceReuse()])
    for i, guess in enumerate("abcde"):
        engine.observe(auth_request(i * 0.1, guess))
    (finding,) = engine.finish()
    assert finding.count == 5 and finding.indicators["responses_for_same_inputs"] == "5"


def test_auth_int_with_another_body_is_not_a_guess() -> None:
    # Regression: under qop=auth-int the body is a digest input; a client that keeps nc and
    # cnonce (a common bug) and sends three different SDPs computes three responses honestly.
    detector = NonceReuse()
    requests = [
        auth_request(i * 0.1, f"r{i}", method="INVITE", qop_value="auth-int", body=f"v=0 {i}")
        for i in range(5)
    ]
    assert keys(detector, requests) == []
    # The same body with other responses is guessing again.
    guesses = [
        auth_request(1 + i * 0.1, g, method="INVITE", qop_value="auth-int", body="v=0 x")
        for i, g in enumerate("abc")
    ]
    assert keys(detector, guesses) == [f"guessing|{CLIENT}"]


def test_retransmissions_and_rising_nc_are_legal() -> None:
    detector = NonceReuse()
    same = [auth_request(i * 0.5, "same") for i in range(10)]  # retransmissions
    # RFC 7616 §3.3: the client reuses the nonce with nc 2, 3, ... - a new response each time.
    rising = [auth_request(10 + i, f"r{i}", nc=f"{i + 2:08x}") for i in range(50)]
    # Different methods on one nonce (no qop): different responses, different inputs.
    methods = [auth_request(70, "x", nc=None, method=m) for m in ("REGISTER", "INVITE", "BYE")]
    assert keys(detector, same + rising + methods) == []


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=2**32 - 1), min_size=1, max_size=30))
def test_one_client_never_fires_whatever_its_nc_sequence(ncs: list[int]) -> None:
    """A client that computes its responses correctly never repeats inputs with a new response:
    model that by making the response a function of the inputs."""
    detector = NonceReuse()
    observations = [auth_request(i * 0.1, f"resp-{nc}", nc=f"{nc:08x}") for i, nc in enumerate(ncs)]
    assert keys(detector, observations) == []


def test_replay_from_a_second_source_to_the_same_server() -> None:
    detector = NonceReuse()
    assert keys(detector, [auth_request(0.0, "r")]) == []
    (hit,) = detector.observe(auth_request(5.0, "r", src="203.0.113.66"))
    assert hit.key == "replay|203.0.113.66" and hit.severity is Severity.HIGH
    assert hit.indicators["sources_for_nonce"] == "2"
    # The same replaying source again (a retransmission) is not one more source.
    assert keys(detector, [auth_request(5.5, "r", src="203.0.113.66")]) == []


def test_proxy_forwarding_credentials_to_the_next_hop_is_not_a_replay() -> None:
    detector = NonceReuse()
    hop1 = auth_request(0.0, "r", src=CLIENT, dst="198.51.100.7")  # phone -> proxy
    hop2 = auth_request(0.001, "r", src="198.51.100.7", dst=SERVER)  # proxy -> registrar
    assert keys(detector, [hop1, hop2]) == []


def test_stateless_nonce_shared_by_several_users_is_not_a_replay() -> None:
    detector = NonceReuse()
    shared = [auth_request(0.0, f"r{i}", user=f"u{i}", src=f"10.0.0.{i}") for i in range(10)]
    assert keys(detector, shared) == []


def test_stale_nonce_accepted_is_low_and_a_fresh_one_silent() -> None:
    engine = Engine([NonceReuse()])
    engine.observe(challenge(0.0))
    fresh = auth_request(299.0, "r1")
    engine.observe(fresh)
    engine.observe(answer(fresh, 299.01))
    assert engine.findings() == []
    stale = auth_request(301.0, "r2", nc="00000002")
    engine.observe(stale)
    engine.observe(answer(stale, 301.01))
    (finding,) = engine.finish()
    assert finding.key == f"stale|{SERVER}" and finding.severity is Severity.LOW
    assert finding.indicators["nonce_age_s"] == "301"


def test_stale_nonce_rejected_is_silent() -> None:
    engine = Engine([NonceReuse()])
    engine.observe(challenge(0.0))
    stale = auth_request(400.0, "r1")
    engine.observe(stale)
    engine.observe(answer(stale, 400.01, status=401))
    assert engine.finish() == []


def test_window_slides_nonce_forgotten_after_its_memory() -> None:
    detector = NonceReuse(NonceReuseConfig(nonce_memory_s=60.0))
    assert keys(detector, [auth_request(0.0, "a"), auth_request(1.0, "b")]) == []
    detector.advance(61.0)
    assert detector.state_size() == 0
    # The same nonce seen again later starts afresh: one more response is not the third.
    assert keys(detector, [auth_request(62.0, "c")]) == []


def test_allow_listed_source_is_silent() -> None:
    detector = NonceReuse(NonceReuseConfig(allow_sources=("192.0.2.0/24",)))
    assert keys(detector, [auth_request(i * 0.1, f"g{i}") for i in range(10)]) == []
    assert detector.state_size() == 0


def test_hostile_nonces_stay_bounded() -> None:
    detector = NonceReuse(NonceReuseConfig(max_nonces=10))
    for i in range(100):
        assert detector.observe(auth_request(i * 0.01, "r", nonce=f"n{i}")) == []
        assert detector.state_size() <= 10
    assert detector.evictions() == 90
    # One nonce with a hostile number of users keeps a bounded state per nonce.
    for i in range(1000):
        detector.observe(auth_request(2.0, f"r{i}", user=f"u{i}", cnonce=f"c{i}"))
    detector.advance(10_000.0)
    assert detector.state_size() == 0 and detector.next_deadline() is None


def test_benign_proxy_capture_is_silent() -> None:
    from sipwarden.sources.capture import iter_observations

    path = need_shared("corpus/pcap/normal/heplify--sip_ipv4_tcp_retrans.pcap")
    engine = Engine([NonceReuse()])
    for obs in iter_observations(path):
        engine.observe(obs)
    assert engine.finish() == []


def test_svcrack_guesses_on_one_nonce_are_caught() -> None:
    """svcrack re-sends every guess on the nonce of the first challenge (same Call-ID, CSeq and
    inputs), which per-transaction failure counting takes for retransmissions."""
    from sipwarden.sources.capture import iter_observations
    from tests.conftest import REPO

    path = REPO / "examples/captures/sipvicious-svcrack-loopback.pcap"
    if not path.exists():
        pytest.skip(f"{path} is not in this checkout")
    engine = Engine([NonceReuse()])
    for obs in iter_observations(path):
        engine.observe(obs)
    (finding,) = engine.finish()
    assert finding.key == "guessing|127.0.0.1" and finding.severity is Severity.HIGH
    assert finding.target is not None and finding.target.user == "alice"
    assert int(finding.indicators["responses_for_same_inputs"]) > 100
    assert finding.count == int(finding.indicators["responses_for_same_inputs"])


def test_guessing_still_seen_after_many_legal_reuses() -> None:
    """Input sets are kept most-recent-first: a long legal nc run does not blind the detector."""
    detector = NonceReuse()
    rising = [auth_request(i * 0.1, f"r{i}", nc=f"{i + 1:08x}") for i in range(40)]
    assert keys(detector, rising) == []
    guesses = [auth_request(5.0 + i, g, nc="00000100") for i, g in enumerate("abc")]
    assert keys(detector, guesses) == [f"guessing|{CLIENT}"]
