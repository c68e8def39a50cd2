"""credential detectors: digest brute force per (source, user), password spray per source,
distributed brute force per user. Each fires at its threshold and not one below, lets failures
spread wider than the window pass, honours the allow-list, ignores the normal first challenge,
and keeps its state bounded under a hostile key space."""

from __future__ import annotations

import itertools

from sipwarden.detect import Engine, Observation
from sipwarden.detect.detectors.credential import (
    DistributedBruteForce,
    DistributedBruteForceConfig,
    PasswordSpray,
    PasswordSprayConfig,
    RegistrationBruteForce,
    RegistrationBruteForceConfig,
)
from sipwarden.detect.registry import DETECTORS
from sipwarden.net import Endpoint
from sipwarden.sip import parse_message
from tests.detect import feed_one

SERVER = "198.51.100.5"
ATTACKER = "192.0.2.10"
_frames = itertools.count(1)


def register_request(
    user: str = "1001", call_id: str = "c1", cseq: int = 1, credentials: bool = True
) -> bytes:
    auth = (
        f'Authorization: Digest username="{user}", realm="pbx", nonce="n1", '
        f'uri="sip:{SERVER}", response="00112233445566778899aabbccddeeff"\r\n'
        if credentials
        else ""
    )
    return (
        f"REGISTER sip:{SERVER} SIP/2.0\r\nVia: SIP/2.0/UDP {ATTACKER};branch=z9hG4bK{cseq}\r\n"
        f"From: <sip:{user}@{SERVER}>;tag=1\r\nTo: <sip:{user}@{SERVER}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nMax-Forwards: 70\r\n{auth}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def response(status: int = 401, user: str = "1001", call_id: str = "c1", cseq: int = 1) -> bytes:
    reason = {401: "Unauthorized", 403: "Forbidden", 407: "Proxy Authentication Required"}
    challenge = 'WWW-Authenticate: Digest realm="pbx", nonce="n2"\r\n' if status == 401 else ""
    return (
        f"SIP/2.0 {status} {reason[status]}\r\n"
        f"Via: SIP/2.0/UDP {ATTACKER};branch=z9hG4bK{cseq}\r\n"
        f"From: <sip:{user}@{SERVER}>;tag=1\r\nTo: <sip:{user}@{SERVER}>;tag=s\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n{challenge}Content-Length: 0\r\n\r\n"
    ).encode()


def request_obs(data: bytes, ts: float, client: str = ATTACKER) -> Observation:
    return Observation(
        ts, next(_frames), Endpoint(client, 5060), Endpoint(SERVER, 5060),
        parse_message(data), None, len(data),
    )  # fmt: skip


def response_obs(data: bytes, ts: float, client: str = ATTACKER) -> Observation:
    return Observation(
        ts, next(_frames), Endpoint(SERVER, 5060), Endpoint(client, 5060),
        parse_message(data), None, len(data),
    )  # fmt: skip


def failed_login(
    ts: float, user: str = "1001", client: str = ATTACKER, n: int = 0, status: int = 401
) -> list[Observation]:
    """One wrong-password attempt: REGISTER with credentials, then its 401 (or 403)."""
    call_id = f"{client}-{user}-{n}"
    return [
        request_obs(register_request(user, call_id, n + 1), ts, client),
        response_obs(response(status, user, call_id, n + 1), ts + 0.01, client),
    ]


def feed(detector: RegistrationBruteForce | PasswordSpray | DistributedBruteForce,
         observations: list[Observation]) -> list[str]:  # fmt: skip
    """Observe everything; the keys of the hits, in order."""
    hits: list[str] = []
    for obs in observations:
        hits.extend(hit.key for hit in feed_one(detector, obs))
    return hits


def attempts(count: int, spacing: float = 1.0) -> list[Observation]:
    """``count`` failed logins of the attacker on user 1001, ``spacing`` seconds apart."""
    return [o for i in range(count) for o in failed_login(i * spacing, n=i)]


# -- registry and config ---------------------------------------------------------------------------
def test_registered_with_anchored_defaults() -> None:
    for cls in (RegistrationBruteForce, PasswordSpray, DistributedBruteForce):
        assert DETECTORS[cls.id] is cls and cls.id.startswith("credential.")
        for name, field in cls.Config.model_fields.items():
            assert field.description, name
    brute = RegistrationBruteForceConfig()
    assert (brute.failures_per_window, brute.window_s) == (10, 300.0)
    spray = PasswordSprayConfig()
    assert (spray.failures_per_window, spray.users_per_window) == (25, 5)
    distributed = DistributedBruteForceConfig()
    assert (distributed.sources_per_window, distributed.window_s) == (10, 600.0)


# -- RegistrationBruteForce ------------------------------------------------------------------------
def test_brute_force_fires_at_threshold_silent_below() -> None:
    assert feed(RegistrationBruteForce(), attempts(9)) == []
    hits = feed(RegistrationBruteForce(), attempts(10))
    assert hits == [f"{ATTACKER}|1001"]


def test_brute_force_hit_names_attacker_and_user() -> None:
    detector = RegistrationBruteForce()
    observations = attempts(10)
    hits = [h for o in observations for h in feed_one(detector, o)]
    (hit,) = hits
    assert hit.source is not None and hit.source.ip == ATTACKER
    assert hit.target is not None and hit.target.user == "1001" and hit.target.ip == SERVER
    assert hit.count == 10 and hit.severity == "high"
    assert hit.recommended_action is not None and hit.recommended_action.action_code == "TEMP_BLOCK"


def test_brute_force_window_slides() -> None:
    # 20 failures 34 s apart: any 10 span 306 s, never 10 within 300 s.
    assert feed(RegistrationBruteForce(), attempts(20, spacing=34.0)) == []
    # 33 s apart: 10 span 297 s, inside the window.
    assert feed(RegistrationBruteForce(), attempts(10, spacing=33.0)) != []


def test_first_challenge_without_credentials_is_not_a_failure() -> None:
    detector = RegistrationBruteForce(RegistrationBruteForceConfig(failures_per_window=1))
    first = register_request(credentials=False)
    assert feed_one(detector, request_obs(first, 0.0)) == []
    assert feed_one(detector, response_obs(response(401), 0.01)) == []
    # A 403 always counts, with or without credentials.
    forbidden = register_request(call_id="y", cseq=2, credentials=False)
    assert feed_one(detector, request_obs(forbidden, 0.02)) == []
    assert len(feed_one(detector, response_obs(response(403, call_id="y", cseq=2), 0.03))) == 1


def test_403_to_a_call_without_credentials_is_policy_not_a_guess() -> None:
    """An SBC's trunk call refused 403 (barred destination): no password was tried."""
    detector = RegistrationBruteForce(RegistrationBruteForceConfig(failures_per_window=1))
    invite = as_invite(register_request(credentials=False))
    assert feed_one(detector, request_obs(invite, 0.0)) == []
    assert feed_one(detector, response_obs(as_invite(response(403)), 0.1)) == []


def test_response_whose_request_was_not_seen_is_not_counted() -> None:
    detector = RegistrationBruteForce(RegistrationBruteForceConfig(failures_per_window=1))
    assert feed_one(detector, response_obs(response(403, call_id="x"), 0.0)) == []


def as_invite(data: bytes) -> bytes:
    return (
        data.replace(b"REGISTER sip:", b"INVITE sip:")
        .replace(b"CSeq: 1 REGISTER", b"CSeq: 1 INVITE")
        .replace(b"To: <sip:1001@", b"To: <sip:900442071234567@")
    )


def test_invite_failure_is_about_the_caller_not_the_callee() -> None:
    detector = RegistrationBruteForce(RegistrationBruteForceConfig(failures_per_window=1))
    invite = as_invite(register_request(credentials=True))
    assert feed_one(detector, request_obs(invite, 0.0)) == []
    (hit,) = feed_one(detector, response_obs(as_invite(response(403)), 0.1))
    assert hit.target is not None and hit.target.user == "1001"
    assert hit.indicators["method"] == "INVITE"
    options = register_request(call_id="o").replace(b"CSeq: 1 REGISTER", b"CSeq: 1 OPTIONS")
    assert feed_one(detector, request_obs(options, 1.0)) == []
    answer = response(403, call_id="o").replace(b"CSeq: 1 REGISTER", b"CSeq: 1 OPTIONS")
    assert feed_one(detector, response_obs(answer, 1.1)) == []


def test_challenges_counted_without_credentials_when_configured() -> None:
    config = RegistrationBruteForceConfig(failures_per_window=2, challenges_need_credentials=False)
    detector = RegistrationBruteForce(config)
    hits = []
    for i in range(2):
        attempt = register_request(call_id=f"c{i}", cseq=i + 1, credentials=False)
        feed_one(detector, request_obs(attempt, i))
        answer = response(401, call_id=f"c{i}", cseq=i + 1)
        hits.append(feed_one(detector, response_obs(answer, i + 0.1)))
    assert hits[0] == [] and len(hits[1]) == 1


def test_guesses_on_one_call_id_and_cseq_each_count() -> None:
    """SIPVicious svcrack re-sends one Call-ID and CSeq with a new Via branch and a new digest
    response per guess: each is a new transaction, so a new failure."""
    detector = RegistrationBruteForce(RegistrationBruteForceConfig(failures_per_window=3))
    hits = []
    for i in range(3):
        branch = f"z9hG4bKguess{i}".encode()
        guess = register_request().replace(b"z9hG4bK1", branch)
        hits += feed_one(detector, request_obs(guess, i))
        hits += feed_one(detector, response_obs(response(401).replace(b"z9hG4bK1", branch), i))
    assert len(hits) == 1 and hits[0].count == 3


def test_retransmitted_response_counts_once() -> None:
    detector = RegistrationBruteForce(RegistrationBruteForceConfig(failures_per_window=2))
    request, answer = failed_login(0.0)
    assert feed(detector, [request, answer, answer, answer]) == []


def test_brute_force_allow_listed_source_is_silent() -> None:
    config = RegistrationBruteForceConfig(allow_sources=("192.0.2.0/24",))
    assert feed(RegistrationBruteForce(config), attempts(30)) == []


def test_brute_force_per_user_keys_do_not_add_up() -> None:
    observations = [o for i in range(9) for o in failed_login(i, user="a", n=i)]
    observations += [o for i in range(9) for o in failed_login(i, user="b", n=100 + i)]
    assert feed(RegistrationBruteForce(), observations) == []


def test_brute_force_engine_aggregates_one_finding_per_episode() -> None:
    engine = Engine([RegistrationBruteForce()])
    for obs in attempts(40, spacing=20.0):  # 800 s of failures, 15 per window
        engine.observe(obs)
    (finding,) = engine.finish()
    assert finding.detector == "credential.registration_brute_force"
    assert finding.count == 40  # every failure of the episode, reported once
    assert finding.first_seen == 180.01 and finding.last_seen == 780.01
    assert 1 <= len(finding.evidence.frames) <= 20
    # A second campaign after a long silence is a new episode.
    engine = Engine([RegistrationBruteForce()])
    for obs in attempts(10) + [o for i in range(10) for o in failed_login(10_000.0 + i, n=500 + i)]:
        engine.observe(obs)
    first, second = engine.finish()
    assert (first.count, second.count) == (10, 10) and first.id != second.id


def test_brute_force_hits_at_most_once_per_window() -> None:
    detector = RegistrationBruteForce()
    hits = [h for o in attempts(100, spacing=1.0) for h in feed_one(detector, o)]
    assert len(hits) == 1  # 100 failures within 100 s: one crossing, no repeat yet
    hits += detector.advance(float("inf"))
    assert [h.count for h in hits] == [10, 90]


def test_brute_force_hostile_key_space_stays_bounded() -> None:
    config = RegistrationBruteForceConfig(max_pairs=50)
    detector = RegistrationBruteForce(config)
    for i in range(500):  # 10 × max_pairs distinct users
        for obs in failed_login(i * 0.01, user=f"u{i}", n=i):
            feed_one(detector, obs)
    assert 0 < detector.state_size() <= 50 + 50 + 50
    assert detector.evictions() >= 450


# -- PasswordSpray ---------------------------------------------------------------------------------
def spray(
    count: int, users: int, spacing: float = 1.0, client: str = ATTACKER
) -> list[Observation]:
    return [
        o
        for i in range(count)
        for o in failed_login(i * spacing, user=f"u{i % users}", client=client, n=i)
    ]


def test_spray_fires_at_threshold_silent_below() -> None:
    assert feed(PasswordSpray(), spray(24, users=5)) == []
    assert feed(PasswordSpray(), spray(25, users=5)) == [ATTACKER]


def test_spray_needs_enough_users() -> None:
    assert feed(PasswordSpray(), spray(60, users=4)) == []


def test_spray_window_slides() -> None:
    assert feed(PasswordSpray(), spray(50, users=5, spacing=13.0)) == []  # 25 span 312 s
    assert feed(PasswordSpray(), spray(25, users=5, spacing=12.0)) == [ATTACKER]  # 288 s


def test_spray_allow_listed_source_is_silent() -> None:
    config = PasswordSprayConfig(allow_sources=(ATTACKER,))
    assert feed(PasswordSpray(config), spray(100, users=10)) == []


def test_spray_ignores_unauthenticated_first_challenges() -> None:
    detector = PasswordSpray(PasswordSprayConfig(failures_per_window=1, users_per_window=1))
    for i in range(10):
        feed_one(detector, request_obs(register_request(f"u{i}", f"c{i}", credentials=False), i))
        assert feed_one(detector, response_obs(response(401, f"u{i}", f"c{i}"), i + 0.01)) == []


def test_spray_hostile_key_space_stays_bounded() -> None:
    config = PasswordSprayConfig(max_sources=20)
    detector = PasswordSpray(config)
    for i in range(200):  # 10 × max_sources distinct sources
        for obs in failed_login(i * 0.01, client=f"203.0.113.{i % 250}", n=i):
            feed_one(detector, obs)
    assert 0 < detector.state_size() <= 20 * 4
    assert detector.evictions() >= 180


# -- DistributedBruteForce -------------------------------------------------------------------------
def distributed(sources: int, spacing: float = 1.0, user: str = "1001") -> list[Observation]:
    return [
        o
        for i in range(sources)
        for o in failed_login(i * spacing, user=user, client=f"203.0.113.{i + 1}", n=i)
    ]


def test_distributed_fires_at_threshold_silent_below() -> None:
    assert feed(DistributedBruteForce(), distributed(9)) == []
    detector = DistributedBruteForce()
    hits = [h for o in distributed(10) for h in feed_one(detector, o)]
    (hit,) = hits
    assert hit.key == "1001" and hit.source is None
    assert hit.target is not None and hit.target.user == "1001"


def test_distributed_repeats_from_one_source_do_not_count() -> None:
    observations = [o for i in range(30) for o in failed_login(i, n=i)]
    assert feed(DistributedBruteForce(), observations) == []


def test_distributed_window_slides() -> None:
    assert feed(DistributedBruteForce(), distributed(30, spacing=67.0)) == []  # 10 span 603 s
    assert feed(DistributedBruteForce(), distributed(10, spacing=66.0)) == ["1001"]


def test_distributed_allow_listed_sources_are_silent() -> None:
    config = DistributedBruteForceConfig(allow_sources=("203.0.113.0/24",))
    assert feed(DistributedBruteForce(config), distributed(50)) == []


def test_distributed_hostile_key_space_stays_bounded() -> None:
    config = DistributedBruteForceConfig(max_users=30)
    detector = DistributedBruteForce(config)
    for i in range(300):  # 10 × max_users distinct users
        for obs in failed_login(i * 0.01, user=f"u{i}", n=i):
            feed_one(detector, obs)
    assert 0 < detector.state_size() <= 30 * 3
    assert detector.evictions() >= 270


def test_engine_runs_all_three_on_one_capture() -> None:
    engine = Engine([RegistrationBruteForce(), PasswordSpray(), DistributedBruteForce()])
    observations = spray(30, users=5) + distributed(12)
    for obs in sorted(observations, key=lambda o: o.ts):
        engine.observe(obs)
    detectors = {f.detector for f in engine.finish()}
    assert detectors == {
        "credential.password_spray",
        "credential.distributed_brute_force",
    }


def test_allow_listing_the_server_does_not_hide_attacks_on_it() -> None:
    """The usual advice is to allow-list your own PBX/SBC; the responses come *from* it, so the
    detector must judge the client they go to (a bug the engine once had)."""
    config = RegistrationBruteForce.Config(allow_sources=(SERVER,))
    engine = Engine([RegistrationBruteForce(config)])
    for obs in attempts(20):
        engine.observe(obs)
    assert [f.key for f in engine.finish()] != []
