"""The transaction and call tracker: responses matched to requests, call life cycles, durations,
concurrency, authentication state - exact, bounded, and fed to detectors by the engine."""

from __future__ import annotations

from typing import ClassVar

from sipwarden.detect import Detector, Engine, Finding, Observation, Threat
from sipwarden.detect.tracker import (
    CallEnd,
    CallEvent,
    CallPhase,
    Tracker,
    TrackerConfig,
    Transaction,
)
from sipwarden.sources.capture import iter_observations
from tests.conftest import need_shared
from tests.detect import observe

CLIENT = "192.0.2.10"
SERVER = "198.51.100.5"
#: An unauthenticated caller's account: the From user it claims, at its source address.
ALICE = f"alice@{CLIENT}"
AUTH = (
    'Authorization: Digest username="alice", realm="x", nonce="n1", uri="sip:x", '
    'response="0123456789abcdef0123456789abcdef"\r\n'
)


def request(
    method: str = "INVITE",
    *,
    call_id: str = "call-1",
    cseq: int = 1,
    branch: str = "z9hG4bK-1",
    to_tag: str = "",
    user: str = "1001",
    auth: bool = False,
    cseq_method: str | None = None,
) -> bytes:
    tag = f";tag={to_tag}" if to_tag else ""
    return (
        f"{method} sip:{user}@{SERVER} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {CLIENT}:5060;branch={branch}\r\n"
        f"From: <sip:alice@{SERVER}>;tag=a1\r\nTo: <sip:{user}@{SERVER}>{tag}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {cseq_method or method}\r\nMax-Forwards: 70\r\n"
        f"{AUTH if auth else ''}User-Agent: phone/1.0\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def response(
    status: int,
    method: str = "INVITE",
    *,
    call_id: str = "call-1",
    cseq: int = 1,
    branch: str = "z9hG4bK-1",
    user: str = "1001",
) -> bytes:
    return (
        f"SIP/2.0 {status} Whatever\r\nVia: SIP/2.0/UDP {CLIENT}:5060;branch={branch}\r\n"
        f"From: <sip:alice@{SERVER}>;tag=a1\r\nTo: <sip:{user}@{SERVER}>;tag=b2\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def up(data: bytes, ts: float, frame: int = 1, src: str = CLIENT) -> Observation:
    return observe(data, ts, src=src, frame=frame, dst=SERVER)


def down(data: bytes, ts: float, frame: int = 1, dst: str = CLIENT) -> Observation:
    return observe(data, ts, src=SERVER, frame=frame, dst=dst)


def run(tracker: Tracker, *observations: Observation) -> list[Transaction | CallEvent]:
    events: list[Transaction | CallEvent] = []
    for obs in observations:
        events += tracker.observe(obs)
    return events


def calls(events: list[Transaction | CallEvent]) -> list[CallEvent]:
    return [e for e in events if isinstance(e, CallEvent)]


def transactions(events: list[Transaction | CallEvent]) -> list[Transaction]:
    return [e for e in events if isinstance(e, Transaction)]


# -- transactions ----------------------------------------------------------------------------


def test_response_matched_by_branch_first_provisional_and_final_once() -> None:
    tracker = Tracker()
    events = run(
        tracker,
        up(request("OPTIONS"), 0.0, 1),
        down(response(100, "OPTIONS"), 0.1, 2),  # 100 is hop-by-hop: not reported
        down(response(180, "OPTIONS"), 0.2, 3),
        down(response(183, "OPTIONS"), 0.25, 4),  # only the first provisional
        down(response(404, "OPTIONS"), 0.3, 5),
        down(response(404, "OPTIONS"), 0.8, 6),  # a retransmission
    )
    txs = transactions(events)
    assert [(t.status, t.request_frame, t.response_frame) for t in txs] == [
        (180, 1, 3),
        (404, 1, 5),
    ]
    tx = txs[-1]
    assert (tx.method, tx.client.ip, tx.server.ip) == ("OPTIONS", CLIENT, SERVER)
    assert (tx.request_uri_user, tx.to_user, tx.from_user) == ("1001", "1001", "alice")
    assert tx.to_tag == "b2" and tx.final and tx.credentials_user is None
    assert tx.user_agent == "phone/1.0"


def test_response_to_another_client_or_method_does_not_match() -> None:
    tracker = Tracker()
    events = run(
        tracker,
        up(request("OPTIONS"), 0.0),
        down(response(200, "OPTIONS"), 0.1, dst="203.0.113.9"),  # same branch, other client
        down(response(200, "INVITE"), 0.2),  # same branch, other method
    )
    assert transactions(events) == []


def test_pre_rfc3261_branch_matches_by_call_id_and_cseq() -> None:
    tracker = Tracker()
    events = run(
        tracker,
        up(request("REGISTER", branch="1234", cseq=7), 0.0),
        down(response(200, "REGISTER", branch="5678", cseq=7), 0.1),
    )
    assert [t.status for t in transactions(events)] == [200]


def test_unanswered_request_reported_after_timer_f() -> None:
    tracker = Tracker()
    assert run(tracker, up(request("OPTIONS"), 0.0, 1)) == []
    assert tracker.advance(31.9) == []
    assert tracker.next_deadline() == 32.0
    (tx,) = transactions(tracker.advance(32.0))
    assert (tx.status, tx.final, tx.request_frame, tx.response_frame) == (None, True, 1, 0)


def test_answered_request_is_not_reported_unanswered_later() -> None:
    tracker = Tracker()
    run(tracker, up(request("OPTIONS"), 0.0), down(response(200, "OPTIONS"), 0.1))
    assert transactions(tracker.advance(100.0)) == []


def test_retransmitted_request_keeps_its_transaction() -> None:
    tracker = Tracker()
    events = run(
        tracker,
        up(request("OPTIONS"), 0.0, 1),
        up(request("OPTIONS"), 0.5, 2),
        down(response(200, "OPTIONS"), 0.6, 3),
    )
    assert [t.request_frame for t in transactions(events)] == [1]


# -- calls -----------------------------------------------------------------------------------


def test_call_life_cycle_with_duration_and_concurrency() -> None:
    tracker = Tracker()
    events = run(
        tracker,
        up(request("INVITE"), 10.0, 1),
        down(response(100), 10.1, 2),
        down(response(180), 10.5, 3),
        down(response(200), 14.0, 4),
        up(request("ACK", branch="z9hG4bK-2", to_tag="b2"), 14.1, 5),
    )
    phases = calls(events)
    assert [e.phase for e in phases] == [CallPhase.STARTED, CallPhase.RINGING, CallPhase.ANSWERED]
    answered = phases[-1]
    assert (answered.concurrent_account, answered.concurrent_source) == (1, 1)
    assert tracker.concurrent(account=ALICE) == 1
    assert tracker.concurrent(source_ip=CLIENT) == 1
    assert answered.call.ring_time == 4.0 and answered.call.ringing == 10.5
    (ended,) = calls(
        run(tracker, up(request("BYE", branch="z9hG4bK-3", cseq=2, to_tag="b2"), 74.0, 6))
    )
    assert ended.phase is CallPhase.ENDED and ended.call.end is CallEnd.BYE
    assert ended.call.duration == 60.0 and ended.frame == 6
    assert (ended.concurrent_account, ended.concurrent_source) == (0, 0)
    assert tracker.concurrent(account=ALICE) == 0


def test_cancel_ends_a_ringing_call_once() -> None:
    tracker = Tracker()
    events = run(
        tracker,
        up(request("INVITE"), 0.0, 1),
        down(response(180), 0.2, 2),
        up(request("CANCEL"), 2.5, 3),  # CANCEL shares the INVITE's branch
        down(response(200, "CANCEL"), 2.6, 4),
        down(response(487), 2.7, 5),
    )
    ended = [e for e in calls(events) if e.phase is CallPhase.ENDED]
    assert len(ended) == 1
    call = ended[0].call
    assert (call.end, call.answered, call.ring_time, call.duration) == (
        CallEnd.CANCELLED,
        None,
        2.5,
        None,
    )


def test_failure_ends_the_call_and_487_alone_means_cancelled() -> None:
    tracker = Tracker()
    busy = run(tracker, up(request("INVITE"), 0.0), down(response(486), 1.0))
    assert [(e.phase, e.call.end, e.call.final_status) for e in calls(busy)][-1] == (
        CallPhase.ENDED,
        CallEnd.FAILED,
        486,
    )
    other = run(
        tracker,
        up(request("INVITE", call_id="c2", branch="z9hG4bK-9"), 5.0),
        down(response(487, call_id="c2", branch="z9hG4bK-9"), 6.0),
    )
    assert calls(other)[-1].call.end is CallEnd.CANCELLED


def test_digest_challenge_continues_the_same_call_with_the_account() -> None:
    tracker = Tracker()
    events = run(
        tracker,
        up(request("INVITE"), 0.0, 1),
        down(response(407), 0.1, 2),
        up(request("INVITE", cseq=2, branch="z9hG4bK-2", auth=True), 0.3, 3),
        down(response(200, cseq=2, branch="z9hG4bK-2"), 1.0, 4),
    )
    phases = calls(events)
    assert [e.phase for e in phases] == [CallPhase.STARTED, CallPhase.ANSWERED]
    call = phases[-1].call
    # Authenticated: the digest username, whatever address it calls from.
    assert (call.account, call.authenticated, call.first_frame) == ("alice", True, 1)
    state = tracker.auth_state(CLIENT, "alice", 1.0)
    assert state is not None and state.succeeded == 1 and state.last_success == 1.0


def test_unauthenticated_claims_from_different_sources_are_different_accounts() -> None:
    """A spoofed From user elsewhere must not inflate the real caller's concurrency."""
    tracker = Tracker()
    for i, src in enumerate(("192.0.2.10", "203.0.113.66")):
        tracker.observe(up(request("INVITE", call_id=f"c{i}", branch=f"z9hG4bK-{i}"), i, src=src))
        tracker.observe(
            down(response(200, call_id=f"c{i}", branch=f"z9hG4bK-{i}"), i + 0.5, dst=src)
        )
    assert tracker.concurrent(account="alice@192.0.2.10") == 1
    assert tracker.concurrent(account="alice@203.0.113.66") == 1


def test_reinvite_does_not_start_a_call() -> None:
    tracker = Tracker()
    events = run(tracker, up(request("INVITE", to_tag="b2"), 0.0))
    assert calls(events) == []


def test_ring_timeout_and_answered_timeout_release_concurrency() -> None:
    tracker = Tracker(TrackerConfig(ring_timeout_s=60, max_call_duration_s=600))
    run(tracker, up(request("INVITE"), 0.0))
    (timeout,) = calls(tracker.advance(60.0))
    assert timeout.call.end is CallEnd.TIMEOUT and timeout.frame == 0
    run(
        tracker,
        up(request("INVITE", call_id="c2", branch="z9hG4bK-5"), 100.0),
        down(response(200, call_id="c2", branch="z9hG4bK-5"), 101.0),
    )
    assert tracker.concurrent(account=ALICE) == 1
    (long_call,) = calls(tracker.advance(701.0))
    assert long_call.call.end is CallEnd.TIMEOUT and long_call.call.duration == 600.0
    assert tracker.concurrent(account=ALICE) == 0


def test_evicted_answered_call_releases_concurrency() -> None:
    tracker = Tracker(TrackerConfig(max_calls=2))
    events: list[Transaction | CallEvent] = []
    for i in range(3):
        events += run(
            tracker,
            up(request("INVITE", call_id=f"c{i}", branch=f"z9hG4bK-{i}"), float(i)),
            down(response(200, call_id=f"c{i}", branch=f"z9hG4bK-{i}"), i + 0.5),
        )
    evicted = [e for e in calls(events) if e.call.end is CallEnd.EVICTED]
    assert [e.call.call_id for e in evicted] == ["c0"]
    assert tracker.concurrent(account=ALICE) == 2
    assert tracker.evictions() >= 1


# -- authentication state ----------------------------------------------------------------------


def test_auth_state_counts_challenges_failures_and_successes() -> None:
    tracker = Tracker()
    run(
        tracker,
        up(request("REGISTER", user="alice"), 0.0),
        down(response(401, "REGISTER", user="alice"), 0.1),
        up(request("REGISTER", cseq=2, branch="z9hG4bK-2", user="alice", auth=True), 0.2),
        down(response(401, "REGISTER", cseq=2, branch="z9hG4bK-2", user="alice"), 0.3),
        up(request("REGISTER", cseq=3, branch="z9hG4bK-3", user="alice", auth=True), 0.4),
        down(response(200, "REGISTER", cseq=3, branch="z9hG4bK-3", user="alice"), 0.5),
    )
    state = tracker.auth_state(CLIENT, "alice", 1.0)
    assert state is not None
    assert (state.challenged, state.failed, state.succeeded) == (1, 1, 1)
    assert tracker.auth_state("203.0.113.1", "alice", 1.0) is None


# -- bounds and robustness -----------------------------------------------------------------------


def test_hostile_key_space_stays_within_bounds() -> None:
    config = TrackerConfig(max_transactions=100, max_calls=50, max_auth_states=20)
    tracker = Tracker(config)
    for i in range(5_000):
        src = f"10.0.{i // 256}.{i % 256}"
        tracker.observe(
            up(request("INVITE", call_id=f"c{i}", branch=f"z9hG4bK-{i}"), i / 100, src=src)
        )
        tracker.observe(
            down(response(200, call_id=f"c{i}", branch=f"z9hG4bK-{i}"), i / 100, dst=src)
        )
        assert tracker.state_size() <= 100 + 50 + 50 + 20
    assert tracker.evictions() > 0
    assert tracker.concurrent(account=ALICE) <= 50


def test_messages_without_the_headers_it_needs_are_ignored() -> None:
    tracker = Tracker()
    no_via = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n"
    unparsable = b"\x00\x01garbage"
    assert run(tracker, up(no_via, 0.0), up(unparsable, 0.1)) == []


# -- engine dispatch -----------------------------------------------------------------------------


class Recorder(Detector):
    id: ClassVar[str] = "recon.recorder"
    threat: ClassVar[Threat] = Threat.RECON

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def observe(self, obs: Observation) -> list[Finding]:
        return []

    def on_transaction(self, tx: Transaction) -> list[Finding]:
        self.seen.append(f"tx:{tx.method}:{tx.status}")
        return []

    def on_call(self, event: CallEvent) -> list[Finding]:
        self.seen.append(f"call:{event.phase}")
        return []


def test_engine_feeds_tracker_events_to_detectors_and_finishes_pending_ones() -> None:
    recorder = Recorder()
    engine = Engine([recorder])
    for obs in (
        up(request("INVITE"), 0.0),
        down(response(180), 0.1),
        down(response(200), 1.0),
        up(request("OPTIONS", call_id="o", branch="z9hG4bK-o"), 2.0),
    ):
        engine.observe(obs)
    engine.finish()
    assert recorder.seen == [
        "call:started",
        "tx:INVITE:180",
        "call:ringing",
        "tx:INVITE:200",
        "call:answered",
        "tx:OPTIONS:None",  # never answered: reported when the input ends
        "call:ended",
    ]


def test_one_tcp_call_from_a_real_capture() -> None:
    path = need_shared("corpus/pcap/normal/heplify--sip_ipv4_tcp.pcap")
    tracker = Tracker()
    events: list[Transaction | CallEvent] = []
    for obs in iter_observations(path):
        events += tracker.observe(obs)
    events += tracker.advance(float("inf"))
    phases = calls(events)
    assert [e.phase for e in phases] == [
        CallPhase.STARTED,
        CallPhase.RINGING,
        CallPhase.ANSWERED,
        CallPhase.ENDED,
    ]
    call = phases[-1].call
    assert call.end is CallEnd.BYE and call.duration is not None and call.duration > 0
    assert {t.method for t in transactions(events)} == {"INVITE", "BYE"}


def test_a_broken_uri_in_a_header_leaves_that_field_empty() -> None:
    tracker = Tracker()
    broken = request("OPTIONS").replace(b"From: <sip:alice@", b"From: <sip:@")
    (tx,) = transactions(run(tracker, up(broken, 0.0), down(response(200, "OPTIONS"), 0.1)))
    assert tx.from_user is None and tx.to_user == "1001"


def test_invite_that_rings_longer_than_timer_b_is_still_answered() -> None:
    """A 1xx moves an INVITE transaction to Proceeding, where Timer B no longer runs (RFC 3261
    §17.1.1.2): a 200 after 60 s of ringing answers it; it is not reported unanswered."""
    tracker = Tracker()
    events = run(tracker, up(request("INVITE"), 0.0), down(response(100), 0.1))
    events += tracker.advance(40.0)
    events += run(tracker, down(response(200), 60.0, 3))
    assert [t.status for t in transactions(events)] == [200]
    assert [e.phase for e in calls(events)] == [CallPhase.STARTED, CallPhase.ANSWERED]


def test_invite_without_any_response_is_unanswered_after_timer_b() -> None:
    tracker = Tracker()
    run(tracker, up(request("INVITE"), 0.0))
    (tx,) = transactions(tracker.advance(32.0))
    assert tx.status is None


def test_proceeding_invite_never_answered_is_reported_after_the_ring_timeout() -> None:
    tracker = Tracker(TrackerConfig(ring_timeout_s=90))
    run(tracker, up(request("INVITE"), 0.0), down(response(180), 1.0))
    assert transactions(tracker.advance(60.0)) == []
    assert [t.status for t in transactions(tracker.advance(91.0))] == [None]


def test_in_dialog_requests_are_marked() -> None:
    tracker = Tracker()
    events = run(
        tracker,
        up(request("OPTIONS"), 0.0),
        down(response(200, "OPTIONS"), 0.1),
        up(request("INFO", branch="z9hG4bK-9", to_tag="b2"), 1.0),
        down(response(200, "INFO", branch="z9hG4bK-9"), 1.1),
    )
    assert [(t.method, t.in_dialog) for t in transactions(events)] == [
        ("OPTIONS", False),
        ("INFO", True),
    ]
